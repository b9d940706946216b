"""Metrics: every explanation metric behind one interface (see base.py), scored by one suite.

Importing this package registers every metric in ``common.registry.METRICS``:

- faithfulness (``faithfulness.py``): fid_in, faithfulness_mask_out,
  faithfulness_mask_in, ai, ad, ag, deletion_auc, insertion_auc;
- saliency shape (``complexity.py``): sps, comp;
- localization, with ground truth (``localization.py``): relevance_mass_accuracy,
  pointing_game, localization_auc;
- listenable interpretation, with the true event (``listenable.py``): si_snr.
"""

from common.metrics import complexity, faithfulness, listenable, localization
from common.metrics.base import EXTRA_INPUTS, FORWARD_INPUTS, Metric, MetricInputs, register_metric
from common.metrics.suite import (
    EvaluationSuite,
    display_name,
    merge_per_clip,
    per_clip_rows,
    summarize,
    summary_row,
)
from common.registry import METRICS

_MODULES = (faithfulness, complexity, localization, listenable)

# Table titles of the metrics defined here, by registered name.
DISPLAY_NAMES = {
    cls.name: cls.display_name
    for module in _MODULES
    for cls in vars(module).values()
    if isinstance(cls, type) and issubclass(cls, Metric) and cls.name
}

# Whether a larger score is better, by registered name.
HIGHER_IS_BETTER = {name: METRICS.get(name).higher_is_better for name in DISPLAY_NAMES}

# The usual table columns, in order: what needs no ground truth, then what does.
FAITHFULNESS_METRICS = [
    "fid_in",
    "faithfulness_mask_out",
    "faithfulness_mask_in",
    "ai",
    "ad",
    "ag",
    "sps",
    "comp",
    "deletion_auc",
    "insertion_auc",
]
LOCALIZATION_METRICS = ["relevance_mass_accuracy", "pointing_game", "localization_auc", "si_snr"]

__all__ = [
    "DISPLAY_NAMES",
    "EXTRA_INPUTS",
    "FAITHFULNESS_METRICS",
    "LOCALIZATION_METRICS",
    "FORWARD_INPUTS",
    "HIGHER_IS_BETTER",
    "EvaluationSuite",
    "Metric",
    "MetricInputs",
    "display_name",
    "merge_per_clip",
    "per_clip_rows",
    "register_metric",
    "summarize",
    "summary_row",
]
