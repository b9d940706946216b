#!/usr/bin/env python3
"""Training speed and memory: SpeechBrain's own loop, this toolkit lever by lever, and the floor.

    python tools/benchmark_training.py --data_folder ESC10 [--models conv2d,cnn14 --batch_size 16 --batches 3]
    python tools/benchmark_training.py --data_folder ESC10 --models none --interpreters piq,lmac,l2i --batch_size 8

Every row trains the same modules (the recipe's hparams file at its default size, fresh weights) with the
same optimiser and batch size on the same real clips, in its own process (so its peak resident memory is
its own), and times ``--batches`` training batches after one warm-up batch, data loading included:

- ``speechbrain``: a plain ``speechbrain.Brain`` with SpeechBrain's ESC-50 recipe's step (features ->
  encoder -> mean pooling -> classifier, one-hot NLL of the log-softmax) and its data pipeline (each clip
  decoded and resampled when it is read), in fp32, as its recipe runs;
- ``toolkit ...``: this toolkit's ESC50Brain (recipes/ESC50/classification/train.py), first as it ran before
  the levers (fp32, no cache), then adding one lever at a time: the decoded-audio cache (timed in its steady
  state, the epochs after the first), channels-last weights, bf16 autocast (SpeechBrain's ``precision``; the
  recipes' ``precision: auto``), a fused Adam step, ``torch.compile``;
- ``floor ...``: forward + backward + optimiser step of the same modules alone, on a batch already in
  memory, in fp32 and with the levers that change the arithmetic.

Interpreters (``--interpreters``: PIQ, L-MAC, L2I, each its recipe's hparams file for the conv2d classifier
at its default size, classifier and interpreter freshly initialised) get the same rows, with the levers of
interpreter training: ``speechbrain`` runs its PIQ / L-MAC / L2I recipes' step (the frozen classifier run on
every batch, then the interpreter's loss terms, fp32) in a plain ``speechbrain.Brain`` on its data pipeline;
the toolkit rows are the recipe's Brain, first without the frozen classifier's output cache, then with it (its
steady state), then channels-last and bf16; the floor is the interpreter's step alone on frozen outputs
already in memory (L-MAC's includes the classifier passes on the masked inputs, which its loss needs).

Ratios are against the ``speechbrain`` row of the same model, measured in the same run.
"""

import argparse
import functools
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSIFICATION = REPO / "recipes" / "ESC50" / "classification"
INTERPRET = REPO / "recipes" / "ESC50" / "interpret"

# (name, kind, levers): each row adds one lever to the one above it
ROWS = [
    ("speechbrain fp32", "speechbrain", {}),
    ("toolkit fp32 (no levers)", "toolkit", {}),
    ("+ audio cache", "toolkit", {"cache": True}),
    ("+ channels-last", "toolkit", {"cache": True, "channels_last": True}),
    ("+ bf16 autocast", "toolkit", {"cache": True, "channels_last": True, "precision": "bf16"}),
    ("+ fused Adam", "toolkit", {"cache": True, "channels_last": True, "precision": "bf16", "fused": True}),
    (
        "+ torch.compile",
        "toolkit",
        {"cache": True, "channels_last": True, "precision": "bf16", "fused": True, "compile": True},
    ),
    ("floor fp32", "floor", {}),
    ("floor bf16 + channels-last + fused Adam", "floor", {"channels_last": True, "precision": "bf16", "fused": True}),
]
INTERPRETER_ROWS = [
    ("speechbrain fp32", "speechbrain", {}),
    ("toolkit fp32 (no levers)", "toolkit", {}),
    ("+ classifier-output cache", "toolkit", {"frozen_cache": True}),
    ("+ channels-last", "toolkit", {"frozen_cache": True, "channels_last": True}),
    ("+ bf16 autocast", "toolkit", {"frozen_cache": True, "channels_last": True, "precision": "bf16"}),
    ("floor fp32", "floor", {}),
    ("floor bf16 + channels-last", "floor", {"channels_last": True, "precision": "bf16"}),
]
# each interpreter: its recipe's hparams file for the conv2d classifier, and where its Brain lives
INTERPRETERS = {
    "piq": ("piq.yaml", "common.training.interpreter_brains:PIQBrain"),
    "lmac": ("lmac_conv2d.yaml", "common.training.interpreter_brains:LMACBrain"),
    "l2i": ("l2i_conv2d.yaml", "recipes/ESC50/interpret/train_l2i.py:L2IBrain"),
}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(data_folder, work, n_clips, out_n_neurons):
    """A train manifest of the first ``n_clips`` clips of folds 1-3 (the recipe's own preparation)."""
    from common.data.esc50 import prepare_esc50

    manifests = [work / "manifest" / f"{s}.json" for s in ("train", "valid", "test")]
    prepare_esc50(data_folder, *manifests, download=False)
    entries = json.loads(manifests[0].read_text())
    if len(entries) < n_clips:
        raise SystemExit(f"{data_folder} has {len(entries)} training clips; {n_clips} are needed")
    subset = work / "train_subset.json"
    subset.write_text(json.dumps(dict(list(entries.items())[:n_clips])))
    return subset


def load_recipe(model, args, work, levers):
    from common.recipe import load_hparams

    overrides = {
        "data_folder": str(args.data_folder),
        "output_folder": str(work / "run"),
        "out_n_neurons": args.out_n_neurons,
        "batch_size": args.batch_size,
        "use_pretrained": False,
    }
    if args.emb_dim:
        overrides["emb_dim"] = args.emb_dim
    hparams = load_hparams(CLASSIFICATION / "hparams" / f"{model}.yaml", overrides)
    hparams["channels_last"] = bool(levers.get("channels_last"))
    # the recipes' Adam is fused (one kernel for every parameter); SpeechBrain's and the rows before it are not
    hparams["opt_class"] = functools.partial(hparams["opt_class"], fused=bool(levers.get("fused")))
    return hparams


def run_row(args):
    """One row, in this process: prints ``RESULT {json}``."""
    levers = json.loads(args.levers)
    work = Path(args.work)
    if args.interpreter:
        step, batches = interpreter_row(args, levers, work)
    else:
        step, batches = classifier_row(args, levers, work)
    iterator = iter(batches)
    step(next(iterator))  # warm-up (and compilation)
    start = time.perf_counter()
    n = 0
    for batch in iterator:
        if n == args.batches:
            break
        step(batch)
        n += 1
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"clips_per_s": n * args.batch_size / seconds, "peak_rss_mb": peak_rss_mb()}))


def run_options(levers):
    run_opts = {"device": "cpu", "precision": levers.get("precision", "fp32"), "noprogressbar": True}
    if levers.get("compile"):
        run_opts.update(compile=True, compile_module_keys=["model"])
    return run_opts


def autocast(levers):
    """The floor's autocast context: bf16 / fp16 as the row's precision, else off."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(levers.get("precision"), None)
    return torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def brain_batches(brain, dataset, hparams, n_batches, warm=None):
    """The row's training batches: the loader itself, or (``warm``: a function of a batch that fills a cache,
    run over one whole pass first) the first ``n_batches`` + 1 of the pass after it."""
    import speechbrain as sb

    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.modules.train()
    options = {**hparams["dataloader_options"], "shuffle": False}
    loader = brain.make_dataloader(dataset, stage=sb.Stage.TRAIN, **options)
    if warm is None:
        return loader
    for batch in loader:  # the first epoch fills the cache; the rows time the epochs after it
        warm(batch)
    return list(loader)[: n_batches + 1]


def classifier_row(args, levers, work):
    """(step, batches) of a classifier row."""
    import torch

    from common.data.datasets import build_label_encoder, classification_datasets
    from common.training.classifier import build_brain

    subset = work / "train_subset.json"
    hparams = load_recipe(args.model, args, work / args.kind, levers)
    encoder = build_label_encoder([subset], args.out_n_neurons)
    hparams["label_encoder"] = encoder
    run_opts = run_options(levers)

    if args.kind == "floor":
        model = hparams["modules"]["model"]
        if levers.get("channels_last"):
            model.to(memory_format=torch.channels_last)
        optimizer = hparams["opt_class"](model.parameters())
        data = classification_datasets({"train": subset}, encoder, hparams["sample_rate"], hparams["signal_length_s"])
        clips = [data["train"][i] for i in range(args.batch_size)]
        wavs = torch.stack([c["sig"] for c in clips])
        targets = torch.cat([c["class_string_encoded"] for c in clips])
        model.train()

        def step(batch=None):
            optimizer.zero_grad()
            with autocast(levers):
                scores = model(wavs, head_scores=True)
                loss = hparams["compute_cost"](scores.unsqueeze(1), targets.unsqueeze(1))
            loss.backward()
            optimizer.step()

        return step, [None] * (args.batches + 1)
    if args.kind == "speechbrain":
        dataset = speechbrain_dataset(subset, encoder, hparams)
        brain = build_brain(speechbrain_brain_class(), hparams, run_opts)
    else:
        dataset = classification_datasets(
            {"train": subset},
            encoder,
            hparams["sample_rate"],
            hparams["signal_length_s"],
            cache_audio=bool(levers.get("cache")),
        )["train"]
        brain = build_brain(recipe_brain(), hparams, run_opts)
    warm = (lambda batch: None) if levers.get("cache") else None
    return brain.fit_batch, brain_batches(brain, dataset, hparams, args.batches, warm)


def interpreter_row(args, levers, work):
    """(step, batches) of an interpreter row: its recipe's hparams around a freshly initialised conv2d
    classifier (speed does not depend on what the weights learned)."""
    import speechbrain as sb
    import torch

    from common.data.datasets import build_label_encoder, classification_datasets
    from common.interpreters.base import FrozenOutputs
    from common.recipe import load_hparams
    from common.training.classifier import build_brain

    hparams_file, brain_path = INTERPRETERS[args.interpreter]
    subset = work / "train_subset.json"
    overrides = {
        "data_folder": str(args.data_folder),
        "output_folder": str(work / args.kind / "run"),
        "out_n_neurons": args.out_n_neurons,
        "batch_size": args.batch_size,
        "use_pretrained": False,
        "cache_classifier_outputs": bool(levers.get("frozen_cache")),
    }
    if args.emb_dim:
        overrides["emb_dim"] = args.emb_dim
    hparams = load_hparams(INTERPRET / "hparams" / hparams_file, overrides)
    hparams["channels_last"] = bool(levers.get("channels_last"))
    encoder = build_label_encoder([subset], args.out_n_neurons)
    hparams["label_encoder"] = encoder
    weights = hparams["loss_weights"]

    def weighted(terms):
        """The recipe's objective: each loss term times its ``loss_weights`` entry (one place for both loops)."""
        return sum(weights[name] * value for name, value in terms.items())

    brain_class = load_brain_class(brain_path)

    if args.kind == "floor":
        brain = build_brain(brain_class, hparams, run_options({}))
        brain.on_fit_start()  # the frozen classifier, the optimiser
        data = classification_datasets({"train": subset}, encoder, hparams["sample_rate"], hparams["signal_length_s"])
        loader = brain.make_dataloader(data["train"], stage=sb.Stage.TRAIN, batch_size=args.batch_size)
        with autocast(levers):
            frozen = brain.classifier_outputs(next(iter(loader)))  # in memory once, as the cache holds them
        interpreter = brain.modules.interpreter.train()

        def step(batch=None):
            brain.optimizer.zero_grad()
            with autocast(levers):
                terms, _ = interpreter.loss_terms(frozen)
                loss = weighted(terms)
            loss.backward()
            brain.optimizer.step()

        return step, [None] * (args.batches + 1)
    if args.kind == "speechbrain":

        class SpeechBrainInterpreterBrain(sb.Brain):
            """SpeechBrain's interpreter recipes' step: the frozen classifier on every batch, the loss terms."""

            def compute_forward(self, batch, stage):
                wavs = batch.sig[0].to(self.device)
                classifier = self.hparams.classifier
                with torch.no_grad():
                    X = classifier.features(wavs)
                    hidden, logits = classifier.hidden_and_logits(X, self.modules.interpreter.layers)
                return self.modules.interpreter.loss_terms(FrozenOutputs(wavs, X, hidden, logits))[0]

            def compute_objectives(self, terms, batch, stage):
                return weighted(terms)

        hparams["classifier"].eval().requires_grad_(False)
        dataset = speechbrain_dataset(subset, encoder, hparams)
        brain = build_brain(SpeechBrainInterpreterBrain, hparams, run_options(levers))
        return brain.fit_batch, brain_batches(brain, dataset, hparams, args.batches)
    dataset = classification_datasets({"train": subset}, encoder, hparams["sample_rate"], hparams["signal_length_s"])[
        "train"
    ]
    brain = build_brain(brain_class, hparams, run_options(levers))

    def fill(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=levers.get("precision") == "bf16"):
            brain.classifier_outputs(batch, sb.Stage.TRAIN)

    warm = fill if levers.get("frozen_cache") else None
    return brain.fit_batch, brain_batches(brain, dataset, hparams, args.batches, warm)


def load_brain_class(path):
    """``module:Class`` or ``file.py:Class`` (a recipe script, relative to the repository)."""
    where, name = path.split(":")
    if where.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(where).stem, REPO / where)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def recipe_brain():
    return load_brain_class("recipes/ESC50/classification/train.py:ESC50Brain")


def speechbrain_dataset(manifest, encoder, hparams):
    """SpeechBrain's ESC-50 recipe's data pipeline: each clip decoded, averaged to mono, resampled and peak
    normalised when read (its dataio_prep), padded to the batch by its collate function. Each clip is also cut
    or padded to ``signal_length_s``, as the toolkit's rows read it, so that both loops see the same samples
    (real ESC-10 has a 7.2 s clip, which would pad its whole batch; L2I's theta pools a fixed number of frames)."""
    import speechbrain as sb
    import torch
    import torchaudio
    from speechbrain.dataio import audio_io

    rate = hparams["sample_rate"]
    resamplers = {}

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        sig, read_sr = audio_io.load(wav)
        sig = torch.squeeze(sig)
        if sig.ndim > 1:
            sig = sig.mean(dim=0)
        if read_sr != rate:
            resample = resamplers.setdefault(read_sr, torchaudio.transforms.Resample(read_sr, rate))
            sig = resample(sig)
        sig = sig.float()
        n = int(rate * hparams["signal_length_s"])
        sig = torch.nn.functional.pad(sig[:n], (0, max(0, n - len(sig))))
        return sig / sig.max()

    @sb.utils.data_pipeline.takes("class_string")
    @sb.utils.data_pipeline.provides("class_string", "class_string_encoded")
    def label_pipeline(class_string):
        yield class_string
        yield encoder.encode_label_torch(class_string)

    return sb.dataio.dataset.DynamicItemDataset.from_json(
        json_path=str(manifest),
        dynamic_items=[audio_pipeline, label_pipeline],
        output_keys=["id", "sig", "class_string_encoded"],
    )


def speechbrain_brain_class():
    import speechbrain as sb
    import torch
    import torch.nn.functional as F

    class ESC50Brain(sb.core.Brain):
        """SpeechBrain's recipes/ESC50/classification/train.py step, with the hparams' own modules."""

        def compute_forward(self, batch, stage):
            batch = batch.to(self.device)
            wavs, lens = batch.sig
            if stage == sb.Stage.TRAIN:
                wavs, lens = self.hparams.augmentation(wavs, lens)
            model = self.modules.model
            net_input = model.front_end(wavs)  # STFT -> spectral magnitude -> log1p, as its compute_forward
            embeddings = model.embedding_model(net_input)
            if isinstance(embeddings, tuple):
                embeddings, _ = embeddings
            if embeddings.ndim == 4:
                embeddings = embeddings.mean((-1, -2))
            outputs = model.classifier(embeddings)
            return outputs.unsqueeze(1) if outputs.ndim == 2 else outputs

        def compute_objectives(self, predictions, batch, stage):
            classid, _ = batch.class_string_encoded
            n_augments = predictions.shape[0] // classid.shape[0]
            classid = torch.cat(n_augments * [classid], dim=0)
            target = F.one_hot(classid.squeeze(-1), num_classes=self.hparams.out_n_neurons)
            loss = -(F.log_softmax(predictions.squeeze(1), 1) * target).sum(1).mean()
            if stage != sb.Stage.TEST and hasattr(self.hparams.lr_annealing, "on_batch_end"):
                self.hparams.lr_annealing.on_batch_end(self.optimizer)
            return loss

    return ESC50Brain


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_folder", required=True, type=Path, help="an ESC-50-layout folder (e.g. real ESC-10)")
    ap.add_argument("--models", default="conv2d,cnn14", help="classification hparams files, or none")
    ap.add_argument("--interpreters", default="", help=f"any of {','.join(INTERPRETERS)} (trained on conv2d)")
    ap.add_argument("--batch_size", type=int, default=16, help="the recipes' default")
    ap.add_argument("--batches", type=int, default=3, help="timed batches per row, after one warm-up batch")
    ap.add_argument("--out_n_neurons", type=int, default=10)
    ap.add_argument("--emb_dim", type=int, help="replace the hparams' emb_dim (tests; the table is at the default)")
    ap.add_argument("--rows", default="all", help="comma-separated row names (default: all)")
    ap.add_argument("--output", type=Path, help="also write the table (markdown) here")
    # one row, in a child process
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--levers", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--interpreter", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.row:
        return run_row(args)

    from common.reports.tables import markdown_table

    def chosen(rows):
        return rows if args.rows == "all" else [r for r in rows if r[0] in args.rows.split(",")]

    jobs = [(m, None, chosen(ROWS)) for m in args.models.split(",") if m and m != "none"]
    jobs += [(f"{i} (conv2d)", i, chosen(INTERPRETER_ROWS)) for i in args.interpreters.split(",") if i]
    unknown = [i for _, i, _ in jobs if i and i not in INTERPRETERS]
    if unknown:
        raise SystemExit(f"unknown interpreter(s) {unknown}: choose among {', '.join(INTERPRETERS)}")
    table = []
    with tempfile.TemporaryDirectory(prefix="benchmark_training-") as tmp:
        work = Path(tmp)
        prepare(args.data_folder, work, (args.batches + 1) * args.batch_size, args.out_n_neurons)
        for model, interpreter, rows in jobs:
            baseline = None
            for name, kind, levers in rows:
                cmd = [sys.executable, __file__, "--row", name, "--kind", kind, "--levers", json.dumps(levers)]
                cmd += ["--interpreter", interpreter] if interpreter else ["--model", model]
                cmd += ["--work", str(work), "--data_folder", str(args.data_folder)]
                cmd += ["--batch_size", str(args.batch_size), "--batches", str(args.batches)]
                cmd += ["--out_n_neurons", str(args.out_n_neurons)]
                cmd += ["--emb_dim", str(args.emb_dim)] if args.emb_dim else []
                started = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not lines:
                    raise SystemExit(f"row {name!r} of {model} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
                result = json.loads(lines[-1][len("RESULT ") :])
                if kind == "speechbrain":
                    baseline = result["clips_per_s"]
                row = {
                    "model": model,
                    "row": name,
                    "clips/s": round(result["clips_per_s"], 2),
                    "x speechbrain": round(result["clips_per_s"] / baseline, 2) if baseline else "",
                    "peak RSS (MB)": round(result["peak_rss_mb"]),
                    "row wall (s)": round(time.perf_counter() - started, 1),
                }
                table.append(row)
                print(json.dumps(row), flush=True)
    text = markdown_table(table)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
