"""The base Brain of classifiers trained on fixed-length segments and evaluated per clip (GTZAN's 3 s
excerpts of songs); the recipe (GTZAN/lime_shap/train_classifier.py) adds its step, as on ClassifierBrain.

A clip's prediction is the argmax of the mean of its segments' class
probabilities. Validation and test report both: ``acc`` (and ``error``) is
the clip-level accuracy, which selects the checkpoint to evaluate, and
``segment_acc`` the accuracy of single segments. The test outputs are
ClassifierBrain's (``test_results.json``, ``per_class_accuracy.{md,csv}``,
``confusion_matrix.png``) at clip level, with the segment-level numbers added.
"""

import json
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch

from common.data.datasets import output_labels
from common.io import atomic_write_json
from common.reports.tables import write_table
from common.training.classifier import ClassifierBrain


class ClipAggregator:
    """Sums the class probabilities of each clip's segments; a clip's prediction is the argmax of their mean."""

    def __init__(self, n_classes):
        self.n_classes = n_classes
        self.sums, self.counts, self.labels = {}, {}, {}

    def add(self, clip_ids, probabilities, labels):
        """One batch: clip ids (B,), segment probabilities (B, n_classes), true labels (B,)."""
        probabilities = probabilities.detach().double().cpu().numpy()
        labels = labels.reshape(-1).cpu().numpy()
        for clip, probs, label in zip(clip_ids, probabilities, labels, strict=True):
            self.sums[clip] = self.sums.get(clip, 0.0) + probs
            self.counts[clip] = self.counts.get(clip, 0) + 1
            self.labels[clip] = int(label)

    def gather(self):
        """Merge what every process saw (segments of a clip may be spread over processes)."""
        if not torch.distributed.is_initialized():
            return
        shards = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, (self.sums, self.counts, self.labels))
        self.sums, self.counts, self.labels = {}, {}, {}
        for sums, counts, labels in shards:
            for clip in sums:
                self.sums[clip] = self.sums.get(clip, 0.0) + sums[clip]
                self.counts[clip] = self.counts.get(clip, 0) + counts[clip]
                self.labels[clip] = labels[clip]

    def mean_probabilities(self):
        """{clip: (n_classes,) mean probability over its segments}."""
        return {clip: self.sums[clip] / self.counts[clip] for clip in self.sums}

    def confusion(self):
        """(n_classes, n_classes) clip-level confusion matrix (rows: true, columns: predicted)."""
        matrix = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)
        for clip, probs in self.mean_probabilities().items():
            matrix[self.labels[clip], int(np.argmax(probs))] += 1
        return matrix


def accuracy(confusion):
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 0.0


class SegmentClassifierBrain(ClassifierBrain):
    """ClassifierBrain on segments (batches carry ``clip_id``), with clip-level validation and test accuracy."""

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.clips = ClipAggregator(self.hparams.out_n_neurons)
        self.clip_confusion = None

    def record(self, predictions, targets, batch, stage):
        """The segments' confusion matrix and, outside training, each segment's probabilities for its clip."""
        super().record(predictions, targets, batch, stage)
        if stage != sb.Stage.TRAIN:
            model = getattr(self.modules.model, "module", self.modules.model)  # unwrap DDP
            probabilities = torch.softmax(predictions.detach() * model.logit_scale, dim=-1)
            self.clips.add(batch.clip_id, probabilities, batch.class_string_encoded[0])

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage != sb.Stage.TRAIN:
            self.clips.gather()
            self.clip_confusion = self.clips.confusion()
        super().on_stage_end(stage, stage_loss, epoch)

    def _stage_stats(self, stage_loss):
        stats = super()._stage_stats(stage_loss)  # segment level
        if self.clip_confusion is None:
            return stats
        clip_acc = accuracy(self.clip_confusion)
        return {**stats, "acc": clip_acc, "error": 1.0 - clip_acc, "segment_acc": stats["acc"]}

    def _write_test_outputs(self, stats):
        segment_confusion = self.confusion
        self.confusion = self.clip_confusion  # the parent writes the clip-level tables and figure
        try:
            super()._write_test_outputs(stats)
        finally:
            self.confusion = segment_confusion
        out = Path(self.hparams.output_folder)
        labels = output_labels(self.hparams.label_encoder, self.hparams.out_n_neurons)
        clip_support, segment_support = self.clip_confusion.sum(axis=1), segment_confusion.sum(axis=1)
        rows = [
            {
                "class": lab,
                "accuracy": float(self.clip_confusion[i, i] / clip_support[i]),
                "clips": int(clip_support[i]),
                "segment accuracy": float(segment_confusion[i, i] / segment_support[i]),
                "segments": int(segment_support[i]),
            }
            for i, lab in enumerate(labels)
            if lab is not None and clip_support[i]
        ]
        write_table(rows, out / "per_class_accuracy")
        result_path = out / "test_results.json"
        result = json.loads(result_path.read_text())
        result.update(
            {
                "clip_acc": stats["acc"],
                "n_segments": int(segment_confusion.sum()),
                "per_class_segment_acc": {row["class"]: row["segment accuracy"] for row in rows},
                "segment_confusion_matrix": segment_confusion.tolist(),
            }
        )
        atomic_write_json(result_path, result)
