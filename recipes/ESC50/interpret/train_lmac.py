#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an L-MAC interpreter of an ESC-50 classifier.

    python train_lmac.py hparams/lmac_cnn14.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
L-MAC FT: add --finetuning True --pretrained_interpreter LMAC_SAVE_DIR --train_contamination mixture

L-MAC (Paissan et al., 2024): a decoder reads the frozen classifier's hidden maps and
outputs a mask in [0, 1] such that the masked-in spectrogram keeps the classifier's
decision and the masked-out one loses it (``common/interpreters/lmac.py``). The shared
part (data, the frozen classifier, contaminated training batches, checkpoints, the
evaluation suite) is ``common/training/interpreter.py``; the training step, LMACBrain,
is ``common/training/interpreter_brains.py`` (recipes/BirdNET/explain trains it too).
"""

import sys

from common.training.interpreter import run_interpreter_recipe
from common.training.interpreter_brains import LMACBrain, load_pretrained_decoder

if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], brain_class=LMACBrain, load_extra=load_pretrained_decoder)
