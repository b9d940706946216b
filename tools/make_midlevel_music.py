#!/usr/bin/env python3
"""Write synthetic music in the layouts of the Mid-level Perceptual Features and Soundtracks data sets.

    python tools/make_midlevel_music.py DIR [--n_midlevel 600] [--n_soundtracks 240] [--seed 0]

DIR/midlevel and DIR/soundtracks are what recipes/MusicEmotion/midlevel reads (--midlevel_folder,
--soundtracks_folder); DIR/ground_truth.json holds the true mid-level -> emotion weights and each clip's
attributes (common/data/synthetic/midlevel_music.py).
"""

import argparse

from common.data.synthetic.midlevel_music import make_midlevel_music


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_folder")
    parser.add_argument("--n_midlevel", type=int, default=600, help="clips rated for the mid-level features")
    parser.add_argument("--n_soundtracks", type=int, default=240, help="clips rated for the emotions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration_s", type=float, default=4.0)
    parser.add_argument("--mid_noise", type=float, default=0.3, help="rating noise of the mid-level ratings (1-10)")
    parser.add_argument("--emotion_noise", type=float, default=0.3, help="rating noise of the emotions (1-9)")
    args = parser.parse_args(argv)
    truth = make_midlevel_music(
        args.out_folder,
        n_midlevel=args.n_midlevel,
        n_soundtracks=args.n_soundtracks,
        seed=args.seed,
        duration_s=args.duration_s,
        mid_noise=args.mid_noise,
        emotion_noise=args.emotion_noise,
    )
    print(f"{len(truth['clips'])} clips in {args.out_folder} (midlevel/, soundtracks/, ground_truth.json)")


if __name__ == "__main__":
    main()
