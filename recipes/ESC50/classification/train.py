#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an ESC-50 classifier.

    python train.py hparams/conv2d.yaml --data_folder /path/to/ESC-50-master
    python train.py hparams/conv2d.yaml --data_folder DIR --test_only

Wiring only: the Brain, data preparation and outputs live in ``common``.
"""

import sys

from speechbrain.utils.distributed import run_on_main

from common.data.datasets import build_label_encoder, classification_datasets
from common.data.esc50 import prepare_esc50_from_hparams
from common.recipe import setup_experiment
from common.training.classifier import BEST_KEY, ClassifierBrain, build_brain, fit_and_evaluate, load_pretrained_encoder


def main(argv=None):
    hparams, run_opts, _, overrides = setup_experiment(argv)
    prepare_esc50_from_hparams(hparams)
    manifests = {s: hparams[f"{s}_annotation"] for s in ("train", "valid", "test")}
    label_encoder = build_label_encoder(
        list(manifests.values()), hparams["out_n_neurons"], f"{hparams['save_folder']}/label_encoder.txt"
    )
    hparams["label_encoder"] = label_encoder
    datasets = classification_datasets(manifests, label_encoder, hparams["sample_rate"], hparams["signal_length_s"])

    brain = build_brain(ClassifierBrain, hparams, run_opts)
    if not hparams["test_only"] and hparams["use_pretrained"] and hparams["checkpointer"].find_checkpoint() is None:
        run_on_main(load_pretrained_encoder, args=[hparams, run_opts, overrides])
    fit_and_evaluate(brain, hparams, datasets, max_key=BEST_KEY)


if __name__ == "__main__":
    main(sys.argv[1:])
