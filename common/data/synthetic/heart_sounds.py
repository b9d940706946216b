"""Synthetic phonocardiograms in the PhysioNet/CinC 2016 layout, with the murmur's phase known (offline data).

``make_heart_sounds(out_dir, n_normal, n_abnormal)`` writes what
``common.data.physionet2016`` reads from the real challenge:

* ``out_dir/training-a/<name>.wav`` (2 kHz, 16-bit mono), ``<name>.hea``
  (a WFDB header), ``REFERENCE.csv`` (``name,label``: -1 normal, 1 abnormal)
  and ``RECORDS``;
* ``out_dir/annotations/hand_corrected/training-a_StateAns/<name>_StateAns.mat``:
  the segmentation as the challenge gives it, a cell array ``state_ans`` of
  (1-based sample, state) rows, each the start of ``S1``, ``systole``,
  ``S2`` or ``diastole``;
* ``out_dir/ground_truth.json``: per recording its label and where its
  murmur is (``systole``, ``diastole`` or null), which the real data set does
  not have: the answer to "does the model use the murmur?".

A recording (``synthesize_pcg``): a heart rate drawn per recording (55-100
bpm) with a few per cent beat-to-beat variation; S1 and S2 as damped
low-frequency transients (S1 30-60 Hz and longer, S2 50-100 Hz and shorter,
each a sum of two decaying sinusoids with random phase); systole lasting
about 0.3 s, shorter at a faster rate; a low noise floor; and, in every class
alike, 0-3 broadband "friction" bursts at random times (artefacts that carry no
label). Abnormal recordings add, in every beat, a murmur: band-limited noise
(a band of 150-450 Hz) with a crescendo-decrescendo envelope filling systole
(as aortic stenosis), or a decrescendo over the first 60 % of diastole (as
aortic regurgitation). The murmur's peak sits 8-16 dB below S1's, so the
evidence is not the loudest thing in the clip and a loudness detector points
at S1/S2, not at it. Deterministic by seed.
"""

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfilt

from common.errors import DataError
from common.io import atomic_path, atomic_write_text

SAMPLE_RATE = 2000  # the challenge's rate
STATES = ("S1", "systole", "S2", "diastole")  # the codes 1-4 of a per-sample state array (0: unknown)
MURMUR_PHASES = ("systole", "diastole")


def _transient(rng, n, fs, freq_range, decay_s):
    """A damped transient: two decaying sinusoids in ``freq_range`` Hz with a short attack, peak 1."""
    t = np.arange(n) / fs
    wave = np.zeros(n)
    for _ in range(2):
        f = rng.uniform(*freq_range)
        wave += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    envelope = (1 - np.exp(-t / 0.006)) * np.exp(-t / decay_s)
    wave *= envelope
    return wave / max(np.abs(wave).max(), 1e-9)


def _band_noise(rng, n, fs, band):
    sos = butter(4, [band[0], band[1]], btype="bandpass", fs=fs, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n + 200))[200:]
    return noise / max(np.abs(noise).max(), 1e-9)


def synthesize_pcg(duration_s, murmur=None, seed=0, fs=SAMPLE_RATE):
    """(waveform float32 peak 0.9, states int8 per sample: 1 S1, 2 systole, 3 S2, 4 diastole) of one recording.

    ``murmur``: None (normal), ``systole`` or ``diastole`` (abnormal, see the module doc).
    """
    if murmur not in (None, *MURMUR_PHASES):
        raise DataError(f"murmur={murmur!r}: use None, 'systole' or 'diastole'")
    # one generator each for the heart, the murmur and the rest of the scene, so the same seed with and
    # without a murmur is the same heart in the same room: the murmur is the only difference
    rng, murmur_rng, scene_rng = (np.random.default_rng([seed, part]) for part in range(3))
    n = int(round(duration_s * fs))
    rate_bpm = rng.uniform(55, 100)
    murmur_db = murmur_rng.uniform(-16, -8)  # the murmur's peak relative to S1's
    band_lo = murmur_rng.uniform(150, 250)
    band = (band_lo, band_lo + murmur_rng.uniform(120, 200))
    s2_gain = rng.uniform(0.5, 0.85)
    # the recording starts somewhere inside a cycle: synthesize from one cycle earlier and crop
    lead = int(rng.uniform(0.2, 1.2) * fs)
    total = n + lead
    wave = np.zeros(total)
    states = np.full(total, 4, dtype=np.int8)  # before the first S1: the end of a diastole
    t0 = 0
    while t0 < total:
        rr = 60.0 / rate_bpm * (1 + 0.04 * rng.standard_normal())
        rr_n = int(rr * fs)
        s1_n = int(rng.uniform(0.10, 0.14) * fs)
        systole_n = int((0.30 - 0.0012 * (rate_bpm - 60) + 0.01 * rng.standard_normal()) * fs)  # S1 start to S2 start
        s2_n = int(rng.uniform(0.08, 0.11) * fs)
        s2_at = t0 + systole_n
        marks = [(t0, 1), (t0 + s1_n, 2), (s2_at, 3), (s2_at + s2_n, 4)]
        for (start, code), (end, _) in zip(marks, [*marks[1:], (t0 + rr_n, 1)], strict=True):
            states[start : min(end, total)] = code
        for at, length, freqs, decay, gain in (
            (t0, s1_n, (30, 60), 0.03, rng.uniform(0.85, 1.0)),
            (s2_at, s2_n, (50, 100), 0.02, s2_gain),
        ):
            piece = gain * _transient(rng, length, fs, freqs, decay)
            stop = min(at + length, total)
            if stop > at:
                wave[at:stop] += piece[: stop - at]
        if murmur is not None:
            if murmur == "systole":
                start, length = t0 + s1_n, systole_n - s1_n
                shape = 1 - np.abs(np.linspace(-1, 1, max(length, 2)))  # crescendo-decrescendo
            else:
                start, length = s2_at + s2_n, int(0.6 * (rr_n - systole_n - s2_n))
                shape = np.linspace(1, 0, max(length, 2)) ** 1.5  # decrescendo from S2
            length = max(length, 2)
            piece = 10 ** (murmur_db / 20) * shape * _band_noise(murmur_rng, length, fs, band)
            stop = min(start + length, total)
            if stop > start:
                wave[start:stop] += piece[: stop - start]
        t0 += rr_n
    wave, states = wave[lead:], states[lead:]
    wave += 10 ** (scene_rng.uniform(-34, -26) / 20) * _band_noise(scene_rng, n, fs, (20, 900))  # the floor
    for _ in range(scene_rng.integers(0, 4)):  # friction artefacts, in every class
        length = int(scene_rng.uniform(0.05, 0.2) * fs)
        at = int(scene_rng.integers(0, max(1, n - length)))
        burst = scene_rng.uniform(0.3, 0.8) * _band_noise(scene_rng, length, fs, (40, 900)) * np.hanning(length)
        wave[at : at + length] += burst
    wave *= 0.9 / max(np.abs(wave).max(), 1e-9)
    return wave.astype(np.float32), states


def state_rows(states):
    """The per-sample states as the challenge's (1-based start sample, name) rows, one per change of state."""
    change = np.flatnonzero(np.diff(states.astype(np.int16), prepend=-1))
    return [(int(i) + 1, STATES[states[i] - 1]) for i in change if states[i] > 0]


def write_state_annotation(path, states):
    """``path``: a MATLAB file holding ``state_ans``, the challenge's (sample, state) cell array."""
    from scipy.io import savemat

    rows = state_rows(states)
    cells = np.empty((len(rows), 2), dtype=object)
    for i, (sample, name) in enumerate(rows):
        cells[i, 0] = np.array([[sample]], dtype=np.float64)
        cells[i, 1] = np.array([name])
    with atomic_path(path, suffix=".mat") as tmp:
        savemat(tmp, {"state_ans": cells}, appendmat=False)


def write_wav(path, wave, fs=SAMPLE_RATE):
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, wave, fs, subtype="PCM_16", format="WAV")


def wfdb_header(name, n_samples, fs=SAMPLE_RATE):
    """A WFDB header as the challenge's: one 16-bit PCG signal stored in ``name``.wav."""
    return f"{name} 1 {fs} {n_samples}\n{name}.wav 16+44 1 16 0 0 0 0 PCG\n"


def make_heart_sounds(
    out_dir, n_normal=40, n_abnormal=40, duration_s=(8.0, 20.0), systolic_fraction=0.5, seed=0, training_set="a"
):
    """Write ``n_normal`` + ``n_abnormal`` recordings in the challenge's layout (see the module doc); returns the
    set's folder. Durations are drawn in ``duration_s``; ``systolic_fraction`` of the abnormal ones have a
    systolic murmur, the others a diastolic one."""
    out = Path(out_dir)
    folder = out / f"training-{training_set}"
    states_folder = out / "annotations" / "hand_corrected" / f"training-{training_set}_StateAns"
    folder.mkdir(parents=True, exist_ok=True)
    states_folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_systolic = int(round(systolic_fraction * n_abnormal))
    kinds = [None] * n_normal + ["systole"] * n_systolic + ["diastole"] * (n_abnormal - n_systolic)
    rng.shuffle(kinds)
    reference, truth = [], {}
    for k, murmur in enumerate(kinds, start=1):
        name = f"{training_set}{k:04d}"
        duration = float(rng.uniform(*duration_s))
        wave, states = synthesize_pcg(duration, murmur=murmur, seed=int(rng.integers(2**31)))
        write_wav(folder / f"{name}.wav", wave)
        atomic_write_text(folder / f"{name}.hea", wfdb_header(name, len(wave)))
        write_state_annotation(states_folder / f"{name}_StateAns.mat", states)
        label = -1 if murmur is None else 1
        reference.append(f"{name},{label}")
        truth[name] = {"label": "normal" if murmur is None else "abnormal", "murmur": murmur}
    atomic_write_text(folder / "REFERENCE.csv", "\n".join(reference) + "\n")
    atomic_write_text(folder / "RECORDS", "\n".join(r.split(",")[0] for r in reference) + "\n")
    atomic_write_text(out / "ground_truth.json", json.dumps(truth, indent=1) + "\n")
    return folder
