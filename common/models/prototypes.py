"""The AudioProtoPNet prototype head (Heinrich et al. 2024, arXiv 2404.10420).

A backbone feature map (B, C, h, w) is upsampled, compared with P learned
prototype vectors (1 x 1 parts, k per class) by cosine similarity at every
position, max-pooled to one similarity per prototype, and mapped to class
logits by a non-negative layer that connects each prototype to its own class
only. The similarity is computed exactly as in the AudioProtoPNet code, so
published weights give the published logits.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# AudioProtoPNet's constants: two channels of EPS appended to features and
# prototypes keep all-zero vectors well defined; the cosine is divided by 1.01
# so that it stays inside acos's domain in their margin loss.
EPS = 1e-4
N_EPS_CHANNELS = 2
COSINE_SCALE = 1.01


@dataclass
class PrototypeOutput:
    """What the head returns for a batch.

    logits: (B, n_classes); max_similarities: (B, P); max_locations: (B, P),
    flat index into H * W of each maximum; similarity_maps: (B, P, H, W), or
    None when the head worked through the prototypes in chunks.
    """

    logits: torch.Tensor
    max_similarities: torch.Tensor
    similarity_maps: torch.Tensor | None
    max_locations: torch.Tensor


class ClassSpecificLinear(nn.Module):
    """Non-negative last layer: class c sums its own k prototypes' similarities, weighted, plus a bias."""

    def __init__(self, n_classes, prototypes_per_class, init_weight=1.0, init_bias=-2.0):
        super().__init__()
        self.n_classes = n_classes
        self.prototypes_per_class = prototypes_per_class
        self.weight = nn.Parameter(torch.full((n_classes, prototypes_per_class), float(init_weight)))
        self.bias = nn.Parameter(torch.full((n_classes,), float(init_bias)))

    def forward(self, similarities):
        n_prototypes = self.n_classes * self.prototypes_per_class
        if similarities.dim() != 2 or similarities.shape[1] != n_prototypes:
            raise ValueError(
                f"ClassSpecificLinear expects similarities of shape (B, {n_prototypes}) "
                f"({self.n_classes} classes x {self.prototypes_per_class} prototypes), got {tuple(similarities.shape)}"
            )
        grouped = similarities.view(similarities.shape[0], self.n_classes, self.prototypes_per_class)
        # relu: a prototype can only add evidence for its class, never count against it.
        return torch.einsum("bck,ck->bc", grouped, torch.relu(self.weight)) + self.bias

    def extra_repr(self):
        return f"n_classes={self.n_classes}, prototypes_per_class={self.prototypes_per_class}"


class PrototypeHead(nn.Module):
    """AudioProtoPNet's head on a backbone map: upsample, cosine similarity to prototypes, max-pool, last layer.

    With ``frequency_height`` set, each prototype also learns a weight per
    frequency row of the (upsampled) map, sigmoid(3.0) ~ 0.95 at the start.
    With ``chunk_size`` set, inference works through that many prototypes at a
    time, so the B x P x H x W similarity tensor never exists at once.
    """

    def __init__(
        self,
        n_classes,
        prototypes_per_class,
        channels,
        upsample_factor=2,
        init_weight=1.0,
        init_bias=-2.0,
        frequency_height=None,
        chunk_size=None,
    ):
        super().__init__()
        for name, value in (
            ("n_classes", n_classes),
            ("prototypes_per_class", prototypes_per_class),
            ("channels", channels),
            ("upsample_factor", upsample_factor),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"PrototypeHead: {name} must be a positive integer, got {value!r}")
        if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
            raise ValueError(f"PrototypeHead: chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.n_classes = int(n_classes)
        self.prototypes_per_class = int(prototypes_per_class)
        self.n_prototypes = self.n_classes * self.prototypes_per_class
        self.channels = int(channels)
        self.upsample_factor = int(upsample_factor)
        self.frequency_height = frequency_height
        self.chunk_size = chunk_size
        self.prototype_vectors = nn.Parameter(torch.rand(self.n_prototypes, self.channels, 1, 1))
        if frequency_height is not None:
            self.frequency_weights = nn.Parameter(torch.full((self.n_prototypes, int(frequency_height)), 3.0))
        else:
            self.register_parameter("frequency_weights", None)
        self.last_layer = ClassSpecificLinear(self.n_classes, self.prototypes_per_class, init_weight, init_bias)
        self.register_buffer(
            "prototype_class_identity",
            torch.arange(self.n_prototypes) // self.prototypes_per_class,
            persistent=False,
        )
        # 1 = in use, 0 = pruned (ProtoPNet's pruning): a pruned prototype's similarity is 0 everywhere, so it
        # adds nothing to its class and is never the most activated. Saved with the checkpoint.
        self.register_buffer("prototype_mask", torch.ones(self.n_prototypes))

    # A checkpoint written before pruning existed (or published weights) has no mask: nothing is pruned.
    optional_state_keys = ("prototype_mask",)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "prototype_mask", torch.ones(self.n_prototypes))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def kept_prototypes(self):
        """Indices of the prototypes not pruned."""
        return torch.nonzero(self.prototype_mask > 0).flatten().tolist()

    def prune(self, prototype_ids):
        """Remove ``prototype_ids`` from the model (ProtoPNet's pruning): their similarities become 0."""
        self.prototype_mask[torch.as_tensor(list(prototype_ids), dtype=torch.long)] = 0.0

    def extra_repr(self):
        return (
            f"n_classes={self.n_classes}, prototypes_per_class={self.prototypes_per_class}, "
            f"channels={self.channels}, upsample_factor={self.upsample_factor}, "
            f"frequency_height={self.frequency_height}, chunk_size={self.chunk_size}"
        )

    def class_of(self, prototype_index):
        """The class prototype ``prototype_index`` belongs to."""
        if not 0 <= prototype_index < self.n_prototypes:
            raise IndexError(f"prototype index {prototype_index} outside 0..{self.n_prototypes - 1}")
        return int(prototype_index) // self.prototypes_per_class

    def prototypes_of_class(self, class_index):
        """The prototype indices of class ``class_index``, as a range."""
        if not 0 <= class_index < self.n_classes:
            raise IndexError(f"class index {class_index} outside 0..{self.n_classes - 1}")
        start = int(class_index) * self.prototypes_per_class
        return range(start, start + self.prototypes_per_class)

    def upsample(self, features):
        """Bilinear upsampling of a (B, C, h, w) backbone map by ``upsample_factor``."""
        self._check_map(features, "upsample")
        if self.upsample_factor == 1:
            return features
        return F.interpolate(features, scale_factor=self.upsample_factor, mode="bilinear", align_corners=False)

    def _check_map(self, features, where):
        if features.dim() != 4:
            raise ValueError(
                f"PrototypeHead.{where} expects a (B, C, H, W) feature map, got shape {tuple(features.shape)}"
            )
        if features.shape[1] != self.channels:
            raise ValueError(
                f"PrototypeHead.{where}: the feature map has {features.shape[1]} channels but the prototypes have "
                f"{self.channels}; build the head with channels={features.shape[1]} or check the backbone"
            )

    def _check_height(self, height):
        if self.frequency_weights is not None and height != self.frequency_weights.shape[1]:
            raise ValueError(
                f"PrototypeHead: the upsampled map is {height} rows high but the frequency weights have "
                f"{self.frequency_weights.shape[1]} rows; the spectrogram height or upsample_factor differ from training"
            )

    @staticmethod
    def _append_eps(tensor):
        eps = tensor.new_full((tensor.shape[0], N_EPS_CHANNELS, *tensor.shape[2:]), EPS)
        return torch.cat((tensor, eps), dim=1)

    def _normalized_features(self, features_up):
        x = self._append_eps(features_up)
        return x / torch.sqrt(torch.sum(x**2, dim=1, keepdim=True) + EPS)

    def _normalized_prototypes(self, prototype_slice):
        p = self._append_eps(self.prototype_vectors[prototype_slice])
        return p / (torch.sqrt(torch.sum(p**2, dim=1, keepdim=True) + EPS) + EPS)

    def _similarities(self, x_hat, prototype_slice):
        """Similarity maps of the prototypes in ``prototype_slice`` to an already normalised map."""
        sims = F.conv2d(x_hat, self._normalized_prototypes(prototype_slice))
        # Without autograd the (possibly huge) map is rewritten in place instead of copied three times.
        inplace = not torch.is_grad_enabled()
        sims = sims.div_(COSINE_SCALE) if inplace else sims / COSINE_SCALE
        if self.frequency_weights is not None:
            weights = torch.sigmoid(self.frequency_weights[prototype_slice])[None, :, :, None]
            sims = sims.mul_(weights) if inplace else sims * weights
        mask = self.prototype_mask[prototype_slice][None, :, None, None]
        sims = sims.mul_(mask) if inplace else sims * mask
        return sims.relu_() if inplace else torch.relu(sims)

    def similarity_maps(self, features_up, prototype_slice=slice(None)):
        """Cosine similarity (B, P', H, W) of each upsampled map position to the prototypes in ``prototype_slice``."""
        self._check_map(features_up, "similarity_maps")
        self._check_height(features_up.shape[2])
        return self._similarities(self._normalized_features(features_up), prototype_slice)

    def _chunked(self):
        return self.chunk_size is not None and (not self.training or not torch.is_grad_enabled())

    def forward(self, features):
        """Logits, max similarities and their locations for a raw backbone map (B, C, h, w)."""
        features_up = self.upsample(features)
        self._check_height(features_up.shape[2])
        x_hat = self._normalized_features(features_up)
        if self._chunked():
            maxima, locations = [], []
            for start in range(0, self.n_prototypes, self.chunk_size):
                sims = self._similarities(x_hat, slice(start, start + self.chunk_size))
                values, indices = sims.flatten(2).max(dim=-1)
                maxima.append(values)
                locations.append(indices)
                del sims  # free this chunk before the next one is computed
            max_similarities, max_locations, maps = torch.cat(maxima, 1), torch.cat(locations, 1), None
        else:
            maps = self._similarities(x_hat, slice(None))
            max_similarities, max_locations = maps.flatten(2).max(dim=-1)
        return PrototypeOutput(self.last_layer(max_similarities), max_similarities, maps, max_locations)

    def orthogonality_loss(self):
        """AudioProtoPNet's orthogonality loss: how far each class's normalised prototypes are from orthonormal."""
        flat = self.prototype_vectors.view(self.n_prototypes, -1)
        normalized = flat / (torch.sqrt(torch.sum(flat**2, dim=1, keepdim=True) + EPS) + EPS)
        per_class = normalized.view(self.n_classes, self.prototypes_per_class, -1)
        eye = torch.eye(self.prototypes_per_class, device=flat.device, dtype=flat.dtype)
        gram = per_class @ per_class.transpose(1, 2) - eye
        return torch.linalg.norm(gram) / gram.numel()
