"""Synthetic music whose mid-level perceptual attributes are set by hand, and whose emotions follow from them.

The offline stand-in for the Mid-level Perceptual Features dataset (Aljanaki &
Soleymani 2018) and the Soundtracks emotion dataset (Eerola & Vuoskoski 2011),
written in their layouts (``common.data.midlevel``), with the truth the real
data cannot give: each clip's seven attributes in [0, 1] are chosen, the audio
realises them, and its eight emotion ratings are a known linear function of
the realised attributes plus rating noise (``TRUE_WEIGHTS``), so a model's
learned mid-level -> emotion weights can be checked against the truth.

A clip (4 s by default) is a melody (a harmonic tone, 3 partials, 440-1760 Hz)
over a pad of chords (one every 0.5 s, 220-880 Hz), over faint noise. What each
attribute controls, and what its realised value is:

==================  ==========================================================
melodiousness       each melodic step is a scale step (smooth contour) with this
                    probability, else a leap anywhere in two octaves; realised:
                    the fraction of stepwise intervals
articulation        staccato: a note lasts 1.3 (legato, overlapping) down to
                    0.15 of the time to the next onset, with a sharper attack
rhythm_stability    onset regularity: each onset is jittered by (1 - value) x
                    0.5 of the inter-onset interval (a fixed normal draw, clipped
                    at 1.5)
rhythm_complexity   density: 8 to 32 melody notes per clip (realised: the count,
                    rescaled), plus off-grid ornaments as density rises
dissonance          each chord carries two clashing tones (a semitone and a
                    tritone above its root) with this probability; realised:
                    the fraction of clashing chords
tonal_stability     each chord's root is in the key's progression with this
                    probability, else any of the 12 pitch classes, and then its
                    pitch (and the melody's over it) drifts by 0.8 semitone and
                    the melody strays off its scale: no tonal centre to hold;
                    realised: the fraction of in-key chords
minorness           each chord (and the melody's scale over it) is minor with
                    this probability; realised: the fraction of minor chords
==================  ==========================================================

Every aspect draws from its own random stream (``numpy`` ``SeedSequence``
children of the clip's seed), fixed-length, so ``render`` with one attribute
changed changes that aspect only: the interventions behind the concept-level
Kernel SHAP of ``explain_midlevel.py`` (``render`` of the clip's seed with some
attributes set to ``REFERENCE_VALUE``). Ratings: mid-level 1 + 9 x realised +
N(0, ``mid_noise``) (the dataset's 1-10 scale); emotions 5 + W (realised - 0.5)
+ N(0, ``emotion_noise``), clipped to the Soundtracks' 1-9 scale.
"""

import csv
import io
from pathlib import Path

import numpy as np
import soundfile as sf

from common.data.midlevel import EMOTIONS, MIDLEVEL_COLUMNS, MIDLEVEL_FEATURES, SOUNDTRACK_COLUMNS
from common.io import atomic_path, atomic_write_json, atomic_write_text

SAMPLE_RATE = 16000
DURATION_S = 4.0
REFERENCE_VALUE = 0.5  # an attribute "left out" of a coalition: the middle of its range (the data's mean)

# emotion rating = 5 + TRUE_WEIGHTS @ (realised attributes - 0.5) + noise; rows EMOTIONS, columns MIDLEVEL_FEATURES.
# Signs follow the music-psychology folklore the paper's weights show (minor -> sad, dissonant -> tense, ...);
# zeros are features an emotion does not depend on.
TRUE_WEIGHTS = np.array(
    [
        # mel  art   rst   rcx   dis   ton   min
        [2.0, 0.0, 0.0, 0.0, -2.0, 1.0, -2.5],  # valence
        [-0.5, 2.5, 0.5, 2.5, 0.0, 0.0, 0.0],  # energy
        [0.0, 0.0, -1.0, 0.0, 3.0, -2.0, 0.0],  # tension
        [-1.0, 1.5, 0.0, 1.0, 2.0, 0.0, 0.0],  # anger
        [0.0, 0.0, -1.5, 0.0, 1.5, -2.0, 1.5],  # fear
        [1.5, 0.0, 0.0, 1.0, -1.0, 0.0, -3.0],  # happy
        [0.0, -2.0, 0.0, -1.5, 0.0, 0.0, 3.0],  # sad
        [2.5, -2.0, 0.0, -1.0, -1.5, 0.0, 0.0],  # tender
    ]
)
EMOTION_INTERCEPT = 5.0

CHORD_S = 0.5
JITTER = 0.5  # an onset's jitter at rhythm stability 0, in inter-onset intervals per standard normal draw
GLIDE_SEMITONES = 0.8  # pitch drift of an out-of-key chord (and the melody over it) over its 0.5 s
MIN_NOTES, MAX_NOTES = 8, 32
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
PROGRESSION = (0, 5, 7, 9, 2, 4)  # roots in the key: I, IV, V, vi, ii, iii (semitones above the tonic)
ASPECTS = ("key", "melody", "articulation", "rhythm", "dissonance", "tonality", "mode", "noise")


def _streams(seed):
    """{aspect: Generator}: one independent stream per aspect of the clip."""
    children = np.random.SeedSequence(int(seed)).spawn(len(ASPECTS))
    return {name: np.random.default_rng(child) for name, child in zip(ASPECTS, children, strict=True)}


def _midi_hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _note(freq, n, sr, attack_s, partials=(1.0, 0.5, 0.25), glide=0.0):
    """A harmonic tone of ``n`` samples: attack, then exponential decay to about -30 dB; ``glide`` semitones of
    pitch drift over its length (0: a steady pitch)."""
    t = np.arange(n) / sr
    track = freq * 2.0 ** (glide * t / (12.0 * max(t[-1], 1e-3))) if glide and n > 1 else np.full(n, freq)
    phase = 2 * np.pi * np.cumsum(track) / sr
    wave = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(partials))
    env = np.exp(-3.5 * t / max(t[-1], 1e-3)) if n > 1 else np.ones(n)
    a = max(1, min(n, int(attack_s * sr)))
    env[:a] *= np.linspace(0.0, 1.0, a)
    r = max(1, min(n, int(0.01 * sr)))
    env[n - r :] *= np.linspace(1.0, 0.0, r)
    return wave * env


def render(attributes, seed, sample_rate=SAMPLE_RATE, duration_s=DURATION_S):
    """(wav float32 (samples,), realised attributes (7,)) of a clip with these target ``attributes`` in [0, 1].

    Deterministic in (attributes, seed); every aspect reads its own stream, so changing one attribute
    changes only what it controls (the melody's pitches follow the chords, so minorness, dissonance and
    tonal stability reach it too, as they would in music).
    """
    a = np.clip(np.asarray(attributes, dtype=np.float64), 0.0, 1.0)
    if a.shape != (len(MIDLEVEL_FEATURES),):
        raise ValueError(f"attributes must be {len(MIDLEVEL_FEATURES)} values, got shape {a.shape}")
    mel, art, rst, rcx, dis, ton, mnr = a
    sr, n_total = int(sample_rate), int(round(duration_s * sample_rate))
    rng = _streams(seed)
    n_chords = max(1, int(round(duration_s / CHORD_S)))

    # harmony: per chord a root, a quality, maybe clashing tones (fixed uniforms per chord per aspect)
    tonic = int(rng["key"].integers(0, 12))
    progression = rng["key"].choice(PROGRESSION, size=n_chords)
    in_key = rng["tonality"].random(n_chords) < ton
    stray_roots = rng["tonality"].integers(0, 12, size=n_chords)
    stray_notes = rng["tonality"].random(MAX_NOTES)
    glides = np.where(rng["tonality"].random(n_chords) < 0.5, -1.0, 1.0) * GLIDE_SEMITONES
    roots = np.where(in_key, tonic + progression, stray_roots) % 12
    minor = rng["mode"].random(n_chords) < mnr
    clash = rng["dissonance"].random(n_chords) < dis

    out = np.zeros(n_total)
    chord_n = int(round(CHORD_S * sr))
    for c in range(n_chords):
        start = c * chord_n
        n = min(chord_n, n_total - start)
        if n <= 0:
            break
        tones = [0, 3 if minor[c] else 4, 7] + ([1, 6] if clash[c] else [])
        base = 57 + roots[c]  # A3 + root: 220-415 Hz
        glide = 0.0 if in_key[c] else glides[c]  # off the key, the chord's pitch also drifts: no centre to hold
        chord = sum(_note(_midi_hz(base + t), n, sr, 0.02, partials=(1.0, 0.3), glide=glide) for t in tones)
        out[start : start + n] += 0.12 * chord

    # rhythm: n notes evenly spaced, each onset jittered by a fixed normal draw scaled by the instability
    n_notes = int(round(MIN_NOTES + (MAX_NOTES - MIN_NOTES) * rcx))
    jitter_draw = np.clip(rng["rhythm"].standard_normal(MAX_NOTES), -1.5, 1.5)
    ornament_draw = rng["rhythm"].random(MAX_NOTES)
    ioi = duration_s / n_notes
    onsets = np.arange(n_notes) * ioi + (1.0 - rst) * JITTER * ioi * jitter_draw[:n_notes]
    onsets = np.clip(onsets, 0.0, duration_s - 0.05)

    # melody: scale degrees in two octaves; a step with probability melodiousness, else a leap
    step_draw = rng["melody"].random(MAX_NOTES)
    step_sign = np.where(rng["melody"].random(MAX_NOTES) < 0.5, -1, 1)
    leap_draw = rng["melody"].integers(0, 14, size=MAX_NOTES)
    degree = int(rng["melody"].integers(3, 11))
    stepwise = 0
    length = 0.15 + 1.15 * (1.0 - art)  # of the inter-onset interval: 1.3 legato .. 0.15 staccato
    attack_s = 0.004 + 0.05 * (1.0 - art)
    for k in range(n_notes):
        if k > 0:
            if step_draw[k] < mel:
                degree = int(np.clip(degree + step_sign[k], 0, 13))
                stepwise += 1
            else:
                degree = int(leap_draw[k])
        c = min(n_chords - 1, int(onsets[k] / CHORD_S))
        scale = MINOR if minor[c] else MAJOR
        pitch = 69 + roots[c] + 12 * (degree // 7) + scale[degree % 7]  # A4 + root ..: 440-1760 Hz
        if not in_key[c] and stray_notes[k] < 0.5:
            pitch += 1  # off the scale over an unstable chord
        start = int(onsets[k] * sr)
        n = min(n_total - start, max(int(0.03 * sr), int(length * ioi * sr)))
        glide = 0.0 if in_key[c] else glides[c] * n / chord_n
        out[start : start + n] += 0.3 * _note(_midi_hz(pitch), n, sr, attack_s, glide=glide)
        if ornament_draw[k] < rcx - 0.5:  # dense passages get off-grid grace notes
            g0 = start + int(0.5 * ioi * sr)
            g = min(n_total - g0, int(0.25 * ioi * sr))
            if g > int(0.01 * sr):
                out[g0 : g0 + g] += 0.15 * _note(_midi_hz(pitch + 2), g, sr, 0.003)

    out += 0.003 * rng["noise"].standard_normal(n_total)
    out /= np.abs(out).max() + 1e-9
    realised = np.array(
        [
            stepwise / max(1, n_notes - 1),
            art,
            rst,
            (n_notes - MIN_NOTES) / (MAX_NOTES - MIN_NOTES),
            clash.mean(),
            in_key.mean(),
            minor.mean(),
        ]
    )
    return (0.9 * out).astype(np.float32), realised


def true_emotions(realised):
    """(..., 8) noise-free emotion ratings of realised attributes (..., 7): 5 + W (a - 0.5)."""
    return EMOTION_INTERCEPT + (np.asarray(realised) - REFERENCE_VALUE) @ TRUE_WEIGHTS.T


def _write_wav(path, wav, sample_rate):
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, wav, sample_rate, subtype="PCM_16", format="WAV")


def _write_csv(path, header, rows, delimiter=","):
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def make_midlevel_music(
    out_folder,
    n_midlevel=600,
    n_soundtracks=240,
    seed=0,
    sample_rate=SAMPLE_RATE,
    duration_s=DURATION_S,
    mid_noise=0.3,
    emotion_noise=0.3,
):
    """Write both data sets in their layouts under ``out_folder`` and return the ground truth.

    ``midlevel/``: ``metadata_annotations/annotations.csv`` (song_id and the seven ratings under the
    dataset's column names), ``metadata_annotations/metadata.csv`` (semicolon-separated), ``audio/<id>.wav``.
    ``soundtracks/``: ``Set1/<NNN>.wav`` and ``mean_ratings_set1.csv`` (Number and the eight emotions).
    ``ground_truth.json``: the true weights, the intercept, the noise levels and, per clip, its seed, target
    and realised attributes (what ``render`` needs to re-make it with attributes changed).
    """
    out = Path(out_folder)
    rng = np.random.default_rng(seed)
    truth = {
        "features": list(MIDLEVEL_FEATURES),
        "emotions": list(EMOTIONS),
        "true_weights": TRUE_WEIGHTS.tolist(),
        "intercept": EMOTION_INTERCEPT,
        "reference_value": REFERENCE_VALUE,
        "sample_rate": int(sample_rate),
        "duration_s": float(duration_s),
        "mid_noise": mid_noise,
        "emotion_noise": emotion_noise,
        "clips": {},
    }
    mid_rows, meta_rows, st_rows = [], [], []
    for i in range(n_midlevel + n_soundtracks):
        target = rng.random(len(MIDLEVEL_FEATURES))
        clip_seed = int(seed) * 100_003 + i
        wav, realised = render(target, clip_seed, sample_rate, duration_s)
        if i < n_midlevel:
            song_id = str(i + 1)
            _write_wav(out / "midlevel" / "audio" / f"{song_id}.wav", wav, sample_rate)
            ratings = np.clip(1.0 + 9.0 * realised + rng.normal(0.0, mid_noise, realised.shape), 1.0, 10.0)
            mid_rows.append([song_id, *(f"{r:.3f}" for r in ratings)])
            meta_rows.append([song_id, "synthetic", "generator", song_id])
            key = f"midlevel/{song_id}"
        else:
            number = i - n_midlevel + 1
            _write_wav(out / "soundtracks" / "Set1" / f"{number:03d}.wav", wav, sample_rate)
            emotions = true_emotions(realised) + rng.normal(0.0, emotion_noise, len(EMOTIONS))
            st_rows.append([number, *(f"{e:.3f}" for e in np.clip(emotions, 1.0, 9.0))])
            key = f"soundtracks/{number:03d}"
        truth["clips"][key] = {"seed": clip_seed, "target": target.tolist(), "realised": realised.tolist()}
    annotations = out / "midlevel" / "metadata_annotations"
    _write_csv(annotations / "annotations.csv", ["song_id", *MIDLEVEL_COLUMNS], mid_rows)
    _write_csv(
        annotations / "metadata.csv", ["song id", "Source", "Artist", "ID at file source"], meta_rows, delimiter=";"
    )
    _write_csv(out / "soundtracks" / "mean_ratings_set1.csv", ["Number", *SOUNDTRACK_COLUMNS], st_rows)
    atomic_write_json(out / "ground_truth.json", truth)
    return truth
