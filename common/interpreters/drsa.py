"""Disentangled Relevant Subspace Analysis (Chormai, Herrmann, Müller, Montavon, IEEE TPAMI 2024).

DRSA splits a standard LRP explanation into K sub-explanations, one per
concept, by finding K orthogonal subspaces of the activations at one layer.

At a layer with activation vectors a (one per spatial position, D channels)
LRP gives relevance R (from the layers above); the context vector is
c = R / a (element-wise), so R = a * c. For an orthonormal U = [U_1 .. U_K]
(D x K*d), the relevance of subspace k at data point n is

    R_k(n) = (U_k^T a_n)^T (U_k^T c_n)

where, as in the paper and its code (p16i/drsa-demo: ``obj_drsa`` on
(activation, context) rows gathered from 20 random spatial locations per
image), **each spatial position of each clip is one data point**
(``points="positions"``, the default). ``points="clips"`` instead sums a
clip's R_k over its positions first, one data point per clip (kept as an
option; measured in the README's GTZAN/drsa section). DRSA maximises over U
the soft-min over subspaces of the soft-max over data points of the positive
subspace relevance, both power means:

    J(U) = M_{p_min}over k( M_{p_max}over n( max(0, R_k(n)) ) ),  M_p(x) = (mean x^p)^(1/p),

p_min = 0.5 (soft-min: every subspace must carry relevance) and p_max = 2
(soft-max: a subspace may be relevant for few points only); this is the
reference's ``softmax_p(ord=2)`` over points and ``softmin_p(ord=2)``
(= M_{1/2}) over subspaces. Optimisation: gradient ascent with a
re-orthogonalisation (polar projection, U (U^T U)^{-1/2}, as the reference's
``decorrelate``) after every step and several random restarts, keeping the
best (the reference: 3). Deviation: the reference adds the raw gradient
(step 1) for 5000 steps; here the step is normalised (so it does not depend
on the data's scale) and shrinks linearly, which converges in a few hundred
steps; the data are rescaled to unit RMS, which leaves the argmax unchanged
(J is homogeneous in (a, c)).

The sub-explanation of concept k propagates the layer relevance
a * (U_k U_k^T c) (per position) down to the input with the same LRP rules.
With a complete U (K*d = D), sum_k U_k U_k^T = I, so the K heatmaps sum to
the standard LRP heatmap.
"""

import math
from pathlib import Path

import torch

from common.errors import CheckpointError
from common.interpreters.base import Explanation, saliency_to_mask
from common.interpreters.lrp import LRPInterpreter
from common.io import atomic_path
from common.registry import INTERPRETERS

TINY = 1e-12  # power means of zeros have an infinite slope at 0: clamp before the power


# -- (activation, context) pairs --------------------------------------------------------------------


def context_vectors(activation, relevance, eps=1e-9):
    """c = R / a element-wise, 0 where the activation is (numerically) 0 (LRP gives it no relevance there)."""
    safe = torch.where(activation.abs() > eps, activation, torch.ones_like(activation))
    return torch.where(activation.abs() > eps, relevance / safe, torch.zeros_like(relevance))


def collect_drsa_pairs(interpreter, batches, layer=None, n_positions=None, seed=0):
    """(activation, context) vectors at ``layer`` over ``batches``, for ``fit_drsa``.

    ``batches`` yields spectrograms X (B, T, F) (the predicted class is
    explained) or (X, target) pairs. ``n_positions``: keep that many random
    spatial positions per clip (None: all). Returns (acts, ctxs), each
    (N clips, P positions, D channels).
    """
    generator = torch.Generator().manual_seed(seed)
    acts, ctxs = [], []
    for batch in batches:
        X, target = batch if isinstance(batch, (tuple, list)) else (batch, None)
        if target is None:
            target = interpreter.predict(X)
        activation, relevance = interpreter.layer_relevance(X, target, layer)
        context = context_vectors(activation, relevance)
        # (B, C, h, w) -> (B, h*w, C): each position is one D-dimensional vector
        activation, context = (t.flatten(2).transpose(1, 2) for t in (activation, context))
        if n_positions is not None and n_positions < activation.shape[1]:
            keep = torch.stack(
                [torch.randperm(activation.shape[1], generator=generator)[:n_positions] for _ in range(len(X))]
            ).to(activation.device)
            index = keep[..., None].expand(-1, -1, activation.shape[2])
            activation, context = activation.gather(1, index), context.gather(1, index)
        acts.append(activation.cpu())
        ctxs.append(context.cpu())
    if not acts:
        raise ValueError("collect_drsa_pairs got no batches: give it a non-empty iterable of spectrograms")
    return torch.cat(acts), torch.cat(ctxs)


# -- the objective and its optimisation -------------------------------------------------------------


def power_mean(x, p, dim):
    """(mean x^p)^(1/p) of non-negative x along ``dim``: soft-max for p > 1, soft-min for p < 1."""
    return x.clamp(min=TINY).pow(p).mean(dim=dim).pow(1.0 / p)


POINTS = ("positions", "clips")


def _as_samples(acts, ctxs, points="positions"):
    """(N', P', D) with one data point per row of the first axis: P' = 1 for ``positions``, P for ``clips``."""
    if acts.shape != ctxs.shape:
        raise ValueError(f"activations {tuple(acts.shape)} and contexts {tuple(ctxs.shape)} must have the same shape")
    if points not in POINTS:
        raise ValueError(f"points={points!r}: use 'positions' (each position a data point, the paper's) or 'clips'")
    if acts.ndim == 2:  # rows are the data points already
        return acts[:, None], ctxs[:, None]
    if acts.ndim != 3:
        raise ValueError(f"expected (N, D) or (N, P, D) activations, got {tuple(acts.shape)}")
    if points == "positions":
        return acts.reshape(-1, 1, acts.shape[2]), ctxs.reshape(-1, 1, ctxs.shape[2])
    return acts, ctxs


def subspace_relevance(U, acts, ctxs, n_concepts, points="positions"):
    """R_k(n) (N', K) per data point: a position (N' = N * P, the paper's) or, with ``points="clips"``, a clip
    (N' = N, the clip's positions summed)."""
    acts, ctxs = _as_samples(acts, ctxs, points)
    N, P, _ = acts.shape
    projected = (acts @ U) * (ctxs @ U)  # (N, P, K*d): (u^T a)(u^T c) per column u
    return projected.view(N, P, n_concepts, -1).sum(dim=(1, 3))


def _position_moments(acts, ctxs):
    """M_n = sum_p a_np c_np^T (N, D, D): R_k(n) = sum over u in U_k of u^T M_n u, cheaper when P > D."""
    return acts.transpose(1, 2) @ ctxs


def drsa_objective(U, acts, ctxs, n_concepts, p_min=0.5, p_max=2.0, moments=None, points="positions"):
    """J(U): power mean p_min over subspaces of the power mean p_max over data points of max(0, R_k(n))."""
    if moments is not None:
        R = ((moments @ U) * U).sum(dim=1).view(moments.shape[0], n_concepts, -1).sum(dim=2)
    else:
        R = subspace_relevance(U, acts, ctxs, n_concepts, points)
    return power_mean(power_mean(R.clamp(min=0), p_max, dim=0), p_min, dim=0)


def orthonormalize(U):
    """The nearest matrix with orthonormal columns (polar factor, U (U^T U)^{-1/2}), via the SVD."""
    left, _, right_t = torch.linalg.svd(U, full_matrices=False)
    return left @ right_t


def random_orthogonal(n_rows, n_cols, generator=None, dtype=torch.float32):
    """(n_rows, n_cols) with orthonormal columns, uniformly distributed (QR of a Gaussian, signs fixed)."""
    if n_cols > n_rows:
        raise ValueError(f"cannot fit {n_cols} orthonormal columns in {n_rows} dimensions")
    gaussian = torch.randn(n_rows, n_rows, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))
    return q[:, :n_cols].to(dtype)


def fit_drsa(
    acts,
    ctxs,
    n_concepts,
    subspace_dim=None,
    p_min=0.5,
    p_max=2.0,
    n_restarts=3,
    n_steps=200,
    lr=0.05,
    seed=0,
    points="positions",
):
    """Learn U (D, K*d) with orthonormal columns maximising the DRSA objective.

    ``acts``/``ctxs``: (N, D) (each row a data point) or (N, P, D) (P
    positions of N clips): with ``points="positions"`` (the paper's) each of
    the N * P positions is a data point; with ``points="clips"`` each clip
    is, its relevance summed over its positions. ``subspace_dim`` d defaults to
    D // K. Each step moves U along the gradient with a step of ``lr`` per
    column (the gradient normalised, so the step does not depend on the
    data's scale; shrinking linearly to ``lr``/10) and projects it back onto
    orthonormal columns. Of ``n_restarts`` random starts the best final
    objective wins. Returns (U, history): history lists the winning run's
    objective at the start and after every step.
    """
    acts, ctxs = _as_samples(acts.detach(), ctxs.detach(), points)
    N, P, D = acts.shape
    if subspace_dim is None:
        subspace_dim = D // n_concepts
    if n_concepts < 1 or subspace_dim < 1 or n_concepts * subspace_dim > D:
        raise ValueError(
            f"K={n_concepts} subspaces of dimension d={subspace_dim} do not fit in the layer's D={D} channels "
            f"(need 1 <= K * d <= D)"
        )
    # float64 and unit scale: the objective is homogeneous in (a, c), so its argmax does not change
    scale = acts.double().pow(2).mean().sqrt().clamp(min=TINY) * ctxs.double().pow(2).mean().sqrt().clamp(min=TINY)
    acts64, ctxs64 = acts.double(), ctxs.double() / scale
    moments = _position_moments(acts64, ctxs64) if P > D else None
    generator = torch.Generator().manual_seed(seed)
    n_cols = n_concepts * subspace_dim
    best_U, best_history = None, None
    for _ in range(n_restarts):
        U = random_orthogonal(D, n_cols, generator=generator, dtype=torch.float64)
        history = []
        for step in range(n_steps + 1):
            U = U.detach().requires_grad_(True)
            # the rows are the data points already (arranged by _as_samples): no second arrangement
            objective = drsa_objective(U, acts64, ctxs64, n_concepts, p_min, p_max, moments, points="clips")
            history.append(float(objective.detach()) * float(scale))
            if step == n_steps:
                break
            (grad,) = torch.autograd.grad(objective, U)
            step_size = lr * (1.0 - 0.9 * step / max(n_steps - 1, 1))
            norm = grad.norm() / math.sqrt(n_cols)
            U = orthonormalize(U.detach() + step_size * grad / norm.clamp(min=TINY))
        if best_history is None or history[-1] > best_history[-1]:
            best_U, best_history = U.detach(), history
    return best_U.to(acts.dtype), best_history


# -- save / load ------------------------------------------------------------------------------------


def save_subspaces(path, U, n_concepts, layer=None, objective=None):
    """Write U and what it needs (K, the layer) atomically; ``load_subspaces`` reads it back."""
    state = {"U": U.detach().cpu().contiguous(), "n_concepts": int(n_concepts), "layer": layer or ""}
    if objective is not None:
        state["objective"] = float(objective)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_subspaces(path):
    """(U, n_concepts, layer) saved by ``save_subspaces`` (weights_only: no code runs on load)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"DRSA subspaces {path} not found: fit them first (recipes/GTZAN/drsa/train_drsa.py).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state["U"], int(state["n_concepts"]), state.get("layer") or None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a DRSA subspace file written by save_subspaces: {exc}") from exc


# -- the interpreter --------------------------------------------------------------------------------


@INTERPRETERS.register("drsa")
class DRSAInterpreter(LRPInterpreter):
    """LRP split into K concept heatmaps by the subspaces U at ``layer``.

    ``attribute`` gives the sum of the K concept heatmaps (the standard LRP
    heatmap when U is complete, K*d = D); ``concept_heatmaps`` and
    ``explain(...).extras["concepts"]`` give them one by one, (B, K, T, F).

    Arguments
    ---------
    classifier : AudioClassifier
    U : torch.Tensor or str
        (D, K*d) orthonormal columns, concept k in columns k*d .. (k+1)*d - 1,
        or the path of a file written by ``save_subspaces``.
    n_concepts : int
        K (read from the file when U is a path and this is None).
    layer : str
        The encoder submodule whose output holds the activations (None: the
        encoder's output map; taken from the file when U is a path).
    composite, composite_kwargs, merge_batchnorm : as for ``LRPInterpreter``.
    """

    needs_fit = True

    def __init__(
        self,
        classifier,
        U,
        n_concepts=None,
        layer=None,
        composite="epsilon_plus_flat",
        composite_kwargs=None,
        merge_batchnorm=True,
    ):
        super().__init__(classifier, composite, composite_kwargs, merge_batchnorm)
        if isinstance(U, (str, Path)):
            U, saved_concepts, saved_layer = load_subspaces(U)
            n_concepts = saved_concepts if n_concepts is None else n_concepts
            layer = saved_layer if layer is None else layer
        U = torch.as_tensor(U)
        if n_concepts is None or U.ndim != 2 or U.shape[1] % int(n_concepts):
            raise ValueError(f"U {tuple(U.shape)} must have K * d columns for K = n_concepts = {n_concepts} subspaces")
        gram = U.double().T @ U.double()
        if not torch.allclose(gram, torch.eye(U.shape[1], dtype=torch.float64), atol=1e-4):
            raise ValueError("U's columns must be orthonormal (use fit_drsa, random_orthogonal or orthonormalize)")
        self.n_concepts = int(n_concepts)
        self.layer = layer or None
        self.register_buffer("U", U.float())

    @classmethod
    def with_random_subspaces(cls, classifier, n_channels, n_concepts, subspace_dim=None, seed=0, **kwargs):
        """The baseline: K random orthogonal subspaces of the layer's D = ``n_channels`` channels."""
        d = n_channels // n_concepts if subspace_dim is None else subspace_dim
        U = random_orthogonal(n_channels, n_concepts * d, generator=torch.Generator().manual_seed(seed))
        return cls(classifier, U, n_concepts=n_concepts, **kwargs)

    def _check_channels(self, activation):
        if activation.shape[1] != self.U.shape[0]:
            raise ValueError(
                f"U has {self.U.shape[0]} rows but layer {self.layer or '<encoder output>'} has "
                f"{activation.shape[1]} channels: fit U at this layer (or set `layer` to the one U was fit at)"
            )

    def split(self, activation, relevance):
        """(K, B, C, h, w): a * (U_k U_k^T c) per position, the relevance concept k gives each neuron."""
        self._check_channels(activation)
        U = self.U.to(activation)
        context = context_vectors(activation, relevance).movedim(1, -1)  # (B, h, w, C)
        coords = (context @ U).unflatten(-1, (self.n_concepts, -1))  # (B, h, w, K, d)
        blocks = U.unflatten(1, (self.n_concepts, -1))  # (C, K, d)
        projected = torch.einsum("bhwkd,ckd->kbhwc", coords, blocks)
        return projected.movedim(-1, 2) * activation[None]

    def concept_heatmaps(self, X, target):
        """(heatmaps (B, K, T, F), concept relevance at the layer (B, K))."""
        activation, relevance, heatmaps = self.decompose(X, target, self.layer, split=self.split)
        concept_relevance = self.split(activation, relevance).sum(dim=(2, 3, 4)).T
        return heatmaps, concept_relevance

    def attribute(self, X, target):
        """The sum of the K concept heatmaps in one propagation (LRP is linear in the relevance it is given)."""

        def union(activation, relevance):
            return self.split(activation, relevance).sum(dim=0, keepdim=True)

        return self.decompose(X, target, self.layer, split=union)[2][:, 0]

    def attribute_with_extras(self, X, target):
        """(the sum of the concept heatmaps, extras: the K heatmaps and each concept's relevance at the layer)."""
        heatmaps, concept_relevance = self.concept_heatmaps(X, target)
        per_clip = {f"concept{k}_relevance": concept_relevance[:, k] for k in range(self.n_concepts)}
        extras = {"concepts": heatmaps, "concept_relevance": concept_relevance, "per_clip": per_clip}
        return heatmaps.sum(dim=1), extras

    @classmethod
    def fit(
        cls,
        classifier,
        data,
        n_concepts=2,
        layer=None,
        n_clips=16,
        n_positions=32,
        batch_size=4,
        composite="epsilon_plus_flat",
        composite_kwargs=None,
        merge_batchnorm=True,
        **drsa_options,
    ):
        """DRSA subspaces at ``layer`` (default: the encoder output) fitted on the LRP (activation, context)
        pairs of the first ``n_clips`` clips of ``data`` (a ``FitData``), ``n_positions`` positions per clip.

        ``drsa_options`` go to ``fit_drsa`` (subspace_dim, n_steps, n_restarts, ...); the pairs are
        collected with the LRP composite the interpreter will explain with.
        """
        lrp = LRPInterpreter(classifier, composite, composite_kwargs)
        batches = list(data.X[:n_clips].split(batch_size))
        acts, ctxs = collect_drsa_pairs(lrp, batches, layer, n_positions=n_positions)
        U, _ = fit_drsa(acts.flatten(0, 1), ctxs.flatten(0, 1), n_concepts, **drsa_options)
        return cls(
            classifier,
            U,
            n_concepts=n_concepts,
            layer=layer,
            composite=composite,
            composite_kwargs=composite_kwargs,
            merge_batchnorm=merge_batchnorm,
        )


def concept_explanations(explanation, mask_mode="minmax"):
    """One Explanation per concept of a DRSA explanation (its positive relevance as the mask), e.g. to listen to."""
    heatmaps = explanation.extras["concepts"]
    return [
        Explanation(saliency=h, mask=saliency_to_mask(h, mask_mode), target=explanation.target)
        for h in heatmaps.unbind(dim=1)
    ]
