"""The shared audio loader: conversions that must work and inputs that must fail clearly."""

import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from common.data.audio import fix_length, load_audio
from common.errors import AudioError


def write(path, data, sr, **kw):
    sf.write(str(path), data, sr, **kw)
    return path


def test_stereo_8khz_is_mono_resampled_and_peak_normalised(tmp_path):
    t = np.arange(8000) / 8000
    left = 0.25 * np.sin(2 * np.pi * 440 * t)
    path = write(tmp_path / "stereo8k.wav", np.stack([left, -0.5 * left], axis=1), 8000)
    sig = load_audio(path, 16000)
    assert sig.ndim == 1 and sig.shape[0] == 16000  # 1 s at the recipe's rate
    assert sig.abs().max() == pytest.approx(1.0, abs=1e-4)
    spectrum = torch.fft.rfft(sig).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 2  # the tone survives resampling (1 Hz bins)


def test_fixed_length_pads_and_crops(tmp_path):
    path = write(tmp_path / "short.wav", 0.1 * np.ones(4000, dtype=np.float32), 16000)
    padded = load_audio(path, 16000, length_s=1.0)
    assert padded.shape[0] == 16000 and padded[4000:].abs().max() == 0
    cropped = load_audio(path, 16000, length_s=0.1)
    assert cropped.shape[0] == 1600
    assert fix_length(torch.ones(10), 4).tolist() == [1, 1, 1, 1]


def test_peak_normalisation_uses_absolute_maximum(tmp_path):
    path = write(tmp_path / "neg.wav", np.array([0.1, -0.5, 0.2] * 100, dtype=np.float32), 16000, subtype="FLOAT")
    sig = load_audio(path, 16000)
    assert sig.min() == pytest.approx(-1.0) and sig.max() == pytest.approx(0.4)


def test_silence_is_all_zeros_not_nan(tmp_path):
    path = write(tmp_path / "silent.wav", np.zeros(1600, dtype=np.float32), 16000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sig = load_audio(path, 16000)
    assert torch.isfinite(sig).all() and sig.abs().max() == 0
    assert any("silent" in str(w.message) for w in caught)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(AudioError, match="not found: .*nothere.wav"):
        load_audio(tmp_path / "nothere.wav", 16000)


def test_corrupt_file_names_it(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 3)
    with pytest.raises(AudioError, match="corrupt.wav.*corrupt or truncated"):
        load_audio(path, 16000)


def test_truncated_file_names_it(tmp_path):
    good = write(tmp_path / "good.wav", np.random.default_rng(0).uniform(-1, 1, 16000).astype(np.float32), 16000)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])  # cut inside the header
    with pytest.raises(AudioError, match="truncated.wav"):
        load_audio(truncated, 16000)


def test_zero_length_file_names_it(tmp_path):
    path = write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav has zero samples"):
        load_audio(path, 16000)


def test_nan_samples_name_the_file(tmp_path):
    data = np.zeros(1600, dtype=np.float32)
    data[100] = np.nan
    path = write(tmp_path / "nan.wav", data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav contains NaN"):
        load_audio(path, 16000)
