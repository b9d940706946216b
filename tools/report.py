#!/usr/bin/env python3
"""A static HTML report of a leaderboard run, needing no server.

    python tools/report.py RUN_FOLDER [--out_dir RUN_FOLDER/report]

RUN_FOLDER is a leaderboard's output folder (``tools/leaderboard.py`` writes
``run.json`` and ``examples/`` there, and already calls this at its end).
Writes ``report/index.html`` and ``report/assets/`` (the wavs and pngs it
links, by relative paths): the leaderboard table on top, then per clip an
audio player for the original and one for each method's listenable
explanation, and the spectrogram with each method's mask overlaid. Zip the
folder or open ``index.html`` from disk (file://).
"""

import argparse
from pathlib import Path

from common.reports.html import write_html_report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_folder", help="a leaderboard output folder (holds run.json)")
    ap.add_argument("--out_dir", default=None, help="where to write the report (default: RUN_FOLDER/report)")
    args = ap.parse_args(argv)
    index = write_html_report(args.run_folder, args.out_dir)
    print(f"HTML report: {index}")
    print(f"Open it with: file://{Path(index).resolve()}")
    return index


if __name__ == "__main__":
    main()
