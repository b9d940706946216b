"""Loading published weights: SpeechBrain checkpoints and transformers backbones.

Both paths take a HuggingFace hub id or a local path. Offline, or for an
unknown id, they raise HubUnavailableError saying how to proceed.
"""

import logging
from pathlib import Path

import torch

from common.errors import CheckpointError, HubUnavailableError

logger = logging.getLogger(__name__)


def _offline_hint(source, flag):
    return (
        f"Could not fetch {source!r} from the HuggingFace hub (no internet, or an unknown id). "
        f"Train from scratch with {flag}, or download it where you have internet "
        f"(`huggingface-cli download ...`) and pass the local path instead."
    )


def check_state_dict_fits(module, state_dict, source):
    """Raise CheckpointError listing missing/unexpected keys and shape mismatches."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state_dict))
        if hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    problems = [
        f"{len(items)} {what} (e.g. {items[:3]})"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    if problems:
        raise CheckpointError(
            f"Checkpoint {source} does not fit {type(module).__name__}: " + "; ".join(problems) + ". "
            "Check that the hparams (model size, number of classes) match those it was trained with."
        )


def load_speechbrain_params(module, path_or_hub, collect_in, name="embedding_model", flag="--use_pretrained 0"):
    """Load a SpeechBrain ``.ckpt`` (hub ``owner/repo/file.ckpt`` or local path) into ``module``."""
    from speechbrain.utils.parameter_transfer import Pretrainer

    Path(collect_in).mkdir(parents=True, exist_ok=True)
    pretrainer = Pretrainer(collect_in=str(collect_in), loadables={name: module}, paths={name: str(path_or_hub)})
    local = Path(str(path_or_hub)).exists()
    try:
        pretrainer.collect_files()
    except Exception as exc:
        if local:
            raise CheckpointError(f"Could not read checkpoint {path_or_hub}: {exc}") from exc
        raise HubUnavailableError(_offline_hint(path_or_hub, flag)) from exc
    ckpt = Path(collect_in) / f"{name}.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    check_state_dict_fits(module, state, path_or_hub)
    module.load_state_dict(state)
    logger.info("Loaded %s from %s", name, path_or_hub)
    return module


def adapt_input_channels(weight, target, name=""):
    """An RGB input convolution (out, 3, kh, kw) -> the (out, 1, kh, kw) of a one-channel model, by summing
    over the colour channels (a grey image then gives the same response); other tensors pass through."""
    if weight.ndim == 4 and target.ndim == 4 and weight.shape[1] == 3 and target.shape[1] == 1:
        if weight.shape[0] == target.shape[0] and weight.shape[2:] == target.shape[2:]:
            logger.info("Summing the 3 input channels of %s for a one-channel input", name)
            return weight.sum(dim=1, keepdim=True)
    return weight


def load_transformers_weights(module, hub_id, flag="--use_pretrained 0"):
    """Copy the weights of a transformers checkpoint (hub id or folder) into ``module``."""
    try:
        donor = type(module).from_pretrained(hub_id)
    except OSError as exc:
        if Path(str(hub_id)).exists():
            raise CheckpointError(f"Could not load transformers weights from {hub_id}: {exc}") from exc
        raise HubUnavailableError(_offline_hint(hub_id, flag)) from exc
    own = module.state_dict()
    state = donor.state_dict()
    unused = sorted(k for k in state if k not in own)  # e.g. ViT's pooler, unused by the recipes
    if unused:
        logger.info("Ignoring %d weights of %s that the model does not use: %s", len(unused), hub_id, unused[:5])
    state = {k: adapt_input_channels(v, own[k], k) for k, v in state.items() if k in own}
    check_state_dict_fits(module, state, hub_id)
    module.load_state_dict(state)
    logger.info("Loaded %s weights from %s", type(module).__name__, hub_id)
    return module


def best_checkpoint_dir(save_folder, key="acc", maximize=True):
    """A recipe's best checkpoint folder (highest ``key``, or lowest unless ``maximize``), or None."""
    from speechbrain.utils.checkpoints import Checkpointer

    if not Path(save_folder).is_dir():
        return None
    finder = Checkpointer(str(save_folder)).find_checkpoint
    ckpt = finder(max_key=key) if maximize else finder(min_key=key)
    return None if ckpt is None else ckpt.path


def load_recipe_checkpoint(modules, source, collect_in, what, producer, flag, key="acc", maximize=True):
    """Load ``{name: module}`` from a recipe's trained checkpoint.

    ``source``: the recipe's ``save`` folder (its best checkpoint by ``key`` is
    used), a folder holding one ``<name>.ckpt`` per module, or a hub id with
    those files. Returns the folder the files came from.
    """
    source = str(source)
    folder = Path(source)
    files = " and ".join(f"{name}.ckpt" for name in modules)
    if folder.is_dir() and not all((folder / f"{name}.ckpt").is_file() for name in modules):
        best = best_checkpoint_dir(folder, key, maximize)
        if best is None:
            raise CheckpointError(
                f"No {what} checkpoint in {folder}: expected CKPT+*/ folders with {files}, as written by "
                f"{producer}. Train the {what} first, or pass {flag} with a folder or hub id holding those files."
            )
        folder = best
    elif not folder.exists() and folder.is_absolute():
        raise CheckpointError(
            f"{what.capitalize()} checkpoint folder {source} does not exist. Expected the save folder of {producer} "
            f"(CKPT+*/ with {files}) or a folder holding those files; train the {what} first."
        )
    for name, module in modules.items():
        path = folder / f"{name}.ckpt" if folder.is_dir() else f"{source}/{name}.ckpt"
        if folder.is_dir() and not Path(path).is_file():
            raise CheckpointError(f"{path} is missing: a {what} checkpoint holds {files}.")
        load_speechbrain_params(module, path, collect_in, name=name, flag=flag + " DIR")
    return folder


def load_classifier(classifier, source, collect_in, flag="--classifier_source"):
    """Load a trained AudioClassifier's ``embedding_model`` and ``classifier`` weights.

    ``source``: the classification recipe's ``save`` folder (its best
    checkpoint by validation accuracy), a folder holding
    ``embedding_model.ckpt`` and ``classifier.ckpt``, or a hub id with those
    files (e.g. ``speechbrain/PIQ-ESC50``).
    """
    modules = {"embedding_model": classifier.embedding_model, "classifier": classifier.classifier}
    return load_recipe_checkpoint(
        modules, source, collect_in, "classifier", "recipes/ESC50/classification/train.py", flag
    )


def load_nmf_dictionary(nmf_decoder, source, collect_in, flag="--nmf_source"):
    """Load an NMF dictionary (``nmf_decoder.ckpt``) from the NMF recipe's save folder, a folder or a hub id."""
    return load_recipe_checkpoint(
        {"nmf_decoder": nmf_decoder},
        source,
        collect_in,
        "NMF dictionary",
        "recipes/ESC50/interpret/train_nmf.py",
        flag,
        key="loss",
        maximize=False,
    )
