#!/usr/bin/env python3
"""LRP explanations of a trained genre classifier, scored with the shared evaluation suite (nothing is trained).

    python explain_lrp.py hparams/lrp_cnn.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR

Writes test_metrics_summary.md / test_metrics_per_clip.csv and, for the first
segments, interpretations/<segment>/ (spectrogram | mask figure, original and
interpretation audio). LRP has no step of its own: its Brain is the evaluation
Brain (``InterpreterBrain``); the rules are in common/interpreters/lrp.py.
"""

import sys

from common.training.interpreter import InterpreterBrain, run_interpreter_recipe

if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], brain_class=InterpreterBrain)
