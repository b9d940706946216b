"""Metrics: every explanation metric behind one interface (see base.py), scored by one suite.

Importing this package registers every metric in ``common.registry.METRICS``:

- faithfulness (``faithfulness.py``): fid_in, faithfulness_mask_out,
  faithfulness_mask_in, ai, ad, ag, deletion_auc, insertion_auc;
- saliency shape (``complexity.py``): sps, comp;
- localization, with ground truth (``localization.py``): relevance_mass_accuracy,
  pointing_game, localization_auc;
- listenable interpretation, with the true event (``listenable.py``): si_snr;
- faithfulness at matched area (``matched_area.py``): fid_in@5 ... ag@50 and
  fid_in_area_mean ... ag_area_mean (``MATCHED_AREA_METRICS``).
"""

# Importing the metric modules registers their metrics.
from common.metrics import complexity, faithfulness, listenable, localization, matched_area  # noqa: F401
from common.metrics.base import EXTRA_INPUTS, FORWARD_INPUTS, Metric, MetricInputs, display_name, register_metric
from common.metrics.matched_area import DEFAULT_AREAS, MATCHED_AREA_METRICS, MatchedAreaMetric
from common.metrics.suite import EvaluationSuite, merge_per_clip, per_clip_rows, summarize, summary_row
from common.registry import METRICS

# Table titles and directions (whether a larger score is better) of the registered metrics, by
# name: read from the registry, as ``display_name`` does for a metric registered later.
DISPLAY_NAMES = {name: display_name(name) for name in METRICS.names()}
HIGHER_IS_BETTER = {name: METRICS.get(name).higher_is_better for name in METRICS.names()}

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
    "DEFAULT_AREAS",
    "DISPLAY_NAMES",
    "EXTRA_INPUTS",
    "FAITHFULNESS_METRICS",
    "LOCALIZATION_METRICS",
    "MATCHED_AREA_METRICS",
    "MatchedAreaMetric",
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
