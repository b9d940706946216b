#!/usr/bin/env python3
"""Learn the NMF dictionary L2I explains with (K components of log-magnitude spectra).

    python train_nmf.py hparams/nmf.yaml --data_folder DIR
    python train_nmf.py hparams/nmf.yaml --data_folder DIR --test_only

Amortized NMF, as in SpeechBrain's recipe: a convolutional encoder predicts
the activations H >= 0 of each clip, the decoder holds the dictionary
W >= 0 (513 x K), and both minimise ||log1p|X| - W H||^2. The best
checkpoint's ``nmf_decoder.ckpt`` is what ``train_l2i.py --nmf_source``
loads. W starts from classical NMF of training frames (scikit-learn), which
amortized training alone would need tens of thousands of steps to reach. Test outputs: test_results.json (MSE, relative error, activation
sparsity) and nmf.png (a test clip, its reconstruction, the dictionary).
"""

import logging
import sys
from pathlib import Path

import speechbrain as sb
import torch

from common.data.datasets import build_label_encoder, classification_datasets
from common.data.esc50 import prepare_esc50_from_hparams
from common.io import atomic_write_json
from common.models.nmf import fit_nmf_dictionary, sample_frames
from common.recipe import setup_experiment
from common.reports.figures import save_image_panels
from common.training.classifier import CpuDistributedMixin, EvaluateBestCheckpointMixin, build_brain, fit_and_evaluate

logger = logging.getLogger(__name__)


class NMFBrain(EvaluateBestCheckpointMixin, CpuDistributedMixin, sb.Brain):
    def compute_forward(self, batch, stage):
        wavs = batch.sig[0].to(self.device)
        front_end = self.hparams.front_end
        with torch.no_grad():
            target = front_end.log_linear_magnitude(front_end.stft(wavs)).transpose(1, 2)  # (B, F, T)
        H = self.modules.nmf_encoder(target)
        return {"target": target, "H": H, "reconstruction": self.modules.nmf_decoder(H)}

    def compute_objectives(self, out, batch, stage):
        target, reconstruction = out["target"], out["reconstruction"]
        loss = torch.nn.functional.mse_loss(reconstruction, target)
        if stage != sb.Stage.TRAIN:
            with torch.no_grad():
                error = (reconstruction - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1).clamp(min=1e-8)
                self.relative_errors.append(error.cpu())
                self.zero_fraction.append((out["H"] <= 1e-6).float().flatten(1).mean(dim=1).cpu())
                if self.example is None:
                    self.example = (target[0].cpu(), reconstruction[0].cpu(), batch.id[0])
        return loss

    def on_stage_start(self, stage, epoch=None):
        self.relative_errors, self.zero_fraction, self.example = [], [], None

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": float(stage_loss)}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["relative_error"] = float(torch.cat(self.relative_errors).mean())
        stats["activation_zero_fraction"] = float(torch.cat(self.zero_fraction).mean())
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats({"epoch": epoch}, train_stats=self.train_stats, valid_stats=stats)
            self.checkpointer.save_and_keep_only(meta={**stats, "epoch": int(epoch)}, min_keys=["loss"])
            return
        self.hparams.train_logger.log_stats({"checkpoint": self.evaluated_checkpoint.path.name}, test_stats=stats)
        out = Path(self.hparams.output_folder)
        W = self.modules.nmf_decoder.return_W().detach().cpu()  # (F, K)
        W = W[:, W.argmax(dim=0).argsort()]  # components ordered by their peak frequency
        X, Xhat, clip = self.example
        save_image_panels(
            [("log1p |X|", X.T), ("W H", Xhat.T), (f"dictionary W (K={W.shape[1]})", W.T)],
            out / "nmf.png",
            title=f"{clip}: relative error {stats['relative_error']:.3f}",
            xlabel="frame | frame | component",
        )
        n_clips = len(torch.cat(self.relative_errors))
        atomic_write_json(
            out / "test_results.json",
            {**stats, "n_clips": n_clips, "K": int(W.shape[1]), "checkpoint": self.evaluated_checkpoint.path.name},
        )


@torch.no_grad()
def initialise_dictionary(hparams, train_set):
    """W from classical NMF on a sample of training frames (the encoder then learns H for it)."""
    front_end, generator = hparams["front_end"], torch.Generator().manual_seed(hparams["seed"])
    specs = []
    with train_set.output_keys_as(["sig"]):
        for item in train_set:
            specs.append(front_end.log_linear_magnitude(front_end.stft(item["sig"][None]))[0])
    frames = sample_frames(specs, hparams["init_frames_per_clip"], generator)
    W = fit_nmf_dictionary(frames, hparams["K"], hparams["init_max_iter"], hparams["seed"])
    hparams["nmf_decoder"].W.data.copy_(W)
    logger.info("Initialised W (%s) by NMF of %d training frames", tuple(W.shape), len(frames))


def main(argv):
    hparams, run_opts, _, _ = setup_experiment(argv)
    prepare_esc50_from_hparams(hparams)
    manifests = {s: hparams[f"{s}_annotation"] for s in ("train", "valid", "test")}
    encoder = build_label_encoder(
        list(manifests.values()), hparams["out_n_neurons"], f"{hparams['save_folder']}/label_encoder.txt"
    )
    datasets = classification_datasets(manifests, encoder, hparams["sample_rate"], hparams["signal_length_s"])
    if not hparams["test_only"] and hparams["init_with_nmf"] and hparams["checkpointer"].find_checkpoint() is None:
        initialise_dictionary(hparams, datasets["train"])
    fit_and_evaluate(build_brain(NMFBrain, hparams, run_opts), hparams, datasets, min_key="loss")


if __name__ == "__main__":
    main(sys.argv[1:])
