"""The base Brain of every classifier-training recipe: what they share around the method's own step.

A recipe script (ESC50/classification/train.py, GTZAN/lime_shap/train_classifier.py) subclasses
``ClassifierBrain`` with its ``compute_forward`` (the augmented batch through the model) and
``compute_objectives`` (its cost, ending with ``self.record``), as SpeechBrain's ESC50Brain does.
The base holds the rest: the batch helpers, the confusion matrix and stage statistics, the
per-batch or per-epoch schedules, checkpoints, DDP on CPU and the test outputs.

Fixes over SpeechBrain's ESC-50 recipe: the loss is the ``compute_cost`` of
the hparams (the additive angular margin loss for cosine heads), the cyclic
learning rate is stepped per batch with a half cycle measured in epochs, the
checkpoint metadata are plain floats, the best checkpoint is chosen by the
logged validation accuracy and is the one ``--test_only`` evaluates.
"""

import logging
import math
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.nnet.schedulers import CyclicLRScheduler, update_learning_rate
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from common.data.datasets import output_label, output_labels
from common.errors import CheckpointError
from common.io import atomic_write_json
from common.models.pretrained import load_or_debug_fallback, overridden_keys
from common.reports.figures import save_confusion_matrix
from common.reports.tables import write_table

logger = logging.getLogger(__name__)

BEST_KEY = "acc"  # validation accuracy selects the checkpoint to evaluate


class CpuDistributedMixin:
    """SpeechBrain converts BatchNorm to SyncBatchNorm under DDP, which only runs
    on GPUs; on CPU (gloo) wrap in DDP without it (per-process batch statistics)."""

    def _wrap_distributed(self):
        if not (self.distributed_launch and str(self.device).startswith("cpu")):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DDP(module, device_ids=None, find_unused_parameters=self.find_unused_parameters)


class EvaluateBestCheckpointMixin:
    """Evaluation starts from the best checkpoint by the logged key, and says which;
    with none saved, a clear error instead of silently evaluating untrained weights. A damaged best is a
    CheckpointError naming the file (AtomicCheckpointer.recover_if_possible), not a silent second best."""

    def on_evaluate_start(self, max_key=None, min_key=None):
        ckpt = self.checkpointer.find_checkpoint(max_key=max_key, min_key=min_key)
        if ckpt is None:
            raise CheckpointError(
                f"No checkpoint in {self.checkpointer.checkpoints_dir} to evaluate. Train first (run without "
                "--test_only), or point --output_folder at the folder of a trained run."
            )
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        self.evaluated_checkpoint = ckpt
        logger.info(
            "Evaluating checkpoint %s (best by valid %s; meta %s)", ckpt.path.name, max_key or min_key, ckpt.meta
        )


def write_extras(extras, kept):
    """Run each ``{what: write}``; a failure is logged with its traceback and the others still run,
    since the checkpoints and ``kept`` (the test table) are already written."""
    for what, write in extras.items():
        try:
            write()
        except Exception:
            logger.exception(
                "Could not write the %s; the test results are in %s and the checkpoints are kept", what, kept
            )


class ClassifierBrain(EvaluateBestCheckpointMixin, CpuDistributedMixin, sb.Brain):
    """The shared part of training ``modules.model`` (an AudioClassifier) on (sig, class) batches; a recipe's
    subclass adds ``compute_forward`` and ``compute_objectives`` (see the module docstring)."""

    # -- helpers of the recipes' steps ----------------------------------------------
    def augmented_wavs(self, batch, stage):
        """The batch on the device and its (wavs, lens), through ``hparams.augmentation`` on training batches."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        augment = getattr(self.hparams, "augmentation", None)
        if augment is not None and stage == sb.Stage.TRAIN:
            wavs, lens = augment(wavs, lens)
        return wavs, lens

    def class_targets(self, batch, predictions):
        """The batch's class ids (N,), repeated once per copy of the batch that the augmenter concatenated."""
        classid, _ = batch.class_string_encoded
        classid = classid.reshape(-1)
        n_aug = predictions.shape[0] // classid.shape[0]
        return classid.repeat(n_aug)

    def record(self, predictions, targets, batch, stage):
        """The metrics' bookkeeping of a batch: its predictions (argmax) in the stage's confusion matrix."""
        pred = predictions.argmax(dim=-1).cpu().numpy()
        np.add.at(self.confusion, (targets.cpu().numpy(), pred), 1)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        scheduler = getattr(self.hparams, "lr_annealing", None)
        if should_step and hasattr(scheduler, "on_batch_end"):
            scheduler.on_batch_end(self.optimizer)

    def on_stage_start(self, stage, epoch=None):
        n = self.hparams.out_n_neurons
        self.confusion = np.zeros((n, n), dtype=np.int64)
        self.stage_started = time.time()

    def _stage_stats(self, stage_loss):
        if torch.distributed.is_initialized():  # every process saw one shard
            counts = torch.from_numpy(self.confusion)
            torch.distributed.all_reduce(counts)
            self.confusion = counts.numpy()
        total = self.confusion.sum()
        acc = float(np.trace(self.confusion) / total) if total else 0.0
        return {"loss": float(stage_loss), "acc": acc, "error": 1.0 - acc}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = self._stage_stats(stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = {**stats, "epoch_time_s": round(time.time() - self.stage_started, 1)}
            return
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            scheduler = getattr(self.hparams, "lr_annealing", None)
            if scheduler is not None and not hasattr(scheduler, "on_batch_end"):
                _, lr_new = scheduler(stats["loss"])
                update_learning_rate(self.optimizer, lr_new)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": float(lr)}, train_stats=self.train_stats, valid_stats=stats
            )
            self.checkpointer.save_and_keep_only(
                meta={**stats, "epoch": int(epoch)},
                max_keys=[BEST_KEY],
                num_to_keep=getattr(self.hparams, "ckpt_keep", 1),
            )
            return
        self._write_test_outputs(stats)

    # -- evaluation ------------------------------------------------------------
    def _write_test_outputs(self, stats):
        """test_results.json first (the test table: overall and per-class accuracy, confusion matrix), then
        the per-class table and the confusion figure. The label encoder holds the data's classes, which may
        be fewer than the outputs (ESC-10 with SpeechBrain's 50): an output no class maps to is reported
        with label None and listed in ``unused_outputs``, a class with no test clip in ``absent_classes``.
        A failure in the extras is logged, never raised: the trained run and its table are kept."""
        encoder = self.hparams.label_encoder
        labels = output_labels(encoder, self.hparams.out_n_neurons)
        support = self.confusion.sum(axis=1)
        per_class = {lab: float(self.confusion[i, i] / support[i]) for i, lab in enumerate(labels) if support[i]}
        ckpt = getattr(self, "evaluated_checkpoint", None)
        meta = dict(ckpt.meta) if ckpt else {}
        self.hparams.train_logger.log_stats(
            stats_meta={"checkpoint epoch": meta.get("epoch"), "checkpoint valid acc": meta.get(BEST_KEY)},
            test_stats=stats,
        )
        out = Path(self.hparams.output_folder)
        result = {
            **stats,
            "n_clips": int(self.confusion.sum()),
            "per_class_acc": per_class,
            "absent_classes": [lab for i, lab in enumerate(labels) if lab is not None and not support[i]]
            + sorted(lab for i, lab in encoder.ind2lab.items() if i >= len(labels)),
            "unused_outputs": [i for i, lab in enumerate(labels) if lab is None],
            "confusion_matrix": self.confusion.tolist(),
            "labels": labels,
            "checkpoint": ckpt.path.name if ckpt else None,
            "checkpoint_epoch": meta.get("epoch"),
            "checkpoint_valid_acc": meta.get(BEST_KEY),
        }
        atomic_write_json(out / "test_results.json", result)
        rows = [
            {"class": lab, "accuracy": per_class.get(lab, "absent"), "clips": int(support[i])}
            for i, lab in enumerate(labels)
            if lab is not None
        ]  # a class of the data with no test clip: "absent", not a 0 accuracy
        present = [i for i, n in enumerate(support) if n or self.confusion[:, i].any()]
        extras = {
            "per-class accuracy table": lambda: write_table(rows, out / "per_class_accuracy"),
            "confusion matrix figure": lambda: save_confusion_matrix(
                self.confusion[np.ix_(present, present)],
                [output_label(encoder, i) for i in present],
                out / "confusion_matrix.png",
                title=f"Test accuracy {stats['acc']:.3f}",
            ),
        }
        write_extras(extras, out / "test_results.json")

    # -- learning-rate schedule --------------------------------------------------
    def fit(
        self, epoch_counter, train_set, valid_set=None, progressbar=None, train_loader_kwargs={}, valid_loader_kwargs={}
    ):
        if not isinstance(train_set, DataLoader):
            train_set = self.make_dataloader(train_set, stage=sb.Stage.TRAIN, **train_loader_kwargs)
        scheduler = getattr(self.hparams, "lr_annealing", None)
        half_cycle = getattr(self.hparams, "lr_half_cycle_epochs", None)
        if isinstance(scheduler, CyclicLRScheduler) and half_cycle:
            scheduler.step_size = max(1, int(round(half_cycle * len(train_set))))
        if isinstance(scheduler, WarmupCosineScheduler):
            scheduler.total_steps = max(1, epoch_counter.limit * len(train_set))
        return super().fit(
            epoch_counter,
            train_set,
            valid_set,
            progressbar=progressbar,
            train_loader_kwargs=train_loader_kwargs,
            valid_loader_kwargs=valid_loader_kwargs,
        )


def train_loader_options(options, n_examples):
    """Loader options for training: drop a last batch of one example, which
    BatchNorm layers cannot normalise in training mode."""
    batch_size = options.get("batch_size", 1)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    per_process = -(-n_examples // world)  # DistributedSampler pads to equal shards
    return {**options, "drop_last": batch_size > 1 and per_process % batch_size == 1}


def build_brain(brain_class, hparams, run_opts):
    """A Brain from the hparams' modules, optimizer and checkpointer. ``channels_last: True`` stores the
    modules' 4-D weights channels-last, the layout oneDNN's convolutions run fastest in (on this project's
    2-core CPU: 1.2x for the conv2d classifier in fp32, 1.5x under bf16; tools/benchmark_training.py), and
    those of the frozen classifier an interpreter recipe explains (``hparams["classifier"]``), loaded by then."""
    if hparams.get("channels_last"):
        frozen = hparams.get("classifier")
        for module in [*hparams["modules"].values(), *([frozen] if isinstance(frozen, torch.nn.Module) else [])]:
            module.to(memory_format=torch.channels_last)  # in place: the parameters stay the same objects
    return brain_class(
        modules=hparams["modules"],
        opt_class=hparams.get("opt_class"),
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams.get("checkpointer"),
    )


def load_pretrained_encoder(hparams, run_opts, overrides=""):
    """``hparams["load_pretrained"]`` (a published encoder or backbone) into ``embedding_model``. In --debug
    runs the hparams' default that cannot be had (hub unreachable) leaves it randomly initialised, with a
    warning (``load_or_debug_fallback``); one asked for on the command line must load."""
    requested = overridden_keys(overrides) & {"use_pretrained", "embedding_model_path", "pretrained_backbone"}
    load_or_debug_fallback(
        lambda: hparams["load_pretrained"](hparams["embedding_model"]),
        "pretrained encoder",
        debug=bool(run_opts.get("debug")),
        requested=bool(requested),
    )


def fit_and_evaluate(brain, hparams, datasets, max_key=None, min_key=None):
    """Train (unless ``test_only``), then evaluate the best checkpoint by ``max_key``/``min_key`` on the test set."""
    loader = hparams["dataloader_options"]
    if not hparams["test_only"]:
        brain.fit(
            hparams["epoch_counter"],
            datasets["train"],
            datasets["valid"],
            train_loader_kwargs=train_loader_options(loader, len(datasets["train"])),
            valid_loader_kwargs={**loader, "shuffle": False},
        )
    brain.evaluate(datasets["test"], max_key=max_key, min_key=min_key, test_loader_kwargs={**loader, "shuffle": False})
    return brain


@sb.utils.checkpoints.register_checkpoint_hooks
class WarmupCosineScheduler:
    """Per-batch linear warm-up then cosine decay to zero, for every parameter group.

    Each group keeps its own peak (its ``lr`` when the schedule first runs),
    so separate learning rates (prototypes vs last layer) keep their ratio.
    ``total_steps`` is set by ``fit`` from the epochs and batches per epoch;
    the step count is checkpointed, so a resumed run continues the schedule.
    """

    def __init__(self, warmup_ratio=0.05, total_steps=None):
        self.warmup_ratio = float(warmup_ratio)
        self.total_steps = total_steps
        self.step_count = 0
        self.peak_lrs = None

    def factor(self, step):
        total = max(1, int(self.total_steps or 1))
        warmup = int(round(self.warmup_ratio * total))
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer):
        if self.peak_lrs is None:
            self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        for group, peak in zip(optimizer.param_groups, self.peak_lrs, strict=True):
            group["lr"] = peak * self.factor(self.step_count)

    def on_batch_end(self, optimizer):
        self.step_count += 1
        self.apply(optimizer)

    @sb.utils.checkpoints.mark_as_saver
    def save(self, path):
        torch.save({"step_count": self.step_count, "peak_lrs": self.peak_lrs, "total_steps": self.total_steps}, path)

    @sb.utils.checkpoints.mark_as_loader
    def load(self, path, end_of_epoch=False):
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.step_count, self.peak_lrs = state["step_count"], state["peak_lrs"]
        self.total_steps = self.total_steps or state["total_steps"]
