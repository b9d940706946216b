"""Meta-evaluation: which ground-truth-free metric orders the methods as ground-truth localization does.

On real data there is no ground truth, so a user picks a method by Fid-In,
faithfulness, AI/AD/AG, deletion/insertion AUC or the sanity check. On a
design with ground truth we can measure whether that choice would be right:
for each ground-truth-free metric, Kendall's tau (tau-b, ``scipy.stats.kendalltau``)
across methods between the metric's method means and a localization metric's
method means (``localization_auc`` first; ``relevance_mass_accuracy`` and
``pointing_game`` too when scored). Bolanos et al. (Interspeech 2025) found
faithfulness rankings disagreeing with ground-truth AUC; this measures it for
every metric of the suite.

- Orientation: each metric is read in its declared direction (``HIGHER_IS_BETTER``),
  so tau > 0 always means "ranks the methods as ground truth does" (a
  lower-is-better metric such as deletion AUC is sign-flipped).
- Controls (input magnitude, random) are methods like the others: a metric
  that ranks them high disagrees with ground truth, which is the point.
- Interval: the percentile bootstrap of ``common.metrics.uncertainty`` (its
  resample count, confidence and seed) over clips, with one draw of clips per
  resample shared by every method and by both metrics, so the interval shows
  how much the tau moves with the clips and not with independent noise per
  method (two methods scored on the same hard clips stay ordered). Method-level
  scores (the sanity rho and SSIM, measured once per method) stay fixed; only the
  reference is resampled for them.
- A classifier flagged by the evidence check (``classifier evidence check`` ==
  fail) is not meta-evaluated: its ground truth is not its evidence.
"""

import math
import warnings

import numpy as np
from scipy.stats import kendalltau

from common.metrics import FAITHFULNESS_METRICS, HIGHER_IS_BETTER, MATCHED_AREA_METRICS, display_name
from common.metrics.uncertainty import CONFIDENCE, N_RESAMPLES, percentile_bounds, resample_indices

REFERENCES = ("localization_auc", "relevance_mass_accuracy", "pointing_game")
GROUND_TRUTH_FREE = tuple(FAITHFULNESS_METRICS) + tuple(MATCHED_AREA_METRICS)
# the leaderboard's method-level sanity columns (similarity after randomisation; lower is better)
SANITY_PREFIXES = ("sanity rho (", "sanity SSIM (")
EVIDENCE_COLUMN = "classifier evidence check"
MIN_METHODS = 3  # with two methods tau is always +-1
NO_GROUND_TRUTH = "not meta-evaluated: no ground-truth localization scores"
FLAGGED = "not meta-evaluated: the classifier failed the evidence check"
COLUMNS = ["classifier", "metric", "reference", "kendall tau", "tau lo", "tau hi", "n methods", "agrees"]


def kendall_tau_b(x, y):
    """Kendall's tau-b of each row of ``x`` with the same row of ``y`` ((..., M) arrays): scipy's tau-b, vectorised
    for the bootstrap. NaN where one row is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    i, j = np.triu_indices(x.shape[-1], k=1)
    sx, sy = np.sign(x[..., i] - x[..., j]), np.sign(y[..., i] - y[..., j])
    # (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y), as scipy's tau-b
    den = np.sqrt((sx * sx).sum(-1) * (sy * sy).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(-1) / np.where(den > 0, den, 1), np.nan)


def _nanmean(values, axis):
    with warnings.catch_warnings():  # a method without a score on any resampled clip -> NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def tau_interval(
    metric,
    reference,
    metric_higher=True,
    reference_higher=True,
    n_resamples=N_RESAMPLES,
    confidence=CONFIDENCE,
    seed=0,
):
    """(tau, lo, hi, n methods): oriented Kendall tau across methods between ``metric`` and ``reference``.

    ``reference``: (methods, clips) per-clip scores, NaN where a method has no
    score; ``metric``: the same shape, or (methods,) method-level scores. The
    method means are NaN-means over clips; methods without a mean for either
    are left out (``n methods`` counts the rest; below MIN_METHODS all NaN).
    Both are read in their direction, so tau > 0 means agreement. [lo, hi]:
    percentile bootstrap, every resample drawing one set of clips for all
    methods and both metrics.
    """
    reference = np.asarray(reference, dtype=np.float64)
    metric = np.asarray(metric, dtype=np.float64)
    if reference.ndim != 2 or metric.ndim not in (1, 2) or metric.shape[0] != reference.shape[0]:
        raise ValueError(f"metric {metric.shape} and reference {reference.shape}: expected (M, C) or (M,), and (M, C)")
    if metric.ndim == 2 and metric.shape != reference.shape:
        raise ValueError(f"metric {metric.shape} and reference {reference.shape} must be over the same clips")
    sign = (1 if metric_higher else -1) * (1 if reference_higher else -1)
    per_clip = metric.ndim == 2
    metric_means = _nanmean(metric, 1) if per_clip else metric
    reference_means = _nanmean(reference, 1)
    keep = np.isfinite(metric_means) & np.isfinite(reference_means)
    n = int(keep.sum())
    if n < MIN_METHODS:
        return math.nan, math.nan, math.nan, n
    tau = float(kendalltau(metric_means[keep], reference_means[keep]).statistic)
    if math.isnan(tau):  # one of them is constant across methods: no order to compare
        return math.nan, math.nan, math.nan, n
    index = resample_indices(reference.shape[1], n_resamples, seed)  # (R, C): shared by every method, both metrics
    reference_boot = _nanmean(reference[keep][:, index], 2).T  # (R, methods)
    metric_boot = _nanmean(metric[keep][:, index], 2).T if per_clip else np.broadcast_to(metric_means[keep], (1, n))
    lo, hi = percentile_bounds(sign * kendall_tau_b(metric_boot, reference_boot), confidence)
    return sign * tau, lo, hi, n


def verdict(lo, hi):
    """'yes' when the interval lies above 0, 'reversed' below 0, 'no' when it covers 0 (or is NaN)."""
    if lo > 0:
        return "yes"
    if hi < 0:
        return "reversed"
    return "no"


def _number(value):
    """A CSV cell or a table value -> float (NaN for empty or non-numeric)."""
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else math.nan
        except ValueError:
            return math.nan
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def score_matrices(per_clip_rows):
    """{classifier: (methods, clips, {metric: (methods, clips) array})} from per-clip rows
    (``method``, ``classifier``, ``clip`` and one value per metric, as in leaderboard_per_clip.csv).

    Clips are aligned by name across methods; a method without a clip has NaN there.
    """
    grouped = {}
    for row in per_clip_rows:
        grouped.setdefault(row["classifier"], []).append(row)
    out = {}
    for classifier, rows in grouped.items():
        methods = list(dict.fromkeys(r["method"] for r in rows))
        clips = list(dict.fromkeys(str(r["clip"]) for r in rows))
        m_index, c_index = {m: k for k, m in enumerate(methods)}, {c: k for k, c in enumerate(clips)}
        names = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("method", "classifier", "clip")]
        scores = {name: np.full((len(methods), len(clips)), np.nan) for name in names}
        for r in rows:
            for name in names:
                scores[name][m_index[r["method"]], c_index[str(r["clip"])]] = _number(r.get(name))
        out[classifier] = (methods, clips, {n: s for n, s in scores.items() if np.isfinite(s).any()})
    return out


def flagged_classifiers(leaderboard_rows):
    """The classifiers whose rows say the evidence check failed."""
    return {r["classifier"] for r in leaderboard_rows if str(r.get(EVIDENCE_COLUMN, "")).strip() == "fail"}


def meta_evaluate(
    per_clip_rows,
    leaderboard_rows=(),
    metrics=None,
    references=REFERENCES,
    include_flagged=False,
    n_resamples=N_RESAMPLES,
    confidence=CONFIDENCE,
    seed=0,
):
    """(rows, notes): one row (COLUMNS) per classifier x ground-truth-free metric x reference, and
    {classifier: why it was not meta-evaluated}.

    ``metrics``: registered metric names (default: every ground-truth-free one
    that was scored); the ``sanity rho (...)`` / ``sanity SSIM (...)`` columns of
    ``leaderboard_rows`` (lower is better) are added as method-level metrics. ``references``: the
    ground-truth metrics, those that were scored. A classifier flagged by the
    evidence check in ``leaderboard_rows`` is left out unless ``include_flagged``
    (its rows then say "(evidence check failed)").
    """
    flagged = flagged_classifiers(leaderboard_rows)
    method_level = {}
    for r in leaderboard_rows:
        for column, value in r.items():
            if column.startswith(SANITY_PREFIXES) and math.isfinite(_number(value)):
                method_level.setdefault(r["classifier"], {}).setdefault(column, {})[r["method"]] = _number(value)
    rows, notes = [], {}
    for classifier, (methods, _, scores) in score_matrices(per_clip_rows).items():
        if classifier in flagged and not include_flagged:
            notes[classifier] = FLAGGED
            continue
        if len(methods) < MIN_METHODS:
            notes[classifier] = f"not meta-evaluated: {len(methods)} method(s), at least {MIN_METHODS} needed"
            continue
        refs = [r for r in references if r in scores]
        if not refs:
            notes[classifier] = NO_GROUND_TRUTH
            continue
        names = [m for m in (metrics or GROUND_TRUTH_FREE) if m in scores and m not in REFERENCES]
        candidates = [(display_name(m), scores[m], HIGHER_IS_BETTER.get(m, True)) for m in names]
        for column, by_method in method_level.get(classifier, {}).items():
            candidates.append((column, np.array([by_method.get(m, np.nan) for m in methods]), False))
        shown = classifier + (" (evidence check failed)" if classifier in flagged else "")
        for label, values, higher in candidates:
            for ref in refs:
                tau, lo, hi, n = tau_interval(
                    values, scores[ref], higher, HIGHER_IS_BETTER.get(ref, True), n_resamples, confidence, seed
                )
                rows.append(
                    {
                        "classifier": shown,
                        "metric": label,
                        "reference": display_name(ref),
                        "kendall tau": tau,
                        "tau lo": lo,
                        "tau hi": hi,
                        "n methods": n,
                        "agrees": verdict(lo, hi),
                    }
                )
    return rows, notes


def legend(n_resamples=N_RESAMPLES, confidence=CONFIDENCE):
    """The caption of the meta-evaluation table."""
    return (
        "Kendall's tau-b across methods between each ground-truth-free metric's method means and a ground-truth "
        "localization metric's (reference). Every metric is read in its direction (a lower-is-better one such as "
        "deletion AUC, mask-in faithfulness, AD or the sanity rho / SSIM is sign-flipped), so tau > 0 means it ranks the "
        "methods as ground truth does. The controls (input magnitude, random) are included as methods: a metric "
        f"that ranks them high disagrees. [tau lo, tau hi]: percentile bootstrap {confidence:.0%} interval "
        f"({n_resamples} resamples of the clips with replacement, the same clips for every method and both "
        "metrics; the sanity rho / SSIM is measured once per method, so only the reference is resampled for it). "
        "agrees: yes = interval above 0, reversed = below 0, no = covers 0. A classifier that failed the evidence "
        "check is not meta-evaluated."
    )


def meta_evaluation_markdown(rows, notes, n_resamples=N_RESAMPLES, confidence=CONFIDENCE):
    """One table per classifier, the legend and the notes on classifiers left out."""
    from common.reports.tables import markdown_table

    parts = ["## Meta-evaluation: which ground-truth-free metric agrees with ground truth\n"]
    for classifier in dict.fromkeys(r["classifier"] for r in rows):
        shown = [{k: v for k, v in r.items() if k != "classifier"} for r in rows if r["classifier"] == classifier]
        parts.append(f"### {classifier}\n\n" + markdown_table(shown, COLUMNS[1:]))
    parts.extend(f"{classifier}: {why}.\n" for classifier, why in notes.items())
    parts.append(legend(n_resamples, confidence) + "\n")
    return "\n".join(parts)


def write_meta_evaluation(rows, notes, out, n_resamples=N_RESAMPLES, confidence=CONFIDENCE):
    """Write ``meta_evaluation.csv`` and ``meta_evaluation.md`` under ``out``; return the markdown."""
    from pathlib import Path

    from common.io import atomic_write_text
    from common.reports.tables import write_csv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "meta_evaluation.csv", columns=COLUMNS)
    text = meta_evaluation_markdown(rows, notes, n_resamples, confidence)
    atomic_write_text(out / "meta_evaluation.md", text)
    return text
