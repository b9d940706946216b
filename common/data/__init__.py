"""Data layer: preparation (download, verify, manifests), loading, synthetic scenes."""

import importlib

from common.errors import DataError

# hparams ``dataset`` -> the preparation that writes its train/valid/test manifests
PREPARERS = {
    "esc50": "common.data.esc50:prepare_esc50_from_hparams",
    "gtzan": "common.data.gtzan:prepare_gtzan_from_hparams",
    "audiomnist": "common.data.audiomnist:prepare_audiomnist_from_hparams",
    "physionet2016": "common.data.physionet2016:prepare_physionet2016_from_hparams",
    "music_emotion": "common.data.midlevel:prepare_music_emotion_from_hparams",
}


def prepare_from_hparams(hparams):
    """Prepare the data set named by ``hparams["dataset"]`` (a key of PREPARERS) with the recipe's keys."""
    name = hparams.get("dataset", "esc50")
    if name not in PREPARERS:
        raise DataError(f"Unknown dataset {name!r} in the hparams: set --dataset to one of {sorted(PREPARERS)}.")
    module, function = PREPARERS[name].split(":")
    return getattr(importlib.import_module(module), function)(hparams)
