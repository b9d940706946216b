"""Synthetic multi-label bird soundscapes whose ground truth is known.

A :class:`SpeciesBank` gives each synthetic species a call type (upslur,
trill, caw, ...) and its own frequency band, bout length and repetition. From
it come focal recordings (one species, several calls over weak background:
BirdSet's Xeno-canto-like training data), 5 s soundscapes (several species
overlapping in time over background noise, sometimes none) and long
soundscapes cut into 5 s test segments. Every call is logged as an event
``dict(species, t0, t1, f_lo, f_hi)`` (seconds, Hz), which maps onto the
mel-spectrogram grid of the front end as boxes and masks. Deterministic by
seed.
"""

import math
from dataclasses import dataclass

import numpy as np

from common.data.synthetic.signals import band_limit, band_noise, envelope, rms, tone

PEAK = 0.9  # every returned mixture is scaled to this peak (max abs)
PITCH_JITTER = 0.02  # calls of one species vary in pitch by up to this factor (log), either way


# ------------------------------------------------------------ small helpers
def _n(duration, sr):
    return max(64, int(round(duration * sr)))


def _peak(x):
    return x / (np.abs(x).max() + 1e-12)


def _inner(f_lo, f_hi, frac=0.03):
    """The band shrunk a little, so that envelope and FM spread stays inside [f_lo, f_hi]."""
    return f_lo * (1 + frac), f_hi * (1 - frac)


def _tone(freq, sr, rng):
    """A sinusoid following the instantaneous frequency ``freq`` (Hz per sample), at a random phase."""
    return tone(freq, sr, rng.uniform(0, 2 * np.pi))


def _note_env(m, sr):
    # short attack/release, never longer than the note allows
    return envelope(m, sr, attack=min(0.008, 0.25 * m / sr), release=min(0.02, 0.35 * m / sr))


def _note_train(n, sr, n_notes, duty, note):
    """``n_notes`` notes, the first starting at 0 and the last ending at ``n``; ``note(k, m)`` makes note k."""
    x = np.zeros(n)
    n_notes = max(1, min(int(n_notes), n // 64))
    m = n if n_notes == 1 else max(32, int(n * duty / n_notes))
    for k, start in enumerate(np.linspace(0, n - m, n_notes).astype(int)):
        x[start : start + m] += note(k, m) * _note_env(m, sr)
    return x


def _bout(sample_rate, duration, n_notes, duty, note):
    """A bout of ``duration`` s: ``_note_train`` of ``note``, peak 1."""
    return _peak(_note_train(_n(duration, sample_rate), sample_rate, n_notes, duty, note))


def _band_power(x, sr, lo, hi):
    """Mean power of ``x`` inside [lo, hi] Hz (per sample, so segments of any length compare)."""
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return float(np.sum(np.abs(spec[(freqs >= lo) & (freqs <= hi)]) ** 2) / len(x) ** 2 + 1e-20)


def _as_rng(rng, default=None):
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None and default is not None:
        return default
    return np.random.default_rng(rng)


def _draw(rng, value):
    """A number, or one drawn uniformly from a (lo, hi) range."""
    return float(rng.uniform(*value)) if isinstance(value, (tuple, list)) else float(value)


# ------------------------------------------------------------ call types
# Each: (rng, sample_rate, duration, f_lo, f_hi, **species parameters) -> waveform (peak 1) whose
# energy lies in [f_lo, f_hi] Hz and spans the whole duration (a bout: one or more notes).
def upslur(rng, sample_rate, duration, f_lo, f_hi, n_notes=1, duty=0.7):
    """Rising whistled note(s): an exponential sweep from the bottom to the top of the band."""
    a, b = _inner(f_lo, f_hi)
    return _bout(
        sample_rate, duration, n_notes, duty, lambda k, m: _tone(a * (b / a) ** np.linspace(0, 1, m), sample_rate, rng)
    )


def downslur(rng, sample_rate, duration, f_lo, f_hi, n_notes=1, duty=0.7):
    """Falling whistled note(s): a sweep from the top to the bottom of the band, fast at first."""
    a, b = _inner(f_lo, f_hi)

    def note(k, m):
        return _tone(a * (b / a) ** (1 - np.linspace(0, 1, m) ** 0.6), sample_rate, rng)

    return _bout(sample_rate, duration, n_notes, duty, note)


def trill(rng, sample_rate, duration, f_lo, f_hi, notes_per_s=16.0, duty=0.6):
    """A fast train of short notes, each a quick downsweep across the band."""
    a, b = _inner(f_lo, f_hi)
    n_notes = max(2, int(round(duration * notes_per_s)))
    return _bout(sample_rate, duration, n_notes, duty, lambda k, m: _tone(np.linspace(b, a, m), sample_rate, rng))


def whistle(rng, sample_rate, duration, f_lo, f_hi, vibrato_hz=6.0, n_notes=1, duty=0.8):
    """Steady whistle(s) at the band's centre with a slight vibrato that spans the (narrow) band."""
    a, b = _inner(f_lo, f_hi)
    fc = math.sqrt(a * b)
    depth = 0.9 * min(fc - a, b - fc)

    def note(k, m):
        t = np.arange(m) / sample_rate
        return _tone(fc + depth * np.sin(2 * np.pi * vibrato_hz * t + rng.uniform(0, 2 * np.pi)), sample_rate, rng)

    return _bout(sample_rate, duration, n_notes, duty, note)


def warble(rng, sample_rate, duration, f_lo, f_hi, mod_hz=7.0, n_notes=1, duty=0.85):
    """A frequency-modulated tone wandering irregularly over the band (three incommensurate modulators)."""
    a, b = _inner(f_lo, f_hi)

    def note(k, m):
        t = np.arange(m) / sample_rate
        contour = sum(np.sin(2 * np.pi * mod_hz * r * t + rng.uniform(0, 2 * np.pi)) / r for r in (1.0, 1.618, 0.57))
        contour = contour / (np.abs(contour).max() + 1e-12)
        return _tone((a + b) / 2 + (b - a) / 2 * contour, sample_rate, rng)

    return _bout(sample_rate, duration, n_notes, duty, note)


def buzz(rng, sample_rate, duration, f_lo, f_hi, pulse_hz=50.0, n_notes=1, duty=0.75):
    """Pulsed narrow noise band (an insect-like buzz), band-limited again after pulsing."""
    a, b = _inner(f_lo, f_hi)

    def note(k, m):
        t = np.arange(m) / sample_rate
        pulses = (0.5 - 0.5 * np.cos(2 * np.pi * pulse_hz * t)) ** 2
        # pulsing adds sidebands at +-2 pulse_hz: cut them back to the band
        return band_limit(band_noise(rng, m, sample_rate, a, b) * pulses, sample_rate, a, b)

    return _bout(sample_rate, duration, n_notes, duty, note)


def caw(rng, sample_rate, duration, f_lo, f_hi, n_notes=2, duty=0.75, tilt=0.7, rough_hz=30.0):
    """Harsh harmonic "caw"(s): a falling harmonic stack whose fundamental sits at the bottom of the band."""
    a, b = _inner(f_lo, f_hi)
    a = max(a, f_lo + 2 * rough_hz)  # the roughness's sidebands sit rough_hz either side of each harmonic
    top = 1.07  # the fundamental falls from top * a to a
    n_harm = max(1, int(b // (top * a)))

    def note(k, m):
        s = np.linspace(0, 1, m)
        f0 = a * (top - (top - 1) * s)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        x = sum(h**-tilt * np.sin(h * phase + rng.uniform(0, 2 * np.pi)) for h in range(1, n_harm + 1))
        t = np.arange(m) / sample_rate
        return x * (1 - 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * rough_hz * t)))  # roughness

    return _bout(sample_rate, duration, n_notes, duty, note)


def tee_too(rng, sample_rate, duration, f_lo, f_hi, n_notes=1, duty=0.85):
    """Two-note "tee-too" call(s): a high note at the top of the band, a pause, a low note at its bottom."""
    a, b = _inner(f_lo, f_hi)

    def note(k, m):
        x = np.zeros(m)
        m1, gap = int(0.4 * m), int(0.15 * m)
        m2 = m - m1 - gap
        x[:m1] = _tone(np.linspace(b, 0.985 * b, m1), sample_rate, rng) * _note_env(m1, sample_rate)
        x[m1 + gap :] = _tone(np.linspace(1.015 * a, a, m2), sample_rate, rng) * _note_env(m2, sample_rate)
        return x

    return _bout(sample_rate, duration, n_notes, duty, note)


CALL_TYPES = {
    "upslur": upslur,
    "downslur": downslur,
    "trill": trill,
    "whistle": whistle,
    "warble": warble,
    "buzz": buzz,
    "caw": caw,
    "tee_too": tee_too,
}

# Each call type's own band (Hz) for the first species of that type; the bands overlap little and
# the call shapes differ, so the first len(CALL_TYPES) species are easy to tell apart.
BASE_BANDS = {
    "upslur": (2000.0, 4000.0),
    "downslur": (3500.0, 6500.0),
    "trill": (4000.0, 5500.0),
    "whistle": (2400.0, 2800.0),
    "warble": (1500.0, 3000.0),
    "buzz": (6500.0, 9000.0),
    "caw": (500.0, 2500.0),
    "tee_too": (2800.0, 4000.0),
}


def _species_params(call_type, rng):
    """A species' own call parameters and its range of bout lengths (s)."""
    u, notes = rng.uniform, lambda hi: int(rng.integers(1, hi + 1))
    if call_type in ("upslur", "downslur"):
        kw = {"n_notes": notes(3), "duty": u(0.5, 0.8)}
        length = kw["n_notes"] * u(0.15, 0.35)
    elif call_type == "trill":
        kw = {"notes_per_s": u(10.0, 25.0), "duty": u(0.45, 0.7)}
        length = u(0.5, 1.4)
    elif call_type == "whistle":
        kw = {"vibrato_hz": u(4.0, 9.0), "n_notes": notes(2)}
        length = kw["n_notes"] * u(0.4, 0.7)
    elif call_type == "warble":
        kw = {"mod_hz": u(4.0, 12.0), "n_notes": notes(2)}
        length = u(0.6, 1.5)
    elif call_type == "buzz":
        kw = {"pulse_hz": u(30.0, 90.0), "n_notes": notes(3), "duty": u(0.6, 0.85)}
        length = kw["n_notes"] * u(0.25, 0.5)
    elif call_type == "caw":
        kw = {"n_notes": notes(4), "tilt": u(0.3, 1.2), "rough_hz": u(20.0, 45.0)}
        length = kw["n_notes"] * u(0.2, 0.35)
    else:  # tee_too
        kw = {"n_notes": notes(2)}
        length = kw["n_notes"] * u(0.45, 0.75)
    length = float(np.clip(length, 0.3, 1.5))
    return kw, (max(0.3, 0.85 * length), min(1.5, 1.15 * length))


def _band_scales(lo, hi, f_min, f_max, count, ratio=1.3, max_level=8):
    """The first ``count`` scale factors for a call type's band, each keeping it inside [f_min, f_max].

    Whole powers of ``ratio`` first (nearest the base band first), then the
    half-way powers, then the quarter-way ones, ..., so that species sharing
    a call type get distinct bands however many there are, and species i is
    the same whatever the bank's size.
    """
    e_lo, e_hi = math.log(f_min / lo) / math.log(ratio), math.log(f_max / hi) / math.log(ratio)
    exps = []
    for level in range(max_level):
        step = 2.0**-level
        ks = range(math.ceil(e_lo / step), math.floor(e_hi / step) + 1)
        exps += sorted((k * step for k in ks if level == 0 or k % 2), key=lambda e: (abs(e), -e))
        if len(exps) >= count:
            return [ratio**e for e in exps[:count]]
    raise ValueError(f"cannot fit {count} distinct bands of {lo:.0f}-{hi:.0f} Hz into {f_min:.0f}-{f_max:.0f} Hz")


# ------------------------------------------------------------ background
def background_noise(rng, n_samples, sample_rate=32000, wind=None):
    """Unit-RMS background: pink-to-brown noise, plus (``wind``: True/False, None = by chance) gusty wind.

    The coloured noise's power falls as 1/f^alpha with alpha drawn in [1, 2];
    the wind is low-pass noise (cut-off 150-500 Hz) under a slow gust envelope.
    """
    spec = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples, 1 / sample_rate)
    spec *= np.maximum(freqs, 20.0) ** (-rng.uniform(1.0, 2.0) / 2)
    spec[freqs < 20.0] = 0  # no DC or infrasound: it would dominate the level but not the spectrogram
    x = np.fft.irfft(spec, n_samples)
    x /= rms(x)
    if wind is None:
        wind = rng.random() < 0.5
    if wind:
        gust_spec = np.fft.rfft(rng.standard_normal(n_samples))
        gust_spec[freqs > rng.uniform(0.1, 0.5)] = 0
        gust = np.fft.irfft(gust_spec, n_samples)
        gust = 0.3 + (gust - gust.min()) / (np.ptp(gust) + 1e-12)  # slow, positive gust envelope
        w = band_limit(rng.standard_normal(n_samples), sample_rate, 20.0, rng.uniform(150.0, 500.0)) * gust
        x = x + w / rms(w) * rng.uniform(0.5, 2.0)
    return x / rms(x)


# ------------------------------------------------------------ species
@dataclass(frozen=True)
class Species:
    """One synthetic species: its call type and its own parameters."""

    index: int
    name: str
    call_type: str
    f_lo: float  # band (Hz) that holds every call of the species (pitch jitter included)
    f_hi: float
    call_s: tuple  # range of bout lengths (s)
    gap_s: tuple  # range of pauses between bouts (s) in focal and long recordings
    params: dict  # the call type's own parameters


class SpeciesBank:
    """``n_species`` distinguishable synthetic species, and recordings made of them.

    Species i has call type ``i % len(CALL_TYPES)``; species sharing a call
    type get bands scaled apart (factors of 1.3, then finer), so every
    (type, band) pair is distinct. ``seed`` draws each species' parameters
    (and slightly jitters its band); species i does not depend on
    ``n_species``. Methods take ``rng`` (a Generator or an int seed); without
    one they draw from the bank's own generator, so a sequence of calls is
    deterministic by ``seed`` too.
    """

    def __init__(self, n_species, sample_rate=32000, seed=0):
        if n_species < 1:
            raise ValueError(f"n_species must be >= 1, got {n_species}")
        self.n_species = n_species
        self.sample_rate = sample_rate
        self.seed = seed
        self._rng = np.random.default_rng([seed, 1])
        types = list(CALL_TYPES)
        width = max(2, len(str(n_species - 1)))
        scales = {
            t: _band_scales(
                *BASE_BANDS[t],
                f_min=250.0,
                f_max=0.45 * sample_rate,  # headroom below Nyquist for the jitters
                count=len(range(i, n_species, len(types))),
            )
            for i, t in enumerate(types[:n_species])
        }
        self.species = []
        for i in range(n_species):
            rng = np.random.default_rng([seed, 0, i])
            call_type = types[i % len(types)]
            scale = scales[call_type][i // len(types)] * math.exp(rng.uniform(-0.02, 0.02))
            lo, hi = (f * scale for f in BASE_BANDS[call_type])
            params, call_s = _species_params(call_type, rng)
            gap = rng.uniform(0.3, 1.5)
            self.species.append(
                Species(
                    index=i,
                    name=f"synsp{i:0{width}d}",
                    call_type=call_type,
                    f_lo=lo * math.exp(-PITCH_JITTER),
                    f_hi=hi * math.exp(PITCH_JITTER),
                    call_s=call_s,
                    gap_s=(gap, 2.5 * gap),
                    params=params,
                )
            )

    def __len__(self):
        return self.n_species

    @property
    def names(self):
        """eBird-like codes, one per species."""
        return [s.name for s in self.species]

    @property
    def bands(self):
        """(f_lo, f_hi) Hz per species."""
        return [(s.f_lo, s.f_hi) for s in self.species]

    def render_call(self, species_index, rng=None):
        """One call (a bout) of a species: (waveform float32 peak 1, f_lo, f_hi of this call in Hz)."""
        rng = _as_rng(rng, self._rng)
        sp = self.species[species_index]
        pitch = math.exp(rng.uniform(-PITCH_JITTER, PITCH_JITTER))
        f_lo, f_hi = sp.f_lo * math.exp(PITCH_JITTER) * pitch, sp.f_hi * math.exp(-PITCH_JITTER) * pitch
        wav = CALL_TYPES[sp.call_type](rng, self.sample_rate, rng.uniform(*sp.call_s), f_lo, f_hi, **sp.params)
        return wav.astype(np.float32), float(f_lo), float(f_hi)

    # -- mixing
    def _add_call(self, mix, background, start, wav, f_lo, f_hi, snr_db):
        """Mix a call in at ``snr_db``: its power vs the background's, both inside the call's band and span."""
        seg = slice(start, start + len(wav))
        bg_power = _band_power(background[seg], self.sample_rate, f_lo, f_hi)
        call_power = _band_power(wav.astype(np.float64), self.sample_rate, f_lo, f_hi)
        mix[seg] += wav * math.sqrt(10 ** (snr_db / 10) * bg_power / call_power)

    def _place(self, species, n, rng, busy, tries=20):
        """A call of ``species`` at a random start where it overlaps none of its own (``busy``), or None."""
        wav, f_lo, f_hi = self.render_call(species, rng)
        wav = wav[:n]
        for _ in range(tries):
            start = int(rng.integers(0, n - len(wav) + 1))
            if all(start + len(wav) <= s or start >= e for s, e in busy):
                busy.append((start, start + len(wav)))
                return start, wav, f_lo, f_hi
        return None

    def _scene(self, n, rng, placed, snr_db, wind):
        """Background plus the placed calls ``(species, start, wav, f_lo, f_hi)``: dict(wav, labels, events)."""
        background = background_noise(rng, n, self.sample_rate, wind)
        mix = background.copy()
        events = []
        for species, start, wav, f_lo, f_hi in sorted(placed, key=lambda p: (p[1], p[0])):
            self._add_call(mix, background, start, wav, f_lo, f_hi, _draw(rng, snr_db))
            t0, t1 = start / self.sample_rate, (start + len(wav)) / self.sample_rate
            events.append({"species": species, "t0": t0, "t1": t1, "f_lo": f_lo, "f_hi": f_hi})
        return {
            "wav": (mix * (PEAK / np.abs(mix).max())).astype(np.float32),
            "labels": sorted({e["species"] for e in events}),
            "events": events,
        }

    # -- recordings
    def focal_recording(self, species_index, duration_s=10.0, rng=None, snr_db=(15.0, 30.0), wind=None):
        """A focal (Xeno-canto-like) recording: one species calling several times over weak background.

        Returns dict(wav, events=[(t0, t1)] in s, species). ``snr_db`` (a
        number or a (lo, hi) range) sets the recording's level; each call
        varies by up to 3 dB around it.
        """
        rng = _as_rng(rng, self._rng)
        sp = self.species[species_index]
        n = _n(duration_s, self.sample_rate)
        level = _draw(rng, snr_db)
        background = background_noise(rng, n, self.sample_rate, wind)
        mix = background.copy()
        events = []
        start = int(rng.uniform(0.05, 0.8) * self.sample_rate) if duration_s > 2.0 else 0
        while True:
            wav, f_lo, f_hi = self.render_call(species_index, rng)
            if start + len(wav) > n:
                if events:
                    break
                start, wav = 0, wav[:n]  # a recording shorter than one call still holds one
            self._add_call(mix, background, start, wav, f_lo, f_hi, level + rng.uniform(-3.0, 3.0))
            events.append((start / self.sample_rate, (start + len(wav)) / self.sample_rate))
            start += len(wav) + int(rng.uniform(*sp.gap_s) * self.sample_rate)
        return {
            "wav": (mix * (PEAK / np.abs(mix).max())).astype(np.float32),
            "events": events,
            "species": species_index,
        }

    def soundscape(
        self,
        duration_s=5.0,
        rng=None,
        max_species=3,
        p_empty=0.15,
        snr_db=(0.0, 20.0),
        calls_per_species=(1, 3),
        wind=None,
    ):
        """A soundscape clip: up to ``max_species`` species calling, overlapping in time, over background noise.

        With probability ``p_empty`` no species calls. Each present species
        calls ``calls_per_species`` (lo, hi inclusive) times, never over
        itself. ``snr_db`` (a number or a (lo, hi) range, drawn per call) is
        each call's power against the background's inside the call's band
        and time span. Returns dict(wav, labels=sorted species indices,
        events=[dict(species, t0, t1, f_lo, f_hi)] sorted by t0).
        """
        rng = _as_rng(rng, self._rng)
        n = _n(duration_s, self.sample_rate)
        placed = []
        if rng.random() >= p_empty:
            k = int(rng.integers(1, min(max_species, self.n_species) + 1))
            for species in sorted(rng.choice(self.n_species, size=k, replace=False).tolist()):
                busy = []
                for _ in range(int(rng.integers(calls_per_species[0], calls_per_species[1] + 1))):
                    if (p := self._place(species, n, rng, busy)) is not None:
                        placed.append((species, *p))
        return self._scene(n, rng, placed, snr_db, wind)

    def long_soundscape(
        self, duration_s=60.0, rng=None, max_species=5, snr_db=(0.0, 20.0), calls_per_minute=(4.0, 20.0), wind=None
    ):
        """A long soundscape (e.g. 30-60 s, to cut into 5 s test segments), structured like :meth:`soundscape`.

        1..``max_species`` species are present, each calling at its own rate
        (drawn from ``calls_per_minute``) at Poisson times, never over itself;
        calls may straddle segment boundaries, as in real soundscapes.
        """
        rng = _as_rng(rng, self._rng)
        n = _n(duration_s, self.sample_rate)
        placed = []
        k = int(rng.integers(1, min(max_species, self.n_species) + 1))
        for species in sorted(rng.choice(self.n_species, size=k, replace=False).tolist()):
            mean_gap = 60.0 / rng.uniform(*calls_per_minute)
            t = rng.exponential(mean_gap)
            while True:
                wav, f_lo, f_hi = self.render_call(species, rng)
                start = int(t * self.sample_rate)
                if start + len(wav) > n:
                    break
                placed.append((species, start, wav, f_lo, f_hi))
                t += len(wav) / self.sample_rate + rng.exponential(mean_gap)
        return self._scene(n, rng, placed, snr_db, wind)


# ------------------------------------------------------------ segments and labels
def segment_labels(events, start, end, min_overlap_s=0.1):
    """Sorted species whose events overlap the window [start, end) s by ``min_overlap_s`` (or entirely)."""
    labels = set()
    for e in events:
        overlap = min(e["t1"], end) - max(e["t0"], start)
        if overlap > 0 and overlap >= min(min_overlap_s, e["t1"] - e["t0"]):
            labels.add(e["species"])
    return sorted(labels)


def cut_segments(scene, segment_s=5.0, sample_rate=32000, min_overlap_s=0.1):
    """Consecutive whole segments of a (long) soundscape: dict(wav, labels, events, start_s) each.

    A segment's events are those counted by :func:`segment_labels`, clipped
    to it, with times relative to its start.
    """
    seg_n = int(round(segment_s * sample_rate))
    out = []
    for i in range(len(scene["wav"]) // seg_n):
        start, end = i * segment_s, (i + 1) * segment_s
        labels = segment_labels(scene["events"], start, end, min_overlap_s)
        events = [
            {**e, "t0": max(e["t0"], start) - start, "t1": min(e["t1"], end) - start}
            for e in scene["events"]
            if segment_labels([e], start, end, min_overlap_s)
        ]
        out.append(
            {"wav": scene["wav"][i * seg_n : (i + 1) * seg_n], "labels": labels, "events": events, "start_s": start}
        )
    return out


# ------------------------------------------------------------ spectrogram grid
def hz_to_mel_bin(f_hz, n_mels, sample_rate=32000, f_max=None, f_min=0.0):
    """Position of a frequency on the mel axis, in bins (bin i's filter peaks at i).

    HTK mel scale with ``n_mels + 2`` filter corners evenly spaced in mel from
    ``f_min`` to ``f_max`` (default sr/2), as torchaudio's ``MelScale``.
    """
    f_max = sample_rate / 2 if f_max is None else f_max

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=float) / 700.0)

    return (mel(f_hz) - mel(f_min)) / (mel(f_max) - mel(f_min)) * (n_mels + 1) - 1


def event_boxes_on_grid(
    events, n_frames, n_mels, sample_rate=32000, hop_length=256, n_fft=2048, f_max=None, offset_s=0.0, f_min=0.0
):
    """Events as boxes (species, frame0, frame1, mel0, mel1) on a (centred STFT, mel) grid; ends exclusive.

    Frames: frame = round((t - offset_s) * sr / hop), from t0's frame to
    t1's, inclusive. Mel bands: every band whose triangular filter overlaps
    [f_lo, f_hi] widened by one STFT bin (sr / n_fft) of leakage. Boxes are
    clipped to the grid; events outside it give none.
    """
    top = sample_rate / 2 if f_max is None else f_max
    leak = sample_rate / n_fft
    boxes = []
    for e in events:
        frame0 = max(0, int(np.floor((e["t0"] - offset_s) * sample_rate / hop_length + 0.5)))
        frame1 = min(n_frames, int(np.floor((e["t1"] - offset_s) * sample_rate / hop_length + 0.5)) + 1)
        lo, hi = (
            float(hz_to_mel_bin(np.clip(f, f_min, top), n_mels, sample_rate, top, f_min))
            for f in (e["f_lo"] - leak, e["f_hi"] + leak)
        )
        # filter i spans positions (i - 1, i + 1): it overlaps [lo, hi] for floor(lo) <= i <= ceil(hi)
        mel0, mel1 = max(0, math.floor(lo)), min(n_mels, math.ceil(hi) + 1)
        if frame1 > frame0 and mel1 > mel0:
            boxes.append((e["species"], frame0, frame1, mel0, mel1))
    return boxes


def event_boxes_mask(
    events,
    n_frames,
    n_mels,
    species=None,
    sample_rate=32000,
    hop_length=256,
    n_fft=2048,
    f_max=None,
    offset_s=0.0,
    f_min=0.0,
):
    """(n_frames, n_mels) bool: the union of the events' boxes (only ``species``'s when given)."""
    mask = np.zeros((n_frames, n_mels), dtype=bool)
    for sp, f0, f1, m0, m1 in event_boxes_on_grid(
        events, n_frames, n_mels, sample_rate, hop_length, n_fft, f_max, offset_s, f_min
    ):
        if species is None or sp == species:
            mask[f0:f1, m0:m1] = True
    return mask
