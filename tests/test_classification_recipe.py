"""ESC50/classification end to end: every hparams file on synthetic data and real ESC-10,
--test_only reproduction, clear failures, interrupted-training resume, two-process DDP."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import yaml
from speechbrain.core import INTRA_EPOCH_CKPT_FLAG

from tests.conftest import CLASSIFICATION, TINY_OVERRIDES, run_recipe

TRAIN = CLASSIFICATION / "train.py"
HPARAMS = ["conv2d", "cnn14", "focalnet", "vit"]


def hparams(name):
    return CLASSIFICATION / "hparams" / f"{name}.yaml"


def check_outputs(out, n_classes, expected_clips):
    result = json.loads((out / "test_results.json").read_text())
    assert 0.0 <= result["acc"] <= 1.0 and result["error"] == pytest.approx(1 - result["acc"])
    assert result["n_clips"] == expected_clips
    cm = result["confusion_matrix"]
    assert len(cm) == n_classes and sum(map(sum, cm)) == expected_clips
    assert result["checkpoint"] and result["checkpoint_epoch"] in (1, 2)
    img = mpimg.imread(out / "confusion_matrix.png")
    assert img.ndim == 3 and img.shape[0] > 100
    table = (out / "per_class_accuracy.md").read_text()
    assert table.startswith("| class | accuracy | clips |")
    log = (out / "train_log.txt").read_text()
    assert "epoch: 1" in log and "epoch: 2" in log and "test acc" in log
    return result


@pytest.mark.parametrize("name", HPARAMS)
def test_debug_run_on_synthetic_then_test_only_reproduces(name, synthetic_data, tmp_path):
    out = tmp_path / "out"
    common = [
        "--data_folder",
        synthetic_data,
        "--output_folder",
        out,
        "--use_pretrained",
        "0",
        "--out_n_neurons",
        "3",
        "--batch_size",
        "2",
        "--signal_length_s",
        "1",
        *TINY_OVERRIDES[name],
    ]
    run_recipe(TRAIN, hparams(name), *common, "--debug", "--debug_persistently")
    first = check_outputs(out, 3, expected_clips=3)
    ckpts = sorted(p.name for p in (out / "save").glob("CKPT+*"))
    run_recipe(TRAIN, hparams(name), *common, "--test_only")
    again = json.loads((out / "test_results.json").read_text())
    assert again["acc"] == first["acc"] and again["loss"] == pytest.approx(first["loss"], rel=1e-5)
    assert again["checkpoint"] == first["checkpoint"]
    assert sorted(p.name for p in (out / "save").glob("CKPT+*")) == ckpts  # evaluation writes no checkpoint


def run_debug_on_esc10(name, esc10_data, out, n_outputs, *extra):
    """The classification recipe in --debug on the real ESC-10 clips, tiny model, ``n_outputs`` outputs."""
    run_recipe(
        TRAIN,
        hparams(name),
        "--data_folder",
        esc10_data,
        "--output_folder",
        out,
        "--use_pretrained",
        "0",
        "--out_n_neurons",
        n_outputs,
        "--batch_size",
        "2",
        *extra,
        "--debug",
        *TINY_OVERRIDES[name],
    )


@pytest.mark.parametrize("name", HPARAMS)
def test_debug_run_on_real_esc10(name, esc10_data, tmp_path):
    out = tmp_path / "out"
    run_debug_on_esc10(name, esc10_data, out, "10")
    result = check_outputs(out, 10, expected_clips=4)
    assert set(result["labels"]) == {
        "dog",
        "rooster",
        "rain",
        "sea_waves",
        "crackling_fire",
        "crying_baby",
        "sneezing",
        "clock_tick",
        "helicopter",
        "chainsaw",
    }
    train_manifest = json.loads((out / "manifest" / "train.json").read_text())
    assert len(train_manifest) == 240


def test_test_only_without_checkpoint_fails_clearly(synthetic_data, tmp_path):
    proc = run_recipe(
        TRAIN,
        hparams("conv2d"),
        "--data_folder",
        synthetic_data,
        "--output_folder",
        tmp_path / "o",
        "--use_pretrained",
        "0",
        "--out_n_neurons",
        "3",
        "--test_only",
        *TINY_OVERRIDES["conv2d"],
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "No checkpoint in" in out and "Train first" in out


def test_pretrained_request_offline_fails_clearly(synthetic_data, tmp_path):
    """Outside --debug the published encoder must load (in --debug it would be replaced by a random one)."""
    proc = run_recipe(
        TRAIN,
        hparams("conv2d"),
        "--data_folder",
        synthetic_data,
        "--output_folder",
        tmp_path / "o",
        "--out_n_neurons",
        "3",
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "RANDOMLY INITIALISED" not in out
    assert "speechbrain/PIQ-ESC50/embedding_model.ckpt" in out and "--use_pretrained 0" in out


ESC10_TARGETS = {
    "dog": 0,
    "rooster": 1,
    "rain": 10,
    "sea_waves": 11,
    "crackling_fire": 12,
    "crying_baby": 20,
    "sneezing": 21,
    "clock_tick": 38,
    "helicopter": 40,
    "chainsaw": 41,
}


@pytest.mark.parametrize(("name", "n_outputs"), [("cnn14", 50), ("conv2d", 12), ("focalnet", 50)])
def test_more_outputs_than_classes_reports_absent_ones(name, n_outputs, esc10_data, tmp_path):
    """SpeechBrain's convention (ESC-10 keeps its ESC-50 targets, 50 outputs) and any count in between: the run
    completes, outputs no class maps to and classes with no test clip are reported as such."""
    out = tmp_path / "out"
    run_debug_on_esc10(name, esc10_data, out, n_outputs, "--signal_length_s", "1")
    result = check_outputs(out, n_outputs, expected_clips=4)
    labels = result["labels"]
    if n_outputs == 50:  # the ESC-50 targets: each class at its own target, the other 40 outputs unused
        assert {lab: i for i, lab in enumerate(labels) if lab} == ESC10_TARGETS
    else:  # targets past the outputs: classes by rank, the last two outputs unused
        assert labels[:10] == sorted(ESC10_TARGETS, key=ESC10_TARGETS.get)
    assert result["unused_outputs"] == [i for i, lab in enumerate(labels) if lab is None]
    assert len(result["unused_outputs"]) == n_outputs - 10
    tested = {lab for lab, row in zip(labels, result["confusion_matrix"], strict=True) if sum(row)}
    assert set(result["per_class_acc"]) == tested and len(tested) <= 4
    assert sorted(result["absent_classes"]) == sorted(set(ESC10_TARGETS) - tested)
    table = (out / "per_class_accuracy.csv").read_text().splitlines()
    assert len(table) == 1 + 10 and sum(line.split(",")[1] == "absent" for line in table) == 10 - len(tested)


def test_a_failure_writing_the_extras_keeps_the_test_table(tmp_path, monkeypatch, caplog):
    """The per-class table and figure come after test_results.json; a crash there is logged, not raised."""
    from types import SimpleNamespace

    import numpy as np
    from speechbrain.dataio.encoder import CategoricalEncoder

    import common.training.classifier as training

    def broken(*args, **kwargs):
        raise RuntimeError("figure backend exploded")

    monkeypatch.setattr(training, "save_confusion_matrix", broken)
    encoder = CategoricalEncoder()
    for label, index in (("dog", 0), ("rain", 10)):
        encoder.enforce_label(label, index)
    confusion = np.zeros((12, 12), dtype=np.int64)
    confusion[0, 0], confusion[0, 10] = 2, 1
    logged = []
    brain = SimpleNamespace(
        confusion=confusion,
        hparams=SimpleNamespace(
            label_encoder=encoder,
            out_n_neurons=12,
            output_folder=str(tmp_path),
            train_logger=SimpleNamespace(log_stats=lambda **kw: logged.append(kw)),
        ),
    )
    with caplog.at_level("ERROR"):
        training.ClassifierBrain._write_test_outputs(brain, {"loss": 1.0, "acc": 2 / 3, "error": 1 / 3})
    result = json.loads((tmp_path / "test_results.json").read_text())
    assert result["per_class_acc"] == {"dog": pytest.approx(2 / 3)} and result["absent_classes"] == ["rain"]
    assert result["unused_outputs"] == [i for i in range(12) if i not in (0, 10)]
    assert (tmp_path / "per_class_accuracy.md").is_file() and not (tmp_path / "confusion_matrix.png").exists()
    assert "confusion matrix figure" in caplog.text and "figure backend exploded" in caplog.text
    assert logged and logged[0]["test_stats"]["acc"] == pytest.approx(2 / 3)


def test_missing_data_folder_fails_clearly(tmp_path):
    proc = run_recipe(
        TRAIN,
        hparams("conv2d"),
        "--data_folder",
        tmp_path / "nowhere",
        "--output_folder",
        tmp_path / "o",
        "--use_pretrained",
        "0",
        "--download",
        "False",
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "No ESC-50 data in" in out and "nowhere" in out


def test_malformed_hparams_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\nlr: 0.1\n")
    proc = run_recipe(TRAIN, bad, "--data_folder", tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "bad.yaml" in out and "not valid YAML" in out


def _intra_epoch_checkpoint(save):
    for meta in save.glob("CKPT+*/CKPT.yaml"):
        if yaml.safe_load(meta.read_text()).get(INTRA_EPOCH_CKPT_FLAG):
            return meta.parent
    return None


def test_interrupted_training_resumes_from_last_checkpoint(tmp_path):
    from common.data.synthetic.scenes import make_synthetic_esc50

    data = tmp_path / "data"
    make_synthetic_esc50(data, n_classes=3, clips_per_class=25, duration_s=2.0, seed=1)
    out = tmp_path / "out"
    args = [
        sys.executable,
        TRAIN,
        hparams("conv2d"),
        "--data_folder",
        data,
        "--output_folder",
        out,
        "--use_pretrained",
        "0",
        "--out_n_neurons",
        "3",
        "--batch_size",
        "2",
        "--number_of_epochs",
        "2",
        "--signal_length_s",
        "2",
        "--emb_dim",
        "32",
        "--ckpt_interval_minutes",
        "0",
        "--ckpt_interval_steps",
        "3",
    ]
    proc = subprocess.Popen(
        list(map(str, args)),
        cwd=CLASSIFICATION,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    try:
        while _intra_epoch_checkpoint(out / "save") is None:
            assert proc.poll() is None, "training ended before any intra-epoch checkpoint"
            assert time.time() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log = out / "train_log.txt"
    assert not log.exists() or "epoch: 1" not in log.read_text(), "killed too late: epoch 1 had already ended"
    killed_at = _intra_epoch_checkpoint(out / "save")
    assert killed_at is not None
    result = subprocess.run(list(map(str, args)), cwd=CLASSIFICATION, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Loading a checkpoint from {killed_at}" in result.stdout + result.stderr
    lines = log.read_text().splitlines()
    assert sum(line.startswith("epoch: 1,") for line in lines) == 1
    assert sum(line.startswith("epoch: 2,") for line in lines) == 1
    assert json.loads((out / "test_results.json").read_text())["n_clips"] == 15
    assert not list((out / "save").glob(".partial-*"))


def test_two_process_ddp_training_on_cpu(synthetic_data, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "out"
    run_recipe(
        TRAIN,
        hparams("conv2d"),
        "--data_folder",
        synthetic_data,
        "--output_folder",
        out,
        "--use_pretrained",
        "0",
        "--out_n_neurons",
        "3",
        "--batch_size",
        "2",
        "--signal_length_s",
        "1",
        "--number_of_epochs",
        "1",
        "--distributed_backend",
        "gloo",
        *TINY_OVERRIDES["conv2d"],
        launcher=[torchrun, "--nproc_per_node=2", "--master_port=29533"],
        env={"OMP_NUM_THREADS": "1"},
    )
    result = json.loads((out / "test_results.json").read_text())
    assert 0 <= result["acc"] <= 1 and result["n_clips"] >= 3
    assert len(list((out / "save").glob("CKPT+*"))) == 1
