"""Faithfulness at matched area: every method's saliency cut to masks of the same size.

A method's own mask (its threshold, its sparsity) decides how much of the input
Fid-In and the mask-in / mask-out drops keep or remove, so those columns mostly
compare thresholds: top-fraction masks that remove nearly everything send every
masked-in input to the same class. Here each saliency map is instead turned
into binary masks of the top ``a`` of its bins, for a few fractions ``a``
(``DEFAULT_AREAS``: 5, 10, 20, 50 %), the same for all methods: ``round(a * N)``
bins exactly (halves up, as the deletion curve counts), ties broken by bin index
(``saliency_rank``'s stable sort), so only the *order* of the saliency matters.

Metrics, for family F in fid_in, faithfulness_mask_in, faithfulness_mask_out,
ai, ad, ag (same formula and direction as F in ``faithfulness.py``):
``F@5``, ``F@10``, ``F@20``, ``F@50`` (one area each: the curve over area) and
``F_area_mean`` (the mean over the four: one number per family that does not
depend on a method's own thresholding). The suite builds the masked inputs
(removed bins take the front end's silence, ``keep_masked``) and classifies them
with its other rows; ``MatchedAreaMetric(family, areas)`` scores other fractions.
"""

import torch

from common.metrics.base import Metric, register_metric
from common.metrics.faithfulness import EPS

DEFAULT_AREAS = (0.05, 0.1, 0.2, 0.5)

# family -> (display name, higher is better, needs the matched mask-in / mask-out rows)
FAMILIES = {
    "fid_in": ("Fid-In", True, ("matched_in",)),
    "faithfulness_mask_in": ("Faith. mask-in", False, ("matched_in",)),
    "faithfulness_mask_out": ("Faith. mask-out", True, ("matched_out",)),
    "ai": ("AI (%)", True, ("matched_in",)),
    "ad": ("AD (%)", False, ("matched_in",)),
    "ag": ("AG (%)", True, ("matched_in",)),
}


def area_label(area):
    """0.1 -> '10': the percentage in metric names and cache keys."""
    return f"{round(100 * float(area), 6):g}"


def matched_key(kind, area):
    """Cache key of the matched-area rows: ``matched_key("matched_in", 0.1) == "matched_in@10"``."""
    return f"{kind}@{area_label(area)}"


def matched_count(n_bins, area):
    """Bins kept at ``area``: round(area * n_bins), halves up (as ``removal_counts``), within [0, n_bins]."""
    if not 0.0 <= area <= 1.0:
        raise ValueError(f"matched area must be a fraction in [0, 1], got {area}")
    return min(n_bins, int(float(area) * n_bins + 0.5))


def matched_mask(rank, area, shape=None):
    """Binary mask of the top ``area`` of bins from ``saliency_rank``'s (B, N) ranks, as float, reshaped to ``shape``."""
    mask = (rank < matched_count(rank.shape[1], area)).float()
    return mask if shape is None else mask.view(shape)


def family_score(family, inputs, area):
    """Per-clip score (B,) of ``family`` at one matched ``area``, from the suite's cached rows."""
    if family == "fid_in":
        logits = inputs.logits[matched_key("matched_in", area)]
        return (logits.argmax(dim=1) == inputs.target).to(inputs.X.dtype)
    p_x = inputs.target_prob("x")
    if family == "faithfulness_mask_out":
        return p_x - inputs.target_prob(matched_key("matched_out", area))
    p_in = inputs.target_prob(matched_key("matched_in", area))
    if family == "faithfulness_mask_in":
        return p_x - p_in
    if family == "ai":
        return 100.0 * (p_in > p_x).to(inputs.X.dtype)
    if family == "ad":
        return 100.0 * (p_x - p_in).clamp(min=0) / p_x.clamp(min=EPS)
    if family == "ag":
        return 100.0 * (p_in - p_x).clamp(min=0) / (1.0 - p_x).clamp(min=EPS)
    raise KeyError(f"unknown matched-area family {family!r}; known: {list(FAMILIES)}")


class MatchedAreaMetric(Metric):
    """``family`` scored on the top-``areas`` masks of the saliency, averaged over ``areas``.

    The suite reads ``areas`` to build the rows (one mask-in and/or mask-out row
    per clip and area); nothing here reads the explanation's own mask.
    """

    family = None
    areas = DEFAULT_AREAS

    def __init__(self, family=None, areas=None):
        if family is not None:
            self.family = family
        if areas is not None:
            self.areas = tuple(float(a) for a in areas)
        if self.family not in FAMILIES:
            raise KeyError(f"unknown matched-area family {self.family!r}; known: {list(FAMILIES)}")
        for area in self.areas:
            matched_count(1, area)  # checks the range
        title, self.higher_is_better, kinds = FAMILIES[self.family]
        needs = set(kinds) if self.family == "fid_in" else {"x", *kinds}
        self.needs = frozenset(needs)
        if family is not None or areas is not None:  # an unregistered instance: name it after what it scores
            suffix = f"@{area_label(self.areas[0])}" if len(self.areas) == 1 else "_area_mean"
            self.name = f"{self.family}{suffix}"
            self.display_name = f"{title} {_area_title(self.areas)}"

    def compute(self, inputs):
        scores = torch.stack([family_score(self.family, inputs, a) for a in self.areas])
        return scores.mean(dim=0)


def _area_title(areas):
    if len(areas) == 1:
        return f"@{area_label(areas[0])}%"
    return "area mean" if tuple(areas) == DEFAULT_AREAS else f"mean @{'/'.join(area_label(a) for a in areas)}%"


def _register(family, areas, name):
    title, higher, kinds = FAMILIES[family]
    cls = type(
        f"MatchedArea_{name.replace('@', '_at_')}",
        (MatchedAreaMetric,),
        {
            "__doc__": f"{title} on the top-area masks of the saliency ({_area_title(areas)}).",
            "name": name,
            "display_name": f"{title} {_area_title(areas)}",
            "higher_is_better": higher,
            "family": family,
            "areas": tuple(areas),
            "needs": frozenset(kinds) if family == "fid_in" else frozenset({"x", *kinds}),
        },
    )
    return register_metric(cls)


for _family in FAMILIES:
    for _area in DEFAULT_AREAS:
        _register(_family, (_area,), f"{_family}@{area_label(_area)}")
    _register(_family, DEFAULT_AREAS, f"{_family}_area_mean")

# The registered names, in table order: per family its areas, then its mean.
MATCHED_AREA_METRICS = [
    name
    for family in FAMILIES
    for name in [*(f"{family}@{area_label(a)}" for a in DEFAULT_AREAS), f"{family}_area_mean"]
]
