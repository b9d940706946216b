#!/usr/bin/env python3
"""Evaluate activation-map thresholding (AMT) of a FocalNet or ViT ESC-50 classifier.

Nothing is trained: the test set is explained and scored with the shared suite.

python interpret_amt.py hparams/amt_focalnet.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
"""

import sys

from common.training.interpreter import run_interpreter_recipe

if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:])
