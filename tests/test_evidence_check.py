"""The intervention check that the ground truth is the classifier's evidence (common.metrics.evidence)."""

import json
import math
from pathlib import Path

import pytest
import torch

from common.analysis.leaderboard import load_config, run
from common.analysis.leaderboard.run import MethodResult, flagged_rows
from common.metrics.evidence import distractor_masks, evidence_check

REPO = Path(__file__).resolve().parents[1]
N_CLASSES, T, F = 4, 40, 32
SILENCE = -2.0  # not 0: silencing with 0 instead of the front-end's silence must be caught
A = (slice(5, 15), lambda c: slice(2 * c, 2 * c + 2))  # region A: class c's band, frames 5-14
B = (slice(25, 35), lambda c: slice(12 + 2 * c, 14 + 2 * c))  # region B: the same, elsewhere


def scenes(n_per_class, label_in="A", seed=0):
    """(X, labels, ground truth = region A): quiet class bands in region A and/or B, loud label-free distractors.

    ``label_in``: "A" (the class band sits in A) or "B" (it sits in B; A holds a band drawn at random, so
    the ground truth points at a region that carries no label information)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(n_per_class)
    X = torch.full((len(labels), T, F), SILENCE) + 0.1 * torch.rand(len(labels), T, F, generator=g)
    gt = torch.zeros(len(labels), T, F)
    for k, c in enumerate(labels.tolist()):
        a_class = c if label_in == "A" else int(torch.randint(N_CLASSES, (1,), generator=g))
        X[k, A[0], A[1](a_class)] += 2.0
        gt[k, A[0], A[1](a_class)] = 1.0
        if label_in == "B":
            X[k, B[0], B[1](c)] += 2.0
        t0 = int(torch.randint(0, T - 10, (1,), generator=g))
        X[k, t0 : t0 + 10, 24:30] += 6.0  # the loudest thing in every clip, whatever the class
    return X, labels, gt


class BandReader(torch.nn.Module):
    """Decides from region A (or B): logit c = mean level of class c's band there."""

    silence = SILENCE

    def __init__(self, region=A):
        super().__init__()
        self.region = region

    def logits(self, X):
        frames, band = self.region
        return torch.stack([X[:, frames, band(c)].mean((1, 2)) for c in range(N_CLASSES)], -1)


class Linear(torch.nn.Module):
    silence = SILENCE

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(T * F, N_CLASSES)

    def logits(self, X):
        return self.layer(X.flatten(1))


def fitted_linear(X, labels, steps=300):
    torch.manual_seed(0)
    model = Linear()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.logits(X), labels).backward()
        optimizer.step()
    return model.eval()


def test_a_classifier_that_decides_from_the_ground_truth_passes():
    """Silencing A (with the silence, -2) leaves every band at the same level: chance; silencing as many of the
    loudest other bins (the distractors) changes nothing. Filling with 0, or not silencing, keeps A's
    class band above the others and the gt-silenced accuracy at 1."""
    X, labels, gt = scenes(8)
    check = evidence_check(BandReader(A), X, labels, gt, seed=0)
    assert check["accuracy"] == 1.0
    assert check["accuracy_gt_silenced"] <= 0.25 + 1e-9, check
    assert check["accuracy_other_silenced"] == 1.0
    assert check["chance"] == 0.25 and check["passed"] and check["reason"] == ""


def test_the_check_fails_for_a_classifier_trained_where_the_evidence_is_elsewhere():
    """A linear classifier fitted on scenes whose class sits in B (A: a random band) keeps its accuracy when A,
    the stated ground truth, is silenced: the check fails and says why. The same design with the ground truth
    at B passes, so the failure is the misplaced ground truth, not the classifier."""
    X, labels, gt_a = scenes(16, label_in="B")
    model = fitted_linear(X, labels)
    check = evidence_check(model, X, labels, gt_a, seed=0)
    assert check["accuracy"] == 1.0
    assert check["accuracy_gt_silenced"] >= 0.9, check
    assert not check["passed"] and "silencing the ground truth" in check["reason"]
    gt_b = torch.zeros_like(gt_a)
    for k, c in enumerate(labels.tolist()):
        gt_b[k, B[0], B[1](c)] = 1.0
    assert evidence_check(BandReader(B), X, labels, gt_b, seed=0)["passed"]


def test_distractors_are_the_loudest_non_ground_truth_bins_as_many_as_the_ground_truth():
    X, _, gt = scenes(2)
    gt = gt > 0
    chosen = distractor_masks(X, gt, torch.full((X.shape[0], 1, 1), SILENCE), seed=3)
    assert torch.equal(chosen, distractor_masks(X, gt, torch.full((X.shape[0], 1, 1), SILENCE), seed=3))
    assert not (chosen & gt).any()
    assert torch.equal(chosen.flatten(1).sum(1), gt.flatten(1).sum(1))
    # every clip's 20 ground-truth bins (10 frames x 2) go to 20 of its loudest others: the distractor (+6, 60 bins)
    loud = X > SILENCE + 5
    assert (chosen <= loud).all()


def test_an_uninformative_classifier_fails_rather_than_passing_by_being_at_chance():
    X, labels, gt = scenes(4)

    class Constant(BandReader):
        def logits(self, X):
            return torch.zeros(X.shape[0], N_CLASSES)

    check = evidence_check(Constant(), X, labels, gt)
    assert not check["passed"] and "clean accuracy" in check["reason"]


def test_a_failing_classifier_rows_are_flagged_and_not_ranked():
    class Entry:
        def __init__(self, display):
            self.display = display

    def result(label, classifier, auc):
        return MethodResult(label, classifier, {"localization_auc": torch.full((6,), auc)}, 0.1)

    results = [result("a", "good", 0.9), result("b", "bad", 0.95), result("c", "good", 0.5)]
    entries = {"g": Entry("good"), "b": Entry("bad")}
    evidence = {"g": {"passed": True}, "b": {"passed": False}}
    rows = flagged_rows(results, evidence, entries, ["localization_auc"], None, {"n_resamples": 50})
    rank = "rank (Localization AUC)"
    assert [r["method"] for r in rows] == ["a", "b", "c"]
    assert [r["classifier evidence check"] for r in rows] == ["pass", "fail", "pass"]
    # the failing classifier's method (the best AUC) neither gets a rank nor pushes the others down
    assert [r[rank] for r in rows] == [1, "", 2]


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("leaderboard_evidence")
    sets = ("methods=[{name: saliency}]", "n_report_clips=0", "sanity.n_clips=2")
    config = load_config(
        REPO / "tools" / "leaderboard" / "debug.yaml", sets, data_folder=out / "data", output_folder=out
    )
    rows, folder = run(config, progress=False)
    return rows, folder


def test_the_leaderboard_writes_the_evidence_check_into_run_json_and_its_caption(evidence_run):
    rows, folder = evidence_run
    info = json.loads((folder / "run.json").read_text())
    (check,) = info["evidence_check"].values()
    for key in ("accuracy", "accuracy_gt_silenced", "accuracy_other_silenced", "chance"):
        assert math.isfinite(check[key])
    assert check["chance"] == pytest.approx(1 / 3) and check["n_clips"] == 6
    assert "Classifier evidence check" in info["caption"]
    assert f"{check['accuracy_gt_silenced']:.2f}" in info["caption"]
    verdict = "pass" if check["passed"] else "fail"
    assert all(row["classifier evidence check"] == verdict for row in rows)
    bands = (folder / "evidence_bands.md").read_text()  # the converse check, per band of the event's dominance
    assert (
        "| none silenced |" in bands and "| (+10, +inf] |" in bands and "| baseline (bins without the event) |" in bands
    )


def test_evidence_by_dominance_finds_the_bins_the_classifier_reads():
    """The bands are silenced one at a time with the front end's silence: the band the classifier reads (the
    class band, where the event dominates by 12 dB) drops the true class's probability; a band of the same
    event it never reads (a tail where the event is 4 dB under the rest) and random bins without the event
    drop nothing; empty bands say so (NaN)."""
    from common.analysis.leaderboard.run import dominance_text
    from common.metrics.evidence import evidence_by_dominance

    X, labels, gt = scenes(8)
    source_db = torch.full_like(X, -100.0)
    rest_db = torch.zeros_like(X)
    source_db[gt > 0] = 12.0  # the event dominates the bins BandReader reads ...
    tail = torch.zeros_like(gt, dtype=torch.bool)
    for k, c in enumerate(labels.tolist()):
        tail[k, 16:26, A[1](c)] = True  # ... and trails off, under the rest, where it reads nothing
    source_db[tail] = -4.0
    rows = evidence_by_dominance(BandReader(), X, labels, source_db, rest_db, seed=0)
    by_band = {row["band"]: row for row in rows}
    clean = by_band[None]
    assert clean["accuracy"] == 1.0
    read, ignored, baseline = by_band[(10.0, float("inf"))], by_band[(-6.0, -3.0)], by_band["baseline"]
    assert read["area"] == pytest.approx(float(gt.mean()))
    assert ignored["area"] == pytest.approx(float(tail.double().mean()))
    assert read["accuracy"] <= 0.25 + 0.15 and read["probability"] < 0.5 * clean["probability"]
    assert read["drop_per_percent"] > 0.1
    assert ignored["probability"] == pytest.approx(clean["probability"]) and ignored["drop_per_percent"] == 0
    assert abs(baseline["drop_per_percent"]) < 0.1 * read["drop_per_percent"]
    assert math.isnan(by_band[(3.0, 6.0)]["drop_per_percent"]) and by_band[(3.0, 6.0)]["area"] == 0
    text = dominance_text(rows)
    assert "| (+10, +inf] | 0.0156 |" in text and "baseline" in text
