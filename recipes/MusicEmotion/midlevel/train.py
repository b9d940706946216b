#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) music-emotion regression through the mid-level bottleneck, or the
black box beside it (Chowdhury, Vall, Haunschmid & Widmer, ISMIR 2019).

    python train.py hparams/joint.yaml --midlevel_folder MID --soundtracks_folder ST
    python train.py hparams/separate.yaml --midlevel_folder MID --soundtracks_folder ST
    python train.py hparams/blackbox.yaml --soundtracks_folder ST
    python train.py hparams/joint.yaml --midlevel_folder MID --soundtracks_folder ST --test_only

Offline: ``python tools/make_midlevel_music.py DIR`` writes DIR/midlevel and DIR/soundtracks. ``mode``:
``joint`` (mid-level and emotion losses through the whole network), ``separate`` (the emotion layer learns
from the mid-level predictions with their gradient stopped, so the network is the mid-level predictor alone:
the paper's two-stage training in one pass), ``blackbox`` (the same network straight to the emotions, trained
on the emotion clips only). Validation's mean correlation over the emotions selects the checkpoint; the test
writes each emotion's and each feature's Pearson correlation (test_results.json, test_correlations.md).
"""

import sys

import numpy as np
import speechbrain as sb
import torch

from common.data import prepare_from_hparams
from common.data.midlevel import EMOTIONS, MIDLEVEL_FEATURES, emotion_datasets, read_targets
from common.io import atomic_write_json
from common.metrics.regression import correlation_table
from common.models.midlevel import masked_mse
from common.recipe import setup_experiment
from common.reports.tables import write_table
from common.training.classifier import ClassifierBrain, build_brain, fit_and_evaluate

BEST_KEY = "emotion_r"


class MidLevelBrain(ClassifierBrain):
    """ClassifierBrain's loop (checkpoints, warm-up + cosine schedule per batch, the best checkpoint tested),
    with regression targets: the step, the statistics and the test outputs are its own."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, _ = batch.sig
        model = self.modules.model
        return model.forward_standardised(model.features(wavs), detach_mid=self.hparams.mode == "separate")

    def compute_objectives(self, predictions, batch, stage):
        """mid_loss_weight x MSE of the standardised mid-level ratings (where rated) + emotion_loss_weight x
        that of the emotions (where rated)."""
        model = self.modules.model
        mid, _ = batch.mid
        emotion, _ = batch.emotion
        loss = self.hparams.emotion_loss_weight * masked_mse(
            predictions["emotion"], model.standardise("emotion", emotion)
        )
        if predictions["mid"] is not None:
            loss = loss + self.hparams.mid_loss_weight * masked_mse(predictions["mid"], model.standardise("mid", mid))
        if stage != sb.Stage.TRAIN:
            self.outputs["emotion"].append(model.to_ratings("emotion", predictions["emotion"]).detach().cpu())
            self.outputs["emotion_true"].append(emotion.cpu())
            if predictions["mid"] is not None:
                self.outputs["mid"].append(model.to_ratings("mid", predictions["mid"]).detach().cpu())
                self.outputs["mid_true"].append(mid.cpu())
        return loss

    def on_stage_start(self, stage, epoch=None):
        self.outputs = {"emotion": [], "emotion_true": [], "mid": [], "mid_true": []}

    def stage_correlations(self):
        """({emotion: r}, {feature: r}) over the stage's clips that are rated."""
        out = {k: torch.cat(v).numpy() if v else None for k, v in self.outputs.items()}
        emotion = correlation_table(out["emotion"], out["emotion_true"], EMOTIONS)
        mid = correlation_table(out["mid"], out["mid_true"], MIDLEVEL_FEATURES) if out["mid"] is not None else {}
        return emotion, mid

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": float(stage_loss)}
            return
        emotion, mid = self.stage_correlations()
        stats = {
            "loss": float(stage_loss),
            BEST_KEY: float(np.nanmean([r for r in emotion.values()])),
            "mid_r": float(np.nanmean(list(mid.values()))) if mid else float("nan"),
        }
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={**stats, "epoch": int(epoch)}, max_keys=[BEST_KEY])
            return
        ckpt = getattr(self, "evaluated_checkpoint", None)
        self.hparams.train_logger.log_stats(
            stats_meta={"checkpoint": ckpt.path.name if ckpt else None}, test_stats=stats
        )
        result = {
            **stats,
            "mode": self.hparams.mode,
            "emotion_r_each": emotion,
            "mid_r_each": mid,
            "n_emotion_clips": int(sum((~torch.isnan(t[:, 0])).sum() for t in self.outputs["emotion_true"])),
            "checkpoint": ckpt.path.name if ckpt else None,
        }
        out = self.hparams.output_folder
        atomic_write_json(f"{out}/test_results.json", result)
        rows = [{"target": name, "kind": "emotion", "pearson_r": round(r, 3)} for name, r in emotion.items()]
        rows += [{"target": name, "kind": "mid-level", "pearson_r": round(r, 3)} for name, r in mid.items()]
        write_table(rows, f"{out}/test_correlations")


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    prepare_from_hparams(hparams)
    manifests = {s: hparams[f"{s}_annotation"] for s in ("train", "valid", "test")}
    datasets = emotion_datasets(manifests, hparams["sample_rate"], hparams["signal_length_s"])
    if hparams["mode"] == "blackbox":  # no mid-level layer: a clip without emotion ratings teaches it nothing
        datasets["train"] = datasets["train"].filtered_sorted(key_test={"emotion": lambda e: not torch.isnan(e).all()})
    _, mid, emotion = read_targets(manifests["train"])
    hparams["model"].set_target_scaling(mid, emotion)  # the checkpoint holds them too; a resumed run recovers them
    brain = build_brain(MidLevelBrain, hparams, run_opts)
    fit_and_evaluate(brain, hparams, datasets, max_key=BEST_KEY)


if __name__ == "__main__":
    main(sys.argv[1:])
