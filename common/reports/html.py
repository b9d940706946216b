"""A static HTML report of a leaderboard run: open ``report/index.html`` from disk, no server needed.

The leaderboard writes ``run.json`` in its output folder: the table (columns
and rows) and, per example clip, the original wav, its spectrogram figure and,
per method, the listenable explanation (wav) and the spectrogram with the
method's mask overlaid (png), as paths relative to the run folder.
``write_html_report`` copies those files under ``report/assets/`` and writes
``report/index.html`` with relative links only, so the folder can be zipped,
moved and opened with ``file://``: the leaderboard table on top, then per clip
an ``<audio controls>`` player for the original and one for each method's
explanation, next to its mask figure.
"""

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np

from common.io import atomic_write_text
from common.reports.figures import save_figure
from common.reports.tables import format_value

RUN_FILE = "run.json"


def slug(text):
    """A file-name-safe version of a label (letters, digits, '-', '_', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def _numpy(a):
    return a.detach().cpu().float().numpy() if hasattr(a, "detach") else np.asarray(a)


def _save_spectrogram_png(X, path, title, cmap, mask=None):
    """The spectrogram (time on x), with a [0, 1] mask overlaid when given (orange, opacity = mask), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 2.6))
    ax.imshow(_numpy(X).T, origin="lower", aspect="auto", cmap=cmap)
    if mask is not None:
        mask = _numpy(mask)
        overlay = np.zeros((*mask.T.shape, 4))
        overlay[..., 0], overlay[..., 1] = 1.0, 0.8  # yellow-orange, as opaque as the mask is high
        overlay[..., 3] = 0.8 * np.clip(mask.T, 0.0, 1.0)
        ax.imshow(overlay, origin="lower", aspect="auto")
    ax.set_xlabel("frame")
    ax.set_ylabel("bin")
    ax.set_title(title, fontsize=8)
    save_figure(fig, path, dpi=72)


def save_mask_overlay(X, mask, path, title=""):
    """The spectrogram (grey, time on x) with a [0, 1] mask overlaid (orange, opacity = mask), as a png, atomically."""
    _save_spectrogram_png(X, path, title, "gray", mask=mask)


def save_spectrogram(X, path, title=""):
    """The spectrogram alone (time on x), as a png, atomically."""
    _save_spectrogram_png(X, path, title, "magma")


def _table_html(columns, rows):
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(format_value(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table class='board'>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.board { border-collapse: collapse; font-size: 12px; }
table.board th, table.board td { border: 1px solid #bbb; padding: 3px 6px; text-align: right; }
table.board th { background: #eee; }
table.board td:first-child, table.board td:nth-child(2) { text-align: left; }
.clip { border-top: 2px solid #888; margin-top: 1.5em; padding-top: 0.5em; }
.methods { display: flex; flex-wrap: wrap; gap: 12px; }
.method { border: 1px solid #ccc; padding: 6px; width: 360px; }
.method img { width: 100%; }
.original img { width: 480px; max-width: 100%; }
.original audio { width: 480px; max-width: 100%; }
audio { width: 100%; }
.fail { color: #b00; font-weight: bold; }
"""


def write_html_report(run_dir, out_dir=None):
    """Write ``<run_dir>/report/index.html`` (or under ``out_dir``) from ``<run_dir>/run.json``; return its path."""
    run_dir = Path(run_dir)
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(f"{run_file} not found: run tools/leaderboard.py first (it writes {RUN_FILE}).")
    run = json.loads(run_file.read_text())
    out_dir = Path(out_dir) if out_dir else run_dir / "report"
    assets = out_dir / "assets"
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)

    def copy_asset(relative):
        source = run_dir / relative
        if not source.is_file():
            raise FileNotFoundError(f"{source} is listed in {run_file} but missing")
        target = assets / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return (Path("assets") / relative).as_posix()

    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(run.get('title', 'Leaderboard'))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(run.get('title', 'Leaderboard'))}</h1>",
    ]
    if run.get("caption"):
        parts.append(f"<p>{html.escape(run['caption'])}</p>")
    parts.append(_table_html(run["columns"], run["rows"]))
    failed = [row["method"] for row in run["rows"] if row.get("sanity") == "fail"]
    if failed:
        parts.append(
            "<p class='fail'>Failed the model-randomisation sanity check (their maps do not depend on the "
            f"classifier's top layers): {html.escape(', '.join(failed))}</p>"
        )
    for clip in run.get("clips", []):
        parts.append("<div class='clip'>")
        parts.append(
            f"<h2>{html.escape(clip['id'])} <small>(true class: {html.escape(str(clip['label']))})</small></h2>"
        )
        parts.append("<div class='original'><h3>original</h3>")
        parts.append(f"<audio controls preload='none' src='{html.escape(copy_asset(clip['original']))}'></audio>")
        if clip.get("spectrogram"):
            parts.append(f"<img alt='spectrogram' src='{html.escape(copy_asset(clip['spectrogram']))}'>")
        parts.append("</div><div class='methods'>")
        for method in clip.get("methods", []):
            parts.append("<div class='method'>")
            parts.append(
                f"<h3>{html.escape(method['label'])} <small>({html.escape(method.get('classifier', ''))}; "
                f"explains {html.escape(str(method.get('target', '')))})</small></h3>"
            )
            parts.append(f"<audio controls preload='none' src='{html.escape(copy_asset(method['wav']))}'></audio>")
            parts.append(
                f"<img alt='mask of {html.escape(method['label'])}' src='{html.escape(copy_asset(method['png']))}'>"
            )
            parts.append("</div>")
        parts.append("</div></div>")
    parts.append("</body></html>")
    index = out_dir / "index.html"
    atomic_write_text(index, "\n".join(parts) + "\n")
    return index
