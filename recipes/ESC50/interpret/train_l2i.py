#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an L2I interpreter of an ESC-50 classifier.

    python train_nmf.py hparams/nmf.yaml --data_folder DIR
    python train_l2i.py hparams/l2i_conv2d.yaml --data_folder DIR \\
        --classifier_source CLASSIFIER_SAVE_DIR --nmf_source NMF_SAVE_DIR

L2I (Paissan et al., 2023): psi predicts, from the frozen classifier's hidden
representation, the time activations H of a fixed NMF dictionary W (learned by
train_nmf.py); theta classifies from H, and the explanation is the part of W H
made of the components theta finds relevant to the class (``common/interpreters/l2i.py``).
The shared part (data, the frozen classifier, checkpoints, the evaluation suite)
is ``common/training/interpreter.py``.
"""

import sys
from pathlib import Path

from common.models.pretrained import load_nmf_dictionary, load_or_debug_fallback, recipe_command
from common.training.interpreter import InterpreterBrain, run_interpreter_recipe


class L2IBrain(InterpreterBrain):
    """L2I's training step, as SpeechBrain's train_l2i.py: psi and theta learn, W and the classifier stay fixed."""

    def compute_forward(self, batch, stage):
        frozen = self.classifier_outputs(batch, stage)  # X, hidden representation and logits of the classifier
        # psi(hidden) -> H (B, K, T); W H reconstructs log1p|STFT|; theta(H) -> class probabilities
        terms, explanation = self.modules.interpreter.loss_terms(frozen)
        return {"frozen": frozen, "terms": terms, "explanation": explanation}

    def compute_objectives(self, out, batch, stage):
        """rec: MSE of W H to log1p |STFT| (alpha); sparsity: mean |H| (beta); fidelity: the cross-entropy
        of theta's probabilities to the classifier's softmax(scores / classifier_temp) (weight 1)."""
        terms, w = out["terms"], self.hparams.loss_weights
        loss = w["rec"] * terms["rec"] + w["sparsity"] * terms["sparsity"] + w["fidelity"] * terms["fidelity"]
        self.record(out, batch, stage)
        return loss


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
    run_interpreter_recipe(sys.argv[1:], brain_class=L2IBrain, load_extra=load_dictionary)
