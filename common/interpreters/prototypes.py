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

BOX_RULES = ("connected", "whole")
BOX_MAPS = ("similarity", "relevance")  # what a prototype's box is drawn on (see prototype_relevance)


def high_activation_box(activation, percentile=95.0, rule="connected"):
    """The box [t0, t1) x [f0, f1) of the most activated region of a (T, F) similarity map.

    ProtoPNet's crop thresholds the map at its ``percentile`` and bounds every
    bin above it (``rule="whole"``, the paper's); ``"connected"`` bounds only
    the connected above-threshold region that holds the maximum, so two
    separate matches do not merge into one box spanning the clip.
    """
    from scipy import ndimage

    if rule not in BOX_RULES:
        raise ValueError(f"box rule {rule!r} is not one of {BOX_RULES}")
    values = activation.detach().float().cpu()
    threshold = torch.quantile(values.flatten(), percentile / 100.0)
    # a map that is mostly at its floor (ReLU'd similarities far from the prototype) has the floor as its
    # percentile: then only what rises above the floor is the region, not the whole map
    above = (values > threshold if threshold <= values.min() else values >= threshold).numpy()
    if not above.any():  # a constant map: no region stands out
        above[:] = True
    if rule == "connected":
        regions, _ = ndimage.label(above)
        peak = np.unravel_index(int(values.argmax()), values.shape)
        above = regions == regions[peak]
    rows, cols = np.nonzero(above)
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


def prototype_relevance(model, X, prototype_ids, steps=1):
    """Each prototype's maximum similarity decomposed onto the spectrogram's bins: (B, len(ids), T, F).

    Upsampling a similarity map (ProtoPNet's box) places the evidence at the
    map cell's centre, but a late cell sees a wide receptive field, so the
    box often sits beside the call it matched. This is PRP's remedy (Gautam
    et al. 2023, "This looks more like that"): propagate the similarity back
    to the input. Deviation: Integrated Gradients (captum) from the front
    end's silence, not LRP rules, since ConvNeXt's GELU and LayerNorm have no
    standard LRP rule; ``steps=1`` is gradient x (input - silence), its
    one-step form. The relevance sums (``steps`` -> inf: exactly) to the
    similarity minus the similarity of silence.
    """
    from captum.attr import InputXGradient, IntegratedGradients

    from common.features import silence_of

    ids = torch.as_tensor(prototype_ids).flatten().tolist()
    silence = silence_of(model, X)  # (B, 1, 1)

    def max_similarity(above_silence):  # of the input silence + above_silence; captum stacks steps on the batch
        inputs = silence.repeat(len(above_silence) // len(silence), 1, 1) + above_silence
        features = model.head.upsample(model.hidden(inputs))
        return model.head.similarity_maps(features, ids).flatten(2).amax(-1)

    if int(steps) == 1:  # captum's Riemann sums need two steps or more
        method, options = InputXGradient(max_similarity), {}
    else:
        method = IntegratedGradients(max_similarity)
        options = {"baselines": torch.zeros_like(X), "n_steps": int(steps), "method": "riemann_right"}
    with torch.enable_grad():
        above = (X - silence).detach().requires_grad_(True)
        maps = [method.attribute(above, target=j, **options) for j in range(len(ids))]
    return torch.stack(maps, dim=1).detach()


def box_maps(model, X, prototype_ids, box_map="similarity", steps=1):
    """The maps a prototype's box, mass and maximum are read from: its similarity maps on the spectrogram
    grid (the paper's) or its relevance (``prototype_relevance``); (B, len(ids), T, F)."""
    if box_map not in BOX_MAPS:
        raise ValueError(f"box map {box_map!r} is not one of {BOX_MAPS}")
    if box_map == "relevance":
        return prototype_relevance(model, X, prototype_ids, steps)
    return prototype_maps(model, X, prototype_ids)[0]


@INTERPRETERS.register("prototypes")
class PrototypeInterpreter(Interpreter):
    """Saliency = the explained class's most activated prototype's similarity map, weighed by its last-layer
    weight (its contribution to the logit); mask = the map's high-activation region."""

    needs_fit = True

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

    @classmethod
    def fit(
        cls,
        classifier,
        data,
        percentile=95.0,
        n_clips=None,
        prototypes_per_class=2,
        epochs=30,
        lr=0.02,
        batch_size=16,
        seed=0,
    ):
        """The interpreter of an AudioProtoPNet-style network whose backbone is ``classifier``'s encoder (frozen,
        its weights copied) and whose prototype head is trained here on ``data`` (a ``FitData``: spectrograms
        X (N, T, F), class indices, class names; its first ``n_clips`` clips, all when None).

        The head (cosine similarity to 1x1 prototypes, max pooling, class-specific last layer) learns as the
        BirdSet recipe's stage 2 does: the Asymmetric Loss on one-hot targets plus the orthogonality of each
        class's prototypes. The network is multi-label (sigmoid outputs, what the metrics read), so it is
        trained as one: a softmax cross-entropy would fit only the logits' differences, not the probabilities
        the suite scores. The network (in eval mode, ``labels``: index -> class name) is the interpreter's
        ``classifier``: what it explains.
        """
        import copy

        from common.models.losses import AsymmetricLoss
        from common.models.protopnet import AudioProtoPNet
        from common.models.prototypes import PrototypeHead

        X, labels = data.X[:n_clips], torch.as_tensor(data.labels[:n_clips]).long()
        encoder = copy.deepcopy(classifier.embedding_model)
        with torch.no_grad():
            channels = classifier.hidden(X[:1]).shape[1]
        n_classes = int(labels.max()) + 1
        targets = torch.nn.functional.one_hot(labels, n_classes).float()
        loss_fn = AsymmetricLoss()  # the BirdSet recipe's defaults (gamma- 4, gamma+ 1, clip 0.05)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            head = PrototypeHead(n_classes, prototypes_per_class, channels)
            model = AudioProtoPNet(classifier.front_end, encoder, head, freeze_backbone=True)
            optimizer = torch.optim.Adam(head.parameters(), lr=lr)
            model.eval()  # the frozen backbone's maps once (BatchNorm in eval mode): only the head learns
            with torch.no_grad():
                hidden = torch.cat([model.hidden(X[k : k + batch_size]) for k in range(0, len(X), batch_size)])
            model.train()
            for _ in range(int(epochs)):
                order = torch.randperm(len(X))
                for lo in range(0, len(X), batch_size):
                    index = order[lo : lo + batch_size]
                    loss = loss_fn(model.head(hidden[index]).logits, targets[index]) + model.regularization_loss()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        model.eval()
        model.labels = dict(enumerate(data.classes))
        return cls(model, percentile=percentile)
