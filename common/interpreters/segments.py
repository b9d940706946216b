"""Time-segment surrogates (Bolaños, Pepino, Meza & Ferrer, Interspeech 2025).

"Benchmarking time-localized explanations for audio classification models":
the clip is cut into ~100 ms segments, random sets of segments are removed,
the classifier scores every perturbed clip, and a surrogate regression over
the binary segment indicators gives one score per segment. The explanation is
time-only: a segment's score on every frame of the segment and every
frequency bin. ``segment_linear`` and ``segment_forest`` differ only in the
surrogate. Built on LIME's machinery (``lime_shap.ComponentInterpreter``:
batched scoring of coalitions without gradients, scores spread back over the
components, top-k mask), with time segments of a fixed duration as the
components.

As in the authors' code (github.com/ceciliabolanos/explain_where), except
where a bracket says otherwise:

* segments: ``segment_ms`` (100) of the classifier's frames each (its front
  end's frame rate), as equal as the clip's frame count allows: T frames give
  round(T / frames per segment) segments [they cut the waveform into 100 ms
  pieces, the last one shorter];
* perturbations: ``n_samples`` rows, the first the clip itself; in the others
  each segment is kept with probability ``keep_probability``, independently
  [they remove a fixed fraction, e.g. 40 %, in runs of e.g. 3 adjacent
  segments];
* ``fill="silence"``: removed segments hold the front end's silence
  (``silence_of``), which is what their zeroed waveform becomes: 0 for a
  log1p front end, the clip's ``top_db`` floor for a z-scored dB one, where 0
  would be the *mean* level. ``fill="noise"``: Gaussian noise with each
  frequency bin's own mean and standard deviation over the clip's frames,
  floored at the silence, drawn afresh for every perturbation (as theirs is)
  [they put white Gaussian noise in the waveform, its variance a fraction of
  the clip's 95th-percentile sample power]. The noise is drawn on the
  features rather than on audio because the interface gives X, not the wav;
  with the clip's own per-bin statistics it has the clip's spectral envelope
  and level on any front end, so a removed segment loses its time structure
  (the event) without gaining a spectrum or a level the model never sees in
  that clip;
* ``output="log_odds"``: log(p / (1 - p)) of the target, as they explain (the
  logit itself for a sigmoid output);
* ``surrogate="linear"``: sklearn ``Ridge`` (``ridge_alpha``), every
  perturbation weighted equally; the score is its coefficient [their linear
  surrogate has alpha 1e-7 and LIME's kernel of the waveforms' Euclidean
  distance; ``lime`` with ``components: time_segments`` here is the
  kernel-weighted one];
* ``surrogate="forest"``: sklearn ``RandomForestRegressor`` (``n_estimators``
  100 as theirs; seeded, one job). ``forest_score="effect"`` (the default)
  scores segment k by the forest's mean change in output when k is kept
  rather than removed, the other segments as sampled (partial dependence at 1
  minus at 0): signed and in the output's units, it equals the coefficient
  for an additive model, and counter-evidence scores below 0.
  ``forest_score="importance"`` is what they used: the impurity importance
  ``feature_importances_``, unsigned (a segment that lowers the target's
  output scores as high as one that raises it) [their forest also weights
  samples by the waveform distance; equal weights here].

Extras (``per_clip``): ``surrogate_r2`` (R^2 of the surrogate on its own
samples), for the forest also ``surrogate_oob_r2`` (out of bag, the honest
one: a forest fits its own samples almost perfectly), and ``n_segments``.
"""

import math
import warnings

import numpy as np
import torch
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge

from common.errors import ConfigError
from common.interpreters.components import Components, TimeSegments
from common.interpreters.lime_shap import ComponentInterpreter
from common.registry import INTERPRETERS

SURROGATES = ("linear", "forest")
FILLS = ("silence", "noise")
FOREST_SCORES = ("effect", "importance")


class SegmentsOfDuration(Components):
    """Consecutive stretches of about ``frames`` frames (a duration times the frame rate), all frequencies each.

    T frames give round(T / frames) segments (at least 1, at most T), as equal as possible (``TimeSegments``).
    """

    def __init__(self, frames):
        if not frames > 0:
            raise ConfigError(f"a segment must span a positive number of frames, got {frames}")
        self.frames = float(frames)

    def segment(self, X):
        T = X.shape[1]
        return TimeSegments(min(T, max(1, round(T / self.frames)))).segment(X)


def frames_per_ms(classifier):
    """Frames of the classifier's input per millisecond (its front end's frame rate / 1000)."""
    rate = getattr(getattr(classifier, "front_end", None), "frame_rate", None)
    if rate is None:
        raise ConfigError(
            f"{type(classifier).__name__} has no front end with a frame rate, so segment_ms cannot be turned "
            "into frames; give segment_frames instead"
        )
    return float(rate) / 1000.0


def forest_effects(forest, Z):
    """(K,): the mean over the rows z of Z of f(z with z_k = 1) - f(z with z_k = 0), all k in one ``predict``."""
    N, K = Z.shape
    probes = np.repeat(Z[None], 2 * K, axis=0)  # (2K, N, K): K copies with z_k = 1, then K with z_k = 0
    k = np.arange(K)
    probes[k, :, k] = 1.0
    probes[K + k, :, k] = 0.0
    kept, removed = forest.predict(probes.reshape(-1, K)).reshape(2, K, N)
    return (kept - removed).mean(axis=1)


class SegmentSurrogateInterpreter(ComponentInterpreter):
    """Perturb ~``segment_ms`` segments, fit a ``linear`` or ``forest`` surrogate (see the module doc).

    Arguments
    ---------
    classifier : AudioClassifier
    surrogate : str
        ``linear`` (ridge) or ``forest`` (random forest).
    segment_ms : float
        Duration of a segment; ``segment_frames`` (frames) instead, for a classifier without a front end.
    n_samples : int
        Perturbations scored per clip (forward passes), the clip itself included.
    fill : str
        What a removed segment holds: ``silence`` (the front end's) or ``noise`` (the clip's per-bin statistics).
    keep_probability : float
        Probability that a segment is kept in a perturbation.
    ridge_alpha : float
        The linear surrogate's L2 penalty.
    n_estimators, forest_score : int, str
        The forest's trees, and its score: ``effect`` (signed) or ``importance`` (impurity, the paper's).
    output, batch_size, top_k, seed :
        As for LIME (``ComponentInterpreter``); ``output`` defaults to ``log_odds``.
    """

    def __init__(
        self,
        classifier,
        surrogate,
        segment_ms=100.0,
        n_samples=256,
        fill="silence",
        keep_probability=0.5,
        ridge_alpha=1.0,
        n_estimators=100,
        forest_score="effect",
        output="log_odds",
        batch_size=64,
        top_k=3,
        seed=0,
        segment_frames=None,
    ):
        for name, value, known in (
            ("surrogate", surrogate, SURROGATES),
            ("fill", fill, FILLS),
            ("forest_score", forest_score, FOREST_SCORES),
        ):
            if value not in known:
                raise ConfigError(f"{name} {value!r} is unknown; use one of {list(known)}")
        if not 0 < keep_probability < 1:
            raise ConfigError(f"keep_probability must be in (0, 1), got {keep_probability}")
        frames = segment_frames if segment_frames is not None else segment_ms * frames_per_ms(classifier)
        # removal always fills at the silence: as the fill, or as the floor of the noise
        super().__init__(
            classifier,
            components=SegmentsOfDuration(frames),
            baseline="silence",
            n_samples=n_samples,
            batch_size=batch_size,
            output=output,
            top_k=top_k,
            seed=seed,
        )
        self.surrogate = surrogate
        self.fill = fill
        self.keep_probability = float(keep_probability)
        self.ridge_alpha = float(ridge_alpha)
        self.n_estimators = int(n_estimators)
        self.forest_score = forest_score

    def perturbations(self, K, rng):
        """(n_samples, K) bool: row 0 keeps every segment, the others each with ``keep_probability``."""
        rows = rng.random((self.n_samples, K)) < self.keep_probability
        rows[0] = True
        return rows

    @staticmethod
    def noise_fill(x, silence, seed):
        """``fill(lo, hi)``: (hi - lo, T, F) Gaussian noise of ``x``'s per-bin mean and std, floored at the silence.

        One generator per clip, drawn in row order, so a seed gives the same fills at the same ``batch_size``.
        """
        mean, std = x.mean(dim=0), x.std(dim=0, correction=0)  # (F,): each bin over the clip's frames
        generator = torch.Generator(device="cpu").manual_seed(int(seed))

        def fill(lo, hi):
            draw = torch.randn((hi - lo, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
            return torch.maximum(mean + std * draw, silence)

        return fill

    def explain_components(self, x, base, ids, target, seed):
        K = int(ids.max()) + 1
        rows = self.perturbations(K, np.random.default_rng(seed))
        fill = self.noise_fill(x, base, seed) if self.fill == "noise" else base  # base: the clip's silence
        values = self.score_coalitions(x, fill, ids, torch.from_numpy(rows).to(x.device), target)
        Z = rows.astype(np.float64)
        if self.surrogate == "linear":
            ridge = Ridge(alpha=self.ridge_alpha).fit(Z, values)
            return ridge.coef_, {"surrogate_r2": ridge.score(Z, values), "n_segments": K}
        forest = RandomForestRegressor(n_estimators=self.n_estimators, oob_score=True, random_state=seed, n_jobs=1)
        with warnings.catch_warnings():  # a sample no tree left out (tiny n_samples): its OOB score is NaN
            warnings.simplefilter("ignore", UserWarning)
            forest.fit(Z, values)
        scores = forest_effects(forest, Z) if self.forest_score == "effect" else forest.feature_importances_
        oob = float(forest.oob_score_)
        return scores, {
            "surrogate_r2": forest.score(Z, values),
            "surrogate_oob_r2": oob if math.isfinite(oob) else float("nan"),
            "n_segments": K,
        }


@INTERPRETERS.register("segment_linear")
class SegmentLinearInterpreter(SegmentSurrogateInterpreter):
    """Time segments with a ridge surrogate (Bolaños et al. 2025's linear one); options as the base's."""

    def __init__(self, classifier, **options):
        super().__init__(classifier, surrogate="linear", **options)


@INTERPRETERS.register("segment_forest")
class SegmentForestInterpreter(SegmentSurrogateInterpreter):
    """Time segments with a random-forest surrogate (Bolaños et al. 2025's best); options as the base's."""

    def __init__(self, classifier, **options):
        super().__init__(classifier, surrogate="forest", **options)
