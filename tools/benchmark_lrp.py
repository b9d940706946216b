#!/usr/bin/env python3
"""Heatmaps per second of LRP and DRSA on a VGG-type log-mel CNN, against a plain gradient.

    python tools/benchmark_lrp.py [--batch_size 2 --repeats 3 --channels 64,128,256,512 --concepts 4]

The classifier is GTZAN's VGG-style ``LogMelCNN`` (blocks of two Conv2d ->
BatchNorm2d -> ReLU and a MaxPool2d(2); untrained, BatchNorm statistics set
away from their defaults so the canonizer has work to do) on 3 s segments at
22,050 Hz (128 mel bands, hop 512: X is 130 x 128). Rows: the plain gradient
of the target logit (one forward and one backward, the floor), LRP with each
composite, and DRSA with K random orthogonal subspaces at the output of the
encoder's third block (K input heatmaps per clip: one LRP pass to the layer,
then K propagations below it). Each is timed on the same batch after one
warm-up on one clip, best of ``--repeats``; CPU threads as the environment sets them.
"""

import argparse
import time

import torch

from common.features import MelDbSpectrogram
from common.interpreters.drsa import DRSAInterpreter
from common.interpreters.lrp import LRPInterpreter, gradient_saliency
from common.models import AudioClassifier
from common.models.genre_cnn import GenreHead, LogMelCNN
from common.reports.tables import markdown_table

COMPOSITES = {
    "epsilon_plus_flat": {},
    "epsilon_gamma_box": {"gamma": 0.25},
    "name_map": {"gammas": [0.5, 0.25, 0.1, 0.0]},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=2, help="clips per timed call")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls after a one-clip warm-up; the best is kept")
    parser.add_argument("--channels", default="64,128,256,512", help="channels of the four VGG blocks")
    parser.add_argument("--segment_s", type=float, default=3.0)
    parser.add_argument("--concepts", type=int, default=4, help="K, DRSA's subspaces")
    parser.add_argument("--drsa_block", type=int, default=2, help="DRSA's layer: the output of this block (0-based)")
    parser.add_argument("--n_classes", type=int, default=10)
    return parser.parse_args(argv)


def build_classifier(channels, n_classes, seed=0):
    torch.manual_seed(seed)
    front_end = MelDbSpectrogram(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=128, mean=-10.0, std=15.0)
    encoder = LogMelCNN(channels=channels, convs_per_block=2)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    head = GenreHead(channels[-1], n_classes, hidden=256)
    return AudioClassifier(front_end, encoder, head).eval()


def block_output(encoder, block):
    """Name of the layer just before block ``block``'s pooling (its last ReLU)."""
    pools = [i for i, m in enumerate(encoder.features) if isinstance(m, torch.nn.MaxPool2d)]
    return f"features.{pools[block] - 1}"


def best_time(fn, X, target, repeats):
    """Best wall time of ``fn(X, target)`` over ``repeats`` calls, after a warm-up call on one clip."""
    fn(X[:1], target[:1])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn(X, target)
        best = min(best, time.perf_counter() - started)
    return best


def main(argv=None):
    args = parse_args(argv)
    channels = [int(c) for c in args.channels.split(",")]
    classifier = build_classifier(channels, args.n_classes)
    wavs = 0.1 * torch.randn(args.batch_size, int(22050 * args.segment_s), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        X = classifier.features(wavs)
        target = classifier.logits(X).argmax(dim=1)
    B = X.shape[0]
    layer = block_output(classifier.embedding_model, min(args.drsa_block, len(channels) - 1))
    d_channels = channels[min(args.drsa_block, len(channels) - 1)]
    gammas = (COMPOSITES["name_map"]["gammas"] * len(channels))[: len(channels)]
    rows = []

    def add(method, heatmaps_per_call, fn):
        seconds = best_time(fn, X, target, args.repeats)
        rows.append(
            {
                "method": method,
                "seconds / batch": seconds,
                "clips / s": B / seconds,
                "heatmaps / s": heatmaps_per_call / seconds,
            }
        )

    add("gradient (1 backward)", B, lambda X, target: gradient_saliency(classifier, X, target))
    for name, kwargs in COMPOSITES.items():
        kwargs = {**kwargs, "gammas": gammas} if name == "name_map" else kwargs
        lrp = LRPInterpreter(classifier, name, kwargs)
        add(f"LRP {name}", B, lrp.attribute)
    drsa = DRSAInterpreter.with_random_subspaces(classifier, d_channels, args.concepts, layer=layer)
    add(f"DRSA K={args.concepts} at {layer} (concept heatmaps)", B * args.concepts, drsa.concept_heatmaps)
    floor = rows[0]["clips / s"]
    for row in rows:
        row["x gradient time"] = floor / row["clips / s"]
    print(
        f"X {tuple(X.shape)} (3 s at 22,050 Hz, 128 mels), VGG channels {channels}, batch {B}, "
        f"{torch.get_num_threads()} thread(s), best of {args.repeats}"
    )
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
