#!/usr/bin/env python3
"""Which levers put AudioProtoPNet's prototypes on the calls: one table, cmAP beside localization.

    python tools/prototype_levers.py [--output_folder results/birdset_synthetic] [--seed 42] [--debug]
    python tools/prototype_levers.py --levers paper,stage3,push       # only some rows

On tools/birdset_synthetic.py's synthetic soundscapes (same options; the data
set and the stage-1 ConvNeXt are made once, or reused from that tool's output
folder), AudioProtoPNet's stage 2 is trained once per configuration in
OUTPUT_FOLDER/levers/<name>, each lever on its own and in combination, and
every test clip's localization is measured (common.analysis.prototypes): how
much of each labelled species' most activated prototype's box and similarity
mass lies on its true events and whether its maximum does, against a random
box of the same size and the input-magnitude control, and how much the
prototype's similarity drops when its box is silenced (against a random box
of that size). Box rules and maps need no training: they re-measure a trained
configuration; pruning neither: it runs
on a copy of the configuration trained without it. Writes levers.md / .csv.
"""

import json
import shutil
from pathlib import Path

from common.reports.tables import markdown_table, write_table
from common.training.birdset_synthetic import parser, run, stage_one

COSTS = ["--cluster_weight", "0.8", "--separation_weight", "0.08"]  # ProtoPNet's weights
PUSH = ["--push_prototypes", "True"]
PRUNE = ["--prune_prototypes", "True"]
BACKGROUND = ["--background_weight", "1.0"]


def levers(stage_width, n_mels):
    """name -> (what, training options, analysis options); ``stage_width(s)`` is stage s's channels."""

    def stage(s):
        return ["--prototype_stage", str(s), "--prototype_channels", str(stage_width(s))]

    def frequency(s):  # one weight per row of stage s's x2-upsampled map (the stem's stride 4, then x2 a stage)
        return ["--frequency_height", str(2 * n_mels // (4 * 2 ** (s - 1)))]

    joint = ["--freeze_backbone", "False"]  # ProtoPNet's joint phase: the backbone trains with the prototypes
    # every row starts from the paper's model, whatever audioprotopnet.yaml's defaults are
    paper = [*stage(4), "--freeze_backbone", "True", "--frequency_height", "null", "--push_prototypes", "False",
             "--prune_prototypes", "False"]  # fmt: skip
    # boxes on the upsampled similarity map (the paper's) unless a row says otherwise
    box95 = ["--box_percentile", "95", "--box_map", "similarity"]
    box99 = ["--box_percentile", "99", "--box_map", "similarity"]
    whole = ["--box_rule", "whole"]
    relevance = ["--box_map", "relevance", "--relevance_steps", "16"]  # the box on the similarity's relevance
    rows = {
        "paper": (
            "AudioProtoPNet as published: last stage, frozen backbone, no push, connected 95th-percentile box",
            [],
            box95,
        ),  # fmt: skip
        "box_whole": ("  box: the paper's whole-map 95th percentile", [], box95 + whole),
        "box_p99": ("  box: 99th percentile, connected", [], box99),
        "box_relevance": ("  box on the relevance (PRP), 95th connected", [], box95 + relevance),
        "stage3": ("prototypes on ConvNeXt stage 3", stage(3), box95),
        "stage3_p99": ("  box: 99th percentile, connected", stage(3), box99),
        "stage2": ("prototypes on ConvNeXt stage 2", stage(2), box95),
        "costs": ("cluster + separation costs (0.8 / 0.08)", COSTS, box95),
        "push": ("push onto training patches", PUSH, box95),
        "background": ("background cost (1.0)", BACKGROUND, box95),
        "stage3_all": ("stage 3 + costs + push + background", stage(3) + COSTS + PUSH + BACKGROUND, box95),
        "stage3_joint": ("stage 3 + joint training of the backbone", stage(3) + joint, box95),
        "stage3_joint_p99": ("  box: 99th percentile, connected", stage(3) + joint, box99),
        "stage3_joint_freq": ("stage 3 + joint + frequency weights", stage(3) + joint + frequency(3), box95),
        "stage3_joint_freq_p99": (
            "  box: 99th percentile, connected (the defaults, but on the similarity map)",
            stage(3) + joint + frequency(3),
            box99,
        ),  # fmt: skip
        "stage3_joint_push": ("stage 3 + joint + push", stage(3) + joint + PUSH, box95),
        "prune": ("pruning (ProtoPNet's: k 6, threshold 3)", PRUNE, box95),
        "stage3_joint_freq_p99_prune": (
            "stage 3 + joint + frequency weights + pruning, 99th connected, on the similarity map",
            stage(3) + joint + frequency(3) + PRUNE,
            box99,
        ),  # fmt: skip
        "stage3_joint_freq_p99_relevance": (
            "stage 3 + joint + frequency weights, box on the relevance (PRP), 99th connected",
            stage(3) + joint + frequency(3),
            box99 + relevance,
        ),  # fmt: skip
        "stage3_joint_freq_p99_prune_relevance": (
            "  + pruning (the defaults)",
            stage(3) + joint + frequency(3) + PRUNE,
            box99 + relevance,
        ),  # fmt: skip
    }
    return {name: (what, merge_options(paper, train), analysis) for name, (what, train, analysis) in rows.items()}


def pruned_from(train_options, trained):
    """The folder of the configuration trained with the same options but no pruning, if it was (pruning
    changes nothing before it runs, so it can run on a copy of that model instead of a new training)."""
    options = dict(zip(train_options[::2], train_options[1::2], strict=True))
    if options.get("--prune_prototypes") != "True":
        return None
    return trained.get(tuple(merge_options(train_options, ["--prune_prototypes", "False"])))


def merge_options(*option_lists):
    """``--key value`` lists merged, a later value replacing an earlier one (a key given twice is a YAML error)."""
    merged = {}
    for options in option_lists:
        for key, value in zip(options[::2], options[1::2], strict=True):
            merged[key] = value
    return [item for pair in merged.items() for item in pair]


def main(argv=None):
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--levers", default=None, help="comma-separated names of the rows to run (default: all)")
    args, extra = ap.parse_known_args(argv)
    common, convnext = stage_one(args)
    if convnext is None:
        return
    out = Path(args.output_folder).resolve() / "levers"
    sizes = json.loads(common[common.index("--hidden_sizes") + 1])
    table = levers(lambda s: sizes[s - 1], int(common[common.index("--n_mels") + 1]))
    chosen = args.levers.split(",") if args.levers else list(table)
    unknown = sorted(set(chosen) - set(table))
    if unknown:
        raise SystemExit(f"unknown levers {unknown}; known: {', '.join(table)}")
    rows, trained = [], {}
    for name in chosen:
        what, train_options, analysis_options = table[name]
        key = tuple(train_options)
        folder = trained.setdefault(key, out / name)  # a box rule re-measures the model trained without it
        unpruned = pruned_from(train_options, trained)
        if folder == out / name and unpruned is not None and not folder.exists():
            shutil.copytree(unpruned, folder, ignore=shutil.ignore_patterns("analysis", "test_results"))
        own = ["--output_folder", folder, "--prototypes_per_class", args.prototypes_per_class]
        options = merge_options(common, own, train_options, extra)
        if folder == out / name:  # trains, or (a copy of a trained model) resumes at its end: push and prune run
            run("train_audioprotopnet.py", "audioprotopnet.yaml", *options, "--convnext_source", convnext / "save",
                "--number_of_epochs", args.protopnet_epochs)  # fmt: skip
        analysis = out / name / "analysis"
        run("local_analysis.py", "audioprotopnet.yaml",
            *merge_options(options, ["--local_clips", 0, "--analysis_folder", analysis], analysis_options))  # fmt: skip
        row = {"lever": name, "what": what}
        for test in ("POW", "PER"):
            result = json.loads((folder / "test_results" / f"{test}.json").read_text())
            loc = json.loads((analysis / "local" / test / "localization.json").read_text())["summary"]
            row |= {f"{test} cmAP": result["cmAP"], f"{test} box on events": loc["box_on_events"],
                    f"{test} random box": loc["random_box_on_events"], f"{test} mass on events": loc["mass_on_events"],
                    f"{test} max on event": loc["peak_on_event"],
                    f"{test} similarity max on event": loc["similarity_peak_on_event"],
                    f"{test} input's box": loc["input_box_on_events"],
                    f"{test} input's max": loc["input_peak_on_event"],
                    f"{test} box silenced: similarity drop": loc["similarity_drop_box"],
                    f"{test} random box silenced": loc["similarity_drop_random_box"]}  # fmt: skip
        rows.append(row)
        write_table(rows, out / "levers")  # after every row: an interrupted run keeps what it measured
    print(markdown_table(rows))
    print(f"Table in {out / 'levers.md'}")


if __name__ == "__main__":
    main()
