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

import argparse
import json
from pathlib import Path

from common.analysis.prototypes import localization_line
from common.data.birdset import BirdSetEvents, class_names, load_birdset_split, write_birdset_fixture
from common.features import MelDbSpectrogram
from common.io import atomic_write_json
from common.recipe import run_recipe
from common.reports.tables import markdown_table

RECIPE = Path("recipes/BirdSet/protopnet")

# A small ConvNeXt (the paper's is ConvNeXt-base) so a CPU trains it in minutes; the front-end is the paper's.
SMALL = ["--hidden_sizes", "[24,48,96,192]", "--embedding_channels", "192", "--depths", "[1,1,2,1]", "--n_mels", "256"]
TINY = ["--hidden_sizes", "[8,16,24,32]", "--embedding_channels", "32", "--depths", "[1,1,1,1]", "--n_mels", "64"]


def run(script, hparams, *args):
    """One step of the pipeline: a BirdSet/protopnet recipe script, its output shown as it comes."""
    run_recipe(RECIPE / script, RECIPE / "hparams" / hparams, list(args), echo=True)


def chance_level(data_folder, test):
    """Expected scores of random rankings: cmAP = mean class prevalence, AUROC 0.5, T1-Acc = mean labels per
    labelled segment / classes."""
    split = load_birdset_split(data_folder, test, "test_5s")
    labels = split["ebird_code_multilabel"]
    n_classes = len(class_names(split))
    counts = [sum(c in row for row in labels) for c in range(n_classes)]
    labelled = [row for row in labels if row]
    return {
        "cmAP": sum(n / len(labels) for n in counts if n) / sum(1 for n in counts if n),
        "AUROC": 0.5,
        "T1-Acc": sum(len(row) for row in labelled) / len(labelled) / n_classes,
    }


def training_db_statistics(data_folder, n_mels):
    """The synthetic set's own dB mean / std (its level is not XCL's), over one fixed crop of each training recording."""
    split = load_birdset_split(data_folder, "XCM", "train")
    # one crop centred on each recording's first event, not a random one: the statistics (and so every number
    # downstream) must not depend on an unseeded draw in this process
    crops = BirdSetEvents(
        split, len(class_names(split)), "XCM-train", sample_rate=32000, length_s=5, data_folder=data_folder,
        random_crop=False,
    )  # fmt: skip
    front_end = MelDbSpectrogram(n_mels=n_mels)
    return front_end.db_statistics(crops[i]["sig"] for i in range(len(crops)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output_folder", default="results/birdset_synthetic")
    ap.add_argument("--n_species", type=int, default=6)
    ap.add_argument("--recordings_per_species", type=int, default=48)
    ap.add_argument("--convnext_epochs", type=int, default=30)
    ap.add_argument("--convnext_lr", type=float, default=0.002, help="from scratch, a small model learns faster")
    ap.add_argument("--protopnet_epochs", type=int, default=30)
    ap.add_argument(
        "--soundscapes_per_test", type=int, default=8, help="40 s soundscapes per test set (8 segments each)"
    )
    ap.add_argument("--prototypes_per_class", type=int, default=5)
    ap.add_argument(
        "--seed", type=int, default=42, help="seeds the data set, the models' initialisation, crops and batch order"
    )
    ap.add_argument("--debug", action="store_true", help="tiny data and models, 1 epoch each: checks the wiring")
    ap.add_argument(
        "--data_only", action="store_true", help="write the data set (OUTPUT_FOLDER/data, a --data_folder) and stop"
    )
    args, protopnet_options = ap.parse_known_args(argv)
    out = Path(args.output_folder).resolve()
    if args.debug:
        args.n_species, args.recordings_per_species, args.convnext_epochs, args.protopnet_epochs = 3, 3, 1, 1
    data = out / "data"
    stamp = data / "generator.json"
    generator = {"seed": args.seed, "n_species": args.n_species, "recordings_per_species": args.recordings_per_species,
                 "soundscapes_per_test": args.soundscapes_per_test, "debug": args.debug}  # fmt: skip
    if (data / "XCM" / "dataset_dict.json").is_file():
        if stamp.is_file() and json.loads(stamp.read_text()) != generator:
            raise SystemExit(
                f"{data} was written with {stamp.read_text()}, not {generator}: use another --output_folder "
                "(or delete that data folder) so that the numbers belong to the options given."
            )
    else:
        write_birdset_fixture(
            data,
            n_species=args.n_species,
            recordings_per_species=args.recordings_per_species,
            soundscape_s=20.0 if args.debug else 40.0,
            soundscapes_per_test=1 if args.debug else args.soundscapes_per_test,
            seed=args.seed,
        )
        atomic_write_json(stamp, generator)
    if args.data_only:
        print(
            f"BirdSet-schema data set (XCM, POW, PER) in {data}; the recipes take it with --data_folder {data} "
            f"--out_n_neurons {args.n_species} --test_configs [POW,PER]"
        )
        return
    common = [
        "--data_folder",
        data,
        "--out_n_neurons",
        args.n_species,
        "--test_configs",
        "[POW,PER]",
        "--seed",
        args.seed,
    ]
    model_args = TINY if args.debug else SMALL
    mean, std = training_db_statistics(data, int(model_args[model_args.index("--n_mels") + 1]))
    print(f"training set spectrogram statistics: mean {mean:.3f} dB, std {std:.3f} dB (XCL's: -13.369 / 13.162)")
    common += ["--batch_size", 8, *model_args, "--norm_mean", f"{mean:.4f}", "--norm_std", f"{std:.4f}"]
    convnext = out / "convnext"
    run("train_convnext.py", "convnext.yaml", *common, "--output_folder", convnext, "--use_pretrained", "False",
        "--number_of_epochs", args.convnext_epochs, "--lr", args.convnext_lr)  # fmt: skip
    app = out / "audioprotopnet"
    app_args = [
        *common,
        "--output_folder",
        app,
        "--prototypes_per_class",
        args.prototypes_per_class,
        *protopnet_options,
    ]
    run("train_audioprotopnet.py", "audioprotopnet.yaml", *app_args, "--convnext_source", convnext / "save",
        "--number_of_epochs", args.protopnet_epochs)  # fmt: skip
    run("global_analysis.py", "audioprotopnet.yaml", *app_args, "--top_k_clips", 3)
    run("local_analysis.py", "audioprotopnet.yaml", *app_args)  # figures for 20 clips, localization on all

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
