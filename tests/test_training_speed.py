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


def _interpreter_brain(tmp_path, channels_last=False, cache=True):
    from common.training.interpreter_brains import PIQBrain
    from tests.conftest import INTERPRET

    hparams = load_hparams(
        INTERPRET / "hparams" / "piq_logmel_cnn.yaml",
        {
            "data_folder": str(tmp_path),
            "output_folder": str(tmp_path / "out"),
            "out_n_neurons": 2,
            "signal_length_s": 1.0,
            "cache_classifier_outputs": cache,
        },
    )
    hparams["channels_last"] = channels_last
    manifest = _manifest(tmp_path)
    hparams["label_encoder"] = build_label_encoder([manifest], 2)
    data = classification_datasets({"train": manifest}, hparams["label_encoder"], 16000, 1.0)["train"]
    brain = build_brain(PIQBrain, hparams, {"device": "cpu", "precision": "fp32"})
    return brain, data


def _batches(brain, data):
    import speechbrain as sb

    return list(brain.make_dataloader(data, stage=sb.Stage.TRAIN, batch_size=2, shuffle=False))


def test_the_frozen_classifier_runs_once_per_clip_and_its_cached_outputs_are_what_it_computes(tmp_path):
    import speechbrain as sb

    brain, data = _interpreter_brain(tmp_path)
    brain.on_fit_start()
    classifier = brain.hparams.classifier
    calls = []
    real = classifier.features
    classifier.features = lambda wavs: calls.append(len(wavs)) or real(wavs)
    first = [brain.classifier_outputs(b, sb.Stage.TRAIN) for b in _batches(brain, data)]
    second = [brain.classifier_outputs(b, sb.Stage.TRAIN) for b in _batches(brain, data)]  # the next epoch
    assert sum(calls) == 3  # three clips, each through the classifier once over both epochs
    for a, b in zip(first, second, strict=True):
        assert torch.allclose(a.X, b.X) and torch.allclose(a.logits, b.logits) and torch.allclose(a.hidden, b.hidden)
    uncached, _ = _interpreter_brain(tmp_path / "u", cache=False)
    uncached.on_fit_start()
    uncached.hparams.classifier.load_state_dict(classifier.state_dict())
    fresh = [uncached.classifier_outputs(b, sb.Stage.TRAIN) for b in _batches(uncached, data)]
    assert all(torch.allclose(a.hidden, b.hidden, atol=1e-6) for a, b in zip(second, fresh, strict=True))


def test_channels_last_also_reaches_the_frozen_classifier_an_interpreter_explains(tmp_path):
    brain, _ = _interpreter_brain(tmp_path, channels_last=True)
    weights = [p for p in brain.hparams.classifier.parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    plain, _ = _interpreter_brain(tmp_path / "p")
    assert not all(
        p.is_contiguous(memory_format=torch.channels_last) for p in plain.hparams.classifier.parameters() if p.ndim == 4
    )


def test_benchmark_training_times_interpreter_training_against_speechbrains_loop(synthetic_data, tmp_path):
    table = tmp_path / "table.md"
    rows = "speechbrain fp32,+ classifier-output cache,floor fp32"
    cmd = [sys.executable, "tools/benchmark_training.py", "--data_folder", str(synthetic_data), "--models", "none"]
    cmd += ["--interpreters", "lmac", "--batch_size", "2", "--batches", "1", "--out_n_neurons", "3"]
    cmd += ["--emb_dim", "8", "--output", str(table), "--rows", rows]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in table.read_text().splitlines() if ln.startswith("| lmac (conv2d)")]
    assert [ln.split(" | ")[1] for ln in lines] == rows.split(",")
    assert float(lines[0].split(" | ")[3]) == 1.0 and all(float(ln.split(" | ")[2]) > 0 for ln in lines)


def test_quickstart_features_lmac_trained_and_compares_it_with_piq_on_its_leaderboard(tmp_path, capsys):
    """The quickstart end to end at a tiny size: the featured interpreter is trained and scored against the
    known events, and the leaderboard holds both trained interpreters beside the controls."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart", REPO / "tools" / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    out = tmp_path / "qs"
    argv = ["--output_folder", str(out), "--n_classes", "2", "--clips_per_class", "5", "--duration_s", "1.0"]
    argv += ["--epochs", "1", "--lmac_epochs", "2", "--piq_epochs", "1", "--leaderboard_clips", "2"]
    quickstart.main(argv)
    printed = capsys.readouterr().out
    assert "L-MAC interpretation metrics" in printed and "PIQ interpretation metrics" in printed
    log = (out / "lmac" / "train_log.txt").read_text()
    assert "epoch: 2" in log and "valid localization_auc" in log and "valid fid_in" not in log  # cheap validation
    results = json.loads((out / "lmac" / "test_results.json").read_text())
    assert 0.0 <= results["localization_auc"] <= 1.0 and "deletion_auc" in results  # the full suite at test
    assert list((out / "lmac" / "interpretations").glob("*/explanation.png"))
    board = (out / "leaderboard" / "leaderboard.md").read_text()
    assert all(label in board for label in ("L-MAC", "PIQ", "input magnitude (control)"))
