"""Interpretable clip-level audio features of a spectrogram, and interventions that set them.

The classifier sees a spectrogram X (B, T, F), not the features, so the ALE of
the *model* (not of a surrogate) needs, for every feature, an intervention that
sets the feature of a clip's spectrogram to a chosen value while leaving the
rest of the clip as it is. The model is then evaluated at the two edges of the
feature's interval for each clip that lies in it:

- ``band_energy_*`` (mean dB in a frequency band): a constant dB offset on the band's bins;
- ``loudness`` (mean dB over all bins): a constant dB offset everywhere;
- ``spectral_centroid`` (Hz, of the clip's power): a spectral tilt in dB per octave, zero-mean over the
  bins so the loudness is unchanged, solved by bisection;
- ``spectral_flatness`` (mean over frames of geometric / arithmetic mean power): the dB deviations from
  each frame's mean level scaled by a contrast factor (0 = white, > 1 = peakier), solved by bisection;
  the frames' mean levels, hence the loudness, are unchanged;
- ``onset_rate`` (onsets per second, peaks of the spectral flux): the time axis resampled by the ratio
  target / current, wrapped (tiled) or cropped to the clip's length; onset counts are integers, so the
  ratio is refined over a few nearby candidates and the closest hit is kept.

Interventions work in dB; a ``SpectrogramDomain`` converts the model's domain
(MelDbSpectrogram's z-scored dB, Log1pSpectrogram's log1p magnitude) to dB and
back, and knows the bins' frequencies and the frame rate, all of which the
front end declares (``common.features.FrontEnd``). How well each
intervention hit its targets is measured and kept in the result.
MelDbSpectrogram's per-clip ``top_db`` floor is not re-applied after an
intervention: the change in dB is exactly what the feature asks for.
"""

import math
from dataclasses import dataclass

import torch

from common.errors import ToolkitError
from common.features import FrontEnd
from common.registry import Registry

LN10_OVER_10 = math.log(10.0) / 10.0  # dB -> natural log of power


# -- the model's spectrogram domain, in dB ---------------------------------------------
@dataclass
class SpectrogramDomain:
    """What interventions need to know about X: bin frequencies, frame rate, the dB conversion.

    bin_hz     : (F,) centre frequency of each bin, ascending
    frame_rate : frames per second
    scale      : an object with ``to_db(X)`` and ``from_db(db)``
    """

    bin_hz: torch.Tensor
    frame_rate: float
    scale: object

    def __post_init__(self):
        self.bin_hz = torch.as_tensor(self.bin_hz, dtype=torch.float64).flatten()
        if self.bin_hz.numel() < 2 or bool((self.bin_hz.diff() <= 0).any()):
            raise ToolkitError("SpectrogramDomain.bin_hz must hold at least two ascending bin frequencies")
        if not self.frame_rate > 0:
            raise ToolkitError(f"SpectrogramDomain.frame_rate must be positive, got {self.frame_rate}")

    @classmethod
    def from_front_end(cls, front_end):
        """The domain of a front end: it knows its bins' frequencies, its frame rate and its dB scale."""
        if not isinstance(front_end, FrontEnd):
            raise ToolkitError(
                f"No spectrogram domain is known for a {type(front_end).__name__} front end (not a "
                "common.features.FrontEnd); build SpectrogramDomain(bin_hz=..., frame_rate=..., "
                "scale=DecibelScale(...)) for it explicitly"
            )
        return cls(bin_hz=front_end.bin_frequencies(), frame_rate=front_end.frame_rate, scale=front_end)

    def to_db(self, X):
        return self.scale.to_db(X.to(torch.float64))

    def from_db(self, db, like):
        """dB back to the model's domain, in the dtype and device of ``like``."""
        return self.scale.from_db(db).to(like.dtype)

    def bin_hz_on(self, X):
        return self.bin_hz.to(X.device)


# -- clip-level features and their interventions ---------------------------------------
class ClipFeature:
    """A clip-level scalar of a spectrogram and the intervention that sets it.

    ``value(X) -> (B,)`` float64; ``set_to(X, target) -> X'`` shaped and typed
    like X, whose ``value`` is ``target`` (B,) as nearly as the intervention can.
    """

    unit = ""

    def __init__(self, domain, name=None):
        self.domain = domain
        self.name = name or getattr(self, "registry_name", type(self).__name__)

    @property
    def label(self):
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def value(self, X):
        return self.value_db(self.domain.to_db(X))

    def set_to(self, X, target):
        db = self.domain.to_db(X)
        target = torch.as_tensor(target, dtype=torch.float64, device=X.device).reshape(-1).expand(X.shape[0])
        return self.domain.from_db(self.set_db(db, target), like=X)

    def value_db(self, db):
        raise NotImplementedError

    def set_db(self, db, target):
        raise NotImplementedError


def _bisect(evaluate, target, lo, hi, increasing=True, n_iter=50):
    """Per clip, the parameter in [lo, hi] where the monotone ``evaluate(param (B,)) -> (B,)`` meets ``target``."""
    lo = torch.full_like(target, float(lo))
    hi = torch.full_like(target, float(hi))
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        below = evaluate(mid) < target
        if not increasing:
            below = ~below
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


class BandEnergy(ClipFeature):
    """Mean level (dB) of the bins whose centre lies in [lo_hz, hi_hz); set by a dB offset on them."""

    unit = "dB"

    def __init__(self, domain, lo_hz, hi_hz, name=None):
        super().__init__(domain, name or f"band_energy_{lo_hz:g}_{hi_hz:g}Hz")
        self.lo_hz, self.hi_hz = float(lo_hz), float(hi_hz)
        self.bins = (domain.bin_hz >= self.lo_hz) & (domain.bin_hz < self.hi_hz)
        if not bool(self.bins.any()):
            raise ToolkitError(
                f"feature {self.name!r}: no bin of this spectrogram lies in [{self.lo_hz:g}, {self.hi_hz:g}) Hz "
                f"(bins span {float(domain.bin_hz[0]):.1f}..{float(domain.bin_hz[-1]):.1f} Hz); widen the band"
            )

    def value_db(self, db):
        return db[..., self.bins.to(db.device)].mean(dim=(1, 2))

    def set_db(self, db, target):
        offset = torch.where(self.bins.to(db.device), (target - self.value_db(db))[:, None], 0.0)
        return db + offset[:, None, :]


class Loudness(ClipFeature):
    """Mean level (dB) over all time-frequency bins; set by one dB offset."""

    unit = "dB"

    def value_db(self, db):
        return db.mean(dim=(1, 2))

    def set_db(self, db, target):
        return db + (target - self.value_db(db))[:, None, None]


class SpectralCentroid(ClipFeature):
    """Power-weighted mean frequency (Hz) of the whole clip; set by a loudness-neutral spectral tilt.

    The tilt adds ``s * (log2 f - mean log2 f)`` dB to every bin (s in dB per
    octave, the lowest bin at 0 Hz counted as half the next one), which moves
    the centroid monotonically in s and keeps the mean dB over bins.
    """

    unit = "Hz"

    def __init__(self, domain, max_tilt_db_per_octave=48.0, n_iter=50, name=None):
        super().__init__(domain, name)
        self.max_tilt, self.n_iter = float(max_tilt_db_per_octave), int(n_iter)
        hz = domain.bin_hz
        octaves = torch.log2(hz.clamp(min=float(hz[hz > 0].min()) / 2))
        self.tilt_shape = octaves - octaves.mean()

    def value_db(self, db):
        weights = torch.softmax(db.flatten(1) * LN10_OVER_10, dim=1).view_as(db)  # power share of each bin
        return (weights.sum(dim=1) * self.domain.bin_hz_on(db)).sum(dim=1)

    def set_db(self, db, target):
        shape = self.tilt_shape.to(db.device)

        def tilted(slope):
            return db + slope[:, None, None] * shape

        slope = _bisect(lambda s: self.value_db(tilted(s)), target, -self.max_tilt, self.max_tilt, n_iter=self.n_iter)
        return tilted(slope)


class SpectralFlatness(ClipFeature):
    """Mean over frames of (geometric / arithmetic mean power); set by scaling each frame's spectral contrast.

    dB' = m_t + c (dB - m_t), m_t the frame's mean dB: c = 0 makes every frame
    flat (flatness 1), c > 1 peakier; flatness falls monotonically with c and
    the frames' mean levels are unchanged.
    """

    unit = ""

    def __init__(self, domain, max_contrast=16.0, n_iter=50, name=None):
        super().__init__(domain, name)
        self.max_contrast, self.n_iter = float(max_contrast), int(n_iter)

    def value_db(self, db):
        log_power = db * LN10_OVER_10
        log_geometric = log_power.mean(dim=2)
        log_arithmetic = torch.logsumexp(log_power, dim=2) - math.log(db.shape[2])
        return torch.exp(log_geometric - log_arithmetic).mean(dim=1)

    def set_db(self, db, target):
        frame_mean = db.mean(dim=2, keepdim=True)

        def contrasted(c):
            return frame_mean + c[:, None, None] * (db - frame_mean)

        contrast = _bisect(
            lambda c: self.value_db(contrasted(c)), target, 0.0, self.max_contrast, increasing=False, n_iter=self.n_iter
        )
        return contrasted(contrast)


class OnsetRate(ClipFeature):
    """Onsets per second: peaks of the spectral flux, picked much as librosa's ``onset_detect`` does.

    The bins are summed (in power) into ``n_bands`` contiguous bands, so the
    noise in single bins averages out; flux(t) = mean over bands of the dB rise
    from frame t-1 (half-wave rectified), normalised to [0, 1] per clip. Frame t
    is an onset when it is the maximum within +-``max_window_s``, rises from
    frame t-1, exceeds the mean within +-``avg_window_s`` by ``delta``, and
    exceeds the clip's median flux by ``n_mads`` scaled median absolute
    deviations (so noise between sparse hits is not counted) and ``min_rise_db``.

    Set by time-scaling (``time_scaled``): frame j of the result is the clip's
    mean over frames [j, j + 1) * ratio, tiled when ratio > 1 and cropped when
    < 1, with ratio = target / current refined over ``n_candidates`` factors in
    ``refine`` (the count is an integer, so the plain ratio can miss by one).
    Clips without onsets have no rate to scale and are left as they are.
    """

    unit = "onsets/s"

    def __init__(
        self,
        domain,
        n_bands=8,
        max_window_s=0.03,
        avg_window_s=0.1,
        delta=0.07,
        n_mads=3.0,
        min_rise_db=0.1,
        refine=(2 / 3, 1.5),
        n_candidates=21,
        name=None,
    ):
        super().__init__(domain, name)
        self.n_bands = int(n_bands)
        self.max_window = max(1, round(max_window_s * domain.frame_rate))
        self.avg_window = max(1, round(avg_window_s * domain.frame_rate))
        self.delta, self.n_mads, self.min_rise_db = float(delta), float(n_mads), float(min_rise_db)
        # Candidate ratios around target/current; 1.0 first so ties keep the plain ratio.
        grid = torch.linspace(math.log(refine[0]), math.log(refine[1]), n_candidates, dtype=torch.float64).exp()
        self.ratio_factors = torch.cat([torch.ones(1, dtype=torch.float64), grid])

    def band_levels(self, db):
        """(B, T, n_bands) dB level of contiguous groups of bins: summing power over a band steadies noise."""
        groups = torch.tensor_split(db * LN10_OVER_10, min(self.n_bands, db.shape[2]), dim=2)
        return torch.stack([torch.logsumexp(group, dim=2) / LN10_OVER_10 for group in groups], dim=2)

    def onsets(self, db):
        """(B, T) bool: which frames are onsets."""
        levels = self.band_levels(db)
        flux = (levels[:, 1:] - levels[:, :-1]).clamp(min=0).mean(dim=2)
        flux = torch.cat([torch.zeros_like(flux[:, :1]), flux], dim=1)
        low, high = flux.amin(dim=1, keepdim=True), flux.amax(dim=1, keepdim=True)
        envelope = (flux - low) / (high - low).clamp(min=1e-12)
        pooled_max = torch.nn.functional.max_pool1d(
            envelope[:, None], 2 * self.max_window + 1, stride=1, padding=self.max_window
        )[:, 0]
        local_mean = torch.nn.functional.avg_pool1d(
            envelope[:, None], 2 * self.avg_window + 1, stride=1, padding=self.avg_window, count_include_pad=False
        )[:, 0]
        rising = torch.cat([torch.zeros_like(envelope[:, :1], dtype=torch.bool), envelope[:, 1:] > envelope[:, :-1]], 1)
        # Robust floor: a peak must also stand out from the clip's typical flux (median + k * scaled MAD).
        median = envelope.median(dim=1, keepdim=True).values
        spread = 1.4826 * (envelope - median).abs().median(dim=1, keepdim=True).values
        salient = envelope > median + self.n_mads * spread
        audible = flux >= self.min_rise_db  # a still (or numerically jittering) clip has no onsets
        return (envelope >= pooled_max) & rising & (envelope >= local_mean + self.delta) & salient & audible

    def value_db(self, db):
        return self.onsets(db).sum(dim=1).to(torch.float64) * self.domain.frame_rate / db.shape[1]

    @staticmethod
    def time_scaled(db, ratio):
        """Frame j of the result = the mean of the clip over frames [j, j + 1) * ratio, the clip tiled in time.

        Averaging over the span (rather than reading one point) keeps short
        onsets when the clip is compressed (ratio > 1), as an anti-aliasing
        filter would.
        """
        n_clips, n_frames, n_bins = db.shape
        # Integral of the piecewise-constant clip from 0 to every frame boundary, then to any time x.
        integral = torch.cat([torch.zeros_like(db[:, :1]), db.cumsum(dim=1)], dim=1)  # (B, T + 1, F)

        def integral_to(x):
            laps = torch.div(x, n_frames, rounding_mode="floor")
            within = x - laps * n_frames
            frame = within.floor().long().clamp(max=n_frames - 1)
            index = frame[..., None].expand(-1, -1, n_bins)
            partial = torch.gather(integral, 1, index) + (within - frame)[..., None] * torch.gather(db, 1, index)
            return laps[..., None] * integral[:, -1:, :] + partial

        boundaries = torch.arange(n_frames + 1, dtype=db.dtype, device=db.device) * ratio[:, None]
        spans = integral_to(boundaries)
        return (spans[:, 1:] - spans[:, :-1]) / ratio[:, None, None]

    def set_db(self, db, target):
        current = self.value_db(db)
        movable = current > 0
        base_ratio = torch.where(movable, target / current.clamp(min=1e-12), torch.ones_like(current))
        # A rate of 0 is the limit ratio -> 0: one source frame held still; 1 / n_frames is that limit here.
        n_frames = db.shape[1]
        best, best_error = db, (current - target).abs()
        for factor in self.ratio_factors.tolist():
            ratio = torch.where(movable, base_ratio * factor, torch.ones_like(base_ratio)).clamp(1 / n_frames, n_frames)
            candidate = self.time_scaled(db, ratio)
            error = (self.value_db(candidate) - target).abs()
            better = (error < best_error - 1e-9) & torch.isfinite(candidate).flatten(1).all(dim=1)
            best = torch.where(better[:, None, None], candidate, best)
            best_error = torch.where(better, error, best_error)
        return best


CLIP_FEATURES = Registry("clip feature")

# Bands for music at 22.05 kHz: bass and kick / voice and most harmonics / brightness, cymbals, noise.
BAND_PRESETS_HZ = {"low": (0.0, 250.0), "mid": (250.0, 2000.0), "high": (2000.0, math.inf)}


def _register_band_preset(band, lo_hz, hi_hz):
    name = f"band_energy_{band}"

    def build(domain, name=name):
        return BandEnergy(domain, lo_hz, hi_hz, name=name)

    CLIP_FEATURES.register(name)(build)


for _band, (_lo, _hi) in BAND_PRESETS_HZ.items():
    _register_band_preset(_band, _lo, _hi)
CLIP_FEATURES.register("band_energy")(BandEnergy)
CLIP_FEATURES.register("loudness")(Loudness)
CLIP_FEATURES.register("spectral_centroid")(SpectralCentroid)
CLIP_FEATURES.register("spectral_flatness")(SpectralFlatness)
CLIP_FEATURES.register("onset_rate")(OnsetRate)


def build_clip_features(specs, domain):
    """Features from a YAML list: names (``loudness``) or dicts (``{name: band_energy, lo_hz: 60, hi_hz: 250}``)."""
    features = []
    for spec in specs:
        if isinstance(spec, ClipFeature):
            features.append(spec)
        elif isinstance(spec, str):
            features.append(CLIP_FEATURES.build(spec, domain))
        elif isinstance(spec, dict) and "name" in spec:
            options = {k: v for k, v in spec.items() if k not in ("name", "label")}
            feature = CLIP_FEATURES.build(spec["name"], domain, **options)
            if "label" in spec:
                feature.name = spec["label"]
            features.append(feature)
        else:
            raise ToolkitError(
                f"Cannot build a clip feature from {spec!r}: give a registered name ({CLIP_FEATURES.names()}) "
                "or a dict with a 'name' key and that feature's options"
            )
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ToolkitError(f"Clip feature names must be unique (they name the output files); got {names}")
    return features
