"""Bootstrap intervals of per-clip means (coverage by simulation) and the shared-rank rule of the leaderboard."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from common.analysis.leaderboard.table import interval_rows, leaderboard_rows, rank_column
from common.metrics import summarize
from common.metrics.uncertainty import bootstrap_interval, bootstrap_means, shared_ranks

# 300 simulated samples of 40 clips from Beta(2, 5) (a skewed score in [0, 1], like a localization AUC)
N_SAMPLES, N_CLIPS, A, B = 300, 40, 2.0, 5.0
TRUE_MEAN = A / (A + B)
# Binomial tolerance on the coverage of a 95 % interval: 3 standard deviations of 300 draws (about 0.038)
TOLERANCE = 3 * math.sqrt(0.95 * 0.05 / N_SAMPLES)


def coverage(interval):
    rng = np.random.default_rng(1234)
    hits = 0
    for k in range(N_SAMPLES):
        _, lo, hi = interval(rng.beta(A, B, size=N_CLIPS), k)
        hits += lo <= TRUE_MEAN <= hi
    return hits / N_SAMPLES


def bootstrap(x, k):
    return bootstrap_interval(x, seed=k)


def no_resampling(x, k):
    """Broken: the 'interval' of the sample mean without resampling (zero width)."""
    return x.mean(), x.mean(), x.mean()


def percentiles_of_the_clips(x, k):
    """Broken: the spread of the clips' scores, not of their mean (far too wide)."""
    return x.mean(), *np.quantile(x, [0.025, 0.975])


def one_resample_per_clip(x, k):
    """Broken: resamples of size 1 (the clip scores' spread again), a plausible indexing slip."""
    rng = np.random.default_rng(k)
    means = x[rng.integers(0, len(x), size=(1000, 1))].mean(axis=1)
    return x.mean(), *np.quantile(means, [0.025, 0.975])


def test_bootstrap_interval_covers_the_true_mean_at_the_nominal_rate():
    assert abs(coverage(bootstrap) - 0.95) <= TOLERANCE


@pytest.mark.parametrize("broken", [no_resampling, percentiles_of_the_clips, one_resample_per_clip])
def test_the_coverage_check_fails_for_a_broken_interval(broken):
    assert abs(coverage(broken) - 0.95) > TOLERANCE, broken.__name__


def test_interval_width_is_the_standard_error_s():
    """For a mean, the percentile interval is close to mean +- 1.96 s / sqrt(n) (within 15 %)."""
    x = np.random.default_rng(0).normal(3.0, 2.0, size=200)
    mean, lo, hi = bootstrap_interval(x)
    expected = 2 * 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert mean == pytest.approx(x.mean())
    assert (hi - lo) == pytest.approx(expected, rel=0.15)
    assert lo < mean < hi


def test_nan_clips_are_left_out_and_the_seed_fixes_the_interval():
    x = torch.tensor([0.1, 0.9, float("nan"), 0.4, 0.5, float("nan"), 0.7])
    finite = x[~x.isnan()]
    assert bootstrap_interval(x, seed=3) == bootstrap_interval(finite, seed=3)
    assert bootstrap_interval(x)[0] == pytest.approx(summarize({"m": x})["m"])  # the mean the table showed before
    assert bootstrap_interval(x, seed=3) == bootstrap_interval(x, seed=3)
    assert bootstrap_interval(x, seed=3) != bootstrap_interval(x, seed=4)
    assert all(math.isnan(v) for v in bootstrap_interval(torch.full((4,), float("nan"))))
    assert bootstrap_interval([0.25]) == (0.25, 0.25, 0.25)
    assert bootstrap_means(finite, n_resamples=50).shape == (50,)


def test_shared_ranks_count_the_intervals_entirely_better():
    intervals = [(0.80, 0.90), (0.85, 0.95), (0.50, 0.82), (0.10, 0.20), (0.15, 0.30)]
    # 0 and 1 overlap: both 1. 2 overlaps 0 but lies below 1 entirely: 2 (not transitive: it shares with 0).
    # 3 and 4 overlap each other and lie below 0, 1, 2: both 4.
    assert shared_ranks(intervals) == [1, 1, 2, 4, 4]
    # Lower is better (deletion AUC): the same intervals, ranked the other way.
    # 0 overlaps 2 (both 3: only 3 and 4 lie entirely below them); 1 lies entirely above 2, 3, 4: 4.
    assert shared_ranks(intervals, higher_is_better=False) == [3, 4, 3, 1, 1]
    # Disjoint intervals give the ordinary ranking; touching intervals overlap.
    assert shared_ranks([(0.0, 0.1), (0.2, 0.3), (0.4, 0.5)]) == [3, 2, 1]
    assert shared_ranks([(0.0, 0.2), (0.2, 0.3)]) == [1, 1]
    ranks = shared_ranks([(0.5, 0.6), (float("nan"), float("nan")), (0.7, 0.8)])
    assert ranks[0] == 2 and math.isnan(ranks[1]) and ranks[2] == 1


def result(label, **per_clip):
    return SimpleNamespace(
        label=label,
        classifier="cnn",
        per_clip={k: torch.as_tensor(v, dtype=torch.float64) for k, v in per_clip.items()},
        sanity=None,
        seconds_per_clip=0.1,
    )


def test_leaderboard_rows_carry_bounds_and_shared_ranks_by_the_chosen_metric():
    rng = np.random.default_rng(0)
    good, close, control = (rng.normal(m, 0.05, size=30).clip(0, 1) for m in (0.9, 0.89, 0.5))
    nan = np.full(30, np.nan)
    results = [
        result("good", localization_auc=good, deletion_auc=1 - good),
        result("close", localization_auc=close, deletion_auc=0.2 + 0 * close),
        result("input magnitude", localization_auc=control, deletion_auc=0.1 + 0 * close),
    ]
    rows = leaderboard_rows(results, ["deletion_auc", "localization_auc"], n_resamples=300)
    column = rank_column("localization_auc")
    assert list(rows[0])[:3] == ["method", "classifier", column]
    assert [row[column] for row in rows] == [1, 1, 3]  # good and close overlap; the control is below both
    for row in rows:
        for name in ("Localization AUC", "Deletion AUC"):
            assert row[f"{name} lo"] <= row[name] <= row[f"{name} hi"]
        assert row["clips"] == 30
    assert rows[0]["Localization AUC"] == pytest.approx(good.mean())
    # Without ground truth (localization all NaN) the default ranks by deletion AUC, lower is better.
    blind = [result(r.label, localization_auc=nan, deletion_auc=r.per_clip["deletion_auc"]) for r in results]
    rows = leaderboard_rows(blind, ["deletion_auc", "localization_auc"], n_resamples=300)
    assert [row[rank_column("deletion_auc")] for row in rows] == [1, 3, 1]  # ~0.1 and 0.1 share rank 1, both below 0.2
    assert rank_column("localization_auc") not in rows[0]
    # rank_by chooses; a list gives one column each.
    rows = leaderboard_rows(results, ["deletion_auc", "localization_auc"], rank_by=["deletion_auc", "localization_auc"])
    assert {rank_column("deletion_auc"), rank_column("localization_auc")} <= set(rows[0])


def test_interval_rows_show_mean_and_bounds_in_one_cell():
    rows = [{"method": "a", "Fid-In": 0.5, "Fid-In lo": 0.25, "Fid-In hi": 0.75, "clips": 6}, {"method": "b"}]
    shown, columns = interval_rows(rows, ["method", "Fid-In", "Fid-In lo", "Fid-In hi", "clips"])
    assert columns == ["method", "Fid-In", "clips"]
    assert shown[0] == {"method": "a", "Fid-In": "0.5 [0.25, 0.75]", "clips": 6}
    assert shown[1] == {"method": "b", "Fid-In": "", "clips": ""}


def test_rank_by_must_name_a_leaderboard_metric(tmp_path):
    from common.analysis.leaderboard import load_config
    from common.errors import ConfigError

    base = (
        "output_folder: out\ndata: {folder: d}\n"
        "classifiers: {cnn: {hparams: recipes/ESC50/classification/hparams/logmel_cnn.yaml}}\n"
        "methods: [{name: saliency}]\n"
    )
    for tail, key in {
        "rank_by: no_such_metric\n": "rank_by",
        "metrics: [fid_in]\nrank_by: [localization_auc]\n": "rank_by",
        "bootstrap: {resamples: 10}\n": "bootstrap.resamples",
    }.items():
        path = tmp_path / "bad.yaml"
        path.write_text(base + tail)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value).startswith(f"{path}: key '{key}':"), str(info.value)
    path.write_text(base + "rank_by: deletion_auc\nbootstrap: {n_resamples: 200, seed: 1}\n")
    assert load_config(path)["rank_by"] == "deletion_auc"
