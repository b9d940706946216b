#!/usr/bin/env python3
"""Meta-evaluate a finished leaderboard: which ground-truth-free metric ranks the methods as ground truth does.

    python tools/meta_evaluation.py RESULTS_FOLDER [--out DIR] [--include_flagged]

RESULTS_FOLDER is a leaderboard's output folder: ``leaderboard_per_clip.csv``
(per-clip scores of every method) and, when there, ``leaderboard.csv`` (the
sanity rho columns and the classifier evidence check). Prints the table and
writes ``meta_evaluation.csv`` / ``.md`` to ``--out`` (default RESULTS_FOLDER).
The logic is ``common.analysis.meta_evaluation``; ``tools/leaderboard.py``
writes the same files at the end of a run.
"""

import argparse
import csv
from pathlib import Path

from common.analysis.meta_evaluation import REFERENCES, meta_evaluate, write_meta_evaluation
from common.metrics.uncertainty import CONFIDENCE, N_RESAMPLES


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_folder", help="a leaderboard output folder (holds leaderboard_per_clip.csv)")
    ap.add_argument("--out", default=None, help="where to write meta_evaluation.csv / .md (default: RESULTS_FOLDER)")
    ap.add_argument(
        "--include_flagged",
        action="store_true",
        help="also meta-evaluate a classifier that failed the evidence check (its rows say so)",
    )
    ap.add_argument("--references", nargs="+", default=list(REFERENCES), help="ground-truth metrics (registered names)")
    ap.add_argument("--n_resamples", type=int, default=N_RESAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    folder = Path(args.results_folder)
    per_clip = folder / "leaderboard_per_clip.csv"
    if not per_clip.is_file():
        ap.error(f"{per_clip} not found: is {folder} a leaderboard output folder?")
    board = folder / "leaderboard.csv"
    rows, notes = meta_evaluate(
        read_rows(per_clip),
        read_rows(board) if board.is_file() else [],
        references=args.references,
        include_flagged=args.include_flagged,
        n_resamples=args.n_resamples,
        confidence=CONFIDENCE,
        seed=args.seed,
    )
    out = Path(args.out) if args.out else folder
    text = write_meta_evaluation(rows, notes, out, args.n_resamples, CONFIDENCE)
    print(text)
    print(f"Meta-evaluation: {out / 'meta_evaluation.md'} (and .csv)")
    return rows, notes


if __name__ == "__main__":
    main()
