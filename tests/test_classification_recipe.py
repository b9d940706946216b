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


@pytest.mark.parametrize("name", HPARAMS)
def test_debug_run_on_real_esc10(name, esc10_data, tmp_path):
    out = tmp_path / "out"
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
        "10",
        "--batch_size",
        "2",
        "--debug",
        *TINY_OVERRIDES[name],
    )
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
    proc = run_recipe(
        TRAIN,
        hparams("conv2d"),
        "--data_folder",
        synthetic_data,
        "--output_folder",
        tmp_path / "o",
        "--out_n_neurons",
        "3",
        "--debug",
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "speechbrain/PIQ-ESC50/embedding_model.ckpt" in out and "--use_pretrained 0" in out


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
    from common.data.synthetic import make_synthetic_esc50

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
