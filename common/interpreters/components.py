"""Interpretable components of a spectrogram, the baselines that remove them, and top-k masks.

LIME and Kernel SHAP explain a clip in terms of a few interpretable
components: an integer mask (T, F) -> component id 0..K-1 over the
spectrogram X the classifier sees. Chosen by name in hparams
(``components: time_mel_grid`` + ``component_options: {n_time: 10}``) or
built directly (``!new:common.interpreters.components.TimeMelGrid``):

* ``time_segments``: ``n_segments`` equal stretches of time (audioLIME's temporal segmentation);
* ``mel_bands``: ``n_bands`` equal groups of frequency bins;
* ``time_mel_grid``: an ``n_time`` x ``n_freq`` grid of rectangles (SoundLIME, Mishra et al. 2017);
* ``superpixels``: an image segmentation of the spectrogram (scikit-image quickshift, slic or
  felzenszwalb), as ``lime_image`` segments a picture.

A removed component takes the value of a baseline: ``silence`` (the default:
``classifier.silence(X)``, what its front end makes of a bin with no energy
in that clip: 0 for log1p, the clip's ``top_db`` floor for a dB front end),
``zeros`` (the number 0, which is silence only for a log1p front end),
``minimum`` (the clip's own minimum: its quietest bin, louder than silence
when the clip has no silent bin), ``mean`` (each component's own mean,
``lime_image``'s ``hide_color=None``; the clip's mean when no components are
given) or ``noise`` (Gaussian noise with the clip's mean and standard
deviation, seeded).
"""

import contextlib
import difflib
import inspect

import numpy as np
import torch

from common.errors import ConfigError, DataError
from common.features import silence_of


def check_spectrogram(X):
    """A finite (B, T, F) batch, or a DataError saying what is wrong."""
    if X.ndim != 3:
        raise DataError(f"interpreters take a spectrogram batch X of shape (B, T, F), got {tuple(X.shape)}")
    if not torch.isfinite(X).all():
        raise DataError("the spectrogram X holds NaN or infinite values; check the audio and the front end")


def _check_count(name, n, size, axis):
    if not 1 <= int(n) <= size:
        raise ConfigError(f"{name}={n} must be between 1 and the {size} {axis} of X; lower it in the hparams")
    return int(n)


def _unknown_name(field, name, valid):
    """A ConfigError: ``name`` is not one of ``valid``; the closest valid name suggested."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{field} {name!r} is unknown.{hint} Valid: {sorted(valid)}")


def _check_option_names(owner, options, valid):
    unknown = [key for key in options if key not in valid]
    if unknown:
        raise _unknown_name(f"{owner} option", unknown[0], valid)


def _equal_parts(size, n, device):
    """(size,) index of the part (0..n-1) each of ``size`` positions falls in, parts as equal as possible."""
    return torch.arange(size, device=device) * n // size


class Components:
    """Base class: ``__call__(X) -> (B, T, F)`` int64 component ids, 0..K-1 for each clip."""

    def __call__(self, X):
        check_spectrogram(X)
        return self.segment(X)

    def segment(self, X):
        raise NotImplementedError(f"{type(self).__name__} must implement segment(X)")

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({options})"


class TimeSegments(Components):
    """``n_segments`` consecutive stretches of frames, all frequencies each."""

    def __init__(self, n_segments=10):
        self.n_segments = int(n_segments)

    def segment(self, X):
        B, T, F = X.shape
        n = _check_count("n_segments", self.n_segments, T, "frames")
        ids = _equal_parts(T, n, X.device)[:, None].expand(T, F)
        return ids.expand(B, T, F).clone()


class MelBands(Components):
    """``n_bands`` groups of adjacent frequency bins (mel bands for a mel front end), all frames each."""

    def __init__(self, n_bands=8):
        self.n_bands = int(n_bands)

    def segment(self, X):
        B, T, F = X.shape
        n = _check_count("n_bands", self.n_bands, F, "frequency bins")
        ids = _equal_parts(F, n, X.device)[None, :].expand(T, F)
        return ids.expand(B, T, F).clone()


class TimeMelGrid(Components):
    """An ``n_time`` x ``n_freq`` grid of time-frequency rectangles (SoundLIME); id = i_time * n_freq + i_freq."""

    def __init__(self, n_time=10, n_freq=6):
        self.n_time = int(n_time)
        self.n_freq = int(n_freq)

    def segment(self, X):
        B, T, F = X.shape
        n_time = _check_count("n_time", self.n_time, T, "frames")
        n_freq = _check_count("n_freq", self.n_freq, F, "frequency bins")
        ids = _equal_parts(T, n_time, X.device)[:, None] * n_freq + _equal_parts(F, n_freq, X.device)[None, :]
        return ids.expand(B, T, F).clone()


# lime_image's default segmentation (quickshift with these options); the others use scikit-image's defaults
SUPERPIXEL_DEFAULTS = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"n_segments": 50, "compactness": 0.1, "start_label": 0},
    "felzenszwalb": {"scale": 100, "sigma": 0.5, "min_size": 50},
}


class Superpixels(Components):
    """Superpixels of the spectrogram image, as ``lime_image`` segments a picture.

    Each clip's X is scaled to [0, 1] and segmented by scikit-image's
    ``algorithm`` (``quickshift`` on the grey image repeated to RGB, as
    ``lime_image`` does with a grey picture; ``slic`` and ``felzenszwalb`` on the
    grey image); ``options`` override ``SUPERPIXEL_DEFAULTS``. Labels are
    renumbered 0..K-1. The number of components differs from clip to clip.
    """

    def __init__(self, algorithm="quickshift", seed=0, **options):
        if algorithm not in SUPERPIXEL_DEFAULTS:
            raise ConfigError(
                f"superpixel algorithm {algorithm!r} is unknown; use one of {sorted(SUPERPIXEL_DEFAULTS)}"
            )
        self.algorithm = algorithm
        self.seed = int(seed)
        # a misspelled option fails now, not inside scikit-image at the first clip (without scikit-image,
        # its ImportError still comes at the first clip)
        with contextlib.suppress(ImportError):
            passed_here = {"image", "rng", "channel_axis"}  # segment_image's own arguments
            valid = [p for p in inspect.signature(self._function()).parameters if p not in passed_here]
            _check_option_names(f"superpixels ({algorithm})", options, [*valid, "algorithm", "seed"])
        self.options = {**SUPERPIXEL_DEFAULTS[algorithm], **options}

    def _function(self):
        try:
            from skimage import segmentation
        except ImportError as exc:
            raise ImportError("superpixel components need scikit-image: pip install scikit-image") from exc
        return getattr(segmentation, self.algorithm)

    def segment_image(self, image):
        """(T, F) numpy image in [0, 1] -> (T, F) int labels 0..K-1."""
        function = self._function()
        if self.algorithm == "quickshift":
            rgb = np.repeat(image[..., None], 3, axis=-1)
            labels = function(rgb, rng=self.seed, **self.options)
        else:  # slic, felzenszwalb
            labels = function(image, channel_axis=None, **self.options)
        return np.unique(labels, return_inverse=True)[1].reshape(image.shape)

    def segment(self, X):
        out = []
        for clip in X.detach().cpu().double().numpy():
            span = clip.max() - clip.min()
            image = (clip - clip.min()) / span if span > 0 else np.zeros_like(clip)
            out.append(torch.from_numpy(self.segment_image(image)))
        return torch.stack(out).long().to(X.device)


COMPONENTS = {
    "time_segments": TimeSegments,
    "mel_bands": MelBands,
    "time_mel_grid": TimeMelGrid,
    "superpixels": Superpixels,
}


def make_components(components, options=None):
    """A Components instance from a registered name (+ options dict) or an instance (returned as is)."""
    if isinstance(components, Components):
        return components
    if components not in COMPONENTS:
        raise _unknown_name("components", components, COMPONENTS)
    cls, options = COMPONENTS[components], dict(options or {})
    parameters = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):  # Superpixels checks its own
        _check_option_names(f"{components} (component_options)", options, list(parameters))
    return cls(**options)


def component_options_for(options_by_kind, components):
    """The options of kind ``components`` in a ``component_options: {kind: {...}}`` mapping (hparams' wiring).

    Unknown kinds, as ``components`` or as keys of the mapping, are ConfigErrors listing the valid ones;
    a kind absent from a non-empty mapping too (its options were most likely meant for it).
    """
    if isinstance(components, Components):
        return None
    if components not in COMPONENTS:
        raise _unknown_name("components", components, COMPONENTS)
    if not options_by_kind:
        return None
    if not isinstance(options_by_kind, dict):
        raise ConfigError(
            f"component_options must map a kind to its options, e.g. {{{components}: {{...}}}}, got {options_by_kind!r}"
        )
    for kind in options_by_kind:
        if kind not in COMPONENTS:
            raise _unknown_name("component_options kind", kind, COMPONENTS)
    if components not in options_by_kind:
        raise ConfigError(
            f"component_options has options for {sorted(options_by_kind)} but none for components {components!r}; "
            f"add `{components}: {{...}}` to it (or {{}} for the defaults), or set `components:` to one of those"
        )
    return options_by_kind[components]


def n_components(components):
    """(B,) number of components of each clip of a (B, T, F) id mask."""
    return components.flatten(1).amax(dim=1) + 1


# -- baselines -----------------------------------------------------------------
BASELINES = ("silence", "zeros", "minimum", "mean", "noise")


def check_baseline(name, field="baseline"):
    """Refuse a baseline that is neither a number nor a known name when it is set, not at the first clip."""
    if isinstance(name, int | float) and not isinstance(name, bool) or name in BASELINES:
        return name
    close = difflib.get_close_matches(str(name), BASELINES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{field} {name!r} is unknown.{hint} Use a number or one of {list(BASELINES)}.")


def component_means(X, components):
    """(B, T, F): each bin replaced by the mean of X over its component (lime_image's ``hide_color=None``)."""
    flat, ids = X.flatten(1), components.flatten(1)
    K = int(ids.max()) + 1
    sums = torch.zeros(X.shape[0], K, dtype=X.dtype, device=X.device).scatter_add_(1, ids, flat)
    counts = torch.zeros_like(sums).scatter_add_(1, ids, torch.ones_like(flat))
    means = sums / counts.clamp(min=1)
    return means.gather(1, ids).view_as(X)


def make_baseline(name, X, components=None, seed=0, classifier=None):
    """The (B, T, F) input that stands for "removed" under baseline ``name`` (see the module doc).

    A number is a constant baseline; ``silence`` reads ``classifier.silence(X)``.
    """
    if isinstance(name, int | float) and not isinstance(name, bool):
        return torch.full_like(X, float(name))
    dims = tuple(range(1, X.ndim))
    if name == "silence":
        if classifier is None:
            raise ConfigError("the `silence` baseline needs the classifier whose front end defines silence")
        return silence_of(classifier, X).expand_as(X).clone()
    if name == "zeros":
        return torch.zeros_like(X)
    if name == "minimum":
        return X.amin(dim=dims, keepdim=True).expand_as(X).clone()
    if name == "mean":
        if components is not None:
            return component_means(X, components)
        return X.mean(dim=dims, keepdim=True).expand_as(X).clone()
    if name == "noise":
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(X.shape, generator=generator, dtype=X.dtype).to(X.device)
        return X.mean(dim=dims, keepdim=True) + X.std(dim=dims, keepdim=True) * noise
    check_baseline(name)
    raise AssertionError(name)  # check_baseline refused it


# -- listenable output ------------------------------------------------------------
def top_components(weights, k):
    """Ids of the (at most) ``k`` components with the largest positive weights, best first."""
    weights = torch.as_tensor(weights)
    order = torch.argsort(weights, descending=True, stable=True)[: int(k)]
    return order[weights[order] > 0]


def top_components_mask(weights, components, k):
    """(T, F) [0, 1] mask: 1 on the top-``k`` positive components of one clip, 0 elsewhere.

    ``weights`` (K,) per component, ``components`` (T, F) ids. Rendered back to
    audio with ``Explanation.to_wav``.
    """
    keep = torch.zeros(int(components.max()) + 1, dtype=torch.bool, device=components.device)
    keep[top_components(weights, k).to(components.device)] = True
    return keep[components].float()
