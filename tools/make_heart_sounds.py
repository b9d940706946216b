#!/usr/bin/env python3
"""Write synthetic heart sounds in the PhysioNet/CinC 2016 layout, for the PhysioNet2016 recipe offline.

python tools/make_heart_sounds.py OUT_DIR [--n_normal 60 --n_abnormal 60 --min_s 8 --max_s 20 --seed 0]

Writes OUT_DIR/training-a/ (wavs at 2 kHz, .hea headers, REFERENCE.csv, RECORDS), the segmentations in
OUT_DIR/annotations/hand_corrected/training-a_StateAns/ and OUT_DIR/ground_truth.json (where each murmur is;
common.data.synthetic.heart_sounds).
"""

import argparse

from common.data.synthetic.heart_sounds import make_heart_sounds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n_normal", type=int, default=60)
    ap.add_argument("--n_abnormal", type=int, default=60)
    ap.add_argument("--min_s", type=float, default=8.0, help="shortest recording (s)")
    ap.add_argument("--max_s", type=float, default=20.0, help="longest recording (s)")
    ap.add_argument("--systolic_fraction", type=float, default=0.5, help="abnormal recordings with a systolic murmur")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    folder = make_heart_sounds(
        args.out_dir,
        args.n_normal,
        args.n_abnormal,
        duration_s=(args.min_s, args.max_s),
        systolic_fraction=args.systolic_fraction,
        seed=args.seed,
    )
    print(f"{args.n_normal} normal and {args.n_abnormal} abnormal recordings in {folder}")


if __name__ == "__main__":
    main()
