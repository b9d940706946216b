"""Time-segment surrogates (``segment_linear``, ``segment_forest``; Bolaños et al. 2025) on classifiers whose
evidence is known: a logit that reads one time segment only, or two segments together (a conjunction)."""

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import ConfigError
from common.features import MelDbSpectrogram, silence_of
from common.interpreters.components import TimeSegments
from common.interpreters.lime_shap import target_output
from common.interpreters.segments import SegmentForestInterpreter, SegmentLinearInterpreter
from common.models import AudioClassifier
from common.registry import INTERPRETERS
from tests.test_posthoc import SAMPLE_RATE, region_classifier, synthetic_wavs, tiny_classifier

METHODS = {"linear": SegmentLinearInterpreter, "forest": SegmentForestInterpreter}
# 8 kHz, hop 64: 125 frames/s, so a 1 s clip has 126 frames and 100 ms segments make 10 of 12-13 frames
N_SEGMENTS = 10


def segment_frames(X, k, n_segments=N_SEGMENTS):
    """(first, last + 1) frames of segment k of X's ``n_segments`` time segments."""
    frames = torch.nonzero(TimeSegments(n_segments).segment(X)[0, :, 0] == k)[:, 0]
    return int(frames[0]), int(frames[-1]) + 1


def clip():
    return synthetic_wavs(1)


def exact_effect(classifier, X, t0, t1):
    """What keeping frames [t0, t1) rather than silencing them adds to the region classifier's class-0 log-odds:
    its logits are +-2 x the region's mean, so the log-odds z0 - z1 = 4 x the mean."""
    return float(4 * (X[0, t0:t1].mean() - silence_of(classifier, X)[0, 0, 0]))


class Spy:
    """Wraps ``classifier.logits`` and keeps every batch of inputs it is given."""

    def __init__(self, classifier):
        self.inputs, self.logits = [], classifier.logits
        classifier.logits = self

    def __call__(self, X):
        self.inputs.append(X.detach().clone())
        return self.logits(X)

    def rows(self):
        return torch.cat(self.inputs)


@pytest.mark.parametrize("surrogate", list(METHODS))
@pytest.mark.parametrize("k", [2, 7])
def test_the_top_segment_is_the_one_the_logit_reads(surrogate, k):
    """The region classifier reads segment k only: both surrogates score k highest and the others ~0, with the
    silence fill at exactly the change the logit sees (4 x (region mean - silence)); a map permuted in time,
    or one fitted to unperturbed (unfilled) inputs, fails. The noise fill holds the clip's levels, so removing
    k changes the logit by 4 x (region mean - the clip's mean level): negative where k is quieter than average
    (segment 7 here)."""
    X0 = region_classifier(0, 1).features(clip())
    t0, t1 = segment_frames(X0, k)
    classifier = region_classifier(t0, t1)
    X = classifier.features(clip())
    target = torch.tensor([0])
    for fill in ("silence", "noise"):
        interpreter = METHODS[surrogate](classifier, n_samples=128, fill=fill, ridge_alpha=1e-6, seed=1)
        explanation = interpreter.explain(X=X, target=target)
        weights = explanation.extras["component_weights"][0].double()
        assert len(weights) == N_SEGMENTS and int(weights.abs().argmax()) == k, (fill, weights)
        others = torch.cat([weights[:k], weights[k + 1 :]])
        per_frame = explanation.saliency[0].mean(dim=1).abs()
        assert torch.equal(per_frame.argmax().reshape(1), torch.tensor([t0])), fill  # the first of its frames
        assert (per_frame[t0:t1] == per_frame.max()).all(), fill
        if fill == "silence":  # the logit is linear in the kept segment: both surrogates are exact
            assert float(weights[k]) == pytest.approx(exact_effect(classifier, X, t0, t1), rel=1e-3)
            assert float(others.abs().max()) < 1e-3 * float(weights[k])
            assert float(explanation.extras["per_clip"]["surrogate_r2"][0]) > 0.999
        else:  # a fresh draw per perturbation: a noisier effect, still far above the others
            assert float(weights[k]) == pytest.approx(float(4 * (X[0, t0:t1].mean() - X.mean())), rel=0.15)
            assert abs(float(weights[k])) > 5 * float(others.abs().max())
            # the draws make the output vary at a fixed z: no surrogate fits it all, out of bag even less
            per_clip = {name: float(v[0]) for name, v in explanation.extras["per_clip"].items()}
            assert 0.5 < per_clip["surrogate_r2"] < 0.995, per_clip
            if surrogate == "forest":
                assert per_clip["surrogate_oob_r2"] < per_clip["surrogate_r2"] - 0.02, per_clip


def test_silence_filling_is_the_front_ends_silence_not_zero():
    """On the z-scored dB front end 0 is the mean level: every removed segment must hold the clip's silence
    (its top_db floor), and the effect found must be the one relative to that silence."""
    t0, t1 = segment_frames(region_classifier(0, 1).features(clip()), 4)
    classifier = region_classifier(t0, t1)
    X = classifier.features(clip())
    silence = float(silence_of(classifier, X)[0, 0, 0])
    assert silence < -2.0  # far from 0: filling with 0 would raise the silenced bins to the mean level
    spy = Spy(classifier)
    interpreter = SegmentLinearInterpreter(classifier, n_samples=64, ridge_alpha=1e-6, batch_size=16)
    weights = interpreter.explain(X=X, target=torch.tensor([0])).extras["component_weights"][0]
    rows = spy.rows()
    assert len(rows) == 64 and len(spy.inputs) == 4  # batched: 64 perturbations in 4 calls of 16
    ids = TimeSegments(N_SEGMENTS).segment(X)[0, :, 0]
    removed = 0
    for row in rows:
        for k in range(N_SEGMENTS):
            part, original = row[ids == k], X[0][ids == k]
            if torch.equal(part, original):
                continue
            assert torch.equal(part, torch.full_like(part, silence)), k  # the whole segment, every bin
            removed += 1
    assert torch.equal(rows[0], X[0]) and removed > 64 * N_SEGMENTS / 4
    assert float(weights[4]) == pytest.approx(exact_effect(classifier, X, t0, t1), rel=1e-3)
    assert abs(float(weights[4]) - float(4 * X[0, t0:t1].mean())) > 8  # what a 0 fill would have found


def test_noise_filling_draws_the_clips_per_bin_statistics_afresh():
    classifier = tiny_classifier()
    X = classifier.features(synthetic_wavs(1))
    silence = silence_of(classifier, X)[0, 0, 0]
    spy = Spy(classifier)
    SegmentLinearInterpreter(classifier, n_samples=96, fill="noise").explain(X=X)
    rows = spy.rows()
    changed = (rows != X).any(dim=2)  # (rows, T): frames that hold a fill
    fills = rows[changed]  # (n, F)
    assert len(fills) > 96 * X.shape[1] / 4
    assert (fills >= silence).all() and (fills > silence).float().mean() > 0.5  # floored at, not filled with, it
    # the clip's own per-bin levels and spreads, not one level for every bin
    torch.testing.assert_close(fills.mean(dim=0), X[0].mean(dim=0), atol=0.15, rtol=0)
    torch.testing.assert_close(fills.std(dim=0), X[0].std(dim=0), atol=0.15, rtol=0.2)
    # a fresh draw per perturbation: two rows that both fill frame 0 hold different noise there
    both = torch.nonzero(changed[:, 0])[:2, 0]
    assert len(both) == 2 and not torch.equal(rows[both[0], 0], rows[both[1], 0])


def test_the_map_is_constant_within_each_segment_and_across_frequency():
    classifier = tiny_classifier()
    X = classifier.features(synthetic_wavs(2))
    for cls in METHODS.values():
        explanation = cls(classifier, segment_ms=200, n_samples=64).explain(X=X)
        for b in range(2):
            ids = explanation.extras["components"][b]
            weights = explanation.extras["component_weights"][b]
            assert torch.equal(explanation.saliency[b], weights[ids])
            assert torch.equal(ids, ids[:, :1].expand_as(ids))  # one segment per frame, every bin
            lengths = torch.bincount(ids[:, 0])
            assert len(lengths) == 5 and set(lengths.tolist()) <= {25, 26}  # 200 ms = 25 frames of 8 ms
            assert torch.all(ids[1:, 0] >= ids[:-1, 0])  # consecutive stretches
            assert explanation.saliency[b].std(dim=1).max() == 0
            assert len(torch.unique(explanation.saliency[b])) == 5


@pytest.mark.parametrize("fill", ["silence", "noise"])
def test_a_seed_gives_the_same_map_and_another_seed_another(fill):
    classifier = tiny_classifier()
    X = classifier.features(synthetic_wavs(2))
    for cls in METHODS.values():
        first, again, other = (cls(classifier, n_samples=48, fill=fill, seed=s).attribute(X, 0) for s in (3, 3, 4))
        assert torch.equal(first, again)
        assert not torch.allclose(first, other)


class TwoRegions(nn.Module):
    """(B, 2): the mean of X over frames [a0, a1) and over [b0, b1)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, X):
        return torch.stack([X[:, slice(*self.a)].mean(dim=(1, 2)), X[:, slice(*self.b)].mean(dim=(1, 2))], dim=1)


class ConjunctionHead(nn.Module):
    """Logits +-2 x min(the two means): high only when both regions are there (an AND of the two)."""

    def forward(self, means):
        both = means.min(dim=1).values
        return torch.stack([2 * both, -2 * both], dim=1)


def test_on_a_conjunction_the_forest_fits_where_the_line_cannot():
    """Class 0 needs segments 2 and 6 together: both surrogates rank those two first, the line explains about
    2/3 of the variance of a pure interaction (R^2 ~ 0.67) and the forest all of it."""
    front_end = MelDbSpectrogram(sample_rate=SAMPLE_RATE, n_fft=256, hop_length=64, n_mels=32)
    X0 = front_end(clip())
    a, b = segment_frames(X0, 2), segment_frames(X0, 6)
    classifier = AudioClassifier(front_end, TwoRegions(a, b), ConjunctionHead()).eval()
    X = classifier.features(clip())
    r2 = {}
    for name, cls in METHODS.items():
        explanation = cls(classifier, n_samples=256, seed=0).explain(X=X, target=torch.tensor([0]))
        weights = explanation.extras["component_weights"][0]
        assert set(torch.argsort(weights, descending=True)[:2].tolist()) == {2, 6}, name
        r2[name] = float(explanation.extras["per_clip"]["surrogate_r2"][0])
    assert 0.5 < r2["linear"] < 0.8 and r2["forest"] > 0.99
    oob = float(explanation.extras["per_clip"]["surrogate_oob_r2"][0])
    assert oob > 0.95  # out of bag too: four cells of (z_2, z_6), each seen often


def test_the_forest_can_score_by_impurity_importance_as_the_paper_did():
    """``importance``: sklearn's unsigned impurity importance (sums to 1); ``effect`` is signed: for the class the
    region argues against (class 1, logit -2 x the mean) the effect is negative, the importance the same."""
    t0, t1 = segment_frames(region_classifier(0, 1).features(clip()), 4)
    classifier = region_classifier(t0, t1)
    X = classifier.features(clip())
    against = torch.tensor([1])
    importance = SegmentForestInterpreter(classifier, n_samples=64, forest_score="importance").attribute(X, against)
    effect = SegmentForestInterpreter(classifier, n_samples=64).attribute(X, against)
    per_segment = importance[0, :, 0][torch.tensor([segment_frames(X, k)[0] for k in range(N_SEGMENTS)])]
    assert float(per_segment.sum()) == pytest.approx(1.0) and float(per_segment[4]) == pytest.approx(1.0)
    assert float(effect[0, t0, 0]) == pytest.approx(-exact_effect(classifier, X, t0, t1), rel=1e-3)


def test_log_odds_is_log_p_over_one_minus_p():
    logits = torch.tensor([[3.0, 1.0, -2.0], [40.0, 0.0, 1.0]], dtype=torch.float64)
    p = torch.softmax(logits, dim=-1)
    for c in range(3):
        expected = torch.log(p[:, c]) - torch.log1p(-p[:, c])
        got = target_output(logits, c, "log_odds")
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got[:1], expected[:1])
    # p -> 1 in float64 (1 - p underflows in the direct formula): still finite, z_0 - logsumexp(z_1, z_2)
    assert float(target_output(logits, 0, "log_odds")[1]) == pytest.approx(40.0 - np.logaddexp(0.0, 1.0))
    torch.testing.assert_close(target_output(logits, 1, "log_odds", multilabel=True), logits[:, 1])


def test_registered_and_options_checked():
    classifier = tiny_classifier()
    for name in ("segment_linear", "segment_forest"):
        assert INTERPRETERS.get(name).class_conditional
        with pytest.raises(ConfigError, match="fill"):
            INTERPRETERS.build(name, classifier, fill="zeros")
        with pytest.raises(ConfigError, match="keep_probability"):
            INTERPRETERS.build(name, classifier, keep_probability=1.0)
    with pytest.raises(ConfigError, match="segment_frames"):
        SegmentLinearInterpreter(
            AudioClassifier(nn.Identity(), TwoRegions((0, 1), (1, 2)), ConjunctionHead(), silence=0)
        )
