#!/usr/bin/env python3
"""Localization of every ESC50/interpret method on synthetic scenes with known events, in one table.

    python tools/compare_on_synthetic.py [--output_folder results/compare_synthetic]

Writes a synthetic ESC-50-layout set (ground-truth event masks per clip),
trains small conv2d, FocalNet and ViT classifiers on it with the
classification recipe, then runs the interpret recipes on them: PIQ and
L-MAC (conv2d), AMT and PIQ (FocalNet, ViT). Prints, per method, the
classifier's test accuracy, the localization scores (relevance mass
accuracy, pointing game, localization AUC, SI-SNR of the listenable
interpretation against the event alone) and the faithfulness summary, with
the all-ones and random masks as baselines. Every run is a recipe command
line, printed as it starts, so any row can be rerun alone.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from common.data.synthetic.scenes import load_ground_truth, make_synthetic_esc50
from common.interpreters.base import Explanation
from common.metrics import LOCALIZATION_METRICS, EvaluationSuite
from common.reports.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
CLASSIFICATION = REPO / "recipes" / "ESC50" / "classification"
INTERPRET = REPO / "recipes" / "ESC50" / "interpret"

CLASSIFIERS = {
    "conv2d": ["--emb_dim", "32"],
    "focalnet": ["--focalnet_embed_dim", "16", "--focalnet_depths", "[1,1,2,1]", "--image_size", "128"],
    "vit": [
        "--vit_hidden_size",
        "64",
        "--vit_layers",
        "4",
        "--vit_heads",
        "4",
        "--vit_intermediate_size",
        "128",
        "--image_size",
        "128",
    ],
}
# (label, script, hparams, classifier, extra arguments)
METHODS = [
    ("PIQ", "train_piq.py", "piq.yaml", "conv2d", ["--K", "128", "--decoder_channels", "[32,16,8,8]"]),
    ("L-MAC", "train_lmac.py", "lmac_conv2d.yaml", "conv2d", []),
    ("AMT", "interpret_amt.py", "amt_focalnet.yaml", "focalnet", []),
    ("PIQ", "train_piq.py", "piq_focalnet.yaml", "focalnet", ["--K", "128"]),
    ("AMT", "interpret_amt.py", "amt_vit.yaml", "vit", []),
    ("PIQ", "train_piq.py", "piq_vit.yaml", "vit", ["--K", "128"]),
]
LOCALIZATION = LOCALIZATION_METRICS
FAITHFULNESS = ["fid_in", "faithfulness_mask_out", "ai", "ad"]


def run(script, hparams, args):
    cmd = [sys.executable, str(script), str(hparams), *map(str, args)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=script.parent, check=True, stdout=subprocess.DEVNULL)


def baseline_rows(data, test_ids):
    gt = torch.stack([torch.from_numpy(load_ground_truth(data, clip)["mask"]).float() for clip in test_ids])
    target = torch.zeros(len(test_ids), dtype=torch.long)
    suite = EvaluationSuite(["relevance_mass_accuracy", "pointing_game", "localization_auc"])
    rows = []
    for name, saliency in {
        "all-ones mask": torch.ones_like(gt),
        "random mask": torch.rand(gt.shape, generator=torch.Generator().manual_seed(0)),
    }.items():
        scores = suite.evaluate(None, gt, Explanation(saliency, saliency, target), ground_truth=gt)
        rows.append({"method": name, **{k: float(torch.nan_to_num(v, nan=0.5).mean()) for k, v in scores.items()}})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output_folder", default="results/compare_synthetic")
    ap.add_argument("--n_classes", type=int, default=3)
    ap.add_argument("--clips_per_class", type=int, default=10)
    ap.add_argument("--duration_s", type=float, default=2.0)
    ap.add_argument("--classifier_epochs", type=int, default=6)
    ap.add_argument("--interpreter_epochs", type=int, default=12)
    args = ap.parse_args(argv)
    out = Path(args.output_folder).resolve()
    data = out / "data"
    if not (data / "meta" / "esc50.csv").is_file():
        make_synthetic_esc50(
            data,
            n_classes=args.n_classes,
            clips_per_class=args.clips_per_class,
            duration_s=args.duration_s,
            snr_db=10.0,
            seed=7,
        )
    common = ["--data_folder", data, "--out_n_neurons", args.n_classes, "--signal_length_s", args.duration_s]
    common += ["--batch_size", 4]
    accuracy = {}
    for name, sizes in CLASSIFIERS.items():
        folder = out / f"classifier_{name}"
        if not (folder / "test_results.json").is_file():
            run(
                CLASSIFICATION / "train.py",
                CLASSIFICATION / "hparams" / f"{name}.yaml",
                [
                    *common,
                    "--output_folder",
                    folder,
                    "--use_pretrained",
                    0,
                    "--lr",
                    0.002,
                    "--number_of_epochs",
                    args.classifier_epochs,
                    "--lr_half_cycle_epochs",
                    1,
                    *sizes,
                ],
            )
        accuracy[name] = json.loads((folder / "test_results.json").read_text())["acc"]
    rows = []
    for label, script, hparams, classifier, extra in METHODS:
        folder = out / Path(hparams).stem
        if not (folder / "test_results.json").is_file():
            training = (
                [] if script == "interpret_amt.py" else ["--number_of_epochs", args.interpreter_epochs, "--lr", 0.003]
            )
            source = out / f"classifier_{classifier}" / "save"
            run(
                INTERPRET / script,
                INTERPRET / "hparams" / hparams,
                [
                    *common,
                    "--output_folder",
                    folder,
                    "--classifier_source",
                    source,
                    "--n_examples",
                    2,
                    *training,
                    *CLASSIFIERS[classifier],
                    *extra,
                ],
            )
        result = json.loads((folder / "test_results.json").read_text())
        rows.append(
            {
                "method": label,
                "classifier": f"{classifier} (acc {accuracy[classifier]:.2f})",
                **{k: result.get(k, float("nan")) for k in LOCALIZATION + FAITHFULNESS},
            }
        )
    with open(out / "classifier_conv2d" / "manifest" / "test.json") as f:
        test_ids = sorted(json.load(f))
    rows += [{**row, "classifier": "-"} for row in baseline_rows(data, test_ids)]
    table = markdown_table(rows, ["method", "classifier", *LOCALIZATION, *FAITHFULNESS])
    (out / "comparison.md").write_text(table)
    print(table)
    print(f"\nTable: {out / 'comparison.md'}")
    return rows


if __name__ == "__main__":
    main()
