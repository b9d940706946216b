"""A synthetic GTZAN: ten "genres" of music-like mixtures whose time-frequency ground truth is known.

Every clip mixes three SOURCES over low pink noise. Two are shared between
genres (``drums``: kick, snare and hi-hat on a beat grid at the clip's tempo;
``bass``: low harmonic notes; ``pad``: sustained chords), one is the genre's
own DISCRIMINATIVE source, which no other genre has and which sounds only in
its own frequency band, away from the shared sources' bands:

=========  ===========  ===============  ===========================
genre      shared       discriminative   band (Hz), pattern
=========  ===========  ===============  ===========================
blues      drums, bass  slide_guitar     700-950, gliding notes
classical  bass, pad    string_tremolo   990-1260, tremolo dyads
country    drums, bass  banjo_roll       2700-3100, 16th-note plucks
disco      drums, bass  clav_riff        3300-3700, syncopated 16ths
hiphop     drums, bass  scratch          3900-4600, chirps
jazz       drums, pad   ride_cymbal      4900-5700, swung noise hits
metal      drums, bass  tremolo_picking  6000-6900, gated noise
pop        drums, pad   synth_lead       7200-8100, vibrato melody
reggae     bass, pad    skank            2200-2620, off-beat stabs
rock       drums, bass  feedback_guitar  8400-9200, sustained tones
=========  ===========  ===============  ===========================

Shared bands: kick 35-130, bass 50-620, pad 155-695, snare 1350-2100,
hi-hat 9500-10800 Hz. Tempo, pitches, rhythms and gains are drawn per clip.

The folder has GTZAN's layout (``genres/<genre>/<genre>.000NN.wav``, 22,050 Hz,
16-bit mono), so ``common.data.gtzan.prepare_gtzan`` reads it unchanged.
Ground truth per clip in ``ground_truth/<clip_id>.json``: the genre, the tempo
and, per component, its name, kind, whether it is discriminative, its band
and its time-frequency support as boxes ``[t0_s, t1_s, f_lo_hz, f_hi_hz]``
(one per note or hit). ``component_masks`` puts the boxes on a front end's
(time, frequency) grid; ``common.data.synthetic.ground_truth`` reads them. Deterministic by seed; a clip does not depend on how
many others are made.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common.data.synthetic.signals import band_noise, envelope, pink_noise, tone
from common.io import atomic_path, atomic_write_json

SAMPLE_RATE = 22050


# ---------------------------------------------------------------- primitives
def _decay(n, sr, attack=0.002):
    """A hit's envelope: fast attack, exponential decay to -40 dB at its end."""
    return np.exp(-np.log(100.0) * np.arange(n) / max(n, 1)) * envelope(n, sr, attack, 0.005)


class Track:
    """One source being rendered: a waveform and the boxes where it sounds."""

    def __init__(self, n, sr):
        self.wave = np.zeros(n)
        self.sr = sr
        self.duration = n / sr
        self.boxes = []

    def add(self, t0, sound, f_lo, f_hi):
        """Mix ``sound`` in at ``t0`` (s) and record its box (cut at the clip's end)."""
        start = int(round(t0 * self.sr))
        if start >= len(self.wave):
            return
        sound = sound[: len(self.wave) - start]
        self.wave[start : start + len(sound)] += sound
        t1 = min(self.duration, t0 + len(sound) / self.sr)
        self.boxes.append([round(t0, 4), round(t1, 4), round(float(f_lo), 1), round(float(f_hi), 1)])

    def samples(self, seconds):
        return max(1, int(round(seconds * self.sr)))


@dataclass
class Grid:
    """The clip's beat grid: tempo and the time of the first beat."""

    beat_s: float
    offset_s: float

    def times(self, duration, per_beat=1, swing=None):
        """Onsets every 1/``per_beat`` beat from the first beat to the clip's end."""
        step = self.beat_s / per_beat
        return [self.offset_s + k * step for k in range(int((duration - self.offset_s) / step) + 1)]


def _notes(rng, track, grid, beats_per_note, rest_prob):
    """Note onsets and durations on the grid, each a whole number of ``beats_per_note`` slots."""
    for t in grid.times(track.duration, per_beat=1 / beats_per_note):
        if rng.random() >= rest_prob:
            yield t, grid.beat_s * beats_per_note


# ------------------------------------------------------------ shared sources
def render_drums(rng, track, grid):
    """Kick on beats 1 and 3, snare on 2 and 4, hi-hat on the eighth notes."""
    for i, t in enumerate(grid.times(track.duration, per_beat=2)):
        if i % 2 == 0:
            if (i // 2) % 2 == 0:
                n = track.samples(0.2)
                freqs = 45.0 + 65.0 * np.exp(-np.arange(n) / (0.04 * track.sr))  # 110 Hz falling to 45 Hz
                track.add(t, tone(freqs, track.sr) * _decay(n, track.sr), 35.0, 130.0)
            else:
                n = track.samples(0.15)
                track.add(t, 0.6 * band_noise(rng, n, track.sr, 1350, 2100) * _decay(n, track.sr), 1350.0, 2100.0)
        if rng.random() < 0.9:
            n = track.samples(0.05)
            track.add(t, 0.25 * band_noise(rng, n, track.sr, 9500, 10800) * _decay(n, track.sr), 9500.0, 10800.0)


def render_bass(rng, track, grid):
    """Low notes of a pentatonic scale (root 55-82 Hz), four harmonics, one beat each."""
    root = rng.uniform(55.0, 82.0)
    for t, length in _notes(rng, track, grid, 1, 0.15):
        f0 = root * 2 ** (rng.choice([0, 3, 5, 7, 10]) / 12)
        n = track.samples(0.9 * length)
        wave = sum(a * tone(np.full(n, k * f0), track.sr) for k, a in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.2)))
        track.add(t, wave * envelope(n, track.sr, 0.005, 0.03), 0.95 * f0, 4 * f0 * 1.05)


def render_pad(rng, track, grid):
    """A sustained triad per bar (root 165-215 Hz), two harmonics, slow attack."""
    for t in grid.times(track.duration, per_beat=0.25):
        root = rng.uniform(165.0, 215.0)
        chord = [root * 2 ** (s / 12) for s in (0, rng.choice([3, 4]), 7)]
        n = track.samples(4 * grid.beat_s)
        wave = sum(tone(np.full(n, f), track.sr) + 0.3 * tone(np.full(n, 2 * f), track.sr) for f in chord)
        track.add(t, 0.4 * wave * envelope(n, track.sr, 0.15, 0.2), 0.95 * root, 2 * chord[-1] * 1.05)


# ----------------------------------------------------- discriminative sources
def render_slide_guitar(rng, track, grid):
    """Notes gliding between two pitches over their first 30%, then held (blues slide)."""
    for t, length in _notes(rng, track, grid, rng.choice([1, 2]), 0.25):
        fa, fb = rng.uniform(720.0, 930.0, size=2)
        n = track.samples(0.95 * length)
        glide = min(n, int(0.3 * n))
        freqs = np.concatenate([np.linspace(fa, fb, glide), np.full(n - glide, fb)])
        track.add(t, tone(freqs, track.sr) * envelope(n, track.sr, 0.01, 0.05), min(fa, fb), max(fa, fb))


def render_string_tremolo(rng, track, grid):
    """Sustained dyads (f, 1.2 f) under a 12 Hz tremolo, two to four beats each."""
    for t, length in _notes(rng, track, grid, rng.choice([2, 4]), 0.2):
        f = rng.uniform(1010.0, 1030.0)
        n = track.samples(0.95 * length)
        tremolo = 0.6 + 0.4 * np.sin(2 * np.pi * 12.0 * np.arange(n) / track.sr)
        wave = (tone(np.full(n, f), track.sr) + tone(np.full(n, 1.2 * f), track.sr)) * tremolo
        track.add(t, 0.6 * wave * envelope(n, track.sr, 0.08, 0.1), f, 1.2 * f)


def render_skank(rng, track, grid):
    """Short clustered-chord stabs on every off-beat (reggae skank)."""
    root = rng.uniform(2240.0, 2280.0)
    chord = [root, root * 2 ** (1 / 12), root * 2 ** (2 / 12)]
    for t in grid.times(track.duration, per_beat=1):
        if rng.random() < 0.9:
            n = track.samples(0.12)
            wave = sum(tone(np.full(n, f), track.sr) for f in chord) / 3
            track.add(t + grid.beat_s / 2, wave * _decay(n, track.sr), chord[0], chord[-1])


def render_banjo_roll(rng, track, grid):
    """Rolls of decaying plucks on 16th notes, cycling three pitches."""
    root = rng.uniform(2750.0, 2770.0)
    pitches = [root, root * 2 ** (1 / 12), root * 2 ** (2 / 12)]
    for i, t in enumerate(grid.times(track.duration, per_beat=4)):
        if rng.random() < 0.8:
            f = pitches[i % 3]
            n = track.samples(0.1)
            track.add(t, tone(np.full(n, f), track.sr) * _decay(n, track.sr), f, f)


CLAV_PATTERN = (1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1)  # one bar of syncopated 16th notes


def render_clav_riff(rng, track, grid):
    """Staccato tones on a syncopated 16th-note pattern, alternating two pitches (disco clavinet)."""
    root = rng.uniform(3350.0, 3400.0)
    for i, t in enumerate(grid.times(track.duration, per_beat=4)):
        if CLAV_PATTERN[i % len(CLAV_PATTERN)]:
            f = root * (2 ** (1 / 12) if i % 4 == 1 else 1.0)
            n = track.samples(0.06)
            track.add(t, tone(np.full(n, f), track.sr) * envelope(n, track.sr, 0.003, 0.02), f, f)


def render_scratch(rng, track, grid):
    """Up or down chirps of 0.1-0.25 s on eighth notes (turntable scratches)."""
    for t in grid.times(track.duration, per_beat=2):
        if rng.random() < 0.6:
            n = track.samples(rng.uniform(0.1, 0.25))
            lo, hi = 3950.0, 4550.0
            freqs = np.linspace(lo, hi, n) if rng.random() < 0.5 else np.linspace(hi, lo, n)
            track.add(t, tone(freqs, track.sr) * envelope(n, track.sr, 0.005, 0.02), lo, hi)


def render_ride_cymbal(rng, track, grid):
    """The swung jazz ride pattern: ding, ding-da-ding (hits on every beat, a swung 'let' every other)."""
    for i, t in enumerate(grid.times(track.duration, per_beat=1)):
        onsets = [t, t + 2 * grid.beat_s / 3] if i % 2 == 1 else [t]
        for onset in onsets:
            n = track.samples(0.18)
            hit = band_noise(rng, n, track.sr, 4950, 5650) * _decay(n, track.sr)
            track.add(onset, 0.7 * hit, 4950.0, 5650.0)


def render_tremolo_picking(rng, track, grid):
    """Phrases of one or two beats of band noise gated on every 16th note (metal tremolo picking)."""
    for t, length in _notes(rng, track, grid, rng.choice([1, 2]), 0.2):
        for k in range(int(round(length / (grid.beat_s / 4)))):
            n = track.samples(0.6 * grid.beat_s / 4)
            pulse = band_noise(rng, n, track.sr, 6050, 6850) * envelope(n, track.sr, 0.003, 0.01)
            track.add(t + k * grid.beat_s / 4, 0.7 * pulse, 6050.0, 6850.0)


def render_synth_lead(rng, track, grid):
    """A melody of half- and whole-beat notes with a 6 Hz, +-0.8% vibrato."""
    root = rng.uniform(7280.0, 7320.0)
    for t, length in _notes(rng, track, grid, rng.choice([0.5, 1]), 0.2):
        f = root * 2 ** (rng.choice([0.0, 0.5, 1.0, 1.5]) / 12)
        n = track.samples(0.9 * length)
        freqs = f * (1 + 0.008 * np.sin(2 * np.pi * 6.0 * np.arange(n) / track.sr))
        track.add(t, 0.6 * tone(freqs, track.sr) * envelope(n, track.sr, 0.01, 0.03), 0.992 * f, 1.008 * f)


def render_feedback_guitar(rng, track, grid):
    """Sustained, swelling high tones of two to four beats with a slow vibrato (guitar feedback)."""
    for t, length in _notes(rng, track, grid, rng.choice([2, 4]), 0.25):
        f = rng.uniform(8500.0, 9050.0)
        n = track.samples(0.95 * length)
        freqs = f * (1 + 0.005 * np.sin(2 * np.pi * 5.0 * np.arange(n) / track.sr))
        track.add(t, 0.5 * tone(freqs, track.sr) * envelope(n, track.sr, 0.2, 0.1), 0.995 * f, 1.005 * f)


@dataclass(frozen=True)
class Source:
    """A source: its name, kind, whether it is a genre's own, its band (Hz) and its renderer."""

    name: str
    kind: str
    discriminative: bool
    band_hz: tuple
    render: object


SHARED_SOURCES = {
    "drums": Source("drums", "drums", False, (35.0, 10800.0), render_drums),
    "bass": Source("bass", "bass", False, (50.0, 620.0), render_bass),
    "pad": Source("pad", "pad", False, (155.0, 695.0), render_pad),
}

# Each genre's own source (the concept classes below reuse them three by three).
OWN_SOURCES = {
    source.name: source
    for source in (
        Source("slide_guitar", "melody", True, (700.0, 950.0), render_slide_guitar),
        Source("string_tremolo", "tremolo", True, (990.0, 1260.0), render_string_tremolo),
        Source("banjo_roll", "arpeggio", True, (2700.0, 3100.0), render_banjo_roll),
        Source("clav_riff", "riff", True, (3300.0, 3700.0), render_clav_riff),
        Source("scratch", "chirps", True, (3900.0, 4600.0), render_scratch),
        Source("ride_cymbal", "cymbal", True, (4900.0, 5700.0), render_ride_cymbal),
        Source("tremolo_picking", "noise_band", True, (6000.0, 6900.0), render_tremolo_picking),
        Source("synth_lead", "melody", True, (7200.0, 8100.0), render_synth_lead),
        Source("skank", "chord_stabs", True, (2200.0, 2620.0), render_skank),
        Source("feedback_guitar", "sustained", True, (8400.0, 9200.0), render_feedback_guitar),
    )
}

# genre -> (shared sources, its discriminative source, tempo range in BPM)
GENRE_MIXTURES = {
    "blues": (("drums", "bass"), OWN_SOURCES["slide_guitar"], (70, 100)),
    "classical": (("bass", "pad"), OWN_SOURCES["string_tremolo"], (60, 90)),
    "country": (("drums", "bass"), OWN_SOURCES["banjo_roll"], (90, 120)),
    "disco": (("drums", "bass"), OWN_SOURCES["clav_riff"], (115, 130)),
    "hiphop": (("drums", "bass"), OWN_SOURCES["scratch"], (80, 100)),
    "jazz": (("drums", "pad"), OWN_SOURCES["ride_cymbal"], (110, 150)),
    "metal": (("drums", "bass"), OWN_SOURCES["tremolo_picking"], (140, 180)),
    "pop": (("drums", "pad"), OWN_SOURCES["synth_lead"], (100, 125)),
    "reggae": (("bass", "pad"), OWN_SOURCES["skank"], (70, 90)),
    "rock": (("drums", "bass"), OWN_SOURCES["feedback_guitar"], (110, 140)),
}
GENRES = tuple(GENRE_MIXTURES)

# Classes for concept analysis (DRSA): each is three sources of its own, in three bands, and a clip keeps each
# source with probability CONCEPT_KEEP_PROB (at least one), so every source alone is evidence for its class and a
# classifier has to learn all three (with GENRE_MIXTURES the shared sources carry no evidence, so a class's
# relevance lies on one source only and there is nothing for concepts to divide).
CONCEPT_MIXTURES = {
    name: ((), tuple(OWN_SOURCES[source] for source in sources), (90, 130))
    for name, sources in (
        ("trio_a", ("slide_guitar", "banjo_roll", "tremolo_picking")),
        ("trio_b", ("string_tremolo", "clav_riff", "synth_lead")),
        ("trio_c", ("skank", "scratch", "feedback_guitar")),
    )
}
CONCEPT_CLASSES = tuple(CONCEPT_MIXTURES)
CONCEPT_KEEP_PROB = 0.7
MIXTURES = {**GENRE_MIXTURES, **CONCEPT_MIXTURES}


# ----------------------------------------------------------------- clips
def render_clip(genre, rng, duration_s=30.0, sample_rate=SAMPLE_RATE, noise_rms=0.01, return_stems=False):
    """One clip of ``genre``: (waveform peak-normalised to 0.9, ground-truth dict without the clip id), and
    with ``return_stems`` its stems: {source name (and ``noise``): its waveform as it is in the mix}, which
    sum to the mix."""
    if sample_rate < 2 * 10800:
        raise ValueError(f"sample_rate={sample_rate}: the sources reach 10.8 kHz, so use at least 22050 Hz.")
    shared, own, tempo_range = MIXTURES[genre]
    own = own if isinstance(own, tuple) else (own,)
    n = int(round(duration_s * sample_rate))
    tempo = float(rng.uniform(*tempo_range))
    grid = Grid(beat_s=60.0 / tempo, offset_s=float(rng.uniform(0.0, 60.0 / tempo)))
    mix = noise_rms * pink_noise(rng, n)
    stems = {"noise": mix.copy()}
    keep = np.ones(len(own), dtype=bool)
    if len(own) > 1:  # a concept class: each own source sounds with CONCEPT_KEEP_PROB, at least one
        keep = rng.random(len(own)) < CONCEPT_KEEP_PROB
        keep[rng.integers(len(own))] = True
    components = []
    sources = [SHARED_SOURCES[name] for name in shared] + list(own)
    for source, sounds in zip(sources, [True] * len(shared) + list(keep), strict=True):
        track = Track(n, sample_rate)
        if sounds:  # a silent source stays in the ground truth with no boxes (an empty mask)
            source.render(rng, track, grid)
        gain = float(rng.uniform(0.35, 0.7) if source.discriminative else rng.uniform(0.5, 1.0))
        peak = np.abs(track.wave).max()
        stems[source.name] = gain * track.wave / peak if peak > 0 else np.zeros(n)
        mix += stems[source.name]
        components.append(
            {
                "name": source.name,
                "kind": source.kind,
                "discriminative": source.discriminative,
                "gain": round(gain, 4),
                "band_hz": list(source.band_hz),
                "boxes": track.boxes,
            }
        )
    scale = 0.9 / (np.abs(mix).max() + 1e-9)
    truth = {
        "genre": genre,
        "sample_rate": sample_rate,
        "duration_s": n / sample_rate,
        "tempo_bpm": round(tempo, 2),
        "noise_rms": noise_rms * scale,
        "discriminative_component": own[0].name if len(own) == 1 else [source.name for source in own],
        "components": components,
    }
    if return_stems:
        return mix * scale, truth, {name: wave * scale for name, wave in stems.items()}
    return mix * scale, truth


def make_synthetic_gtzan(
    out_dir, n_per_genre=100, duration_s=30.0, sample_rate=SAMPLE_RATE, seed=0, genres=GENRES, write_stems=False
):
    """Write a GTZAN-layout folder of synthetic clips with ground truth; return the clip ids.

    ``write_stems``: also ``stems/<clip_id>/<source>.wav`` (float32; and ``noise.wav``), each source as it
    is in the mix, so that they sum to it: the oracle separation of audioLIME's source components.
    """
    out_dir = Path(out_dir)
    unknown = [g for g in genres if g not in MIXTURES]
    if unknown:
        raise ValueError(
            f"Unknown genre(s) {unknown}; the synthetic set has {list(GENRES)} and {list(CONCEPT_CLASSES)}."
        )
    clip_ids = []
    for genre in genres:
        for k in range(n_per_genre):
            rng = np.random.default_rng([seed, list(MIXTURES).index(genre), k])
            wave, truth, stems = render_clip(genre, rng, duration_s, sample_rate, return_stems=True)
            clip_id = f"{genre}.{k:05d}"
            for name, stem in stems.items() if write_stems else ():
                stem_path = out_dir / "stems" / clip_id / f"{name}.wav"
                stem_path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(stem_path, suffix=".wav") as tmp:
                    sf.write(tmp, stem.astype(np.float32), sample_rate, subtype="FLOAT", format="WAV")
            path = out_dir / "genres" / genre / f"{clip_id}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, suffix=".wav") as tmp:
                sf.write(tmp, wave.astype(np.float32), sample_rate, subtype="PCM_16", format="WAV")
            atomic_write_json(out_dir / "ground_truth" / f"{clip_id}.json", {"clip_id": clip_id, **truth})
            clip_ids.append(clip_id)
    return clip_ids


# ------------------------------------------------------------ on a grid
def frame_hop_s(front_end):
    """Seconds between the (centred) frames of a front end (MelDbSpectrogram or Log1pSpectrogram)."""
    if hasattr(front_end, "compute_stft"):
        return front_end.compute_stft.hop_length / front_end.sample_rate
    return front_end.hop_length / front_end.sample_rate


def band_centres_hz(front_end):
    """(F,) centre frequency of each frequency bin of a front end's output."""
    if hasattr(front_end, "mel_band_edges_hz"):
        return front_end.mel_band_edges_hz()[1:-1].double()
    n_stft = front_end.compute_stft.n_fft // 2 + 1
    freqs = torch.linspace(0.0, front_end.sample_rate / 2, n_stft, dtype=torch.float64)
    if getattr(front_end, "compute_fbank", None) is None:
        return freqs
    fbank = front_end._filterbank_matrix(torch.device("cpu"), torch.float64)  # (n_stft, n_mels)
    return freqs[fbank.argmax(dim=0)]


def band_ranges_hz(front_end):
    """(F, 2) frequency range of each bin: from half-way to the bin below to half-way to the one above.

    The ranges tile 0 .. sample_rate / 2, so every box meets at least one bin.
    """
    centres = band_centres_hz(front_end)
    mids = (centres[1:] + centres[:-1]) / 2
    lo = torch.cat([centres.new_zeros(1), mids])
    hi = torch.cat([mids, centres.new_full((1,), front_end.sample_rate / 2)])
    return torch.stack([lo, hi], dim=1)


def component_masks(ground_truth, front_end, n_frames, start_s=0.0, duration_s=None):
    """{component name: (n_frames, F) bool mask} of where each component sounds, on ``front_end``'s grid.

    ``ground_truth``: the clip's dict (``ground_truth.read_ground_truth``) or its path.
    ``start_s`` / ``duration_s``: the segment the spectrogram was computed
    from (boxes are shifted to it and cut at its end). A bin is in a mask when
    its frame's span (one hop around the frame centre) and its frequency range
    (``band_ranges_hz``) meet one of the component's boxes.
    """
    if not isinstance(ground_truth, dict):
        with open(ground_truth, encoding="utf-8") as f:
            ground_truth = json.load(f)
    hop = frame_hop_s(front_end)
    centres = torch.arange(n_frames, dtype=torch.float64) * hop
    frame_lo, frame_hi = centres - hop / 2, centres + hop / 2
    bands = band_ranges_hz(front_end)
    end_s = float("inf") if duration_s is None else float(duration_s)
    masks = {}
    for component in ground_truth["components"]:
        mask = torch.zeros(n_frames, bands.shape[0], dtype=torch.bool)
        for t0, t1, f_lo, f_hi in component["boxes"]:
            t0, t1 = max(t0 - start_s, 0.0), min(t1 - start_s, end_s)
            if t1 <= t0:
                continue
            frames = (frame_hi > t0) & (frame_lo < t1)
            freqs = (bands[:, 1] > f_lo) & (bands[:, 0] <= f_hi)
            mask |= frames[:, None] & freqs[None, :]
        masks[component["name"]] = mask
    return masks
