"""The Interpreter interface and the Explanation it returns.

captum-style: an interpreter is an ``nn.Module`` built around a classifier (an
``AudioClassifier``: ``features``, ``hidden``, ``logits``; held, not registered,
so it stays frozen and is never saved with the interpreter) and has one verb,
``attribute(X, target) -> saliency`` shaped like the spectrogram X.
``explain(wavs=None, X=None, target=None)``, in this base class only, wraps
it: features, the predicted class when no target is given, the saliency, its
[0, 1] mask and the method's extras, in an Explanation. Capabilities
(``class_conditional``, ``trainable``, ``needs_fit``) are declared class
attributes.
"""

from dataclasses import dataclass, field

import torch

from common.models.classifier import as_targets


@dataclass
class FrozenOutputs:
    """What the frozen classifier computed for a batch; trained interpreters learn from it.

    wavs   : (B, samples) the input audio
    X      : (B, T, F) the spectrogram the classifier sees
    hidden : the representation the interpreter reads (a map, or a list of maps
             when the interpreter names ``layers``)
    logits : (B, n_classes) the classifier's logits
    clean_wavs, clean_X : for contaminated inputs, the clean target part of
             ``wavs`` and its spectrogram (None otherwise)
    """

    wavs: torch.Tensor
    X: torch.Tensor
    hidden: object
    logits: torch.Tensor
    clean_wavs: torch.Tensor = None
    clean_X: torch.Tensor = None

    @property
    def target(self):
        """The class explained: the classifier's own decision."""
        return self.logits.argmax(dim=-1)


@dataclass
class Explanation:
    """What every interpreter returns.

    saliency : (B, T, F) relevance in the classifier's spectrogram domain
    mask     : (B, T, F) in [0, 1]; masked-in input is ``mask * X``
    target   : (B,) the class explained
    stft_mask: optional (B, T, n_fft/2+1) mask on the linear STFT grid, for
               methods that compute one there (L2I's NMF); the listenable
               wav uses it instead of spreading ``mask`` back from mel bands
    extras   : method-specific outputs (codebook indices, NMF activations, ...);
               ``extras["per_clip"]`` may hold (B,) diagnostics that the
               training Brain adds to the per-clip and summary tables
    """

    saliency: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    stft_mask: torch.Tensor = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.saliency.shape != self.mask.shape:
            raise ValueError(
                f"saliency {tuple(self.saliency.shape)} and mask {tuple(self.mask.shape)} must have the same shape"
            )

    def to_wav(self, classifier, wavs):
        """Listenable explanation: mask -> STFT grid -> original phase -> ISTFT."""
        front_end = classifier.front_end
        stft = front_end.stft(wavs)
        if self.stft_mask is not None:
            grid_mask = self.stft_mask.to(stft.dtype)
        else:
            grid_mask = front_end.mask_to_stft_grid(self.mask.to(stft.dtype))
        return front_end.mask_to_wav(grid_mask, stft, length=wavs.shape[-1])


def saliency_to_mask(saliency, mode="minmax", quantile=0.9):
    """Turn a saliency map into a [0, 1] mask, per clip.

    ``minmax``: rescale positive relevance to [0, 1] (negative -> 0);
    ``top``: binary mask of the bins above the per-clip ``quantile``.
    """
    flat = saliency.flatten(1)
    if mode == "top":
        thresh = torch.quantile(flat.float(), quantile, dim=1, keepdim=True)
        return (flat >= thresh).to(saliency.dtype).view_as(saliency)
    pos = flat.clamp(min=0)
    peak = pos.max(dim=1, keepdim=True).values.clamp(min=1e-12)
    return (pos / peak).view_as(saliency)


class ForeignTargetError(ValueError):
    """A non-class-conditional interpreter was asked to explain a class the classifier did not predict."""


@dataclass
class FitData:
    """Training clips for an interpreter that ``needs_fit``: features ``X`` (N, T, F), ``labels`` (N,), class names."""

    X: torch.Tensor
    labels: torch.Tensor
    classes: list


class Interpreter(torch.nn.Module):
    """Base class: one verb, ``attribute(X, target) -> saliency`` shaped like X, and ``explain`` built on it.

    Subclasses implement ``attribute`` or, when they have more to say than the saliency,
    ``attribute_with_extras(X, target) -> (saliency, extras)``. The extras are returned, never
    stored between calls; ``extras["mask"]`` (a method's own [0, 1] mask) and ``extras["stft_mask"]``
    go to the Explanation's fields, ``extras["per_clip"]`` holds (B,) diagnostics for the tables.

    Capabilities are declared, never detected (callers read these, not ``hasattr``):
    ``class_conditional``: the saliency depends on the ``target`` asked for; an interpreter that
        only explains the classifier's own decision (L-MAC, AMT) sets it False and raises
        ``ForeignTargetError`` when asked for another class.
    ``trainable``: it has parameters trained by an interpreter Brain (``loss_terms``).
    ``needs_fit``: it is built by the classmethod ``fit(classifier, data, **options)`` from training
        clips (a ``FitData``): DRSA's subspaces, the prototype net.
    """

    mask_mode = "minmax"
    # the encoder submodules whose outputs the interpreter reads (None: the classifier's hidden map);
    # the interpreter Brain computes them once per batch for trainable interpreters
    layers = None
    class_conditional = True
    trainable = False
    needs_fit = False

    def __init__(self, classifier):
        super().__init__()
        # Not a registered submodule: the classifier stays frozen (never switched to train mode,
        # never optimised, never saved with the interpreter).
        object.__setattr__(self, "classifier", classifier)

    @classmethod
    def fit(cls, classifier, data, **options):
        """Build the interpreter from training clips (only for ``needs_fit`` interpreters)."""
        raise TypeError(f"{cls.__name__} is built around a classifier directly; it has nothing to fit")

    def attribute(self, X, target):
        """Saliency (B, T, F) for ``target`` (B,) on the classifier's input X (B, T, F)."""
        return self.attribute_with_extras(X, target)[0]

    def attribute_with_extras(self, X, target):
        """(saliency, extras); the default has no extras."""
        if type(self).attribute is Interpreter.attribute:
            raise NotImplementedError(f"{type(self).__name__} must implement attribute or attribute_with_extras")
        return self.attribute(X, target), {}

    @torch.no_grad()
    def predict(self, X):
        return self.classifier.logits(X).argmax(dim=-1)

    def check_own_decision(self, target, prediction):
        """For interpreters that are not class-conditional: refuse a target other than the prediction."""
        if target is not None and not torch.equal(torch.as_tensor(target).to(prediction.device), prediction):
            raise ForeignTargetError(
                f"{type(self).__name__} explains the classifier's own decision only (class_conditional=False): "
                f"asked for class(es) {torch.as_tensor(target).tolist()}, the classifier predicts "
                f"{prediction.tolist()}. Ask for target=None (the prediction), or use a class-conditional method."
            )
        return prediction

    def features_and_target(self, wavs=None, X=None, target=None):
        """(X, target): the features of ``wavs`` unless ``X`` is given, the prediction unless ``target`` is."""
        if X is None:
            with torch.no_grad():
                X = self.classifier.features(wavs)
        if target is None:
            target = self.predict(X)
        return X, as_targets(target, X)

    def explain(self, wavs=None, X=None, target=None):
        """Explain ``wavs`` (or precomputed features ``X``) for ``target`` (default: the prediction)."""
        X, target = self.features_and_target(wavs, X, target)
        saliency, extras = self.attribute_with_extras(X, target)
        if saliency.shape != X.shape:
            raise ValueError(
                f"{type(self).__name__} returned saliency {tuple(saliency.shape)} for input {tuple(X.shape)}"
            )
        extras = dict(extras)
        mask = extras.pop("mask", None)
        stft_mask = extras.pop("stft_mask", None)
        return Explanation(
            saliency=saliency,
            mask=self.to_mask(saliency) if mask is None else mask,
            target=target,
            stft_mask=stft_mask,
            extras=extras,
        )

    def to_mask(self, saliency):
        """The [0, 1] mask of a saliency map (methods with their own thresholding override it)."""
        return saliency_to_mask(saliency, self.mask_mode)
