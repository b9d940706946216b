"""Explanations of a prototype network (AudioProtoPNet), read off the model itself.

"This part of the recording looks like that prototype": for the class
explained, the saliency is the similarity map of that class's most activated
prototype, upsampled to the spectrogram, and the mask is ProtoPNet's
high-activation region (the bins at or above the map's 95th percentile),
whose bounding box is the "box" of the analyses.
"""

import numpy as np
import torch

from common.interpreters.base import Interpreter, saliency_to_mask
from common.registry import INTERPRETERS


def high_activation_box(activation, percentile=95.0):
    """The box [t0, t1) x [f0, f1) of the most activated region of a (T, F) similarity map.

    ProtoPNet's crop thresholds the map at its ``percentile``; here the box
    bounds the connected above-threshold region that holds the maximum, so
    two separate matches do not merge into one box spanning the clip.
    """
    from scipy import ndimage

    values = activation.detach().float().cpu()
    above = (values >= torch.quantile(values.flatten(), percentile / 100.0)).numpy()
    regions, _ = ndimage.label(above)
    peak = np.unravel_index(int(values.argmax()), values.shape)
    rows, cols = np.nonzero(regions == regions[peak])
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def prototype_maps(model, X, prototype_ids):
    """Similarity maps of chosen prototypes on the spectrogram grid: (B, len(ids), T, F), and their maxima (B, ids).

    ``prototype_ids``: a (len,) index tensor, or a (B, len) one (per clip).
    """
    features_up = model.head.upsample(model.hidden(X))
    ids = torch.as_tensor(prototype_ids, device=X.device)
    if ids.ndim == 1:
        maps = model.head.similarity_maps(features_up, ids)
    else:
        maps = torch.cat([model.head.similarity_maps(features_up[b : b + 1], ids[b]) for b in range(len(ids))])
    maxima = maps.flatten(2).amax(dim=-1)
    B, P, H, W = maps.shape
    on_grid = model.map_to_spectrogram(maps.reshape(B * P, H, W), X.shape[1], X.shape[2])
    return on_grid.view(B, P, X.shape[1], X.shape[2]), maxima


@INTERPRETERS.register("prototypes")
class PrototypeInterpreter(Interpreter):
    """Saliency = the explained class's most activated prototype's similarity map, weighed by its last-layer
    weight (its contribution to the logit); mask = the map's high-activation region."""

    def __init__(self, classifier, percentile=95.0):
        super().__init__(classifier)
        self.percentile = float(percentile)

    @torch.no_grad()
    def attribute(self, X, target):
        head = self.classifier.head
        k = head.prototypes_per_class
        ids = target.view(-1, 1) * k + torch.arange(k, device=X.device)  # (B, k): the class's prototypes
        maps, maxima = prototype_maps(self.classifier, X, ids)
        best = maxima.argmax(dim=1)
        rows = torch.arange(len(X), device=X.device)
        weights = torch.relu(head.last_layer.weight)[target, best]
        return maps[rows, best] * weights.view(-1, 1, 1)

    def to_mask(self, saliency):
        return saliency_to_mask(saliency, "top", quantile=self.percentile / 100.0)
