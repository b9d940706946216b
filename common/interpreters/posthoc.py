"""Post-hoc attribution of any AudioClassifier, on captum.

Each interpreter wraps one captum method around the frozen classifier's
``logits`` (the forward function) and returns ``attribute(X, target)`` shaped
like the spectrogram X (B, T, F). Options are constructor arguments, so a
YAML file sets them (``!new:common.interpreters.posthoc.IntegratedGradientsInterpreter``).

* ``saliency``: the input gradient (Simonyan et al. 2014), its absolute value by default;
* ``smoothgrad``: the gradient averaged over noisy copies of X, noise std =
  ``noise_level`` x the clip's value range (Smilkov et al. 2017);
* ``integrated_gradients``: Sundararajan et al. 2017, from a named baseline;
* ``deeplift``: DeepLIFT rescale rule (Shrikumar et al. 2017); needs the
  model's non-linearities as modules, each used once (``LogMelCNN`` is built so);
* ``gradient_shap`` / ``deeplift_shap``: the SHAP estimators of Lundberg & Lee
  2017 over a distribution of baselines;
* ``occlusion``: a sliding window replaced by the baseline (Zeiler & Fergus 2014);
* ``gradcam``: Grad-CAM (Selvaraju et al. 2017) on a named encoder layer,
  resized to X with the classifier's ``map_to_spectrogram``.

Methods that promise completeness report, in
``Explanation.extras["per_clip"]``, ``additivity_gap`` = |sum of the
attributions - (f(X) - f(baseline))| (f the target's logit; for the SHAP
variants f(baseline) is averaged over the baseline distribution, exact for
DeepLiftShap, true in expectation only for GradientShap) and
``output_change`` = f(X) - f(baseline), its scale.
Baselines are named as in ``common.interpreters.components``: silence (the
classifier's, the default), zeros, minimum, mean, noise, or a number.
"""

import contextlib
import warnings

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    DeepLiftShap,
    GradientShap,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from common.errors import ConfigError
from common.interpreters.base import Interpreter
from common.interpreters.components import check_baseline, check_spectrogram, make_baseline
from common.models.classifier import as_targets
from common.models.hooks import eval_mode
from common.registry import INTERPRETERS


@contextlib.contextmanager
def frozen_eval(classifier, gradients=True):
    """The classifier in eval mode (BatchNorm, dropout), with gradients on or off, restored afterwards.

    Gradients are switched on explicitly: the interpreter Brain evaluates under ``torch.no_grad``.
    """
    with eval_mode(classifier), torch.set_grad_enabled(gradients):
        yield


@contextlib.contextmanager
def seeded(seed):
    """Reproducible draws inside captum (``torch.normal`` noise, numpy's global ``np.random`` for GradientShap's
    baselines and path points), without touching the caller's random state."""
    numpy_state = np.random.get_state()
    np.random.seed(int(seed))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            yield
    finally:
        np.random.set_state(numpy_state)


# The modules captum's DeepLIFT gives a rule of their own (its SUPPORTED_NON_LINEAR)
DEEPLIFT_NON_LINEAR = (
    nn.ReLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softmax,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
)


@contextlib.contextmanager
def separate_hook_tensors(model):
    """Give each non-linear module its own input tensor while DeepLIFT runs.

    captum (0.9) hooks a non-linearity's output tensor to read its output
    gradient and the next non-linearity's input tensor to rewrite it; when a
    ReLU feeds a MaxPool directly both hooks sit on one tensor, the ReLU reads
    the gradient before the MaxPool's multipliers replace it, and
    summation-to-delta fails (gaps as large as the output change; captum
    issue #1104 reports the symptom for DeepLiftShap). A clone in front of each
    non-linear module (this pre-hook runs before captum's) separates the two
    tensors; the values are unchanged.
    """
    handles = [
        module.register_forward_pre_hook(lambda module, args: tuple(a.clone() for a in args))
        for module in model.modules()
        if type(module) in DEEPLIFT_NON_LINEAR
    ]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


class LogitsModule(nn.Module):
    """``classifier.logits`` as an nn.Module: DeepLIFT hooks the non-linear modules of the model it is given."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, X):
        return self.classifier.logits(X)


class PosthocInterpreter(Interpreter):
    """Base of the post-hoc interpreters: an ``nn.Module`` without parameters, so the interpreter
    Brain holds it like a trained one (nothing to train: it is only evaluated); its per-clip
    diagnostics come back from ``attribute_with_extras`` as the Explanation's extras."""

    def predict(self, X):
        """The classifier's decision, in eval mode like the attribution itself."""
        with frozen_eval(self.classifier, gradients=False):
            return self.classifier.logits(X).argmax(dim=-1)


class CaptumInterpreter(PosthocInterpreter):
    """Runs ``captum_attribute(X, target) -> (attributions, per-clip diagnostics)`` on the frozen classifier."""

    needs_gradients = True

    def captum_attribute(self, X, target):
        raise NotImplementedError(f"{type(self).__name__} must implement captum_attribute(X, target)")

    def attribute_with_extras(self, X, target):
        check_spectrogram(X)
        target = as_targets(target, X)
        with frozen_eval(self.classifier, gradients=self.needs_gradients), warnings.catch_warnings():
            # captum announces on every call that it hooks DeepLIFT's modules and makes X require gradients
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
            warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require", category=UserWarning)
            attributions, per_clip = self.captum_attribute(X.detach(), target)
        return attributions.detach(), ({"per_clip": per_clip} if per_clip else {})

    @torch.no_grad()
    def target_logit(self, X, target):
        """(B,) logit of each clip's target."""
        return self.classifier.logits(X).gather(1, target[:, None]).squeeze(1)

    def completeness(self, attributions, X, baseline_mean_logit, target):
        """Per-clip diagnostics: |sum(attributions) - (f(X) - f(baseline))| and f(X) - f(baseline)."""
        change = self.target_logit(X, target) - baseline_mean_logit
        gap = (attributions.flatten(1).sum(dim=1) - change).abs()
        return {"additivity_gap": gap.detach(), "output_change": change.detach()}


@INTERPRETERS.register("saliency")
class GradientSaliency(CaptumInterpreter):
    """The gradient of the target logit with respect to X (``absolute``: its magnitude, as Simonyan et al.)."""

    def __init__(self, classifier, absolute=True):
        super().__init__(classifier)
        self.absolute = bool(absolute)

    def captum_attribute(self, X, target):
        return Saliency(self.classifier.logits).attribute(X, target=target, abs=self.absolute), {}


@INTERPRETERS.register("smoothgrad")
class SmoothGrad(CaptumInterpreter):
    """SmoothGrad: the gradient averaged over ``n_samples`` copies of X plus Gaussian noise.

    Noise std = ``noise_level`` x (max - min) of each clip (Smilkov et al.
    suggest 10-20 %); the average of signed gradients is taken, then its
    magnitude when ``absolute``. ``batch_size`` noisy copies per pass.
    """

    def __init__(self, classifier, n_samples=25, noise_level=0.15, absolute=True, batch_size=25, seed=0):
        super().__init__(classifier)
        if n_samples < 1 or noise_level < 0:
            raise ConfigError(f"smoothgrad needs n_samples >= 1 and noise_level >= 0, got {n_samples}, {noise_level}")
        self.n_samples = int(n_samples)
        self.noise_level = float(noise_level)
        self.absolute = bool(absolute)
        self.batch_size = int(batch_size)
        self.seed = int(seed)

    def captum_attribute(self, X, target):
        tunnel = NoiseTunnel(Saliency(self.classifier.logits))
        out = []
        with seeded(self.seed):
            for b in range(X.shape[0]):  # each clip its own noise scale
                clip = X[b : b + 1]
                stdev = self.noise_level * float(clip.max() - clip.min())
                out.append(
                    tunnel.attribute(
                        clip,
                        nt_type="smoothgrad",
                        nt_samples=self.n_samples,
                        nt_samples_batch_size=self.batch_size,
                        stdevs=stdev,
                        target=target[b : b + 1],
                        abs=False,
                    )
                )
        grads = torch.cat(out)
        return (grads.abs() if self.absolute else grads), {}


@INTERPRETERS.register("integrated_gradients")
class IntegratedGradientsInterpreter(CaptumInterpreter):
    """Integrated Gradients from ``baseline`` in ``n_steps`` (captum's Gauss-Legendre rule by default).

    ``batch_size``: path points per forward/backward pass (None: all at once).
    Completeness: ``additivity_gap`` is captum's convergence delta.
    """

    def __init__(self, classifier, n_steps=50, baseline="silence", method="gausslegendre", batch_size=None):
        super().__init__(classifier)
        self.n_steps = int(n_steps)
        self.baseline = baseline
        self.method = method
        self.batch_size = batch_size

    def captum_attribute(self, X, target):
        base = make_baseline(self.baseline, X, classifier=self.classifier)
        attributions, delta = IntegratedGradients(self.classifier.logits).attribute(
            X,
            baselines=base,
            target=target,
            n_steps=self.n_steps,
            method=self.method,
            internal_batch_size=self.batch_size,
            return_convergence_delta=True,
        )
        delta = delta.detach()  # captum's: sum of the attributions - (f(X) - f(baseline))
        return attributions, {
            "additivity_gap": delta.abs(),
            "output_change": attributions.detach().flatten(1).sum(dim=1) - delta,
        }


@INTERPRETERS.register("deeplift")
class DeepLiftInterpreter(CaptumInterpreter):
    """DeepLIFT (rescale rule) from ``baseline``; the multipliers satisfy summation-to-delta exactly
    when every non-linearity is a module used once, which ``additivity_gap`` checks."""

    def __init__(self, classifier, baseline="silence", eps=1e-10):
        super().__init__(classifier)
        self.baseline = baseline
        self.eps = float(eps)

    def captum_attribute(self, X, target):
        base = make_baseline(self.baseline, X, classifier=self.classifier)
        model = LogitsModule(self.classifier)
        with separate_hook_tensors(model):
            attributions = DeepLift(model, eps=self.eps).attribute(X, baselines=base, target=target)
        return attributions, self.completeness(attributions, X, self.target_logit(base, target), target)


class _ShapInterpreter(CaptumInterpreter):
    """Shared by the SHAP estimators: a per-clip distribution of named baselines.

    Repeated ``noise`` entries are distinct draws (seeds ``seed``, ``seed + 1``, ...).
    """

    def __init__(self, classifier, baselines=("silence", "mean", "noise", "noise"), seed=0):
        super().__init__(classifier)
        if len(baselines) < 2:
            raise ConfigError(f"{type(self).__name__} needs a distribution of at least 2 baselines, got {baselines}")
        self.baselines = [check_baseline(b, "shap_baselines entry") for b in baselines]
        self.seed = int(seed)

    def baseline_distribution(self, clip):
        """(n_baselines, T, F) for one clip (1, T, F)."""
        return torch.cat(
            [
                make_baseline(n, clip, seed=self.seed + i, classifier=self.classifier)
                for i, n in enumerate(self.baselines)
            ]
        )

    def explain_clip(self, clip, baselines, target):
        raise NotImplementedError

    def captum_attribute(self, X, target):
        out, baseline_logits = [], []
        with seeded(self.seed):
            for b in range(X.shape[0]):
                clip, clip_target = X[b : b + 1], target[b : b + 1]
                baselines = self.baseline_distribution(clip)
                out.append(self.explain_clip(clip, baselines, clip_target))
                baseline_logits.append(self.target_logit(baselines, clip_target.expand(len(baselines))).mean())
        attributions = torch.cat(out)
        return attributions, self.completeness(attributions, X, torch.stack(baseline_logits), target)


@INTERPRETERS.register("gradient_shap")
class GradientShapInterpreter(_ShapInterpreter):
    """GradientShap: gradients at ``n_samples`` random points between X (plus noise of std ``stdevs``)
    and baselines drawn from the distribution, times (X - baseline); SHAP values in expectation."""

    def __init__(self, classifier, baselines=("silence", "mean", "noise", "noise"), n_samples=20, stdevs=0.0, seed=0):
        super().__init__(classifier, baselines, seed)
        self.n_samples = int(n_samples)
        self.stdevs = float(stdevs)

    def explain_clip(self, clip, baselines, target):
        return GradientShap(self.classifier.logits).attribute(
            clip, baselines=baselines, n_samples=self.n_samples, stdevs=self.stdevs, target=target
        )


@INTERPRETERS.register("deeplift_shap")
class DeepLiftShapInterpreter(_ShapInterpreter):
    """DeepLiftShap: DeepLIFT from every baseline of the distribution, averaged (exact summation to the mean delta)."""

    def __init__(self, classifier, baselines=("silence", "mean", "noise", "noise"), seed=0):
        super().__init__(classifier, baselines, seed)

    def explain_clip(self, clip, baselines, target):
        model = LogitsModule(self.classifier)
        with separate_hook_tensors(model):
            return DeepLiftShap(model).attribute(clip, baselines=baselines, target=target)


@INTERPRETERS.register("occlusion")
class OcclusionInterpreter(CaptumInterpreter):
    """Occlusion: f(X) - f(X with a ``window`` (frames, bins) set to the baseline), slid by ``stride`` and
    averaged where windows overlap. About ``batch_size`` occluded inputs per forward pass."""

    needs_gradients = False

    def __init__(self, classifier, window=(16, 16), stride=(8, 8), baseline="silence", batch_size=64):
        super().__init__(classifier)
        self.window = tuple(int(w) for w in window)
        self.stride = tuple(int(s) for s in stride)
        if len(self.window) != 2 or len(self.stride) != 2 or min(self.window + self.stride) < 1:
            raise ConfigError(f"occlusion window {window} and stride {stride} must be two positive ints (frames, bins)")
        self.baseline = baseline
        self.batch_size = int(batch_size)

    def n_windows(self, n_frames, n_bins):
        """Occluded inputs per clip (captum's count: the last window may stick out and is clipped)."""
        count = 1
        for size, window, stride in zip((n_frames, n_bins), self.window, self.stride, strict=True):
            window = min(window, size)
            count *= -(-(size - window) // stride) + 1
        return count

    def captum_attribute(self, X, target):
        window = tuple(min(w, s) for w, s in zip(self.window, X.shape[1:], strict=True))
        attributions = Occlusion(self.classifier.logits).attribute(
            X,
            sliding_window_shapes=window,
            strides=self.stride,
            baselines=make_baseline(self.baseline, X, classifier=self.classifier),
            target=target,
            perturbations_per_eval=max(1, self.batch_size // X.shape[0]),
        )
        return attributions, {}


def last_conv_layer(module):
    """Name of the last Conv2d submodule of ``module`` (Grad-CAM's usual layer)."""
    names = [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ConfigError(f"{type(module).__name__} has no Conv2d layer; name the Grad-CAM `layer` in the hparams")
    return names[-1]


@INTERPRETERS.register("gradcam")
class GradCamInterpreter(CaptumInterpreter):
    """Grad-CAM on the encoder layer ``layer`` (default: its last Conv2d), a (B, C, h, w) map:
    ReLU(sum_c mean-gradient_c x map_c), resized to X with ``classifier.map_to_spectrogram``."""

    def __init__(self, classifier, layer=None, relu=True):
        super().__init__(classifier)
        encoder = classifier.embedding_model
        self.layer = layer or last_conv_layer(encoder)
        try:
            encoder.get_submodule(self.layer)
        except AttributeError as exc:
            known = [name for name, _ in encoder.named_modules() if name][-8:]
            raise ConfigError(
                f"Grad-CAM layer {self.layer!r} is not a submodule of {type(encoder).__name__}; e.g. {known}"
            ) from exc
        self.relu = bool(relu)

    def captum_attribute(self, X, target):
        layer = self.classifier.embedding_model.get_submodule(self.layer)
        maps = LayerGradCam(self.classifier.logits, layer).attribute(X, target=target, relu_attributions=self.relu)
        if isinstance(maps, tuple):  # a layer returning a tuple (transformers blocks): its first output
            maps = maps[0]
        if maps.ndim != 4:
            raise ConfigError(
                f"Grad-CAM needs a (B, C, h, w) map; layer {self.layer!r} gives {tuple(maps.shape)}: choose a conv layer"
            )
        return self.classifier.map_to_spectrogram(maps[:, 0], X.shape[1], X.shape[2]), {}
