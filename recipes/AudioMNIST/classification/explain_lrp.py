#!/usr/bin/env python3
"""LRP of a trained AudioMNIST classifier (Becker et al. 2018): where in frequency its relevance lies, and
examples to look at and listen to. Nothing is trained.

    python explain_lrp.py hparams/audionet.yaml --data_folder DIR --classifier_source RUN/save --output_folder OUT
    python explain_lrp.py hparams/alexnet.yaml --data_folder DIR --task gender --classifier_source RUN/save ...

Give the options the run was trained with (--task, --split, sizes). Writes to the output folder:
``relevance_per_band.md`` / ``.csv`` (per method of ``methods``, LRP first, the mean share of positive
relevance in each band over the test clips, with 95 % bootstrap intervals: the paper's analysis of gender
against digit; the spectrogram model is also explained by the toolkit's other interpreters, and both models
by the input-magnitude control, |x| per sample for the waveform model), ``relevance_in_speech.md`` /
``.csv`` when the data folder says where the speech is (``speech_intervals.json`` of the synthetic
digits): each method's share of positive relevance inside the speech against the share of time it spans,
and for the first
``n_examples`` test clips ``examples/<clip>/``: ``spectrogram.png`` and ``relevance.png`` (on the
time-frequency grid; for AudioNet its per-sample relevance mapped there, common/analysis/relevance_bands.py),
``input.wav`` and ``relevance_weighted.wav`` (the input weighted by its positive relevance, smoothed over
the STFT window: what the model listened to). LRP is the toolkit's (zennit; ``lrp_composite``).
"""

import json
import sys
from pathlib import Path

import torch

from common.analysis.leaderboard.classifiers import read_labels
from common.analysis.relevance_bands import (
    DEFAULT_EDGES_HZ,
    relevance_per_band,
    share_in_interval,
    time_share,
    waveform_relevance_on_grid,
)
from common.data import prepare_from_hparams
from common.data.audio import load_audio
from common.data.datasets import read_manifest
from common.data.synthetic.spoken_digits import SPEECH_INTERVALS
from common.features import LinearDbSpectrogram
from common.interpreters import import_for
from common.metrics.uncertainty import bootstrap_interval
from common.models.pretrained import load_classifier
from common.recipe import setup_experiment
from common.registry import INTERPRETERS
from common.reports.audio import save_wav
from common.reports.html import save_mask_overlay, save_spectrogram
from common.reports.tables import write_table


def smoothed(relevance, n):
    """Positive per-sample relevance averaged over ``n`` samples, scaled to a peak of 1 (a gain to listen through)."""
    kernel = torch.hann_window(n)[None, None] / torch.hann_window(n).sum()
    gain = torch.nn.functional.conv1d(relevance.clamp(min=0)[:, None], kernel, padding=n // 2)[
        :, 0, : relevance.shape[-1]
    ]
    return gain / gain.amax(dim=-1, keepdim=True).clamp(min=1e-12)


def method_relevance(name, interpreter, X, target):
    """(B, ...) relevance of ``name`` like X; a waveform model's input-magnitude control is |x| per sample."""
    if name == "input_magnitude" and X.ndim == 2:
        return X.detach().abs()
    return interpreter.attribute(X, target).detach()


def interval_rows(shares, intervals_share):
    """The speech table: per method its mean share of positive relevance inside the speech, with intervals."""
    rows = []
    for name, values in [*shares.items(), ("share of time (a map flat in time)", intervals_share)]:
        mean, lo, hi = bootstrap_interval(torch.cat(values).numpy())
        rows.append({"relevance": name, "share inside the speech": mean, "95 % lo": lo, "95 % hi": hi})
    return rows


def main(argv=None):
    hparams, _, _, _ = setup_experiment(argv)
    prepare_from_hparams(hparams)
    model = hparams["model"].eval()
    load_classifier(model, hparams["classifier_source"], Path(hparams["output_folder"]) / "collect")
    labels = read_labels(hparams["classifier_source"]) or {}
    names = list(hparams.get("methods") or ["lrp"])
    if names[0] != "lrp":
        names = ["lrp", *[n for n in names if n != "lrp"]]
    interpreters = {}
    for name in names:
        import_for(name)
        options = {"composite": hparams["lrp_composite"]} if name == "lrp" else {}
        interpreters[name] = INTERPRETERS.build(name, model, **options)
    grid = (
        model.front_end
        if isinstance(model.front_end, LinearDbSpectrogram)
        else LinearDbSpectrogram(hparams["sample_rate"])
    )
    intervals_path = Path(hparams["data_folder"]) / SPEECH_INTERVALS  # synthetic digits: where the speech is
    intervals = json.loads(intervals_path.read_text()) if intervals_path.is_file() else None
    entries = list(read_manifest(hparams["test_annotation"]).items())
    out = Path(hparams["output_folder"])
    shares = {name: [] for name in names}
    in_speech, time_in_speech = {name: [] for name in names}, []
    shown = 0
    for lo in range(0, len(entries), hparams["batch_size"]):
        batch = entries[lo : lo + hparams["batch_size"]]
        wavs = torch.stack([load_audio(e["wav"], hparams["sample_rate"], hparams["signal_length_s"]) for _, e in batch])
        X = model.features(wavs)
        target = model.logits(X).argmax(-1).detach()
        relevances = {name: method_relevance(name, interpreters[name], X, target) for name in names}
        relevance = relevances["lrp"]
        waveform_model = relevance.ndim == 2  # AudioNet: one relevance per sample
        on_grids = {
            name: waveform_relevance_on_grid(r, wavs, grid.n_fft, grid.hop) if waveform_model else r
            for name, r in relevances.items()
        }
        for name, on_grid in on_grids.items():
            shares[name].append(relevance_per_band(on_grid, grid.bin_frequencies(), DEFAULT_EDGES_HZ))
        if intervals is not None:
            spans = torch.tensor([intervals[clip] for clip, _ in batch])
            if waveform_model:
                times = torch.arange(X.shape[-1]) / float(hparams["sample_rate"])
                per_time = {name: r.clamp(min=0) for name, r in relevances.items()}
            else:
                times = torch.arange(X.shape[1]) * model.front_end.hop / float(hparams["sample_rate"])
                per_time = {name: r.clamp(min=0).sum(-1) for name, r in relevances.items()}
            for name, values in per_time.items():
                in_speech[name].append(share_in_interval(values, times, spans))
            time_in_speech.append(time_share(times, spans))
        on_grid = on_grids["lrp"]
        for k, (clip, _) in enumerate(batch):
            if shown >= hparams["n_examples"]:
                break
            folder = out / "examples" / clip
            folder.mkdir(parents=True, exist_ok=True)
            save_spectrogram(grid(wavs[k : k + 1])[0], folder / "spectrogram.png", title=clip)
            positive = on_grid[k].clamp(min=0)
            label = labels.get(int(target[k]), int(target[k]))
            save_mask_overlay(
                grid(wavs[k : k + 1])[0],
                positive / positive.max().clamp(min=1e-12),
                folder / "relevance.png",
                title=f"{clip}: LRP of {label}",
            )
            save_wav(folder / "input.wav", wavs[k], hparams["sample_rate"])
            weights = smoothed(relevance[k : k + 1], grid.n_fft)[0] if waveform_model else None
            if weights is None:  # spectrogram model: each frame's positive relevance as the gain
                frame_gain = positive.sum(-1)
                weights = torch.repeat_interleave(frame_gain / frame_gain.max().clamp(min=1e-12), grid.hop)[
                    : wavs.shape[-1]
                ]
                weights = torch.nn.functional.pad(weights, (0, wavs.shape[-1] - len(weights)))
            save_wav(folder / "relevance_weighted.wav", wavs[k] * weights, hparams["sample_rate"])
            shown += 1
    rows = []
    for name in names:
        per_band = torch.cat(shares[name])
        for j, (lo_hz, hi_hz) in enumerate(zip(DEFAULT_EDGES_HZ[:-1], DEFAULT_EDGES_HZ[1:], strict=True)):
            mean, lo, hi = bootstrap_interval(per_band[:, j].numpy())
            rows.append(
                {
                    "method": name,
                    "band (Hz)": f"{lo_hz:g}-{hi_hz:g}",
                    "share of positive relevance": mean,
                    "95 % lo": lo,
                    "95 % hi": hi,
                    "clips": len(per_band),
                }
            )
    print(write_table(rows, out / "relevance_per_band"))
    if intervals is not None:
        print(write_table(interval_rows(in_speech, time_in_speech), out / "relevance_in_speech"))


if __name__ == "__main__":
    main(sys.argv[1:])
