#!/usr/bin/env python3
"""Speed and memory of interpreter training and of the evaluation suite, against their floor.

    python tools/benchmark_interpret.py [--interpreters piq,l2i,lmac_conv2d,amt_vit,... --n_clips 16 --emb_dim 256]

Prints one table: per interpreter (PIQ, L2I, L-MAC, AMT, on the classifiers
their yamls name), clips per second of its training at its yaml's batch size
(frozen classifier outputs cached, as the recipe does; AMT has no training)
and of the evaluation suite on its explanations; the suite's time
split into building inputs, forward passes and each metric; and the floor:
the same number of classifier forward passes as the suite needs, timed alone
at the best batch size in the same run. Peak resident memory is measured per
phase (the kernel's high-water mark is reset before each phase).
"""

import argparse
import time
from pathlib import Path

import torch

from common.interpreters.base import Explanation, FrozenOutputs
from common.metrics import FAITHFULNESS_METRICS, EvaluationSuite
from common.recipe import load_hparams
from common.reports.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
HPARAMS = REPO / "recipes" / "ESC50" / "interpret" / "hparams"
YAMLS = {
    "piq": HPARAMS / "piq.yaml",
    "l2i": HPARAMS / "l2i_conv2d.yaml",
    "lmac_conv2d": HPARAMS / "lmac_conv2d.yaml",
    "lmac_cnn14": HPARAMS / "lmac_cnn14.yaml",
    "piq_focalnet": HPARAMS / "piq_focalnet.yaml",
    "piq_vit": HPARAMS / "piq_vit.yaml",
    "amt_focalnet": HPARAMS / "amt_focalnet.yaml",
    "amt_vit": HPARAMS / "amt_vit.yaml",
}
# Transformer sizes of the README's ESC-10 runs (trained from scratch on a CPU)
BACKBONE_SIZES = {
    "focalnet": {"focalnet_embed_dim": 32, "focalnet_depths": [2, 2, 2, 2]},
    "vit": {"vit_hidden_size": 192, "vit_layers": 6, "vit_heads": 3, "vit_intermediate_size": 768},
}


def size_overrides(name, args):
    """--emb_dim for the conv2d classifier; the README's sizes for FocalNet/ViT; Cnn14 as published."""
    for backbone, sizes in BACKBONE_SIZES.items():
        if name.endswith(backbone):
            return sizes
    return {} if name.endswith("cnn14") else {"emb_dim": args.emb_dim}


METRICS = FAITHFULNESS_METRICS


def reset_peak_rss():
    """Reset the kernel's peak-RSS counter of this process (Linux); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_gib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def timed(fn, repeats=1):
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def slice_hidden(hidden, sl):
    return [h[sl] for h in hidden] if isinstance(hidden, (list, tuple)) else hidden[sl]


def train_row(name, interpreter, weights, frozen, batch_size, trainable, n_clips):
    """One epoch of interpreter training over cached classifier outputs: its time and peak RSS."""
    optimizer = torch.optim.Adam(trainable, lr=1e-4)
    interpreter.train()
    reset_peak_rss()

    def train_epoch():
        for lo in range(0, n_clips, batch_size):
            sl = slice(lo, lo + batch_size)
            batch = FrozenOutputs(frozen.wavs[sl], frozen.X[sl], slice_hidden(frozen.hidden, sl), frozen.logits[sl])
            terms, _ = interpreter.loss_terms(batch)
            optimizer.zero_grad()
            sum(weights.get(k, 1.0) * v for k, v in terms.items()).backward()
            optimizer.step()

    train_s = timed(train_epoch)
    return {
        "phase": f"{name} training (batch {batch_size})",
        "seconds": train_s,
        "clips/s": n_clips / train_s,
        "peak RSS (GiB)": peak_rss_gib(),
    }


def benchmark_interpreter(name, args):
    """Rows for one interpreter: its training, then the suite on its explanations and the floor."""
    torch.manual_seed(0)
    hp = load_hparams(
        YAMLS[name],
        {
            "data_folder": "/nonexistent",
            "output_folder": "/tmp/benchmark_interpret",
            "out_n_neurons": args.out_n_neurons,
            **size_overrides(name, args),
        },
    )
    classifier, interpreter = hp["classifier"].eval(), hp["interpreter"]
    classifier.requires_grad_(False)
    batch_size = args.batch_size or hp["batch_size"]
    weights = hp.get("loss_weights", {})
    wavs = torch.randn(args.n_clips, hp["sample_rate"] * hp["signal_length_s"]) * 0.1
    with torch.no_grad():
        X = classifier.features(wavs)
        hidden, logits = classifier.hidden_and_logits(X, interpreter.layers)
    rows = []

    # 1. interpreter training (classifier outputs cached, as in the recipe); AMT has none
    trainable = [p for p in interpreter.parameters() if p.requires_grad]
    if trainable:
        frozen = FrozenOutputs(wavs, X, hidden, logits)
        rows.append(train_row(name, interpreter, weights, frozen, batch_size, trainable, args.n_clips))

    # 2. the evaluation suite on the interpreter's explanations
    interpreter.eval()
    with torch.no_grad():
        if interpreter.trainable:
            explanation = interpreter.loss_terms(FrozenOutputs(wavs, X, hidden, logits))[1]
        else:
            explanation = interpreter.explain(X=X, target=logits.argmax(-1))
    mask, target = explanation.mask, explanation.target
    suite = EvaluationSuite(METRICS, n_steps=args.curve_steps, batch_size=32)
    suite.evaluate(classifier, X[:2], Explanation(mask[:2], mask[:2], target[:2]))  # warm-up
    suite.reset_timings()
    reset_peak_rss()
    suite_s = timed(lambda: suite.evaluate(classifier, X, Explanation(mask, mask, target)))
    n_rows = suite.counts["rows"]
    rows.append(
        {
            "phase": f"{name}: evaluation suite (all metrics)",
            "seconds": suite_s,
            "clips/s": args.n_clips / suite_s,
            "peak RSS (GiB)": peak_rss_gib(),
        }
    )
    for key, seconds in sorted(suite.timings.items(), key=lambda kv: -kv[1]):
        rows.append({"phase": f"  suite: {key}", "seconds": seconds, "clips/s": "", "peak RSS (GiB)": ""})

    # 3. the floor: the same number of forward passes, alone, at the best batch size
    inputs = X.repeat((n_rows + args.n_clips - 1) // args.n_clips, 1, 1)[:n_rows]
    floor = {}
    for bs in map(int, args.floor_batch_sizes.split(",")):

        def forward_only(bs=bs):
            with torch.no_grad():
                for lo in range(0, n_rows, bs):
                    classifier.logits(inputs[lo : lo + bs])

        floor[bs] = timed(forward_only)
    best_bs = min(floor, key=floor.get)
    rows.append(
        {
            "phase": f"{name}: floor, {n_rows} forward passes (batch {best_bs})",
            "seconds": floor[best_bs],
            "clips/s": args.n_clips / floor[best_bs],
            "peak RSS (GiB)": "",
        }
    )
    return rows, suite_s / floor[best_bs]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--interpreters",
        default="piq,l2i,lmac_conv2d,piq_focalnet,piq_vit,amt_focalnet,amt_vit",
        help=f"comma-separated, from {sorted(YAMLS)}",
    )
    ap.add_argument("--n_clips", type=int, default=16)
    ap.add_argument("--emb_dim", type=int, default=256)
    ap.add_argument("--out_n_neurons", type=int, default=10)
    ap.add_argument("--batch_size", type=int, default=None, help="training batch (default: each yaml's own)")
    ap.add_argument("--curve_steps", type=int, default=10)
    ap.add_argument("--floor_batch_sizes", default="8,16,32,64")
    args = ap.parse_args(argv)
    rows, ratios = [], {}
    for name in args.interpreters.split(","):
        new_rows, ratios[name] = benchmark_interpreter(name, args)
        rows += new_rows
    print(markdown_table(rows, ["phase", "seconds", "clips/s", "peak RSS (GiB)"]))
    for name, ratio in ratios.items():
        print(f"{name}: suite / floor = {ratio:.2f}  (target <= 1.25)")
    return ratios


if __name__ == "__main__":
    main()
