#!/usr/bin/env python3
"""The whole BirdSet/protopnet pipeline on synthetic soundscapes whose events are known.

    python tools/birdset_synthetic.py [--output_folder results/birdset_synthetic] [--debug]
    python tools/birdset_synthetic.py --data_only --output_folder DIR   # only the data set, in DIR/data
    python tools/birdset_synthetic.py --prototype_stage 3 --prototype_channels 96 ...   # other options: to
                                                                   # the AudioProtoPNet steps' hparams

Writes a BirdSet-schema data set of synthetic bird species (focal training
recordings; soundscape test sets with their true events), trains the stage-1
ConvNeXt and AudioProtoPNet on it with the recipe scripts, evaluates both on
the test sets, runs the global and local analyses, and prints the cmAP /
AUROC / T1-Acc table (with the chance level of a constant score) and how much
of each labelled species' most activated prototype's box lies on its true
events (against a random box of the same size). Every step is a recipe
command line, printed as it starts, so any step can be rerun alone.
"""

import json
from pathlib import Path

from common.analysis.prototypes import localization_line
from common.reports.tables import markdown_table
from common.training.birdset_synthetic import chance_level, head_options, parser, run, stage_one


def main(argv=None):
    args, protopnet_options = parser(__doc__.splitlines()[0]).parse_known_args(argv)
    common, convnext = stage_one(args)
    if convnext is None:
        return
    out = Path(args.output_folder).resolve()
    app = out / "audioprotopnet"
    app_args = [
        *common,
        "--output_folder",
        app,
        "--prototypes_per_class",
        args.prototypes_per_class,
        *head_options(args),
        *protopnet_options,
    ]
    run("train_audioprotopnet.py", "audioprotopnet.yaml", *app_args, "--convnext_source", convnext / "save",
        "--number_of_epochs", args.protopnet_epochs)  # fmt: skip
    run("global_analysis.py", "audioprotopnet.yaml", *app_args, "--top_k_clips", 3)
    run("local_analysis.py", "audioprotopnet.yaml", *app_args)  # figures for 20 clips, localization on all

    data = out / "data"
    rows = [{"model": "chance (random scores)", "test set": t, **chance_level(data, t)} for t in ("POW", "PER")]
    for name, folder in (("ConvNeXt", convnext), ("AudioProtoPNet", app)):
        for test in ("POW", "PER"):
            result = json.loads((folder / "test_results" / f"{test}.json").read_text())
            rows.append({"model": name, "test set": test, **{k: result[k] for k in ("cmAP", "AUROC", "T1-Acc")}})
    print(markdown_table(rows))
    for test in ("POW", "PER"):
        loc = app / "analysis" / "local" / test / "localization.json"
        if loc.is_file():
            print(f"{test}: {localization_line(json.loads(loc.read_text())['summary'])}")


if __name__ == "__main__":
    main()
