#!/usr/bin/env python3
"""BirdSet stage 2: train (or, with --test_only, evaluate) AudioProtoPNet on the frozen stage-1 ConvNeXt.

    python train_audioprotopnet.py hparams/audioprotopnet.yaml --data_folder DIR \\
        --convnext_source results/convnext-birdset/XCM/42/save [--prototypes_per_class 5]
    python train_audioprotopnet.py hparams/audioprotopnet.yaml --data_folder DIR \\
        --pretrained_audioprotopnet model.safetensors --test_only     # published weights, evaluated as they are

The training step is AudioProtoPNetBrain's: the frozen ConvNeXt's map -> prototype similarities ->
last layer, scored by the Asymmetric Loss plus the prototypes' orthogonality term. The model is
``common/models/protopnet.py``; the shared part (param groups, BirdSet's metrics per test set,
schedules, checkpoints, test tables) is ``common/training/multilabel.py``.
"""

import sys

from common.data.birdset import birdset_datasets
from common.models.protopnet import initialise_audioprotopnet, save_initial_checkpoint
from common.recipe import setup_experiment
from common.training.multilabel import MultiLabelBrain, run_multilabel_recipe, unwrap


class AudioProtoPNetBrain(MultiLabelBrain):
    """Stage 2's training step, as AudioProtoPNet's (Heinrich et al., 2024): prototypes and last layer learn."""

    def compute_forward(self, batch, stage):
        wavs, _ = self.augmented_wavs(batch, stage)  # the hparams' augmentation (if any), on training batches
        # dB-normalised log-mel -> frozen ConvNeXt map -> each prototype's max cosine similarity -> last layer,
        # inside the model's forward so that DDP syncs the gradients
        return self.modules.model(wavs, head_scores=True)

    def compute_objectives(self, logits, batch, stage):
        """The hparams' compute_cost (the Asymmetric Loss) to the multi-hot labels on the classes scored, plus
        regularization_weight x the orthogonality loss of each class's prototypes (as the authors' model)."""
        logits, targets = self.scored_classes(logits, batch)
        loss = self.hparams.compute_cost(logits, targets)
        weight = self.hparams.regularization_weight
        if weight:
            loss = loss + weight * unwrap(self.modules.model).regularization_loss()
        self.record(logits, targets, batch, stage)  # for cmAP, AUROC, T1-Acc
        return loss


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    data = birdset_datasets(hparams)
    if hparams["test_only"] and hparams["pretrained_audioprotopnet"]:
        save_initial_checkpoint(hparams)  # the converted weights become the checkpoint evaluated
    run_multilabel_recipe(
        hparams, run_opts, data, AudioProtoPNetBrain, before_fit=lambda: initialise_audioprotopnet(hparams)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
