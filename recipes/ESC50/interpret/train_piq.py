#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) a PIQ interpreter of an ESC-50 classifier.

python train_piq.py hparams/piq.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
"""

import sys

from common.training.interpreter import run_interpreter_recipe

if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:])
