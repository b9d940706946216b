#!/usr/bin/env python3
"""Memory and speed of the AudioProtoPNet prototype head in inference, chunked and unchunked.

    python tools/benchmark_prototypes.py [--prototypes 1000,10000,50000,194720 --channels 1024 --batch_size 4]

For each number of prototypes P (194,720 is XCL's 9,736 classes x 20) the head
runs under torch.no_grad on a random backbone map of 8 x 19 (a 5 s clip at
32 kHz, 256 mels, hop 256, through ConvNeXt's stride 32), upsampled to
16 x 38: once working through --chunk_size prototypes at a time and, where the
B x P x 16 x 38 similarity tensor fits under --max_unchunked_gib, once whole.
Each configuration runs in a fresh subprocess so its peak RSS is its own; the
table gives the RSS before the head ran (interpreter, torch, prototypes, input)
and the peak after, so their difference is what inference itself needed.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common.recipe import REPO
from common.reports.tables import markdown_table

GIB = 2**30
COLUMNS = [
    "P",
    "mode",
    "similarity tensor",
    "materialised (GiB)",
    "before head (GiB)",
    "peak RSS (GiB)",
    "head increment (GiB)",
    "clips/s",
]
QUICK = {"prototypes": "40,200", "channels": 64, "batch_size": 2, "chunk_size": 64, "repeats": 2}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prototypes", default="1000,10000,50000,194720", help="comma-separated numbers of prototypes")
    parser.add_argument("--prototypes_per_class", type=int, default=20, help="k; every P must be a multiple of it")
    parser.add_argument("--channels", type=int, default=1024, help="C, channels of the backbone map and prototypes")
    parser.add_argument("--map_height", type=int, default=8, help="backbone map height (before the x2 upsampling)")
    parser.add_argument("--map_width", type=int, default=19, help="backbone map width (before the x2 upsampling)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--chunk_size", type=int, default=8192, help="prototypes per chunk in the chunked mode")
    parser.add_argument(
        "--max_unchunked_gib",
        type=float,
        default=4.0,
        help="run unchunked only where the B x P x H x W similarity tensor (float32) is at most this large",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (after one warm-up); median reported")
    parser.add_argument("--quick", action="store_true", help=f"tiny run for the tests: {QUICK}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one configuration, as JSON, in this process
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.prototypes = [int(p) for p in str(args.prototypes).split(",") if p.strip()]
    bad = [p for p in args.prototypes if p < 1 or p % args.prototypes_per_class]
    if bad:
        parser.error(
            f"--prototypes {bad} are not positive multiples of --prototypes_per_class {args.prototypes_per_class}"
        )
    return args


def rss_peak_gib():
    # ru_maxrss is in KiB on Linux: the process's high-water mark so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_worker(config):
    """Time one configuration in this process; its measurements as a dict."""
    import torch

    from common.models.prototypes import PrototypeHead

    torch.manual_seed(0)
    k = config["prototypes_per_class"]
    head = PrototypeHead(
        n_classes=config["P"] // k,
        prototypes_per_class=k,
        channels=config["channels"],
        chunk_size=config["chunk_size"] if config["mode"] == "chunked" else None,
    ).eval()
    features = torch.randn(config["batch_size"], config["channels"], config["map_height"], config["map_width"])
    before = rss_peak_gib()
    seconds = []
    with torch.no_grad():
        for i in range(config["repeats"] + 1):
            started = time.perf_counter()
            out = head(features)
            elapsed = time.perf_counter() - started
            if i:  # the first run is the warm-up
                seconds.append(elapsed)
            del out
    peak = rss_peak_gib()
    return {
        "before": before,
        "peak": peak,
        "clips_per_s": config["batch_size"] / statistics.median(seconds),
    }


def measure(config):
    """Run one configuration in a fresh interpreter, so its peak RSS is not inflated by earlier ones."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {config} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return None
    height, width = 2 * args.map_height, 2 * args.map_width
    rows = []
    for n_prototypes in args.prototypes:
        materialised = args.batch_size * n_prototypes * height * width * 4 / GIB
        modes = ["chunked"] + (["unchunked"] if materialised <= args.max_unchunked_gib else [])
        for mode in modes:
            config = {
                "P": n_prototypes,
                "mode": mode,
                "prototypes_per_class": args.prototypes_per_class,
                "channels": args.channels,
                "map_height": args.map_height,
                "map_width": args.map_width,
                "batch_size": args.batch_size,
                "chunk_size": args.chunk_size,
                "repeats": args.repeats,
            }
            result = measure(config)
            rows.append(
                {
                    "P": n_prototypes,
                    "mode": mode,
                    "similarity tensor": f"{args.batch_size} x {n_prototypes} x {height} x {width}",
                    "materialised (GiB)": materialised,
                    "before head (GiB)": result["before"],
                    "peak RSS (GiB)": result["peak"],
                    "head increment (GiB)": result["peak"] - result["before"],
                    "clips/s": round(result["clips_per_s"], 2),
                }
            )
            print(f"measured P={n_prototypes} {mode}", file=sys.stderr, flush=True)
    print(markdown_table(rows, COLUMNS), end="")
    print(
        f"\nC = {args.channels}, k = {args.prototypes_per_class}, chunk = {args.chunk_size} prototypes, "
        f"backbone map {args.map_height} x {args.map_width} upsampled x2; median of {args.repeats} runs after a warm-up."
    )
    return rows


if __name__ == "__main__":
    main()
