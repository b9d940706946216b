"""The Interpreter interface and the Explanation it returns.

captum-style: an interpreter is built around a classifier (an
``AudioClassifier``: ``features``, ``hidden``, ``logits``) and has one verb,
``attribute(X, target) -> saliency`` shaped like the spectrogram X.
``explain(wavs, target=None)`` wraps it: features, the predicted class when
no target is given, the saliency and its [0, 1] mask, in an Explanation.
"""

from dataclasses import dataclass, field

import torch


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


class Interpreter:
    """Base class: subclasses implement ``attribute`` (or override ``explain``)."""

    mask_mode = "minmax"

    def __init__(self, classifier):
        # Not a registered submodule even when the interpreter is an nn.Module: the classifier
        # stays frozen (never switched to train mode, never optimised, never saved with it).
        object.__setattr__(self, "classifier", classifier)

    def attribute(self, X, target, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement attribute(X, target)")

    @torch.no_grad()
    def predict(self, X):
        return self.classifier.logits(X).argmax(dim=-1)

    def features_and_target(self, wavs=None, X=None, target=None):
        """(X, target): the features of ``wavs`` unless ``X`` is given, the prediction unless ``target`` is."""
        if X is None:
            with torch.no_grad():
                X = self.classifier.features(wavs)
        if target is None:
            target = self.predict(X)
        return X, target

    def explain(self, wavs=None, X=None, target=None, **kwargs):
        """Explain ``wavs`` (or precomputed features ``X``) for ``target`` (default: the prediction)."""
        X, target = self.features_and_target(wavs, X, target)
        saliency = self.attribute(X, target, **kwargs)
        if saliency.shape != X.shape:
            raise ValueError(
                f"{type(self).__name__} returned saliency {tuple(saliency.shape)} for input {tuple(X.shape)}"
            )
        return Explanation(saliency=saliency, mask=self.to_mask(saliency), target=target)

    def to_mask(self, saliency):
        """The [0, 1] mask of a saliency map (methods with their own thresholding override it)."""
        return saliency_to_mask(saliency, self.mask_mode)
