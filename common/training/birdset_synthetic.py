"""The BirdSet/protopnet pipeline on synthetic soundscapes, the part its tools share (tools/birdset_synthetic.py,
tools/prototype_levers.py): the options, the data set (written once, stamped with its options), the z-scoring
statistics and the stage-1 ConvNeXt, each step a recipe command line run from the repository's root."""

import argparse
import json
from pathlib import Path

from common.data.birdset import BirdSetEvents, class_names, load_birdset_split, write_birdset_fixture
from common.features import MelDbSpectrogram
from common.io import atomic_write_json
from common.recipe import run_recipe

RECIPE = Path("recipes/BirdSet/protopnet")

# A small ConvNeXt (the paper's is ConvNeXt-base) so a CPU trains it in minutes; the front-end is the paper's.
SMALL = ["--hidden_sizes", "[24,48,96,192]", "--embedding_channels", "192", "--depths", "[1,1,2,1]", "--n_mels", "256"]
TINY = ["--hidden_sizes", "[8,16,24,32]", "--embedding_channels", "32", "--depths", "[1,1,1,1]", "--n_mels", "64"]
# The prototype head on stage 3 (audioprotopnet.yaml's default) of those backbones: that stage's width, and one
# frequency weight per row of its x2-upsampled map (2 x n_mels / 16)
SMALL_HEAD = ["--prototype_channels", "96", "--frequency_height", "32"]
TINY_HEAD = ["--prototype_channels", "24", "--frequency_height", "8"]


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


def parser(description):
    """The pipeline's options (a tool adds its own)."""
    ap = argparse.ArgumentParser(description=description)
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
    return ap


def stage_one(args):
    """The data set (written once, stamped with its options) and the trained stage-1 ConvNeXt: returns the
    options every recipe step shares and the ConvNeXt's folder (None with ``--data_only``)."""
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
        return None, None
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
    return common, convnext


def head_options(args):
    """The AudioProtoPNet steps' options for the head that fits the backbone (see SMALL_HEAD)."""
    return TINY_HEAD if args.debug else SMALL_HEAD
