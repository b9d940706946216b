"""Localization: is the saliency where the true event is?

These metrics require ``ground_truth``: a (B, T, F) binary mask of the event on
X's grid (``mask`` in the synthetic data's ground-truth npz). Without it the
suite returns NaN for them. A clip whose ground truth is empty (no event bin)
also scores NaN, since there is nothing to localize.
"""

import numpy as np
import torch

from common.metrics.base import Metric, register_metric


def _event_bins(inputs):
    """(B, n) boolean ground truth and (B,) whether each clip has any event bin."""
    gt = inputs.ground_truth.flatten(1) > 0.5
    return gt, gt.any(dim=1)


@register_metric
class RelevanceMassAccuracy(Metric):
    """Share of the positive saliency that falls inside the event (Arras et al. 2022).

    A clip with no positive saliency scores 0: none of its relevance is on the event.
    """

    name = "relevance_mass_accuracy"
    display_name = "Relevance mass acc."
    higher_is_better = True
    requires = frozenset({"ground_truth"})

    def compute(self, inputs):
        gt, has_event = _event_bins(inputs)
        positive = inputs.saliency.flatten(1).clamp(min=0).double()
        total = positive.sum(dim=1)
        inside = (positive * gt).sum(dim=1)
        score = torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), torch.zeros_like(total))
        return torch.where(has_event, score, torch.full_like(score, float("nan"))).to(inputs.X.dtype)


@register_metric
class PointingGame(Metric):
    """1 if the most salient bin (the first one on ties) lies inside the event."""

    name = "pointing_game"
    display_name = "Pointing game"
    higher_is_better = True
    requires = frozenset({"ground_truth"})

    def compute(self, inputs):
        gt, has_event = _event_bins(inputs)
        peak = inputs.saliency.flatten(1).argmax(dim=1, keepdim=True)
        hit = gt.gather(1, peak).squeeze(1).to(inputs.X.dtype)
        return torch.where(has_event, hit, torch.full_like(hit, float("nan")))


@register_metric
class LocalizationAUC(Metric):
    """ROC-AUC of the saliency values as a detector of the event bins.

    NaN where the ground truth is all 0 or all 1 (ROC-AUC is undefined).
    """

    name = "localization_auc"
    display_name = "Localization AUC"
    higher_is_better = True
    requires = frozenset({"ground_truth"})

    def compute(self, inputs):
        # imported here: sklearn.metrics takes seconds to import and only this metric uses it
        from sklearn.metrics import roc_auc_score

        gt = (inputs.ground_truth.flatten(1) > 0.5).cpu().numpy()
        saliency = inputs.saliency.detach().flatten(1).double().cpu().numpy()
        scores = np.full(len(gt), np.nan)
        for i, (labels, values) in enumerate(zip(gt, saliency, strict=True)):
            if 0 < labels.sum() < labels.size:
                scores[i] = roc_auc_score(labels, values)
        return torch.as_tensor(scores, dtype=inputs.X.dtype, device=inputs.X.device)
