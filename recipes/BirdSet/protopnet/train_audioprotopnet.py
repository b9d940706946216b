#!/usr/bin/env python3
"""BirdSet stage 2: train (or, with --test_only, evaluate) AudioProtoPNet on the frozen stage-1 ConvNeXt.

    python train_audioprotopnet.py hparams/audioprotopnet.yaml --data_folder DIR \\
        --convnext_source results/convnext-birdset/XCM/42/save [--prototypes_per_class 5]
    python train_audioprotopnet.py hparams/audioprotopnet.yaml --data_folder DIR \\
        --pretrained_audioprotopnet model.safetensors --test_only     # published weights, evaluated as they are

The training step is AudioProtoPNetBrain's: the frozen ConvNeXt's map -> prototype similarities ->
last layer, scored by the Asymmetric Loss plus the prototypes' orthogonality term, and, where the
hparams weigh them, ProtoPNet's cluster and separation costs and a cost on similarity away from the
detected events; with push_prototypes and prune_prototypes, ProtoPNet's push and pruning after training. The model is
``common/models/protopnet.py``; the shared part (param groups, BirdSet's metrics per test set,
schedules, checkpoints, test tables) is ``common/training/multilabel.py``.
"""

import sys

import speechbrain as sb
import torch

from common.data.birdset import birdset_datasets
from common.models.losses import prototype_background_cost, prototype_cluster_cost, prototype_separation_cost
from common.models.protopnet import initialise_audioprotopnet, save_initial_checkpoint
from common.recipe import setup_experiment
from common.training.multilabel import MultiLabelBrain, run_multilabel_recipe, unwrap
from common.training.prototypes import after_training


class AudioProtoPNetBrain(MultiLabelBrain):
    """Stage 2's training step, as AudioProtoPNet's (Heinrich et al., 2024): prototypes and last layer learn."""

    def similarity_costs(self):
        """{name: weight} of the costs on similarities that the hparams switch on."""
        names = ("cluster_weight", "separation_weight", "background_weight")
        return {name: getattr(self.hparams, name) for name in names if getattr(self.hparams, name)}

    def n_frames(self, model, wavs):
        """Spectrogram frames of a crop of this length (computed once per length, not every batch)."""
        cache = self.__dict__.setdefault("_n_frames", {})
        if wavs.shape[-1] not in cache:
            cache[wavs.shape[-1]] = model.features(wavs[:1]).shape[1]
        return cache[wavs.shape[-1]]

    def compute_forward(self, batch, stage):
        wavs, _ = self.augmented_wavs(batch, stage)  # the hparams' augmentation (if any), on training batches
        # dB-normalised log-mel -> frozen ConvNeXt map -> each prototype's max cosine similarity -> last layer,
        # inside the model's forward so that DDP syncs the gradients; the costs on similarities need them all
        if stage == sb.Stage.TRAIN and self.similarity_costs():
            return self.modules.model(wavs, prototype_output=True)
        return self.modules.model(wavs, head_scores=True)

    def compute_objectives(self, predictions, batch, stage):
        """The hparams' compute_cost (the Asymmetric Loss) to the multi-hot labels on the classes scored, plus
        regularization_weight x the orthogonality loss of each class's prototypes (as the authors' model),
        plus the weighted similarity costs (training only)."""
        out = None if isinstance(predictions, torch.Tensor) else predictions
        logits, targets = self.scored_classes(predictions if out is None else out.logits, batch)
        loss = self.hparams.compute_cost(logits, targets)
        model = unwrap(self.modules.model)
        weight = self.hparams.regularization_weight
        if weight:
            loss = loss + weight * model.regularization_loss()
        if out is not None:
            loss = loss + self.similarity_loss(model, out, targets, batch)
        self.record(logits, targets, batch, stage)  # for cmAP, AUROC, T1-Acc
        return loss

    def similarity_loss(self, model, out, targets, batch):
        """ProtoPNet's cluster (weight 0.8 there) and separation (0.08) costs, and the background cost."""
        k, weights, loss = model.head.prototypes_per_class, self.similarity_costs(), 0.0
        if "cluster_weight" in weights:
            loss = loss + weights["cluster_weight"] * prototype_cluster_cost(out.max_similarities, targets, k)
        if "separation_weight" in weights:
            loss = loss + weights["separation_weight"] * prototype_separation_cost(out.max_similarities, targets, k)
        if "background_weight" in weights:
            mask = batch.event_mask.data.repeat(targets.shape[0] // batch.event_mask.data.shape[0], 1)
            n_frames = self.n_frames(model, batch.sig.data)
            background = model.background_cells(mask, n_frames, out.similarity_maps.shape[-1])
            cost = prototype_background_cost(out.similarity_maps, targets, background, k)
            loss = loss + weights["background_weight"] * cost
        return loss


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    data = birdset_datasets(hparams)
    if hparams["test_only"] and hparams["pretrained_audioprotopnet"]:
        save_initial_checkpoint(hparams)  # the converted weights become the checkpoint evaluated
    run_multilabel_recipe(
        hparams,
        run_opts,
        data,
        AudioProtoPNetBrain,
        before_fit=lambda: initialise_audioprotopnet(hparams),
        after_fit=after_training(hparams, data),  # ProtoPNet's push and pruning, where the hparams ask
    )


if __name__ == "__main__":
    main(sys.argv[1:])
