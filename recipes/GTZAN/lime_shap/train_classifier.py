#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) a music genre classifier on fixed-length segments.

    python train_classifier.py hparams/classifier_cnn.yaml --data_folder /path/to/GTZAN
    python train_classifier.py hparams/classifier_vgg.yaml --data_folder DIR --test_only
    python train_classifier.py hparams/classifier_cnn.yaml --dataset esc50 --data_folder ESC10_DIR --segment_hop_s 2

Validation and test accuracy are per clip (the argmax of the mean of its
segments' probabilities) and per segment. The save folder has the layout of
ESC50/classification (CKPT+*/embedding_model.ckpt, classifier.ckpt and
label_encoder.txt), so explanation recipes load it with ``--classifier_source``.
Wiring only: the Brain, data preparation and outputs live in ``common``.
"""

import sys

from common.data.datasets import build_label_encoder, classification_datasets
from common.recipe import setup_experiment
from common.training.classifier import BEST_KEY, build_brain, fit_and_evaluate
from common.training.segments import SegmentClassifierBrain


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    hparams["prepare"](hparams)
    manifests = {s: hparams[f"{s}_annotation"] for s in ("train", "valid", "test")}
    label_encoder = build_label_encoder(
        list(manifests.values()), hparams["out_n_neurons"], f"{hparams['save_folder']}/label_encoder.txt"
    )
    hparams["label_encoder"] = label_encoder
    datasets = classification_datasets(
        manifests,
        label_encoder,
        hparams["sample_rate"],
        hparams["signal_length_s"],
        segment_s=hparams["segment_s"],
        segment_hop_s=hparams["segment_hop_s"],
    )
    brain = build_brain(SegmentClassifierBrain, hparams, run_opts)
    fit_and_evaluate(brain, hparams, datasets, max_key=BEST_KEY)


if __name__ == "__main__":
    main(sys.argv[1:])
