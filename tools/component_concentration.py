#!/usr/bin/env python3
"""How much of LIME's and Kernel SHAP's weight lies on the true component, at the resolution of their components.

    python tools/component_concentration.py --data_folder SYN_GTZAN --classifier_source CLASSIFIER_SAVE \
        --manifest LIME_RUN/manifest/test.json [--per_genre 2 --n_samples 1000]

On a synthetic GTZAN set (``tools/make_synthetic_gtzan.py``: each genre's
discriminative source is known), for the first ``--per_genre`` test segments
of each genre, LIME and Kernel SHAP explain the genre over the time x mel
grid of ``recipes/GTZAN/lime_shap/hparams/lime.yaml``. Bin-level metrics
(relevance mass accuracy, pointing game) judge a grid cell by the bins of the
component inside it, which a 13-frame x 16-band cell cannot isolate; here,
per segment, the cells the true component touches are found, and the table
gives the share of the positive component weight on those cells against the
share of cells they are (a uniform explanation's score), and how often the
top-weighted cell is one of them.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from common.data.synthetic.ground_truth import load_ground_truth
from common.interpreters.components import component_options_for
from common.interpreters.lime_shap import KernelShapInterpreter, LimeInterpreter
from common.models.pretrained import load_classifier
from common.recipe import REPO, load_hparams
from common.reports.tables import markdown_table

HPARAMS = REPO / "recipes" / "GTZAN" / "lime_shap" / "hparams" / "lime.yaml"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_folder", required=True)
    ap.add_argument("--classifier_source", required=True)
    ap.add_argument("--manifest", required=True, help="a segment manifest (an explain run's manifest/test.json)")
    ap.add_argument("--per_genre", type=int, default=2)
    ap.add_argument("--n_samples", type=int, default=1000)
    ap.add_argument("--work_folder", default="results/component_concentration")
    args = ap.parse_args(argv)

    hparams = load_hparams(HPARAMS, {"data_folder": args.data_folder, "output_folder": args.work_folder})
    classifier = hparams["classifier"]
    load_classifier(classifier, args.classifier_source, Path(args.work_folder) / "classifier")
    classifier.eval()
    labels = CategoricalEncoder()  # the recipe's label encoder, as common.data.datasets saves it
    labels.load(str(Path(args.classifier_source) / "label_encoder.txt"))
    by_genre = {}
    for item in json.loads(Path(args.manifest).read_text()).values():
        by_genre.setdefault(item["class_string"], []).append(item)
    chosen = [item for genre in sorted(by_genre) for item in by_genre[genre][: args.per_genre]]

    options = {
        "components": hparams["components"],
        "component_options": component_options_for(hparams["component_options"], hparams["components"]),
        "baseline": hparams["baseline"],
        "n_samples": args.n_samples,
        "batch_size": hparams["lime_batch_size"],
        "top_k": hparams["top_k"],
        "seed": 0,
    }
    methods = {
        "LIME": LimeInterpreter(classifier, kernel_width=hparams["kernel_width"], **options),
        "Kernel SHAP": KernelShapInterpreter(classifier, **options),
    }
    scores = {name: {"share": [], "chance": [], "top": []} for name in methods}
    for item in chosen:
        wav, rate = sf.read(item["wav"], dtype="float32")
        start = int(round(float(item["start_s"]) * rate))
        segment = torch.from_numpy(wav[start : start + int(round(float(item["duration_s"]) * rate))])[None]
        with torch.no_grad():
            X = classifier.features(segment)
        truth = load_ground_truth(
            args.data_folder, item["clip_id"], classifier.front_end, X.shape[1:], start_s=float(item["start_s"])
        )
        own = truth.mask.bool()  # where the genre's discriminative component(s) sound
        if not own.any():
            continue
        target = torch.tensor([labels.encode_label(item["class_string"])])
        for name, interpreter in methods.items():
            explanation = interpreter.explain(X=X, target=target)
            cells = explanation.extras["components"][0].numpy()
            weights = explanation.extras["component_weights"][0].detach().numpy()
            touched = np.unique(cells[own.numpy()])
            positive = np.clip(weights, 0, None)
            scores[name]["share"].append(positive[touched].sum() / max(positive.sum(), 1e-12))
            scores[name]["chance"].append(len(touched) / len(weights))
            scores[name]["top"].append(float(int(np.argmax(weights)) in set(touched.tolist())))
    n = len(scores["LIME"]["share"])
    print(f"{n} test segments ({args.per_genre} per genre), {options['components']}, {args.n_samples} samples")
    rows = [
        {
            "method": name,
            "positive weight on the true component's cells": float(np.mean(s["share"])),
            "those cells' share (uniform explanation)": float(np.mean(s["chance"])),
            "top cell on the true component": float(np.mean(s["top"])),
        }
        for name, s in scores.items()
    ]
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
