"""Tables: markdown and CSV, written atomically."""

import csv
import io
from pathlib import Path

from common.io import atomic_write_text


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
    write_csv(rows, f"{path_stem}.csv", columns=columns)
    return text


def write_csv(rows, path, columns=None):
    """Write ``rows`` (dicts) as a CSV file atomically; ``columns``: default the union of their keys in
    first-seen order (a row without a column leaves its cell empty; keys not in ``columns`` are left out)."""
    buf = io.StringIO()
    if rows or columns:
        writer = csv.DictWriter(buf, fieldnames=columns or _columns(rows), restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


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
    write_csv(per_clip_rows, out_dir / f"{stem}_per_clip.csv")
    return write_table(summary_rows, out_dir / f"{stem}_summary", columns=_columns(summary_rows))
