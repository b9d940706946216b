"""The base multi-label classifier Brain (BirdSet): train_convnext.py and train_audioprotopnet.py add their step.

Same shape as the single-label ``ClassifierBrain`` (its helpers, checkpoints, DDP on CPU, per-batch
schedules), with multi-hot targets and BirdSet's metrics: cmAP selects the checkpoint; cmAP, AUROC
and T1-Acc are reported per test set, each scored on its own classes only (its logits are masked,
``scored_classes``). A recipe's ``compute_objectives`` is its multi-label loss (the Asymmetric Loss
of the hparams, plus AudioProtoPNet's prototype orthogonality) ending with ``self.record``.
"""

import logging
import time
from pathlib import Path

import speechbrain as sb
import torch

from common.io import atomic_write_json
from common.metrics.multilabel import MultilabelAccumulator
from common.reports.tables import write_table
from common.training.classifier import ClassifierBrain, WarmupCosineScheduler, train_loader_options

logger = logging.getLogger(__name__)

BEST_KEY = "cmAP"


def unwrap(module):
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(module, "module", module)


def collate_options(options):
    """Loader options with SpeechBrain's PaddedBatch collation (the BirdSet datasets are plain torch datasets)."""
    return {**options, "collate_fn": sb.dataio.batch.PaddedBatch}


class MultiLabelBrain(ClassifierBrain):
    """The shared part of training ``modules.model`` on (sig, multi-hot labels) batches; a recipe's subclass
    adds ``compute_forward`` and ``compute_objectives`` (see the module docstring)."""

    class_mask = None  # indices of the classes scored (a test set's own classes); None = all
    test_name = "test"

    def init_optimizers(self):
        """One optimizer; ``param_group_lrs`` ({submodule path: lr or {lr, weight_decay}}) gives named parts their
        own learning rate (and weight decay)."""
        group_lrs = getattr(self.hparams, "param_group_lrs", None)
        if not group_lrs or self.opt_class is None:
            return super().init_optimizers()
        model = unwrap(self.modules.model)
        groups, claimed = [], set()
        for path, spec in group_lrs.items():
            options = {k: float(v) for k, v in (spec.items() if isinstance(spec, dict) else [("lr", spec)])}
            owner, _, attr = path.rpartition(".")
            target = getattr(model.get_submodule(owner) if owner else model, attr)
            params = [target] if isinstance(target, torch.nn.Parameter) else list(target.parameters())
            params = [p for p in params if p.requires_grad]
            claimed.update(map(id, params))
            groups.append({"params": params, **options})
        rest = [p for p in self.modules.parameters() if p.requires_grad and id(p) not in claimed]
        if rest:
            groups.append({"params": rest})
        self.optimizer = self.opt_class(groups)
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def on_fit_start(self):
        super().on_fit_start()
        scheduler = getattr(self.hparams, "lr_annealing", None)
        if isinstance(scheduler, WarmupCosineScheduler):
            scheduler.apply(self.optimizer)  # the first batch already runs at the warm-up rate

    # -- helpers of the recipes' steps ----------------------------------------------
    def scored_classes(self, logits, batch):
        """(logits, multi-hot targets) on the classes scored (a test set's own, ``class_mask``), the targets
        repeated once per copy of the batch that the augmenter concatenated."""
        targets = batch.labels.data.to(logits.dtype)
        n_aug = logits.shape[0] // targets.shape[0]
        targets = targets.repeat(n_aug, 1)
        if self.class_mask is not None:
            logits, targets = logits[:, self.class_mask], targets[:, self.class_mask]
        return logits, targets

    def record(self, logits, targets, batch, stage):
        """The metrics' bookkeeping of a batch: its (masked) logits and targets for cmAP, AUROC and T1-Acc."""
        self.scores.update(logits.detach(), targets)

    def on_stage_start(self, stage, epoch=None):
        self.scores = MultilabelAccumulator()
        self.stage_started = time.time()

    def _stage_stats(self, stage_loss):
        return {"loss": float(stage_loss), **self.scores.compute()}

    def _write_test_outputs(self, stats):
        ckpt = getattr(self, "evaluated_checkpoint", None)
        meta = dict(ckpt.meta) if ckpt else {}
        self.hparams.train_logger.log_stats(
            stats_meta={"test set": self.test_name, "checkpoint epoch": meta.get("epoch")}, test_stats=stats
        )
        result = {
            "test_set": self.test_name,
            **stats,
            "checkpoint": ckpt.path.name if ckpt else None,
            "checkpoint_epoch": meta.get("epoch"),
            "checkpoint_valid_cmAP": meta.get(BEST_KEY),
        }
        self.test_results = result
        if sb.utils.distributed.if_main_process():
            atomic_write_json(Path(self.hparams.output_folder) / "test_results" / f"{self.test_name}.json", result)


def fit(brain, hparams, data):
    """Train on ``data["train"]``, selecting checkpoints by cmAP on ``data["valid"]``."""
    loader = collate_options(hparams["dataloader_options"])
    brain.fit(
        hparams["epoch_counter"],
        data["train"],
        data.get("valid"),
        train_loader_kwargs=train_loader_options(loader, len(data["train"])),
        valid_loader_kwargs={**loader, "shuffle": False},
    )


def evaluate_test_sets(brain, hparams, data):
    """Score the best checkpoint on every test set (its logits masked to its own classes); write one table."""
    loader = {**collate_options(hparams["dataloader_options"]), "shuffle": False}
    rows = []
    for name, dataset in data["tests"].items():
        brain.class_mask, brain.test_name = data["test_classes"][name], name
        brain.evaluate(dataset, max_key=BEST_KEY, test_loader_kwargs=loader)
        result = brain.test_results
        rows.append({"test set": name, **{k: result[k] for k in ("cmAP", "AUROC", "T1-Acc", "n_segments")}})
    brain.class_mask = None
    if rows and sb.utils.distributed.if_main_process():
        means = {k: sum(r[k] for r in rows) / len(rows) for k in ("cmAP", "AUROC", "T1-Acc")}
        rows.append({"test set": "mean", **means, "n_segments": sum(r["n_segments"] for r in rows)})
        write_table(rows, Path(hparams["output_folder"]) / "test_results" / "results")
    return rows


def run_multilabel_recipe(hparams, run_opts, data, brain_class, before_fit=None, after_fit=None):
    """Train (unless ``test_only``) a ``brain_class`` (a recipe's MultiLabelBrain) and evaluate every test set:
    what BirdSet's stage scripts share.

    ``before_fit`` (e.g. loading stage 1's backbone) runs on every process
    before the Brain wraps the model for DDP, and only when there is no
    checkpoint to resume from (a resumed run restores everything itself);
    ``after_fit(brain)`` (e.g. pushing prototypes) runs after training, before the tests.
    """
    if not hparams["test_only"] and before_fit is not None and hparams["checkpointer"].find_checkpoint() is None:
        before_fit()
    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams.get("opt_class"),
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams.get("checkpointer"),
    )
    if not hparams["test_only"]:
        fit(brain, hparams, data)
        if after_fit is not None:
            after_fit(brain)
    return brain, evaluate_test_sets(brain, hparams, data)
