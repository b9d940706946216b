"""Metrics of regression outputs (music emotion, mid-level ratings) and of agreement between explanations."""

import numpy as np
from scipy import stats


def pearson_r(predicted, target):
    """Pearson correlation over the entries whose target is known (not NaN); NaN with under 3 of them or no spread."""
    predicted, target = np.asarray(predicted, dtype=np.float64), np.asarray(target, dtype=np.float64)
    known = ~np.isnan(target)
    if known.sum() < 3 or np.std(predicted[known]) == 0 or np.std(target[known]) == 0:
        return float("nan")
    return float(np.corrcoef(predicted[known], target[known])[0, 1])


def correlation_table(predicted, target, names):
    """{name: Pearson r} of each column of (N, len(names)) predictions against targets (NaN: not rated)."""
    return {name: pearson_r(predicted[:, k], target[:, k]) for k, name in enumerate(names)}


def explanation_agreement(a, b, threshold=0.0):
    """How two explanations of the same outputs agree, each (..., K) per-concept effects.

    Returns the mean over the leading entries of the Spearman rank correlation of the K effects, the share
    of the K signs that agree among concepts where both magnitudes exceed ``threshold``, and the share of
    entries whose largest-magnitude concept is the same.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    rhos = [stats.spearmanr(x, y).statistic for x, y in zip(a, b, strict=True) if np.std(x) > 0 and np.std(y) > 0]
    both = (np.abs(a) > threshold) & (np.abs(b) > threshold)
    return {
        "spearman": float(np.mean(rhos)) if rhos else float("nan"),
        "sign_agreement": float((np.sign(a) == np.sign(b))[both].mean()) if both.any() else float("nan"),
        "top1_agreement": float((np.abs(a).argmax(axis=1) == np.abs(b).argmax(axis=1)).mean()),
        "n": int(len(a)),
    }
