#!/usr/bin/env python3
"""BirdNET V2.4: clips per second of the PyTorch port against LiteRT on this CPU, and peak memory on a long file.

    python tools/benchmark_birdnet.py                       # 40 ESC-10 clips, 1 thread, a 60-minute file
    python tools/benchmark_birdnet.py --threads 2 --long_minutes 10

Speed: the same N real clips (the first 3 s of ESC-10 clips, 4 per class, resampled to 48 kHz) through the
original .tflite run by LiteRT (clip by clip: its graph takes one) and through the port in ``torch.no_grad``
at batch sizes 1 and 16, with ``torch.set_num_threads`` equal to LiteRT's ``num_threads``; the median of
``--repeats`` timed passes after one warm-up pass. Memory: ``tools/birdnet_detect.py``'s streaming
detection (common/analysis/birdnet_detection.py, no explanations) on ``--long_minutes`` of low-level noise
at 16 kHz written to a temporary FLAC, in a fresh process: its RSS once torch and the model are loaded and its
peak during the job (Linux's VmHWM, reset after loading, so importing torch does not hide it); and, for
contrast, a process that reads the whole file and resamples it to 48 kHz; both against the size of the file
at 48 kHz float32. Prints markdown tables (and writes them to ``--output`` when given).
"""

import argparse
import csv
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ESC10 = REPO.parent / "shared" / "data" / "esc10"


def _status_mb(key):
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) / 1024


def start_peak():
    """RSS now (MB), with the peak reset to it (Linux: clear_refs 5), so that the peak read later is the job's
    own, not the transient of importing torch; elsewhere the process's peak so far (getrusage)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_mb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb():
    try:
        return _status_mb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def esc10_clips(n_clips, folder=ESC10):
    """(n_clips, 144000) torch tensor: the first 3 s of ESC-10 clips at 48 kHz, the same number per class."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    meta = folder / "meta" / "esc50.csv"
    if not meta.is_file():
        sys.exit(f"ESC-10 clips not found at {folder} (meta/esc50.csv); pass --esc10 FOLDER")
    by_class = {}
    for row in csv.DictReader(open(meta)):
        by_class.setdefault(row["category"], []).append(row)
    per_class = -(-n_clips // len(by_class))
    rows = [r for _, group in sorted(by_class.items()) for r in group[:per_class]][:n_clips]
    wavs = []
    for row in rows:
        data, rate = sf.read(folder / "ogg" / f"{row['filename'][:-4]}.ogg", dtype="float32")
        wavs.append(AF.resample(torch.from_numpy(data), rate, 48000)[:144000])
    return torch.stack(wavs)


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed_table(n_clips, threads, repeats, folder):
    import torch

    from common.models.birdnet import LiteRTBirdNET, load_birdnet

    torch.set_num_threads(threads)
    wavs = esc10_clips(n_clips, folder)
    classifier, _ = load_birdnet()
    litert = LiteRTBirdNET(num_threads=threads)

    def port(batch):
        with torch.no_grad():
            return torch.cat([classifier(wavs[k : k + batch]) for k in range(0, len(wavs), batch)])

    diff = float((port(16) - litert.logits_from_wavs(wavs)).abs().max())
    seconds = {
        "LiteRT": median_time(lambda: litert.logits_from_wavs(wavs), repeats),
        "port, batch 1": median_time(lambda: port(1), repeats),
        "port, batch 16": median_time(lambda: port(16), repeats),
    }
    import ai_edge_litert

    version = getattr(ai_edge_litert, "__version__", "?")
    lines = [
        f"{len(wavs)} ESC-10 clips of 3 s at 48 kHz, {threads} thread(s) each (torch {torch.__version__}, "
        f"ai-edge-litert {version}), median of {repeats} passes; max |logit difference| port - LiteRT {diff:.2e}",
        "",
        "| model | seconds for all clips | clips per second | port / LiteRT (clips/s) |",
        "|---|---|---|---|",
    ]
    base = len(wavs) / seconds["LiteRT"]
    for name, s in seconds.items():
        rate = len(wavs) / s
        label = f"LiteRT (original .tflite, {threads} thread(s))" if name == "LiteRT" else f"PyTorch {name}"
        lines.append(f"| {label} | {s:.2f} | {rate:.1f} | {rate / base:.2f} |")
    return "\n".join(lines)


def write_long_file(path, minutes, rate=16000, seed=0):
    """``minutes`` of white noise (std 0.01) at ``rate``, written a minute at a time (never held whole)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for _ in range(minutes):
            f.write((1e-2 * rng.standard_normal(60 * rate)).astype(np.float32))


def child(mode, path, out, threads):
    """Run in a fresh process: print the peak RSS after loading and after the job, as JSON."""
    import torch

    torch.set_num_threads(threads)
    if mode == "detect":
        from common.analysis.birdnet_detection import DetectionOptions, detect
        from common.models.birdnet import load_birdnet

        classifier, labels = load_birdnet()
        loaded = start_peak()
        t0 = time.perf_counter()
        summary = detect(path, out, DetectionOptions(explain_top=0), classifier, labels)
        extra = {"windows": summary["windows"], "detections": summary["detections"]}
    else:  # the whole file read and resampled at once
        import torchaudio.functional as AF

        from common.data.audio import read_audio_file, to_mono

        loaded = start_peak()
        t0 = time.perf_counter()
        data, rate = read_audio_file(path)
        wav = AF.resample(torch.from_numpy(to_mono(data)), rate, 48000)
        extra = {"samples_48k": int(wav.shape[0])}
    print(json.dumps({"loaded_mb": loaded, "peak_mb": peak_rss_mb(), "seconds": time.perf_counter() - t0, **extra}))


def run_child(mode, path, out, threads):
    command = [sys.executable, str(Path(__file__).resolve()), "--_child", mode, str(path), str(out)]
    proc = subprocess.run(command + ["--threads", str(threads)], capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        sys.exit(f"{mode} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_table(minutes, threads):
    """Streaming on a 1-minute file and on the long one (its peak should not grow with the length), and the
    whole long file read at once."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="birdnet_long_") as tmp:
        for length in sorted({1, minutes}):
            path = Path(tmp) / f"long_{length}.flac"
            write_long_file(path, length)
            r = run_child("detect", path, Path(tmp) / f"out_{length}", threads)
            rows.append(
                (f"birdnet_detection, streaming ({r['windows']} windows, batch 16, no explanations)", length, r)
            )
        r = run_child("whole", path, Path(tmp) / "out_whole", threads)
        rows.append(("the whole file read and resampled at once (no model)", minutes, r))
    lines = [
        "Noise at 16 kHz (FLAC); RSS of a fresh process once torch (and the model) are loaded, and its peak during "
        "the job (Linux VmHWM, reset after loading)",
        "",
        "| job | minutes | seconds | RSS before (MB) | peak (MB) | increase (MB) | the file at 48 kHz float32 (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for job, length, r in rows:
        held = length * 60 * 48000 * 4 / 2**20
        lines.append(
            f"| {job} | {length} | {r['seconds']:.1f} | {r['loaded_mb']:.0f} | {r['peak_mb']:.0f} | "
            f"{r['peak_mb'] - r['loaded_mb']:.0f} | {held:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n_clips", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1, help="LiteRT's num_threads and torch's threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long_minutes", type=int, default=60, help="0: skip the memory measurement")
    ap.add_argument("--esc10", type=Path, default=ESC10, help="ESC-10 folder (meta/esc50.csv, ogg/)")
    ap.add_argument("--output", type=Path, help="also write the tables to this markdown file")
    ap.add_argument("--_child", nargs=3, metavar=("MODE", "FILE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        return child(*args._child, args.threads)
    tables = [speed_table(args.n_clips, args.threads, args.repeats, args.esc10)]
    print(tables[-1] + "\n", flush=True)
    if args.long_minutes:
        tables.append(memory_table(args.long_minutes, args.threads))
        print(tables[-1], flush=True)
    if args.output:
        from common.io import atomic_write_text

        atomic_write_text(args.output, "\n\n".join(tables) + "\n")


if __name__ == "__main__":
    main()
