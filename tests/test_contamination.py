"""Contaminated inputs: SNRs are what they say, choices are reproducible, bad noise input is named."""

import numpy as np
import pytest
import soundfile as sf
import torch

from common.data.contamination import (
    Condition,
    NoiseFolder,
    add_at_snr,
    contaminate_batch,
    mix,
    parse_conditions,
    partners_of_other_classes,
)
from common.errors import DataError


def snr_db(clean, noise):
    return float(10 * torch.log10(clean.pow(2).mean() / noise.pow(2).mean()))


@pytest.mark.parametrize("target_snr", [-5.0, 0.0, 10.0])
def test_add_at_snr_sets_the_snr(target_snr):
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(16000, generator=g), 3 * torch.randn(16000, generator=g)
    mixed, target = add_at_snr(clean, noise, target_snr)
    assert torch.equal(target, clean)
    assert snr_db(clean, mixed - clean) == pytest.approx(target_snr, abs=1e-3)


def test_mixture_weights_and_partners_of_another_class():
    a, b = torch.ones(4), 2 * torch.ones(4)
    mixed, target = mix(a, b, (0.8, 0.2))
    assert torch.allclose(mixed, torch.full((4,), 1.2)) and torch.allclose(target, torch.full((4,), 0.8))
    partners = partners_of_other_classes({"1": "dog", "2": "dog", "3": "rain", "4": "rain"})
    assert partners == {"1": "3", "2": "3", "3": "1", "4": "1"}
    with pytest.raises(DataError, match="two classes"):
        partners_of_other_classes({"1": "dog", "2": "dog"})


def test_conditions_are_reproducible_per_clip_and_named():
    sig = torch.randn(8000)
    white = Condition("white_noise", 5.0)
    first, _ = white.apply("clip-1", sig)
    again, _ = white.apply("clip-1", sig)
    other, _ = white.apply("clip-2", sig)
    assert torch.equal(first, again) and not torch.equal(first, other)
    names = [c.name for c in parse_conditions(["clean", "mixture", "white_noise"], snrs=[0, 10])]
    assert names == ["clean", "mixture 0.8/0.2", "white noise 0 dB", "white noise 10 dB"]
    with pytest.raises(DataError, match="Unknown contamination"):
        Condition("babble")
    with pytest.raises(DataError, match="needs an SNR"):
        Condition("white_noise")


def test_noise_folder_reads_any_rate_and_names_bad_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        NoiseFolder(tmp_path / "missing", 16000)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No .wav"):
        NoiseFolder(tmp_path / "empty", 16000)
    folder = tmp_path / "noise"
    folder.mkdir()
    sf.write(folder / "hum.wav", np.sin(np.arange(8000) / 5.0).astype("float32"), 8000)  # 1 s at 8 kHz
    sf.write(folder / "silence.wav", np.zeros(4000, dtype="float32"), 8000)
    noise = NoiseFolder(folder, 16000)
    assert len(noise) == 2
    seg = noise.clip_for("any", 40000)  # longer than the file: tiled
    assert seg.shape == (40000,)
    condition = Condition("noise_folder", 0.0)
    ids = [f"clip{k}" for k in range(12)]
    outcomes = set()
    for clip in ids:
        try:
            condition.apply(clip, torch.randn(16000), noise_folder=noise)
            outcomes.add("ok")
        except DataError as exc:
            assert "silent" in str(exc) and str(folder) in str(exc)
            outcomes.add("silent")
    assert outcomes == {"ok", "silent"}  # both files get used; the silent one is refused, naming the folder


def test_training_batches_mix_with_the_rolled_batch():
    wavs = torch.stack([torch.full((100,), float(k + 1)) for k in range(3)])
    mixed, clean = contaminate_batch(wavs, Condition("mixture"))
    assert torch.allclose(clean, 0.8 * wavs)
    assert torch.allclose(mixed[0], 0.8 * wavs[0] + 0.2 * wavs[2])
