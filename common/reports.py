"""Report writers: tables (markdown/CSV), confusion-matrix figures.

All files are written atomically.
"""

import csv
import io
from pathlib import Path

import numpy as np

from common.io import atomic_path, atomic_write_text


def format_value(value, digits=4):
    if isinstance(value, float):
        return (
            f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
        )
    return str(value)


def markdown_table(rows, columns=None):
    """Rows (list of dicts) -> a GitHub markdown table."""
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_table(rows, path_stem, columns=None):
    """Write ``rows`` as ``<stem>.md`` and ``<stem>.csv``; return the markdown."""
    columns = columns or list(rows[0])
    text = markdown_table(rows, columns)
    atomic_write_text(f"{path_stem}.md", text)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(f"{path_stem}.csv", buf.getvalue())
    return text


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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plain(value):
    """numpy / torch scalars -> Python numbers, so CSV cells hold numbers, not reprs."""
    return value.item() if hasattr(value, "item") else value


def _columns(rows):
    """Union of the rows' keys, in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_metric_tables(per_clip_rows, summary_rows, out_dir, stem="metrics"):
    """Write ``<stem>_per_clip.csv`` and ``<stem>_summary.md`` / ``.csv`` under ``out_dir``.

    ``per_clip_rows``: one dict per clip (e.g. method, clip, one value per
    metric); ``summary_rows``: one dict per method (display names as keys).
    Rows may differ in keys: the columns are their union. Returns the
    summary's markdown.
    """
    if not summary_rows:
        raise ValueError("write_metric_tables needs at least one summary row")
    out_dir = Path(out_dir)
    per_clip_rows = [{k: _plain(v) for k, v in row.items()} for row in per_clip_rows]
    summary_rows = [{k: _plain(v) for k, v in row.items()} for row in summary_rows]
    buf = io.StringIO()
    if per_clip_rows:
        writer = csv.DictWriter(buf, fieldnames=_columns(per_clip_rows), restval="")
        writer.writeheader()
        writer.writerows(per_clip_rows)
    atomic_write_text(out_dir / f"{stem}_per_clip.csv", buf.getvalue())
    return write_table(summary_rows, out_dir / f"{stem}_summary", columns=_columns(summary_rows))


def save_wav(path, wav, sample_rate):
    """Write a mono waveform (tensor or array) as 16-bit PCM, atomically; peak-limited to [-1, 1]."""
    import soundfile as sf

    data = wav.detach().cpu().numpy() if hasattr(wav, "detach") else np.asarray(wav)
    data = np.clip(np.nan_to_num(data.astype(np.float32)), -1.0, 1.0)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), data, int(sample_rate), subtype="PCM_16", format="WAV")


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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def save_explanation_figure(X, mask, path, title=""):
    """Spectrogram | mask | masked spectrogram, side by side (time on x), as a png."""
    X, mask = _numpy(X), _numpy(mask)
    save_image_panels([("input spectrogram", X), ("mask", mask), ("interpretation", X * mask)], path, title)


def save_prototype_figure(X, similarity, box, path, title=""):
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
    axes[1].set_title("similarity to the prototype")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    t0, t1, f0, f1 = box
    for ax in axes:
        ax.add_patch(Rectangle((t0 - 0.5, f0 - 0.5), t1 - t0, f1 - f0, fill=False, edgecolor="cyan", linewidth=1.5))
        ax.set_xlabel("frame")
    axes[0].set_ylabel("mel band")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


# -- post-hoc explanations: heatmaps, component bars, listenable top-k components ------------------
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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def save_top_components_wav(path, classifier, wav, components, weights, k, sample_rate=None):
    """Write the top-``k`` positive components of one clip as a wav; return their (T, F) mask.

    ``wav`` (samples,), ``components`` (T, F) ids on the classifier's grid,
    ``weights`` (K,) per component. The binary mask goes the way of every
    listenable explanation (``Explanation.to_wav``): mask -> STFT grid ->
    original phase -> ISTFT.
    """
    import torch

    from common.interpreters.base import Explanation
    from common.interpreters.components import top_components_mask

    mask = top_components_mask(weights, components, k)[None].to(wav.dtype)
    explanation = Explanation(saliency=mask, mask=mask, target=torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        audio = explanation.to_wav(classifier, wav[None])[0]
    save_wav(path, audio, sample_rate or classifier.front_end.sample_rate)
    return mask[0]
