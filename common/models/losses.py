"""Training losses for multi-label classification."""

import torch
from torch import nn

_REDUCTIONS = ("mean", "sum", "none")


class AsymmetricLoss(nn.Module):
    """Asymmetric Loss (Ridnik et al., ICCV 2021) on multi-label logits, as AudioProtoPNet/BirdSet train with.

    A focal loss with separate focusing for positives (``gamma_pos``) and
    negatives (``gamma_neg``), plus asymmetric clipping: a negative whose
    probability is below ``clip`` contributes nothing. ``forward(logits, targets)``
    takes logits (B, C) and multi-hot targets (B, C).
    """

    def __init__(self, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8, reduction="mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if clip < 0:
            raise ValueError(f"clip must be >= 0, got {clip}")
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.eps = eps
        self.reduction = reduction

    def forward(self, logits, targets):
        if logits.shape != targets.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape (B, C)"
            )
        targets = targets.to(logits.dtype)
        p = torch.sigmoid(logits)
        # Shifting the negative probability by `clip` zeroes the loss of easy negatives
        # (p < clip), which dominate when each clip has few of many classes.
        p_neg = (1 - p + self.clip).clamp(max=1)
        loss = targets * torch.log(p.clamp(min=self.eps)) + (1 - targets) * torch.log(p_neg.clamp(min=self.eps))
        pt = p * targets + p_neg * (1 - targets)
        gamma = self.gamma_pos * targets + self.gamma_neg * (1 - targets)
        loss = loss * torch.pow(1 - pt, gamma)
        if self.reduction == "mean":
            return -loss.mean()
        if self.reduction == "sum":
            return -loss.sum()
        return -loss

    def extra_repr(self):
        return (
            f"gamma_neg={self.gamma_neg}, gamma_pos={self.gamma_pos}, clip={self.clip}, "
            f"eps={self.eps}, reduction={self.reduction!r}"
        )


def _class_best(max_similarities, prototypes_per_class):
    """(B, P) similarities -> (B, n_classes): each class's most similar prototype."""
    B, P = max_similarities.shape
    return max_similarities.view(B, P // prototypes_per_class, prototypes_per_class).amax(-1)


def prototype_cluster_cost(max_similarities, targets, prototypes_per_class):
    """ProtoPNet's cluster cost for similarities: mean over (clip, present class) of 1 - the class's best
    prototype similarity in the clip (ProtoPNet: the distance to the nearest own prototype). Multi-label:
    every present class counts."""
    present = targets > 0
    if not present.any():
        return max_similarities.sum() * 0.0
    return (1.0 - _class_best(max_similarities, prototypes_per_class)[present]).mean()


def prototype_separation_cost(max_similarities, targets, prototypes_per_class):
    """ProtoPNet's separation cost for similarities: mean over clips of the best similarity of any prototype
    of an absent class (ProtoPNet subtracts the distance to the nearest such prototype; a cost to lower)."""
    best = _class_best(max_similarities, prototypes_per_class).masked_fill(targets > 0, float("-inf")).amax(1)
    keep = torch.isfinite(best)  # a clip with every class present has no absent one
    return best[keep].mean() if keep.any() else max_similarities.sum() * 0.0


def prototype_background_cost(similarity_maps, targets, background, prototypes_per_class):
    """Mean over (clip, prototype of a present class) of the prototype's highest similarity on the clip's
    time cells that hold no detected event: similarity away from the calls, to lower.

    similarity_maps (B, P, H, W) with time along W; background (B, W) bool; clips without background skip.
    """
    present = targets[:, torch.arange(similarity_maps.shape[1], device=targets.device) // prototypes_per_class] > 0
    on_background = similarity_maps.masked_fill(~background[:, None, None, :], 0.0).flatten(2).amax(-1)  # (B, P)
    keep = present & background.any(1, keepdim=True)
    return on_background[keep].mean() if keep.any() else similarity_maps.sum() * 0.0
