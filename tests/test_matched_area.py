"""Faithfulness at matched area: every method's saliency cut to top-a masks of the same size."""

import math

import pytest
import torch

from common.features import keep_masked
from common.interpreters.base import Explanation
from common.metrics import (
    DEFAULT_AREAS,
    DISPLAY_NAMES,
    HIGHER_IS_BETTER,
    MATCHED_AREA_METRICS,
    EvaluationSuite,
    MatchedAreaMetric,
)
from common.metrics.matched_area import FAMILIES, matched_key
from common.registry import METRICS

PER_AREA = [f"{family}@{pct}" for family in FAMILIES for pct in ("5", "10", "20", "50")]
MEANS = [f"{family}_area_mean" for family in FAMILIES]


def explanation(saliency, mask=None, target=None):
    saliency = torch.as_tensor(saliency, dtype=torch.float32)
    mask = torch.ones_like(saliency) if mask is None else torch.as_tensor(mask, dtype=torch.float32)
    target = torch.zeros(len(saliency), dtype=torch.long) if target is None else torch.as_tensor(target)
    return Explanation(saliency=saliency, mask=mask, target=target)


class IdentityClassifier(torch.nn.Module):
    """logits = X.flatten(1): the cached logits of a row are the row itself, so a test can read what was classified."""

    silence = 0.0

    def logits(self, X):
        return X.flatten(1).clone()


class Spy(MatchedAreaMetric):
    """Not registered: keeps the MetricInputs the suite hands to metrics."""

    name = "matched_spy"
    family = "faithfulness_mask_out"

    def __init__(self, areas):
        super().__init__(areas=areas)
        self.name = "matched_spy"
        self.needs = frozenset({"x", "matched_in", "matched_out"})

    def compute(self, inputs):
        self.inputs = inputs
        return torch.zeros(inputs.batch_size)


def test_matched_area_metrics_are_registered_with_the_direction_of_their_family():
    assert sorted(MATCHED_AREA_METRICS) == sorted(PER_AREA + MEANS)
    for name in MATCHED_AREA_METRICS:
        family = name.split("@")[0].removesuffix("_area_mean")
        metric = METRICS.build(name)
        assert metric.name == name and metric.family == family
        assert HIGHER_IS_BETTER[name] == METRICS.get(family).higher_is_better
        assert DISPLAY_NAMES[name] == metric.display_name and DISPLAY_NAMES[name] != DISPLAY_NAMES[family]
        assert not metric.needs & {"mask_in", "mask_out"}  # never the method's own mask
    assert METRICS.build("fid_in@10").areas == (0.1,)
    assert METRICS.build("ad_area_mean").areas == DEFAULT_AREAS == (0.05, 0.1, 0.2, 0.5)


def test_matched_mask_keeps_exactly_round_a_n_top_bins_ties_broken_by_index():
    # 45 bins: 5 % -> 2.25 -> 2, 10 % -> 4.5 -> 5, 20 % -> 9, 50 % -> 22.5 -> 23, 30 % -> 13.5 -> 14: halves
    # up, as the deletion curve counts (Python's round would give 4 and 22)
    torch.manual_seed(0)
    B, T, F = 3, 5, 9
    X = 1.0 + torch.rand(B, T, F)  # every bin nonzero, so a kept bin is told apart from silence (0)
    saliency = torch.randint(0, 6, (B, T, F)).float()  # many ties
    areas = (0.05, 0.1, 0.2, 0.5, 0.3)
    spy = Spy(areas)
    EvaluationSuite([spy], batch_size=7).evaluate(IdentityClassifier(), X, explanation(saliency))
    flat_s, flat_x = saliency.flatten(1), X.flatten(1)
    for area, expected in zip(areas, (2, 5, 9, 23, 14), strict=True):
        kept_in = spy.inputs.logits[matched_key("matched_in", area)]
        kept_out = spy.inputs.logits[matched_key("matched_out", area)]
        for b in range(B):
            keep = kept_in[b] != 0
            assert int(keep.sum()) == expected == math.floor(area * T * F + 0.5)
            # the kept bins carry X's own values, the removed ones silence; mask-out is the complement
            torch.testing.assert_close(kept_in[b][keep], flat_x[b][keep])
            torch.testing.assert_close(kept_out[b], torch.where(keep, 0.0, flat_x[b]))
            # they are the top ones: none outside is more salient, and within a tie the lower index goes first
            assert flat_s[b][keep].min() >= flat_s[b][~keep].max()
            edge = flat_s[b][keep].min()
            tied = (flat_s[b] == edge).nonzero().flatten()
            kept_tied = keep[tied]
            assert kept_tied.any() and not (kept_tied[1:] & ~kept_tied[:-1]).any()


def region_classifier(region):
    """Class 0's logit is the sum of X over ``region`` (a bool (T, F) mask), class 1's a constant 4: only the region counts."""
    weight = torch.zeros(2, region.numel())
    weight[0] = region.flatten().float()

    class RegionClassifier(torch.nn.Module):
        silence = 0.0

        def logits(self, X):
            return X.flatten(1) @ weight.T + torch.tensor([0.0, 4.0])

    return RegionClassifier()


def test_a_map_on_the_evidence_beats_a_map_on_a_loud_distractor_at_every_area():
    T, F = 8, 8  # 64 bins: 3, 6, 13 and 32 kept
    region = torch.zeros(T, F, dtype=torch.bool)
    region[1, 2:6] = True  # the evidence: 4 bins of value 5 (class 0 logit 20 > 4)
    distractor = torch.zeros(T, F, dtype=torch.bool)
    distractor[5:7, :] = True  # loud, ignored by the classifier
    torch.manual_seed(0)
    X = 0.1 * torch.rand(1, T, F)
    X[0][region], X[0][distractor] = 5.0, 10.0
    clf = region_classifier(region)
    target = clf.logits(X).argmax(1)
    assert target.tolist() == [0]
    ramp = torch.arange(T * F, dtype=torch.float32).view(1, T, F) / (T * F)  # a fixed order inside each map
    on_evidence = ramp + 2.0 * region
    on_distractor = X + ramp  # input magnitude: the distractor first, then the evidence
    on_distractor[0][distractor] += 100.0
    on_distractor[0][region] = -1.0  # pointing elsewhere: the evidence last
    names = [*PER_AREA, *MEANS]
    suite = EvaluationSuite(names)
    good = suite.evaluate(clf, X, explanation(on_evidence, target=target))
    bad = suite.evaluate(clf, X, explanation(on_distractor, target=target))
    for family in ("fid_in", "faithfulness_mask_in", "faithfulness_mask_out", "ad"):
        for pct in ("5", "10", "20", "50"):
            name = f"{family}@{pct}"
            better = good[name] > bad[name] if HIGHER_IS_BETTER[name] else good[name] < bad[name]
            assert bool(better), (name, good[name].item(), bad[name].item())
        mean = f"{family}_area_mean"
        better = good[mean] > bad[mean] if HIGHER_IS_BETTER[mean] else good[mean] < bad[mean]
        assert bool(better), (mean, good[mean].item(), bad[mean].item())
    assert good["fid_in_area_mean"].item() == 1.0 and bad["fid_in_area_mean"].item() == 0.0


class SmallNet(torch.nn.Module):
    """A nonlinear classifier whose silence differs per clip (a z-scored-dB-like floor)."""

    def __init__(self, n_classes=3):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(n_classes)
        )

    def silence(self, X):
        return X.flatten(1).amin(dim=1) - 1.0

    def logits(self, X):
        return self.net(X[:, None])


def test_matched_area_scores_equal_a_direct_computation_on_keep_masked_inputs():
    torch.manual_seed(2)
    B, T, F = 5, 6, 10
    X = torch.randn(B, T, F)
    clf = SmallNet()
    clf.logits(X)  # materialise the lazy layer
    clf.eval()
    saliency = torch.randn(B, T, F)  # distinct values: the top-k is unambiguous
    with torch.no_grad():
        target = clf.logits(X).argmax(1)
        p_x = torch.softmax(clf.logits(X), 1)[torch.arange(B), target]
    names = [*PER_AREA, *MEANS, "deletion_auc", "fid_in"]
    suite = EvaluationSuite(names, n_steps=4, batch_size=7)
    scores = suite.evaluate(clf, X, explanation(saliency, mask=(saliency > 1.0).float(), target=target))
    silence = X.flatten(1).amin(1).view(B, 1, 1) - 1.0
    N = T * F
    expected_means = {family: 0.0 for family in FAMILIES}
    for area, pct in zip(DEFAULT_AREAS, ("5", "10", "20", "50"), strict=True):
        k = int(area * N + 0.5)
        top = saliency.flatten(1).topk(k, dim=1).indices
        M = torch.zeros(B, N).scatter_(1, top, 1.0).view(B, T, F)
        with torch.no_grad():
            logits_in = clf.logits(keep_masked(X, M, silence))
            p_in = torch.softmax(logits_in, 1)[torch.arange(B), target]
            p_out = torch.softmax(clf.logits(keep_masked(X, 1 - M, silence)), 1)[torch.arange(B), target]
        expected = {
            "fid_in": (logits_in.argmax(1) == target).float(),
            "faithfulness_mask_in": p_x - p_in,
            "faithfulness_mask_out": p_x - p_out,
            "ai": 100.0 * (p_in > p_x).float(),
            "ad": 100.0 * (p_x - p_in).clamp(min=0) / p_x,
            "ag": 100.0 * (p_in - p_x).clamp(min=0) / (1 - p_x),
        }
        for family, value in expected.items():
            torch.testing.assert_close(scores[f"{family}@{pct}"], value, atol=1e-5, rtol=1e-4)
            expected_means[family] = expected_means[family] + value / len(DEFAULT_AREAS)
    for family, value in expected_means.items():
        torch.testing.assert_close(scores[f"{family}_area_mean"], value, atol=1e-5, rtol=1e-4)
    # batched with the suite's other rows: x, mask_in, 8 matched rows, 3 inner steps and one silent row
    # per clip (this silence differs per clip), in ceil(rows / batch_size) calls
    rows = B * (1 + 1 + 2 * len(DEFAULT_AREAS) + 3 + 1)
    assert suite.counts == {"rows": rows, "logits_calls": math.ceil(rows / 7)}


def test_a_methods_own_threshold_and_monotone_rescaling_leave_matched_area_scores_unchanged():
    torch.manual_seed(3)
    B, T, F = 4, 6, 10
    X = torch.randn(B, T, F)
    clf = SmallNet()
    clf.logits(X)
    clf.eval()
    with torch.no_grad():
        target = clf.logits(X).argmax(1)
    saliency = torch.randint(0, 16, (B, T, F)).float() / 8  # ties, and exactly representable values
    variants = [
        explanation(saliency, mask=torch.ones(B, T, F), target=target),
        explanation(3.0 * saliency + 7.0, mask=(saliency > 1.0).float(), target=target),
        explanation(torch.exp(saliency) - 5.0, mask=(saliency > 1.9).float(), target=target),
        explanation(saliency / 100.0, mask=torch.rand(B, T, F), target=target),
    ]
    names = [*PER_AREA, *MEANS, "fid_in", "faithfulness_mask_in"]
    results = [EvaluationSuite(names).evaluate(clf, X, e) for e in variants]
    for name in PER_AREA + MEANS:
        for other in results[1:]:
            assert torch.equal(results[0][name], other[name]), name
    # the method's own mask does change the unmatched scores: the test would see a leak of it
    assert not torch.equal(results[0]["faithfulness_mask_in"], results[1]["faithfulness_mask_in"])


def test_an_area_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        MatchedAreaMetric("fid_in", areas=(10,))
    with pytest.raises(KeyError, match="family"):
        MatchedAreaMetric("sps")
