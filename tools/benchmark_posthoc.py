#!/usr/bin/env python3
"""Seconds per explanation of a 3 s segment for the post-hoc methods, against their floor.

    python tools/benchmark_posthoc.py [--n_samples 1000 --ig_steps 50 --channels 16,32,64,128 --repeats 1]
    python tools/benchmark_posthoc.py --n_samples 200 --repeats 1       # a quicker run

Model: a LogMelCNN genre classifier (``common.models.genre_cnn``, random
weights: speed does not depend on them) on a 3 s, 22,050 Hz synthetic music
segment (MelDbSpectrogram, n_fft 1024, hop 512, 128 mel bands: X is 130 x 128),
on the CPU with ``--threads`` threads.

Printed table, one row per method: LIME (``n_samples`` coalitions), Kernel
SHAP (``n_samples``), Integrated Gradients (``ig_steps``) and occlusion
(``window`` / ``stride``): seconds per explanation and its floor, the same
number of forward (and, for IG, backward) passes of the model timed alone at
the best batch size found in this run (a sweep over ``--batch_sizes``); the
methods run at that batch size. The baseline is the ``lime`` package's
``lime_image`` on the same model, segmentation (the same component ids),
baseline value, number of samples and batch size. Targets: every method within
1.25x of its floor, LIME faster than lime_image. Each time is the minimum over
``--repeats`` runs, methods and floors interleaved so that both see the same
load. Wall seconds and this process's CPU seconds are both reported: on a
shared machine the wall clock also counts time given to other processes, the
CPU clock (one thread) only the work itself. As the model's own speed still
moves with the machine's load, each method's overhead (CPU time outside the
model's forward and backward calls, ``ModelClock``) is also reported and
added to the floor: (floor + overhead) / floor is the ratio the method would
have if the model ran at the floor's speed.
"""

import argparse
import contextlib
import io
import sys
import time

import numpy as np
import torch

from common.data.synthetic.music import render_clip
from common.features import MelDbSpectrogram
from common.interpreters.components import make_components
from common.interpreters.lime_shap import KernelShapInterpreter, LimeInterpreter
from common.interpreters.posthoc import IntegratedGradientsInterpreter, OcclusionInterpreter
from common.models import AudioClassifier
from common.models.genre_cnn import GenreHead, LogMelCNN
from common.reports.tables import markdown_table

SAMPLE_RATE = 22050
SEGMENT_S = 3.0


def build_classifier(channels, n_classes=10):
    front_end = MelDbSpectrogram(sample_rate=SAMPLE_RATE, n_fft=1024, hop_length=512, n_mels=128, mean=-10.0, std=15.0)
    classifier = AudioClassifier(front_end, LogMelCNN(channels), GenreHead(channels[-1], n_classes)).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    return classifier


def run_rows(classifier, X, n_rows, batch_size, backward):
    """``n_rows`` copies of X through the model in batches of ``batch_size`` (forward, or forward + input gradient)."""
    for lo in range(0, n_rows, batch_size):
        rows = X.expand(min(batch_size, n_rows - lo), -1, -1).contiguous()
        if backward:
            rows.requires_grad_(True)
            torch.autograd.grad(classifier.logits(rows)[:, 0].sum(), rows)
        else:
            with torch.no_grad():
                classifier.logits(rows)


class ModelClock:
    """CPU seconds spent inside the model: ``classifier.logits`` calls and ``torch.autograd.grad`` (backward).

    Installed for the whole run: an instance attribute over ``classifier.logits``
    and a wrapper over ``torch.autograd.grad``, which the interpreters, captum
    and the floor look up at call time. What a method spends outside them is its
    own overhead, measured apart from the model's speed, which a shared machine's
    load moves from one run to the next.
    """

    def __init__(self, classifier):
        self.seconds = 0.0
        classifier.logits = self.clocked(classifier.logits)
        torch.autograd.grad = self.clocked(torch.autograd.grad)

    def clocked(self, fn):
        def run(*args, **kwargs):
            tic = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - tic

        return run


def timed(fn, clock, results=None, key=None):
    """(wall s, CPU s of this process, CPU s inside the model) of ``fn()``; its result goes to ``results[key]``."""
    wall, cpu, model = time.perf_counter(), time.process_time(), clock.seconds
    out = fn()
    elapsed = np.array([time.perf_counter() - wall, time.process_time() - cpu, clock.seconds - model])
    if results is not None:
        results[key] = out
    return elapsed


def best_batch_size(classifier, X, batch_sizes, backward, rows, clock):
    """The batch size with the least time per row over at least ``rows`` rows (after one warm-up batch)."""
    per_row = {}
    for bs in batch_sizes:
        n = -(-rows // bs) * bs
        run_rows(classifier, X, bs, bs, backward)  # warm-up: allocator, kernels
        per_row[bs] = timed(lambda bs=bs, n=n: run_rows(classifier, X, n, bs, backward), clock)[1] / n
    return min(per_row, key=per_row.get), per_row


def lime_image_explain(classifier, X, segments, target, n_samples, batch_size, seed):
    """``lime_image`` on the same model, segmentation, baseline value (the clip's minimum) and sample count."""
    from lime import lime_image

    def classifier_fn(images):  # lime hands RGB images (gray2rgb of X); the model sees channel 0
        with torch.no_grad():
            logits = classifier.logits(torch.from_numpy(np.ascontiguousarray(images[..., 0])).float())
        return torch.softmax(logits, dim=-1).numpy()

    explainer = lime_image.LimeImageExplainer(random_state=seed)
    with contextlib.redirect_stderr(io.StringIO()):  # lime_image draws a progress bar on every call
        return explainer.explain_instance(
            X[0].double().numpy(),
            classifier_fn,
            labels=(target,),
            top_labels=None,
            hide_color=float(X.min()),
            num_samples=n_samples,
            batch_size=batch_size,
            segmentation_fn=lambda image: segments,
            random_seed=seed,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_samples", type=int, default=1000, help="LIME / Kernel SHAP / lime_image samples")
    parser.add_argument("--ig_steps", type=int, default=50)
    parser.add_argument("--window", default="16,16", help="occlusion window (frames, mel bands)")
    parser.add_argument("--stride", default="8,8", help="occlusion stride (frames, mel bands)")
    parser.add_argument("--components", default="time_mel_grid", help="components name (see components.py)")
    parser.add_argument("--component_options", default="n_time=10,n_freq=8", help="k=v,... for the components")
    parser.add_argument("--channels", default="16,32,64,128", help="LogMelCNN channels per block")
    parser.add_argument("--batch_sizes", default="8,16,32,64", help="batch sizes swept for the floor")
    parser.add_argument("--repeats", type=int, default=1, help="timings per method (the minimum is kept)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_lime_image", action="store_true", help="skip the lime_image baseline")
    args = parser.parse_args(argv)
    if not args.no_lime_image:
        try:
            import lime.lime_image  # noqa: F401
        except ImportError:
            sys.exit(
                "The lime_image baseline needs the `lime` package: pip install lime scikit-image (or --no_lime_image)"
            )

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    classifier = build_classifier([int(c) for c in args.channels.split(",")])
    wav, _ = render_clip("hiphop", np.random.default_rng(args.seed), duration_s=SEGMENT_S, sample_rate=SAMPLE_RATE)
    X = classifier.features(torch.from_numpy(wav).float()[None])
    with torch.no_grad():
        target = int(classifier.logits(X).argmax())
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    sweep_rows = 64
    clock = ModelClock(classifier)
    fw_bs, fw_rates = best_batch_size(classifier, X, batch_sizes, False, sweep_rows, clock)
    bw_bs, bw_rates = best_batch_size(classifier, X, batch_sizes, True, sweep_rows, clock)
    print(f"X {tuple(X.shape)}, {args.threads} thread(s); CPU ms per row by batch size:")
    print("  forward           " + "  ".join(f"{b}: {1e3 * r:.1f}" for b, r in fw_rates.items()) + f"  -> {fw_bs}")
    print("  forward+backward  " + "  ".join(f"{b}: {1e3 * r:.1f}" for b, r in bw_rates.items()) + f"  -> {bw_bs}")

    options = dict(kv.split("=") for kv in args.component_options.split(",")) if args.component_options else {}
    components = make_components(args.components, {k: int(v) for k, v in options.items()})
    common = {"components": components, "baseline": "minimum", "n_samples": args.n_samples, "batch_size": fw_bs}
    lime = LimeInterpreter(classifier, seed=args.seed, **common)
    shap = KernelShapInterpreter(classifier, seed=args.seed, **common)
    ig = IntegratedGradientsInterpreter(classifier, n_steps=args.ig_steps, baseline="minimum", batch_size=bw_bs)
    window, stride = [tuple(int(v) for v in s.split(",")) for s in (args.window, args.stride)]
    occlusion = OcclusionInterpreter(classifier, window=window, stride=stride, batch_size=fw_bs)
    n_occluded = occlusion.n_windows(X.shape[1], X.shape[2])
    methods = [
        ("LIME", lambda: lime.explain(X=X, target=target), args.n_samples, fw_bs, False),
        ("Kernel SHAP", lambda: shap.explain(X=X, target=target), args.n_samples, fw_bs, False),
        ("Integrated Gradients", lambda: ig.explain(X=X, target=target), args.ig_steps, bw_bs, True),
        ("Occlusion", lambda: occlusion.explain(X=X, target=target), n_occluded + 1, fw_bs, False),
    ]
    segments = components(X)[0].numpy()
    if not args.no_lime_image:
        methods.append(
            (
                "lime_image (lime package)",
                lambda: lime_image_explain(classifier, X, segments, target, args.n_samples, fw_bs, args.seed),
                args.n_samples,
                fw_bs,
                False,
            )
        )
    # Methods with the same passes share one floor, timed after the first of them in every repeat; the order
    # of the methods rotates from repeat to repeat, and each time is the minimum over the repeats.
    runs, seconds, floors, explanations = {}, {}, {}, {}
    for repeat in range(args.repeats):
        timed_floors = set()
        shift = repeat % len(methods)
        for name, explain, n_passes, bs, backward in methods[shift:] + methods[:shift]:
            runs.setdefault(name, []).append(timed(explain, clock, explanations, name))
            # the least wall time; the least CPU time with the model's share of that same run
            best_cpu = min(runs[name], key=lambda run: run[1])
            seconds[name] = np.array([min(run[0] for run in runs[name]), best_cpu[1], best_cpu[2]])
            key = (n_passes, bs, backward)
            if key not in timed_floors:
                floor_s = timed(lambda n=n_passes, b=bs, bw=backward: run_rows(classifier, X, n, b, bw), clock)
                floors[key] = np.minimum(floors.get(key, np.inf), floor_s)
                timed_floors.add(key)
            print(f"  {name}: {seconds[name][0]:.3f} s, CPU {seconds[name][1]:.3f} s", flush=True)
    rows = []
    for name, _, n_passes, bs, backward in methods:
        (wall, cpu, model), (floor_wall, floor_cpu, _) = seconds[name], floors[(n_passes, bs, backward)]
        overhead = max(cpu - model, 0.0)  # the best repeat's CPU time outside the model
        rows.append(
            {
                "method": name,
                "passes": f"{n_passes} fw+bw" if backward else f"{n_passes} fw",
                "batch": bs,
                "s / explanation": round(wall, 3),
                "floor s": round(floor_wall, 3),
                "ratio": round(wall / floor_wall, 3),
                "CPU s": round(cpu, 3),
                "CPU floor s": round(floor_cpu, 3),
                "CPU ratio": round(cpu / floor_cpu, 3),
                "overhead CPU s": round(overhead, 3),
                "(floor + overhead) / floor": round((floor_cpu + overhead) / floor_cpu, 3),
            }
        )
    print()
    print(markdown_table(rows))
    n_components = int(segments.max()) + 1
    print(f"components: {args.components} ({n_components} per clip); occlusion {n_occluded} windows {window}/{stride}")
    checks = [
        f"{r['method']} within 1.25x of its floor: {r['ratio'] <= 1.25} (wall), {r['CPU ratio'] <= 1.25} (CPU), "
        f"{r['(floor + overhead) / floor'] <= 1.25} (floor + its own overhead)"
        for r in rows
        if "lime_image" not in r["method"]
    ]
    if "lime_image (lime package)" in seconds:
        wall, cpu = (seconds["lime_image (lime package)"] / seconds["LIME"])[:2]
        checks.append(f"LIME faster than lime_image: {wall > 1} ({wall:.2f}x wall), {cpu > 1} ({cpu:.2f}x CPU)")
        ours = explanations["LIME"].extras["component_weights"][0].numpy()
        theirs = dict(explanations["lime_image (lime package)"].local_exp[target])
        theirs = np.array([theirs[k] for k in range(n_components)])
        checks.append(f"LIME vs lime_image component weights, Pearson r = {np.corrcoef(ours, theirs)[0, 1]:.3f}")
    print("\n".join(checks))
    return rows


if __name__ == "__main__":
    main()
