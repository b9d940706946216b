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


# ---------------------------------------------------------------- per-design analyses (not suite metrics)
def relevance_shares(saliency, part_masks):
    """(B, P): the share of each clip's positive relevance on each event's own mask (conjunction, order).

    ``part_masks`` (B, P, T, F). Shares need not sum to 1 (relevance off both
    events, or on bins both share); a clip with no positive relevance scores 0.
    """
    flat = saliency.detach().flatten(1).double()
    positive = torch.nan_to_num(flat, nan=0.0).clamp(min=0)
    total = positive.sum(dim=1, keepdim=True)
    inside = torch.einsum("bn,bpn->bp", positive, (part_masks.flatten(2) > 0.5).double())
    shares = torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), torch.zeros_like(inside))
    broken = ~torch.isfinite(flat).all(dim=1, keepdim=True)  # a map with NaN/Inf is no evidence of "no relevance"
    return torch.where(broken, torch.full_like(shares, float("nan")), shares)


def top_region_on(saliency, region):
    """(B,): whether most of each clip's top region lies on ``region`` (B, T, F), the top region being its
    most salient bins, as many as the region has (the clever_hans cue: does the explanation's top area
    equal to the cue's fall on it?). Bins tied at the k-th value share the remaining places fractionally, so
    a map constant over frequency (a time-only explanation) gets no credit from the bins' order. NaN where
    the region is empty (the clip has no cue) or the map is not finite."""
    flat = saliency.detach().flatten(1).double()
    inside = region.flatten(1) > 0.5
    out = torch.full((flat.shape[0],), float("nan"), dtype=torch.float64)
    for b in range(flat.shape[0]):
        k = int(inside[b].sum())
        if not k or not bool(torch.isfinite(flat[b]).all()):
            continue
        kth = flat[b].topk(k).values[-1]
        above, tied = flat[b] > kth, flat[b] == kth
        places = k - int(above.sum())  # left for the tied bins, shared in proportion
        on = float((above & inside[b]).sum()) + places * float((tied & inside[b]).sum()) / float(tied.sum())
        out[b] = float(on / k > 0.5)
    return out
