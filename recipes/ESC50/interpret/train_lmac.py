#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an L-MAC interpreter of an ESC-50 classifier.

    python train_lmac.py hparams/lmac_cnn14.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
L-MAC FT: add --finetuning True --pretrained_interpreter LMAC_SAVE_DIR --train_contamination mixture
"""

import sys
from pathlib import Path

from common.errors import CheckpointError, ToolkitError
from common.models.pretrained import load_recipe_checkpoint
from common.training.interpreter import run_interpreter_recipe


def load_pretrained_decoder(hparams, context=None):
    """L-MAC FT starts from a trained L-MAC decoder; plain L-MAC starts from scratch."""
    if not hparams["finetuning"]:
        return
    if not hparams["pretrained_interpreter"]:
        raise CheckpointError(
            "L-MAC fine-tuning starts from a trained L-MAC: pass --pretrained_interpreter with its save folder "
            "(or a folder holding decoder.ckpt)."
        )
    if not hparams["train_contamination"]:
        raise ToolkitError(
            "L-MAC fine-tuning trains on contaminated inputs: pass --train_contamination mixture "
            "(or white_noise / noise_folder with --train_snr_db and --noise_folder)."
        )
    load_recipe_checkpoint(
        {"decoder": hparams["decoder"]},
        hparams["pretrained_interpreter"],
        Path(hparams["save_folder"]) / "pretrained_interpreter",
        "L-MAC interpreter",
        "recipes/ESC50/interpret/train_lmac.py",
        "--pretrained_interpreter",
        key="loss",
        maximize=False,
    )


if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], load_extra=load_pretrained_decoder)
