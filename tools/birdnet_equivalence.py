#!/usr/bin/env python3
"""BirdNET V2.4's PyTorch port against the original TFLite file run by LiteRT, on real recordings: a table.

    python tools/birdnet_equivalence.py --esc10_folder DIR [--max_clips N] [--output FILE.md]

Rows: every ESC-10 clip (its first 3 s at 48 kHz), each real call source installed (the ovos wheel's CC0
clips, Debian's tuxpaint sounds: every 3 s window) and the real-call scenes of a folder (--scenes_folder).
"""

import argparse
import sys
from pathlib import Path

import torch

from common.data.real_calls import available_calls, esc10_file, esc10_rows, load_48k
from common.io import atomic_write_text
from common.models.birdnet import CLIP_SAMPLES, LiteRTBirdNET, compare_with_litert, load_birdnet
from common.reports.tables import markdown_table


def windows(wav):
    """(n, 144000) 3 s windows of a 48 kHz clip, the last zero-padded."""
    n = max(1, -(-len(wav) // CLIP_SAMPLES))
    return torch.nn.functional.pad(wav, (0, n * CLIP_SAMPLES - len(wav))).reshape(n, CLIP_SAMPLES)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--esc10_folder", required=True)
    parser.add_argument("--scenes_folder", default=None, help="real-call scenes (prepare_scenes.py's output)")
    parser.add_argument("--max_clips", type=int, default=None, help="at most this many ESC-10 clips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    classifier, _ = load_birdnet()
    litert = LiteRTBirdNET(num_threads=args.threads)
    sets = {}
    rows = esc10_rows(args.esc10_folder)[: args.max_clips]
    sets["ESC-10 clips (first 3 s)"] = torch.stack(
        [windows(load_48k(esc10_file(args.esc10_folder, r)))[0] for r in rows]
    )
    calls = [c for c in available_calls() if not c.name.startswith("esc10")]
    if calls:
        sets["real calls (ovos CC0, tuxpaint GPL-2; every 3 s window)"] = torch.cat(
            [windows(load_48k(c.path)) for c in calls]
        )
    if args.scenes_folder:
        audio = sorted((Path(args.scenes_folder) / "audio").glob("*.wav"))
        sets["real-call scenes"] = torch.stack([windows(load_48k(p))[0] for p in audio])
    table = []
    for name, wavs in sets.items():
        result = compare_with_litert(classifier, litert, wavs)
        table.append(
            {
                "clips": name,
                "n": result["clips"],
                "max abs logit diff": f"{result['max_abs_logit_diff']:.2e}",
                "top-1 agreement": f"{result['top1_agreement']:.3f}",
                "top-5 identical (ordered)": f"{result['top5_identical']:.3f}",
            }
        )
    text = markdown_table(table)
    print(text)
    if args.output:
        atomic_write_text(args.output, text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
