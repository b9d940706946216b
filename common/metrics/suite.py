"""EvaluationSuite: every chosen metric from one batched pass of the classifier.

The suite builds the classifier inputs the chosen metrics need (X, X with
only the explanation kept, X with it removed, the deletion and insertion
curves, the top-area masks of ``matched_area.py``; removed bins take each clip's
``classifier.silence(X)``), runs ``classifier.logits`` over
their concatenation in chunks of ``batch_size`` (in eval mode, without
gradients), applies one softmax, and lets each metric score the clips from
these cached probabilities. Rows are built chunk by chunk, so the curves of a
large batch are never all in memory at once.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from common.features import keep_masked, silence_of
from common.metrics.base import Metric, MetricInputs, display_name
from common.metrics.matched_area import matched_key, matched_mask
from common.models.classifier import as_targets
from common.models.hooks import eval_mode
from common.registry import METRICS


@dataclass
class _Block:
    """``n_rows`` consecutive classifier inputs; ``build(lo, hi)`` makes rows lo..hi-1 of them."""

    key: str
    n_rows: int
    build: Callable


def _check_shape(name, tensor, X):
    if tensor.shape != X.shape:
        raise ValueError(f"{name} shape {tuple(tensor.shape)} does not match X shape {tuple(X.shape)}")


def removal_counts(n_bins, n_steps):
    """How many bins are removed (deletion) or restored (insertion) at steps 0..n_steps.

    Step k covers the top k / n_steps fraction of the bins, rounded to the nearest bin.
    """
    k = torch.arange(n_steps + 1)
    return (2 * k * n_bins + n_steps) // (2 * n_steps)


def saliency_rank(saliency):
    """(B, n) position of each bin when sorted by decreasing saliency (0 = most salient)."""
    flat = saliency.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    # int32: half the memory traffic of int64 when the curve rows compare against it
    rank = torch.empty(order.shape, dtype=torch.int32, device=flat.device)
    rank.scatter_(1, order, torch.arange(flat.shape[1], dtype=torch.int32, device=flat.device).expand_as(order))
    return rank


class EvaluationSuite:
    """Score explanations with several metrics from one set of forward passes.

    Arguments
    ---------
    metric_names : list of str or Metric
        Registered metric names (``common.registry.METRICS``) or instances.
    n_steps : int
        Steps of the deletion / insertion curves (n_steps + 1 points on [0, 1]).
    batch_size : int
        Rows per ``classifier.logits`` call.

    ``timings`` accumulates wall seconds: ``inputs`` (building the rows),
    ``forward`` (logits calls and the softmax), ``to_wav`` (listenable
    interpretations made from ``wavs``) and one entry per metric;
    ``counts`` accumulates ``logits_calls`` and ``rows``. ``skipped`` lists
    the metrics of the last ``evaluate`` that lacked the data they require
    (they score NaN).
    """

    def __init__(self, metric_names, n_steps=10, batch_size=32):
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        metrics = {}
        for item in metric_names:
            metric = item if isinstance(item, Metric) else METRICS.build(item)
            metrics[metric.name] = metric
        self.metrics = list(metrics.values())
        self.n_steps = int(n_steps)
        self.batch_size = int(batch_size)
        self.needs = frozenset().union(*(m.needs for m in self.metrics))
        # matched-area fractions of every metric that needs matched rows, each built once
        matched = [m for m in self.metrics if m.needs & {"matched_in", "matched_out"}]
        self.areas = tuple(sorted({float(a) for m in matched for a in getattr(m, "areas", ())}))
        self.timings = {}
        self.counts = {"logits_calls": 0, "rows": 0}
        self.skipped = []

    @property
    def names(self):
        return [m.name for m in self.metrics]

    def reset_timings(self):
        self.timings = {}
        self.counts = {"logits_calls": 0, "rows": 0}

    def _add_time(self, key, seconds):
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    # -- inputs ---------------------------------------------------------------
    def _blocks(self, X, mask, saliency, silence):
        """The classifier inputs the chosen metrics need, as lazily built blocks of rows.

        Removed bins take each clip's ``silence`` (B, 1, 1) (0 for log1p front ends).
        """
        B = X.shape[0]
        needs_curves = bool(self.needs & {"deletion", "insertion"})
        blocks = []
        if "x" in self.needs or needs_curves:
            blocks.append(_Block("x", B, lambda lo, hi: X[lo:hi]))
        if "mask_in" in self.needs:
            blocks.append(_Block("mask_in", B, lambda lo, hi: keep_masked(X[lo:hi], mask[lo:hi], silence[lo:hi])))
        if "mask_out" in self.needs:
            blocks.append(_Block("mask_out", B, lambda lo, hi: keep_masked(X[lo:hi], 1 - mask[lo:hi], silence[lo:hi])))
        rank = None
        if self.areas:
            rank = saliency_rank(saliency)
            for area in self.areas:
                for kind, keep in (("matched_in", True), ("matched_out", False)):
                    if kind in self.needs:
                        blocks.append(
                            _Block(
                                matched_key(kind, area),
                                B,
                                lambda lo, hi, a=area, k=keep: self._matched_rows(X, rank, silence, a, k, lo, hi),
                            )
                        )
        if not needs_curves:
            return blocks
        # The curves share their ends: deletion step 0 and insertion step n_steps are X,
        # deletion step n_steps and insertion step 0 are the clip's silence everywhere; when every
        # clip has the same silence (log1p: 0) one silent row serves the whole batch. Only the
        # inner steps are built per clip.
        n_silent = 1 if bool((silence == silence[:1]).all()) else B
        blocks.append(_Block("silence", n_silent, lambda lo, hi: silence[lo:hi].expand(-1, *X.shape[1:])))
        flat = X.flatten(1)
        rank = saliency_rank(saliency) if rank is None else rank
        counts = removal_counts(flat.shape[1], self.n_steps).to(device=X.device, dtype=torch.int32)
        n_inner = (self.n_steps - 1) * B

        def curve_rows(lo, hi, deletion):
            rows = torch.arange(lo, hi, device=X.device)
            clip, step = rows % B, rows // B + 1  # step-major: all clips at step 1, then step 2, ...
            rank_rows, count = rank[clip], counts[step, None]
            # deletion silences the top bins, insertion everything but the top bins
            removed = rank_rows < count if deletion else rank_rows >= count
            return torch.where(removed, silence.view(B, 1)[clip], flat[clip]).view(-1, *X.shape[1:])

        for key in ("deletion", "insertion"):
            if key in self.needs:
                blocks.append(_Block(key, n_inner, lambda lo, hi, d=key == "deletion": curve_rows(lo, hi, d)))
        return blocks

    @staticmethod
    def _matched_rows(X, rank, silence, area, keep, lo, hi):
        """Clips lo..hi-1 with the top ``area`` of their bins kept (``keep``) or removed, the rest silence."""
        mask = matched_mask(rank[lo:hi], area, X[lo:hi].shape).to(X.dtype)
        return keep_masked(X[lo:hi], mask if keep else 1 - mask, silence[lo:hi])

    def _forward(self, classifier, blocks):
        """Run ``classifier.logits`` over all blocks in chunks; return (N, C) logits."""
        total = sum(b.n_rows for b in blocks)
        starts, offset = [], 0
        for block in blocks:
            starts.append(offset)
            offset += block.n_rows
        logits = []
        for lo in range(0, total, self.batch_size):
            hi = min(lo + self.batch_size, total)
            tic = time.perf_counter()
            pieces = [
                block.build(max(lo, start) - start, min(hi, start + block.n_rows) - start)
                for block, start in zip(blocks, starts, strict=True)
                if start < hi and start + block.n_rows > lo
            ]
            chunk = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
            toc = time.perf_counter()
            logits.append(classifier.logits(chunk))
            self._add_time("inputs", toc - tic)
            self._add_time("forward", time.perf_counter() - toc)
            self.counts["logits_calls"] += 1
            self.counts["rows"] += hi - lo
        return torch.cat(logits) if len(logits) > 1 else logits[0]

    def _predictions(self, classifier, X, mask, saliency):
        """Logits and probabilities per cached input key, from one softmax over all rows."""
        tic = time.perf_counter()
        blocks = self._blocks(X, mask, saliency, silence_of(classifier, X))
        self._add_time("inputs", time.perf_counter() - tic)
        if not blocks:
            return {}, {}
        with eval_mode(classifier), torch.no_grad():
            all_logits = self._forward(classifier, blocks)
            tic = time.perf_counter()
            all_probs = torch.softmax(all_logits, dim=-1)
            self._add_time("forward", time.perf_counter() - tic)
        logits, probs, offset = {}, {}, 0
        for block in blocks:
            logits[block.key] = all_logits[offset : offset + block.n_rows]
            probs[block.key] = all_probs[offset : offset + block.n_rows]
            offset += block.n_rows
        B = X.shape[0]
        for cache in (logits, probs):
            if "silence" not in cache:
                continue
            x, silent = cache["x"][None], cache.pop("silence").expand(B, -1)[None]
            for key, first, last in (("deletion", x, silent), ("insertion", silent, x)):
                if key in cache:
                    inner = cache[key].reshape(self.n_steps - 1, B, -1)
                    cache[key] = torch.cat([first, inner, last])
        return logits, probs

    # -- evaluation -----------------------------------------------------------
    def evaluate(
        self,
        classifier,
        X,
        explanation,
        ground_truth=None,
        wavs=None,
        interpretation_wavs=None,
        event_wavs=None,
    ):
        """Per-clip scores ``{metric name: (B,) tensor}`` of ``explanation`` of the spectrograms ``X``.

        ``ground_truth``: (B, T, F) binary event mask on X's grid (localization
        metrics); ``event_wavs``: (B, samples) true event waveforms and
        ``interpretation_wavs`` the listenable explanations (``si_snr``; made
        from ``wavs`` with ``explanation.to_wav`` when only ``wavs`` is given).
        Metrics whose data is missing score NaN and are listed in ``skipped``.
        """
        X = X.detach()
        saliency, mask = explanation.saliency.detach(), explanation.mask.detach()
        _check_shape("saliency", saliency, X)
        _check_shape("mask", mask, X)
        target = as_targets(explanation.target, X)
        if ground_truth is not None:
            ground_truth = torch.as_tensor(ground_truth, device=X.device)
            _check_shape("ground truth", ground_truth, X)
        requires = frozenset().union(*(m.requires for m in self.metrics))
        make_wavs = interpretation_wavs is None and wavs is not None and event_wavs is not None
        if make_wavs and "interpretation_wavs" in requires:
            tic = time.perf_counter()
            with torch.no_grad():
                interpretation_wavs = explanation.to_wav(classifier, wavs)
            self._add_time("to_wav", time.perf_counter() - tic)
        extras = {
            "ground_truth": ground_truth,
            "event_wavs": None if event_wavs is None else torch.as_tensor(event_wavs, device=X.device),
            "interpretation_wavs": None
            if interpretation_wavs is None
            else torch.as_tensor(interpretation_wavs, device=X.device).detach(),
        }
        logits, probs = self._predictions(classifier, X, mask, saliency)
        inputs = MetricInputs(
            X=X, saliency=saliency, mask=mask, target=target, n_steps=self.n_steps, logits=logits, probs=probs, **extras
        )
        scores, self.skipped = {}, []
        for metric in self.metrics:
            if any(extras[name] is None for name in metric.requires):
                self.skipped.append(metric.name)
                scores[metric.name] = torch.full((X.shape[0],), float("nan"), dtype=X.dtype, device=X.device)
                continue
            tic = time.perf_counter()
            with torch.no_grad():
                score = metric.compute(inputs)
            self._add_time(metric.name, time.perf_counter() - tic)
            if score.shape != (X.shape[0],):
                raise ValueError(
                    f"metric {metric.name!r} returned shape {tuple(score.shape)}, expected ({X.shape[0]},)"
                )
            scores[metric.name] = score
        return scores

    __call__ = evaluate


def merge_per_clip(batches):
    """Concatenate per-clip dicts from several ``evaluate`` calls: list of dicts -> one dict."""
    if not batches:
        return {}
    return {name: torch.cat([torch.as_tensor(b[name]).reshape(-1) for b in batches]) for name in batches[0]}


def summarize(per_clip):
    """``{name: (B,) scores}`` -> ``{name: mean over clips, ignoring NaN}`` (NaN when all are NaN)."""
    return {name: float(torch.nanmean(torch.as_tensor(s, dtype=torch.float64))) for name, s in per_clip.items()}


def per_clip_rows(per_clip, clip_ids=None, **columns):
    """Per-clip scores -> table rows ``{**columns, "clip": id, <metric name>: float}``."""
    n = len(next(iter(per_clip.values()))) if per_clip else 0
    clip_ids = list(range(n)) if clip_ids is None else list(clip_ids)
    if len(clip_ids) != n:
        raise ValueError(f"{len(clip_ids)} clip ids for {n} clips")
    values = {name: torch.as_tensor(s).reshape(-1).tolist() for name, s in per_clip.items()}
    return [{**columns, "clip": clip, **{name: v[i] for name, v in values.items()}} for i, clip in enumerate(clip_ids)]


def summary_row(summary, **columns):
    """A summary (``summarize``'s dict) -> one table row keyed by display names, e.g. ``method="piq"``."""
    return {**columns, **{display_name(name): value for name, value in summary.items()}}
