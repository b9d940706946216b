"""Activation-map thresholding (Della Libera, Subakan, Ravanelli, ICASSP 2024 XAI-SA).

A by-design reading of attention-like maps, with no training:

* FocalNet: the saliency is the L2 norm over channels of the modulator of
  the last focal-modulation block (the output of its ``projection_context``,
  read with a forward hook), i.e. where the network gathers context;
* ViT: the attention of the CLS token to the patch tokens in the last layer,
  averaged over heads.

The map lives on the backbone's image grid (the spectrogram resized to a
square); it is resized back to the spectrogram (B, T, F) and the mask keeps
the top ``top_fraction`` of bins (10% by default). The map does not depend on
the class explained: it is what the model attends to for its own decision.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from common.interpreters.base import Interpreter, saliency_to_mask
from common.models.hooks import capture_outputs
from common.registry import INTERPRETERS


@contextmanager
def eager_attention(model):
    """Run a transformers model with its eager attention (which returns the
    attention probabilities; the SDPA kernels do not), then restore its own."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)


def last_module_named(model, suffix):
    names = [name for name, _ in model.named_modules() if name.endswith(suffix)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no submodule named *{suffix}")
    return names[-1]


@INTERPRETERS.register("amt")
class ActivationMapInterpreter(Interpreter):
    """Saliency = the backbone's own activation map; mask = its top ``top_fraction`` bins.

    An ``nn.Module`` without parameters, so the interpreter Brain can hold it
    like any other interpreter (nothing to train, nothing to checkpoint). Not class-conditional:
    the map is the backbone's, whatever the class; asked for a class other than the prediction it
    raises ``ForeignTargetError``.
    """

    class_conditional = False

    def __init__(self, classifier, top_fraction=0.1):
        super().__init__(classifier)
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        self.top_fraction = float(top_fraction)
        backbone = classifier.embedding_model
        model_type = getattr(getattr(backbone, "config", None), "model_type", None)
        if model_type not in ("focalnet", "vit"):
            raise ValueError(
                f"Activation-map thresholding reads a FocalNet modulator or ViT attention; the classifier's "
                f"encoder is {type(backbone).__name__}. Use hparams/amt_focalnet.yaml or amt_vit.yaml."
            )
        self.model_type = model_type
        # FocalNet: the last block's modulator, found once (its output is the map)
        self.modulator_name = (
            last_module_named(backbone, "modulation.projection_context") if model_type == "focalnet" else None
        )

    @torch.no_grad()
    def activation_map(self, X):
        """(B, h, w) on the backbone's patch grid."""
        backbone = self.classifier.embedding_model
        image = self.classifier.to_image(X)
        if self.model_type == "focalnet":
            with capture_outputs(backbone, [self.modulator_name]) as captured:  # a Conv2d, run once per pass
                backbone(pixel_values=image)
            return captured[self.modulator_name].norm(dim=1)  # (B, C, h, w) -> (B, h, w)
        with eager_attention(backbone):
            attention = backbone(pixel_values=image, output_attentions=True).attentions[-1]
        cls_to_patches = attention[:, :, 0, 1:].mean(dim=1)  # (B, heads, N, N) -> (B, n_patches)
        side = int(round(cls_to_patches.shape[-1] ** 0.5))
        return cls_to_patches.reshape(-1, side, side)

    def attribute(self, X, target):
        """The activation map resized to X (B, T, F); ``target`` must be the classifier's decision."""
        self.check_own_decision(target, self.predict(X))
        heat = self.activation_map(X).unsqueeze(1)
        return F.interpolate(heat, size=X.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)

    def to_mask(self, saliency):
        return saliency_to_mask(saliency, mode="top", quantile=1.0 - self.top_fraction)
