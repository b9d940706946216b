#!/usr/bin/env python3
"""audioLIME: explain a trained genre classifier with LIME (or Kernel SHAP) over separated sources, so the
explanation is something to listen to ("the drums made it metal"). Nothing is trained.

    python explain_audiolime.py hparams/hpss.yaml --data_folder DIR --classifier_source RUN/save
    python explain_audiolime.py hparams/nmf.yaml ...        # NMF parts
    python explain_audiolime.py hparams/oracle.yaml ...     # the synthetic generator's stems
    python explain_audiolime.py hparams/openunmix.yaml ...  # Open-Unmix (weights download at first use)

The classifier is a run of ../lime_shap/train_classifier.py (give the options it was trained with). Each of
the first ``n_clips`` test segments is explained for its true class. Writes to the output folder:
``sources.md`` / ``.csv`` (per segment: the sources by weight, the model's probability, and on synthetic
data whether the top source is the discriminative one), ``rank1.md`` / ``.csv`` (on synthetic data: how
often the top source is the genre's discriminative source, with 95 % bootstrap intervals, beside LIME on
the time x mel grid of today and the loudest component, on the same segments), and for the first
``n_examples`` segments ``examples/<segment>/``: ``source_weights.png`` (a bar per source),
``input.wav``, ``explanation.wav`` (the top ``top_k`` sources: what the decision rests on) and
``sources/<name>.wav`` (every source, to listen to one by one).
"""

import json
import sys
from pathlib import Path

import torch

from common.analysis.leaderboard.classifiers import read_labels
from common.analysis.source_ranking import (
    cell_powers,
    discriminative_share,
    is_hit,
    power_on_grid,
    rank1_rate,
    source_shares,
)
from common.data.audio import load_audio
from common.data.datasets import read_manifest
from common.interpreters.lime_shap import LimeInterpreter
from common.models.pretrained import load_classifier
from common.models.separation import OracleSeparator
from common.recipe import setup_experiment
from common.reports.audio import save_wav
from common.reports.figures import save_component_bars
from common.reports.tables import write_table


def chosen_segments(entries, n):
    """The first ``n`` segments, each clip's first segment before any clip's second."""
    return sorted(entries.items(), key=lambda item: (item[1].get("start_s", 0.0), item[0]))[:n]


def main(argv=None):
    hparams, _, _, _ = setup_experiment(argv)
    hparams["prepare"](hparams)
    classifier = hparams["classifier"].eval()
    load_classifier(classifier, hparams["classifier_source"], Path(hparams["output_folder"]) / "collect")
    labels = read_labels(hparams["classifier_source"]) or {}
    index_of = {name: k for k, name in labels.items()}
    explainer = hparams["explainer"]
    rate = hparams["sample_rate"]
    data = Path(hparams["data_folder"])
    truth_folder, stems_folder = data / "ground_truth", data / "stems"
    synthetic = truth_folder.is_dir() and stems_folder.is_dir()
    oracle = OracleSeparator(stems_folder) if synthetic else None
    grid_lime = None
    if synthetic and hparams["compare_grid"]:
        grid_lime = LimeInterpreter(
            classifier,
            components="time_mel_grid",
            component_options=hparams["grid_components"],
            n_samples=hparams["grid_samples"],
            batch_size=hparams["explain_batch_size"],
            output=hparams["explained_output"],
            top_k=0,
            seed=hparams["seed"],
        )
    out = Path(hparams["output_folder"])
    entries = read_manifest(hparams["test_annotation"], hparams["segment_s"], hparams["segment_hop_s"])
    rows, hits = [], {"sources": [], "time x mel grid LIME": [], "loudest source (control)": []}
    for k, (segment, entry) in enumerate(chosen_segments(entries, hparams["n_clips"])):
        wav = load_audio(
            entry["wav"], rate, hparams["signal_length_s"], start_s=entry["start_s"], duration_s=entry["duration_s"]
        )
        target = index_of.get(entry["class_string"], int(entry["classID"]))
        result = explainer.attribute_sources(wav[None], torch.tensor([target]), [entry])[0]
        with torch.no_grad():
            p = torch.softmax(classifier.logits(classifier.features(wav[None])), -1)[0, target]
        order = torch.argsort(result["weights"], descending=True).tolist()
        row = {
            "segment": segment,
            "class": entry["class_string"],
            "p(class)": float(p),
            "sources by weight": ", ".join(f"{result['names'][i]} {float(result['weights'][i]):+.3f}" for i in order),
        }
        if synthetic:
            truth = json.loads((truth_folder / f"{entry['clip_id']}.json").read_text())
            true_stems, true_names = oracle(wav, rate, entry)
            powers = power_on_grid(classifier.front_end, torch.cat([true_stems, (wav - true_stems.sum(0))[None]]))
            shares = source_shares(powers)[true_names.index(truth["discriminative_component"])]
            part_powers = power_on_grid(classifier.front_end, result["stems"])
            source_share = discriminative_share(part_powers, shares)
            hits["sources"].append(is_hit(result["weights"], source_share))
            hits["loudest source (control)"].append(is_hit(part_powers.flatten(1).sum(1), source_share))
            row["discriminative"] = truth["discriminative_component"]
            row["top source is it"] = hits["sources"][-1]
            if grid_lime is not None:
                X = classifier.features(wav[None])
                saliency, extras = grid_lime.attribute_with_extras(X, torch.tensor([target]))
                ids = extras["components"][0]
                cell_share = discriminative_share(
                    cell_powers(power_on_grid(classifier.front_end, wav[None])[0], ids), shares
                )
                hits["time x mel grid LIME"].append(is_hit(extras["component_weights"][0], cell_share))
                row["top grid cell is it"] = hits["time x mel grid LIME"][-1]
        rows.append(row)
        if k < hparams["n_examples"]:
            folder = out / "examples" / segment
            save_component_bars(
                result["weights"],
                folder / "source_weights.png",
                title=f"{segment}: {hparams['separator']} sources for {entry['class_string']} (p = {float(p):.2f})",
                labels=result["names"],
                xlabel="source",
            )
            save_wav(folder / "input.wav", wav, rate)
            save_wav(folder / "explanation.wav", result["explanation_wav"], rate)
            for name, stem in zip(result["names"], result["stems"], strict=True):
                save_wav(folder / "sources" / f"{name}.wav", stem, rate)
    print(write_table(rows, out / "sources"))
    if synthetic:
        summary = []
        for what, values in hits.items():
            if values:
                mean, lo, hi = rank1_rate(values)
                summary.append(
                    {
                        "components": what,
                        "top one is the discriminative source": mean,
                        "95 % lo": lo,
                        "95 % hi": hi,
                        "segments": len(values),
                    }
                )
        summary[0]["components"] = f"{hparams['separator']} sources ({hparams['estimator']})"
        print(write_table(summary, out / "rank1"))


if __name__ == "__main__":
    main(sys.argv[1:])
