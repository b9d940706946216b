"""The training-speed levers (issue 21): each does what it says and changes no result it should not."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import common.recipe as recipe
from common.data import datasets as datasets_module
from common.data.datasets import build_label_encoder, classification_datasets
from common.recipe import load_hparams
from common.training.classifier import build_brain
from tests.conftest import CLASSIFICATION, REPO


def _manifest(tmp_path, n=3):
    entries = {}
    for i in range(n):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, np.random.default_rng(i).uniform(-0.5, 0.5, 22050).astype(np.float32), 22050)
        entries[f"c{i}"] = {"wav": str(path), "classID": i % 2, "class_string": f"k{i % 2}", "duration": 1.0}
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps(entries))
    return manifest


def test_the_audio_cache_decodes_each_clip_once_and_returns_what_the_loader_does(tmp_path, monkeypatch):
    manifest = _manifest(tmp_path)
    encoder = build_label_encoder([manifest], 2)
    plain = classification_datasets({"train": manifest}, encoder, 16000, 1.0)["train"]
    expected = [plain[i]["sig"] for i in range(3)]
    calls = []
    real = datasets_module.load_audio
    monkeypatch.setattr(datasets_module, "load_audio", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    cached = classification_datasets({"train": manifest}, encoder, 16000, 1.0, cache_audio=True)["train"]
    for _ in range(3):  # three epochs
        got = [cached[i]["sig"] for i in range(3)]
    assert sorted(calls) == sorted(str(tmp_path / f"c{i}.wav") for i in range(3))  # decoded once each
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_channels_last_stores_the_conv_weights_channels_last(tmp_path):
    import speechbrain as sb

    hparams = load_hparams(
        CLASSIFICATION / "hparams" / "conv2d.yaml",
        {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "out"), "emb_dim": 8, "use_pretrained": False},
    )
    conv = hparams["embedding_model"].conv2.weight
    before = conv.detach().clone()
    assert not conv.is_contiguous(memory_format=torch.channels_last)
    brain = build_brain(sb.Brain, {**hparams, "channels_last": True}, {"device": "cpu"})
    weight = brain.modules.model.embedding_model.conv2.weight
    assert weight is conv  # the optimiser's parameters stay the same objects
    assert weight.is_contiguous(memory_format=torch.channels_last) and torch.equal(weight, before)


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_precision_auto_is_bf16_only_where_the_cpu_runs_it(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: supported)
    assert recipe.auto_precision("cpu") == expected


def test_precision_auto_in_the_yaml_reaches_speechbrains_brain_however_it_is_built(tmp_path):
    hparams, run_opts, *_ = recipe.setup_experiment(
        [
            str(CLASSIFICATION / "hparams" / "conv2d.yaml"),
            "--data_folder",
            str(tmp_path),
            "--output_folder",
            str(tmp_path / "o"),
        ]
    )
    assert hparams["precision"] == recipe.auto_precision("cpu")
    import speechbrain as sb

    brain = sb.Brain(modules={"m": torch.nn.Linear(2, 2)}, hparams=hparams, run_opts=run_opts)
    assert brain.precision == recipe.auto_precision("cpu")
    loaded = load_hparams(CLASSIFICATION / "hparams" / "conv2d.yaml", {"data_folder": str(tmp_path)})
    brain = sb.Brain(modules={"m": torch.nn.Linear(2, 2)}, hparams=loaded, run_opts={"device": "cpu"})
    assert brain.precision == recipe.auto_precision("cpu")


def test_benchmark_training_reports_every_row_with_ratios_against_speechbrain(synthetic_data, tmp_path):
    table = tmp_path / "table.md"
    rows = "speechbrain fp32,toolkit fp32 (no levers),+ bf16 autocast,floor fp32"
    cmd = [
        sys.executable,
        "tools/benchmark_training.py",
        "--data_folder",
        str(synthetic_data),
        "--models",
        "conv2d",
    ]
    cmd += ["--batch_size", "2", "--batches", "1", "--out_n_neurons", "3", "--emb_dim", "8", "--output", str(table)]
    cmd += ["--rows", rows]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in table.read_text().splitlines() if ln.startswith("| conv2d")]
    assert [ln.split(" | ")[1] for ln in lines] == rows.split(",")
    cells = {ln.split(" | ")[1]: ln.split(" | ") for ln in lines}
    assert float(cells["speechbrain fp32"][3]) == 1.0  # the baseline's own ratio
    assert all(float(c[2]) > 0 and float(c[4]) > 0 for c in cells.values())  # clips/s and peak RSS measured
