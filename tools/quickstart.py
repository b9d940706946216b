#!/usr/bin/env python3
"""The main job on its embedded default, in one command and a few CPU minutes.

    python tools/quickstart.py [--output_folder results/quickstart]

1. writes a small synthetic ESC-50-layout set with ground truth, by default of
   the ``quiet_evidence`` design (the class event 10-20 dB below crowded
   distractors, so a loudness detector cannot find it; ``--design``),
2. trains the ESC50/classification log-mel CNN recipe on it briefly (with
   silenced patches, strokes and loudest bins, so that removing evidence with
   the front end's silence is in-distribution), and evaluates the best
   checkpoint on the held-out fold,
3. trains the featured interpreter of that classifier, L-MAC (ESC50/interpret),
   to convergence, and PIQ (which the leaderboard compares), and evaluates them
   with the shared suite, localization against the known events included,
4. prints the accuracy, the interpretation metric tables and where the
   listenable interpretations (wav) and figures (png) are,
5. ends with the leaderboard of that classifier on the held-out clips (L-MAC, PIQ,
   a few post-hoc methods and the two model-independent controls, every mean
   with its bootstrap 95 % interval, the classifier's evidence check and the
   sanity check; tools/leaderboard.py) and its static HTML report, and prints
   where the report is (open it from disk: an audio player per clip and method).
Everything goes under --output_folder.

L-MAC is featured because its objective is the classifier's own decision (the masked-in clip keeps it, the
masked-out clip loses it); PIQ's reconstruction target is the clip's energy mask (X > mask_th * max X), so on
a design whose evidence is not the loudest thing its masks follow the loud distractors however long it
trains (README: "Set up, run, test").
"""

import argparse
import json
from pathlib import Path

from common.analysis.leaderboard import check_config, run
from common.data.synthetic.scenes import make_synthetic_esc50
from common.recipe import run_recipe

CLASSIFICATION = "recipes/ESC50/classification"
INTERPRET = "recipes/ESC50/interpret"
# the classifier's training-only augmentation (common/models/augment.py), as in tools/leaderboard/quiet_evidence.yaml
ROBUST_TO_REMOVAL = {"silence_patches": 6, "silence_loudest": 0.15, "silence_strokes": 6}
# validation every epoch scores only what costs no classifier pass (the checkpoint is chosen by the loss)
CHEAP_VALIDATION = "[localization_auc, pointing_game]"


def architecture(args):
    return {"out_n_neurons": args.n_classes, "signal_length_s": args.duration_s}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output_folder", default="results/quickstart")
    ap.add_argument("--design", default="quiet_evidence", help="a scene design (make_synthetic_dataset.py --help)")
    ap.add_argument("--n_classes", type=int, default=4)
    ap.add_argument("--clips_per_class", type=int, default=50)
    ap.add_argument("--duration_s", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lmac_epochs", type=int, default=60, help="the featured interpreter's epochs (0: none)")
    ap.add_argument("--piq_epochs", type=int, default=10, help="0: no PIQ (its masks plateau by about epoch 9)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--leaderboard_clips", type=int, default=40, help="held-out clips of the leaderboard (0: none)")
    args = ap.parse_args(argv)
    out = Path(args.output_folder).resolve()
    data = out / "data"
    if not (data / "meta" / "esc50.csv").is_file():
        make_synthetic_esc50(
            data,
            design=args.design,
            n_classes=args.n_classes,
            clips_per_class=args.clips_per_class,
            duration_s=args.duration_s,
            seed=args.seed,
        )
        print(f"synthetic data set: {data}")
    classifier_dir = out / "classifier"
    # the recipes' own output is shown as it comes and kept beside their results (recipe.log)
    run_recipe(
        f"{CLASSIFICATION}/train.py",
        f"{CLASSIFICATION}/hparams/logmel_cnn.yaml",
        {
            "data_folder": data,
            "output_folder": classifier_dir,
            "use_pretrained": 0,
            **architecture(args),
            **ROBUST_TO_REMOVAL,
            "batch_size": 8,
            "number_of_epochs": args.epochs,
            "lr_half_cycle_epochs": 3,
            "lr": 0.002,
        },
        classifier_dir / "recipe.log",
        echo=True,
    )
    trained = {}  # name -> output folder of each trained interpreter
    for name, script, epochs in (("lmac", "train_lmac.py", args.lmac_epochs), ("piq", "train_piq.py", args.piq_epochs)):
        if epochs <= 0:
            continue
        trained[name] = out / name
        run_recipe(
            f"{INTERPRET}/{script}",
            f"{INTERPRET}/hparams/{name}_logmel_cnn.yaml",
            {
                "data_folder": data,
                "classifier_source": classifier_dir / "save",
                "output_folder": trained[name],
                **architecture(args),
                "batch_size": 8,
                "number_of_epochs": epochs,
                "lr": 0.001,
                "valid_metrics": CHEAP_VALIDATION,
            },
            trained[name] / "recipe.log",
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
    for name, folder in trained.items():
        print()
        print(f"{LABELS[name]} interpretation metrics on the held-out fold:")
        print((folder / "test_metrics_summary.md").read_text())
        print(f"  per-clip scores:  {folder / 'test_metrics_per_clip.csv'}")
        print(
            f"  listen and look:  {folder / 'interpretations'}/<clip>/original.wav, interpretation.wav, explanation.png"
        )
    if args.leaderboard_clips > 0:
        index = run_leaderboard(out, data, classifier_dir, trained, args)
        print()
        print(f"HTML report (listen to every method's explanation): {index}")
        print(f"  open it with:     file://{index}")
    return result


LABELS = {"lmac": "L-MAC", "piq": "PIQ"}


def run_leaderboard(out, data, classifier_dir, trained, args):
    """The leaderboard of the quickstart's classifier on its held-out clips, and its HTML report (path returned);
    ``trained``: the output folder of each trained interpreter, by name."""
    methods = [
        {
            "name": name,
            "label": LABELS[name],
            "recipe": f"{INTERPRET}/train_{name}.py",
            "hparams": f"{INTERPRET}/hparams/{name}_logmel_cnn.yaml",
            "checkpoint": str(folder),
        }
        for name, folder in trained.items()
    ]
    methods += [
        {"name": "saliency"},
        {"name": "integrated_gradients", "kwargs": {"n_steps": 16, "batch_size": 16}},
        {"name": "gradcam"},
        {"name": "input_magnitude", "label": "input magnitude (control)"},
        {"name": "random", "label": "random (control)"},
    ]
    config = {
        "title": f"Quickstart leaderboard: the log-mel CNN on {args.design} scenes (known evidence)",
        "output_folder": str(out / "leaderboard"),
        "data": {"folder": str(data), "test_folds": [5], "n_clips": args.leaderboard_clips},
        "classifiers": {
            "cnn": {
                "label": "log-mel CNN",
                "hparams": "recipes/ESC50/classification/hparams/logmel_cnn.yaml",
                "checkpoint": str(classifier_dir / "save"),
                "architecture": architecture(args),
            }
        },
        "methods": methods,
        "n_report_clips": 3,
        "sanity": {"threshold": 0.5, "n_clips": 8},
        # ground-truth metrics where the explained (predicted) class is the true one, as the scene leaderboards
        "localization_clips": "correct",
    }
    check_config(config, "quickstart leaderboard")
    run(config)
    return out / "leaderboard" / "report" / "index.html"


if __name__ == "__main__":
    main()
