#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) a heart-sound classifier on fixed windows of PhysioNet/CinC 2016
recordings, with or without the heart-cycle segmentation as an extra input (Dissanayake et al. 2020).

    python train.py hparams/cnn.yaml --data_folder /path/to/challenge-2016
    python train.py hparams/cnn_segmented.yaml --data_folder DIR
    python train.py hparams/cnn.yaml --data_folder DIR --test_only

Offline: ``python tools/make_heart_sounds.py DIR`` writes synthetic heart sounds in the challenge's layout.
Each window has its recording's label; validation and test accuracy are per recording (the mean of its
windows' probabilities) and per window (``common/training/segments.py``). The save folder has
ESC50/classification's layout, so explain_phases.py loads it with ``--classifier_source``.
"""

import sys

from common.data import prepare_from_hparams
from common.data.datasets import build_label_encoder, classification_datasets
from common.data.physionet2016 import add_states
from common.models.heart import given_states, states_on_frames
from common.recipe import setup_experiment
from common.training.classifier import BEST_KEY, build_brain, fit_and_evaluate
from common.training.segments import SegmentClassifierBrain


class HeartSoundBrain(SegmentClassifierBrain):
    """One window is one example, of its recording's label; the segmentation-given model also reads its states."""

    def compute_forward(self, batch, stage):
        wavs, _ = self.augmented_wavs(batch, stage)
        if not self.hparams.use_segmentation:
            return self.modules.model(wavs, head_scores=True)
        model = self.modules.model
        states, _ = batch.states_sig
        front_end = model.front_end
        with given_states(model, states_on_frames(states, front_end.hop, front_end.n_frames(wavs.shape[-1]))):
            return model(wavs, head_scores=True)

    def compute_objectives(self, predictions, batch, stage):
        """The hparams' compute_cost (the NLL of the scores' log-softmax) to each window's label."""
        targets = self.class_targets(batch, predictions)
        loss = self.hparams.compute_cost(predictions.unsqueeze(1), targets.unsqueeze(1))
        self.record(predictions, targets, batch, stage)
        return loss


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    prepare_from_hparams(hparams)
    manifests = {s: hparams[f"{s}_annotation"] for s in ("train", "valid", "test")}
    label_encoder = build_label_encoder(
        list(manifests.values()), hparams["out_n_neurons"], f"{hparams['save_folder']}/label_encoder.txt"
    )
    hparams["label_encoder"] = label_encoder
    datasets = classification_datasets(
        manifests,
        label_encoder,
        hparams["sample_rate"],
        hparams["signal_length_s"],
        segment_s=hparams["segment_s"],
        segment_hop_s=hparams["segment_hop_s"],
        cache_audio=hparams.get("cache_audio", False),
    )
    if hparams["use_segmentation"]:
        add_states(datasets, hparams["sample_rate"], hparams["signal_length_s"])
    brain = build_brain(HeartSoundBrain, hparams, run_opts)
    fit_and_evaluate(brain, hparams, datasets, max_key=BEST_KEY)


if __name__ == "__main__":
    main(sys.argv[1:])
