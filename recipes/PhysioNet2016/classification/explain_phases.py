#!/usr/bin/env python3
"""Which cardiac phase a trained heart-sound classifier uses: Kernel SHAP over time segments and occlusion
over time, aggregated per phase (S1, systole, S2, diastole) with the segmentation, beside model-blind
controls and a phase-occlusion intervention (Dissanayake et al. 2020). Nothing is trained.

    python explain_phases.py hparams/cnn.yaml --data_folder DIR --classifier_source RUN/save --output_folder OUT
    python explain_phases.py hparams/cnn_segmented.yaml --data_folder DIR --classifier_source RUN/save ...

Each of the first ``n_windows`` test windows is explained for its recording's class. Writes to the output
folder: ``importance_per_phase.md`` / ``.csv`` (per group and method, each phase's mean share of the positive
importance with 95 % bootstrap intervals, the drop in the log-odds when the phase is silenced, each phase's
share of time, and for abnormal windows whose murmur is known how often its phase holds most of the
importance), ``windows.json`` (every window's numbers), and for the first ``n_examples`` windows
``examples/<window>/``: ``phases.png`` (the waveform over its phases, each method's importance over time,
the model's probability in the title), ``input.wav`` and ``shap_weighted.wav`` (the window weighted by
Kernel SHAP's positive importance per frame: what the model listened to).
"""

import sys
from pathlib import Path

import torch

from common.analysis.cardiac_phases import (
    PHASE_DROP,
    TIME_SHARE,
    frame_importance,
    group_of,
    importance_per_phase,
    phase_occlusion,
    summarize_phases,
    time_per_phase,
)
from common.analysis.leaderboard.classifiers import read_labels
from common.data import prepare_from_hparams
from common.data.audio import load_audio
from common.data.datasets import read_manifest
from common.data.physionet2016 import CLASSES, STATES, WindowStates
from common.interpreters import import_for
from common.interpreters.lime_shap import target_output
from common.interpreters.segments import SegmentsOfDuration
from common.io import atomic_write_json
from common.models.heart import given_states, states_on_frames
from common.models.pretrained import load_classifier
from common.recipe import setup_experiment
from common.registry import INTERPRETERS
from common.reports.audio import save_wav
from common.reports.figures import save_phase_figure
from common.reports.tables import write_table


def build_methods(hparams, model):
    """{name: interpreter} of ``hparams["methods"]`` with the recipe's options (durations in ms -> frames)."""
    frames_per_ms = model.front_end.frame_rate / 1000.0
    n_bins = model.front_end.n_bins
    options = {
        "kernel_shap": {
            "components": SegmentsOfDuration(hparams["shap_segment_ms"] * frames_per_ms),
            "n_samples": hparams["shap_samples"],
            "output": hparams["explained_output"],
            "batch_size": hparams["explain_batch_size"],
            "top_k": 0,
            "seed": hparams["seed"],
        },
        "occlusion": {
            "window": (max(1, round(hparams["occlusion_window_ms"] * frames_per_ms)), n_bins),
            "stride": (max(1, round(hparams["occlusion_stride_ms"] * frames_per_ms)), n_bins),
            "batch_size": hparams["explain_batch_size"],
        },
    }
    methods = {}
    for name in hparams["methods"]:
        import_for(name)
        methods[name] = INTERPRETERS.build(name, model, **options.get(name, {}))
    return methods


def chosen_windows(entries, n):
    """The first ``n`` windows, each recording's first window before any recording's second, so many
    recordings are seen."""
    order = sorted(entries.items(), key=lambda item: (item[1].get("start_s", 0.0), item[1]["clip_id"]))
    return order[:n]


def main(argv=None):
    hparams, _, _, _ = setup_experiment(argv)
    prepare_from_hparams(hparams)
    model = hparams["model"].eval()
    load_classifier(model, hparams["classifier_source"], Path(hparams["output_folder"]) / "collect")
    labels = read_labels(hparams["classifier_source"]) or dict(enumerate(CLASSES))
    class_index = {name: k for k, name in labels.items()}
    methods = build_methods(hparams, model)
    front_end = model.front_end
    sample_rate, length_s = hparams["sample_rate"], hparams["signal_length_s"]
    entries = read_manifest(hparams["test_annotation"], hparams["segment_s"], hparams["segment_hop_s"])
    out = Path(hparams["output_folder"])
    records, states_of = [], WindowStates()
    for k, (window, entry) in enumerate(chosen_windows(entries, hparams["n_windows"])):
        wav = load_audio(entry["wav"], sample_rate, length_s, start_s=entry["start_s"], duration_s=entry["duration_s"])
        if entry["states"] is None:
            raise SystemExit(f"{entry['wav']} has no segmentation; per-phase importance needs one per recording.")
        sample_states = states_of(
            entry["states"], entry["recording_rate"], entry["clip_duration"], entry["start_s"], len(wav), sample_rate
        )
        X = model.features(wav[None]).detach()
        frame_states = states_on_frames(sample_states[None], front_end.hop, X.shape[1])
        target = class_index[entry["class_string"]]
        with given_states(model, frame_states):
            p = torch.softmax(model.logits(X), -1)[0].detach()
            saliencies = {
                name: method.attribute(X, torch.tensor([target]))[0].detach() for name, method in methods.items()
            }
            drops = phase_occlusion(
                lambda x, target=target: target_output(model.logits(x), target, hparams["explained_output"]),
                X,
                frame_states[0],
                model.silence(X),
            )
        record = {
            "window": window,
            "group": group_of(entry),
            "murmur": entry.get("murmur"),
            "class": entry["class_string"],
            "p_class": float(p[target]),
            "p_abnormal": float(p[class_index["abnormal"]]),
            TIME_SHARE: time_per_phase(frame_states[0]).tolist(),
            PHASE_DROP: drops.tolist(),
        }
        for name, saliency in saliencies.items():
            record[name] = importance_per_phase(saliency, frame_states[0]).tolist()
        records.append(record)
        if k < hparams["n_examples"]:
            folder = out / "examples" / window
            murmur = f", murmur in {entry['murmur']}" if entry.get("murmur") else ""
            save_phase_figure(
                wav,
                sample_rate,
                sample_states,
                {name: frame_importance(s) for name, s in saliencies.items()},
                front_end.frame_rate,
                folder / "phases.png",
                title=f"{window}: {entry['class_string']}{murmur}; p(abnormal) = {record['p_abnormal']:.2f}, "
                f"explained: {entry['class_string']}",
                phases=STATES,
            )
            save_wav(folder / "input.wav", wav, sample_rate)
            if "kernel_shap" in saliencies:
                gain = frame_importance(saliencies["kernel_shap"])
                gain = torch.repeat_interleave(gain / gain.max().clamp(min=1e-12), front_end.hop)[: len(wav)]
                save_wav(
                    folder / "shap_weighted.wav",
                    wav * torch.nn.functional.pad(gain, (0, len(wav) - len(gain))),
                    sample_rate,
                )
    atomic_write_json(out / "windows.json", records)
    print(write_table(summarize_phases(records, list(methods)), out / "importance_per_phase"))


if __name__ == "__main__":
    main(sys.argv[1:])
