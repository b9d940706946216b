"""audioLIME: separators whose stems sum to the clip (oracle, HPSS, NMF, Open-Unmix through a locally built
model), LIME and Kernel SHAP over sources on a model whose evidence is known, and the recipe end to end."""

import csv
import urllib.error

import numpy as np
import pytest
import soundfile as sf
import torch

from common.errors import DataNotFoundError
from common.features import Log1pSpectrogram
from common.interpreters.sources import AudioLimeExplainer
from common.models import AudioClassifier
from common.models.genre_cnn import GenreHead
from common.models.separation import HpssSeparator, NmfSeparator, OpenUnmixSeparator, OracleSeparator, Separator
from tests.conftest import REPO, run_recipe

RATE = 8000


def tone(freq, n=RATE, start=0, stop=None):
    t = torch.arange(n) / RATE
    wave = torch.sin(2 * np.pi * freq * t)
    gate = torch.zeros(n)
    gate[start : stop or n] = 1.0
    return 0.5 * wave * gate


def clicks(n=RATE, every=1000):
    wave = torch.zeros(n)
    wave[::every] = 1.0
    return wave


def test_hpss_puts_a_sustained_tone_in_harmonic_and_clicks_in_percussive():
    wav = tone(440) + clicks()
    stems, names = HpssSeparator(n_fft=512, hop=128)(wav, RATE)
    assert names == ["harmonic", "percussive"] and stems.shape == (2, RATE)
    torch.testing.assert_close(stems.sum(0), wav, atol=2e-3, rtol=0)  # soft masks that sum to 1
    harmonic, percussive = stems
    assert float((harmonic * tone(440)).sum()) > 0.8 * float((tone(440) ** 2).sum())
    at_clicks = torch.zeros(RATE, dtype=torch.bool)
    at_clicks[::1000] = True
    assert float(percussive[at_clicks].abs().mean()) > 3 * float(harmonic[at_clicks].abs().mean())


def test_nmf_parts_sum_to_the_clip_and_split_two_notes():
    low, high = tone(300, stop=RATE // 2), tone(2000, start=RATE // 2)
    stems, names = NmfSeparator(n_components=2, n_fft=512, hop=128)(low + high, RATE)
    assert names == ["nmf_0", "nmf_1"]
    torch.testing.assert_close(stems.sum(0), low + high, atol=2e-3, rtol=0)
    # each note lands in one part
    overlap = torch.tensor([[float((s * note).sum() / (note * note).sum()) for note in (low, high)] for s in stems])
    assert sorted(overlap.argmax(0).tolist()) == [0, 1] and float(overlap.max(0).values.min()) > 0.8


def test_the_oracle_reads_the_generators_stems_of_the_segment_scaled_to_the_clip(tmp_path):
    from common.data.audio import load_audio
    from common.data.synthetic.music import make_synthetic_gtzan

    make_synthetic_gtzan(tmp_path, n_per_genre=1, duration_s=4.0, genres=("metal",), write_stems=True)
    clip = {"clip_id": "metal.00000", "start_s": 1.0, "duration_s": 2.0}
    wav = load_audio(tmp_path / "genres" / "metal" / "metal.00000.wav", 22050, start_s=1.0, duration_s=2.0)
    stems, names = OracleSeparator(tmp_path / "stems")(wav, 22050, clip)
    assert names == ["bass", "drums", "tremolo_picking"] and stems.shape == (3, len(wav))
    noise = wav - stems.sum(0)  # the noise floor is left to the residual
    assert float(noise.pow(2).mean()) < 0.01 * float(wav.pow(2).mean())
    with pytest.raises(DataNotFoundError, match="--write_stems"):
        OracleSeparator(tmp_path / "none")(wav, 22050, clip)


def tiny_open_unmix(targets=("vocals", "drums", "bass", "other")):
    from openunmix.model import OpenUnmix
    from openunmix.model import Separator as UmxSeparator

    torch.manual_seed(0)
    models = {t: OpenUnmix(nb_bins=257, nb_channels=2, hidden_size=8, nb_layers=1) for t in targets}
    return UmxSeparator(models, sample_rate=16000, n_fft=512, n_hop=128, nb_channels=2).eval()


def test_open_unmix_runs_through_its_own_separator_interface_and_says_so_offline(monkeypatch):
    wav = tone(440) + 0.3 * clicks()
    stems, names = OpenUnmixSeparator(separator=tiny_open_unmix())(wav, RATE)
    assert names == ["vocals", "drums", "bass", "other"] and stems.shape == (4, RATE)
    assert torch.isfinite(stems).all() and float(stems.abs().sum()) > 0
    import openunmix

    def offline(**kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(openunmix, "umxl", offline)
    with pytest.raises(DataNotFoundError, match="umxl weights could not be downloaded.*hpss / nmf / oracle"):
        OpenUnmixSeparator(model="umxl")(wav, RATE)


class FixedStems(Separator):
    """Known stems: a 3 kHz tone (the evidence), a 500 Hz tone and clicks."""

    def separate(self, wav, sample_rate, clip):
        return torch.stack([tone(3000), tone(500), 0.3 * clicks()]), ["evidence", "low", "clicks"]


class BandLevel(torch.nn.Module):
    """A known model: the class-1 logit is the mean log1p level of the 2.5-3.5 kHz bins."""

    def __init__(self, freqs):
        super().__init__()
        self.register_buffer("band", ((freqs > 2500) & (freqs < 3500)).float())

    def forward(self, X):
        return ((X * self.band).sum(-1) / self.band.sum()).mean(-1, keepdim=True)


def band_model():
    front_end = Log1pSpectrogram(sample_rate=RATE, n_fft=512, win_length=64, hop_length=16)
    head = GenreHead(1, 2, hidden=0, dropout=0.0)
    with torch.no_grad():
        head.layers[-1].weight.copy_(torch.tensor([[-10.0], [10.0]]))
        head.layers[-1].bias.zero_()
    return AudioClassifier(front_end, BandLevel(front_end.bin_frequencies()), head).eval()


@pytest.mark.parametrize("estimator", ["lime", "kernel_shap"])
def test_the_source_the_model_reads_ranks_first_and_is_what_you_hear(estimator):
    model = band_model()
    wav = tone(3000) + tone(500) + 0.3 * clicks()
    explainer = AudioLimeExplainer(model, separator=FixedStems(), estimator=estimator, n_samples=64, output="logit")
    (result,) = explainer.attribute_sources(wav[None], torch.tensor([1]))
    assert result["names"] == ["evidence", "low", "clicks"]
    # the clicks are broadband, so some of them is in the band too: second, far behind
    assert int(result["weights"].argmax()) == 0 and float(result["weights"][0]) > 3 * float(
        result["weights"][1:].abs().max()
    )
    torch.testing.assert_close(result["explanation_wav"], tone(3000))  # top_k 1: the evidence alone
    if estimator == "kernel_shap":  # efficiency: the weights add up to f(clip) - f(residual only)
        logit = model.logits(model.features(wav[None]))[0, 1]
        empty = model.logits(model.features(result["residual"][None]))[0, 1]
        assert float(result["weights"].sum()) == pytest.approx(float(logit - empty), rel=1e-3)
    maps = explainer.attribute(wav[None], torch.tensor([1]))
    assert maps.shape == model.features(wav[None]).shape
    freqs = model.front_end.bin_frequencies()
    # each bin carries the weight of the source that dominates it: the evidence's at 3 kHz, the low tone's at 500 Hz
    evidence, low = (maps[0][:, int((freqs - f).abs().argmin())].mean() for f in (3000, 500))
    torch.testing.assert_close(evidence, result["weights"][0], rtol=0.05, atol=0.0)
    torch.testing.assert_close(low, result["weights"][1], rtol=0.0, atol=0.05)


def test_the_recipe_explains_with_sources_and_compares_with_the_grid(tmp_path):
    from common.data.synthetic.music import make_synthetic_gtzan

    data = tmp_path / "music"
    make_synthetic_gtzan(data, n_per_genre=4, duration_s=3.0, genres=("blues", "metal"), write_stems=True)
    lime_shap = REPO / "recipes" / "GTZAN" / "lime_shap"
    tiny = ["--channels", "[4, 8]", "--head_hidden", "8", "--out_n_neurons", "2", "--genres", "[blues, metal]"]
    run = tmp_path / "classifier"
    run_recipe(
        lime_shap / "train_classifier.py",
        lime_shap / "hparams" / "classifier_cnn.yaml",
        *["--data_folder", data, "--output_folder", run, "--number_of_epochs", "1", "--batch_size", "4", *tiny],
    )
    recipe = REPO / "recipes" / "GTZAN" / "audiolime"
    for separator in ("oracle", "hpss"):
        out = tmp_path / separator
        run_recipe(
            recipe / "explain_audiolime.py",
            recipe / "hparams" / f"{separator}.yaml",
            *["--data_folder", data, "--output_folder", out, "--classifier_source", run / "save", *tiny],
            *["--n_clips", "2", "--n_examples", "1", "--grid_samples", "20"],
        )
        rows = list(csv.DictReader(open(out / "sources.csv")))
        assert len(rows) == 2 and all(r["discriminative"] in ("slide_guitar", "tremolo_picking") for r in rows)
        summary = {r["components"]: r for r in csv.DictReader(open(out / "rank1.csv"))}
        assert set(summary) == {f"{separator} sources (lime)", "time x mel grid LIME", "loudest source (control)"}
        assert all(r["segments"] == "2" for r in summary.values())
        (example,) = (out / "examples").iterdir()
        names = sorted(p.stem for p in (example / "sources").glob("*.wav"))
        own = "slide_guitar" if example.name.startswith("blues") else "tremolo_picking"
        assert names == (["bass", "drums", own] if separator == "oracle" else ["harmonic", "percussive"])
        weights = rows[0]["sources by weight"].split(", ")
        top = weights[0].split(" ")[0]
        heard, _ = sf.read(example / "explanation.wav")
        source, _ = sf.read(example / "sources" / f"{top}.wav")
        if float(weights[0].split(" ")[1]) > 0:  # the explanation is the top source, to listen to
            np.testing.assert_allclose(heard, source, atol=1e-4)
        assert (example / "source_weights.png").stat().st_size > 5000
