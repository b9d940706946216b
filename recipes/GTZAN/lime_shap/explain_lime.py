#!/usr/bin/env python3
"""LIME explanations of a trained genre classifier on interpretable spectrogram components.

    python explain_lime.py hparams/lime.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR

Nothing is trained: the test set is explained and scored with the shared suite;
the first n_examples segments get wavs and figures under interpretations/.
"""

import sys

from common.training.interpreter import run_interpreter_recipe
from common.training.posthoc import PosthocInterpreterBrain

if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], brain_class=PosthocInterpreterBrain)
