"""Synthetic sound scenes whose ground truth is known.

Each class is a recognisable time-frequency pattern (harmonic stack, chirp,
click train, amplitude-modulated noise band, ...). A clip places one event of
its class at a random time over background noise plus distractor events (of
kinds no class uses) at a chosen SNR. Per clip the ground truth is stored in
``ground_truth/<stem>.npz``: the class event's own waveform as mixed in
(``event``), and its time-frequency mask (``mask``, (time, freq)) on the
classifier's STFT grid (``n_fft``, ``hop``, ``win`` in samples also stored):
the bins where the event dominates everything else (``dominance_mask``);
``common.data.synthetic.ground_truth`` reads it back onto a classifier's grid.

The folder has the ESC-50 layout (audio/*.wav, meta/esc50.csv with folds
1..5), so every ESC-50 recipe runs on it unchanged. Deterministic by seed.
"""

import csv
import io
from pathlib import Path

import numpy as np
import soundfile as sf

from common.data.synthetic.signals import band_noise, envelope, pink_noise, rms, stft_magnitude, tone
from common.io import atomic_path, atomic_write_text


# ------------------------------------------------------------ event shapes
def harmonic_stack(rng, n, sr, f0):
    t = np.arange(n) / sr
    f = f0 * (1 + 0.01 * rng.standard_normal())
    x = sum(np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6) if k * f < sr / 2)
    return x * envelope(n, sr)


def chirp(rng, n, sr, f_start, f_end):
    t = np.arange(n) / sr
    dur = n / sr
    k = (f_end - f_start) / dur
    phase = 2 * np.pi * (f_start * t + 0.5 * k * t**2)
    return np.sin(phase) * envelope(n, sr)


def click_train(rng, n, sr, rate):
    x = np.zeros(n)
    period = int(sr / rate)
    click = np.hanning(max(8, int(0.004 * sr))) * np.sign(rng.standard_normal(max(8, int(0.004 * sr))))
    for start in range(int(rng.uniform(0, period)), n - len(click), period):
        x[start : start + len(click)] += click
    return x


def am_noise_band(rng, n, sr, lo, hi, mod_hz):
    t = np.arange(n) / sr
    return band_noise(rng, n, sr, lo, hi) * (0.5 + 0.5 * np.sin(2 * np.pi * mod_hz * t)) * envelope(n, sr)


def fm_tone(rng, n, sr, fc, depth, rate):
    t = np.arange(n) / sr
    return np.sin(2 * np.pi * fc * t + (depth / rate) * np.sin(2 * np.pi * rate * t)) * envelope(n, sr)


def tone_trill(rng, n, sr, f_low, f_high, notes_per_s):
    t = np.arange(n) / sr
    which = (np.floor(t * notes_per_s) % 2).astype(bool)
    freq = np.where(which, f_high, f_low)
    return tone(freq, sr) * envelope(n, sr)


# Class patterns: (name, generator, kwargs). Chosen to occupy distinct regions
# of the 0-8 kHz plane so that a 16 kHz classifier can separate them.
CLASS_PATTERNS = [
    ("harmonic_low", harmonic_stack, {"f0": 220.0}),
    ("up_chirp", chirp, {"f_start": 500.0, "f_end": 3500.0}),
    ("click_train", click_train, {"rate": 12.0}),
    ("am_noise_high", am_noise_band, {"lo": 4000.0, "hi": 6000.0, "mod_hz": 8.0}),
    ("fm_tone", fm_tone, {"fc": 1500.0, "depth": 300.0, "rate": 6.0}),
    ("down_chirp", chirp, {"f_start": 6000.0, "f_end": 2500.0}),
    ("trill", tone_trill, {"f_low": 2500.0, "f_high": 3200.0, "notes_per_s": 10.0}),
    ("harmonic_high", harmonic_stack, {"f0": 880.0}),
    ("am_noise_low", am_noise_band, {"lo": 300.0, "hi": 900.0, "mod_hz": 4.0}),
    ("fast_clicks", click_train, {"rate": 40.0}),
]


def _distractor(rng, n, sr):
    """Kinds no class uses: short broadband bursts and steady low hums."""
    if rng.random() < 0.5:
        return band_noise(rng, n, sr, 100, sr / 2 - 100) * np.hanning(n)
    t = np.arange(n) / sr
    return np.sin(2 * np.pi * rng.uniform(60, 140) * t) * envelope(n, sr, 0.05, 0.05)


# ------------------------------------------------------------ ground truth
def dominance_mask(event, rest, n_fft, hop, win, floor_db=-40.0):
    """Bins where the event dominates the rest and is within ``floor_db`` of its peak."""
    ev = stft_magnitude(event, n_fft, hop, win)
    other = stft_magnitude(rest, n_fft, hop, win)
    audible = 20 * np.log10(ev + 1e-12) > 20 * np.log10(ev.max() + 1e-12) + floor_db
    return ((ev > other) & audible).astype(np.uint8)


# ------------------------------------------------------------------ dataset
def make_synthetic_esc50(
    out_dir,
    n_classes=5,
    clips_per_class=20,
    duration_s=5.0,
    sample_rate=16000,
    snr_db=6.0,
    n_distractors=2,
    event_s=(0.6, 1.5),
    seed=0,
    n_fft=1024,
    hop_ms=11.6099,
    win_ms=23.2199,
):
    """Write an ESC-50-layout folder of synthetic scenes with ground truth.

    Returns the metadata rows. ``snr_db`` is the class event's power relative
    to background plus distractors, measured over the event's duration.
    """
    if not 1 <= n_classes <= len(CLASS_PATTERNS):
        raise ValueError(f"n_classes must be in 1..{len(CLASS_PATTERNS)}, got {n_classes}")
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / "meta").mkdir(parents=True, exist_ok=True)
    (out_dir / "ground_truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sample_rate))
    hop = int(round(sample_rate * hop_ms / 1000))
    win = int(round(sample_rate * win_ms / 1000))
    rows = []
    for target in range(n_classes):
        name, gen, kwargs = CLASS_PATTERNS[target]
        for k in range(clips_per_class):
            fold = k % 5 + 1
            ev_len = min(n, int(rng.uniform(*event_s) * sample_rate))
            start = int(rng.integers(0, n - ev_len + 1))
            event = np.zeros(n)
            event[start : start + ev_len] = gen(rng, ev_len, sample_rate, **kwargs)
            rest = pink_noise(rng, n) * 0.3
            for _ in range(n_distractors):
                d_len = min(n, int(rng.uniform(0.2, 0.8) * sample_rate))
                d_start = int(rng.integers(0, n - d_len + 1))
                rest[d_start : d_start + d_len] += _distractor(rng, d_len, sample_rate) * rng.uniform(0.5, 1.0)
            seg = slice(start, start + ev_len)
            gain = rms(rest[seg]) / rms(event[seg]) * 10 ** (snr_db / 20)
            event *= gain
            mix = event + rest
            peak = np.abs(mix).max()
            scale = 0.9 / peak
            mix, event, rest = mix * scale, event * scale, rest * scale
            stem = f"{fold}-{900000 + target * 1000 + k}-A-{target}"
            with atomic_path(out_dir / "audio" / f"{stem}.wav", suffix=".wav") as tmp:
                sf.write(tmp, mix.astype(np.float32), sample_rate, subtype="FLOAT", format="WAV")
            mask = dominance_mask(event, rest, n_fft, hop, win)
            with atomic_path(out_dir / "ground_truth" / f"{stem}.npz", suffix=".npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez_compressed(
                        f,
                        event=event.astype(np.float32),
                        mask=mask,
                        sample_rate=sample_rate,
                        n_fft=n_fft,
                        hop=hop,
                        win=win,
                        onset_s=start / sample_rate,
                        offset_s=(start + ev_len) / sample_rate,
                    )
            rows.append(
                {
                    "filename": f"{stem}.wav",
                    "fold": fold,
                    "target": target,
                    "category": name,
                    "esc10": "False",
                    "src_file": 900000 + target * 1000 + k,
                    "take": "A",
                }
            )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "meta" / "esc50.csv", buf.getvalue())
    return rows
