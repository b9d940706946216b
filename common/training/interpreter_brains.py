"""The trained interpreters' recipe Brains (PIQ, L-MAC), shared by every recipe folder that trains them.

Each holds its method's step on the evaluation Brain of ``common/training/interpreter.py``: its
``compute_forward`` is the interpreter's ``loss_terms`` on the frozen classifier's outputs, its
``compute_objectives`` the terms weighted by ``hparams.loss_weights``. The scripts (recipes/ESC50/interpret,
recipes/BirdNET/explain) import them, so one step trains the method on every classifier.
"""

from pathlib import Path

from common.errors import CheckpointError, ToolkitError
from common.models.pretrained import load_recipe_checkpoint
from common.training.interpreter import InterpreterBrain


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
