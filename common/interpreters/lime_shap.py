"""LIME and Kernel SHAP over interpretable spectrogram components.

Both explain one clip at a time in terms of its components (see
``components.py``: time segments, mel bands, a time x mel grid, superpixels):
a coalition z in {0, 1}^K keeps the components with z_k = 1 and replaces the
others by the baseline; the classifier scores every coalition (batched,
``batch_size`` inputs per ``logits`` call, without gradients) and a weighted
linear model over z gives one weight per component, broadcast back to (T, F).
The explained output is the target's probability (``output="probability"``,
as ``lime`` does; sigmoid for multi-label classifiers), its logit, or its
log-odds log(p / (1 - p)) (``log_odds``, as Bolaños et al. 2025 explain;
``segments.py``).

* ``LimeInterpreter`` (Ribeiro, Singh & Guestrin 2016), as ``lime_image``
  does it: ``n_samples`` rows, the first all ones, the others uniform random
  bits (drawn as lime_image draws them: a seed gives lime_image's rows);
  weights sqrt(exp(-d^2 / kernel_width^2)) of the cosine distance d to the
  all-ones row (kernel_width 0.25); sklearn ``Ridge(alpha=1)`` fitted with
  those weights. Extras: component weights, intercept, the surrogate's
  weighted R^2 (``surrogate_r2`` per clip) and the components.
* ``KernelShapInterpreter`` (Lundberg & Lee 2017): every coalition enumerated
  with its exact Shapley kernel weight when 2^K - 2 rows fit in ``n_samples``
  - 2 (the result is then the exact Shapley values); otherwise coalition sizes
  drawn in proportion to the kernel's total weight per size, each with its
  complement (paired sampling), all of weight 1. The full and empty coalitions
  are always evaluated and enter as the efficiency constraint
  sum(phi) = f(x) - f(baseline), enforced by eliminating one variable of the
  weighted least squares, as the ``shap`` package does. ``additivity_gap``
  per clip checks it.

Why not captum's ``Lime`` / ``KernelShap``: they draw and convert one
interpretable sample at a time in Python and call a similarity function per
sample; here a whole batch of coalitions becomes inputs in one gather +
``torch.where``. Measured on the benchmark's 3 s segment (80 grid components,
300 samples, one CPU thread), the CPU time outside the model's forward passes
was 0.32-0.77 s for captum against 0.06-0.12 s here; captum's Lime also
weighs samples with its own kernel, not lime_image's, so its weights differ
from the ``lime`` package's. ``tools/benchmark_posthoc.py`` measures the ratio
to the floor and the match with lime_image.
"""

import logging
import math

import numpy as np
import torch
from sklearn.linear_model import Ridge

from common.errors import ConfigError
from common.interpreters.components import check_spectrogram, make_baseline, make_components, top_components_mask
from common.interpreters.posthoc import PosthocInterpreter, as_targets, frozen_eval
from common.registry import INTERPRETERS

logger = logging.getLogger(__name__)

OUTPUTS = ("probability", "logit", "log_odds")


def target_output(logits, target, output, multilabel=False):
    """(n,) what is explained of class ``target``: its probability (softmax; sigmoid if ``multilabel``),
    its logit, or its log-odds log(p / (1 - p)) (the logit itself for a sigmoid output)."""
    if output == "logit" or (output == "log_odds" and multilabel):
        return logits[:, target]
    if output == "log_odds":  # log p - log(1 - p) = z_c - logsumexp(other z), without forming p (p -> 1 is finite)
        others = torch.cat([logits[:, :target], logits[:, target + 1 :]], dim=1)
        return logits[:, target] - torch.logsumexp(others, dim=1)
    return (torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1))[:, target]


class ComponentInterpreter(PosthocInterpreter):
    """Shared by LIME and Kernel SHAP: components, baseline, batched coalition scoring, top-k masks.

    Arguments
    ---------
    classifier : AudioClassifier
    components : str or Components
        A name from ``components.COMPONENTS`` (options in ``component_options``) or an instance.
    baseline : str or float
        What a removed component becomes (``components.make_baseline``).
    n_samples : int
        Coalitions scored per clip (forward passes), the full one included.
    batch_size : int
        Inputs per ``classifier.logits`` call.
    output : str
        ``probability``, ``logit`` or ``log_odds`` of the target.
    top_k : int
        The mask keeps the ``top_k`` components with the largest positive weights
        (the listenable explanation); 0 or None: the saliency's min-max mask instead.
    seed : int
        Seeds the coalition draws (and a noise baseline).
    """

    def __init__(
        self,
        classifier,
        components="time_mel_grid",
        component_options=None,
        baseline="silence",
        n_samples=1000,
        batch_size=100,
        output="probability",
        top_k=3,
        seed=0,
    ):
        super().__init__(classifier)
        self.components = make_components(components, component_options)
        # an unknown name (or a classifier without a silence) fails now, not at the first clip
        make_baseline(baseline, torch.zeros(1, 2, 2), classifier=classifier)
        if output not in OUTPUTS:
            raise ConfigError(f"output {output!r} is unknown; use one of {list(OUTPUTS)}")
        if n_samples < 3 or batch_size < 1:
            raise ConfigError(f"n_samples ({n_samples}) must be >= 3 and batch_size ({batch_size}) >= 1")
        self.baseline = baseline
        self.n_samples = int(n_samples)
        self.batch_size = int(batch_size)
        self.output = output
        self.top_k = int(top_k or 0)
        self.seed = int(seed)

    # -- scoring coalitions ---------------------------------------------------------
    def score_coalitions(self, x, base, ids, coalitions, target):
        """f(z) for each coalition row of ``coalitions`` (N, K) bool: float64 numpy (N,).

        ``x`` (T, F) the clip, ``ids`` (T, F) component ids; ``base`` (T, F) its baseline, or a callable
        ``base(lo, hi) -> (hi - lo, T, F)`` that gives rows lo..hi fills of their own (a noise draw per row).
        """
        scores = []
        for lo in range(0, coalitions.shape[0], self.batch_size):
            keep = coalitions[lo : lo + self.batch_size][:, ids]  # (n, T, F): is each bin's component kept
            fill = base(lo, lo + len(keep)) if callable(base) else base
            logits = self.classifier.logits(torch.where(keep, x, fill))
            scores.append(target_output(logits, target, self.output, self.classifier.multilabel))
        return torch.cat(scores).double().cpu().numpy()

    def attribute_with_extras(self, X, target):
        """(saliency, extras): per-component weights spread on their bins; the mask keeps the top-k components."""
        check_spectrogram(X)
        target = as_targets(target, X)
        X = X.detach()
        components = self.components(X)
        baselines = make_baseline(self.baseline, X, components, seed=self.seed, classifier=self.classifier)
        weights, per_clip = [], {}
        with frozen_eval(self.classifier, gradients=False):
            for b in range(X.shape[0]):
                clip_weights, diagnostics = self.explain_components(
                    X[b], baselines[b], components[b], int(target[b]), seed=self.seed + b
                )
                weights.append(torch.as_tensor(clip_weights, dtype=X.dtype, device=X.device))
                for name, value in diagnostics.items():
                    per_clip.setdefault(name, []).append(float(value))
        saliency = torch.stack([w[ids] for w, ids in zip(weights, components, strict=True)])
        extras = {
            "component_weights": weights,
            "components": components,
            "per_clip": {name: torch.tensor(v, dtype=X.dtype) for name, v in per_clip.items()},
        }
        if self.top_k:  # the listenable explanation: the top-k positive components
            masks = [top_components_mask(w, ids, self.top_k) for w, ids in zip(weights, components, strict=True)]
            extras["mask"] = torch.stack(masks).to(saliency.dtype)
        return saliency, extras

    def explain_components(self, x, base, ids, target, seed):
        """(weights (K,), {diagnostic: float}) for one clip; ``seed`` seeds its random draws."""
        raise NotImplementedError


@INTERPRETERS.register("lime")
class LimeInterpreter(ComponentInterpreter):
    """LIME with ``lime_image``'s sampling, kernel and ridge surrogate (see the module doc).

    ``kernel_width``: of the exponential kernel on the cosine distance (lime_image: 0.25);
    ``ridge_alpha``: the surrogate's L2 penalty (lime: 1).
    """

    def __init__(self, classifier, kernel_width=0.25, ridge_alpha=1.0, **options):
        super().__init__(classifier, **options)
        if kernel_width <= 0:
            raise ConfigError(f"kernel_width must be > 0, got {kernel_width}")
        self.kernel_width = float(kernel_width)
        self.ridge_alpha = float(ridge_alpha)

    def sample_weights(self, coalitions):
        """sqrt(exp(-d^2 / width^2)) with d the cosine distance of each row to all ones.

        For a binary row with s ones out of K: cos = s / sqrt(s K), so d = 1 - sqrt(s / K)
        (an empty row has cosine distance 1, as sklearn's ``pairwise_distances`` gives).
        """
        distance = 1.0 - np.sqrt(coalitions.sum(axis=1) / coalitions.shape[1])
        return np.sqrt(np.exp(-(distance**2) / self.kernel_width**2))

    def explain_components(self, x, base, ids, target, seed):
        K = int(ids.max()) + 1
        # lime_image's draw, bit for bit: the same seed gives the same coalitions
        coalitions = np.random.RandomState(seed).randint(0, 2, self.n_samples * K).reshape(self.n_samples, K)
        coalitions[0] = 1  # the clip itself, the point the distances are measured from
        values = self.score_coalitions(x, base, ids, torch.from_numpy(coalitions).bool().to(x.device), target)
        weights = self.sample_weights(coalitions)
        surrogate = Ridge(alpha=self.ridge_alpha, fit_intercept=True)
        surrogate.fit(coalitions, values, sample_weight=weights)
        return surrogate.coef_, {
            "surrogate_r2": surrogate.score(coalitions, values, sample_weight=weights),
            "intercept": surrogate.intercept_,
            "n_components": K,
        }


def shapley_kernel_weight(n_components, size):
    """The Shapley kernel pi(z) = (K - 1) / (C(K, |z|) |z| (K - |z|)) of a coalition of ``size`` components."""
    return (n_components - 1) / (math.comb(n_components, size) * size * (n_components - size))


def shapley_coalitions(K, n_samples, rng):
    """(N, K) bool coalitions of K players (neither empty nor full) and their regression weights, for a budget
    of ``n_samples`` evaluations of which two go to the full and empty coalitions: every coalition with its
    exact Shapley kernel weight when they fit (the regression then gives the exact Shapley values), else
    sizes drawn in proportion to the kernel's total weight per size, each coalition with its complement."""
    budget = n_samples - 2
    if K <= 20 and 2**K - 2 <= budget:
        codes = np.arange(1, 2**K - 1)
        coalitions = (codes[:, None] >> np.arange(K)[None, :]) & 1
        sizes = coalitions.sum(axis=1)
        weights = np.array([shapley_kernel_weight(K, int(s)) for s in sizes])
        return coalitions.astype(bool), weights
    sizes = np.arange(1, K)
    size_probability = (K - 1) / (sizes * (K - sizes))  # the kernel's total weight per size
    size_probability /= size_probability.sum()
    n_pairs = budget // 2
    drawn = rng.choice(sizes, size=n_pairs, p=size_probability)
    ranks = rng.random((n_pairs, K)).argsort(axis=1).argsort(axis=1)  # a random order of the players
    first = ranks < drawn[:, None]  # the drawn number of players, chosen uniformly
    coalitions = np.concatenate([first, ~first])  # each with its complement
    return coalitions, np.ones(len(coalitions))


@INTERPRETERS.register("kernel_shap")
class KernelShapInterpreter(ComponentInterpreter):
    """Kernel SHAP with the efficiency constraint (see the module doc); ``top_k`` as in LIME."""

    def coalitions_and_weights(self, K, rng):
        """(N, K) bool coalitions (neither empty nor full) and their regression weights."""
        return shapley_coalitions(K, self.n_samples, rng)

    def explain_components(self, x, base, ids, target, seed):
        K = int(ids.max()) + 1
        coalitions, weights = self.coalitions_and_weights(K, np.random.default_rng(seed))
        if len(coalitions) < K:
            logger.warning(
                "Kernel SHAP: %d coalitions for %d components; the solution is underdetermined, raise n_samples",
                len(coalitions),
                K,
            )
        ends = np.stack([np.ones(K, bool), np.zeros(K, bool)])
        rows = torch.from_numpy(np.concatenate([ends, coalitions])).to(x.device)
        values = self.score_coalitions(x, base, ids, rows, target)
        f_full, f_empty, values = values[0], values[1], values[2:]
        phi = constrained_shapley_regression(coalitions, values - f_empty, weights, f_full - f_empty)
        return phi, {
            "additivity_gap": abs(phi.sum() - (f_full - f_empty)),
            "output_change": f_full - f_empty,
            "n_components": K,
        }


def constrained_shapley_regression(coalitions, values, weights, total):
    """Weighted least squares values ~ coalitions @ phi subject to sum(phi) = total.

    The last component is eliminated (phi_K = total - sum of the others), as in
    ``shap``'s KernelExplainer, and the rest solved by ``lstsq`` on the
    sqrt-weighted system.
    """
    Z = coalitions.astype(np.float64)
    if Z.shape[1] == 1:
        return np.array([total])
    y = values - Z[:, -1] * total
    A = Z[:, :-1] - Z[:, -1:]
    root = np.sqrt(weights)[:, None]
    head, *_ = np.linalg.lstsq(A * root, y * root[:, 0], rcond=None)
    return np.append(head, total - head.sum())
