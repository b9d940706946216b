#!/usr/bin/env python3
"""Train (or, with --test_only, evaluate) an ESC-50 classifier.

    python train.py hparams/conv2d.yaml --data_folder /path/to/ESC-50-master
    python train.py hparams/conv2d.yaml --data_folder DIR --test_only

The training step is ESC50Brain's, as in SpeechBrain's recipe: waveforms -> (augmentation) ->
features -> encoder -> head, scored by the hparams' cost. The shared part (the confusion matrix
and statistics, schedules, checkpoints, test outputs) is ``common/training/classifier.py``.
"""

import sys

from speechbrain.utils.distributed import run_on_main

from common.data.datasets import build_label_encoder, classification_datasets
from common.data.esc50 import prepare_esc50_from_hparams
from common.recipe import setup_experiment
from common.training.classifier import BEST_KEY, ClassifierBrain, build_brain, fit_and_evaluate, load_pretrained_encoder


class ESC50Brain(ClassifierBrain):
    """The classifier's training step, as SpeechBrain's ESC50Brain (its loss: the hparams' compute_cost)."""

    def compute_forward(self, batch, stage):
        wavs, _ = self.augmented_wavs(batch, stage)  # the hparams' augmentation, on training batches only
        # front-end (log-mel) -> encoder -> pooling -> head, inside the model's forward so that DDP syncs the
        # gradients; the head's own scores, unscaled (a margin loss scales a cosine head's scores itself)
        return self.modules.model(wavs, head_scores=True)

    def compute_objectives(self, predictions, batch, stage):
        """The hparams' compute_cost to the class ids (one per augmented copy): the additive angular margin loss
        on a cosine head's scores (conv2d, focalnet, vit), else the NLL of their log-softmax (cnn14, as SpeechBrain's)."""
        targets = self.class_targets(batch, predictions)
        loss = self.hparams.compute_cost(predictions.unsqueeze(1), targets.unsqueeze(1))
        self.record(predictions, targets, batch, stage)  # the stage's confusion matrix
        return loss


def main(argv=None):
    hparams, run_opts, _, overrides = setup_experiment(argv)
    prepare_esc50_from_hparams(hparams)
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

    brain = build_brain(ESC50Brain, hparams, run_opts)
    if not hparams["test_only"] and hparams["use_pretrained"] and hparams["checkpointer"].find_checkpoint() is None:
        run_on_main(load_pretrained_encoder, args=[hparams, run_opts, overrides])
    fit_and_evaluate(brain, hparams, datasets, max_key=BEST_KEY)


if __name__ == "__main__":
    main(sys.argv[1:])
