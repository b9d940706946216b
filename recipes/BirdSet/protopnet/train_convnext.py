#!/usr/bin/env python3
"""BirdSet stage 1: train (or, with --test_only, evaluate) the ConvNeXt multi-label classifier.

    python train_convnext.py hparams/convnext.yaml --data_folder DIR

Wiring only: data, Brain, metrics and reports live in ``common``.
"""

import sys

from common.data.birdset import birdset_datasets
from common.recipe import setup_experiment
from common.training.multilabel import run_multilabel_recipe


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    data = birdset_datasets(hparams)

    def load_imagenet_weights():
        if hparams["use_pretrained"]:
            hparams["load_pretrained"](hparams["embedding_model"])

    run_multilabel_recipe(hparams, run_opts, data, before_fit=load_imagenet_weights)


if __name__ == "__main__":
    main(sys.argv[1:])
