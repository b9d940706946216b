"""A SpeechBrain Checkpointer whose checkpoints appear whole or not at all.

SpeechBrain writes ``CKPT.yaml`` first and the parameter files after it, so a
run killed while saving leaves a folder that looks complete and fails to
load. Here everything is written into a hidden staging folder that is renamed
into place once complete (rename is atomic), and metadata must be plain
Python scalars, which SpeechBrain 1.1.2 can read back (tensors cannot).
"""

import logging
import numbers
import os
import shutil

from speechbrain.utils.checkpoints import Checkpoint, Checkpointer
from speechbrain.utils.distributed import if_main_process

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


class AtomicCheckpointer(Checkpointer):
    """Checkpointer with all-or-nothing saves and plain-scalar metadata."""

    def __init__(self, checkpoints_dir, *args, **kwargs):
        super().__init__(checkpoints_dir, *args, **kwargs)
        self._staging = None
        if if_main_process() and self.checkpoints_dir.is_dir():
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
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, "Saved an %s checkpoint in %s", kind, final)
        if ckpt is None:
            return None
        paramfiles = {k: final / p.name for k, p in ckpt.paramfiles.items()}
        return Checkpoint(final, ckpt.meta, paramfiles)
