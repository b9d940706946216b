"""The Metric interface and the cached inputs every metric reads.

A metric never calls the classifier itself: it declares which classifier
inputs it ``needs`` (see ``FORWARD_INPUTS``) and which extra data it
``requires`` (ground truth, waveforms); the ``EvaluationSuite`` builds all of
them, runs ``classifier.logits`` once over their concatenation, applies one
softmax, and hands each metric a ``MetricInputs`` with the cached results.
"""

from dataclasses import dataclass, field

import torch

from common.registry import METRICS

# Classifier inputs a metric can ask for. "Removed" means set to the clip's silence s
# (``classifier.silence(X)``: what a bin with no energy is in that clip; 0 for log1p, the
# top_db floor for z-scored dB, not 0):
#   x        : X itself
#   mask_in  : s + M (X - s), only the explanation kept (M X for log1p)
#   mask_out : s + (1 - M)(X - s), the explanation removed
#   deletion : X with the top k / n_steps of bins (by saliency) set to s, k = 0..n_steps
#   insertion: silence with the top k / n_steps of bins restored from X, k = 0..n_steps
#   matched_in / matched_out: the top a of bins by saliency kept / removed, for each area a of
#            the metric's ``areas`` (``matched_area.py``), cached as "matched_in@10" etc.
FORWARD_INPUTS = ("x", "mask_in", "mask_out", "deletion", "insertion", "matched_in", "matched_out")

# Data beyond X and the explanation that a metric can require.
EXTRA_INPUTS = ("ground_truth", "event_wavs", "interpretation_wavs")


@dataclass
class MetricInputs:
    """Everything a metric computes its per-clip scores from.

    ``logits[key]`` / ``probs[key]``: (B, C) for x, mask_in, mask_out and each
    matched area ("matched_in@10", ...); (n_steps + 1, B, C) for the deletion
    and insertion curves.
    """

    X: torch.Tensor
    saliency: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    n_steps: int
    logits: dict = field(default_factory=dict)
    probs: dict = field(default_factory=dict)
    ground_truth: torch.Tensor | None = None
    event_wavs: torch.Tensor | None = None
    interpretation_wavs: torch.Tensor | None = None

    @property
    def batch_size(self):
        return self.X.shape[0]

    def target_prob(self, key):
        """p_c for the cached input ``key``: (B,) or, for curves, (B, n_steps + 1)."""
        probs = self.probs[key]
        if probs.ndim == 2:
            return probs.gather(1, self.target[:, None]).squeeze(1)
        index = self.target[None, :, None].expand(probs.shape[0], -1, 1)
        return probs.gather(2, index).squeeze(2).T


class Metric:
    """A per-clip score of an explanation.

    Subclasses set ``name``, ``display_name``, ``higher_is_better``, ``needs``
    (a subset of ``FORWARD_INPUTS``), ``requires`` (a subset of
    ``EXTRA_INPUTS``; without them the suite returns NaN for the metric) and
    implement ``compute(inputs) -> (B,)``. A metric is scored by an
    ``EvaluationSuite`` (``EvaluationSuite([metric])`` for one alone), never by
    itself: the suite builds the inputs, and sits above this module.
    """

    name = None
    display_name = None
    higher_is_better = True
    needs = frozenset()
    requires = frozenset()

    def compute(self, inputs: MetricInputs) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement compute(inputs)")

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


def register_metric(cls):
    """Class decorator: check the declarations and register ``cls`` under ``cls.name``."""
    unknown = set(cls.needs) - set(FORWARD_INPUTS)
    if unknown:
        raise ValueError(f"{cls.__name__} needs unknown inputs {sorted(unknown)}; known: {list(FORWARD_INPUTS)}")
    unknown = set(cls.requires) - set(EXTRA_INPUTS)
    if unknown:
        raise ValueError(f"{cls.__name__} requires unknown data {sorted(unknown)}; known: {list(EXTRA_INPUTS)}")
    return METRICS.register(cls.name)(cls)


def display_name(name):
    """A metric's column title in tables (its registered ``display_name``, else its name)."""
    return (METRICS.get(name).display_name if name in METRICS else None) or name
