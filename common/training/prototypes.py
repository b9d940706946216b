"""ProtoPNet's push as a training step of AudioProtoPNet (stage 2): after the prototypes have trained,
each is replaced by its nearest training patch of its class, and that model is the one kept."""

import logging
from pathlib import Path

import torch

from common.data.birdset import clip_batches
from common.io import atomic_write_json
from common.metrics.multilabel import MultilabelAccumulator
from common.models.protopnet import push_prototypes

logger = logging.getLogger(__name__)

PUSH_RECORD = "push.json"  # in the save folder: where each prototype's patch came from


@torch.no_grad()
def valid_cmap(model, dataset, batch_size):
    """cmAP of ``model`` on ``dataset`` (the checkpoint-selection score), or -1 without a validation set."""
    if dataset is None or len(dataset) == 0:
        return -1.0
    scores = MultilabelAccumulator()
    for _, wavs, labels in clip_batches(dataset, range(len(dataset)), batch_size):
        scores.update(model(wavs), labels)
    return float(scores.compute()["cmAP"])


def push_and_keep(brain, hparams, data):
    """Push the best checkpoint's prototypes onto training patches (fixed crops around each recording's first
    event) and keep only that pushed model as the run's checkpoint; a run already pushed is left alone, so a
    rerun (or a resumed one) does not push twice."""
    checkpointer = hparams["checkpointer"]
    best = checkpointer.find_checkpoint(max_key="cmAP")
    if best is None or best.meta.get("pushed"):
        return
    checkpointer.recover_if_possible(max_key="cmAP")
    model = brain.modules.model
    model = getattr(model, "module", model)
    train = data["train"]
    random_crop, train.random_crop = train.random_crop, False
    try:
        found = push_prototypes(model, clip_batches(train, range(len(train)), hparams["batch_size"]))
    finally:
        train.random_crop = random_crop
    cmap = valid_cmap(model.eval(), data.get("valid"), hparams["batch_size"])
    logger.info("Pushed %d prototypes onto training patches; valid cmAP %.4f (before: %.4f)",
                sum(f is not None for f in found), cmap, best.meta.get("cmAP", float("nan")))  # fmt: skip
    atomic_write_json(Path(hparams["save_folder"]) / PUSH_RECORD,
                      {"checkpoint_before": best.path.name, "valid_cmAP_before": best.meta.get("cmAP"),
                       "valid_cmAP": cmap, "prototypes": found})  # fmt: skip
    checkpointer.save_and_keep_only(
        # without the old "unixtime", which would make the pushed checkpoint look older than the one it replaces
        meta={**{k: v for k, v in best.meta.items() if k != "unixtime"}, "cmAP": cmap, "pushed": True},
        num_to_keep=1,
        keep_recent=True,
    )
