#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) a PIQ interpreter of an ESC-50 classifier.

    python train_piq.py hparams/piq.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
    python train_piq.py hparams/piq.yaml --data_folder DIR --classifier_source ... --test_only

PIQ (Paissan et al., 2023): psi adapts the frozen classifier's hidden map, quantizes
it with the codebook of the predicted class and decodes a mask from it
(``common/interpreters/piq.py``). The shared part (data, the frozen classifier and its
cache, checkpoints, the evaluation suite and tables) is ``common/training/interpreter.py``.
"""

import sys

from common.training.interpreter import InterpreterBrain, run_interpreter_recipe


class PIQBrain(InterpreterBrain):
    """PIQ's training step, as SpeechBrain's train_piq.py (``use_vq`` and ``use_mask_output`` on)."""

    def compute_forward(self, batch, stage):
        frozen = self.classifier_outputs(batch, stage)  # X, hidden map and logits of the frozen classifier
        # psi(hidden map, predicted class) -> mask logits on X's grid, the adapted map h_e and its codes z_q
        terms, explanation = self.modules.interpreter.loss_terms(frozen)
        return {"frozen": frozen, "terms": terms, "explanation": explanation}

    def compute_objectives(self, out, batch, stage):
        """rec: BCE of the mask against X > mask_th * max(X) (the bins that carry the clip's energy);
        vq: the codebook vectors towards h_e; commit: h_e towards its codes (the VQ-VAE terms).
        SpeechBrain's weights: rec_loss_coef (1) x rec + vq + commit."""
        terms, w = out["terms"], self.hparams.loss_weights
        loss = w["rec"] * terms["rec"] + w["vq"] * terms["vq"] + w["commit"] * terms["commit"]
        self.record(out, batch, stage)
        return loss


if __name__ == "__main__":
    run_interpreter_recipe(sys.argv[1:], brain_class=PIQBrain)
