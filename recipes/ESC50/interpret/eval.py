#!/usr/bin/env python3
"""Evaluate a trained interpreter (or AMT) on contaminated inputs, one table row per condition.

    python eval.py hparams/lmac_cnn14.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR \\
        --output_folder TRAINED_RUN --conditions clean,mixture,white_noise --snrs 0,10 [--noise_folder WHAM_tt]

Conditions: clean (in-distribution), mixture (0.8 * clip + 0.2 * a clip of
another class; --mix_weights), white_noise and noise_folder (a local folder of
noise or speech clips, e.g. WHAM!) at each of --snrs dB. The interpreter is
the one trained in TRAINED_RUN (its best checkpoint), run by its recipe's Brain
(as SpeechBrain's eval.py imports train_lmac's and train_l2i's; PIQ's and L-MAC's live in
common/training/interpreter_brains.py); the table is written to
TRAINED_RUN/contamination_summary.md and each condition's outputs under
TRAINED_RUN/contamination/.
"""

import argparse
import sys

from train_l2i import L2IBrain

from common.data.contamination import parse_conditions
from common.training.classifier import build_brain
from common.training.interpreter import InterpreterBrain, evaluate_contaminated, prepare_interpreter_run
from common.training.interpreter_brains import LMACBrain, PIQBrain

# The recipe Brain of each registered interpreter; others (AMT) have nothing of their own to run.
BRAINS = {"piq": PIQBrain, "l2i": L2IBrain, "lmac": LMACBrain}


def floats(text):
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--conditions", default="clean,mixture,white_noise")
    parser.add_argument("--snrs", type=floats, default=[0.0, 10.0])
    parser.add_argument("--mix_weights", type=floats, default=[0.8, 0.2])
    parser.add_argument("--noise_folder", default=None)
    args, rest = parser.parse_known_args(argv)
    kinds = [k.strip() for k in args.conditions.split(",") if k.strip()]
    conditions = parse_conditions(kinds, args.snrs, args.mix_weights)
    hparams, run_opts, datasets = prepare_interpreter_run(rest)
    brain_class = BRAINS.get(type(hparams["interpreter"]).registry_name, InterpreterBrain)
    brain = build_brain(brain_class, hparams, run_opts)
    return evaluate_contaminated(brain, hparams, datasets, conditions, args.noise_folder)


if __name__ == "__main__":
    main(sys.argv[1:])
