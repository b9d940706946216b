"""ProtoPNet's push and pruning as steps of AudioProtoPNet's stage 2 after its training: each prototype is
replaced by its nearest training patch of its class (push), prototypes whose nearest training clips are mostly
of other classes are removed (pruning), and the changed model is the one kept."""

import logging
from pathlib import Path

import torch

from common.data.birdset import clip_batches
from common.io import atomic_write_json
from common.metrics.multilabel import MultilabelAccumulator
from common.models.protopnet import prune_prototypes, push_prototypes

logger = logging.getLogger(__name__)

PUSH_RECORD = "push.json"  # in the save folder: where each prototype's patch came from
PRUNE_RECORD = "prune.json"  # ... and which prototypes were pruned, by their nearest training clips


@torch.no_grad()
def valid_cmap(model, dataset, batch_size):
    """cmAP of ``model`` on ``dataset`` (the checkpoint-selection score), or -1 without a validation set."""
    if dataset is None or len(dataset) == 0:
        return -1.0
    scores = MultilabelAccumulator()
    for _, wavs, labels in clip_batches(dataset, range(len(dataset)), batch_size):
        scores.update(model(wavs), labels)
    return float(scores.compute()["cmAP"])


def _change_best_and_keep(brain, hparams, data, flag, record_name, change):
    """Apply ``change(model, training batches)`` to the best checkpoint's model and keep only the changed model
    as the run's checkpoint (meta ``flag`` True), with ``change``'s record and the valid cmAP before and after
    in ``record_name``; a run already changed so is left alone, so a rerun (or a resumed one) does not repeat
    it. The training batches are fixed crops around each recording's first event."""
    checkpointer = hparams["checkpointer"]
    best = checkpointer.find_checkpoint(max_key="cmAP")
    if best is None or best.meta.get(flag):
        return
    checkpointer.recover_if_possible(max_key="cmAP")
    model = brain.modules.model
    model = getattr(model, "module", model)
    train = data["train"]
    random_crop, train.random_crop = train.random_crop, False
    try:
        record = change(model, clip_batches(train, range(len(train)), hparams["batch_size"]))
    finally:
        train.random_crop = random_crop
    cmap = valid_cmap(model.eval(), data.get("valid"), hparams["batch_size"])
    logger.info("%s: valid cmAP %.4f (before: %.4f)", flag, cmap, best.meta.get("cmAP", float("nan")))
    atomic_write_json(Path(hparams["save_folder"]) / record_name,
                      {"checkpoint_before": best.path.name, "valid_cmAP_before": best.meta.get("cmAP"),
                       "valid_cmAP": cmap, "prototypes": record})  # fmt: skip
    checkpointer.save_and_keep_only(
        # without the old "unixtime", which would make the changed checkpoint look older than the one it replaces
        meta={**{k: v for k, v in best.meta.items() if k != "unixtime"}, "cmAP": cmap, flag: True},
        num_to_keep=1,
        keep_recent=True,
    )


def push_and_keep(brain, hparams, data):
    """ProtoPNet's push on the best checkpoint (each prototype becomes its nearest training patch of its class);
    save/push.json says where each patch came from."""
    _change_best_and_keep(brain, hparams, data, "pushed", PUSH_RECORD, push_prototypes)


def prune_and_keep(brain, hparams, data):
    """ProtoPNet's pruning on the best checkpoint (after the push, where both run): a prototype with fewer than
    ``prune_threshold`` of its ``prune_k`` nearest training clips of its class is removed; save/prune.json
    lists each prototype's nearest clips and whether it was pruned."""

    def prune(model, batches):
        record = prune_prototypes(model, batches, k=hparams["prune_k"], threshold=hparams["prune_threshold"])
        logger.info("Pruned %d of %d prototypes", sum(r["pruned"] for r in record), len(record))
        return record

    _change_best_and_keep(brain, hparams, data, "pruned", PRUNE_RECORD, prune)


def after_training(hparams, data):
    """The steps after stage 2's training that the hparams switch on, in ProtoPNet's order (push, then prune),
    as run_multilabel_recipe's ``after_fit`` (None when there are none)."""
    steps = [step for key, step in (("push_prototypes", push_and_keep), ("prune_prototypes", prune_and_keep))
             if hparams.get(key)]  # fmt: skip
    if not steps:
        return None
    return lambda brain: [step(brain, hparams, data) for step in steps]
