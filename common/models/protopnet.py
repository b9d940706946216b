"""AudioProtoPNet (Heinrich, Rauch, Sick, Scholz 2024): a ConvNeXt backbone with a prototype head.

The classifier interface of every model here (``features``, ``hidden``,
``logits``), with ``hidden`` = the backbone's (B, C, freq', time') map and
logits from the prototype head (``common.models.prototypes``): the map is
upsampled x2, compared by cosine similarity with 1x1 prototypes, max-pooled,
and weighed by a non-negative class-specific last layer. The backbone comes
frozen from stage 1; ``regularization_loss`` is the orthogonality of each
class's prototypes, which the training Brain adds to the Asymmetric Loss.
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from common.errors import CheckpointError
from common.models.audioprotopnet_weights import load_audioprotopnet_checkpoint, split_audioprotopnet_state_dict
from common.models.classifier import AudioClassifier
from common.models.pretrained import check_state_dict_fits, load_recipe_checkpoint

logger = logging.getLogger(__name__)


class AudioProtoPNet(AudioClassifier):
    """front-end -> ConvNeXt map -> prototype head (multi-label, sigmoid outputs)."""

    def __init__(self, front_end, embedding_model, head, freeze_backbone=True, prototype_stage=None):
        super().__init__(front_end, embedding_model, classifier=head, logit_scale=1.0, multilabel=True)
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            self.embedding_model.requires_grad_(False)
        self.prototype_stage = None
        if not self._is_convnext:  # another encoder (e.g. the leaderboard's CNN): its own map
            if prototype_stage is not None:
                raise ValueError("prototype_stage picks a ConvNeXt stage; this backbone is not a ConvNeXt")
            return
        stages = self.embedding_model.config.num_stages
        if prototype_stage is not None and (
            int(prototype_stage) != prototype_stage or not 1 <= prototype_stage <= stages
        ):
            raise ValueError(
                f"prototype_stage must be a ConvNeXt stage 1..{stages} (or None: the last), got {prototype_stage!r}"
            )
        # An earlier stage's map has a finer grid and smaller receptive fields (the paper reads the last stage).
        self.prototype_stage = None if prototype_stage in (None, stages) else int(prototype_stage)
        width = self.embedding_model.config.hidden_sizes[self.map_stage - 1]
        if getattr(head, "channels", width) != width:
            raise ValueError(
                f"The prototypes have {head.channels} channels but ConvNeXt stage {self.map_stage} has {width}: "
                f"set prototype_channels to {width} (the stage's entry of hidden_sizes)"
            )

    @property
    def map_stage(self):
        return self.prototype_stage or super().map_stage

    @property
    def head(self):
        return self.classifier

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_backbone:
            self.embedding_model.eval()  # frozen means frozen: no stochastic depth, no statistics updates
        return self

    def hidden(self, X):
        if self.freeze_backbone and torch.is_grad_enabled() and self.training:
            with torch.no_grad():  # nothing to learn there: keep no activations for backward
                return self._backbone_map(X)
        return self._backbone_map(X)

    def _backbone_map(self, X):
        if self.prototype_stage is None:
            return super().hidden(X)
        convnext = self.embedding_model
        h = convnext.embeddings(X.transpose(1, 2).unsqueeze(1))  # (B, 1, F, T) as in AudioClassifier.hidden
        for stage in convnext.encoder.stages[: self.prototype_stage]:  # the later stages are never run
            h = stage(h)
        return h

    def head_scores_from_hidden(self, hidden):
        return self.head(hidden).logits

    def forward(self, wavs, head_scores=False, prototype_output=False):
        """As AudioClassifier's, or with ``prototype_output`` the head's whole output (similarity maps too, in
        training), for the losses on similarities; inside forward so that DDP syncs their gradients."""
        if prototype_output:
            return self.head(self.hidden(self.training_features(wavs)))
        return super().forward(wavs, head_scores)

    def prototype_outputs(self, X):
        """The head's full output for spectrograms X: logits, max similarities, their locations (and maps)."""
        return self.head(self.hidden(X))

    def regularization_loss(self):
        return self.head.orthogonality_loss()

    def background_cells(self, event_mask, n_frames, n_cells):
        """(B, n_cells) bool: the head map's time cells holding no detected event, from a crop's (B, n) event
        mask over its ``n_frames`` spectrogram frames (the map covers the first ``map_extent`` of them)."""
        covered = self.map_extent(n_frames, n_frames)[0] / n_frames
        mask = event_mask[:, : max(1, round(covered * event_mask.shape[1]))]
        return F.adaptive_max_pool1d(mask[:, None], n_cells)[:, 0] == 0


@torch.no_grad()
def push_prototypes(model, batches):
    """ProtoPNet's push: each prototype becomes the feature vector of the most similar map cell among the
    training clips of its class, so that it *is* a training call's patch (AudioProtoPNet skips this step).

    ``batches`` yields (clip indices, waveforms, multi-hot labels). Returns, per prototype, where its
    patch came from: {"clip", "cell": [row, col] on the head's (upsampled) map, "similarity" before the
    push}; a prototype whose class has no clip keeps its vector (entry None).
    """
    model.eval()
    head = model.head
    n = head.n_prototypes
    best = torch.full((n,), -1.0)
    vectors = head.prototype_vectors.detach().clone().view(n, -1)
    found = [None] * n
    own_class = head.prototype_class_identity.cpu()
    for clips, wavs, labels in batches:
        features_up = head.upsample(model.hidden(model.features(wavs)))  # (B, C, H, W)
        maps = head.similarity_maps(features_up)  # (B, P, H, W)
        values, cells = maps.flatten(2).max(-1)  # (B, P)
        values = values.masked_fill(labels[:, own_class] <= 0, -1.0)  # only the prototype's own class's clips
        top, which = values.max(0)  # (P,)
        for p in torch.nonzero(top > best).flatten().tolist():
            b, cell = int(which[p]), int(cells[which[p], p])
            vectors[p] = features_up[b].flatten(1)[:, cell]
            best[p] = top[p]
            width = features_up.shape[-1]
            found[p] = {"clip": int(clips[b]), "cell": [cell // width, cell % width], "similarity": float(top[p])}
    head.prototype_vectors.data.copy_(vectors.view_as(head.prototype_vectors))
    return found


@torch.no_grad()
def nearest_clips(model, batches, prototype_ids=None, top_k=6):
    """For each prototype, the ``top_k`` clips holding the cells most similar to it, one cell per clip (as
    ProtoPNet's search for a prototype's nearest patches), with a running top-k, so memory does not grow
    with the clips.

    ``batches`` yields (clip indices, waveforms, multi-hot labels). Returns (similarities (P', k), clip
    indices (P', k), whether each of those clips is labelled with the prototype's class (P', k)).
    """
    head = model.head
    ids = torch.arange(head.n_prototypes) if prototype_ids is None else torch.as_tensor(prototype_ids)
    own_class = head.prototype_class_identity.cpu()[ids]
    best_sims = torch.full((len(ids), 0), -1.0)
    best_clips = torch.zeros((len(ids), 0), dtype=torch.long)
    best_own = torch.zeros((len(ids), 0), dtype=torch.bool)
    for clips, wavs, labels in batches:
        maps = head.similarity_maps(head.upsample(model.hidden(model.features(wavs))), ids)
        sims = torch.cat([best_sims, maps.flatten(2).amax(-1).T.cpu()], dim=1)  # (P', kept + B)
        clip_ids = torch.cat([best_clips, torch.as_tensor(clips).expand(len(ids), -1)], dim=1)
        own = torch.cat([best_own, (labels.cpu()[:, own_class] > 0).T], dim=1)
        keep = sims.topk(min(top_k, sims.shape[1]), dim=1).indices
        best_sims, best_clips, best_own = sims.gather(1, keep), clip_ids.gather(1, keep), own.gather(1, keep)
    return best_sims, best_clips, best_own


@torch.no_grad()
def prune_prototypes(model, batches, k=6, threshold=3):
    """ProtoPNet's pruning (Chen et al. 2019, k = 6, threshold 3): a prototype whose ``k`` nearest training
    clips include fewer than ``threshold`` of its own class is removed (its similarity set to 0), since it
    matches what all classes share (background) rather than its class's calls.

    Deviation: a class keeps at least one prototype (its purest, then most similar), since a class without
    prototypes could never be detected. Returns one record per prototype: its nearest clips, their
    similarities, how many are of its class, and whether it was pruned.
    """
    model.eval()
    head = model.head
    sims, clips, own = nearest_clips(model, batches, top_k=k)
    counts = own.sum(1)
    pruned = counts < threshold
    for c in range(head.n_classes):
        members = list(head.prototypes_of_class(c))
        if all(pruned[p] for p in members):
            best = max(members, key=lambda p: (int(counts[p]), float(sims[p].sum())))
            pruned[best] = False
    already = head.prototype_mask <= 0
    head.prune([p for p in range(head.n_prototypes) if pruned[p] and not already[p]])
    return [
        {"prototype": p, "class": head.class_of(p), "nearest_clips": clips[p].tolist(),
         "similarities": [round(float(v), 6) for v in sims[p]], "own_class_clips": int(counts[p]),
         "pruned": bool(pruned[p] or already[p])}
        for p in range(head.n_prototypes)
    ]  # fmt: skip


def load_published_weights(model, path):
    """Load a published AudioProtoPNet checkpoint (HF layout: ``model.backbone.*``, ``head.*``) into ``model``."""
    backbone, head, info = split_audioprotopnet_state_dict(load_audioprotopnet_checkpoint(path))
    for module, state in ((model.embedding_model, backbone), (model.head, head)):
        check_state_dict_fits(module, state, f"{path} (k={info['prototypes_per_class']}, {info['n_classes']} classes)")
        module.load_state_dict(state)
    logger.info("Loaded published AudioProtoPNet weights from %s", path)
    return model


def initialise_audioprotopnet(hparams):
    """Before training: published weights (``pretrained_audioprotopnet``) or the stage-1 backbone (``convnext_source``)."""
    if hparams.get("pretrained_audioprotopnet"):
        return load_published_weights(hparams["model"], hparams["pretrained_audioprotopnet"])
    if not hparams.get("convnext_source"):
        raise CheckpointError(
            "AudioProtoPNet trains on a frozen stage-1 ConvNeXt: pass --convnext_source with the save folder of "
            "train_convnext.py (e.g. results/convnext-birdset/XCM/42/save), or --pretrained_audioprotopnet with "
            "published AudioProtoPNet weights."
        )
    load_recipe_checkpoint(
        {"embedding_model": hparams["embedding_model"]},
        hparams["convnext_source"],
        Path(hparams["save_folder"]) / "pretrained",
        "ConvNeXt classifier",
        "recipes/BirdSet/protopnet/train_convnext.py",
        "--convnext_source",
        key="cmAP",
    )
    return hparams["model"]


def save_initial_checkpoint(hparams):
    """Published weights evaluated as they are: load them once and store them as checkpoint epoch 0."""
    checkpointer = hparams["checkpointer"]
    if checkpointer.find_checkpoint() is None:
        initialise_audioprotopnet(hparams)
        checkpointer.save_checkpoint(
            meta={"cmAP": -1.0, "epoch": 0, "source": str(hparams["pretrained_audioprotopnet"])}
        )


def recover_best_audioprotopnet(hparams):
    """The trained model of a run (best checkpoint by valid cmAP), in eval mode; a clear error without one."""
    checkpointer = hparams["checkpointer"]
    try:
        found = checkpointer.recover_if_possible(max_key="cmAP")
    except RuntimeError as exc:  # torch's size mismatch: the hparams describe another model
        raise CheckpointError(
            f"The checkpoint in {checkpointer.checkpoints_dir} does not fit the model these hparams build ({exc}). "
            "Pass the options it was trained with (e.g. --prototypes_per_class, --out_n_neurons, the backbone sizes)."
        ) from exc
    if found is None:
        raise CheckpointError(
            f"No AudioProtoPNet checkpoint in {checkpointer.checkpoints_dir}: train it first with "
            "train_audioprotopnet.py (same hparams and --output_folder), or evaluate published weights with "
            "--pretrained_audioprotopnet FILE --test_only."
        )
    return hparams["model"].eval()
