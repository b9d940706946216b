"""The checkpointer's old path, which hparams files saved by earlier runs name; it lives in ``common.checkpoints``."""

from common.checkpoints import STAGING_PREFIX, AtomicCheckpointer, read_checkpoint_meta  # noqa: F401
