#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) a PIQ interpreter of an ESC-50 classifier.

    python train_piq.py hparams/piq.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
    python train_piq.py hparams/piq.yaml --data_folder DIR --classifier_source ... --test_only

PIQ (Paissan et al., 2023): psi adapts the frozen classifier's hidden map, quantizes
it with the codebook of the predicted class and decodes a mask from it
(``common/interpreters/piq.py``). The shared part (data, the frozen classifier and its
cache, checkpoints, the evaluation suite and tables) is ``common/training/interpreter.py``;
the training step, PIQBrain, is ``common/training/interpreter_brains.py`` (recipes/BirdNET/explain
trains it too).
"""

import sys

from common.training.interpreter import run_interpreter_recipe
from common.training.interpreter_brains import PIQBrain

if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], brain_class=PIQBrain)
