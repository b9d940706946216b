#!/usr/bin/env python3
"""Evaluate activation-map thresholding (AMT) of a FocalNet or ViT ESC-50 classifier.

    python interpret_amt.py hparams/amt_focalnet.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR

AMT reads the backbone's own map (FocalNet's modulator, ViT's CLS attention) and keeps
its top ``top_fraction`` bins (``common/interpreters/amt.py``). Nothing is trained, so
there is no step of its own: the evaluation Brain (``InterpreterBrain``: the explanation
of the classifier's decision, scored with the shared suite) is AMT's Brain.
"""

import sys

from common.training.interpreter import InterpreterBrain, run_interpreter_recipe

if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], brain_class=InterpreterBrain)
