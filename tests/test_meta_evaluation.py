"""Meta-evaluation: Kendall's tau between each ground-truth-free metric and ground-truth localization across methods."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from common.analysis.leaderboard.run import meta_evaluation as run_meta_evaluation
from common.analysis.meta_evaluation import (
    COLUMNS,
    FLAGGED,
    kendall_tau_b,
    meta_evaluate,
    tau_interval,
    verdict,
)
from common.metrics.uncertainty import percentile_bounds, resample_indices

REPO = Path(__file__).resolve().parents[1]
N_METHODS, N_CLIPS = 6, 40
ONE = pytest.approx(1.0)  # scipy's tau of a perfect order can be 1 - 1e-16
MINUS_ONE = pytest.approx(-1.0)


def per_clip_rows(scores, classifier="cnn", methods=None):
    """{metric: (methods, clips) array} -> leaderboard_per_clip rows."""
    n_methods, n_clips = next(iter(scores.values())).shape
    methods = methods or [f"m{k}" for k in range(n_methods)]
    return [
        {
            "method": methods[m],
            "classifier": classifier,
            "clip": f"c{c}.wav",
            **{k: float(v[m, c]) for k, v in scores.items()},
        }
        for m in range(n_methods)
        for c in range(n_clips)
    ]


def by_metric(rows, metric, reference="Localization AUC"):
    found = [r for r in rows if r["metric"] == metric and r["reference"] == reference]
    assert len(found) == 1, (metric, reference, rows)
    return found[0]


def test_vectorised_tau_b_is_scipys_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=(50, 7)).astype(float)  # many ties
    y = rng.integers(0, 4, size=(50, 7)).astype(float)
    ours = kendall_tau_b(x, y)
    for k in range(50):
        expected = kendalltau(x[k], y[k]).statistic
        assert (math.isnan(ours[k]) and math.isnan(expected)) or ours[k] == pytest.approx(expected, abs=1e-12)
    assert math.isnan(kendall_tau_b(np.ones(5), np.arange(5.0)))  # constant -> no order


def test_same_order_reversed_and_noise():
    rng = np.random.default_rng(0)
    quality = np.arange(N_METHODS, dtype=float)[:, None]
    reference = quality + 0.3 * rng.standard_normal((N_METHODS, N_CLIPS))
    same = 2 * quality + 0.3 * rng.standard_normal((N_METHODS, N_CLIPS))
    reversed_ = -quality + 0.3 * rng.standard_normal((N_METHODS, N_CLIPS))
    noise = rng.standard_normal((N_METHODS, N_CLIPS))  # no method effect at all

    tau, lo, hi, n = tau_interval(same, reference)
    assert tau == ONE and n == N_METHODS and lo >= 0.8 and hi == ONE
    tau, lo, hi, _ = tau_interval(reversed_, reference)
    assert tau == MINUS_ONE and hi <= -0.8 and lo == MINUS_ONE
    tau, lo, hi, _ = tau_interval(noise, reference)
    assert lo < 0 < hi and hi - lo > 0.5
    assert [verdict(*tau_interval(s, reference)[1:3]) for s in (same, reversed_, noise)] == ["yes", "reversed", "no"]


def test_lower_is_better_metrics_are_flipped_from_the_registry():
    """A deletion-AUC-like score that is lowest for the best method agrees (+1); the same numbers read as a
    higher-is-better metric (insertion AUC) disagree (-1)."""
    rng = np.random.default_rng(2)
    quality = np.arange(N_METHODS, dtype=float)[:, None]
    loc = 0.5 + 0.05 * quality + 0.01 * rng.standard_normal((N_METHODS, N_CLIPS))
    anti = 1.0 - 0.1 * quality + 0.01 * rng.standard_normal((N_METHODS, N_CLIPS))
    rows, notes = meta_evaluate(
        per_clip_rows({"localization_auc": loc, "deletion_auc": anti, "insertion_auc": anti}), n_resamples=200
    )
    assert notes == {}
    assert by_metric(rows, "Deletion AUC")["kendall tau"] == ONE
    assert by_metric(rows, "Deletion AUC")["agrees"] == "yes"
    assert by_metric(rows, "Insertion AUC")["kendall tau"] == MINUS_ONE
    assert by_metric(rows, "Insertion AUC")["agrees"] == "reversed"
    assert tau_interval(anti, loc, metric_higher=False)[0] == ONE


def test_clips_are_resampled_jointly_for_all_methods_and_both_metrics():
    """Scores dominated by a clip effect (hard and easy clips, the same for every method): with one draw of clips
    for all methods the order of the methods never changes, so the tau interval is narrow; resampling each method
    on its own draw mixes the clip effect into the method means and widens it (shown below, so the setting can
    tell the two apart)."""
    rng = np.random.default_rng(3)
    quality = 0.1 * np.arange(N_METHODS, dtype=float)[:, None]
    clip_effect = 3.0 * rng.standard_normal((1, N_CLIPS))
    metric = quality + clip_effect + 0.01 * rng.standard_normal((N_METHODS, N_CLIPS))
    reference = quality + 2 * clip_effect + 0.01 * rng.standard_normal((N_METHODS, N_CLIPS))

    tau, lo, hi, _ = tau_interval(metric, reference, n_resamples=500)
    assert tau == ONE and lo >= 0.85

    # The same bootstrap with an independent draw of clips per method and per metric.
    draws = [resample_indices(N_CLIPS, 500, seed) for seed in range(2 * N_METHODS)]
    metric_boot = np.stack([metric[m][draws[m]].mean(1) for m in range(N_METHODS)], 1)
    reference_boot = np.stack([reference[m][draws[N_METHODS + m]].mean(1) for m in range(N_METHODS)], 1)
    independent_lo, _ = percentile_bounds(kendall_tau_b(metric_boot, reference_boot))
    assert independent_lo < 0.3


def test_method_level_sanity_rho_is_lower_is_better_and_flagged_classifiers_are_left_out():
    rng = np.random.default_rng(4)
    quality = np.arange(N_METHODS, dtype=float)[:, None]
    loc = quality + 0.1 * rng.standard_normal((N_METHODS, N_CLIPS))
    fid = quality + 0.1 * rng.standard_normal((N_METHODS, N_CLIPS))
    methods = [f"m{k}" for k in range(N_METHODS)]
    per_clip = per_clip_rows({"localization_auc": loc, "fid_in": fid}, "good", methods) + per_clip_rows(
        {"localization_auc": loc, "fid_in": -fid}, "bad", methods
    )
    board = [
        {
            "method": m,
            "classifier": c,
            "sanity rho (head)": 1.0 - 0.1 * k,
            "sanity SSIM (last step)": 0.1 * k,  # rises with quality: disagrees
            "classifier evidence check": check,
        }
        for c, check in (("good", "pass"), ("bad", "fail"))
        for k, m in enumerate(methods)
    ]
    rows, notes = meta_evaluate(per_clip, board, n_resamples=200)
    assert {r["classifier"] for r in rows} == {"good"} and notes == {"bad": FLAGGED}
    sanity = by_metric(rows, "sanity rho (head)")
    assert sanity["kendall tau"] == ONE and sanity["n methods"] == N_METHODS and sanity["tau lo"] >= 0.8
    assert by_metric(rows, "sanity SSIM (last step)")["kendall tau"] == MINUS_ONE

    rows, notes = meta_evaluate(per_clip, board, include_flagged=True, n_resamples=200)
    assert notes == {}
    bad = [r for r in rows if r["classifier"] == "bad (evidence check failed)" and r["metric"] == "Fid-In"]
    assert bad and bad[0]["kendall tau"] == MINUS_ONE


def test_too_few_methods_and_missing_scores():
    reference = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    metric = np.array([[1.0, 1.0], [np.nan, np.nan], [2.0, 3.0]])  # the second method has no score
    tau, lo, hi, n = tau_interval(metric, reference)
    assert n == 2 and math.isnan(tau) and math.isnan(lo) and math.isnan(hi)
    assert verdict(lo, hi) == "no"
    # A classifier explained by fewer methods (e.g. a prototype net on another's encoder) gets a note, no rows.
    few = per_clip_rows({"localization_auc": reference, "fid_in": reference}, "proto")[:4]  # 2 methods x 2 clips
    assert meta_evaluate(few) == ([], {"proto": "not meta-evaluated: 2 method(s), at least 3 needed"})


def write_csv_rows(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_tool_end_to_end_on_a_hand_written_per_clip_table(tmp_path):
    folder, out = tmp_path / "results", tmp_path / "meta"
    folder.mkdir()
    # 4 methods (two controls among them) x 3 clips; Fid-In agrees with localization, deletion AUC is reversed
    # (the best-localizing method deletes worst), a method without a deletion score leaves the row with 3 methods.
    text = """method,classifier,clip,fid_in,deletion_auc,localization_auc,pointing_game
lrp,cnn,a.wav,1,0.5,0.95,1
lrp,cnn,b.wav,1,0.6,0.90,1
lrp,cnn,c.wav,0,0.7,0.92,1
gradcam,cnn,a.wav,1,0.3,0.80,1
gradcam,cnn,b.wav,0,0.4,0.75,0
gradcam,cnn,c.wav,0,0.2,0.85,1
input magnitude (control),cnn,a.wav,0,,0.60,0
input magnitude (control),cnn,b.wav,0,,0.55,1
input magnitude (control),cnn,c.wav,0,,0.65,0
random (control),cnn,a.wav,0,0.1,0.50,0
random (control),cnn,b.wav,0,0.1,0.49,0
random (control),cnn,c.wav,0,0.1,0.51,0
"""
    (folder / "leaderboard_per_clip.csv").write_text(text)
    write_csv_rows(
        folder / "leaderboard.csv",
        [
            {"method": m, "classifier": "cnn", "sanity": "pass", "classifier evidence check": "pass"}
            for m in ("lrp", "gradcam", "input magnitude (control)", "random (control)")
        ],
    )
    command = [sys.executable, "tools/meta_evaluation.py", str(folder), "--out", str(out), "--n_resamples", "100"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with open(out / "meta_evaluation.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == COLUMNS
    fid = by_metric(written, "Fid-In")
    # Fid-In means 2/3, 1/3, 0, 0 against localization means 0.923, 0.8, 0.6, 0.5: tau-b 5/sqrt(5*6)
    assert float(fid["kendall tau"]) == pytest.approx(5 / math.sqrt(30)) and fid["n methods"] == "4"
    deletion = by_metric(written, "Deletion AUC")
    assert float(deletion["kendall tau"]) == pytest.approx(-1.0) and deletion["n methods"] == "3"
    assert {r["reference"] for r in written} == {"Localization AUC", "Pointing game"}
    markdown = (out / "meta_evaluation.md").read_text()
    assert "| Fid-In | Localization AUC |" in markdown and "sign-flipped" in markdown
    assert "| Fid-In | Localization AUC |" in done.stdout and FLAGGED not in markdown
    assert not (folder / "meta_evaluation.csv").exists()  # --out, not the results folder


def test_leaderboard_run_writes_the_meta_evaluation_only_with_ground_truth(tmp_path):
    rng = np.random.default_rng(5)
    quality = np.arange(N_METHODS, dtype=float)[:, None]
    noisy = quality + 0.1 * rng.standard_normal((N_METHODS, N_CLIPS))
    bootstrap = {"n_resamples": 100, "confidence": 0.95, "seed": 0}
    assert run_meta_evaluation(per_clip_rows({"fid_in": noisy}), [], tmp_path, bootstrap) == ""
    assert not (tmp_path / "meta_evaluation.md").exists()
    text = run_meta_evaluation(per_clip_rows({"fid_in": noisy, "localization_auc": noisy}), [], tmp_path, bootstrap)
    assert "| Fid-In | Localization AUC | 1 |" in text
    assert (tmp_path / "meta_evaluation.md").read_text() == text and (tmp_path / "meta_evaluation.csv").exists()
