#!/usr/bin/env python3
"""Write a synthetic ESC-50-layout data set with per-clip ground truth.

python tools/make_synthetic_dataset.py OUT_DIR [--n_classes 5 --clips_per_class 20 ...]
"""

import argparse

from common.data.synthetic.scenes import make_synthetic_esc50


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n_classes", type=int, default=5)
    ap.add_argument("--clips_per_class", type=int, default=20)
    ap.add_argument("--duration_s", type=float, default=5.0)
    ap.add_argument("--sample_rate", type=int, default=16000)
    ap.add_argument("--snr_db", type=float, default=6.0)
    ap.add_argument("--n_distractors", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k != "out_dir"}  # every option is the generator's keyword
    rows = make_synthetic_esc50(args.out_dir, **options)
    print(f"wrote {len(rows)} clips ({args.n_classes} classes) with ground truth to {args.out_dir}")


if __name__ == "__main__":
    main()
