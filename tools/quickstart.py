#!/usr/bin/env python3
"""The main job on its embedded default, in one command and a few CPU minutes.

    python tools/quickstart.py [--output_folder results/quickstart]

1. writes a small synthetic ESC-50-layout set with ground truth,
2. trains the ESC50/classification conv2d recipe on it briefly (a small
   encoder), and evaluates the best checkpoint on the held-out fold,
3. trains a PIQ interpreter of that classifier briefly (ESC50/interpret) and
   evaluates it with the shared suite, localization against the known events
   included,
4. prints the accuracy, the interpretation metric table and where the
   listenable interpretations (wav) and figures (png) are,
5. ends with the leaderboard of that classifier on the held-out clips (PIQ,
   a few post-hoc methods and a model-independent control, with the sanity
   check; tools/leaderboard.py) and its static HTML report, and prints where
   the report is (open it from disk: an audio player per clip and method).
Everything goes under --output_folder.
"""

import argparse
import json
from pathlib import Path

from common.analysis.leaderboard import check_config, run
from common.data.synthetic.scenes import make_synthetic_esc50
from common.recipe import run_recipe

CLASSIFICATION = "recipes/ESC50/classification"
INTERPRET = "recipes/ESC50/interpret"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output_folder", default="results/quickstart")
    ap.add_argument("--n_classes", type=int, default=5)
    ap.add_argument("--clips_per_class", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--piq_epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--leaderboard_clips", type=int, default=20, help="held-out clips of the leaderboard (0: none)")
    args = ap.parse_args(argv)
    out = Path(args.output_folder).resolve()
    data = out / "data"
    if not (data / "meta" / "esc50.csv").is_file():
        make_synthetic_esc50(data, n_classes=args.n_classes, clips_per_class=args.clips_per_class, seed=args.seed)
        print(f"synthetic data set: {data}")
    classifier_dir = out / "classifier"
    # the recipes' own output is shown as it comes and kept beside their results (recipe.log)
    run_recipe(
        f"{CLASSIFICATION}/train.py",
        f"{CLASSIFICATION}/hparams/conv2d.yaml",
        {
            "data_folder": data,
            "output_folder": classifier_dir,
            "use_pretrained": 0,
            "out_n_neurons": args.n_classes,
            "emb_dim": 32,
            "batch_size": 8,
            "number_of_epochs": args.epochs,
            "lr_half_cycle_epochs": 2,
            "lr": 0.002,
        },
        classifier_dir / "recipe.log",
        echo=True,
    )
    piq_dir = out / "piq"
    if args.piq_epochs > 0:
        run_recipe(
            f"{INTERPRET}/train_piq.py",
            f"{INTERPRET}/hparams/piq.yaml",
            {
                "data_folder": data,
                "classifier_source": classifier_dir / "save",
                "output_folder": piq_dir,
                "out_n_neurons": args.n_classes,
                "emb_dim": 32,
                "batch_size": 8,
                "number_of_epochs": args.piq_epochs,
                "lr": 0.001,
            },
            piq_dir / "recipe.log",
            echo=True,
        )
    result = json.loads((classifier_dir / "test_results.json").read_text())
    chance = 1.0 / args.n_classes
    print()
    print(f"Classifier test accuracy: {result['acc']:.3f} on {result['n_clips']} held-out clips (chance {chance:.3f})")
    print(f"  train log:        {classifier_dir / 'train_log.txt'}")
    print(f"  per-class table:  {classifier_dir / 'per_class_accuracy.md'}")
    print(f"  confusion matrix: {classifier_dir / 'confusion_matrix.png'}")
    print(f"  checkpoints:      {classifier_dir / 'save'}")
    if args.piq_epochs > 0:
        print()
        print("PIQ interpretation metrics on the held-out fold:")
        print((piq_dir / "test_metrics_summary.md").read_text())
        print(f"  per-clip scores:  {piq_dir / 'test_metrics_per_clip.csv'}")
        print(
            f"  listen and look:  {piq_dir / 'interpretations'}/<clip>/original.wav, interpretation.wav, explanation.png"
        )
    if args.leaderboard_clips > 0:
        index = run_leaderboard(out, data, classifier_dir, piq_dir if args.piq_epochs > 0 else None, args)
        print()
        print(f"HTML report (listen to every method's explanation): {index}")
        print(f"  open it with:     file://{index}")
    return result


def run_leaderboard(out, data, classifier_dir, piq_dir, args):
    """The leaderboard of the quickstart's classifier on its held-out clips, and its HTML report (path returned)."""
    methods = []
    if piq_dir is not None:
        methods.append(
            {
                "name": "piq",
                "label": "PIQ",
                "recipe": "recipes/ESC50/interpret/train_piq.py",
                "hparams": "recipes/ESC50/interpret/hparams/piq.yaml",
                "checkpoint": str(piq_dir),
            }
        )
    methods += [
        {"name": "saliency"},
        {"name": "integrated_gradients", "kwargs": {"n_steps": 16, "batch_size": 16}},
        {"name": "gradcam"},
        {"name": "input_magnitude", "label": "input magnitude (control)"},
    ]
    config = {
        "title": "Quickstart leaderboard: the conv2d classifier on synthetic scenes with known events",
        "output_folder": str(out / "leaderboard"),
        "data": {"folder": str(data), "test_folds": [5], "n_clips": args.leaderboard_clips},
        "classifiers": {
            "conv2d": {
                "label": "conv2d",
                "hparams": "recipes/ESC50/classification/hparams/conv2d.yaml",
                "checkpoint": str(classifier_dir / "save"),
                "architecture": {"out_n_neurons": args.n_classes, "emb_dim": 32},
            }
        },
        "methods": methods,
        "n_report_clips": 3,
        "sanity": {"threshold": 0.5, "n_clips": 8},
    }
    check_config(config, "quickstart leaderboard")
    run(config)
    return out / "leaderboard" / "report" / "index.html"


if __name__ == "__main__":
    main()
