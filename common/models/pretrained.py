"""Loading published weights: SpeechBrain checkpoints and transformers backbones.

Both paths take a HuggingFace hub id or a local path. A local path that does
not exist raises CheckpointNotFoundError (with the command that creates it,
where known); a hub id that cannot be fetched (offline, or unknown) raises
HubUnavailableError saying how to proceed. ``load_or_debug_fallback`` turns
either into a warning in ``--debug`` runs, as SpeechBrain's
``--use_pretrained 0`` would.
"""

import logging
import os
import re
from pathlib import Path

import torch

from common.errors import CheckpointError, CheckpointNotFoundError, HubUnavailableError

logger = logging.getLogger(__name__)

# owner/repo, and owner/repo/file: the form SpeechBrain's Pretrainer paths take ("speechbrain/PIQ-ESC50/classifier.ckpt")
_HUB_REPO = r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*"


def is_hub_id(source, file=None):
    """True for a hub ``owner/repo`` (``file=False``), ``owner/repo/file`` (``file=True``) or either (None)
    that names no local path; anything starting with ``.``, ``/`` or ``~``, longer, or existing here is local."""
    text = str(source)
    if text.startswith((".", "/", "~")) or Path(text).exists():
        return False
    tail = {None: r"(/[^/]+)?$", False: r"$", True: r"/[^/]+$"}[file]
    return bool(re.match(_HUB_REPO + tail, text))


def overridden_keys(overrides):
    """The top-level keys set on the command line (SpeechBrain's ``parse_arguments`` overrides, one
    ``key: value`` line each)."""
    if isinstance(overrides, dict):
        return set(overrides)
    return set(re.findall(r"^([A-Za-z_]\w*):", overrides or "", flags=re.MULTILINE))


def resolve_recipe_paths(hparams, keys, recipe_dir, overridden=None):
    """Relative local paths among ``hparams[keys]`` that come from the hparams file resolve against the
    recipe's folder (the one its README runs it from), so a recipe behaves the same from any working
    directory, e.g. ``classifier_source: ../classification/results/...`` run from the repository root.
    Paths given on the command line (``overridden``) keep the working directory, as typed; hub ids are
    left alone. With ``overridden`` unknown (None), a path that exists from the working directory is kept."""
    for key in keys:
        value = hparams.get(key)
        if not isinstance(value, str) or not value or os.path.isabs(value) or is_hub_id(value):
            continue
        if overridden is not None and key in overridden:
            continue
        if overridden is None and Path(value).exists():
            continue
        hparams[key] = os.path.normpath(os.path.join(os.path.abspath(recipe_dir), os.path.expanduser(value)))
    return hparams


def recipe_command(hparams_file, script, data_folder, output_folder, *extra):
    """The command line that trains what a source points at (said when that source does not exist)."""
    script = Path(os.path.abspath(hparams_file)).parent.parent / script  # recipes keep hparams/ beside their scripts
    words = ["python", script, hparams_file, "--data_folder", data_folder, "--output_folder", output_folder, *extra]
    return " ".join(map(str, words))


def load_or_debug_fallback(load, what, debug=False, requested=False):
    """``load()``; in ``--debug`` runs a ``what`` that cannot be had (CheckpointNotFoundError: not trained
    yet; HubUnavailableError: hub unreachable) is instead left randomly initialised, with a warning, which
    is what SpeechBrain's recipe tests get from ``--use_pretrained 0``. Outside ``--debug``, or where the
    command line asked for that source (``requested``), the error stands; so does one that does not fit.
    Returns what ``load`` returned, or None after falling back."""
    try:
        return load()
    except (CheckpointNotFoundError, HubUnavailableError) as exc:
        if not debug or requested:
            raise
        logger.warning(
            "--debug: %s cannot be had, so this run uses a RANDOMLY INITIALISED %s instead: it tests the code "
            "path only and its numbers mean nothing. (%s)",
            what,
            what,
            exc,
        )
        return None


def _offline_hint(source, flag):
    return (
        f"Could not fetch {source!r} from the HuggingFace hub (no internet, or an unknown id). "
        f"Train from scratch with {flag}, or download it where you have internet "
        f"(`huggingface-cli download ...`) and pass the local path instead."
    )


def check_state_dict_fits(module, state_dict, source):
    """Raise CheckpointError listing missing/unexpected keys and shape mismatches."""
    own = module.state_dict()
    # keys a submodule fills in itself when a checkpoint lacks them (e.g. PrototypeHead's pruning mask)
    optional = {f"{name}.{key}" if name else key for name, sub in module.named_modules()
                for key in getattr(sub, "optional_state_keys", ())}  # fmt: skip
    missing = sorted(set(own) - set(state_dict) - optional)
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


def load_state_file(path, fix, shown=None):
    """``torch.load`` of a state-dict file; a file that cannot be read (truncated, not a torch file) is a
    CheckpointError naming it (``shown``, where the user knows it by another name) and ``fix``."""
    from common.checkpoints import short_reason

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Checkpoint file {shown or path} cannot be read ({short_reason(exc)}): it is damaged (e.g. truncated "
            f"by an interrupted copy or download) or not a torch state dict. {fix}"
        ) from exc


def load_speechbrain_params(module, path_or_hub, collect_in, name="embedding_model", flag="--use_pretrained 0"):
    """Load a SpeechBrain ``.ckpt`` (hub ``owner/repo/file.ckpt`` or local path) into ``module``."""
    from speechbrain.utils.parameter_transfer import Pretrainer

    local = Path(str(path_or_hub)).exists()
    if not local and not is_hub_id(path_or_hub, file=True):
        raise CheckpointNotFoundError(
            f"Checkpoint file {path_or_hub} does not exist (looked for {os.path.abspath(str(path_or_hub))}). "
            f"Pass an existing file, a hub path such as owner/repo/{Path(str(path_or_hub)).name}, or {flag}."
        )
    Path(collect_in).mkdir(parents=True, exist_ok=True)
    pretrainer = Pretrainer(collect_in=str(collect_in), loadables={name: module}, paths={name: str(path_or_hub)})
    try:
        pretrainer.collect_files()
    except Exception as exc:
        if local:
            raise CheckpointError(f"Could not read checkpoint {path_or_hub}: {exc}") from exc
        raise HubUnavailableError(_offline_hint(path_or_hub, flag)) from exc
    ckpt = Path(collect_in) / f"{name}.ckpt"
    fix = "Replace it with a good copy" + ("." if local else " (delete the hub cache entry to download it again).")
    state = load_state_file(ckpt, fix, shown=path_or_hub if local else f"{path_or_hub} (collected in {ckpt})")
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
    if not Path(str(hub_id)).exists() and not is_hub_id(hub_id, file=False):
        raise CheckpointNotFoundError(
            f"Backbone folder {hub_id} does not exist (looked for {os.path.abspath(str(hub_id))}). "
            f"Pass an existing folder, a hub id such as microsoft/focalnet-base, or {flag}."
        )
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
    from common.checkpoints import AtomicCheckpointer

    if not Path(save_folder).is_dir():
        return None
    # only reading another run's folder: damaged CKPT.yaml skipped with a warning, its staging left alone
    finder = AtomicCheckpointer(str(save_folder), clean_staging=False).find_checkpoint
    ckpt = finder(max_key=key) if maximize else finder(min_key=key)
    return None if ckpt is None else ckpt.path


def load_recipe_checkpoint(
    modules, source, collect_in, what, producer, flag, key="acc", maximize=True, files=None, make=None
):
    """Load ``{name: module}`` from a recipe's trained checkpoint.

    ``source``: the recipe's ``save`` folder (its best checkpoint by ``key`` is
    used; there each module is ``<name>.ckpt``, the Checkpointer's names), or a
    folder or hub id laid out as published: ``files`` maps each name to its file
    there (default ``<name>.ckpt``; SpeechBrain's speechbrain/PIQ-ESC50 pairs
    ``embedding_modelft.ckpt`` with ``classifier.ckpt``). ``make``: the command
    that creates ``source``, said when it does not exist. Returns the folder the
    files came from.
    """
    source = str(source)
    files = {name: (files or {}).get(name, f"{name}.ckpt") for name in modules}
    folder = Path(source)
    train = f"Create it with:\n    {make}" if make else f"Train the {what} first ({producer})."
    if folder.is_dir():
        if not all((folder / file).is_file() for file in files.values()):
            best = best_checkpoint_dir(folder, key, maximize)
            if best is None:
                listed = " and ".join(files.values())
                raise CheckpointNotFoundError(
                    f"No {what} checkpoint in {folder}: expected CKPT+*/ folders as written by {producer}, or {listed}. "
                    f"{train} Or pass {flag} with a folder or hub id holding those files."
                )
            folder, files = best, {name: f"{name}.ckpt" for name in modules}
        for name, module in modules.items():
            path = folder / files[name]
            if not path.is_file():
                raise CheckpointError(f"{path} is missing: a {what} checkpoint holds {' and '.join(files.values())}.")
            load_speechbrain_params(module, path, collect_in, name=name, flag=flag + " DIR")
        return folder
    # a local path, never a hub id: say where it was looked for, and how to make it
    if not is_hub_id(source, file=False):
        raise CheckpointNotFoundError(
            f"{what.capitalize()} checkpoint folder {source} does not exist (looked for {os.path.abspath(source)}). "
            f"It should be the save folder of {producer} (CKPT+*/ folders) or a folder holding "
            f"{' and '.join(files.values())}. {train}"
        )
    for name, module in modules.items():
        load_speechbrain_params(module, f"{source}/{files[name]}", collect_in, name=name, flag=flag + " DIR")
    return folder


def load_classifier(classifier, source, collect_in, flag="--classifier_source", files=None, make=None):
    """Load a trained AudioClassifier's ``embedding_model`` and ``classifier`` weights.

    ``source``: the classification recipe's ``save`` folder (its best
    checkpoint by validation accuracy), or a folder or hub id laid out as
    published, ``files`` naming its two files (default ``embedding_model.ckpt``
    and ``classifier.ckpt``, as in speechbrain/cnn14-esc50; speechbrain/PIQ-ESC50
    needs ``embedding_modelft.ckpt``). ``make``: the command that creates ``source``.
    """
    modules = {"embedding_model": classifier.embedding_model, "classifier": classifier.classifier}
    return load_recipe_checkpoint(
        modules,
        source,
        collect_in,
        "classifier",
        "recipes/ESC50/classification/train.py",
        flag,
        files=files,
        make=make,
    )


def load_nmf_dictionary(nmf_decoder, source, collect_in, flag="--nmf_source", files=None, make=None):
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
        files=files,
        make=make,
    )
