"""Published AudioProtoPNet weights -> a transformers ConvNextModel and a PrototypeHead.

The published checkpoints keep the ConvNeXt backbone under ``model.backbone.``
(transformers ``ConvNextModel`` keys after it, sometimes behind an extra
``convnext.``) and the head under ``head.``: ``prototype_vectors`` (P, C, 1, 1),
``last_layer.weight`` (n_classes, k) or (n_classes, P), ``last_layer.bias`` and,
optionally, ``frequency_weights`` (P, H).
"""

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from common.errors import CheckpointError
from common.models.pretrained import check_state_dict_fits
from common.models.prototypes import PrototypeHead

BACKBONE_PREFIX = "model.backbone."
HEAD_PREFIX = "head."
REQUIRED_HEAD_KEYS = ("prototype_vectors", "last_layer.weight", "last_layer.bias")
HEAD_KEYS = (*REQUIRED_HEAD_KEYS, "frequency_weights", "prototype_mask")  # the mask: pruned (ours)
TORCH_SUFFIXES = (".pt", ".ckpt", ".bin", ".pth")


def _backbone_key(key):
    """The ConvNextModel key for a ``model.backbone.`` key; None for the backbone's own classifier."""
    rest = key[len(BACKBONE_PREFIX) :]
    rest = rest.removeprefix("convnext.")
    # The backbone's classifier is unused: the prototype head replaces it.
    return None if rest.startswith("classifier.") else rest


def _class_specific_weights(weight, n_classes, prototypes_per_class):
    """Each prototype's weight to its own class, from a full (n_classes, P) last layer."""
    weight = weight.detach()
    n_prototypes = n_classes * prototypes_per_class
    owner = torch.arange(n_prototypes) // prototypes_per_class
    own = weight[owner, torch.arange(n_prototypes)]
    off_class = weight.clone()
    off_class[owner, torch.arange(n_prototypes)] = 0
    n_off = int((off_class != 0).sum())
    if n_off:
        warnings.warn(
            f"AudioProtoPNet last layer: {n_off} weights connect prototypes to other classes than their own "
            f"(largest {float(off_class.max()):.4g}, smallest {float(off_class.min()):.4g}); they are dropped, "
            "since the class-specific layer connects each prototype to its own class only. Negative ones had no "
            "effect under AudioProtoPNet's non-negative last layer; positive ones change the logits.",
            stacklevel=3,
        )
    return own.view(n_classes, prototypes_per_class).clone()


def split_audioprotopnet_state_dict(state_dict):
    """Split a published AudioProtoPNet state dict into (backbone_state_dict, head_state_dict, info).

    info holds n_classes, prototypes_per_class, channels and frequency_height
    (None without frequency weights), the arguments of PrototypeHead.
    """
    backbone, head, unknown = {}, {}, []
    for key, value in state_dict.items():
        if key.startswith(BACKBONE_PREFIX):
            new_key = _backbone_key(key)
            if new_key is not None:
                backbone[new_key] = value
        elif key.startswith(HEAD_PREFIX) and key[len(HEAD_PREFIX) :] in HEAD_KEYS:
            head[key[len(HEAD_PREFIX) :]] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"Not an AudioProtoPNet state dict: {len(unknown)} unknown keys {sorted(unknown)[:20]}. Expected keys "
            f"under {BACKBONE_PREFIX!r} (ConvNextModel) and {', '.join(HEAD_PREFIX + k for k in HEAD_KEYS)}."
        )
    missing = [HEAD_PREFIX + k for k in REQUIRED_HEAD_KEYS if k not in head]
    if not backbone:
        missing.append(f"{BACKBONE_PREFIX}*")
    if missing:
        raise CheckpointError(f"AudioProtoPNet state dict lacks {missing}; is it a complete AudioProtoPNet checkpoint?")

    prototypes, weight, bias = head["prototype_vectors"], head["last_layer.weight"], head["last_layer.bias"]
    if prototypes.dim() != 4 or tuple(prototypes.shape[2:]) != (1, 1):
        raise CheckpointError(
            f"head.prototype_vectors has shape {tuple(prototypes.shape)}; expected (P, C, 1, 1) (1 x 1 prototypes)"
        )
    n_prototypes, channels = prototypes.shape[:2]
    if bias.dim() != 1 or weight.dim() != 2 or weight.shape[0] != bias.shape[0]:
        raise CheckpointError(
            f"head.last_layer.weight {tuple(weight.shape)} and head.last_layer.bias {tuple(bias.shape)} "
            "do not fit together; expected (n_classes, k) or (n_classes, P) and (n_classes,)"
        )
    n_classes = bias.shape[0]
    if n_prototypes % n_classes:
        raise CheckpointError(
            f"{n_prototypes} prototypes do not divide evenly among {n_classes} classes "
            "(AudioProtoPNet gives every class the same number k)"
        )
    prototypes_per_class = n_prototypes // n_classes
    if weight.shape[1] == prototypes_per_class:
        pass  # already class-specific (n_classes, k)
    elif weight.shape[1] == n_prototypes:
        head["last_layer.weight"] = _class_specific_weights(weight, n_classes, prototypes_per_class)
    else:
        raise CheckpointError(
            f"head.last_layer.weight has shape {tuple(weight.shape)}; with {n_prototypes} prototypes and "
            f"{n_classes} classes expected ({n_classes}, {prototypes_per_class}) or ({n_classes}, {n_prototypes})"
        )
    frequency_height = None
    if "frequency_weights" in head:
        frequency_weights = head["frequency_weights"]
        if frequency_weights.dim() != 2 or frequency_weights.shape[0] != n_prototypes:
            raise CheckpointError(
                f"head.frequency_weights has shape {tuple(frequency_weights.shape)}; expected ({n_prototypes}, H)"
            )
        frequency_height = int(frequency_weights.shape[1])
    info = {
        "n_classes": int(n_classes),
        "prototypes_per_class": int(prototypes_per_class),
        "channels": int(channels),
        "frequency_height": frequency_height,
    }
    return backbone, head, info


def load_audioprotopnet_checkpoint(path):
    """The state dict in an AudioProtoPNet ``.safetensors`` or ``.pt/.ckpt/.bin`` file (Lightning's wrapper removed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"AudioProtoPNet checkpoint {path} not found; download it or fix the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif suffix in TORCH_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(
                f"AudioProtoPNet checkpoint {path}: unknown format {suffix!r}; expected .safetensors or "
                f"{'/'.join(TORCH_SUFFIXES)}"
            )
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"Could not read AudioProtoPNet checkpoint {path}: {exc}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"AudioProtoPNet checkpoint {path} does not hold a state dict of tensors")
    return dict(state)


def build_from_audioprotopnet(
    state_dict, backbone_config, *, upsample_factor=2, chunk_size=None, source="AudioProtoPNet state dict"
):
    """A (ConvNextModel, PrototypeHead) pair, in eval mode, holding the weights of a published AudioProtoPNet.

    ``backbone_config`` is the transformers ConvNextConfig of the backbone
    (num_channels=1 for spectrograms); the head sits on its last_hidden_state.
    """
    from transformers import ConvNextModel

    backbone_state, head_state, info = split_audioprotopnet_state_dict(state_dict)
    if backbone_config.hidden_sizes[-1] != info["channels"]:
        raise CheckpointError(
            f"{source}: the prototypes have {info['channels']} channels but the ConvNextConfig's last stage has "
            f"{backbone_config.hidden_sizes[-1]}; pass the config the checkpoint was trained with"
        )
    backbone = ConvNextModel(backbone_config)
    check_state_dict_fits(backbone, backbone_state, source)
    backbone.load_state_dict(backbone_state, strict=True)
    head = PrototypeHead(**info, upsample_factor=upsample_factor, chunk_size=chunk_size)
    check_state_dict_fits(head, head_state, source)
    head.load_state_dict(head_state, strict=True)
    return backbone.eval(), head.eval()
