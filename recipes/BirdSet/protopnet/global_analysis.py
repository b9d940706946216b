#!/usr/bin/env python3
"""Global explanation of a trained AudioProtoPNet: each prototype's most similar training clips.

    python global_analysis.py hparams/audioprotopnet.yaml --data_folder DIR [--top_k_clips 5]

Writes <analysis_folder>/global/prototype_<id>_<species>/ with, per matched
clip, a png (spectrogram, similarity heatmap, box of the most activated
region), the clip's wav and the boxed region's wav, and prototype.json; plus
global_analysis.json, which local_analysis.py reads.
"""

import sys
from pathlib import Path

from common.analysis.prototypes import global_analysis
from common.data.birdset import birdset_datasets
from common.models.protopnet import recover_best_audioprotopnet
from common.recipe import setup_experiment


def main(argv=None):
    hparams, _, _, _ = setup_experiment(argv)
    data = birdset_datasets({**hparams, "test_configs": [], "valid_split": None})
    model = recover_best_audioprotopnet(hparams)
    data["train"].random_crop = False  # the same crop every time: around each recording's first event
    index = global_analysis(
        model,
        data["train"],
        Path(hparams["analysis_folder"]) / "global",
        data["class_names"],
        top_k=hparams["top_k_clips"],
        max_prototypes=hparams["max_prototypes"],
        max_clips=hparams["analysis_clips"],
        percentile=hparams["box_percentile"],
        box_rule=hparams["box_rule"],
        box_map=hparams["box_map"],
        relevance_steps=hparams["relevance_steps"],
    )
    print(f"{len(index['prototypes'])} prototypes analysed in {Path(hparams['analysis_folder']) / 'global'}")


if __name__ == "__main__":
    main(sys.argv[1:])
