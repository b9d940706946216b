#!/usr/bin/env python3
"""Write a synthetic GTZAN-layout music set whose time-frequency ground truth is known.

python tools/make_synthetic_gtzan.py OUT [--n_per_genre 100 --duration_s 30 --seed 0]

OUT/genres/<genre>/<genre>.000NN.wav (22,050 Hz) and OUT/ground_truth/<clip_id>.json (and with
--write_stems OUT/stems/<clip_id>/<source>.wav);
see common/data/synthetic/music.py for the genres' sources.
python tools/make_synthetic_gtzan.py OUT --genres trio_a trio_b trio_c   # three own sources per class (DRSA)
"""

import argparse

from common.data.synthetic.music import CONCEPT_CLASSES, GENRES, SAMPLE_RATE, make_synthetic_gtzan


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n_per_genre", type=int, default=100)
    ap.add_argument("--duration_s", type=float, default=30.0)
    ap.add_argument("--sample_rate", type=int, default=SAMPLE_RATE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--genres",
        nargs="+",
        default=list(GENRES),
        choices=GENRES + CONCEPT_CLASSES,
        help="the ten genres (one discriminative source each), or the concept classes trio_a trio_b trio_c "
        "(three sources of their own each, for concept analysis)",
    )
    ap.add_argument(
        "--write_stems",
        action="store_true",
        help="also OUT/stems/<clip_id>/<source>.wav, each source as it is in the mix (audioLIME's oracle sources)",
    )
    args = ap.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k != "out_dir"}  # every option is the generator's keyword
    clips = make_synthetic_gtzan(args.out_dir, **options)
    print(
        f"wrote {len(clips)} clips ({len(args.genres)} genres x {args.n_per_genre}) with ground truth to {args.out_dir}"
    )


if __name__ == "__main__":
    main()
