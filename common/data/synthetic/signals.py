"""Signal helpers the synthetic designs (scenes, music, soundscapes) share.

Plain numpy; a helper that draws random numbers takes the caller's
``np.random.Generator``, so a design's output depends only on its seed and on
the order of its own draws.
"""

import numpy as np


def envelope(n, sr, attack=0.01, release=0.03):
    """(n,) linear attack from 0 and release to 0 (seconds), each cut to the signal's length."""
    env = np.ones(n)
    a, r = min(n, max(1, int(attack * sr))), min(n, max(1, int(release * sr)))
    env[:a] = np.linspace(0.0, 1.0, a)
    env[n - r :] = np.minimum(env[n - r :], np.linspace(1.0, 0.0, r))
    return env


def band_limit(x, sr, lo, hi):
    """``x`` with every FFT bin outside [lo, hi] Hz zeroed."""
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    spec[(freqs < lo) | (freqs > hi)] = 0
    return np.fft.irfft(spec, len(x))


def band_noise(rng, n, sr, lo, hi):
    """White noise limited to [lo, hi] Hz, peak 1."""
    out = band_limit(rng.standard_normal(n), sr, lo, hi)
    return out / (np.abs(out).max() + 1e-9)


def pink_noise(rng, n):
    """Noise whose power falls as 1/f, unit standard deviation."""
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
    out = np.fft.irfft(spec, n)
    return out / (np.std(out) + 1e-9)


def tone(freqs, sr, phase=0.0):
    """A sine following the instantaneous frequency track ``freqs`` (Hz per sample), starting at ``phase``."""
    return np.sin(phase + 2 * np.pi * np.cumsum(freqs) / sr)


def rms(x):
    """Root mean square, never 0."""
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def stft_magnitude(x, n_fft, hop, win):
    """|STFT| on SpeechBrain's grid (centred frames, Hamming window): (time, freq)."""
    pad = n_fft // 2
    xp = np.pad(x, (pad, pad), mode="constant")
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = np.hamming(win)
    n_frames = 1 + (len(xp) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    return np.abs(np.fft.rfft(xp[idx] * window, axis=1))
