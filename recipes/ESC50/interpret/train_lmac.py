#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an L-MAC interpreter of an ESC-50 classifier.

    python train_lmac.py hparams/lmac_cnn14.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
L-MAC FT: add --finetuning True --pretrained_interpreter LMAC_SAVE_DIR --train_contamination mixture

L-MAC (Paissan et al., 2024): a decoder reads the frozen classifier's hidden maps and
outputs a mask in [0, 1] such that the masked-in spectrogram keeps the classifier's
decision and the masked-out one loses it (``common/interpreters/lmac.py``). The shared
part (data, the frozen classifier, contaminated training batches, checkpoints, the
evaluation suite) is ``common/training/interpreter.py``.
"""

import sys
from pathlib import Path

from common.errors import CheckpointError, ToolkitError
from common.models.pretrained import load_recipe_checkpoint
from common.training.interpreter import InterpreterBrain, run_interpreter_recipe


class LMACBrain(InterpreterBrain):
    """L-MAC's training step, as SpeechBrain's train_lmac.py (its weights: hparams' loss_weights)."""

    def compute_forward(self, batch, stage):
        frozen = self.classifier_outputs(batch, stage)  # X, hidden maps and logits (for FT: of a contaminated clip)
        # decoder(hidden maps) -> mask; the classifier runs again on X masked in and masked out (rest: silence)
        terms, explanation = self.modules.interpreter.loss_terms(frozen)
        return {"frozen": frozen, "terms": terms, "explanation": explanation}

    def compute_objectives(self, out, batch, stage):
        """in: CE of the masked-in input to the decision (l_in_w); out: minus that CE for the masked-out
        input (l_out_w); l1, tv: the mask's mean and total variation (reg_w_* x SpeechBrain's batch size).
        L-MAC FT adds guide: BCE of the mask to the clean part's bins, on the clips whose masked-in input
        correlates with the clean part (g_w), which then skip l1 and tv."""
        terms, w = out["terms"], self.hparams.loss_weights
        loss = w["in"] * terms["in"] + w["out"] * terms["out"]
        if "guide" in terms:  # fine-tuning on contaminated inputs
            loss = loss + w["guide"] * terms["guide"]
        loss = loss + w["l1"] * terms["l1"] + w["tv"] * terms["tv"]
        self.record(out, batch, stage)
        return loss


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
    run_interpreter_recipe(sys.argv[1:], brain_class=LMACBrain, load_extra=load_pretrained_decoder)
