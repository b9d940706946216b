"""Accumulated Local Effects of clip-level features: interventions, the estimator, plots and tables."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from common.analysis.ale import accumulated_local_effects, ale_for_features, write_ale_results
from common.analysis.clip_features import CLIP_FEATURES, BandEnergy, Loudness, SpectrogramDomain, build_clip_features
from common.errors import DataError, ToolkitError
from common.features import DecibelScale, Log1pMagnitudeScale, Log1pSpectrogram, MelDbSpectrogram

N_FRAMES, N_BINS, FRAME_RATE = 100, 24, 50.0
BIN_HZ = torch.logspace(math.log10(60.0), math.log10(8000.0), N_BINS)  # mel-like spacing
LOW = BIN_HZ < 250.0
HIGH = BIN_HZ >= 2000.0
ALL_FEATURES = ["band_energy_low", "band_energy_mid", "band_energy_high", "loudness"]
ALL_FEATURES += ["spectral_centroid", "spectral_flatness", "onset_rate"]


def domain(scale="db"):
    if scale == "db":
        return SpectrogramDomain(BIN_HZ, FRAME_RATE, DecibelScale(mean=-30.0, std=12.0))
    return SpectrogramDomain(BIN_HZ, FRAME_RATE, Log1pMagnitudeScale(spec_mag_power=0.5))


def random_spectrograms(n_clips, scale="db", seed=0):
    """Clips in dB with a random level, spectral tilt and beat (bursts every `period` frames), in `scale`'s domain."""
    g = torch.Generator().manual_seed(seed)
    octaves = torch.log2(BIN_HZ / 1000.0)
    db = -40.0 + 3.0 * torch.randn(n_clips, N_FRAMES, N_BINS, generator=g, dtype=torch.float64)
    db += 15.0 * torch.rand(n_clips, 1, 1, generator=g, dtype=torch.float64)  # level
    db += (12.0 * torch.rand(n_clips, 1, 1, generator=g, dtype=torch.float64) - 6.0) * octaves  # tilt
    for i in range(n_clips):
        period = int(torch.randint(6, 30, (1,), generator=g))
        db[i, ::period] += 20.0
    return domain(scale).scale.from_db(db).float()


def toy_logits(X, dom=None):
    """Class 0 = 0.5 * low-band level, class 1 = -0.3 * high-band level, class 2 = 0: a known dependency."""
    db = (dom or domain()).to_db(X)
    low, high = db[..., LOW].mean(dim=(1, 2)), db[..., HIGH].mean(dim=(1, 2))
    return torch.stack([0.5 * low, -0.3 * high, torch.zeros_like(low)], dim=1)


# -- domains ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "front_end",
    [
        MelDbSpectrogram(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=64),
        Log1pSpectrogram(sample_rate=16000, n_mels=40),
        Log1pSpectrogram(sample_rate=16000),
    ],
    ids=["meldb", "log1p_mel", "log1p_linear"],
)
def test_domain_from_front_end(front_end):
    dom = SpectrogramDomain.from_front_end(front_end)
    wavs = 0.1 * torch.randn(2, front_end.sample_rate)
    X = front_end(wavs)
    assert dom.bin_hz.shape == (X.shape[2],)
    assert float(dom.bin_hz[0]) >= 0 and float(dom.bin_hz[-1]) <= front_end.sample_rate / 2 + 1e-6
    # One second of audio lasts one second of frames.
    assert X.shape[1] / dom.frame_rate == pytest.approx(1.0, abs=2.0 / dom.frame_rate)
    assert torch.allclose(dom.from_db(dom.to_db(X), like=X), X, atol=1e-5)
    # Offsets are in dB: +10 dB on the power is 10x the power.
    if isinstance(front_end, MelDbSpectrogram):
        louder = front_end(wavs * math.sqrt(10.0))
        assert torch.allclose(dom.to_db(louder) - dom.to_db(X), torch.full_like(dom.to_db(X), 10.0), atol=1e-3)


def test_unknown_front_end_is_refused():
    with pytest.raises(ToolkitError, match="SpectrogramDomain"):
        SpectrogramDomain.from_front_end(torch.nn.Identity())


# -- interventions ------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["db", "log1p"])
@pytest.mark.parametrize("name", ALL_FEATURES)
def test_intervention_sets_feature_to_target(name, scale):
    dom = domain(scale)
    (feature,) = build_clip_features([name], dom)
    X = random_spectrograms(12, scale, seed=1)
    values = feature.value(X)
    assert values.shape == (12,) and torch.isfinite(values).all()
    assert float(values.max() - values.min()) > 0, "the test clips must differ in every feature"
    if name == "onset_rate":
        # Onset counts are integers: ask for rates other clips have (as the ALE edges are).
        targets = values[torch.randperm(12, generator=torch.Generator().manual_seed(0))]
    else:
        fractions = torch.rand(12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        targets = values.min() + fractions * (values.max() - values.min())
    X_set = feature.set_to(X, targets)
    assert X_set.shape == X.shape and X_set.dtype == X.dtype and torch.isfinite(X_set).all()
    achieved = feature.value(X_set)
    if name == "onset_rate":
        one_onset = FRAME_RATE / N_FRAMES
        assert ((achieved - targets).abs() < 1e-9).double().mean() >= 0.75
        assert ((achieved - targets).abs() <= one_onset + 1e-9).all()
    else:
        tolerance = {"spectral_centroid": 0.05, "spectral_flatness": 1e-5}.get(name, 1e-3)  # Hz / ratio / dB
        assert torch.allclose(achieved, targets, atol=tolerance, rtol=0), (achieved - targets).abs().max()
    # Asking for the value a clip already has leaves it (nearly) as it is.
    if name != "onset_rate":
        assert torch.allclose(feature.set_to(X, values), X, atol=1e-3)


@pytest.mark.parametrize("name", ["spectral_centroid", "spectral_flatness"])
def test_spectral_shape_interventions_keep_loudness(name):
    dom = domain()
    (feature,) = build_clip_features([name], dom)
    X = random_spectrograms(6, seed=2)
    values = feature.value(X)
    X_set = feature.set_to(X, values.flip(0))
    loudness = Loudness(dom)
    assert torch.allclose(loudness.value(X_set), loudness.value(X), atol=1e-3)


def test_onset_rate_limits():
    dom = domain()
    (onsets,) = build_clip_features(["onset_rate"], dom)
    X = random_spectrograms(3, seed=12)
    assert (onsets.value(X) > 0).all()
    stilled = onsets.set_to(X, torch.zeros(3, dtype=torch.float64))  # rate 0: the clip held still
    assert torch.isfinite(stilled).all() and (onsets.value(stilled) == 0).all()
    steady = X[:, :1].expand_as(X).contiguous()  # no onsets: nothing to time-scale, left as it is
    assert (onsets.value(steady) == 0).all()
    assert torch.equal(onsets.set_to(steady, torch.full((3,), 2.0)), steady)


def test_band_energy_changes_only_its_band():
    dom = domain()
    (low,) = build_clip_features(["band_energy_low"], dom)
    X = random_spectrograms(4, seed=3)
    X_set = low.set_to(X, low.value(X) + 6.0)
    changed = (dom.to_db(X_set) - dom.to_db(X)).abs().amax(dim=(0, 1)) > 1e-4
    assert torch.equal(changed, LOW)


def test_feature_specs():
    dom = domain()
    features = build_clip_features(
        ["loudness", {"name": "band_energy", "lo_hz": 100, "hi_hz": 400, "label": "kick_band"}], dom
    )
    assert [f.name for f in features] == ["loudness", "kick_band"]
    assert features[1].label == "kick_band (dB)"
    assert torch.equal(features[1].bins, (BIN_HZ >= 100) & (BIN_HZ < 400))
    assert set(ALL_FEATURES) <= set(CLIP_FEATURES.names())
    with pytest.raises(KeyError, match="loudnes"):
        build_clip_features(["loudnes"], dom)
    with pytest.raises(ToolkitError, match="no bin"):
        BandEnergy(dom, 9000, 10000)
    with pytest.raises(ToolkitError, match="unique"):
        build_clip_features(["loudness", "loudness"], dom)


# -- the estimator -------------------------------------------------------------------------
def test_ale_is_linear_with_the_known_slope_and_zero_where_ignored():
    dom = domain()
    X = random_spectrograms(40, seed=4)
    low, high, loudness, centroid = build_clip_features(
        ["band_energy_low", "band_energy_high", "loudness", "spectral_centroid"], dom
    )
    result = accumulated_local_effects(toy_logits, X, low, n_intervals=8, batch_size=16)
    assert result.ale.shape == (len(result.edges), 3) and len(result.edges) == 9
    steps = np.diff(result.ale, axis=0)
    np.testing.assert_allclose(steps[:, 0], 0.5 * np.diff(result.edges), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.ale[:, 1:], 0.0, atol=1e-6)  # the high band and class 2 do not move
    assert result.intervention_max_error < 1e-3

    result = accumulated_local_effects(toy_logits, X, high, n_intervals=8)
    np.testing.assert_allclose(np.diff(result.ale[:, 1]), -0.3 * np.diff(result.edges), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.ale[:, [0, 2]], 0.0, atol=1e-6)

    # A loudness offset moves every band by the same dB: both classes respond with their own slope.
    result = accumulated_local_effects(toy_logits, X, loudness, n_intervals=5)
    np.testing.assert_allclose(np.diff(result.ale[:, 0]), 0.5 * np.diff(result.edges), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.diff(result.ale[:, 1]), -0.3 * np.diff(result.edges), rtol=1e-4, atol=1e-6)
    # Nothing moves the constant class.
    result = accumulated_local_effects(toy_logits, X, centroid, n_intervals=5)
    np.testing.assert_allclose(result.ale[:, 2], 0.0, atol=1e-9)
    assert np.abs(result.ale[:, 0]).max() > 0.1  # a tilt does change the low band


def test_ale_accumulates_a_nonlinear_effect():
    dom = domain()
    X = random_spectrograms(30, seed=5)
    loudness = Loudness(dom)

    def quadratic(X):
        level = dom.to_db(X).mean(dim=(1, 2))
        return (0.01 * level**2)[:, None]

    result = accumulated_local_effects(quadratic, X, loudness, n_intervals=6)
    expected = 0.01 * (result.edges**2 - result.edges[0] ** 2)
    np.testing.assert_allclose(result.ale[:, 0] - result.ale[0, 0], expected, rtol=1e-4, atol=1e-6)


def test_ale_averages_local_effects_over_each_interval_clips():
    """f = E_low * w(clip), w read from the high band (untouched by the low-band intervention)."""
    dom = domain()
    X = random_spectrograms(25, seed=6)
    (low,) = build_clip_features(["band_energy_low"], dom)

    def interaction(X):
        db = dom.to_db(X)
        weight = db[..., HIGH].mean(dim=(1, 2)) / 10.0
        return (db[..., LOW].mean(dim=(1, 2)) * weight)[:, None]

    result = accumulated_local_effects(interaction, X, low, n_intervals=5, batch_size=7)
    weight = (dom.to_db(X)[..., HIGH].mean(dim=(1, 2)) / 10.0).numpy()
    values, edges = result.feature_values, result.edges
    for k in range(len(edges) - 1):
        members = (values > edges[k]) & (values <= edges[k + 1])
        if k == 0:
            members |= values == edges[0]
        assert members.sum() == result.counts[k] > 0
        expected = weight[members].mean() * (edges[k + 1] - edges[k])
        assert result.local_effects[k, 0] == pytest.approx(expected, rel=1e-4)
        assert result.local_effect_std[k, 0] == pytest.approx(
            (weight[members] * (edges[k + 1] - edges[k])).std(), rel=1e-3, abs=1e-9
        )


def test_ale_is_centred_and_probabilities_balance():
    dom = domain()
    X = random_spectrograms(33, seed=7)

    def probabilities(X):
        return torch.softmax(toy_logits(X, dom), dim=1)

    features = build_clip_features(["band_energy_low", "spectral_flatness", "onset_rate"], dom)
    for centring in ("clips", "midpoints"):
        for result in ale_for_features(probabilities, X, features, n_intervals=6, centring=centring):
            n = len(result.feature_values)
            assert result.counts.sum() == n and (result.counts > 0).all()
            assert np.all(np.diff(result.edges) > 0) and np.isin(result.edges, result.feature_values).all()
            weights = result.counts[:, None]
            if centring == "clips":
                mean_effect = (weights * result.ale[1:]).sum(axis=0) / n
            else:
                mean_effect = (weights * (result.ale[1:] + result.ale[:-1]) / 2).sum(axis=0) / n
            np.testing.assert_allclose(mean_effect, 0.0, atol=1e-12)
            # Probabilities sum to 1, so their effects sum to 0 at every edge.
            np.testing.assert_allclose(result.ale.sum(axis=1), 0.0, atol=1e-9)


def test_ale_does_not_depend_on_the_batch_size():
    dom = domain()
    X = random_spectrograms(20, seed=8)
    (centroid,) = build_clip_features(["spectral_centroid"], dom)
    a = accumulated_local_effects(toy_logits, X, centroid, n_intervals=4, batch_size=3)
    b = accumulated_local_effects(toy_logits, X, centroid, n_intervals=4, batch_size=64)
    np.testing.assert_allclose(a.ale, b.ale, atol=1e-6)
    np.testing.assert_array_equal(a.counts, b.counts)


def test_discrete_feature_merges_repeated_edges():
    dom = domain()
    X = random_spectrograms(30, seed=9)
    (onsets,) = build_clip_features(["onset_rate"], dom)
    values = onsets.value(X).numpy()
    result = accumulated_local_effects(toy_logits, X, onsets, n_intervals=20)
    assert len(result.edges) - 1 <= len(np.unique(values)) - 1 < 20
    assert (result.counts > 0).all()


def test_constant_feature_and_nan_input_are_clear_errors():
    dom = domain()
    X = random_spectrograms(6, seed=10)
    level = dom.to_db(X)
    flat = dom.from_db(level - level.mean(dim=(1, 2), keepdim=True) - 40.0, like=X)  # same loudness everywhere
    with pytest.raises(DataError, match="single value"):
        accumulated_local_effects(toy_logits, flat, Loudness(dom))
    broken = X.clone()
    broken[4, 10, 3] = float("nan")
    ids = [f"blues.0000{i}" for i in range(6)]
    with pytest.raises(DataError, match=r"X\[4\] \(clip 'blues.00004'\)"):
        accumulated_local_effects(toy_logits, broken, Loudness(dom), clip_ids=ids)
    with pytest.raises(ToolkitError, match="predict_fn"):
        accumulated_local_effects(lambda X: X.mean(dim=(1, 2)), X, Loudness(dom))


# -- with a real front end and classifier --------------------------------------------------
def test_ale_of_an_audio_classifier():
    from common.models.classifier import AudioClassifier

    torch.manual_seed(0)
    front_end = MelDbSpectrogram(sample_rate=8000, n_fft=256, hop_length=128, n_mels=32)
    classifier = AudioClassifier(front_end, torch.nn.Linear(32, 8), torch.nn.Linear(8, 4)).eval()
    t = torch.arange(8000) / 8000.0
    wavs = torch.stack(
        [
            (0.05 + 0.1 * i / 12) * torch.sin(2 * math.pi * (200 + 150 * i) * t) + 0.01 * torch.randn(8000)
            for i in range(12)
        ]
    )
    X = classifier.features(wavs)
    dom = SpectrogramDomain.from_front_end(classifier.front_end)
    features = build_clip_features(["band_energy_low", "loudness", "spectral_centroid"], dom)
    results = ale_for_features(classifier.predict_proba, X, features, n_intervals=4, batch_size=5)
    for result in results:
        assert result.ale.shape == (len(result.edges), 4) and np.isfinite(result.ale).all()
        assert result.intervention_max_error < 0.05
        np.testing.assert_allclose(result.ale.sum(axis=1), 0.0, atol=1e-6)


# -- outputs --------------------------------------------------------------------------------
def test_written_tables_json_and_plots(tmp_path):
    import matplotlib.image

    dom = domain()
    X = random_spectrograms(16, seed=11)
    features = build_clip_features(["band_energy_low", "spectral_centroid"], dom)
    results = ale_for_features(toy_logits, X, features, n_intervals=4)
    names = ["blues", "classical", "country"]
    importance = write_ale_results(results, tmp_path, class_names=names)

    data = json.loads((tmp_path / "ale.json").read_text())
    assert data["class_names"] == names
    assert [f["feature"] for f in data["features"]] == ["band_energy_low", "spectral_centroid"]
    np.testing.assert_allclose(data["features"][0]["ale"], results[0].ale)
    with open(tmp_path / "ale_curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(r.edges) * 3 for r in results)
    first = next(r for r in rows if r["feature"] == "band_energy_low" and r["class"] == "blues" and r["edge"] == "2")
    assert float(first["ale"]) == pytest.approx(results[0].ale[2, 0])
    with open(tmp_path / "ale_importance.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["feature"] for r in table] == ["band_energy_low", "spectral_centroid"]
    # The low band moves only class 0 (blues): 0.5 dB^-1 times its range over the clips.
    span = results[0].edges[-1] - results[0].edges[0]
    assert float(table[0]["blues"]) == pytest.approx(0.5 * span, rel=1e-4)
    assert float(table[0]["country"]) == pytest.approx(0.0, abs=1e-6)
    assert importance[0]["blues"] == pytest.approx(0.5 * span, rel=1e-4)

    for feature in ("band_energy_low", "spectral_centroid"):
        image = matplotlib.image.imread(tmp_path / f"ale_{feature}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01  # something is drawn
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files
