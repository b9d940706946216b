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
   listenable interpretations (wav) and figures (png) are.
Everything goes under --output_folder.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common.data.synthetic import make_synthetic_esc50

REPO = Path(__file__).resolve().parents[1]
CLASSIFICATION = REPO / "recipes" / "ESC50" / "classification"
INTERPRET = REPO / "recipes" / "ESC50" / "interpret"


def run_recipe(script, hparams, args, cwd):
    cmd = [sys.executable, str(script), str(hparams), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output_folder", default="results/quickstart")
    ap.add_argument("--n_classes", type=int, default=5)
    ap.add_argument("--clips_per_class", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--piq_epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.output_folder).resolve()
    data = out / "data"
    if not (data / "meta" / "esc50.csv").is_file():
        make_synthetic_esc50(data, n_classes=args.n_classes, clips_per_class=args.clips_per_class, seed=args.seed)
        print(f"synthetic data set: {data}")
    classifier_dir = out / "classifier"
    run_recipe(
        CLASSIFICATION / "train.py",
        CLASSIFICATION / "hparams" / "conv2d.yaml",
        [
            "--data_folder",
            str(data),
            "--output_folder",
            str(classifier_dir),
            "--use_pretrained",
            "0",
            "--out_n_neurons",
            str(args.n_classes),
            "--emb_dim",
            "32",
            "--batch_size",
            "8",
            "--number_of_epochs",
            str(args.epochs),
            "--lr_half_cycle_epochs",
            "2",
            "--lr",
            "0.002",
        ],
        cwd=REPO,
    )
    piq_dir = out / "piq"
    if args.piq_epochs > 0:
        run_recipe(
            INTERPRET / "train_piq.py",
            INTERPRET / "hparams" / "piq.yaml",
            [
                "--data_folder",
                str(data),
                "--classifier_source",
                str(classifier_dir / "save"),
                "--output_folder",
                str(piq_dir),
                "--out_n_neurons",
                str(args.n_classes),
                "--emb_dim",
                "32",
                "--batch_size",
                "8",
                "--number_of_epochs",
                str(args.piq_epochs),
                "--lr",
                "0.001",
            ],
            cwd=REPO,
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
    return result


if __name__ == "__main__":
    main()
