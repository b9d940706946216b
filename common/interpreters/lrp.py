"""Layer-wise relevance propagation (Bach et al. 2015) of CNN classifiers on spectrograms, with zennit.

LRP redistributes the explained logit backwards, layer by layer, with a rule
per layer type (Montavon et al. 2019): here zennit's composites, found by name
(``LRP_COMPOSITES``) so a YAML file can pick one:

* ``epsilon_plus_flat``: flat rule on the first convolution, z+ on the other
  convolutions, epsilon on the dense head;
* ``epsilon_gamma_box``: z-box on the first convolution (the input's range),
  gamma on the other convolutions, epsilon on the head;
* ``name_map``: one gamma per convolutional block (a block ends at a pooling
  layer; gamma usually shrinks with depth), the first convolution z-box, flat
  or gamma, epsilon on the head;
* any other composite zennit registers (``epsilon_plus``, ``epsilon_alpha2_beta1``).

Each composite merges every BatchNorm into the convolution before it
(zennit's ``SequentialMergeBatchNorm``, so the encoder's layers must be
modules in forward order, e.g. ``LogMelCNN``) for the time of the context
only: afterwards the model's parameters and outputs are what they were.

The classifier's global mean pooling is a function call in
``AudioClassifier.pool``; LRP runs on ``LogitPath``, a view of the same
modules with the pooling as an ``AdaptiveAvgPool2d`` so that it gets its own
rule (relevance in proportion to each position's contribution) instead of the
gradient's uniform split. The relevance at the head's output is the explained
logit, so with biases zeroed the input relevance sums to it (conservation).
"""

import contextlib

import torch
import torch.nn.functional as F
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.composites import COMPOSITES as ZENNIT_COMPOSITES
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat, NameLayerMapComposite, layer_map_base
from zennit.core import collect_leaves
from zennit.layer import Sum
from zennit.rules import Epsilon, Flat, Gamma, ZBox
from zennit.types import AvgPool, Convolution, MaxPool

from common.interpreters.base import Interpreter
from common.models.classifier import as_targets
from common.models.hooks import capture_outputs, eval_mode
from common.registry import INTERPRETERS, Registry


class LogitPath(torch.nn.Module):
    """encoder -> global mean pool -> head: the classifier's head scores, with every step a module.

    Holds the classifier's own encoder and head (no copies), so canonizers
    and rules act on the real modules and are undone on exit.
    """

    def __init__(self, classifier):
        super().__init__()
        encoder = classifier.embedding_model
        if getattr(getattr(encoder, "config", None), "model_type", None) is not None:
            raise ValueError(
                f"LRP here needs a CNN encoder whose layers are modules in forward order (e.g. "
                f"common.models.genre_cnn.LogMelCNN); the classifier's encoder is {type(encoder).__name__}."
            )
        self.encoder = encoder
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.flatten = torch.nn.Flatten()
        self.head = classifier.classifier

    def forward(self, X):
        hidden = self.encoder(X)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        if hidden.ndim not in (2, 4):
            raise ValueError(
                f"LRP expects the encoder to return a (B, C, h, w) map or flat (B, D) features, got {tuple(hidden.shape)}"
            )
        # flat features: an encoder that flattens its map itself (AudioMNIST's AudioNet, AlexNet), no pooling
        out = self.head(hidden if hidden.ndim == 2 else self.flatten(self.pool(hidden)))
        return out.squeeze(1) if out.ndim == 3 else out


# -- composites by name -------------------------------------------------------------------------------

LRP_COMPOSITES = Registry("LRP composite")


def _box_bounds(X, low, high):
    """ZBox bounds on the first convolution's input ((B, 1, T, F), or (B, 1, samples) for a waveform model):
    given values, else each clip's own range."""
    shape = (X.shape[0],) + (1,) * X.ndim
    if low is None:
        low = X.detach().flatten(1).amin(dim=1).reshape(shape)
    if high is None:
        high = X.detach().flatten(1).amax(dim=1).reshape(shape)
    return low, high


@LRP_COMPOSITES.register("epsilon_plus_flat")
def epsilon_plus_flat(path, X, epsilon=1e-6, stabilizer=1e-6, canonizers=None):
    """Flat on the first layer, z+ on convolutions, epsilon on dense layers."""
    return EpsilonPlusFlat(epsilon=epsilon, stabilizer=stabilizer, canonizers=canonizers)


@LRP_COMPOSITES.register("epsilon_gamma_box")
def epsilon_gamma_box(path, X, epsilon=1e-6, gamma=0.25, low=None, high=None, stabilizer=1e-6, canonizers=None):
    """Z-box on the first layer (bounds: ``low``/``high`` or each clip's range), gamma on convolutions, epsilon on dense."""
    low, high = _box_bounds(X, low, high)
    return EpsilonGammaBox(
        low=low, high=high, epsilon=epsilon, gamma=gamma, stabilizer=stabilizer, canonizers=canonizers
    )


def conv_blocks(module, prefix=""):
    """Names of the convolutions of ``module`` in forward order, grouped into blocks that end at a pooling layer."""
    names = {id(m): name for name, m in module.named_modules(prefix=prefix)}
    blocks, current = [], []
    for leaf in collect_leaves(module):
        if isinstance(leaf, Convolution):
            current.append(names[id(leaf)])
        elif isinstance(leaf, (MaxPool, AvgPool)) and current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


@LRP_COMPOSITES.register("name_map")
def name_map(path, X, gammas, first_rule="zbox", epsilon=1e-6, low=None, high=None, stabilizer=1e-6, canonizers=None):
    """Gamma ``gammas[b]`` on the convolutions of block b; ``first_rule`` (zbox, flat, gamma) on the first one."""
    blocks = conv_blocks(path.encoder, prefix="encoder")
    gammas = [float(g) for g in gammas]
    if len(gammas) != len(blocks):
        raise ValueError(
            f"name_map needs one gamma per convolutional block: the encoder has {len(blocks)} blocks "
            f"({blocks}), the composite got {len(gammas)} gammas {gammas}; set `gammas` in the hparams to "
            f"a list of {len(blocks)} values."
        )
    if first_rule not in ("zbox", "flat", "gamma"):
        raise ValueError(f"first_rule must be zbox, flat or gamma, got {first_rule!r}")
    rules = []
    for block, gamma in zip(blocks, gammas, strict=True):
        rules += [((name,), Gamma(gamma=gamma, stabilizer=stabilizer)) for name in block]
    first = blocks[0][0]
    if first_rule == "zbox":
        low, high = _box_bounds(X, low, high)
        rules[0] = ((first,), ZBox(low=low, high=high, stabilizer=stabilizer))
    elif first_rule == "flat":
        rules[0] = ((first,), Flat(stabilizer=stabilizer))
    layer_map = layer_map_base(stabilizer) + [(torch.nn.Linear, Epsilon(epsilon=epsilon))]
    return NameLayerMapComposite(name_map=rules, layer_map=layer_map, canonizers=canonizers)


class GraphBodyCanonizer(Canonizer):
    """LRP on a ported graph's operators (``common.models.tflite_graph``, BirdNET) for the time of a context:

    * each residual ``Add`` sums through zennit's ``Sum`` layer, whose Norm rule splits relevance between the
      summands in proportion to their contributions (as zennit's ResNet canonizer does);
    * each squeeze-excitation ``Mul`` treats its gate as a constant, so all relevance goes to the gated map
      (signal-take-all, Arras et al. 2017, for multiplicative gates);
    * each per-channel scale or shift (``ConstantAffine``, a BatchNorm TFLite split into MUL and ADD) passes
      relevance unchanged, as zennit's composites pass a BatchNorm's;
    * ``SiLU`` (swish) passes relevance, as every activation does under zennit's composites.
    """

    def __init__(self):
        super().__init__()
        self.modules = []

    def apply(self, root_module):
        from common.models.tflite_graph import Add, ConstantAffine, Mul

        instance = self.copy()
        instance.modules = [m for m in root_module.modules() if isinstance(m, (Add, ConstantAffine, Mul))]
        instance.register()
        return [instance] if instance.modules else []

    def register(self):
        from common.models.tflite_graph import Add, Mul

        for module in self.modules:
            if isinstance(module, Add):
                module.add_module("summation", Sum())
            elif isinstance(module, Mul):
                module.gate_as_constant = True
            else:
                module.pass_through = True

    def remove(self):
        from common.models.tflite_graph import Add, Mul

        for module in self.modules:
            if isinstance(module, Add):
                del module._modules["summation"]
            elif isinstance(module, Mul):
                del module.gate_as_constant
            else:
                del module.pass_through


def build_composite(name, path, X, merge_batchnorm=True, **options):
    """The zennit composite ``name`` (ours, else zennit's own registry) for ``path`` on input ``X``."""
    canonizers = [SequentialMergeBatchNorm()] if merge_batchnorm else []
    canonizers.append(GraphBodyCanonizer())  # a no-op on encoders that are not ported graphs
    if name in LRP_COMPOSITES:
        return LRP_COMPOSITES.build(name, path, X, canonizers=canonizers, **options)
    if name in ZENNIT_COMPOSITES:  # composites without input-dependent options (epsilon_plus, ...)
        return ZENNIT_COMPOSITES[name](canonizers=canonizers, **options)
    known = sorted(set(LRP_COMPOSITES.names()) | set(ZENNIT_COMPOSITES))
    raise KeyError(f"Unknown LRP composite {name!r}; known: {known}")


@contextlib.contextmanager
def lrp_context(path, composite):
    """``path`` in eval mode with ``composite``'s canonizers and rules attached; all undone on exit."""
    with eval_mode(path), composite.context(path) as hooked:
        yield hooked


# -- the interpreter --------------------------------------------------------------------------------


@INTERPRETERS.register("lrp")
class LRPInterpreter(Interpreter):
    """LRP relevance of the target logit on the classifier's spectrogram, (B, T, F).

    Arguments
    ---------
    classifier : AudioClassifier
        With a CNN encoder whose layers are modules in forward order.
    composite : str
        A name in ``LRP_COMPOSITES`` or zennit's registry.
    composite_kwargs : dict
        Options of the composite (``epsilon``, ``gamma``, ``gammas``, ``low``, ``high``, ...).
    merge_batchnorm : bool
        Merge BatchNorm into the preceding convolution while explaining (recommended: a BatchNorm
        has no LRP rule of its own).

    An ``nn.Module`` without parameters, so the interpreter Brain can hold it
    (nothing to train); the classifier is not registered as a submodule.
    """

    def __init__(self, classifier, composite="epsilon_plus_flat", composite_kwargs=None, merge_batchnorm=True):
        super().__init__(classifier)
        object.__setattr__(self, "path", LogitPath(classifier))
        known = set(LRP_COMPOSITES.names()) | set(ZENNIT_COMPOSITES)
        if composite not in known:
            raise KeyError(f"Unknown LRP composite {composite!r}; known: {sorted(known)}")
        self.composite = composite
        self.composite_kwargs = dict(composite_kwargs or {})
        self.merge_batchnorm = bool(merge_batchnorm)

    def _composite(self, X):
        return build_composite(
            self.composite, self.path, X, merge_batchnorm=self.merge_batchnorm, **self.composite_kwargs
        )

    def _seed(self, head_scores, target):
        """Relevance at the head's output: the target's logit (head score times the logit scale), 0 elsewhere."""
        target = as_targets(target, head_scores)
        one_hot = F.one_hot(target, head_scores.shape[1]).to(head_scores.dtype)
        return one_hot * head_scores.detach() * self.classifier.logit_scale

    def _layer_module(self, layer):
        """The encoder submodule named ``layer`` (None: the encoder itself, i.e. its output map)."""
        if layer is None or layer == "":
            return self.path.encoder
        try:
            return self.path.encoder.get_submodule(layer)
        except AttributeError:
            names = [name for name, _ in self.path.encoder.named_modules() if name]
            raise ValueError(f"The encoder has no layer {layer!r}; its layers: {names}") from None

    def attribute(self, X, target):
        """Input relevance (B, T, F) of the target logit; sums to it when biases are zero."""
        X_in = X.detach().requires_grad_(True)
        with torch.enable_grad(), lrp_context(self.path, self._composite(X_in)) as path:
            head_scores = path(X_in)
            (relevance,) = torch.autograd.grad(head_scores, X_in, grad_outputs=self._seed(head_scores, target))
        return relevance.detach()

    def layer_relevance(self, X, target, layer=None):
        """(activation, relevance) at ``layer`` (an encoder submodule's name; None: the encoder output).

        Both (B, C, h, w): the layer's output a and the LRP relevance R of the
        target logit that the layers above give it (the context is R / a).
        """
        activation, relevance, _ = self.decompose(X, target, layer, split=None)
        return activation, relevance

    def decompose(self, X, target, layer=None, split=None):
        """Relevance at ``layer``, and input heatmaps of parts of it.

        ``split(activation, relevance) -> (K, B, C, h, w)`` gives K relevance
        maps at the layer; each is propagated to the input with the same rules
        (LRP is linear in the relevance it is given, so maps that sum to
        ``relevance`` give heatmaps that sum to the standard one).
        Returns (activation, relevance, heatmaps (B, K, T, F) or None).
        """
        module = self._layer_module(layer)
        X_in = X.detach().requires_grad_(True)
        with torch.enable_grad(), lrp_context(self.path, self._composite(X_in)) as path:
            with capture_outputs(module) as captured:  # inside the composite: its hooks have run on the output
                head_scores = path(X_in)
            activation = captured[""]
            (relevance,) = torch.autograd.grad(
                head_scores, activation, grad_outputs=self._seed(head_scores, target), retain_graph=split is not None
            )
            heatmaps = None
            if split is not None:
                parts = split(activation.detach(), relevance.detach())
                heatmaps = torch.stack(
                    [
                        torch.autograd.grad(activation, X_in, grad_outputs=part, retain_graph=k < len(parts) - 1)[0]
                        for k, part in enumerate(parts)
                    ],
                    dim=1,
                )
        return activation.detach(), relevance.detach(), heatmaps


def gradient_saliency(classifier, X, target):
    """The plain gradient of the target logit w.r.t. X (B, T, F): one backward pass (benchmark baseline)."""
    X_in = X.detach().requires_grad_(True)
    with torch.enable_grad(), eval_mode(classifier):
        logits = classifier.logits(X_in)
        target = as_targets(target, logits)[:, None]
        (grad,) = torch.autograd.grad(logits.gather(1, target).sum(), X_in)
    return grad.detach()
