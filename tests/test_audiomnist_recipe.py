"""AudioMNIST's networks and inputs (Becker et al. 2018) and the classification recipe end to end on
espeak-ng spoken digits: AudioNet for the digit, AlexNet for the speaker's gender."""

import json

import numpy as np
import pytest
import torch

from common.features import LinearDbSpectrogram
from common.models.audiomnist import (
    AlexNetEncoder,
    AudioNetEncoder,
    DenseHead,
    PercentileNormalizedWaveform,
    RelativeToMax,
    alexnet_flat_size,
)
from common.training.placement import RandomPlacement
from tests.conftest import REPO, run_recipe

RECIPE = REPO / "recipes" / "AudioMNIST" / "classification"


def test_the_networks_have_the_papers_shapes():
    wav = torch.randn(2, 8000)
    assert AudioNetEncoder()(wav).shape == (2, 128 * 125)  # six halvings of 8000 samples, 128 channels
    convs = [m for m in AudioNetEncoder().modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.out_channels for c in convs] == [100, 64, 128, 128, 128, 128] and {c.kernel_size for c in convs} == {(3,)}
    # AlexNet: 256 x 5 x 5 after conv5 both on the authors' 227 x 227 crop and on the 229 x 228 grid here
    assert AlexNetEncoder()(torch.randn(1, 227, 227)).shape == (1, 6400)
    assert AlexNetEncoder()(torch.randn(1, 229, 228)).shape == (1, 6400)
    assert alexnet_flat_size(LinearDbSpectrogram(), 1.0) == 6400
    head = DenseHead(6400, 10, hidden=(1024, 1024))
    assert [m.out_features for m in head.modules() if isinstance(m, torch.nn.Linear)] == [1024, 1024, 10]


def test_alexnet_sees_db_below_the_clips_maximum_on_the_papers_grid():
    fe = LinearDbSpectrogram()
    t = torch.arange(8000) / 8000
    X = fe(0.3 * torch.sin(2 * np.pi * 1000 * t)[None])
    assert X.shape == (1, 229, 228) and float(X.max() - X.min()) == pytest.approx(80.0)  # floored top_db below
    peak = X[0, 100].argmax()
    assert abs(float(fe.bin_frequencies()[peak]) - 1000.0) < 8000 / 455  # within one bin of the tone
    assert torch.equal(fe.silence(X), X.amin(dim=(1, 2), keepdim=True))
    # the network's input is relative to the clip's maximum (ref=np.max): 0 dB at the peak, level-free
    seen = RelativeToMax()(X)
    assert float(seen.max()) == 0.0 and float(seen.min()) == pytest.approx(-80.0)
    louder = RelativeToMax()(fe(10 * 0.3 * torch.sin(2 * np.pi * 1000 * t)[None]))
    audible = seen > -60  # float32 STFT noise sits near the floor
    assert torch.allclose(louder[audible], seen[audible], atol=1e-3)
    assert isinstance(AlexNetEncoder().relative, RelativeToMax)


def test_the_waveform_is_divided_by_its_95th_percentile_as_the_authors_do():
    x = np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32)
    expected = x / (np.percentile(x, 95, axis=-1, keepdims=True) + 0.001)
    assert np.allclose(PercentileNormalizedWaveform()(torch.from_numpy(x)).numpy(), expected, rtol=1e-4)


def test_random_placement_moves_the_recording_intact_into_its_padding():
    wavs = torch.zeros(64, 100)
    wavs[:, :30] = torch.arange(1, 31.0)
    moved, lens = RandomPlacement(torch.Generator().manual_seed(0))(wavs, torch.ones(64))
    starts = (moved != 0).int().argmax(-1)
    assert torch.equal(lens, torch.ones(64)) and starts.max() <= 70
    for clip, start in zip(moved, starts, strict=True):
        assert torch.equal(clip[start : start + 30], wavs[0, :30]) and clip.count_nonzero() == 30
    assert len(set(starts.tolist())) > 20  # spread over the padding, not one fixed shift


def test_waveform_relevance_moves_to_the_grid_whole_and_where_the_input_sounds():
    from common.analysis.relevance_bands import relevance_per_band, waveform_relevance_on_grid

    fe = LinearDbSpectrogram()
    t = torch.arange(8000) / 8000
    wav = (torch.sin(2 * np.pi * 300 * t) * (t < 0.5) + torch.sin(2 * np.pi * 3000 * t) * (t >= 0.5))[None]
    early, late = torch.zeros(1, 8000), torch.zeros(1, 8000)
    early[0, 1000:3000], late[0, 5000:7000] = 1.0, 1.0  # relevance while the 300 Hz tone sounds / the 3 kHz one
    grids = torch.cat([waveform_relevance_on_grid(r, wav, fe.n_fft, fe.hop) for r in (early, late)])
    assert grids.shape == (2, 229, 228)
    torch.testing.assert_close(grids.flatten(1).sum(1), torch.tensor([2000.0, 2000.0]), rtol=1e-4, atol=1e-2)
    shares = relevance_per_band(grids, fe.bin_frequencies())  # bands 0-250-500-1000-2000-4000 Hz
    torch.testing.assert_close(shares.sum(1), torch.ones(2))
    assert float(shares[0, 1]) > 0.99 and float(shares[1, 4]) > 0.99
    assert torch.isnan(relevance_per_band(torch.zeros(1, 229, 228), fe.bin_frequencies())).all()  # nothing to share


def check_explanations(out, n_examples, methods):
    import csv

    import soundfile as sf

    every = list(csv.DictReader(open(out / "relevance_per_band.csv")))
    assert {r["method"] for r in every} == set(methods)
    rows = [r for r in every if r["method"] == "lrp"]
    assert [r["band (Hz)"] for r in rows] == ["0-250", "250-500", "500-1000", "1000-2000", "2000-4000"]
    assert sum(float(r["share of positive relevance"]) for r in rows) == pytest.approx(1.0, abs=1e-3)
    # the synthetic digits say where the speech is: every method's share inside it, and the time it spans
    speech = {
        r["relevance"]: float(r["share inside the speech"])
        for r in csv.DictReader(open(out / "relevance_in_speech.csv"))
    }
    assert set(speech) == {*methods, "share of time (a map flat in time)"}
    assert 0.0 < speech["share of time (a map flat in time)"] < 1.0
    assert speech["input_magnitude"] > 0.9  # the silence around the speech is silent
    examples = sorted((out / "examples").iterdir())
    assert len(examples) == n_examples
    for folder in examples:
        x, sr = sf.read(folder / "input.wav")
        y, _ = sf.read(folder / "relevance_weighted.wav")
        assert sr == 8000 and len(x) == len(y) == 8000
        assert np.abs(y).max() > 0 and np.all(np.abs(y) <= np.abs(x) + 1e-4)  # the input, weighted by [0, 1]
        assert (folder / "relevance.png").stat().st_size > 0


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from tests.test_audiomnist_data import need_espeak

    need_espeak()
    from common.data.synthetic.spoken_digits import make_spoken_digits

    out = tmp_path_factory.mktemp("spoken_digits")
    make_spoken_digits(out, n_speakers=6, repetitions=1, seed=0)
    return out


def check_run(out, n_classes):
    result = json.loads((out / "test_results.json").read_text())
    assert len(result["confusion_matrix"]) == n_classes
    test = json.loads((out / "manifest" / "test.json").read_text())
    assert sum(map(sum, result["confusion_matrix"])) == len(test)
    speakers = {
        s: {e["speaker"] for e in json.loads((out / "manifest" / f"{s}.json").read_text()).values()}
        for s in ("train", "valid", "test")
    }
    assert not (speakers["train"] & speakers["test"] or speakers["train"] & speakers["valid"])
    return result


def test_audionet_digit_recipe_trains_then_test_only_reproduces(digits, tmp_path):
    out = tmp_path / "audionet"
    args = ["--data_folder", digits, "--output_folder", out, "--split", "balanced", "--batch_size", "4"]
    tiny = ["--channels", "[4, 4, 8, 8, 8, 8]", "--head_hidden", "[16, 8]"]
    run_recipe(RECIPE / "train.py", RECIPE / "hparams" / "audionet.yaml", *args, *tiny, "--number_of_epochs", "2")
    first = check_run(out, 10)
    run_recipe(RECIPE / "train.py", RECIPE / "hparams" / "audionet.yaml", *args, *tiny, "--test_only")
    again = json.loads((out / "test_results.json").read_text())
    assert again["acc"] == first["acc"] and again["loss"] == pytest.approx(first["loss"], rel=1e-5)
    state = torch.load(next((out / "save").glob("CKPT+*")) / "embedding_model.ckpt", weights_only=True)
    assert [v.shape[0] for k, v in state.items() if k.endswith("weight")] == [4, 4, 8, 8, 8, 8]
    # LRP reaches the waveform through the flattening encoder: one relevance per sample
    tiny_sizes = {"channels": [4, 4, 8, 8, 8, 8], "head_hidden": [16, 8]}
    relevance, X, _ = lrp_of_trained(RECIPE / "hparams" / "audionet.yaml", out, digits, **tiny_sizes)
    assert relevance.shape == X.shape == (4, 8000) and bool(torch.isfinite(relevance).all())
    assert float(relevance.abs().sum()) > 0
    explained = tmp_path / "explained"
    run_recipe(
        RECIPE / "explain_lrp.py",
        RECIPE / "hparams" / "audionet.yaml",
        *["--data_folder", digits, "--output_folder", explained, "--split", "balanced", *tiny],
        *["--classifier_source", out / "save", "--n_examples", "2", "--batch_size", "8"],
    )
    check_explanations(explained, 2, ["lrp", "input_magnitude"])


def test_alexnet_gender_recipe_runs_on_the_spectrogram(digits, tmp_path):
    out = tmp_path / "alexnet"
    run_recipe(
        RECIPE / "train.py",
        RECIPE / "hparams" / "alexnet.yaml",
        *["--data_folder", digits, "--output_folder", out, "--split", "balanced", "--task", "gender"],
        *["--batch_size", "4", "--head_hidden", "[16]", "--number_of_epochs", "1"],
    )
    check_run(out, 2)
    labels = (out / "save" / "label_encoder.txt").read_text()
    assert "'male'" in labels and "'female'" in labels
    # LRP on the spectrogram network: relevance like X, summing to the target's logit (the clip's maximum
    # passes relevance unchanged; were it not detached, the sum would be 0)
    explained = tmp_path / "explained"
    run_recipe(
        RECIPE / "explain_lrp.py",
        RECIPE / "hparams" / "alexnet.yaml",
        *["--data_folder", digits, "--output_folder", explained, "--split", "balanced", "--task", "gender"],
        *["--head_hidden", "[16]", "--classifier_source", out / "save", "--n_examples", "1", "--batch_size", "8"],
    )
    check_explanations(explained, 1, ["lrp", "saliency", "integrated_gradients", "input_magnitude"])
    relevance, X, logit = lrp_of_trained(
        RECIPE / "hparams" / "alexnet.yaml", out, digits, task="gender", head_hidden=[16]
    )
    assert relevance.shape == X.shape == (4, 229, 228)
    torch.testing.assert_close(relevance.flatten(1).sum(1), logit, rtol=0.05, atol=0.05)


def lrp_of_trained(hparams_file, out, data, **overrides):
    """(relevance, X, target logit) of the toolkit's LRP (epsilon_gamma_box) on 4 test clips of a trained run,
    its biases and BatchNorm shifts set to 0."""
    from common.data.audio import load_audio
    from common.interpreters import import_for
    from common.models.pretrained import load_classifier
    from common.recipe import load_hparams
    from common.registry import INTERPRETERS

    hp = load_hparams(
        hparams_file, {"data_folder": str(data), "output_folder": str(out), "split": "balanced", **overrides}
    )
    model = hp["model"].eval()
    load_classifier(model, out / "save", out / "collect")
    test = list(json.loads((out / "manifest" / "test.json").read_text()).values())[:4]
    X = model.features(torch.stack([load_audio(e["wav"], 8000, 1.0) for e in test]))
    with torch.no_grad():  # no bias or shift takes relevance: it is conserved, the sum is the target's logit
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)):
                module.bias.zero_()
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.zero_()
    target = model.logits(X).argmax(-1)
    import_for("lrp")
    relevance = INTERPRETERS.build("lrp", model, composite="epsilon_gamma_box").attribute(X, target)
    return relevance, X, model.logits(X).gather(1, target[:, None]).squeeze(1).detach()
