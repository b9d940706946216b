"""Sparseness and complexity of the saliency map itself (no classifier needed)."""

import math

import torch

from common.metrics.base import Metric, register_metric


def gini(values):
    """Gini index (Hurley & Rickard 2009) of each row of non-negative ``values`` (B, n).

    0 for a constant row, 1 - 1/n for a one-hot row; an all-zero row counts as constant (0).
    """
    sorted_values = values.sort(dim=1).values
    n = sorted_values.shape[1]
    k = torch.arange(1, n + 1, dtype=sorted_values.dtype, device=sorted_values.device)
    total = sorted_values.sum(dim=1)
    weighted = (sorted_values * (n - k + 0.5)).sum(dim=1) / n
    score = 1.0 - 2.0 * weighted / total.clamp(min=torch.finfo(sorted_values.dtype).tiny)
    return torch.where(total > 0, score, torch.zeros_like(score))


def entropy(values):
    """Shannon entropy (nats) of each row of non-negative ``values`` (B, n) normalized to sum 1.

    0 for a one-hot row, log(n) for a uniform row; an all-zero row counts as uniform (log n).
    """
    n = values.shape[1]
    total = values.sum(dim=1, keepdim=True)
    p = values / total.clamp(min=torch.finfo(values.dtype).tiny)
    plogp = torch.where(p > 0, p * p.clamp(min=torch.finfo(values.dtype).tiny).log(), torch.zeros_like(p))
    score = -plogp.sum(dim=1)
    return torch.where(total.squeeze(1) > 0, score, torch.full_like(score, math.log(n)))


@register_metric
class Sparseness(Metric):
    """SPS: Gini index of |saliency| per clip, in [0, 1]."""

    name = "sps"
    display_name = "SPS"
    higher_is_better = True

    def compute(self, inputs):
        # float64: the sums run over every bin of the spectrogram (~10^5)
        return gini(inputs.saliency.flatten(1).abs().double()).to(inputs.X.dtype)


@register_metric
class Complexity(Metric):
    """COMP: entropy (nats) of |saliency| normalized to a distribution per clip."""

    name = "comp"
    display_name = "COMP"
    higher_is_better = False

    def compute(self, inputs):
        # float64: the sums run over every bin of the spectrogram (~10^5)
        return entropy(inputs.saliency.flatten(1).abs().double()).to(inputs.X.dtype)
