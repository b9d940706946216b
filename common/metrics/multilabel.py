"""Multi-label classification metrics as BirdSet reports them: cmAP, AUROC and top-1 accuracy.

Needs ``torchmetrics`` (an optional dependency, imported here only). Scores may
be logits or probabilities: cmAP and AUROC only rank them, top-1 takes the
argmax. Targets are multi-hot (0/1), one row per segment.
"""

import importlib.util
import math

import torch
import torch.distributed as dist

# Importing torchmetrics takes seconds (it pulls in torchvision), so it is imported
# where a score is computed; checking here still fails fast when it is missing.
if importlib.util.find_spec("torchmetrics") is None:
    raise ImportError("common.metrics.multilabel needs torchmetrics: pip install torchmetrics")


def _check(scores, targets):
    """Return ``scores`` and ``targets`` as tensors after checking shape and values."""
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets)
    if scores.dim() != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must be 2-D (segments, classes) "
            "and of the same shape"
        )
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point (logits or probabilities), got {scores.dtype}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if not ((targets == 0) | (targets == 1)).all():
        raise ValueError("targets must be multi-hot: every entry 0 or 1")
    return scores, targets


def _to_unit_interval(scores):
    """Map scores into [0, 1] without changing any column's ranking, in float64.

    torchmetrics applies a sigmoid to scores outside [0, 1]; in float32 that ties
    every logit above ~17 at 1.0 and changes the ranking. A single affine map in
    float64 keeps distinct float32 scores distinct.
    """
    scores = scores.double()
    if scores.numel() == 0 or (scores.min() >= 0 and scores.max() <= 1):
        return scores
    low, high = scores.min(), scores.max()
    return (scores - low) / (high - low)


def _positive_classes(targets):
    """Indices of the classes with at least one positive segment."""
    return torch.nonzero(targets.sum(dim=0) > 0).flatten()


def _per_class_mean(binary, multilabel, scores, targets, classes):
    """Mean over ``classes`` of a torchmetrics per-class score."""
    scores = _to_unit_interval(scores[:, classes])
    targets = targets[:, classes].long()
    # torchmetrics' multilabel functions refuse a single label.
    if classes.numel() == 1:
        return binary(scores[:, 0], targets[:, 0]).item()
    return multilabel(scores, targets, num_labels=classes.numel(), average=None).mean().item()


def cmap(scores, targets):
    """Class-wise mean average precision: macro AP over the classes with a positive (BirdSet's cmAP).

    Classes with no positive in ``targets`` have no defined AP and are left out;
    NaN if no class has a positive.
    """
    return _cmap(*_check(scores, targets))


def _cmap(scores, targets):
    classes = _positive_classes(targets)
    if classes.numel() == 0:
        return math.nan
    from torchmetrics.functional.classification import binary_average_precision, multilabel_average_precision

    # Scoring only the kept columns: the per-class AP is the same, and torchmetrics
    # does not warn about the classes that are left out.
    return _per_class_mean(binary_average_precision, multilabel_average_precision, scores, targets, classes)


def auroc(scores, targets):
    """Macro AUROC over the classes with both positive and negative segments; NaN if there are none."""
    return _auroc(*_check(scores, targets))


def _auroc(scores, targets):
    positives = targets.sum(dim=0)
    classes = torch.nonzero((positives > 0) & (positives < targets.shape[0])).flatten()
    if classes.numel() == 0:
        return math.nan
    from torchmetrics.functional.classification import binary_auroc, multilabel_auroc

    return _per_class_mean(binary_auroc, multilabel_auroc, scores, targets, classes)


def top1_accuracy(scores, targets):
    """Fraction of the segments with a label whose top-scoring class is one of its labels; NaN if none has one."""
    return _top1_accuracy(*_check(scores, targets))


def _top1_accuracy(scores, targets):
    # Segments without any label (no-call) have no right answer: they are not counted.
    labelled = targets.sum(dim=1) > 0
    if not labelled.any():
        return math.nan
    top = scores[labelled].argmax(dim=1, keepdim=True)
    hits = targets[labelled].gather(1, top).flatten() == 1
    return hits.double().mean().item()


def multilabel_scores(scores, targets):
    """BirdSet's scores of one evaluation set: cmAP, AUROC, T1-Acc and how many segments and classes they cover."""
    scores, targets = _check(scores, targets)
    return {
        "cmAP": _cmap(scores, targets),
        "AUROC": _auroc(scores, targets),
        "T1-Acc": _top1_accuracy(scores, targets),
        "n_segments": int(targets.shape[0]),
        "n_classes_scored": int(_positive_classes(targets).numel()),
    }


class MultilabelAccumulator:
    """Collects scores and targets batch by batch on the CPU and scores them all at once.

    Average precision and AUROC do not decompose over batches, so everything is
    kept (float32 scores, uint8 targets). Under ``torch.distributed`` every
    process's rows are gathered, so each process returns the global numbers.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        """Forget everything collected."""
        self._scores = []
        self._targets = []
        self._num_classes = None

    def update(self, scores, targets):
        """Add a batch: scores (B, C) logits or probabilities, targets (B, C) multi-hot."""
        scores, targets = _check(scores, targets)
        if self._num_classes is not None and scores.shape[1] != self._num_classes:
            raise ValueError(
                f"scores {tuple(scores.shape)} have {scores.shape[1]} classes; earlier batches had {self._num_classes}"
            )
        self._num_classes = scores.shape[1]
        self._scores.append(scores.detach().to("cpu", torch.float32))
        self._targets.append(targets.detach().to("cpu", torch.uint8))

    def collected(self):
        """Scores (N, C) float32 and targets (N, C) uint8 of every batch, of every process when distributed.

        Under ``torch.distributed`` this is a collective: every process must call it.
        """
        num_classes = self._num_classes or 0
        if self._scores:
            scores, targets = torch.cat(self._scores), torch.cat(self._targets)
        else:
            scores, targets = torch.zeros(0, num_classes), torch.zeros(0, num_classes, dtype=torch.uint8)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            scores, targets = _gather(scores, targets)
        return scores, targets

    def compute(self):
        """``multilabel_scores`` over everything ``collected``; a collective under ``torch.distributed``."""
        return multilabel_scores(*self.collected())


def _gather(scores, targets):
    """Concatenate every process's (N_i, C) scores and targets, in rank order; N_i may differ."""
    # NCCL only moves CUDA tensors; gloo works on the CPU.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    world = dist.get_world_size()
    shape = torch.tensor(scores.shape, dtype=torch.long, device=device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    rows = [int(s[0]) for s in shapes]
    # A process that saw no batch does not know C; take it from one that did.
    class_counts = {int(s[1]) for s, n in zip(shapes, rows, strict=True) if n > 0}
    if len(class_counts) > 1:
        raise ValueError(f"processes collected different numbers of classes: {sorted(class_counts)}")
    num_classes = class_counts.pop() if class_counts else max(int(s[1]) for s in shapes)
    if scores.shape[0] == 0:
        scores = scores.new_zeros(0, num_classes)
        targets = targets.new_zeros(0, num_classes)
    longest = max(rows)
    if longest == 0:
        return scores, targets
    # all_gather needs equal shapes: pad every process to the longest, then trim.
    padded_scores = scores.new_zeros(longest, num_classes)
    padded_scores[: scores.shape[0]] = scores
    padded_targets = targets.new_zeros(longest, num_classes)
    padded_targets[: targets.shape[0]] = targets
    padded_scores, padded_targets = padded_scores.to(device), padded_targets.to(device)
    all_scores = [torch.zeros_like(padded_scores) for _ in range(world)]
    all_targets = [torch.zeros_like(padded_targets) for _ in range(world)]
    dist.all_gather(all_scores, padded_scores)
    dist.all_gather(all_targets, padded_targets)
    scores = torch.cat([s[:n] for s, n in zip(all_scores, rows, strict=True)]).cpu()
    targets = torch.cat([t[:n] for t, n in zip(all_targets, rows, strict=True)]).cpu()
    return scores, targets
