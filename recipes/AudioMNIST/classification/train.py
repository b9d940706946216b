#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an AudioMNIST classifier: AudioNet on the waveform or AlexNet on the
spectrogram (Becker et al. 2018), for the digit or the speaker's gender, on speaker-disjoint splits.

    python train.py hparams/audionet.yaml --data_folder /path/to/AudioMNIST --task digit
    python train.py hparams/alexnet.yaml --data_folder DIR --task gender --split_index 1
    python train.py hparams/audionet.yaml --data_folder DIR --test_only

The training step is ESC50/classification's (waveforms -> (augmentation) -> front end -> encoder -> head,
scored by the hparams' cost); the shared part is ``common/training/classifier.py``. The save folder has
ESC50/classification's layout, so explanation scripts load it with ``--classifier_source``.
"""

import sys

from common.data import prepare_from_hparams
from common.data.datasets import build_label_encoder, classification_datasets
from common.recipe import setup_experiment
from common.training.classifier import BEST_KEY, ClassifierBrain, build_brain, fit_and_evaluate


class AudioMNISTBrain(ClassifierBrain):
    """One recording is one example, of its digit (or its speaker's gender)."""

    def compute_forward(self, batch, stage):
        wavs, _ = self.augmented_wavs(batch, stage)  # the random placement in its second, on training batches
        return self.modules.model(wavs, head_scores=True)

    def compute_objectives(self, predictions, batch, stage):
        """The hparams' compute_cost (the NLL of the scores' log-softmax) to each recording's class."""
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
        cache_audio=hparams.get("cache_audio", False),
    )
    brain = build_brain(AudioMNISTBrain, hparams, run_opts)
    fit_and_evaluate(brain, hparams, datasets, max_key=BEST_KEY)


if __name__ == "__main__":
    main(sys.argv[1:])
