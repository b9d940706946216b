"""Report writers: tables (markdown/CSV), confusion-matrix figures.

All files are written atomically.
"""

import csv
import io

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
