"""SpeechBrain's own ESC50 recipe tests, run unchanged against this project's scripts of the same names.

``tests/data/speechbrain_ESC50.csv`` is SpeechBrain's ``tests/recipes/ESC50.csv``
(speechbrain/speechbrain at 9c826ef, Apache-2.0), header included: 13 commands
(script, hparams file, ``test_debug_flags``, ``test_debug_checks``). Each is
composed as SpeechBrain's ``tests/utils/recipe_tests.py`` composes it
(``PYTHONPATH=<root>/<script dir> python <script> <hparams> <flags>
--output_folder=<out> --debug --debug_persistently``) and run offline from a
folder laid out as SpeechBrain's repository root: ``recipes/`` (a copy of this
project's, without any ``results/``, so nothing trained elsewhere is picked up)
and SpeechBrain's 5-clip sample, ``tests/samples/ESC50`` (its file names,
folds and targets: dog, car_horn, then thunderstorm in folds 3-5). The
interpret commands find no trained classifier under the recipe folder and,
being --debug runs, explain a randomly initialised one, with a warning (what
SpeechBrain's ``--use_pretrained 0`` does); piq_focalnet, piq_vit and
lmac_cnn14 run with ``--out_n_neurons 2`` on training folds of 3 classes: the
interpreter explains the classifier's two outputs and the labels only name
the clips' true classes.
"""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, write_speechbrain_sample

COMMANDS_CSV = Path(__file__).parent / "data" / "speechbrain_ESC50.csv"


def speechbrain_commands():
    with open(COMMANDS_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 13
    return rows


def command_id(row):
    return f"{Path(row['Script_file']).stem}-{Path(row['Hparam_file']).stem}"


@pytest.fixture(scope="module")
def speechbrain_root(tmp_path_factory):
    """A folder the commands take for SpeechBrain's repository root."""
    root = tmp_path_factory.mktemp("speechbrain_root")
    shutil.copytree(REPO / "recipes", root / "recipes", ignore=shutil.ignore_patterns("results", "__pycache__"))
    write_speechbrain_sample(root / "tests" / "samples" / "ESC50")
    return root


def compose(row, root, output_folder):
    """The command line SpeechBrain's run_recipe_tests builds for a row (no performance check: --debug)."""
    return (
        f"PYTHONPATH={root}/{os.path.dirname(row['Script_file'])} python {row['Script_file']} {row['Hparam_file']} "
        f"{row['test_debug_flags']} --output_folder={output_folder} --debug --debug_persistently"
    )


def run_shell(cmd, cwd, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` is this one
    return subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("row", speechbrain_commands(), ids=command_id)
def test_speechbrain_esc50_recipe_command_completes_offline(row, speechbrain_root):
    out = Path("tests") / "tmp" / command_id(row)
    proc = run_shell(compose(row, speechbrain_root, out), speechbrain_root)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{compose(row, speechbrain_root, out)}\n{said[-6000:]}"
    out = speechbrain_root / out
    expected = re.search(r"file_exists=\[(.*?)\]", row["test_debug_checks"]).group(1).split(",")
    missing = [name for name in expected if not (out / name.strip()).exists()]
    assert not missing, f"missing {missing} in {sorted(p.name for p in out.iterdir())}"
    log = (out / "log.txt").read_text()
    if "/interpret/" in row["Script_file"] and "nmf" not in row["Hparam_file"]:
        # nothing trained yet under recipes/ESC50/classification: a --debug run says it explains a random classifier
        assert "RANDOMLY INITIALISED classifier" in log
        assert str(speechbrain_root / "recipes" / "ESC50" / "classification" / "results") in log
        assert (out / "test_metrics_summary.md").is_file()
    if "--out_n_neurons 2" in row["test_debug_flags"]:
        assert "3 classes but the classifier only 2 outputs" in log
        assert len((out / "save" / "label_encoder.txt").read_text().split("=>")) - 1 >= 3
    for ckpt in (out / "save").glob("CKPT+*"):  # full-size models: up to 1 GB each
        shutil.rmtree(ckpt)


def test_missing_relative_classifier_source_is_a_missing_path_with_the_command_that_makes_it(speechbrain_root):
    """Outside --debug, piq.yaml's default ``../classification/results/conv2d-esc50/1234/save`` resolves against
    the interpret recipe's folder from any working directory, and is reported missing, never as a hub id."""
    args = "--data_folder {data} --use_pretrained 0 --out_n_neurons 3 --output_folder {out}"
    expected = speechbrain_root / "recipes" / "ESC50" / "classification" / "results" / "conv2d-esc50" / "1234" / "save"
    data = speechbrain_root / "tests" / "samples" / "ESC50"
    for cwd in (speechbrain_root, speechbrain_root / "recipes" / "ESC50" / "interpret", data):
        script = speechbrain_root / "recipes" / "ESC50" / "interpret" / "train_piq.py"
        hparams = script.parent / "hparams" / "piq.yaml"
        out = speechbrain_root / "tests" / "tmp" / f"missing-{cwd.name}"
        proc = run_shell(f"python {script} {hparams} " + args.format(data=data, out=out), cwd)
        said = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "HuggingFace hub" not in said and "hub id" not in said, said[-3000:]
        assert f"Classifier checkpoint folder {expected} does not exist" in said, said[-3000:]
        make = f"python {expected.parents[4] / 'classification' / 'train.py'}"
        assert make in said and f"--output_folder {expected.parent}" in said and "--out_n_neurons 3" in said


def test_debug_does_not_replace_a_classifier_the_command_line_names(speechbrain_root):
    """The --debug fallback is for the hparams' defaults; a source given on the command line must load."""
    script = speechbrain_root / "recipes" / "ESC50" / "interpret" / "train_piq.py"
    cmd = (
        f"python {script} {script.parent / 'hparams' / 'piq.yaml'} --data_folder tests/samples/ESC50 "
        "--use_pretrained 0 --out_n_neurons 3 --classifier_source results/nowhere/save "
        "--output_folder tests/tmp/named --debug"
    )
    proc = run_shell(cmd, speechbrain_root)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "RANDOMLY INITIALISED" not in said
    assert f"Classifier checkpoint folder results/nowhere/save does not exist (looked for {speechbrain_root}" in said
