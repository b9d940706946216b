"""The evaluation suite and its metrics, checked against values computed by hand."""

import csv
import math

import pytest
import torch

from common.interpreters.base import Explanation
from common.metrics import (
    DISPLAY_NAMES,
    MATCHED_AREA_METRICS,
    EvaluationSuite,
    Metric,
    per_clip_rows,
    summarize,
    summary_row,
)
from common.metrics.listenable import si_snr
from common.registry import METRICS
from common.reports.tables import write_metric_tables

FAITHFULNESS = ["fid_in", "faithfulness_mask_out", "faithfulness_mask_in", "ai", "ad", "ag"]
CURVES = ["deletion_auc", "insertion_auc"]
LOCALIZATION = ["relevance_mass_accuracy", "pointing_game", "localization_auc"]


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


class LinearClassifier(torch.nn.Module):
    """logits = X.flatten(1) @ weight.T + bias; counts its calls and how it was called."""

    silence = 0.0  # X stands for a log1p spectrogram

    def __init__(self, weight, bias=None):
        super().__init__()
        self.weight = torch.as_tensor(weight, dtype=torch.float32)
        self.bias = torch.zeros(len(self.weight)) if bias is None else torch.as_tensor(bias, dtype=torch.float32)
        self.calls, self.rows, self.modes, self.grad_enabled = 0, 0, [], []

    def logits(self, X):
        self.calls += 1
        self.rows += X.shape[0]
        self.modes.append(self.training)
        self.grad_enabled.append(torch.is_grad_enabled())
        return X.flatten(1) @ self.weight.T + self.bias


def first_bin_classifier(n_bins):
    """Two classes, logits [X[0], 0]: p_0 = sigmoid(first bin), p_1 = 1 - p_0."""
    weight = torch.zeros(2, n_bins)
    weight[0, 0] = 1.0
    return LinearClassifier(weight)


def explanation(saliency, mask=None, target=None):
    saliency = torch.as_tensor(saliency, dtype=torch.float32)
    mask = torch.ones_like(saliency) if mask is None else torch.as_tensor(mask, dtype=torch.float32)
    target = torch.zeros(len(saliency), dtype=torch.long) if target is None else torch.as_tensor(target)
    return Explanation(saliency=saliency, mask=mask, target=target)


class CacheSpy(Metric):
    """Not registered: keeps the MetricInputs the suite hands to metrics."""

    name = "cache_spy"
    needs = frozenset({"x", "mask_in", "mask_out", "deletion", "insertion"})

    def compute(self, inputs):
        self.inputs = inputs
        return torch.zeros(inputs.batch_size)


def test_every_metric_is_registered_with_a_display_name_and_direction():
    names = [*FAITHFULNESS, *CURVES, "sps", "comp", *LOCALIZATION, "si_snr", *MATCHED_AREA_METRICS]
    assert len(MATCHED_AREA_METRICS) == 30 and "fid_in@10" in METRICS and "ag_area_mean" in METRICS
    for name in names:
        metric = METRICS.build(name)
        assert metric.name == name and isinstance(metric.higher_is_better, bool)
        assert DISPLAY_NAMES[name] == metric.display_name
    assert DISPLAY_NAMES["fid_in"] == "Fid-In" and DISPLAY_NAMES["ad"] == "AD (%)"
    assert not METRICS.get("faithfulness_mask_in").higher_is_better


def test_all_ones_mask_keeps_the_prediction_and_drops_to_the_empty_input():
    # logits = [x0 + x1, x2 - x3 + 1]; X is integer-valued so every logit is exact
    clf = LinearClassifier([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], bias=[0.0, 1.0])
    X = torch.tensor([[[2.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [3.0, 1.0]]])
    target = clf.logits(X).argmax(1)  # the classifier's own prediction: [0, 1]
    assert target.tolist() == [0, 1]
    scores = EvaluationSuite(FAITHFULNESS).evaluate(clf, X, explanation(torch.rand(2, 2, 2), target=target))
    p_x = torch.softmax(clf.logits(X), dim=1)[[0, 1], target]
    p_empty = torch.softmax(torch.tensor([0.0, 1.0]), dim=0)[target]
    assert scores["fid_in"].tolist() == [1.0, 1.0]
    assert scores["faithfulness_mask_in"].tolist() == [0.0, 0.0]
    torch.testing.assert_close(scores["faithfulness_mask_out"], p_x - p_empty)
    # by hand: clip 0 p_0(X) = sigmoid(3 - 1), p_0(0) = sigmoid(0 - 1)
    assert scores["faithfulness_mask_out"][0].item() == pytest.approx(sigmoid(2.0) - sigmoid(-1.0), abs=1e-6)
    assert scores["ad"].tolist() == [0.0, 0.0] and scores["ai"].tolist() == [0.0, 0.0]
    assert scores["ag"].tolist() == [0.0, 0.0]


def test_average_increase_drop_and_gain_by_hand():
    clf = first_bin_classifier(4)
    X = torch.tensor([[[2.0, 5.0], [5.0, 5.0]], [[1.0, 5.0], [5.0, 5.0]]])
    mask = torch.full((2, 2, 2), 0.5)  # halves the first bin: 2 -> 1 and 1 -> 0.5
    target = torch.tensor([0, 1])
    scores = EvaluationSuite(FAITHFULNESS).evaluate(clf, X, explanation(mask, mask, target))
    # clip 0, class 0: p(X) = s(2), p(MX) = s(1): a drop
    p_x, p_in = sigmoid(2.0), sigmoid(1.0)
    assert scores["ai"][0].item() == 0.0
    assert scores["ad"][0].item() == pytest.approx(100 * (p_x - p_in) / p_x, rel=1e-5)
    assert scores["ag"][0].item() == 0.0
    assert scores["faithfulness_mask_in"][0].item() == pytest.approx(p_x - p_in, abs=1e-6)
    assert scores["fid_in"][0].item() == 1.0
    # clip 1, class 1: p(X) = 1 - s(1), p(MX) = 1 - s(0.5): an increase
    p_x, p_in = 1 - sigmoid(1.0), 1 - sigmoid(0.5)
    assert scores["ai"][1].item() == 100.0
    assert scores["ad"][1].item() == 0.0
    assert scores["ag"][1].item() == pytest.approx(100 * (p_in - p_x) / (1 - p_x), rel=1e-5)
    assert scores["fid_in"][1].item() == 0.0  # logits [0.5, 0]: still class 0, not the target 1
    # mask-out keeps the other half: (1 - M) X = M X here
    assert scores["faithfulness_mask_out"][1].item() == pytest.approx(p_x - p_in, abs=1e-6)


def test_sparseness_and_complexity_of_one_hot_uniform_and_mixed_saliency():
    saliency = torch.tensor(
        [[[0.0, 0.0], [2.0, 0.0]], [[0.3, 0.3], [0.3, 0.3]], [[0.0, -1.0], [0.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]]
    )
    clf = first_bin_classifier(4)
    scores = EvaluationSuite(["sps", "comp"]).evaluate(clf, torch.ones(4, 2, 2), explanation(saliency))
    assert clf.calls == 0  # neither metric needs the classifier
    # |s| sorted [0, 0, 1, 3]: 1 - 2 * (1/4 * 1.5/4 + 3/4 * 0.5/4) = 0.625
    torch.testing.assert_close(scores["sps"], torch.tensor([0.75, 0.0, 0.625, 0.0]))
    mixed = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    torch.testing.assert_close(scores["comp"], torch.tensor([0.0, math.log(4), mixed, math.log(4)]))


@pytest.mark.parametrize("n_steps", [4, 2])
def test_deletion_and_insertion_auc_by_hand(n_steps):
    # logits [w . X, 0] with w = [1, 2, 3, 4]; saliency ranks the bins 0, 1, 2, 3
    clf = LinearClassifier([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    X = torch.ones(1, 2, 2)
    saliency = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    scores = EvaluationSuite(CURVES, n_steps=n_steps).evaluate(clf, X, explanation(saliency))
    removed = {4: [0, 1, 3, 6, 10], 2: [0, 3, 10]}[n_steps]  # w-mass of the top bins at each step
    deletion = [sigmoid(10 - r) for r in removed]
    insertion = [sigmoid(r) for r in removed]

    def trapezoid(curve):
        return sum((a + b) / 2 for a, b in zip(curve[:-1], curve[1:], strict=True)) / n_steps

    assert scores["deletion_auc"].item() == pytest.approx(trapezoid(deletion), rel=1e-5)
    assert scores["insertion_auc"].item() == pytest.approx(trapezoid(insertion), rel=1e-5)


def test_probabilities_come_from_exactly_one_softmax_of_the_logits():
    clf = LinearClassifier([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0], [1.0, 1.0, 1.0, 1.0]], bias=[0.0, 1.0, -2.0])
    X = torch.tensor([[[1.0, 2.0], [0.0, 3.0]], [[2.0, 0.0], [1.0, 1.0]]])
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
    spy = CacheSpy()
    EvaluationSuite([spy], n_steps=4).evaluate(clf, X, explanation(torch.rand(2, 2, 2), mask, [2, 0]))
    inputs = spy.inputs
    for key, rows in (("x", X), ("mask_in", mask * X), ("mask_out", (1 - mask) * X)):
        assert torch.equal(inputs.probs[key], torch.softmax(clf.logits(rows), dim=1))
        assert torch.equal(inputs.logits[key], clf.logits(rows))
    assert inputs.probs["deletion"].shape == (5, 2, 3) and inputs.probs["insertion"].shape == (5, 2, 3)
    assert torch.equal(inputs.probs["deletion"][0], inputs.probs["x"])  # step 0 deletes nothing
    assert torch.equal(inputs.probs["insertion"][-1], inputs.probs["x"])  # the last step restores all
    zeros = torch.softmax(clf.logits(torch.zeros(1, 2, 2)), dim=1).expand(2, -1)
    assert torch.equal(inputs.probs["deletion"][-1], zeros) and torch.equal(inputs.probs["insertion"][0], zeros)
    assert inputs.target_prob("x").tolist() == inputs.probs["x"][[0, 1], [2, 0]].tolist()
    assert inputs.target_prob("deletion").shape == (2, 5)


def test_suite_calls_the_classifier_once_in_eval_mode_and_restores_its_mode():
    clf = first_bin_classifier(4)
    clf.train()
    X, B, n_steps = torch.rand(3, 2, 2), 3, 10
    names = [*FAITHFULNESS, *CURVES, "sps", "comp"]
    suite = EvaluationSuite(names, n_steps=n_steps, batch_size=1000)
    suite.evaluate(clf, X, explanation(torch.rand(3, 2, 2), torch.rand(3, 2, 2)))
    rows = 3 * B + 1 + 2 * (n_steps - 1) * B  # X, M X, (1 - M) X, one zero row, inner curve steps
    assert clf.calls == 1 and clf.rows == rows
    assert clf.modes == [False] and clf.grad_enabled == [False] and clf.training
    assert suite.counts == {"logits_calls": 1, "rows": rows}
    assert {"inputs", "forward", *names} <= set(suite.timings)
    # smaller chunks: ceil(rows / batch_size) calls, same scores
    small = EvaluationSuite(names, n_steps=n_steps, batch_size=7)
    clf.calls = 0
    exp = explanation(torch.rand(3, 2, 2), torch.rand(3, 2, 2))
    chunked = small.evaluate(clf, X, exp)
    assert clf.calls == math.ceil(rows / 7)
    whole = suite.evaluate(clf, X, exp)
    for name in names:
        torch.testing.assert_close(chunked[name], whole[name])


def test_suite_builds_only_the_inputs_its_metrics_need():
    clf = first_bin_classifier(4)
    EvaluationSuite(["fid_in"]).evaluate(clf, torch.rand(5, 2, 2), explanation(torch.rand(5, 2, 2)))
    assert clf.rows == 5  # M X only
    clf.rows = 0
    EvaluationSuite(["fid_in@10"]).evaluate(clf, torch.rand(5, 2, 2), explanation(torch.rand(5, 2, 2)))
    assert clf.rows == 5  # the top-10 % masked-in X only: no X, no method mask, no other area
    clf.rows = 0
    EvaluationSuite(["faithfulness_mask_out_area_mean"]).evaluate(
        clf, torch.rand(5, 2, 2), explanation(torch.rand(5, 2, 2))
    )
    assert clf.rows == 5 * (1 + 4)  # X and one masked-out row per area


def test_localization_metrics_on_a_designed_saliency():
    saliency = torch.tensor(
        [
            [[5.0, 1.0, 0.0], [-2.0, 3.0, 0.5]],
            [[5.0, 1.0, 0.0], [-2.0, 3.0, 0.5]],
            [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
            [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        ]
    )
    gt = torch.tensor(
        [
            [[1, 0, 0], [0, 1, 0]],  # both positives outrank every negative
            [[0, 0, 0], [0, 0, 1]],  # the peak (5) is outside; 0.5 beats 0 and -2 only
            [[0, 0, 0], [0, 0, 0]],  # no event: nothing to localize
            [[1, 1, 1], [1, 1, 1]],  # all event: ROC-AUC undefined
        ]
    )
    clf = first_bin_classifier(6)
    X = torch.ones(4, 2, 3)
    scores = EvaluationSuite(LOCALIZATION).evaluate(clf, X, explanation(saliency), ground_truth=gt)
    assert scores["relevance_mass_accuracy"][0].item() == pytest.approx(8 / 9.5)
    assert scores["relevance_mass_accuracy"][1].item() == pytest.approx(0.5 / 9.5)
    assert scores["relevance_mass_accuracy"][3].item() == pytest.approx(1.0)
    assert scores["pointing_game"][[0, 1, 3]].tolist() == [1.0, 0.0, 1.0]
    assert scores["localization_auc"][0].item() == 1.0
    assert scores["localization_auc"][1].item() == pytest.approx(2 / 5)  # pairs: 0.5 beats 2 of 5 negatives
    assert torch.isnan(scores["localization_auc"][2:]).all()
    assert all(torch.isnan(scores[name][2]) for name in LOCALIZATION)
    assert summarize(scores)["pointing_game"] == pytest.approx(2 / 3)  # NaN ignored


def test_metrics_without_their_data_score_nan_and_are_listed_as_skipped():
    suite = EvaluationSuite(["sps", *LOCALIZATION, "si_snr"])
    scores = suite.evaluate(first_bin_classifier(4), torch.rand(2, 2, 2), explanation(torch.rand(2, 2, 2)))
    assert suite.skipped == [*LOCALIZATION, "si_snr"]
    assert all(torch.isnan(scores[name]).all() for name in suite.skipped)
    assert not torch.isnan(scores["sps"]).any()
    assert math.isnan(summarize(scores)["pointing_game"])


def test_si_snr_of_a_scaled_copy_and_of_equal_power_orthogonal_noise():
    generator = torch.Generator().manual_seed(0)
    signal = torch.randn(1, 4000, generator=generator, dtype=torch.float64)
    signal -= signal.mean()
    noise = torch.randn(1, 4000, generator=generator, dtype=torch.float64)
    noise -= noise.mean()
    noise -= (noise * signal).sum() / (signal * signal).sum() * signal  # orthogonal to the signal
    noise *= signal.norm() / noise.norm()  # same power
    assert si_snr(0.5 * signal, signal).item() > 60
    assert si_snr(signal + noise, signal).item() == pytest.approx(0.0, abs=1e-6)
    # through the suite, with the same clips as a batch
    estimates = torch.cat([0.5 * signal, signal + noise]).float()
    scores = EvaluationSuite(["si_snr"]).evaluate(
        first_bin_classifier(4),
        torch.rand(2, 2, 2),
        explanation(torch.rand(2, 2, 2)),
        interpretation_wavs=estimates,
        event_wavs=torch.cat([signal, signal]).float(),
    )
    assert scores["si_snr"][0].item() > 60
    assert scores["si_snr"][1].item() == pytest.approx(0.0, abs=1e-3)


def test_si_snr_makes_the_interpretation_from_wavs_when_only_wavs_are_given():
    class KeepsWavs(Explanation):
        def to_wav(self, classifier, wavs):
            return 0.5 * wavs  # a perfect, rescaled interpretation

    wavs = torch.randn(2, 1000)
    exp = KeepsWavs(saliency=torch.rand(2, 2, 2), mask=torch.ones(2, 2, 2), target=torch.zeros(2, dtype=torch.long))
    suite = EvaluationSuite(["si_snr"])
    scores = suite.evaluate(first_bin_classifier(4), torch.rand(2, 2, 2), exp, wavs=wavs, event_wavs=wavs)
    assert (scores["si_snr"] > 60).all() and "to_wav" in suite.timings


def test_shape_mismatches_name_both_shapes():
    clf, X = first_bin_classifier(4), torch.rand(2, 2, 2)
    suite = EvaluationSuite([*FAITHFULNESS, *LOCALIZATION])
    with pytest.raises(ValueError, match=r"saliency shape \(2, 2, 3\) does not match X shape \(2, 2, 2\)"):
        suite.evaluate(clf, X, explanation(torch.rand(2, 2, 3)))
    with pytest.raises(ValueError, match=r"ground truth shape \(2, 3, 2\) does not match X shape \(2, 2, 2\)"):
        suite.evaluate(clf, X, explanation(torch.rand(2, 2, 2)), ground_truth=torch.ones(2, 3, 2))
    with pytest.raises(ValueError, match=r"mask shape \(1, 2, 2\) does not match X shape \(2, 2, 2\)"):
        bad = Explanation(saliency=torch.rand(1, 2, 2), mask=torch.rand(1, 2, 2), target=torch.zeros(1))
        bad.saliency = torch.rand(2, 2, 2)  # bypass Explanation's own check to reach the suite's
        suite.evaluate(clf, X, bad)
    with pytest.raises(ValueError, match=r"\(2, 100\).*\(2, 99\)"):
        EvaluationSuite(["si_snr"]).evaluate(
            clf,
            X,
            explanation(torch.rand(2, 2, 2)),
            interpretation_wavs=torch.rand(2, 100),
            event_wavs=torch.rand(2, 99),
        )


def test_a_metric_scored_alone_matches_it_in_a_full_suite():
    # a one-metric suite lays out fewer rows (no mask-in / mask-out, one curve): the score must not depend on it
    clf, X = first_bin_classifier(4), torch.rand(3, 2, 2)
    exp = explanation(torch.rand(3, 2, 2), torch.rand(3, 2, 2))
    alone = EvaluationSuite([METRICS.build("insertion_auc")], n_steps=5, batch_size=4).evaluate(clf, X, exp)
    full = EvaluationSuite([*FAITHFULNESS, *CURVES], n_steps=5, batch_size=4).evaluate(clf, X, exp)
    torch.testing.assert_close(alone["insertion_auc"], full["insertion_auc"])


def test_write_metric_tables(tmp_path):
    per_clip = {"fid_in": torch.tensor([1.0, 0.0]), "ad": torch.tensor([10.0, float("nan")])}
    summary = summarize(per_clip)
    assert summary == {"fid_in": 0.5, "ad": 10.0}
    rows = per_clip_rows(per_clip, clip_ids=["a.wav", "b.wav"], method="piq")
    summaries = [summary_row(summary, method="piq"), summary_row({"fid_in": 0.25}, method="l2i")]
    markdown = write_metric_tables(rows, summaries, tmp_path / "tables", stem="esc50")
    with open(tmp_path / "tables" / "esc50_per_clip.csv") as f:
        read = list(csv.DictReader(f))
    assert [r["clip"] for r in read] == ["a.wav", "b.wav"] and read[0]["method"] == "piq"
    assert float(read[0]["fid_in"]) == 1.0 and float(read[0]["ad"]) == 10.0 and math.isnan(float(read[1]["ad"]))
    with open(tmp_path / "tables" / "esc50_summary.csv") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["method", "Fid-In", "AD (%)"]
    assert float(read[0]["AD (%)"]) == 10.0 and read[1]["AD (%)"] == "" and float(read[1]["Fid-In"]) == 0.25
    text = (tmp_path / "tables" / "esc50_summary.md").read_text()
    assert text == markdown and text.startswith("| method | Fid-In | AD (%) |") and "| piq | 0.5 | 10 |" in text
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "esc50_per_clip.csv",
        "esc50_summary.csv",
        "esc50_summary.md",
    ]
