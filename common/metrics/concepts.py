"""Scores of concept-level explanations (DRSA's K sub-explanations, or any (B, K, T, F) heatmaps).

- ``concept_separation``: with known component masks (synthetic data in which
  each clip is a known mixture), how well K concept heatmaps separate the
  components: each concept's positive relevance mass inside each component's
  mask, concepts matched one-to-one to components (Hungarian), averaged over
  the matched pairs. 1: every concept lies inside its own component.
- patch / concept flipping (Chormai et al. 2024's evaluation): remove input
  patches in an order given by the explanation, track the target logit, and
  take the area under that curve (AUPC; lower: the explanation found what
  the logit rests on sooner). A standard heatmap orders patches by their
  relevance; K concept heatmaps order them by their positive relevance summed
  over concepts (evidence for one concept is not cancelled by negative
  evidence for another in the same patch), by their largest concept
  relevance, or concept by concept (``flipping_order``).

Plain functions: these scores need K heatmaps or their own removal order, so
they do not fit the suite's one-saliency-map metrics; the curves reuse its
step counts and area.
"""

import torch
import torch.nn.functional as F

from common.features import silence_of
from common.metrics.faithfulness import curve_auc
from common.metrics.suite import removal_counts
from common.models.classifier import as_targets
from common.models.hooks import eval_mode


def component_mass(concept_heatmaps, component_masks):
    """(B, K, M): positive relevance of concept k inside component m's mask (float64)."""
    if concept_heatmaps.shape[0] != component_masks.shape[0] or concept_heatmaps.shape[2:] != component_masks.shape[2:]:
        raise ValueError(
            f"concept heatmaps {tuple(concept_heatmaps.shape)} and component masks {tuple(component_masks.shape)} "
            f"must share the batch and (T, F) grid"
        )
    positive = concept_heatmaps.detach().clamp(min=0).double().flatten(2)  # (B, K, n)
    return positive @ component_masks.to(torch.float64).flatten(2).transpose(1, 2)


def concept_separation(concept_heatmaps, component_masks):
    """Share of the concepts' in-component positive relevance that lies in each concept's own component, (B,).

    concept_heatmaps: (B, K, T, F); component_masks: (B, M, T, F) boolean,
    one per known component (an all-False mask: the component is absent
    from that clip and left out). Concepts are matched one-to-one to
    components (Hungarian, on the positive relevance mass of concept k inside
    component m); the score is the matched mass over the total mass the
    matched concepts put inside components. Relevance outside every mask
    does not count, so the score measures how the concepts divide the
    components among themselves: 1 when each concept lies in its own
    component, 1 / M when all concepts spread alike over M components (as K
    copies of one heatmap do). NaN for a clip without components or relevance in them.
    """
    from scipy.optimize import linear_sum_assignment

    mass = component_mass(concept_heatmaps, component_masks)
    present = component_masks.flatten(2).any(dim=2)  # (B, M)
    scores = []
    for clip_mass, clip_present in zip(mass, present, strict=True):
        matrix = clip_mass[:, clip_present].numpy()
        if matrix.size == 0 or matrix.sum() <= 0:
            scores.append(float("nan"))
            continue
        rows, cols = linear_sum_assignment(matrix, maximize=True)
        scores.append(float(matrix[rows, cols].sum() / max(matrix[rows].sum(), 1e-300)))
    return torch.tensor(scores, dtype=concept_heatmaps.dtype)


# -- patch / concept flipping ------------------------------------------------------------------------


def patch_grid(shape, patch):
    """(n_time, n_freq) patches of size ``patch`` = (pt, pf) covering a (T, F) grid (the last ones may be partial)."""
    (T, Fq), (pt, pf) = shape, patch
    return -(-T // pt), -(-Fq // pf)


def patch_relevance(heatmaps, patch):
    """(B, K, T, F) -> (B, K, n_patches): each patch's summed relevance, patches in row-major (time, freq) order."""
    pt, pf = patch
    B, K, T, Fq = heatmaps.shape
    nt, nf = patch_grid((T, Fq), patch)
    padded = F.pad(heatmaps, (0, nf * pf - Fq, 0, nt * pt - T))
    return padded.view(B, K, nt, pt, nf, pf).sum(dim=(3, 5)).flatten(2)


FLIPPING_ORDERS = ("positive", "max", "concepts")


def _ranks(score):
    """(..., n) -> position of each entry when sorted by decreasing score (0 first; ties by index)."""
    order = torch.argsort(score, dim=-1, descending=True, stable=True)
    return torch.empty_like(order).scatter_(-1, order, torch.arange(score.shape[-1]).expand_as(order))


def flipping_order(heatmaps, patch, mode="positive"):
    """(B, n_patches) patch indices in removal order, most relevant first.

    ``heatmaps`` (B, T, F): a standard heatmap; patches by their relevance.
    ``heatmaps`` (B, K, T, F): concept heatmaps, ordered by ``mode``:

    - ``positive``: the positive relevance a patch carries, summed over concepts;
    - ``max``: its largest relevance for any one concept;
    - ``concepts``: concept by concept, the most relevant concept first (total
      relevance), each concept's positively relevant patches by decreasing
      relevance (a patch already removed is skipped); then the rest by the
      summed relevance.

    Ties are broken by the summed relevance (the standard heatmap's order).
    """
    if heatmaps.ndim == 3:
        return torch.argsort(patch_relevance(heatmaps[:, None], patch)[:, 0], dim=1, descending=True, stable=True)
    if mode not in FLIPPING_ORDERS:
        raise ValueError(f"flipping order mode must be one of {FLIPPING_ORDERS}, got {mode!r}")
    per_concept = patch_relevance(heatmaps, patch)  # (B, K, n)
    K, n = per_concept.shape[1:]
    base = _ranks(per_concept.sum(dim=1))  # (B, n): standard order, the tie-breaker
    if mode == "concepts":
        concept_rank = _ranks(per_concept.sum(dim=2))  # (B, K)
        within = _ranks(per_concept)  # (B, K, n)
        key = torch.where(per_concept > 0, concept_rank[..., None] * n + within, K * n + base[:, None])
        return torch.argsort(key.amin(dim=1), dim=1, stable=True)
    score = per_concept.clamp(min=0).sum(dim=1) if mode == "positive" else per_concept.amax(dim=1)
    standard = torch.argsort(base, dim=1)  # stable sorts: the tie-breaker's order first, then the score
    return standard.gather(1, torch.argsort(score.gather(1, standard), dim=1, descending=True, stable=True))


def _fill_values(X, fill, classifier):
    """(B, 1, 1) value a removed patch takes: the classifier's ``silence``, a number, each clip's ``min`` or ``mean``."""
    if fill == "silence":
        return silence_of(classifier, X)
    if fill == "min":
        return X.amin(dim=(1, 2), keepdim=True)
    if fill == "mean":
        return X.mean(dim=(1, 2), keepdim=True)
    return torch.full((X.shape[0], 1, 1), float(fill), dtype=X.dtype, device=X.device)


@torch.no_grad()
def flipping_curve(classifier, X, target, order, patch, n_steps=16, fill="silence", batch_size=32):
    """Target logit (B, n_steps + 1) as the first k / n_steps of the patches in ``order`` are removed, k = 0..n_steps.

    A removed patch takes the value ``fill``: ``silence`` (the classifier's:
    no energy), a number, each clip's ``min`` (its quietest bin) or its ``mean``.
    """
    B, T, Fq = X.shape
    nt, nf = patch_grid((T, Fq), patch)
    n_patches = nt * nf
    if order.shape != (B, n_patches):
        raise ValueError(f"order {tuple(order.shape)} does not match the {B} x {n_patches} patches of X")
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_patches, device=order.device).expand_as(order))
    counts = removal_counts(n_patches, n_steps).to(order.device)
    fill_values = _fill_values(X, fill, classifier)
    target = as_targets(target, X)
    curve = torch.empty(B, n_steps + 1, dtype=X.dtype, device=X.device)
    rows = [(b, k) for b in range(B) for k in range(n_steps + 1)]
    with eval_mode(classifier):
        for lo in range(0, len(rows), batch_size):
            chunk = rows[lo : lo + batch_size]
            clip = torch.tensor([b for b, _ in chunk], device=X.device)
            step = torch.tensor([k for _, k in chunk], device=X.device)
            removed = (rank[clip] < counts[step, None]).view(-1, 1, nt, nf).to(X.dtype)
            removed = removed.repeat_interleave(patch[0], dim=2).repeat_interleave(patch[1], dim=3)[:, 0, :T, :Fq]
            inputs = X[clip] * (1 - removed) + fill_values[clip] * removed
            curve[clip, step] = classifier.logits(inputs).gather(1, target[clip, None]).squeeze(1)
    return curve


def aupc(curve):
    """Area under a (B, n_steps + 1) flipping curve over the removed fraction 0 -> 1, (B,)."""
    return curve_auc(curve, curve.shape[1] - 1)
