"""The leaderboard table: one row per method (every metric's mean, the sanity check, seconds per clip)."""

import math

from common.metrics import FAITHFULNESS_METRICS, HIGHER_IS_BETTER, LOCALIZATION_METRICS, display_name, summarize

# Columns of the leaderboard, in order (metrics by registered name; missing ones are left out).
METRIC_COLUMNS = FAITHFULNESS_METRICS + LOCALIZATION_METRICS


def leaderboard_rows(results, metrics, cascade_names=("head", "head+block")):
    """One row per method: method, classifier, every metric's mean, the sanity similarities and verdict, s/clip."""
    rows = []
    for result in results:
        summary = summarize(result.per_clip)
        row = {"method": result.label, "classifier": result.classifier}
        for name in metrics:
            if name in summary:
                row[display_name(name)] = summary[name]
        if result.sanity is not None:
            for name, value in zip(cascade_names, result.sanity["steps"], strict=False):
                row[f"sanity rho ({name})"] = value
            row["sanity"] = "pass" if result.sanity["passed"] else "fail"
        else:
            row["sanity"] = "-"
        row["s / clip"] = result.seconds_per_clip
        row["clips"] = len(next(iter(result.per_clip.values()))) if result.per_clip else 0
        rows.append(row)
    return rows


def drop_empty_columns(rows):
    """Leave out metric columns that are NaN for every method (e.g. localization without ground truth)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def empty(column):
        values = [row.get(column) for row in rows]
        return all(isinstance(v, float) and math.isnan(v) for v in values if v is not None)

    keep = [c for c in columns if not empty(c)]
    return [{k: row.get(k, "") for k in keep} for row in rows], keep


def direction_legend(metrics):
    """'Fid-In (higher is better), ...' for the table's caption."""
    return (
        ", ".join(f"{display_name(m)} {'higher' if HIGHER_IS_BETTER.get(m, True) else 'lower'}" for m in metrics)
        + "; sanity rho lower (must drop when the classifier's top layers are randomised)"
    )
