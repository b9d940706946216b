"""Uncertainty of per-clip means: bootstrap confidence intervals and ranks that respect them.

A leaderboard's means come from a few dozen clips, so two rows can differ by
noise alone. ``bootstrap_interval`` resamples the clips with replacement (a
fixed seed, so a table is reproducible) and takes the percentile interval of
the resampled means; ``shared_ranks`` turns intervals into ranks in which
methods whose intervals overlap share a rank:

    rank(i) = 1 + #{ j : j's interval lies entirely on the better side of i's }

(for a higher-is-better metric: ``lo_j > hi_i``; lower-is-better: ``hi_j < lo_i``).
Two methods get different ranks only when some interval separates them, the
best rows all get rank 1, and ranks are not necessarily consecutive (like
"1, 1, 3" in a competition ranking). The rule is not transitive: A may share
B's rank and B share C's while A outranks C.
"""

import math

import numpy as np
import torch

N_RESAMPLES = 1000
CONFIDENCE = 0.95


def _finite(values):
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1).numpy()
    return values[~np.isnan(values)]  # NaN clips are left out, as ``summarize``'s nanmean does


def resample_indices(n, n_resamples=N_RESAMPLES, seed=0):
    """(n_resamples, n) indices drawn with replacement from range(n): the clips of each bootstrap resample.

    One draw shared by several score arrays over the same clips resamples them jointly
    (``common.analysis.meta_evaluation``).
    """
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def percentile_bounds(samples, confidence=CONFIDENCE):
    """(lo, hi): the percentile interval of ``confidence`` of the non-NaN bootstrap ``samples``."""
    x = _finite(samples)
    if len(x) == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(x, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_means(values, n_resamples=N_RESAMPLES, seed=0):
    """The means of ``n_resamples`` resamples (with replacement, of the same size) of the non-NaN ``values``."""
    x = _finite(values)
    if len(x) == 0:
        return np.full(n_resamples, np.nan)
    return x[resample_indices(len(x), n_resamples, seed)].mean(axis=1)


def bootstrap_interval(values, n_resamples=N_RESAMPLES, confidence=CONFIDENCE, seed=0):
    """(mean, lo, hi): the mean of the non-NaN ``values`` and its percentile bootstrap interval.

    All NaN -> (nan, nan, nan); one clip -> (v, v, v) (a bootstrap of one value
    cannot show its spread: the ``clips`` column says how many there were).
    """
    x = _finite(values)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    lo, hi = percentile_bounds(bootstrap_means(x, n_resamples, seed), confidence)
    return float(x.mean()), lo, hi


def shared_ranks(intervals, higher_is_better=True):
    """Ranks of ``intervals`` ([(lo, hi)]): 1 + how many intervals lie entirely better (see the module's doc).

    An interval with a NaN bound gets rank NaN and is not counted for the others.
    """
    ranks = []
    for lo, hi in intervals:
        if math.isnan(lo) or math.isnan(hi):
            ranks.append(math.nan)
            continue
        better = 0
        for lo_j, hi_j in intervals:
            if math.isnan(lo_j) or math.isnan(hi_j):
                continue
            better += lo_j > hi if higher_is_better else hi_j < lo
        ranks.append(1 + better)
    return ranks
