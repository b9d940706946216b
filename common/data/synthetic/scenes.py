"""Synthetic sound scenes whose ground truth is known, in several designs selectable by name.

``make_synthetic_esc50(out_dir, design=NAME, ...)``; the designs (``SCENE_DESIGNS``):

* ``loud_evidence`` (the default, the original design): described below; the
  class event is the loudest thing in the scene.
* ``quiet_evidence``: the class event 10-20 dB (``distractor_db``) below loud
  distractor events, 3-5 per second (``distractors_per_s``) of kinds no class
  uses (``distractor_kinds="dense"``: bursts, hums, inharmonic tone clusters,
  octave noise bands), crowded enough that most of the plane is louder than the
  evidence; the distractor layer (background and distractors) of the k-th clip
  of every class is the same draw, so it carries no label information.
* ``clever_hans``: quiet_evidence plus a shortcut cue (a short narrow-band
  tick) in a ``cue_fraction`` of the ``cue_class``'s clips of the ``cue_folds``;
  ``OUT/shortcut_test/`` (its own ESC-50 layout, fold 5) plants it in clips of
  the other classes.
* ``conjunction``: class c is two events together, atoms c and c+1 (mod
  n_classes): each event also appears without its partner in another class.
* ``order``: classes 2j and 2j+1 hold the same two events in opposite order.

Every design after the first writes, besides ``event`` (the sum of the class's
events) and ``mask`` (by ``EVIDENCE_RULE``, stored as ``mask_rule``; the loader
recomputes it on each classifier's own grid): ``parts`` (P, samples) each
event's waveform, ``part_masks`` (P, time, freq) each event's own mask, ``part_ids`` (their patterns in ``CLASS_PATTERNS``),
``part_onset_s``/``part_offset_s``, ``part_gap_db`` (each event's level below
the distractors), ``distractor_spans`` ((m, 2) samples); clever_hans adds
``has_cue``, ``cue`` (its waveform as mixed in) and ``cue_mask`` (its
time-frequency box on the same grid).

In ``loud_evidence`` each class is a recognisable time-frequency pattern (harmonic stack, chirp,
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
from common.registry import Registry


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
def dominance_mask(event, rest, n_fft, hop, win, floor_db=-40.0, ratio_db=0.0):
    """Bins where the event is above the rest + ``ratio_db`` and within ``floor_db`` of its peak."""
    ev = stft_magnitude(event, n_fft, hop, win)
    other = stft_magnitude(rest, n_fft, hop, win)
    audible = 20 * np.log10(ev + 1e-12) > 20 * np.log10(ev.max() + 1e-12) + floor_db
    return ((20 * np.log10(ev + 1e-12) > 20 * np.log10(other + 1e-12) + ratio_db) & audible).astype(np.uint8)


# The evidence rule of the designs below (loud_evidence keeps its own, 0 dB / -40 dB): a bin is the
# event's where the event is louder than everything else in it (the ideal binary mask's 0 dB local
# criterion) and within 60 dB of its own peak. Checked by intervention on quiet_evidence with a log-mel CNN
# (each leaderboard run's evidence_bands.md, common.metrics.evidence.evidence_by_dominance): silencing the
# event's bins where it is 0-6 dB *below* the rest (the rule of earlier versions also counted them) changed
# the true class's probability no more than silencing random bins without the event, and LRP's least relevant
# half of the old mask was such bins (event 3.7 dB above the rest on average, against 17 dB for the most
# relevant half): the old mask claimed bins the model ignores (docs/leaderboards.md, quiet_evidence).
EVIDENCE_RULE = {"ratio_db": 0.0, "floor_db": -60.0}


# ------------------------------------------------------------------ dataset
SCENE_DESIGNS = Registry("scene design")


def make_synthetic_esc50(out_dir, design="loud_evidence", **options):
    """Write scenes of the named design (``SCENE_DESIGNS``) to ``out_dir``; returns the metadata rows."""
    return SCENE_DESIGNS.get(design)(out_dir, **options)


@SCENE_DESIGNS.register("loud_evidence")
def loud_evidence(
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
            rows.append(_metadata_row(stem, fold, target, name, 900000 + target * 1000 + k))
    _write_metadata(out_dir, rows)
    return rows


def _metadata_row(stem, fold, target, category, src_file):
    """One row of the ESC-50 metadata csv for a synthetic clip."""
    return {
        "filename": f"{stem}.wav",
        "fold": fold,
        "target": target,
        "category": category,
        "esc10": "False",
        "src_file": src_file,
        "take": "A",
    }


def _write_metadata(out_dir, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(out_dir) / "meta" / "esc50.csv", buf.getvalue())


# ------------------------------------------------- designs whose evidence is not the loudest thing
def _dense_distractor(rng, n, sr):
    """The kinds of ``distractor_kinds="dense"``: broadband bursts, low hums, steady inharmonic tone
    clusters and octave noise bands at random places; none is a class pattern (none sweeps, trills,
    clicks or is amplitude-modulated), and every class sees the same draws."""
    kind = rng.integers(4)
    if kind < 2:
        return _distractor(rng, n, sr)
    t = np.arange(n) / sr
    if kind == 2:
        freqs = rng.uniform(300, 7000, size=int(rng.integers(2, 4)))
        return sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs) * envelope(n, sr, 0.05, 0.05)
    lo = rng.uniform(200, 5000)
    return band_noise(rng, n, sr, lo, min(2 * lo, sr / 2 - 100)) * envelope(n, sr, 0.05, 0.05)


DISTRACTOR_KINDS = {"classic": _distractor, "dense": _dense_distractor}


def _layer(rng, n, sr, n_distractors, distractor_rms, background_db, distractor_s=(0.2, 0.8), kinds="classic"):
    """(background + distractors, their spans (m, 2) in samples, their power over those spans).

    Levels are absolute and the layer is never renormalised afterwards: a peak
    normalisation of the mixture would scale the distractors by the class
    event's crest factor and so leak the label into their level.
    """
    layer = pink_noise(rng, n) * distractor_rms * 10 ** (-background_db / 20)
    spans = []
    for _ in range(int(rng.integers(n_distractors[0], n_distractors[1] + 1))):
        d_len = min(n, int(rng.uniform(*distractor_s) * sr))
        d_start = int(rng.integers(0, n - d_len + 1))
        d = DISTRACTOR_KINDS[kinds](rng, d_len, sr)
        layer[d_start : d_start + d_len] += d / rms(d) * distractor_rms * rng.uniform(0.7, 1.0)
        spans.append((d_start, d_start + d_len))
    return layer, np.array(spans, dtype=np.int64).reshape(-1, 2), _span_power(layer, spans)


def _span_power(x, spans):
    """Mean power of ``x`` over the union of ``spans`` (samples); what "dB below the distractors" refers to."""
    on = np.zeros(len(x), dtype=bool)
    for a, b in spans:
        on[a:b] = True
    return float(np.mean(x[on] ** 2)) if on.any() else rms(x) ** 2


def _event(rng, atom, n, sr, start, length, reference_power, distractor_db):
    """Pattern ``atom`` placed at ``start``, its power over its span ``distractor_db`` (drawn) below the reference."""
    _, gen, kwargs = CLASS_PATTERNS[atom]
    gap_db = float(rng.uniform(*distractor_db))
    event = np.zeros(n)
    event[start : start + length] = gen(rng, length, sr, **kwargs)
    event *= np.sqrt(reference_power / np.mean(event[start : start + length] ** 2)) * 10 ** (-gap_db / 20)
    return event, gap_db


def _length(rng, event_s, sr, n):
    return min(n, max(1, int(rng.uniform(*event_s) * sr)))


def _placed_anywhere(rng, n, sr, event_s):
    """[(start, length)] of one event at a random time."""
    length = _length(rng, event_s, sr, n)
    return [(int(rng.integers(0, n - length + 1)), length)]


def _placed_in_order(rng, n, sr, event_s, min_gap_s=0.1):
    """[(start, length)] x 2, the second starting at least ``min_gap_s`` after the first ends (lengths shrunk to fit)."""
    gap = int(min_gap_s * sr)
    lengths = np.array([_length(rng, event_s, sr, n) for _ in range(2)], dtype=float)
    if lengths.sum() + gap > n:
        lengths *= (n - gap) / lengths.sum()
    lengths = lengths.astype(int)
    before, between = np.sort(rng.uniform(0, n - gap - lengths.sum(), size=2)).astype(int)
    first = before
    second = first + lengths[0] + gap + (between - before)
    return [(int(first), int(lengths[0])), (int(second), int(lengths[1]))]


def _tick(rng, n, sr, start, length, f_lo, f_hi):
    """The shortcut cue: a short Hann-windowed noise band [f_lo, f_hi] Hz, peak 1."""
    x = np.zeros(n)
    x[start : start + length] = band_noise(rng, length, sr, f_lo, f_hi) * np.hanning(length)
    return x


def _box_mask(start, end, f_lo, f_hi, n_frames, n_fft, hop, win, sr):
    """(time, freq) box on the STFT grid: frames whose window overlaps [start, end) samples, bins in [f_lo, f_hi]
    widened by the window's main lobe (2 bins of the Hamming window of ``win`` samples)."""
    centres = np.arange(n_frames) * hop
    frames = (centres + win / 2 > start) & (centres - win / 2 < end)
    lobe = 2 * sr / win
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    bins = (freqs >= f_lo - lobe) & (freqs <= f_hi + lobe)
    return (frames[:, None] & bins[None, :]).astype(np.uint8)


def _write_clip(out_dir, stem, mix, sample_rate, record):
    with atomic_path(out_dir / "audio" / f"{stem}.wav", suffix=".wav") as tmp:
        sf.write(tmp, mix.astype(np.float32), sample_rate, subtype="FLOAT", format="WAV")
    with atomic_path(out_dir / "ground_truth" / f"{stem}.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **record)


def _make_scenes(
    out_dir,
    classes,
    place,
    n_classes,
    clips_per_class,
    duration_s,
    sample_rate,
    distractor_db,
    n_distractors,
    event_s,
    seed,
    n_fft,
    hop_ms,
    win_ms,
    distractor_rms=0.05,
    background_db=40.0,
    distractor_s=(0.3, 1.0),
    distractor_kinds="dense",
    distractors_per_s=(3.0, 5.0),
    cue=None,
    src_base=900000,
    only_fold=None,
):
    """The shared writer of the designs below.

    ``classes``: per class (category name, [pattern index per event]);
    ``place(rng, n, sr, event_s)``: [(start, length)] per event. The layer of
    clip k is drawn from ``default_rng([seed, 0, k])`` whatever the class (a
    matched design: each distractor layer appears once in every class); the
    events from ``[seed, 1, target, k]``. ``cue``: None or a function
    ``(target, k, fold) -> bool`` saying whether the clip carries the
    shortcut tick (then its dict gives ``f_lo``, ``f_hi``, ``db``, ``s``).
    ``only_fold``: every clip in that fold (the shortcut-test split).
    """
    lo, hi = sorted(float(v) for v in distractor_db)
    if n_distractors is None:  # a density: the same crowding whatever the clip's length
        n_distractors = tuple(int(round(v * duration_s)) for v in distractors_per_s)
    n_distractors = (n_distractors, n_distractors) if np.isscalar(n_distractors) else tuple(n_distractors)
    out_dir = Path(out_dir)
    for sub in ("audio", "meta", "ground_truth"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    n = int(round(duration_s * sample_rate))
    hop = int(round(sample_rate * hop_ms / 1000))
    win = int(round(sample_rate * win_ms / 1000))
    stream = 0 if only_fold is None else 2  # the shortcut-test split draws scenes of its own
    rows = []
    for target in range(n_classes):
        name, atoms = classes[target]
        for k in range(clips_per_class):
            fold = k % 5 + 1 if only_fold is None else only_fold
            layer, spans, reference = _layer(
                np.random.default_rng([seed, stream, k]),
                n,
                sample_rate,
                n_distractors,
                distractor_rms,
                background_db,
                distractor_s,
                distractor_kinds,
            )
            rng = np.random.default_rng([seed, stream + 1, target, k])
            parts, gaps = [], []
            decoy = None if cue is None else cue.get("decoy", lambda t, k, f: None)(target, k, fold)
            drawn = atoms if decoy is None else classes[decoy][1]  # a decoy clip sounds another class's events
            for atom, (start, length) in zip(drawn, place(rng, n, sample_rate, event_s), strict=True):
                event, gap = _event(rng, atom, n, sample_rate, start, length, reference, (lo, hi))
                parts.append((event, start, length))
                gaps.append(gap)
            rest = layer.copy()
            record = {}
            if cue is not None:
                cue_rng = np.random.default_rng([seed, stream + 4, k])  # when: label independent
                c_len = min(n, int(cue["s"] * sample_rate))
                c_start = int(cue_rng.integers(0, n - c_len + 1))
                tick = _tick(cue_rng, n, sample_rate, c_start, c_len, cue["f_lo"], cue["f_hi"])
                tick *= np.sqrt(reference / np.mean(tick[c_start : c_start + c_len] ** 2)) * 10 ** (cue["db"] / 20)
                has = bool(cue["has"](target, k, fold))
                tick = tick if has else np.zeros(n)
                rest = rest + tick
                n_frames = 1 + n // hop
                box = _box_mask(
                    c_start, c_start + c_len, cue["f_lo"], cue["f_hi"], n_frames, n_fft, hop, win, sample_rate
                )
                record.update(
                    has_cue=has,
                    cue=tick.astype(np.float32),
                    cue_mask=box * has,
                    cue_onset_s=c_start / sample_rate,
                    cue_offset_s=(c_start + c_len) / sample_rate,
                    cue_band_hz=np.array([cue["f_lo"], cue["f_hi"]]),
                    cue_class=np.array(cue["class_name"]),  # the class the cue co-occurs with in training
                    decoy=decoy is not None,
                )
            event = sum(p[0] for p in parts)
            mix = rest + event
            # each event's own mask: where it dominates everything else, the other event included
            part_masks = np.stack([dominance_mask(p[0], mix - p[0], n_fft, hop, win, **EVIDENCE_RULE) for p in parts])
            src = src_base + target * 1000 + k
            stem = f"{fold}-{src}-A-{target}"
            _write_clip(
                out_dir,
                stem,
                mix,
                sample_rate,
                {
                    "event": event.astype(np.float32),
                    "mask": dominance_mask(event, rest, n_fft, hop, win, **EVIDENCE_RULE),
                    # the loader recomputes both masks on a classifier's own grid by this rule
                    "mask_rule": np.array([EVIDENCE_RULE["ratio_db"], EVIDENCE_RULE["floor_db"]]),
                    "parts": np.stack([p[0] for p in parts]).astype(np.float32),
                    "sample_rate": sample_rate,
                    "n_fft": n_fft,
                    "hop": hop,
                    "win": win,
                    "onset_s": min(p[1] for p in parts) / sample_rate,
                    "offset_s": max(p[1] + p[2] for p in parts) / sample_rate,
                    "part_masks": part_masks,
                    "part_ids": np.array(drawn, dtype=np.int64),
                    "part_onset_s": np.array([p[1] for p in parts]) / sample_rate,
                    "part_offset_s": np.array([p[1] + p[2] for p in parts]) / sample_rate,
                    "part_gap_db": np.array(gaps),
                    "distractor_spans": spans,
                    **record,
                },
            )
            rows.append(_metadata_row(stem, fold, target, name, src))
    _write_metadata(out_dir, rows)
    return rows


def _check_n_classes(n_classes, lowest=1):
    if not lowest <= n_classes <= len(CLASS_PATTERNS):
        raise ValueError(f"n_classes must be in {lowest}..{len(CLASS_PATTERNS)}, got {n_classes}")


_SHARED = {
    "clips_per_class": 20,
    "duration_s": 5.0,
    "sample_rate": 16000,
    "distractor_db": (10.0, 20.0),
    "n_distractors": None,
    "event_s": (0.6, 1.5),
    "seed": 0,
    "n_fft": 1024,
    "hop_ms": 11.6099,
    "win_ms": 23.2199,
}


_LAYER_OPTIONS = {"distractor_rms", "background_db", "distractor_s", "distractor_kinds", "distractors_per_s"}


def _options(given):
    unknown = set(given) - set(_SHARED) - _LAYER_OPTIONS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; known: {sorted(set(_SHARED) | _LAYER_OPTIONS)}")
    return {**_SHARED, **given}


@SCENE_DESIGNS.register("quiet_evidence")
def quiet_evidence(out_dir, n_classes=5, **options):
    """One class event per clip, ``distractor_db`` (a (low, high) range in dB, drawn per clip) below the
    distractors' power over their spans; 3-5 distractors per second (``distractors_per_s``, or a count or
    (low, high) range as ``n_distractors``), the same layer in every class."""
    _check_n_classes(n_classes)
    classes = [(CLASS_PATTERNS[c][0], [c]) for c in range(n_classes)]
    return _make_scenes(out_dir, classes, _placed_anywhere, n_classes, **_options(options))


@SCENE_DESIGNS.register("clever_hans")
def clever_hans(
    out_dir,
    n_classes=5,
    cue_class=0,
    cue_fraction=0.8,
    cue_folds=(1, 2, 3, 4),
    cue_hz=(7000.0, 7400.0),
    cue_db=-6.0,
    cue_s=0.05,
    decoy_fraction=0.0,
    shortcut_clips_per_class=None,
    **options,
):
    """quiet_evidence plus a shortcut cue: a ``cue_s`` tick in ``cue_hz``, ``cue_db`` relative to the
    distractors, in ``round(cue_fraction * m)`` of the ``m`` clips of ``cue_class`` in ``cue_folds`` (which
    ones: a seeded draw) and in no other clip. ``out_dir/shortcut_test`` (an ESC-50 layout of its own, every
    clip in fold 5, its own scenes) holds ``shortcut_clips_per_class`` (default: a fold's share) clips of
    every class: those of the other classes with the cue planted, those of ``cue_class`` without it (the
    control). ``decoy_fraction``: of the training clips with the cue, the share (a seeded draw) that sound
    another class's event (drawn in turn) instead of their own, so that only the cue says their class: a
    cue that is never more reliable than an easy event is ignored (measured: flip rate 0.00 with 0.9 of the
    class's clips cued, and 0.01 when half of those had no event at all; docs/leaderboards.md). Ground
    truth: ``mask`` is the sounding event's, ``cue_mask`` the tick's box; ``cue`` its waveform, so
    ``mix - cue`` is the same clip without it; ``decoy`` (bool) marks the decoy clips."""
    _check_n_classes(n_classes, 2)
    if not 0 <= cue_class < n_classes or not 0.0 <= cue_fraction <= 1.0 or not 0.0 <= decoy_fraction <= 1.0:
        raise ValueError(f"cue_class must be in 0..{n_classes - 1}, cue_fraction and decoy_fraction in [0, 1]")
    opts = _options(options)
    classes = [(CLASS_PATTERNS[c][0], [c]) for c in range(n_classes)]
    eligible = [k for k in range(opts["clips_per_class"]) if k % 5 + 1 in set(cue_folds)]
    chosen = np.random.default_rng([opts["seed"], 5]).permutation(eligible)[: int(round(cue_fraction * len(eligible)))]
    others = [c for c in range(n_classes) if c != cue_class]
    decoys = {int(k): others[j % len(others)] for j, k in enumerate(chosen[: int(round(decoy_fraction * len(chosen)))])}
    chosen = {int(k) for k in chosen}
    cue = {
        "f_lo": float(cue_hz[0]),
        "f_hi": float(cue_hz[1]),
        "db": float(cue_db),
        "s": float(cue_s),
        "class_name": classes[cue_class][0],
    }
    rows = _make_scenes(
        out_dir,
        classes,
        _placed_anywhere,
        n_classes,
        cue={
            **cue,
            "has": lambda t, k, f: t == cue_class and k in chosen,
            "decoy": lambda t, k, f: decoys.get(k) if t == cue_class else None,
        },
        **opts,
    )
    shortcut = {**opts, "clips_per_class": shortcut_clips_per_class or max(1, opts["clips_per_class"] // 5)}
    _make_scenes(
        Path(out_dir) / "shortcut_test",
        classes,
        _placed_anywhere,
        n_classes,
        cue={**cue, "has": lambda t, k, f: t != cue_class},
        src_base=950000,
        only_fold=5,
        **shortcut,
    )
    return rows


@SCENE_DESIGNS.register("conjunction")
def conjunction(out_dir, n_classes=4, **options):
    """Class c is patterns c and (c + 1) mod n_classes at independent random times: every pattern is in two
    classes, each time with another partner, so neither event alone decides the class."""
    _check_n_classes(n_classes, 3)
    classes = [
        (f"{CLASS_PATTERNS[c][0]}+{CLASS_PATTERNS[(c + 1) % n_classes][0]}", [c, (c + 1) % n_classes])
        for c in range(n_classes)
    ]

    def place(rng, n, sr, event_s):
        return _placed_anywhere(rng, n, sr, event_s) + _placed_anywhere(rng, n, sr, event_s)

    return _make_scenes(out_dir, classes, place, n_classes, **_options(options))


@SCENE_DESIGNS.register("order")
def order(out_dir, n_classes=4, **options):
    """Classes 2j and 2j+1 both hold patterns 2j and 2j+1, the first in that order, the second reversed; the
    two events never overlap. ``part_*`` are in temporal order."""
    _check_n_classes(n_classes, 2)
    if n_classes % 2:
        raise ValueError(f"order needs an even n_classes (pairs of classes), got {n_classes}")
    classes = []
    for j in range(n_classes // 2):
        a, b = 2 * j, 2 * j + 1
        classes += [
            (f"{CLASS_PATTERNS[a][0]}>{CLASS_PATTERNS[b][0]}", [a, b]),
            (f"{CLASS_PATTERNS[b][0]}>{CLASS_PATTERNS[a][0]}", [b, a]),
        ]
    return _make_scenes(out_dir, classes, _placed_in_order, n_classes, **_options(options))
