"""Bad run settings found by the 65-probe sweep (issue 20): refused before any work, naming the option and
the fix; two runs never share an output folder; the README's checkpoint command works."""

import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import speechbrain as sb
import torch

import common.recipe as recipe
from common.errors import ConfigError
from common.recipe import setup_experiment
from tests.conftest import CLASSIFICATION, REPO

CONV2D = CLASSIFICATION / "hparams" / "conv2d.yaml"


def setup(tmp_path, *args, hparams=CONV2D):
    return setup_experiment(
        [
            str(hparams),
            "--data_folder",
            str(tmp_path / "data"),
            "--output_folder",
            str(tmp_path / "out"),
            *map(str, args),
        ]
    )


# -- 7. the common hparams' types and ranges, before any work ----------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch_size", "abc"], r"batch_size='abc' must be an integer > 0"),
        (["--batch_size", "0"], r"batch_size=0 must be an integer > 0"),
        (["--batch_size", "-4"], r"batch_size=-4 must be an integer > 0"),
        (["--number_of_epochs", "2.5"], r"number_of_epochs=2.5 must be an integer > 0"),
        (["--lr", "0"], r"lr=0 must be a number > 0"),
        (["--signal_length_s", "-1"], r"signal_length_s=-1 must be a number > 0"),
        (["--sample_rate", "true"], r"sample_rate=True must be an integer > 0"),
    ],
)
def test_a_bad_common_hparam_is_refused_before_any_work(tmp_path, args, message):
    with pytest.raises(ConfigError, match=message):
        setup(tmp_path, *args)
    # nothing prepared or written (SpeechBrain's Checkpointer makes its empty folder as the hparams load)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_good_common_hparams_pass(tmp_path):
    hparams, *_ = setup(tmp_path, "--batch_size", "3", "--lr", "0.003", "--signal_length_s", "1")
    assert (hparams["batch_size"], hparams["lr"]) == (3, 0.003)


# -- a misspelled key in one's own hparams file --------------------------------------------------------
def test_a_misspelled_key_in_a_users_hparams_file_is_refused_with_the_closest_keys(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(CONV2D.read_text() + "\nckpt_kepp: 3\n")
    with pytest.raises(ConfigError, match=r"mine.yaml sets 'ckpt_kepp' \(did you mean 'ckpt_keep'"):
        setup(tmp_path, hparams=mine)


def test_a_key_of_ones_own_that_the_file_uses_is_fine(tmp_path):
    mine = tmp_path / "mine.yaml"
    text = re.sub(r"^number_of_epochs: .*$", "number_of_epochs: !ref <my_epochs>", CONV2D.read_text(), flags=re.M)
    mine.write_text("my_epochs: 3\n" + text)
    hparams, *_ = setup(tmp_path, hparams=mine)
    assert hparams["number_of_epochs"] == hparams["my_epochs"] == 3


def test_every_optional_key_the_code_reads_is_known():
    """OPTIONAL_HPARAMS must follow the code: a key read with ``hparams.get`` that no shipped YAML defines
    would otherwise be refused as a misspelling when a user sets it."""
    read = set()
    for path in [*REPO.glob("common/**/*.py"), *REPO.glob("recipes/**/*.py"), *REPO.glob("tools/**/*.py")]:
        text = path.read_text(encoding="utf-8")
        read |= set(re.findall(r"hparams\.get\(\s*[\"']([A-Za-z_0-9]+)[\"']", text))
        read |= set(re.findall(r"getattr\(self\.hparams,\s*[\"']([A-Za-z_0-9]+)[\"']", text))
    assert read and not read - recipe.known_hparams()


# -- the README's --ckpt_interval_steps -----------------------------------------------------------------
def test_ckpt_interval_steps_on_the_command_line_replaces_the_yaml_minutes(tmp_path):
    hparams, run_opts, *_ = setup(
        tmp_path, "--ckpt_interval_steps", "5", hparams=CLASSIFICATION.parent / "interpret" / "hparams" / "piq.yaml"
    )
    brain = sb.Brain(modules={"m": torch.nn.Linear(2, 2)}, hparams=hparams, run_opts=run_opts)
    assert (brain.ckpt_interval_steps, brain.ckpt_interval_minutes) == (5, 0)


# -- an output folder that cannot be one ------------------------------------------------------------------
def test_an_output_path_that_is_a_file_names_the_option(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(
        ConfigError,
        match=r"Cannot create .*out/save \(Not a directory\).*output_folder .*is an existing file.*--output_folder",
    ):
        setup(tmp_path)
    assert (tmp_path / "out").read_text() == "not a folder"


def test_a_read_only_output_folder_names_the_option(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    if os.geteuid() != 0:
        (tmp_path / "out").chmod(0o500)
    else:  # root writes anywhere: refuse the write probe as a read-only file system would
        real_touch = Path.touch

        def touch(self, *a, **k):
            if self.parent == tmp_path / "out":
                raise PermissionError(13, "Permission denied", str(self))
            return real_touch(self, *a, **k)

        monkeypatch.setattr(Path, "touch", touch)
    try:
        with pytest.raises(ConfigError, match=r"output_folder .*out cannot be written.*writable --output_folder"):
            setup(tmp_path)
    finally:
        (tmp_path / "out").chmod(0o700)


# -- 6. one run per output folder -----------------------------------------------------------------------
def write_lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    holder = {
        "pid": pid,
        "host": host or socket.gethostname(),
        "started": "2026-12-01T00:00:00",
        "command": "train.py x",
    }
    (folder / recipe.LOCK_NAME).write_text(json.dumps(holder))


def test_a_live_run_holding_the_folder_is_named(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path / "out", other.pid)
        with pytest.raises(ConfigError, match=rf"Another run \(pid {other.pid}, started .*\) is writing to .*out"):
            setup(tmp_path)
    finally:
        other.kill()
        other.wait()


def test_the_lock_appears_only_with_its_content_written(tmp_path, monkeypatch):
    # a run starting at the same moment must never read a half-written lock, which it would take as stale
    lock = recipe.OutputFolderLock(tmp_path)
    real_dump = json.dump
    seen = []

    def dump(obj, f, *args, **kwargs):
        seen.append(lock.path.exists())  # the lock must not exist yet while its content is being written
        return real_dump(obj, f, *args, **kwargs)

    monkeypatch.setattr(recipe.json, "dump", dump)
    lock.acquire()
    try:
        assert seen == [False]
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        assert [p.name for p in tmp_path.iterdir()] == [recipe.LOCK_NAME]  # no draft left behind
    finally:
        lock.release()


def test_a_lock_of_another_host_is_not_taken(tmp_path):
    write_lock(tmp_path / "out", 1, host="elsewhere.example")
    with pytest.raises(ConfigError, match="on host elsewhere.example"):
        recipe.OutputFolderLock(tmp_path / "out").acquire()


def test_a_stale_lock_of_a_dead_run_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path / "out", dead.pid)
    with caplog.at_level(logging.WARNING):
        lock = recipe.OutputFolderLock(tmp_path / "out").acquire()
    assert f"pid {dead.pid}" in caplog.text and "no longer running" in caplog.text
    assert json.loads((tmp_path / "out" / recipe.LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "out" / recipe.LOCK_NAME).exists()


def test_two_runs_in_one_output_folder_at_once_one_is_refused_the_other_finishes(synthetic_data, tmp_path):
    out = tmp_path / "run"
    args = [CLASSIFICATION / "train.py", CONV2D, "--data_folder", synthetic_data, "--output_folder", out]
    args += ["--out_n_neurons", "3", "--signal_length_s", "1", "--emb_dim", "16", "--batch_size", "2"]
    args += ["--number_of_epochs", "12", "--use_pretrained", "0"]
    # started together: whichever takes the folder first holds it for its whole training
    runs = [
        subprocess.Popen(
            [sys.executable, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes[0] == 0 and codes[1] != 0, [o[-2000:] for o in outputs]
    winner, loser = sorted(range(2), key=lambda i: runs[i].returncode)
    assert f"Another run (pid {runs[winner].pid}, started" in outputs[loser]
    assert f"is writing to {out}" in outputs[loser]
    assert json.loads((out / "test_results.json").read_text())["n_clips"] == 3  # the winner's, evaluated by it
    log = (out / "train_log.txt").read_text()
    epochs = [int(e) for e in re.findall(r"^epoch: (\d+),", log, flags=re.M)]
    assert epochs == list(range(1, 13))  # one run's log, not two interleaved
    assert not (out / recipe.LOCK_NAME).exists()  # released at exit
