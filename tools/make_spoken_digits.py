#!/usr/bin/env python3
"""Write synthetic spoken digits in AudioMNIST's layout (espeak-ng voices), for the AudioMNIST recipes offline.

python tools/make_spoken_digits.py OUT_DIR [--n_speakers 12 --repetitions 5 --seed 0 --female_fraction 0.5]

Writes OUT_DIR/data/<speaker>/<digit>_<speaker>_<index>.wav (48 kHz) and OUT_DIR/data/audioMNIST_meta.txt
(common.data.synthetic.spoken_digits). Prepare it with split: balanced: the official splits name the real
data set's 60 speakers. Needs Debian's espeak-ng.
"""

import argparse

from common.data.synthetic.spoken_digits import make_spoken_digits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n_speakers", type=int, default=12)
    ap.add_argument("--repetitions", type=int, default=5, help="recordings of each digit per speaker")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--female_fraction", type=float, default=0.5)
    args = ap.parse_args(argv)
    folder = make_spoken_digits(
        args.out_dir, args.n_speakers, args.repetitions, seed=args.seed, female_fraction=args.female_fraction
    )
    print(f"{args.n_speakers} speakers x 10 digits x {args.repetitions} recordings in {folder}")


if __name__ == "__main__":
    main()
