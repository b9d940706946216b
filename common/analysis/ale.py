"""Accumulated Local Effects (Apley & Zhu, 2020) of interpretable clip-level audio features.

``accumulated_local_effects`` is Apley & Zhu's first-order estimator: quantile
edges of the feature over the clips, per interval the mean over its clips of
f(z_k) - f(z_{k-1}) for every output, accumulated and centred so that the
clip-weighted mean effect is 0.

The features and their interventions are ``common.analysis.clip_features``.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import DataError, ToolkitError
from common.io import atomic_path, atomic_write_text
from common.reports.tables import write_csv


# -- Accumulated Local Effects ---------------------------------------------------------
@dataclass
class ALEResult:
    """First-order ALE of one feature on every model output.

    edges            : (K+1,) interval edges z_0..z_K (quantiles of the feature over the clips)
    ale              : (K+1, C) centred accumulated effect at each edge, per output
    counts           : (K,) clips per interval
    local_effects    : (K, C) mean over an interval's clips of f(z_k) - f(z_{k-1})
    local_effect_std : (K, C) their standard deviation over the interval's clips
    feature_values   : (N,) the feature of each clip (for the rug)
    intervention_error : mean |achieved - requested| feature value over all interventions
    intervention_max_error : the largest such error
    """

    feature: str
    label: str
    edges: np.ndarray
    ale: np.ndarray
    counts: np.ndarray
    local_effects: np.ndarray
    local_effect_std: np.ndarray
    feature_values: np.ndarray
    intervention_error: float
    intervention_max_error: float
    centring: str = "clips"

    @property
    def effect_range(self):
        """(C,) max - min of each output's ALE: how much the feature moves it."""
        return self.ale.max(axis=0) - self.ale.min(axis=0)

    def to_dict(self):
        return {
            "feature": self.feature,
            "label": self.label,
            "centring": self.centring,
            "edges": self.edges.tolist(),
            "ale": self.ale.tolist(),
            "counts": self.counts.tolist(),
            "local_effects": self.local_effects.tolist(),
            "local_effect_std": self.local_effect_std.tolist(),
            "feature_values": self.feature_values.tolist(),
            "intervention_error": self.intervention_error,
            "intervention_max_error": self.intervention_max_error,
        }


def check_finite_spectrograms(X, clip_ids=None):
    """Raise DataError naming the first clip of X (B, T, F) with a NaN or infinite value."""
    bad = (~torch.isfinite(X)).flatten(1).any(dim=1).nonzero().flatten().tolist()
    if bad:
        first = bad[0]
        name = f" (clip {clip_ids[first]!r})" if clip_ids is not None else ""
        raise DataError(
            f"X[{first}]{name} contains NaN or infinite values ({len(bad)} of {X.shape[0]} clips do: "
            f"indices {bad[:10]}); check the audio of these clips (NaN samples, a front end taking log of 0) "
            "or leave them out before computing effects"
        )


def _in_chunks(n, batch_size):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def accumulated_local_effects(predict_fn, X, feature, n_intervals=10, batch_size=32, centring="clips", clip_ids=None):
    """Apley & Zhu's first-order ALE of ``feature`` on every output of ``predict_fn``.

    Arguments
    ---------
    predict_fn : callable
        (B, T, F) spectrograms -> (B, C) outputs (``classifier.predict_proba`` or ``.logits``).
    X : torch.Tensor
        (N, T, F) spectrograms of the clips (or segments), in the model's domain, on predict_fn's device.
    feature : ClipFeature
        The feature and its intervention (see ``build_clip_features``).
    n_intervals : int
        K; the edges are the feature's empirical quantiles at k/K (values of real clips; repeated
        quantiles merge, so fewer intervals remain for discrete features).
    batch_size : int
        Clips per model call.
    centring : str
        "clips" (Apley & Zhu, eq. 16): subtract the mean over clips of the accumulated effect of each
        clip's interval, so the clip-weighted mean of ``ale`` over the intervals' upper edges is 0;
        "midpoints" (their ALEPlot package): the same with each interval's mean of its two edges.
    clip_ids : list, optional
        Names of the clips, for error messages.
    """
    if X.ndim != 3 or X.shape[0] == 0:
        raise DataError(f"ALE needs spectrograms shaped (clips, time, freq); got {tuple(X.shape)}")
    if centring not in ("clips", "midpoints"):
        raise ToolkitError(f"centring must be 'clips' or 'midpoints', got {centring!r}")
    if n_intervals < 1:
        raise ToolkitError(f"n_intervals must be at least 1, got {n_intervals}")
    check_finite_spectrograms(X, clip_ids)
    n_clips = X.shape[0]
    values = torch.cat([feature.value(X[chunk]).cpu() for chunk in _in_chunks(n_clips, batch_size)]).numpy()
    if not np.isfinite(values).all():
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        name = f" (clip {clip_ids[first]!r})" if clip_ids is not None else ""
        raise DataError(f"feature {feature.name!r} is not finite for X[{first}]{name}; check that clip's spectrogram")

    quantiles = np.quantile(values, np.linspace(0.0, 1.0, n_intervals + 1), method="inverted_cdf")
    edges = np.unique(quantiles)
    # Float32 spectrograms give features that differ in the last digits only: that is no variation either.
    if len(edges) < 2 or edges[-1] - edges[0] <= 1e-5 * np.abs(edges).max():
        raise DataError(
            f"feature {feature.name!r} takes a single value ({edges[0]:.6g}) on all {n_clips} clips, so it has no "
            "local effect to measure; use clips where it varies or drop it from the features list"
        )
    n_bins = len(edges) - 1
    # Interval k (0-based) holds z_k < x <= z_{k+1}; the minimum belongs to the first interval.
    interval = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, n_bins - 1)

    differences, errors = [], []
    with torch.no_grad():
        for chunk in _in_chunks(n_clips, batch_size):
            X_chunk = X[chunk]
            outputs = []
            for side in (0, 1):
                target = torch.as_tensor(edges[interval[chunk] + side], dtype=torch.float64, device=X.device)
                X_set = feature.set_to(X_chunk, target)
                if not bool(torch.isfinite(X_set).all()):
                    raise ToolkitError(
                        f"the {feature.name!r} intervention gave non-finite spectrograms (clips {chunk.start}.."
                        f"{chunk.stop - 1}); lower its search bounds (e.g. max_tilt_db_per_octave, max_contrast)"
                    )
                errors.append((feature.value(X_set) - target).abs().cpu())
                out = predict_fn(X_set)
                if out.ndim != 2 or out.shape[0] != X_set.shape[0]:
                    raise ToolkitError(f"predict_fn must return (batch, outputs); got {tuple(out.shape)}")
                outputs.append(out.detach().to(torch.float64).cpu())
            differences.append(outputs[1] - outputs[0])
    differences = torch.cat(differences).numpy()
    errors = torch.cat(errors).numpy()

    counts = np.bincount(interval, minlength=n_bins)
    n_outputs = differences.shape[1]
    sums = np.zeros((n_bins, n_outputs))
    np.add.at(sums, interval, differences)
    local_effects = sums / counts[:, None]
    squares = np.zeros((n_bins, n_outputs))
    np.add.at(squares, interval, (differences - local_effects[interval]) ** 2)
    local_effect_std = np.sqrt(squares / counts[:, None])

    accumulated = np.vstack([np.zeros((1, n_outputs)), np.cumsum(local_effects, axis=0)])
    if centring == "clips":
        offset = (counts[:, None] * accumulated[1:]).sum(axis=0) / n_clips
    else:
        offset = (counts[:, None] * (accumulated[:-1] + accumulated[1:]) / 2).sum(axis=0) / n_clips
    return ALEResult(
        feature=feature.name,
        label=feature.label,
        edges=edges,
        ale=accumulated - offset,
        counts=counts,
        local_effects=local_effects,
        local_effect_std=local_effect_std,
        feature_values=values,
        intervention_error=float(errors.mean()),
        intervention_max_error=float(errors.max()),
        centring=centring,
    )


def ale_for_features(predict_fn, X, features, **options):
    """``accumulated_local_effects`` for each feature in turn (options as there)."""
    return [accumulated_local_effects(predict_fn, X, feature, **options) for feature in features]


# -- plots and tables ------------------------------------------------------------------
def _class_names(n_outputs, class_names):
    if class_names is None:
        return [str(c) for c in range(n_outputs)]
    if len(class_names) != n_outputs:
        raise ToolkitError(f"{len(class_names)} class names given for {n_outputs} model outputs")
    return [str(c) for c in class_names]


def plot_ale(result, path, class_names=None, classes=None, ylabel="ALE of class probability", title=None):
    """One png: a curve per class (or per chosen class: indices or names) over the feature, with a rug of clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _class_names(result.ale.shape[1], class_names)
    if classes is None:
        chosen = list(range(len(names)))
    else:
        chosen = [names.index(str(c)) if str(c) in names else int(c) for c in classes]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = plt.get_cmap("tab10" if len(chosen) <= 10 else "tab20")
    for i, c in enumerate(chosen):
        ax.plot(result.edges, result.ale[:, c], marker="o", markersize=3, color=colours(i % colours.N), label=names[c])
    ax.axhline(0.0, color="grey", linewidth=0.6)
    # Rug: where the clips lie, so sparse regions of the curve can be read as such.
    ax.plot(
        result.feature_values,
        np.zeros_like(result.feature_values),
        "|",
        color="black",
        alpha=0.5,
        markersize=10,
        transform=ax.get_xaxis_transform(),
    )
    ax.set_xlabel(result.label)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"ALE of {result.feature} ({len(result.feature_values)} clips)", fontsize=9)
    if len(chosen) > 1:
        ax.legend(fontsize=7, ncol=2 if len(chosen) > 5 else 1)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def ale_curve_rows(results, class_names=None):
    """Long table: one row per feature, edge and class."""
    rows = []
    for result in results:
        names = _class_names(result.ale.shape[1], class_names)
        for k, edge in enumerate(result.edges):
            for c, name in enumerate(names):
                rows.append(
                    {
                        "feature": result.feature,
                        "edge": k,
                        "value": float(edge),
                        "clips_in_interval": int(result.counts[k - 1]) if k > 0 else 0,
                        "class": name,
                        "ale": float(result.ale[k, c]),
                    }
                )
    return rows


def ale_importance_rows(results, class_names=None):
    """One row per feature: the ALE range of every class, their mean, and how well the intervention hit."""
    rows = []
    for result in results:
        names = _class_names(result.ale.shape[1], class_names)
        spread = result.effect_range
        row = {"feature": result.feature, "intervals": len(result.counts), "mean_range": float(spread.mean())}
        row.update({name: float(r) for name, r in zip(names, spread, strict=True)})
        row["intervention_error"] = result.intervention_error
        rows.append(row)
    return rows


def write_ale_results(results, out_dir, class_names=None, classes=None, stem="ale", plots=True):
    """Write ``<stem>.json``, ``<stem>_curves.csv``, ``<stem>_importance.csv`` and one ``<stem>_<feature>.png`` each.

    Returns the importance rows (for a markdown table).
    """
    if not results:
        raise ToolkitError("write_ale_results needs at least one ALEResult")
    out_dir = Path(out_dir)
    names = _class_names(results[0].ale.shape[1], class_names)
    payload = {"class_names": names, "features": [r.to_dict() for r in results]}
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(payload, indent=1) + "\n")
    curves = ale_curve_rows(results, names)
    write_csv(curves, out_dir / f"{stem}_curves.csv", columns=list(curves[0]))
    importance = ale_importance_rows(results, names)
    write_csv(importance, out_dir / f"{stem}_importance.csv", columns=list(importance[0]))
    if plots:
        for result in results:
            plot_ale(result, out_dir / f"{stem}_{result.feature}.png", class_names=names, classes=classes)
    return importance
