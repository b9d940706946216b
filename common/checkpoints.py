"""A SpeechBrain Checkpointer whose checkpoints appear whole or not at all.

SpeechBrain writes ``CKPT.yaml`` first and the parameter files after it, so a
run killed while saving leaves a folder that looks complete and fails to
load. Here everything is written into a hidden staging folder that is renamed
into place once complete (rename is atomic), and metadata must be plain
Python scalars, which SpeechBrain 1.1.2 can read back (tensors cannot).

A damaged checkpoint (a ``CKPT.yaml`` that is not SpeechBrain's mapping, a
parameter file that cannot be loaded, e.g. truncated) is named, never a bare
torch or yaml error. Resuming (``recover_if_possible()`` ranked by recency, as
``Brain.on_fit_start`` calls it) skips it with a warning and loads the newest
one that does load; loading the best by a key (evaluation, ``--test_only``)
raises CheckpointError instead, since a test score from the second best would
be reported as the best's.
"""

import logging
import numbers
import os
import shutil

import torch
import yaml
from speechbrain.utils.checkpoints import (
    DEFAULT_LOAD_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    get_default_hook,
)
from speechbrain.utils.distributed import if_main_process

from common.errors import CheckpointError

STAGING_PREFIX = ".partial-"
logger = logging.getLogger(__name__)


def _check_plain(meta):
    for key, value in meta.items():
        if not isinstance(value, (numbers.Number, str, bool, type(None))) or type(value).__module__ not in (
            "builtins",
        ):
            raise TypeError(
                f"Checkpoint meta {key!r} is a {type(value).__name__}; store a plain float/int/str "
                "(e.g. float(x)) so the checkpoint can be read back."
            )


def short_reason(exc, limit=200):
    """``Type: first line`` of an exception (torch's "corrupted" messages run to several sentences); a first
    line ending in ':' (torch's "Error(s) in loading state_dict for Linear:") keeps the line after it."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0].split(". ")[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def read_checkpoint_meta(ckpt_dir):
    """The meta mapping of ``ckpt_dir``'s CKPT.yaml; raises CheckpointError saying why it is unusable
    (SpeechBrain would fail later, naming nothing: a string meta is a TypeError in its sorting)."""
    path = ckpt_dir / METAFNAME
    try:
        text = path.read_text(encoding="utf-8")
        meta = yaml.safe_load(text)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path} is not valid YAML ({short_reason(exc)})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{path} holds a {type(meta).__name__} ({text.strip()[:40]!r}), not the mapping SpeechBrain writes"
        )
    for key in ("unixtime", "end-of-epoch"):  # what SpeechBrain's ranking and loading read from every checkpoint
        if key not in meta:
            raise CheckpointError(f"{path} has no {key!r} entry")
    if not isinstance(meta["unixtime"], numbers.Real) or isinstance(meta["unixtime"], bool):
        raise CheckpointError(f"{path} has a non-numeric 'unixtime' ({meta['unixtime']!r})")
    return meta


def _why_not_loaded(path):
    """Whether a file whose load hook failed is damaged or only does not fit: only read on a failure."""
    try:
        if os.path.getsize(path) == 0:
            return "the file is empty"
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return "the file is damaged, e.g. truncated by a full disk or an interrupted copy"
    return "the file reads, but does not fit what it is loaded into (were the hparams changed since it was written)"


def _name_the_file(hook, name):
    def load(obj, path, end_of_epoch):
        try:
            hook(obj, path, end_of_epoch)
        except Exception as exc:
            raise CheckpointError(
                f"Checkpoint file {path} cannot be loaded into {name} ({short_reason(exc)}); {_why_not_loaded(path)}"
            ) from exc

    return load


class AtomicCheckpointer(Checkpointer):
    """Checkpointer with all-or-nothing saves, plain-scalar metadata and named, skipped damaged checkpoints.

    ``clean_staging=False``: only read the folder (e.g. another recipe's save folder, which a run may be
    writing into right now); its staging leftovers are then not removed.
    """

    def __init__(self, checkpoints_dir, *args, clean_staging=True, **kwargs):
        super().__init__(checkpoints_dir, *args, **kwargs)
        self._staging = None
        self._warned = set()  # damaged CKPT.yaml already named in a warning by this checkpointer
        self._unloadable = {}  # checkpoint folder -> why it failed to load in this process (skipped from then on)
        if clean_staging and if_main_process() and self.checkpoints_dir.is_dir():
            for stale in self.checkpoints_dir.glob(STAGING_PREFIX + "*"):
                shutil.rmtree(stale, ignore_errors=True)

    def _new_checkpoint_dirpath(self):
        final = super()._new_checkpoint_dirpath()
        return self._stage(final)

    def _custom_checkpoint_dirpath(self, name):
        return self._stage(super()._custom_checkpoint_dirpath(name))

    def _stage(self, final):
        if self._staging is None:
            return final
        self._staging = (final, final.with_name(STAGING_PREFIX + final.name))
        return self._staging[1]

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        _check_plain(meta)
        self._staging = ()  # ask the dirpath hooks for a staging folder
        try:
            # SpeechBrain would log the staging path; log the final one instead.
            ckpt = super().save_checkpoint(meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=logging.DEBUG)
            staged = self._staging
        except BaseException:
            if self._staging:  # drop the half-written folder now; earlier checkpoints are untouched
                shutil.rmtree(self._staging[1], ignore_errors=True)
            raise
        finally:
            self._staging = None
        if not staged:  # not the main process: it wrote nothing
            return ckpt
        final, staging = staged
        if staging.exists():
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        self._unloadable.pop(final, None)  # a new checkpoint of that name (name=...) is tried afresh
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, "Saved an %s checkpoint in %s", kind, final)
        if ckpt is None:
            return None
        paramfiles = {k: final / p.name for k, p in ckpt.paramfiles.items()}
        return Checkpoint(final, ckpt.meta, paramfiles)

    # -- damaged checkpoints --------------------------------------------------------
    def list_checkpoints(self):
        """SpeechBrain's list, without the checkpoints whose CKPT.yaml is unusable (each named once in a
        warning, and left on disk) or that failed to load earlier in this process."""
        ckpts = []
        for ckpt_dir in self._list_checkpoint_dirs():
            if ckpt_dir in self._unloadable:
                continue
            try:
                meta = read_checkpoint_meta(ckpt_dir)
            except FileNotFoundError:  # deleted since it was listed
                continue
            except CheckpointError as exc:
                if ckpt_dir not in self._warned:
                    self._warned.add(ckpt_dir)
                    logger.warning(
                        "Skipping damaged checkpoint %s: %s. It is left on disk; delete it (or move it out of %s) "
                        "to silence this warning.",
                        ckpt_dir,
                        exc,
                        self.checkpoints_dir,
                    )
                continue
            # as SpeechBrain's _construct_checkpoint_objects
            paramfiles = {f.stem: f for f in ckpt_dir.iterdir() if f.suffix == PARAMFILE_EXT}
            ckpts.append(Checkpoint(ckpt_dir, meta, paramfiles))
        return ckpts

    def _call_load_hooks(self, checkpoint):
        # SpeechBrain's own loop (custom hook, else the default for the type), with each hook wrapped so that its failure names the file; the missing-file
        # and unknown-type errors SpeechBrain raises itself are named by load_checkpoint.
        original = self.custom_load_hooks
        wrapped = dict(original)
        for name, obj in self.recoverables.items():
            hook = original.get(name) or get_default_hook(obj, DEFAULT_LOAD_HOOKS)
            if hook is not None:
                wrapped[name] = _name_the_file(hook, name)
        self.custom_load_hooks = wrapped
        try:
            super()._call_load_hooks(checkpoint)
        finally:
            self.custom_load_hooks = original

    def load_checkpoint(self, checkpoint):
        """Load ``checkpoint``; any failure is a CheckpointError naming the checkpoint and the file."""
        try:
            super().load_checkpoint(checkpoint)
        except CheckpointError:  # a hook's: it names the file, inside the checkpoint's folder
            raise
        except Exception as exc:
            raise CheckpointError(f"Checkpoint {checkpoint.path} cannot be loaded ({short_reason(exc)})") from exc

    def recover_if_possible(self, importance_key=None, max_key=None, min_key=None, ckpt_predicate=None):
        """SpeechBrain's, except for a checkpoint that does not load: ranked by recency (resuming), it is
        skipped with a warning and the next newest is tried; ranked by a key (the best, for evaluation),
        a CheckpointError names it, as falling back would report the second best's score as the best's."""
        ranked = self.find_checkpoints(importance_key, max_key, min_key, ckpt_predicate)
        if not ranked:
            logger.info("Would load a checkpoint here, but none found yet.")
            return None
        resuming = importance_key is None and max_key is None and min_key is None
        for i, ckpt in enumerate(ranked):
            try:
                self.load_checkpoint(ckpt)
                return ckpt
            except CheckpointError as exc:
                following = ranked[i + 1].path.name if i + 1 < len(ranked) else None
                if not resuming:
                    by = max_key or min_key or "its importance key"
                    instead = (
                        f"to evaluate the next best, {following}, instead"
                        if following
                        else "and train again (it is the only checkpoint)"
                    )
                    raise CheckpointError(
                        f"{exc}. It is the best checkpoint by {by}, and is not replaced by another one silently: "
                        f"restore the file, or delete {ckpt.path.name} (or move it out of {self.checkpoints_dir}) "
                        f"{instead}."
                    ) from exc
                self._unloadable[ckpt.path] = str(exc)
                logger.warning(
                    "Skipping checkpoint %s: %s. %sThe skipped one is left on disk for inspection.",
                    ckpt.path.name,
                    exc,
                    f"Resuming from the next newest, {following}, instead. " if following else "",
                )
        n = f"the {len(ranked)} checkpoints" if len(ranked) > 1 else "the 1 checkpoint"
        raise CheckpointError(
            f"None of {n} in {self.checkpoints_dir} can be loaded to resume from (the newest: "
            f"{self._unloadable[ranked[0].path]}). If the hparams changed since they were written, use another "
            "--output_folder; if they are damaged, restore them, or delete them to train from scratch."
        )
