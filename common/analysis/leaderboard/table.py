"""The leaderboard table: one row per method (every metric's mean and its interval, ranks, sanity, s/clip).

Every per-clip mean comes with its bootstrap 95 % interval (clips resampled
with replacement, ``common.metrics.uncertainty``): the CSV has the columns
``<Metric>``, ``<Metric> lo`` and ``<Metric> hi``; the markdown and the HTML
report show ``mean [lo, hi]`` in one cell (``interval_rows``). ``rank (<Metric>)``
ranks the methods on each ``rank_by`` metric so that methods whose intervals
overlap share a rank: 1 + the number of methods whose interval lies entirely
better (``shared_ranks``). The controls (input magnitude, random) are ranked like
any method: a method ranked with them is not distinguishable from them.
"""

import math

import torch

from common.metrics import FAITHFULNESS_METRICS, HIGHER_IS_BETTER, LOCALIZATION_METRICS, display_name
from common.metrics.uncertainty import CONFIDENCE, N_RESAMPLES, bootstrap_interval, shared_ranks

# Columns of the leaderboard, in order (metrics by registered name; missing ones are left out).
METRIC_COLUMNS = FAITHFULNESS_METRICS + LOCALIZATION_METRICS
# What the rank column ranks by default: localization when the data has ground truth, else deletion.
DEFAULT_RANK_BY = ("localization_auc", "deletion_auc")
LO, HI = " lo", " hi"


def rank_column(name):
    return f"rank ({display_name(name)})"


def _scored(results, name):
    """Whether some method has a non-NaN score for metric ``name``."""
    return any(
        name in r.per_clip and bool(torch.isfinite(torch.as_tensor(r.per_clip[name], dtype=torch.float64)).any())
        for r in results
    )


def rank_metrics(results, metrics, rank_by=None):
    """The metrics to rank by: ``rank_by`` (a name or a list), else the first of DEFAULT_RANK_BY that was scored."""
    if rank_by is None:
        chosen = next((m for m in DEFAULT_RANK_BY if m in metrics and _scored(results, m)), None)
        return [chosen] if chosen else []
    names = [rank_by] if isinstance(rank_by, str) else list(rank_by)
    return [m for m in names if m in metrics and _scored(results, m)]


def leaderboard_rows(
    results,
    metrics,
    cascade_names=("head", "head+block"),
    rank_by=None,
    n_resamples=N_RESAMPLES,
    confidence=CONFIDENCE,
    seed=0,
):
    """One row per method: method, classifier, a rank per ``rank_by`` metric, every metric's mean and its
    bootstrap interval (``<Metric> lo`` / ``hi``), the sanity similarities and verdict, s/clip, clips."""
    ranked = rank_metrics(results, metrics, rank_by)
    rows = []
    for result in results:
        row = {"method": result.label, "classifier": result.classifier}
        row.update({rank_column(name): math.nan for name in ranked})  # filled below, kept in front
        for name in metrics:
            if name in result.per_clip:
                mean, lo, hi = bootstrap_interval(result.per_clip[name], n_resamples, confidence, seed)
                row[display_name(name)], row[display_name(name) + LO], row[display_name(name) + HI] = mean, lo, hi
        if result.sanity is not None:
            for name, value in zip(cascade_names, result.sanity["steps"], strict=False):
                row[f"sanity rho ({name})"] = value
            # the verdict's step: the end of the cascade (every layer re-initialised, with full_cascade)
            row["sanity rho (last step)"] = result.sanity["steps"][-1]
            if "ssim_steps" in result.sanity:
                row["sanity SSIM (last step)"] = result.sanity["ssim_steps"][-1]
            shuffled = result.sanity.get("data_randomization") or {}
            if "spearman" in shuffled:  # Adebayo et al.'s data randomisation test (the classifier's shuffled twin)
                row["sanity rho (shuffled labels)"] = shuffled["spearman"]
                row["sanity SSIM (shuffled labels)"] = shuffled["ssim"]
            row["sanity"] = "pass" if result.sanity["passed"] else "fail"
        else:
            row["sanity"] = "-"
        row["s / clip"] = result.seconds_per_clip
        row["clips"] = len(next(iter(result.per_clip.values()))) if result.per_clip else 0
        rows.append(row)
    for name in ranked:
        column = display_name(name)
        intervals = [(row.get(column + LO, math.nan), row.get(column + HI, math.nan)) for row in rows]
        for row, rank in zip(rows, shared_ranks(intervals, HIGHER_IS_BETTER.get(name, True)), strict=True):
            row[rank_column(name)] = rank if math.isnan(rank) else int(rank)
    return rows


def drop_empty_columns(rows):
    """Leave out metric columns that are NaN for every method (e.g. localization without ground truth)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def empty(column):
        values = [row.get(column) for row in rows]
        return all(isinstance(v, float) and math.isnan(v) for v in values if v is not None)

    keep = [c for c in columns if not empty(c)]
    return [{k: row.get(k, "") for k in keep} for row in rows], keep


def interval_rows(rows, columns):
    """The compact table (markdown, HTML): each ``<Metric>`` cell is ``mean [lo, hi]``; the bound columns go."""
    from common.reports.tables import format_value

    bounded = [c for c in columns if c + LO in columns and c + HI in columns]
    bounds = {c + s for c in bounded for s in (LO, HI)}
    compact_columns = [c for c in columns if c not in bounds]

    def cell(row, column):
        mean, lo, hi = row.get(column, ""), row.get(column + LO, ""), row.get(column + HI, "")
        if not isinstance(mean, float) or math.isnan(mean) or not isinstance(lo, float):
            return mean
        return f"{format_value(mean, 3)} [{format_value(lo, 3)}, {format_value(hi, 3)}]"

    compact = [{c: cell(row, c) if c in bounded else row.get(c, "") for c in compact_columns} for row in rows]
    return compact, compact_columns


def direction_legend(metrics):
    """'Fid-In (higher is better), ...' for the table's caption."""
    return (
        ", ".join(f"{display_name(m)} {'higher' if HIGHER_IS_BETTER.get(m, True) else 'lower'}" for m in metrics)
        + "; sanity rho and SSIM lower (must drop when the classifier's layers are randomised)"
    )


def uncertainty_legend(ranked, n_resamples=N_RESAMPLES, confidence=CONFIDENCE):
    """The caption's sentence on the intervals and the rank rule."""
    text = (
        f"[lo, hi]: percentile bootstrap {confidence:.0%} interval of the mean ({n_resamples} resamples of the "
        f"clips with replacement; NaN clips left out)."
    )
    if ranked:
        text += (
            f" Rank by {', '.join(display_name(m) for m in ranked)}: 1 + the number of methods whose interval lies "
            f"entirely better, so methods whose intervals overlap share a rank (the controls are ranked too)."
        )
    return text
