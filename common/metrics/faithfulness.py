"""Faithfulness: does the classifier's belief in class c follow the explanation?

All scores read p_c, the probability of the explained class c (the
classifier's own prediction, ``explanation.target``), on inputs the suite has
already classified.
"""

import torch

from common.metrics.base import Metric, register_metric

EPS = 1e-8  # guards the AD / AG divisions when p_c(X) is 0 or 1


@register_metric
class FidIn(Metric):
    """Input fidelity (PIQ, L-MAC): 1 if the masked-in input (the explanation kept, the rest silenced) is still classified as c."""

    name = "fid_in"
    display_name = "Fid-In"
    higher_is_better = True
    needs = frozenset({"mask_in"})

    def compute(self, inputs):
        # argmax of the logits, not the probabilities: identical in exact arithmetic, and it
        # cannot be fooled by two probabilities rounding to the same float
        return (inputs.logits["mask_in"].argmax(dim=1) == inputs.target).to(inputs.X.dtype)


@register_metric
class FaithfulnessMaskOut(Metric):
    """p_c(X) - p_c((1 - M) X): the drop when the explanation is removed."""

    name = "faithfulness_mask_out"
    display_name = "Faith. mask-out (p(X)-p((1-M)X))"
    higher_is_better = True
    needs = frozenset({"x", "mask_out"})

    def compute(self, inputs):
        return inputs.target_prob("x") - inputs.target_prob("mask_out")


@register_metric
class FaithfulnessMaskIn(Metric):
    """p_c(X) - p_c(M X): the drop when only the explanation is kept."""

    name = "faithfulness_mask_in"
    display_name = "Faith. mask-in (p(X)-p(MX))"
    higher_is_better = False
    needs = frozenset({"x", "mask_in"})

    def compute(self, inputs):
        return inputs.target_prob("x") - inputs.target_prob("mask_in")


@register_metric
class AverageIncrease(Metric):
    """AI, percent: 100 if p_c(M X) > p_c(X), else 0."""

    name = "ai"
    display_name = "AI (%)"
    higher_is_better = True
    needs = frozenset({"x", "mask_in"})

    def compute(self, inputs):
        return 100.0 * (inputs.target_prob("mask_in") > inputs.target_prob("x")).to(inputs.X.dtype)


@register_metric
class AverageDrop(Metric):
    """AD, percent: 100 * max(0, p_c(X) - p_c(M X)) / p_c(X)."""

    name = "ad"
    display_name = "AD (%)"
    higher_is_better = False
    needs = frozenset({"x", "mask_in"})

    def compute(self, inputs):
        p_x, p_in = inputs.target_prob("x"), inputs.target_prob("mask_in")
        return 100.0 * (p_x - p_in).clamp(min=0) / p_x.clamp(min=EPS)


@register_metric
class AverageGain(Metric):
    """AG, percent: 100 * max(0, p_c(M X) - p_c(X)) / (1 - p_c(X))."""

    name = "ag"
    display_name = "AG (%)"
    higher_is_better = True
    needs = frozenset({"x", "mask_in"})

    def compute(self, inputs):
        p_x, p_in = inputs.target_prob("x"), inputs.target_prob("mask_in")
        return 100.0 * (p_in - p_x).clamp(min=0) / (1.0 - p_x).clamp(min=EPS)


def curve_auc(curve, n_steps):
    """Trapezoid area under a (B, n_steps + 1) curve sampled at fractions 0, 1/n_steps, ..., 1."""
    return torch.trapezoid(curve, dx=1.0 / n_steps, dim=1)


@register_metric
class DeletionAUC(Metric):
    """Area under p_c as the most salient bins are zeroed, fraction 0 -> 1."""

    name = "deletion_auc"
    display_name = "Deletion AUC"
    higher_is_better = False
    needs = frozenset({"deletion"})

    def compute(self, inputs):
        return curve_auc(inputs.target_prob("deletion"), inputs.n_steps)


@register_metric
class InsertionAUC(Metric):
    """Area under p_c as the most salient bins are restored onto zeros, fraction 0 -> 1."""

    name = "insertion_auc"
    display_name = "Insertion AUC"
    higher_is_better = True
    needs = frozenset({"insertion"})

    def compute(self, inputs):
        return curve_auc(inputs.target_prob("insertion"), inputs.n_steps)
