#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an L2I interpreter of an ESC-50 classifier.

    python train_nmf.py hparams/nmf.yaml --data_folder DIR
    python train_l2i.py hparams/l2i_conv2d.yaml --data_folder DIR \\
        --classifier_source CLASSIFIER_SAVE_DIR --nmf_source NMF_SAVE_DIR
"""

import sys
from pathlib import Path

from common.interpreter_brain import run_interpreter_recipe
from common.models.pretrained import load_nmf_dictionary


def load_dictionary(hparams):
    """The NMF dictionary W that L2I explains with (fixed during training)."""
    source = hparams["pretrained_nmf"] if hparams["use_pretrained"] else hparams["nmf_source"]
    load_nmf_dictionary(hparams["nmf_decoder"], source, Path(hparams["save_folder"]) / "nmf")


if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], load_extra=load_dictionary)
