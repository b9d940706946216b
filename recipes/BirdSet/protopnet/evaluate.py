#!/usr/bin/env python3
"""Evaluate a trained ConvNeXt or AudioProtoPNet on every BirdSet test set (same as the stage script's --test_only).

    python evaluate.py hparams/audioprotopnet.yaml --data_folder DIR [--test_configs "[HSN, SSW]"]

Per test set: cmAP (classes without positives ignored), AUROC, T1-Acc, with
the logits restricted to that test set's classes; one table over the test
sets in <output_folder>/test_results/results.md. Each model is scored by its stage script's Brain
(its test loss is that stage's objective).
"""

import sys

from train_audioprotopnet import AudioProtoPNetBrain
from train_convnext import ConvNeXtBrain

from common.data.birdset import birdset_datasets
from common.models.protopnet import AudioProtoPNet
from common.recipe import setup_experiment
from common.training.multilabel import run_multilabel_recipe


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    hparams["test_only"] = True
    brain_class = AudioProtoPNetBrain if isinstance(hparams["model"], AudioProtoPNet) else ConvNeXtBrain
    _, rows = run_multilabel_recipe(hparams, run_opts, birdset_datasets(hparams), brain_class)
    for row in rows:
        print("  ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
