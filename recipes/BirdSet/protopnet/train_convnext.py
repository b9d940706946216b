#!/usr/bin/env python3
"""BirdSet stage 1: train (or, with --test_only, evaluate) the ConvNeXt multi-label classifier.

    python train_convnext.py hparams/convnext.yaml --data_folder DIR

The training step is ConvNeXtBrain's: each 5 s crop through the ConvNeXt, scored by the Asymmetric
Loss against its multi-hot species labels. The shared part (param groups, BirdSet's metrics per test
set, schedules, checkpoints, test tables) is ``common/training/multilabel.py``.
"""

import sys

from common.data.birdset import birdset_datasets
from common.recipe import setup_experiment
from common.training.multilabel import MultiLabelBrain, run_multilabel_recipe


class ConvNeXtBrain(MultiLabelBrain):
    """Stage 1's training step, as AudioProtoPNet's authors train their ConvNeXt backbone."""

    def compute_forward(self, batch, stage):
        wavs, _ = self.augmented_wavs(batch, stage)  # the hparams' augmentation (if any), on training batches
        # dB-normalised log-mel -> ConvNeXt on the (freq, time) image -> pooled, layer-normed -> linear head,
        # inside the model's forward so that DDP syncs the gradients
        return self.modules.model(wavs, head_scores=True)

    def compute_objectives(self, logits, batch, stage):
        """The hparams' compute_cost (the Asymmetric Loss, on independent sigmoids) to the multi-hot labels,
        on the classes scored (a test set: its own species)."""
        logits, targets = self.scored_classes(logits, batch)
        loss = self.hparams.compute_cost(logits, targets)
        self.record(logits, targets, batch, stage)  # for cmAP, AUROC, T1-Acc
        return loss


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    data = birdset_datasets(hparams)

    def load_imagenet_weights():
        if hparams["use_pretrained"]:
            hparams["load_pretrained"](hparams["embedding_model"])

    run_multilabel_recipe(hparams, run_opts, data, ConvNeXtBrain, before_fit=load_imagenet_weights)


if __name__ == "__main__":
    main(sys.argv[1:])
