"""The scene designs of issue 18: distractors without label information, quiet evidence at the asked level, the
shortcut cue at the asked rate, conjunctions and orders as designed, every design deterministic by seed."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from common.data.esc50 import verify_esc50
from common.data.synthetic.ground_truth import read_ground_truth
from common.data.synthetic.scenes import SCENE_DESIGNS, make_synthetic_esc50
from common.data.synthetic.signals import stft_magnitude

ROOT = Path(__file__).resolve().parents[1]
TINY = {"n_classes": 4, "clips_per_class": 10, "duration_s": 1.5, "event_s": (0.3, 0.6), "seed": 0}


def _clips(folder):
    """[(row, mixture, ground-truth record)] of a written design."""
    rows = verify_esc50(folder, decode=False)
    return [
        (r, sf.read(Path(folder) / "audio" / r["filename"])[0], read_ground_truth(folder, r["filename"][:-4]))
        for r in rows
    ]


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quiet")
    make_synthetic_esc50(folder, design="quiet_evidence", **TINY)
    return _clips(folder)


def _band_features(x, sr=16000):
    """Mean and max over time of the log energy in 16 log-spaced bands (60 Hz - 8 kHz): level included."""
    power = stft_magnitude(x, 512, 256, 512) ** 2
    freqs = np.arange(power.shape[1]) * sr / 512
    edges = np.geomspace(60, sr / 2, 17)
    bands = np.stack(
        [power[:, (freqs >= a) & (freqs < b)].sum(1) for a, b in zip(edges[:-1], edges[1:], strict=True)], 1
    )
    logs = np.log10(bands + 1e-10)
    return np.concatenate([logs.mean(0), logs.max(0)])


def _cv_accuracy(features, targets, folds):
    """Logistic regression, cross-validated over the data set's own folds (a fold holds whole matched layers)."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(clf, np.array(features), targets, cv=PredefinedSplit(folds)).mean())


def test_quiet_evidence_distractors_carry_no_label_information(quiet):
    targets = [r["target"] for r, _, _ in quiet]
    folds = [r["fold"] for r, _, _ in quiet]
    rest = _cv_accuracy([_band_features(mix - gt["event"]) for _, mix, gt in quiet], targets, folds)
    event = _cv_accuracy([_band_features(gt["event"]) for _, _, gt in quiet], targets, folds)
    chance, n = 1 / TINY["n_classes"], len(quiet)
    tolerance = 3 * np.sqrt(chance * (1 - chance) / n)  # binomial, 3 sigma
    assert abs(rest - chance) <= tolerance, (rest, chance, tolerance)
    assert event >= 0.9  # the same features and classifier do see the class in the event part
    # and exactly: the k-th clip of every class has the same distractor layer (a matched design)
    layers = {}
    for r, mix, gt in quiet:
        layers.setdefault(int(r["src_file"]) % 1000, []).append(mix - gt["event"])
    assert all(len(v) == TINY["n_classes"] for v in layers.values())
    assert all(np.allclose(v[0], w, atol=1e-6) for v in layers.values() for w in v[1:])


def test_quiet_evidence_sits_at_the_asked_level_below_the_distractors(tmp_path):
    make_synthetic_esc50(tmp_path, design="quiet_evidence", distractor_db=(10.0, 20.0), **TINY)
    ratios = []
    for _, mix, gt in _clips(tmp_path):
        sr = int(gt["sample_rate"])
        ev = gt["event"][int(round(float(gt["onset_s"]) * sr)) : int(round(float(gt["offset_s"]) * sr))]
        rest = mix - gt["event"]
        on = np.zeros(len(mix), dtype=bool)
        for a, b in gt["distractor_spans"]:
            on[a:b] = True
        ratios.append(10 * np.log10(np.mean(rest[on] ** 2) / np.mean(ev**2)))
        assert ratios[-1] == pytest.approx(float(gt["part_gap_db"][0]), abs=0.2)  # rounding of the float32 wav
        assert gt["mask"].any()  # still audible somewhere on the plane
    ratios = np.array(ratios)
    assert ratios.min() >= 9.8 and ratios.max() <= 20.2
    assert ratios.max() - ratios.min() > 5  # drawn over the range, not a constant


def test_clever_hans_cue_rate_in_training_folds_and_planted_in_other_classes_for_the_shortcut_test(tmp_path):
    fraction, cue_class, folds = 0.7, 1, (1, 2, 3, 4)
    make_synthetic_esc50(
        tmp_path, design="clever_hans", cue_class=cue_class, cue_fraction=fraction, cue_folds=folds, **TINY
    )
    clips = _clips(tmp_path)
    own = [gt for r, _, gt in clips if r["target"] == cue_class and r["fold"] in folds]
    assert sum(bool(gt["has_cue"]) for gt in own) == round(fraction * len(own))  # 0.7 * 8 -> 6
    others = [gt for r, _, gt in clips if r["target"] != cue_class or r["fold"] not in folds]
    assert not any(bool(gt["has_cue"]) or gt["cue"].any() or gt["cue_mask"].any() for gt in others)
    shortcut = _clips(tmp_path / "shortcut_test")
    assert {r["fold"] for r, _, _ in shortcut} == {5} and {r["target"] for r, _, _ in shortcut} == set(range(4))
    for r, _, gt in shortcut:
        assert bool(gt["has_cue"]) == (r["target"] != cue_class)  # cue-class clips there: the without-cue control
    for _, mix, gt in [c for c in clips if c[2]["has_cue"]] + [c for c in shortcut if c[2]["has_cue"]]:
        # the cue's energy lies in its saved box, and the box is narrow-band: a small part of the plane
        power = stft_magnitude(gt["cue"].astype(np.float64), int(gt["n_fft"]), int(gt["hop"]), int(gt["win"])) ** 2
        assert gt["cue_mask"].shape == gt["mask"].shape == power.shape
        assert (power * gt["cue_mask"]).sum() >= 0.95 * power.sum()
        assert gt["cue_mask"].mean() < 0.02
        assert np.abs(mix - gt["event"] - gt["cue"]).max() > 0  # the distractors remain once the cue is removed


def test_clever_hans_scenes_are_quiet_evidence_plus_the_cue(tmp_path, quiet):
    make_synthetic_esc50(tmp_path, design="clever_hans", cue_fraction=1.0, **TINY)
    for (r, mix, gt), (r0, mix0, _) in zip(_clips(tmp_path), quiet, strict=True):
        assert r == r0 and np.allclose(mix - gt["cue"], mix0, atol=1e-6)


def test_conjunction_events_appear_without_their_partner_and_neither_decides_the_class(tmp_path):
    make_synthetic_esc50(tmp_path, design="conjunction", **TINY)
    clips = _clips(tmp_path)
    pairs = {}
    covered = []
    for r, _, gt in clips:
        assert len(gt["part_ids"]) == 2 and gt["part_masks"].shape == (2, *gt["mask"].shape)
        assert all(m.any() for m in gt["part_masks"])
        # the ground truth is both events: the joint mask covers each event's own mask
        # (less where the two overlap in time and frequency and their sum partly cancels)
        covered += [(m & gt["mask"]).sum() / m.sum() for m in gt["part_masks"]]
        pairs.setdefault(r["target"], set()).add(tuple(sorted(int(a) for a in gt["part_ids"])))
        # each event's mask lies in its own time span
        for m, on, off in zip(gt["part_masks"], gt["part_onset_s"], gt["part_offset_s"], strict=True):
            frames = np.nonzero(m.any(1))[0] * int(gt["hop"]) / int(gt["sample_rate"])
            assert frames.min() >= on - 0.05 and frames.max() <= off + 0.05
    assert min(covered) >= 0.6 and np.median(covered) >= 0.95
    assert all(len(p) == 1 for p in pairs.values())  # one pair per class, always both events
    pairs = {c: next(iter(p)) for c, p in pairs.items()}
    assert len(set(pairs.values())) == len(pairs)  # the pair decides the class
    for c, (a, b) in pairs.items():
        for atom, partner in ((a, b), (b, a)):
            # the atom also appears without this partner in another class
            assert any(atom in p and partner not in p for d, p in pairs.items() if d != c)
            # P(class | atom present) <= 1/2: the atom alone does not decide
            with_atom = [r["target"] for r, _, gt in clips if atom in gt["part_ids"]]
            assert with_atom.count(c) / len(with_atom) <= 0.5


def test_order_pairs_hold_the_same_events_in_opposite_order(tmp_path):
    make_synthetic_esc50(tmp_path, design="order", **TINY)
    clips = _clips(tmp_path)
    seq = {}
    for r, _, gt in clips:
        on, off = gt["part_onset_s"], gt["part_offset_s"]
        assert on[0] < off[0] < on[1] < off[1]  # parts in temporal order, never overlapping
        # each part's mask is in its own time span
        hop_s = int(gt["hop"]) / int(gt["sample_rate"])
        for m, a, b in zip(gt["part_masks"], on, off, strict=True):
            frames = np.nonzero(m.any(1))[0] * hop_s
            assert frames.min() >= a - 2 * hop_s and frames.max() <= b + 2 * hop_s
        seq.setdefault(r["target"], set()).add(tuple(int(a) for a in gt["part_ids"]))
    assert all(len(s) == 1 for s in seq.values())
    seq = {c: next(iter(s)) for c, s in seq.items()}
    for j in range(0, TINY["n_classes"], 2):
        assert seq[j] == seq[j + 1][::-1] and seq[j][0] != seq[j][1]
    # time-pooled features of the events cannot tell a pair apart: only the order does
    targets = np.array([r["target"] for r, _, _ in clips])
    pooled = [_band_features(gt["event"]) for _, _, gt in clips]
    pair = targets // 2
    for j in range(TINY["n_classes"] // 2):
        keep = pair == j
        acc = _cv_accuracy(
            [p for p, k in zip(pooled, keep, strict=True) if k],
            targets[keep],
            np.array([r["fold"] for r, _, _ in clips])[keep],
        )
        assert abs(acc - 0.5) <= 3 * np.sqrt(0.25 / keep.sum()), acc


@pytest.mark.parametrize("design", SCENE_DESIGNS.names())
def test_every_design_is_deterministic_by_seed(tmp_path, design):
    small = {**TINY, "clips_per_class": 2, "duration_s": 1.0, "event_s": (0.2, 0.4)}

    def write(name, seed):
        make_synthetic_esc50(tmp_path / name, design=design, **{**small, "seed": seed})
        return [(r, mix, gt) for r, mix, gt in _clips(tmp_path / name)]

    a, b, c = write("a", 3), write("b", 3), write("c", 4)
    for (ra, ma, ga), (rb, mb, gb) in zip(a, b, strict=True):
        assert ra == rb and np.array_equal(ma, mb)
        assert ga.keys() == gb.keys() and all(np.array_equal(ga[k], gb[k]) for k in ga)
    assert not all(np.array_equal(ma, mc) for (_, ma, _), (_, mc, _) in zip(a, c, strict=True))


def test_make_synthetic_dataset_writes_the_named_design(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "make_synthetic_dataset.py"), str(tmp_path / "o"), "--design", "order"]
    cmd += ["--clips_per_class", "1", "--duration_s", "1", "--distractor_db", "12", "14"]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert "design order" in out.stdout
    rows = make_synthetic_esc50(tmp_path / "p", design="order", clips_per_class=1, duration_s=1, distractor_db=(12, 14))
    assert (tmp_path / "o" / "meta" / "esc50.csv").read_text() == (tmp_path / "p" / "meta" / "esc50.csv").read_text()
    assert len(rows) == 4
    bad = subprocess.run(
        cmd + ["--cue_fraction", "0.5"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert bad.returncode != 0 and "does not apply" in bad.stderr.replace("do(es)", "does")
    with pytest.raises(KeyError, match="known"):
        make_synthetic_esc50(tmp_path / "q", design="no_such_design")
