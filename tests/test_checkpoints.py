"""AtomicCheckpointer: all-or-nothing saves, plain metadata, earlier checkpoints kept on failure."""

import pytest
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from common.checkpoints import STAGING_PREFIX, AtomicCheckpointer


@register_checkpoint_hooks
class Exploding:
    """A recoverable whose save can be made to fail half-way through a checkpoint."""

    def __init__(self):
        self.fail = False

    @mark_as_saver
    def save(self, path):
        if self.fail:
            raise OSError("disk full")
        torch.save({"ok": 1}, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        torch.load(path, weights_only=True)


def test_failed_save_keeps_the_earlier_checkpoint_and_leaves_nothing_half_written(tmp_path):
    model, bomb = torch.nn.Linear(3, 2), Exploding()
    ckpter = AtomicCheckpointer(tmp_path, recoverables={"model": model, "bomb": bomb})
    first = ckpter.save_and_keep_only(meta={"acc": 0.5, "epoch": 1}, max_keys=["acc"])
    assert first is None or first.path.name.startswith("CKPT+")
    bomb.fail = True
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        ckpter.save_and_keep_only(meta={"acc": 0.9, "epoch": 2}, max_keys=["acc"])
    ckpts = ckpter.list_checkpoints()
    assert len(ckpts) == 1 and ckpts[0].meta["epoch"] == 1
    # a fresh checkpointer (a restarted run) cleans the staging leftovers and recovers epoch 1
    fresh_model = torch.nn.Linear(3, 2)
    fresh = AtomicCheckpointer(tmp_path, recoverables={"model": fresh_model, "bomb": Exploding()})
    assert not list(tmp_path.glob(STAGING_PREFIX + "*"))
    recovered = fresh.recover_if_possible()
    assert recovered.meta["epoch"] == 1
    assert not torch.equal(fresh_model.weight, model.weight)  # epoch-1 weights, not the failed epoch-2 ones


def test_tensor_metadata_is_refused_before_anything_is_written(tmp_path):
    ckpter = AtomicCheckpointer(tmp_path, recoverables={"model": torch.nn.Linear(2, 2)})
    with pytest.raises(TypeError, match="plain float"):
        ckpter.save_checkpoint(meta={"acc": torch.tensor(0.5)})
    assert not list(tmp_path.iterdir())


def test_best_checkpoint_by_logged_key(tmp_path):
    ckpter = AtomicCheckpointer(tmp_path, recoverables={"model": torch.nn.Linear(2, 2)})
    for epoch, acc in enumerate([0.3, 0.8, 0.6], start=1):
        ckpter.save_and_keep_only(meta={"acc": acc, "epoch": epoch}, max_keys=["acc"], num_to_keep=3)
    assert ckpter.find_checkpoint(max_key="acc").meta["epoch"] == 2
