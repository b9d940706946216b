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
