#!/usr/bin/env python3
"""Local explanation of a trained AudioProtoPNet's decisions on test clips.

    python local_analysis.py hparams/audioprotopnet.yaml --data_folder DIR [--local_clips 20]

Per test set and clip, <analysis_folder>/local/<test set>/clip<n>/ holds the
similarity maps (png with the box) of the most activated prototypes and of the
top classes' prototypes, the matched training examples of the global analysis
(run global_analysis.py first to have them), the wav of each matched region,
and explanation.json (logits, probabilities, similarities, last-layer weights).
Where the data set gives the true events (synthetic soundscapes), every test clip's
localization is measured: localization.md (how much of each labelled species' most
activated prototype's box and similarity mass lies on its true events, whether its
maximum does, against a random box of the same size and the input-magnitude
control) and per_prototype.md (the same per prototype).
"""

import json
import sys
from pathlib import Path

from common.analysis.prototypes import local_analysis, localization_line
from common.data.birdset import birdset_datasets, local_config_dir
from common.data.synthetic.ground_truth import read_soundscape_events
from common.models.protopnet import recover_best_audioprotopnet
from common.recipe import setup_experiment


def main(argv=None):
    hparams, _, _, _ = setup_experiment(argv)
    data = birdset_datasets({**hparams, "valid_split": None})
    model = recover_best_audioprotopnet(hparams)
    analysis = Path(hparams["analysis_folder"])
    index_file = analysis / "global" / "global_analysis.json"
    global_index = json.loads(index_file.read_text(encoding="utf-8")) if index_file.is_file() else None
    for name, dataset in data["tests"].items():
        truth = read_soundscape_events(
            local_config_dir(hparams["data_folder"], name) / f"ground_truth_{hparams['test_split']}.json"
        )
        summary = local_analysis(
            model,
            dataset,
            analysis / "local" / name,
            data["class_names"],
            class_indices=data["test_classes"][name],
            global_index=global_index,
            global_dir=analysis / "global",
            n_clips=hparams["local_clips"],
            top_prototypes=hparams["local_top_prototypes"],
            top_classes=hparams["local_top_classes"],
            percentile=hparams["box_percentile"],
            box_rule=hparams["box_rule"],
            box_map=hparams["box_map"],
            relevance_steps=hparams["relevance_steps"],
            ground_truth=truth,
        )
        if summary:
            print(f"{name}: {localization_line(summary)}")
    print(f"Local explanations in {analysis / 'local'}")


if __name__ == "__main__":
    main(sys.argv[1:])
