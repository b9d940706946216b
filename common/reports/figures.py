"""Figures (png), written atomically: confusion matrices, spectrogram panels, saliency heatmaps, prototypes."""

import numpy as np

from common.io import atomic_path


def save_figure(fig, path, dpi=80):
    """Lay out ``fig``, write it as a png atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def save_confusion_matrix(cm, labels, path, title="Confusion matrix"):
    """Save a confusion matrix (rows: true, columns: predicted) as a png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 20:
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(
                    j, i, int(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
                )
    save_figure(fig, path, dpi=100)


def _numpy(a):
    return a.detach().cpu().float().numpy() if hasattr(a, "detach") else np.asarray(a)


def save_image_panels(panels, path, title="", xlabel="frame", ylabel="frequency bin"):
    """Side-by-side images (each (x, y), drawn with y up) with colour bars, as a png, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    for ax, (name, img) in zip(axes[0], panels, strict=True):
        shown = ax.imshow(_numpy(img).T, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        fig.colorbar(shown, ax=ax, fraction=0.046)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=80)


def save_explanation_figure(X, mask, path, title=""):
    """Spectrogram | mask | masked spectrogram, side by side (time on x), as a png."""
    X, mask = _numpy(X), _numpy(mask)
    save_image_panels([("input spectrogram", X), ("mask", mask), ("interpretation", X * mask)], path, title)


def save_prototype_figure(X, similarity, box, path, title="", map_title="similarity to the prototype"):
    """Spectrogram with a prototype's similarity heatmap over it and the box of its most activated region.

    ``X`` and ``similarity`` are (time, freq); ``box`` is (t0, t1, f0, f1) in bins, half-open.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    X, similarity = _numpy(X), _numpy(similarity)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].imshow(X.T, origin="lower", aspect="auto", cmap="magma")
    axes[0].set_title("input spectrogram")
    axes[1].imshow(X.T, origin="lower", aspect="auto", cmap="gray")
    shown = axes[1].imshow(similarity.T, origin="lower", aspect="auto", cmap="jet", alpha=0.45)
    axes[1].set_title(map_title)
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    t0, t1, f0, f1 = box
    for ax in axes:
        ax.add_patch(Rectangle((t0 - 0.5, f0 - 0.5), t1 - t0, f1 - f0, fill=False, edgecolor="cyan", linewidth=1.5))
        ax.set_xlabel("frame")
    axes[0].set_ylabel("mel band")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=80)


def save_spectrogram_crops(crops, titles, path, title=""):
    """One or more (time, freq) spectrogram crops side by side (e.g. a test region and the training patch a
    prototype matched it with), time on x, as a png, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(crops), figsize=(3.2 * len(crops), 3.2), squeeze=False)
    for ax, crop, name in zip(axes[0], crops, titles, strict=True):
        ax.imshow(_numpy(crop).T, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("frame")
    axes[0][0].set_ylabel("mel band (in the crop)")
    fig.suptitle(title, fontsize=8)
    save_figure(fig, path, dpi=80)


def save_saliency_heatmap(X, saliency, path, title="", ylabel="frequency bin"):
    """The spectrogram (grey) and a saliency heatmap over it, time on x, as a png, atomically.

    Signed saliency (LIME, SHAP, IG, DeepLIFT) is drawn on a diverging scale
    symmetric about 0 (red: for the class, blue: against it); non-negative
    saliency (gradient magnitude, Grad-CAM) on a sequential one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, saliency = _numpy(X), _numpy(saliency)
    peak = float(np.abs(saliency).max()) or 1.0
    signed = bool((saliency < 0).any())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].imshow(X.T, origin="lower", aspect="auto", cmap="magma")
    axes[0].set_title("input spectrogram")
    axes[1].imshow(X.T, origin="lower", aspect="auto", cmap="gray")
    shown = axes[1].imshow(
        saliency.T,
        origin="lower",
        aspect="auto",
        cmap="bwr" if signed else "hot",
        vmin=-peak if signed else 0.0,
        vmax=peak,
        alpha=0.6,
    )
    axes[1].set_title("saliency")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    for ax in axes:
        ax.set_xlabel("frame")
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=80)


def save_component_bars(weights, path, title="", labels=None, xlabel="time segment", ylabel="weight"):
    """One bar per interpretable component (e.g. per time segment), red for, blue against the class, as a png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = _numpy(weights).reshape(-1)
    labels = [str(label) for label in labels] if labels is not None else [str(k) for k in range(len(weights))]
    if len(labels) != len(weights):
        raise ValueError(f"{len(labels)} labels for {len(weights)} component weights")
    fig, ax = plt.subplots(figsize=(min(14.0, max(4.0, 0.3 * len(weights) + 2)), 3.2))
    ax.bar(range(len(weights)), weights, color=["tab:red" if w > 0 else "tab:blue" for w in weights])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(weights)), labels, rotation=90 if len(weights) > 12 else 0, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=80)


PHASE_COLOURS = ("tab:red", "tab:orange", "tab:blue", "tab:green")  # S1, systole, S2, diastole


def save_phase_figure(wav, sample_rate, states, importances, frame_rate, path, title="", phases=None):
    """A heart-sound window: its waveform over coloured phase bands (``states`` per sample, codes 1..4 of
    ``phases``), and below it each method's per-frame importance (``importances``: name -> (T,), scaled to
    its maximum) on the same time axis, as a png. The title carries the model's probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = phases or ("S1", "systole", "S2", "diastole")
    wav, states = _numpy(wav).reshape(-1), _numpy(states).reshape(-1)
    t = np.arange(len(wav)) / float(sample_rate)
    fig, axes = plt.subplots(1 + len(importances), 1, figsize=(11, 1.6 + 1.3 * len(importances)), sharex=True)
    axes = np.atleast_1d(axes)

    def shade(ax):
        change = np.flatnonzero(np.diff(states, prepend=-1, append=-1))
        for lo, hi in zip(change[:-1], change[1:], strict=True):
            code = int(states[lo])
            if 1 <= code <= len(phases):
                ax.axvspan(t[lo], t[min(hi, len(t) - 1)], color=PHASE_COLOURS[code - 1], alpha=0.15, lw=0)

    shade(axes[0])
    axes[0].plot(t, wav, color="black", linewidth=0.5)
    axes[0].set_ylabel("PCG")
    handles = [
        matplotlib.patches.Patch(color=c, alpha=0.3, label=p) for c, p in zip(PHASE_COLOURS, phases, strict=False)
    ]
    axes[0].legend(handles=handles, loc="upper right", fontsize=7, ncol=len(phases))
    axes[0].set_title(title, fontsize=9)
    for ax, (name, values) in zip(axes[1:], importances.items(), strict=True):
        values = _numpy(values).reshape(-1)
        shade(ax)
        frames = np.arange(len(values)) / float(frame_rate)
        ax.plot(frames, values / max(np.abs(values).max(), 1e-12), color="black", linewidth=0.8)
        ax.set_ylabel(name, fontsize=8)
    axes[-1].set_xlabel("time (s)")
    save_figure(fig, path, dpi=80)


def save_grouped_bars(groups, labels, path, title="", ylabel="effect"):
    """Bars of several explanations of the same quantities side by side: ``groups`` {name: (K,) values},
    one cluster of bars per label, as a png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    values = np.stack([_numpy(groups[n]).reshape(-1) for n in names])
    if values.shape[1] != len(labels):
        raise ValueError(f"{len(labels)} labels for {values.shape[1]} values per group")
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.4))
    for i, name in enumerate(names):
        ax.bar(np.arange(len(labels)) + (i - (len(names) - 1) / 2) * width, values[i], width, label=name)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), [str(label) for label in labels], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=80)


def save_weight_matrices(matrices, row_labels, col_labels, path, title=""):
    """Side-by-side signed matrices ``matrices`` {name: (R, C)}, each on its own symmetric colour scale with its
    values printed, as a png (e.g. learned against true mid-level -> emotion weights)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(matrices), figsize=(0.55 * len(col_labels) * len(matrices) + 2.5, 4.2), squeeze=False
    )
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        m = _numpy(matrix)
        scale = float(np.abs(m).max()) or 1.0
        shown = ax.imshow(m, cmap="RdBu_r", vmin=-scale, vmax=scale)
        for (r, c), value in np.ndenumerate(m):
            ax.text(c, r, f"{value:.2g}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
        ax.set_title(name, fontsize=9)
        fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=80)
