#!/usr/bin/env python3
"""BirdSet stage 2: train (or, with --test_only, evaluate) AudioProtoPNet on the frozen stage-1 ConvNeXt.

    python train_audioprotopnet.py hparams/audioprotopnet.yaml --data_folder DIR \\
        --convnext_source results/convnext-birdset/XCM/42/save [--prototypes_per_class 5]
    python train_audioprotopnet.py hparams/audioprotopnet.yaml --data_folder DIR \\
        --pretrained_audioprotopnet model.safetensors --test_only     # published weights, evaluated as they are

Wiring only: the model, Brain, data and metrics live in ``common``.
"""

import sys

from common.data.birdset import birdset_datasets
from common.models.protopnet import initialise_audioprotopnet, save_initial_checkpoint
from common.recipe import setup_experiment
from common.training.multilabel import run_multilabel_recipe


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    data = birdset_datasets(hparams)
    if hparams["test_only"] and hparams["pretrained_audioprotopnet"]:
        save_initial_checkpoint(hparams)  # the converted weights become the checkpoint evaluated
    run_multilabel_recipe(hparams, run_opts, data, before_fit=lambda: initialise_audioprotopnet(hparams))


if __name__ == "__main__":
    main(sys.argv[1:])
