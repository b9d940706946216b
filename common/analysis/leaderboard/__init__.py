"""One leaderboard for every explanation method, on one classifier and one data set.

``config`` (the YAML schema), ``clips`` (which clips, their audio and ground
truth), ``classifiers`` (trained by their recipe, loaded), ``methods`` (built
around the classifier, fitted, or trained by their recipe), ``sanity`` (the
model-parameter randomisation check), ``table`` (the rows) and ``run`` (the
whole run and its files). ``tools/leaderboard.py CONFIG`` runs one.
"""

from common.analysis.leaderboard.clips import Clips, load_clips, prepare_data, select_rows
from common.analysis.leaderboard.config import check_config, load_config, method_label
from common.analysis.leaderboard.run import MethodResult, evaluate_method, run
from common.analysis.leaderboard.sanity import (
    default_cascade,
    full_cascade,
    last_encoder_block,
    randomized_copy,
    rebind,
    reinitialize,
    sanity_check,
    save_cascade_plot,
    spearman,
    ssim,
)
from common.analysis.leaderboard.table import METRIC_COLUMNS, direction_legend, drop_empty_columns, leaderboard_rows

__all__ = [
    "METRIC_COLUMNS",
    "Clips",
    "MethodResult",
    "check_config",
    "default_cascade",
    "direction_legend",
    "drop_empty_columns",
    "evaluate_method",
    "full_cascade",
    "last_encoder_block",
    "leaderboard_rows",
    "load_clips",
    "load_config",
    "method_label",
    "prepare_data",
    "randomized_copy",
    "rebind",
    "reinitialize",
    "run",
    "sanity_check",
    "save_cascade_plot",
    "select_rows",
    "spearman",
    "ssim",
]
