"""The one evaluation loop: explain -> listenable wav -> the suite -> per-clip scores with the method's extras.

The interpreter Brain (one batch at a time, its explanation possibly from the
training objective), the leaderboard and the benchmarks score explanations the
same way through ``score_explanation``; ``evaluate_interpreter`` runs it over
batches of clips, timing ``explain`` alone.
"""

import time
from dataclasses import dataclass, field

import torch

from common.metrics.suite import merge_per_clip


def detached(explanation):
    """The explanation with its tensors (extras' per-clip diagnostics included) cut from the autograd graph."""
    from dataclasses import replace

    def cut(value):
        return value.detach() if isinstance(value, torch.Tensor) else value

    extras = dict(explanation.extras)
    if "per_clip" in extras:
        extras["per_clip"] = {k: cut(v) for k, v in extras["per_clip"].items()}
    return replace(
        explanation,
        saliency=cut(explanation.saliency),
        mask=cut(explanation.mask),
        stft_mask=cut(explanation.stft_mask),
        extras=extras,
    )


def score_explanation(suite, classifier, X, explanation, wavs, ground_truth=None, event_wavs=None):
    """Score one batch's explanation; returns (per-clip scores ``{name: (B,)}``, listenable wavs (B, samples)).

    The listenable explanation is ``explanation.to_wav`` of ``wavs``; against ``event_wavs`` (the true
    events, for SI-SNR) both are cut to the shorter length. The scores hold every metric of ``suite``
    and the interpreter's own diagnostics (``extras["per_clip"]``).
    """
    with torch.no_grad():
        interpretation = explanation.to_wav(classifier, wavs)
        compared, events = None, None
        if event_wavs is not None:
            n = min(event_wavs.shape[-1], interpretation.shape[-1])
            compared, events = interpretation[..., :n], event_wavs[..., :n]
        scores = suite.evaluate(
            classifier,
            X,
            explanation,
            ground_truth=ground_truth,
            wavs=wavs,
            interpretation_wavs=compared,
            event_wavs=events,
        )
    scores.update(explanation.extras.get("per_clip", {}))
    return scores, interpretation


@dataclass
class ScoredBatch:
    """One batch of ``evaluate_interpreter``: clips [lo, hi), their features, explanation and listenable wavs."""

    lo: int
    hi: int
    X: torch.Tensor
    explanation: object
    interpretation: torch.Tensor


@dataclass
class Evaluation:
    """Per-clip scores ``{name: (N,)}`` over every batch, seconds spent in ``explain`` and the scored batches."""

    per_clip: dict
    explain_seconds: float
    batches: list = field(default_factory=list)


def evaluate_interpreter(interpreter, classifier, batches, suite, progress=None):
    """Explain and score every batch of ``batches`` (``(wavs, ground_truth or None, event_wavs or None)``).

    Each batch is explained for the classifier's prediction; ``progress`` wraps the batch list (a tqdm).
    """
    classifier.eval()
    batches = list(batches)
    scores, seconds, scored, lo = [], 0.0, [], 0
    for wavs, ground_truth, event_wavs in progress(batches) if progress else batches:
        with torch.no_grad():
            X = classifier.features(wavs)
        tic = time.perf_counter()
        explanation = detached(interpreter.explain(X=X))
        seconds += time.perf_counter() - tic
        batch_scores, interpretation = score_explanation(
            suite, classifier, X, explanation, wavs, ground_truth=ground_truth, event_wavs=event_wavs
        )
        scores.append(batch_scores)
        scored.append(ScoredBatch(lo, lo + len(wavs), X, explanation, interpretation))
        lo += len(wavs)
    return Evaluation(merge_per_clip(scores), seconds, scored)
