#!/usr/bin/env python3
"""One leaderboard for every explanation method of the toolkit, on one classifier and one data set.

    python tools/leaderboard.py tools/leaderboard/synthetic.yaml
    python tools/leaderboard.py tools/leaderboard/esc10.yaml --data_folder /tmp/esc10
    python tools/leaderboard.py CONFIG --set data.n_clips=8 --set classifiers.cnn.training.number_of_epochs=2

The YAML config (see tools/leaderboard/*.yaml and common/analysis/leaderboard/config.py
for its schema) names the data, the classifier(s) and the methods. Every method
explains the same test clips; the table (``leaderboard.md`` / ``.csv`` in the
output folder) holds every metric of the shared suite, the sanity check
(similarity of each explanation before and after re-initialising the
classifier's top layers, and pass/fail), seconds per clip and the classifier
each method explains. ``run.json`` and ``examples/`` feed ``tools/report.py``;
the HTML report is written at the end (``report/index.html``).
"""

import argparse

from common.analysis.leaderboard import load_config, run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="leaderboard YAML (e.g. tools/leaderboard/synthetic.yaml)")
    ap.add_argument("--data_folder", help="overrides data.folder")
    ap.add_argument("--output_folder", help="overrides output_folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    config = load_config(args.config, args.set, args.data_folder, args.output_folder)
    return run(config, progress=not args.no_progress)


if __name__ == "__main__":
    main()
