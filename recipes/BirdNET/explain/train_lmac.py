#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an L-MAC interpreter of BirdNET V2.4 on the real-call scenes.

    python train_lmac.py hparams/lmac_birdnet.yaml --data_folder SCENES [--test_only]

SCENES: prepare_scenes.py's output. The recipe is ESC-50's (recipes/ESC50/interpret/train_lmac.py): the same
Brain (``common/training/interpreter_brains.py``) and wiring (``common/training/interpreter.py``) on a
classifier whose hparams bring its weights (``classifier_weights: builtin``). The test stage writes
test_results.json, the tables and, per example clip, original.wav, interpretation.wav and a figure.
"""

import sys

from common.training.interpreter import run_interpreter_recipe
from common.training.interpreter_brains import LMACBrain, load_pretrained_decoder

if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], brain_class=LMACBrain, load_extra=load_pretrained_decoder)
