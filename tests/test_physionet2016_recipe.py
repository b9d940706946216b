"""Heart sounds: the segmentation-given encoder, the per-phase analysis, and the PhysioNet2016 recipe end to
end on synthetic phonocardiograms (both classifiers, then explain_phases.py)."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from common.analysis.cardiac_phases import (
    PHASE_DROP,
    TIME_SHARE,
    importance_per_phase,
    phase_occlusion,
    summarize_phases,
    time_per_phase,
)
from common.errors import ToolkitError
from common.models.genre_cnn import LogMelCNN
from common.models.heart import StateConditionedEncoder, states_on_frames
from tests.conftest import REPO, run_recipe

RECIPE = REPO / "recipes" / "PhysioNet2016" / "classification"


def test_the_segmentation_given_encoder_reads_the_states_as_channels():
    torch.manual_seed(0)
    encoder = StateConditionedEncoder(LogMelCNN(channels=(4, 4), in_channels=5)).eval()
    X = torch.randn(2, 16, 12)
    with pytest.raises(ToolkitError, match="given_states"):
        encoder(X)
    states = torch.tensor([[1, 1, 2, 2, 2, 3, 4, 4, 4, 4, 0, 0, 1, 1, 2, 2]] * 2)
    with encoder.given_states(states):
        out = encoder(X)
        assert out.shape == (2, 4, 4, 3)
        with encoder.given_states(states[:1]):  # one clip's states broadcast over a batch of its perturbations
            torch.testing.assert_close(encoder(X), out)
    assert encoder._states is None  # nothing outlives the block
    with encoder.given_states(torch.roll(states, 3, dims=1)):
        assert not torch.allclose(encoder(X), out)  # the states matter
    # unknown (0) is no state: the same as a zero indicator, whatever code it would otherwise be
    with torch.no_grad():
        channels = torch.zeros(2, 5, 16, 12)
        channels[:, 0] = X
        for k in range(1, 5):
            channels[:, k] = (states == k).float()[..., None]
        with encoder.given_states(states):
            expected = encoder.encoder.features(channels)
            torch.testing.assert_close(encoder(X), expected)
    with pytest.raises(ToolkitError, match="do not fit"), encoder.given_states(states[:, :5]):
        encoder(X)
    with pytest.raises(ToolkitError, match="in_channels: 5"):
        StateConditionedEncoder(LogMelCNN(channels=(4,)))


def test_states_land_on_the_frames_centres():
    states = torch.repeat_interleave(torch.tensor([1, 2, 3, 4]), 100)[None]  # 400 samples
    frames = states_on_frames(states, hop=32, n_frames=13)
    assert frames.tolist() == [[1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]]  # samples 0, 32, ..., 384


def test_phase_shares_and_the_phase_intervention():
    frame_states = torch.tensor([1, 2, 2, 2, 3, 4, 4, 4, 4, 4, 0])
    saliency = torch.zeros(11, 3)
    saliency[1:4] = 1.0  # all the positive importance in systole
    saliency[5:8] = -2.0  # negative importance counts for nothing
    saliency[10] = 5.0  # an unknown frame (padding) is no phase
    shares = importance_per_phase(saliency, frame_states)
    assert shares.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert np.allclose(time_per_phase(frame_states), [0.1, 0.3, 0.1, 0.5])
    assert np.isnan(importance_per_phase(torch.zeros(11, 3), frame_states)).all()

    # a "model" whose probability is the mean of X over systole frames: only silencing systole lowers it
    def probability(x):
        return x[:, 1:4].mean(dim=(1, 2))

    X = torch.ones(1, 11, 3)
    drops = phase_occlusion(probability, X, frame_states, torch.zeros(1, 1, 1))
    assert drops.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_the_summary_says_how_often_the_murmurs_phase_wins_and_per_unit_of_time():
    time = [0.1, 0.3, 0.1, 0.5]
    on_murmur = {"group": "abnormal, murmur in systole", "murmur": "systole", TIME_SHARE: time}
    records = [
        {**on_murmur, "m": [0.1, 0.6, 0.1, 0.2], "blind": time, PHASE_DROP: [0.0, 0.5, 0.0, 0.1]},
        {**on_murmur, "m": [0.1, 0.35, 0.1, 0.45], "blind": time, PHASE_DROP: [0.0, 0.2, 0.0, 0.3]},
        {"group": "normal", "murmur": None, TIME_SHARE: time, "m": time, "blind": time, PHASE_DROP: [0] * 4},
    ]
    rows = {(r["group"], r["importance"]): r for r in summarize_phases(records, ["m", "blind"])}
    m = rows[("abnormal, murmur in systole", "m")]
    assert m["windows"] == 2 and m["murmur phase holds most"] == 0.5 and m["murmur phase is top"] == 0.5
    assert m["top per time"] == 1.0  # 0.35 of the importance in 0.3 of the time is still systole's densest
    blind = rows[("abnormal, murmur in systole", "blind")]
    assert blind["murmur phase holds most"] == 0.0 and blind["top per time"] in (0.0, 1.0)
    drop = rows[("abnormal, murmur in systole", "phase occlusion (drop in log-odds)")]
    assert drop["murmur phase is top"] == 0.5 and drop["murmur phase holds most"] == ""
    assert rows[("normal", "m")]["murmur phase holds most"] == ""
    assert rows[("normal", "share of time")]["systole"].startswith("0.300")


@pytest.fixture(scope="module")
def heart_sounds(tmp_path_factory):
    from common.data.synthetic.heart_sounds import make_heart_sounds

    out = tmp_path_factory.mktemp("heart_sounds")
    make_heart_sounds(out, n_normal=10, n_abnormal=10, duration_s=(5.0, 8.0), seed=0)
    return out


TINY = ["--channels", "[4, 8]", "--head_hidden", "8", "--batch_size", "8", "--segment_hop_s", "5.0"]


@pytest.mark.parametrize("hparams", ["cnn.yaml", "cnn_segmented.yaml"])
def test_the_recipe_trains_tests_and_explains_per_phase(heart_sounds, tmp_path, hparams):
    out = tmp_path / "run"
    common = ["--data_folder", heart_sounds, "--output_folder", out, *TINY]
    run_recipe(RECIPE / "train.py", RECIPE / "hparams" / hparams, *common, "--number_of_epochs", "2")
    result = json.loads((out / "test_results.json").read_text())
    test = json.loads((out / "manifest" / "test.json").read_text())
    assert sum(map(sum, result["confusion_matrix"])) == len(test)  # one decision per recording
    assert result["n_segments"] == sum(max(1, int((e["duration"] - 4.5) // 5) + 1) for e in test.values())
    splits = [set(json.loads((out / "manifest" / f"{s}.json").read_text())) for s in ("train", "valid", "test")]
    assert not (splits[0] & splits[2] or splits[0] & splits[1])
    run_recipe(RECIPE / "train.py", RECIPE / "hparams" / hparams, *common, "--test_only")
    assert json.loads((out / "test_results.json").read_text())["acc"] == result["acc"]

    explained = tmp_path / "explained"
    run_recipe(
        RECIPE / "explain_phases.py",
        RECIPE / "hparams" / hparams,
        *["--data_folder", heart_sounds, "--output_folder", explained, *TINY],
        *["--classifier_source", out / "save", "--n_windows", "3", "--n_examples", "2", "--shap_samples", "40"],
    )
    windows = json.loads((explained / "windows.json").read_text())
    assert len(windows) == 3
    for w in windows:
        assert sum(w[TIME_SHARE]) == pytest.approx(1.0)
        for method in ("input_magnitude", "random"):
            assert sum(w[method]) == pytest.approx(1.0)
        for method in ("kernel_shap", "occlusion"):  # NaN: no positive importance (a saturated tiny model)
            assert np.isnan(w[method]).all() or sum(w[method]) == pytest.approx(1.0)
        assert 0.0 <= w["p_abnormal"] <= 1.0 and w["group"].split(",")[0] == w["class"]
        # the input-magnitude control follows the sound: a heart sound (S1 or S2) is its densest phase in time
        density = np.array(w["input_magnitude"]) / np.array(w[TIME_SHARE])
        assert density.argmax() in (0, 2)
    rows = list(csv.DictReader(open(explained / "importance_per_phase.csv")))
    assert {r["importance"] for r in rows} >= {"kernel_shap", "occlusion", "share of time"}
    examples = sorted((explained / "examples").iterdir())
    assert len(examples) == 2
    for folder in examples:
        x, sr = sf.read(folder / "input.wav")
        y, _ = sf.read(folder / "shap_weighted.wav")
        assert sr == 2000 and len(x) == len(y) == 10000 and np.all(np.abs(y) <= np.abs(x) + 1e-4)
        assert (folder / "phases.png").stat().st_size > 10_000


class MurmurBandDetector(torch.nn.Module):
    """A known model: the abnormal logit is the mean log1p level in the murmur band (150-450 Hz)."""

    def __init__(self, bin_frequencies):
        super().__init__()
        self.register_buffer("band", ((bin_frequencies >= 150) & (bin_frequencies < 450)).float())

    def forward(self, X):
        level = (X * self.band).sum(-1) / self.band.sum()  # (B, T)
        return level.mean(-1, keepdim=True)  # (B, 1)


@pytest.mark.parametrize("murmur", ["systole", "diastole"])
def test_kernel_shap_per_phase_finds_the_murmur_a_known_model_uses(murmur):
    """With a model that by construction reads only the murmur band, Kernel SHAP over 80 ms segments, put on
    the frames with the window's states, must put most of its importance on the murmur's phase, and beat the
    input-magnitude control there (which follows S1 and S2): a misaligned state track or importance fails."""
    from common.data.synthetic.heart_sounds import synthesize_pcg
    from common.features import Log1pSpectrogram
    from common.interpreters.lime_shap import KernelShapInterpreter
    from common.interpreters.segments import SegmentsOfDuration
    from common.models import AudioClassifier
    from common.models.genre_cnn import GenreHead

    front_end = Log1pSpectrogram(sample_rate=2000, n_fft=256, win_length=128, hop_length=16)
    head = GenreHead(1, 2, hidden=0, dropout=0.0)
    with torch.no_grad():
        head.layers[-1].weight.copy_(torch.tensor([[-20.0], [20.0]]))
        head.layers[-1].bias.zero_()
    model = AudioClassifier(front_end, MurmurBandDetector(front_end.bin_frequencies()), head).eval()
    wave, states = synthesize_pcg(5.0, murmur=murmur, seed=4)
    X = model.features(torch.from_numpy(wave)[None])
    frames = states_on_frames(torch.from_numpy(states.astype(np.int64))[None], front_end.hop, X.shape[1])[0]
    shap = KernelShapInterpreter(
        model, components=SegmentsOfDuration(80 * front_end.frame_rate / 1000), n_samples=300, output="logit", top_k=0
    )
    shares = importance_per_phase(shap.attribute(X, torch.tensor([1]))[0], frames)
    control = importance_per_phase((X - model.silence(X)).abs()[0], frames)
    k = ["S1", "systole", "S2", "diastole"].index(murmur)
    time = time_per_phase(frames)
    assert shares[k] > 0.5 and shares[k] / time[k] > 1.2 * control[k] / time[k]
