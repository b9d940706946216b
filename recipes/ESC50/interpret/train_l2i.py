#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an L2I interpreter of an ESC-50 classifier.

    python train_nmf.py hparams/nmf.yaml --data_folder DIR
    python train_l2i.py hparams/l2i_conv2d.yaml --data_folder DIR \\
        --classifier_source CLASSIFIER_SAVE_DIR --nmf_source NMF_SAVE_DIR
"""

import sys
from pathlib import Path

from common.models.pretrained import load_nmf_dictionary, load_or_debug_fallback, recipe_command
from common.training.interpreter import run_interpreter_recipe


def load_dictionary(hparams, context):
    """The NMF dictionary W that L2I explains with (fixed during training)."""
    if hparams["use_pretrained"]:
        source, files, make = hparams["pretrained_nmf"], hparams.get("pretrained_nmf_files"), None
        requested = context.requested("pretrained_nmf", "use_pretrained")
    else:
        source, files, requested = hparams["nmf_source"], None, context.requested("nmf_source")
        output = Path(source).parent if Path(source).name == "save" else source
        make = recipe_command(hparams["nmf_hparams"], "train_nmf.py", hparams["data_folder"], output)
    load_or_debug_fallback(
        lambda: load_nmf_dictionary(
            hparams["nmf_decoder"], source, Path(hparams["save_folder"]) / "nmf", files=files, make=make
        ),
        "NMF dictionary",
        debug=context.debug,
        requested=requested,
    )


if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], load_extra=load_dictionary)
