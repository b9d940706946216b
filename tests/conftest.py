"""Shared fixtures: tiny synthetic data made here, the real ESC-10 clips, recipe runner."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing in the tests may reach the network: hub look-ups fail fast, offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_ESC10 = REPO.parent / "shared" / "data" / "esc10"
CLASSIFICATION = REPO / "recipes" / "ESC50" / "classification"
INTERPRET = REPO / "recipes" / "ESC50" / "interpret"

# Tiny model sizes so every hparams file runs in seconds on a CPU.
TINY_OVERRIDES = {
    "conv2d": ["--emb_dim", "16"],
    "cnn14": ["--emb_dim", "64"],
    "focalnet": ["--focalnet_embed_dim", "8", "--focalnet_depths", "[1,1,1,1]", "--image_size", "32"],
    "vit": [
        "--vit_hidden_size",
        "16",
        "--vit_layers",
        "1",
        "--vit_heads",
        "2",
        "--vit_intermediate_size",
        "32",
        "--image_size",
        "32",
        "--vit_patch_size",
        "8",
    ],
}


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """3 classes x 5 clips of 1 s (one clip per class in each fold), with ground truth."""
    from common.data.synthetic import make_synthetic_esc50

    out = tmp_path_factory.mktemp("synthetic")
    make_synthetic_esc50(out, n_classes=3, clips_per_class=5, duration_s=1.0, event_s=(0.3, 0.5), seed=0)
    return out


@pytest.fixture(scope="session")
def esc10_data(tmp_path_factory):
    """The 400 real ESC-10 clips in the ESC-50 layout (skipped where they are absent)."""
    if not (SHARED_ESC10 / "materialize.py").is_file():
        pytest.skip(f"real ESC-10 clips not found at {SHARED_ESC10}")
    out = tmp_path_factory.mktemp("esc10")
    subprocess.run([sys.executable, str(SHARED_ESC10 / "materialize.py"), str(out)], check=True, capture_output=True)
    return out


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst


def run_recipe(script, hparams, *args, cwd=None, env=None, timeout=900, check=True, launcher=None):
    """Run a recipe script as a user would; return the CompletedProcess."""
    cmd = [*(launcher or [sys.executable]), str(script), str(hparams), *map(str, args)]
    proc = subprocess.run(
        cmd, cwd=cwd or REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def train_tiny_classifier(data, out, n_classes, length_s, model="conv2d"):
    """A classifier from the classification recipe in debug mode (tiny, a few batches); its save folder."""
    run_recipe(
        CLASSIFICATION / "train.py",
        CLASSIFICATION / "hparams" / f"{model}.yaml",
        "--data_folder",
        data,
        "--output_folder",
        out,
        "--use_pretrained",
        "0",
        "--out_n_neurons",
        n_classes,
        "--batch_size",
        "2",
        "--signal_length_s",
        length_s,
        "--debug",
        "--debug_persistently",
        *TINY_OVERRIDES[model],
    )
    return out / "save"


@pytest.fixture(scope="session")
def synthetic_classifier(synthetic_data, tmp_path_factory):
    return train_tiny_classifier(synthetic_data, tmp_path_factory.mktemp("clf"), 3, 1)


@pytest.fixture(scope="session")
def esc10_classifier(esc10_data, tmp_path_factory):
    return train_tiny_classifier(esc10_data, tmp_path_factory.mktemp("esc10_clf"), 10, 5)


@pytest.fixture(scope="session")
def tiny_classifiers(request, tmp_path_factory):
    """Tiny classifiers of each architecture, trained in debug mode, made on first use:
    ``tiny_classifiers("focalnet", "esc10")`` -> the save folder."""
    made = {}

    def get(model, dataset):
        if (model, dataset) not in made:
            data = request.getfixturevalue("synthetic_data" if dataset == "synthetic" else "esc10_data")
            n_classes, length_s = (3, 1) if dataset == "synthetic" else (10, 5)
            out = tmp_path_factory.mktemp(f"{dataset}_{model}")
            made[model, dataset] = train_tiny_classifier(data, out, n_classes, length_s, model=model)
        return made[model, dataset]

    return get


def check_interpreter_outputs(out, n_clips, n_samples):
    """The tables, wavs and figures an interpreter recipe writes, checked for content."""
    import matplotlib.image as mpimg
    import soundfile as sf

    summary = (out / "test_metrics_summary.md").read_text()
    for column in ("Fid-In", "Faith. mask-out", "Faith. mask-in", "AI (%)", "AD (%)", "AG (%)", "SPS", "COMP"):
        assert column in summary
    with open(out / "test_metrics_per_clip.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_clips
    for row in rows:
        assert float(row["fid_in"]) in (0.0, 1.0)
        assert -1.0 <= float(row["faithfulness_mask_out"]) <= 1.0
        assert 0.0 <= float(row["ad"]) <= 100.0 and 0.0 <= float(row["sps"]) <= 1.0
    examples = sorted((out / "interpretations").iterdir())
    assert examples
    for clip in examples:
        for name in ("original.wav", "interpretation.wav"):
            wav, sr = sf.read(clip / name)
            assert sr == 16000 and wav.shape == (n_samples,) and abs(wav).max() <= 1.0
        assert mpimg.imread(clip / "explanation.png").ndim == 3
    return json.loads((out / "test_results.json").read_text()), summary
