#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) a music genre classifier on fixed-length segments.

    python train_classifier.py hparams/classifier_cnn.yaml --data_folder /path/to/GTZAN
    python train_classifier.py hparams/classifier_vgg.yaml --data_folder DIR --test_only
    python train_classifier.py hparams/classifier_cnn.yaml --dataset esc50 --data_folder ESC10_DIR --segment_hop_s 2

Validation and test accuracy are per clip (the argmax of the mean of its
segments' probabilities) and per segment. The save folder has the layout of
ESC50/classification (CKPT+*/embedding_model.ckpt, classifier.ckpt and
label_encoder.txt), so explanation recipes load it with ``--classifier_source``.
The training step is GTZANBrain's (each segment through the model, scored by the hparams' cost); the
shared part (clip-level aggregation, statistics, schedules, checkpoints, test outputs) is
``common/training/segments.py`` on ``common/training/classifier.py``.
"""

import sys

from common.data.datasets import build_label_encoder, classification_datasets
from common.recipe import setup_experiment
from common.training.classifier import BEST_KEY, build_brain, fit_and_evaluate
from common.training.segments import SegmentClassifierBrain


class GTZANBrain(SegmentClassifierBrain):
    """The segment classifier's training step: one segment is one example, of its song's genre."""

    def compute_forward(self, batch, stage):
        wavs, _ = self.augmented_wavs(batch, stage)  # the hparams' augmentation (if any), on training batches
        # log-mel front-end -> CNN (or VGG) -> pooling -> head, inside the model's forward so that DDP syncs the
        # gradients; the head's scores before the model's logit scale
        return self.modules.model(wavs, head_scores=True)

    def compute_objectives(self, predictions, batch, stage):
        """The hparams' compute_cost (the cross-entropy of the scores' log-softmax) to each segment's class;
        ``record`` also adds, outside training, the segment's probabilities to its clip's mean."""
        targets = self.class_targets(batch, predictions)
        loss = self.hparams.compute_cost(predictions.unsqueeze(1), targets.unsqueeze(1))
        self.record(predictions, targets, batch, stage)
        return loss


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
    brain = build_brain(GTZANBrain, hparams, run_opts)
    fit_and_evaluate(brain, hparams, datasets, max_key=BEST_KEY)


if __name__ == "__main__":
    main(sys.argv[1:])
