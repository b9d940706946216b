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
    from common.data.synthetic.scenes import make_synthetic_esc50

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


# SpeechBrain's tests/samples/ESC50/meta/esc50.csv (filename, fold, target, category, esc10, src_file, take), and
# the real ESC-10 clip whose audio each row carries (the dog clip is SpeechBrain's own; ESC-10 has no car horn
# or thunderstorm, so those rows carry other real clips).
SPEECHBRAIN_SAMPLE = [
    ("1-100032-A-0.wav", 1, 0, "dog", "True", "100032", "A", "1-100032-A-0"),
    ("2-100648-A-43.wav", 2, 43, "car_horn", "False", "100648", "A", "2-100786-A-1"),
    ("3-103051-C-19.wav", 3, 19, "thunderstorm", "False", "103051", "C", "3-132852-A-10"),
    ("4-156993-A-19.wav", 4, 19, "thunderstorm", "False", "156993", "A", "4-160999-A-10"),
    ("5-156999-C-19.wav", 5, 19, "thunderstorm", "False", "156999", "C", "5-181766-A-10"),
]


def write_speechbrain_sample(folder):
    """SpeechBrain's 5-clip ESC50 sample layout (its names, folds, targets; 5 s, 44.1 kHz, 16-bit PCM), with
    real ESC-10 audio where ../shared/data/esc10 is present, else short synthetic noise bursts."""
    import numpy as np
    import soundfile as sf

    (folder / "audio").mkdir(parents=True)
    (folder / "meta").mkdir()
    with open(folder / "meta" / "esc50.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(row[:7] for row in SPEECHBRAIN_SAMPLE)
    rng = np.random.default_rng(0)
    for name, *_, source in SPEECHBRAIN_SAMPLE:
        ogg = SHARED_ESC10 / "ogg" / f"{source}.ogg"
        if ogg.is_file():
            x, sr = sf.read(ogg, dtype="float32")
            x = np.resize(x.mean(axis=1) if x.ndim > 1 else x, 5 * sr)
        else:
            sr = 44100
            x = (0.1 * rng.standard_normal(5 * sr) * (np.arange(5 * sr) % sr < sr // 2)).astype(np.float32)
        sf.write(folder / "audio" / name, np.clip(x, -1, 1), sr, subtype="PCM_16")
    return folder


@pytest.fixture(scope="session")
def speechbrain_sample(tmp_path_factory):
    """SpeechBrain's tests/samples/ESC50 layout (5 clips, one per fold; classes dog, car_horn, thunderstorm)."""
    return write_speechbrain_sample(tmp_path_factory.mktemp("speechbrain_sample") / "ESC50")


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst


def run_recipe(script, hparams, *args, timeout=900, **options):
    """Run a recipe script as a user would (``common.recipe.run_recipe``: ``cwd``, ``env``, ``check``, ``launcher``);
    return the CompletedProcess, whose ``stdout`` holds stdout and stderr as printed. A failed recipe is a failed
    assertion, with its output's tail."""
    from common.recipe import RecipeError
    from common.recipe import run_recipe as run

    try:
        return run(script, hparams, list(args), timeout=timeout, tail_lines=120, **options)
    except RecipeError as exc:
        raise AssertionError(str(exc)) from None


def tiny_overrides(model, *changes):
    """TINY_OVERRIDES[model], with each ``--key value`` of ``changes`` replacing (or adding) that key."""
    pairs = dict(zip(TINY_OVERRIDES[model][::2], TINY_OVERRIDES[model][1::2], strict=True))
    pairs.update(zip(changes[::2], changes[1::2], strict=True))
    return [item for pair in pairs.items() for item in pair]


def train_tiny_classifier(data, out, n_classes, length_s, model="conv2d", changes=()):
    """A classifier from the classification recipe in debug mode (tiny, a few batches); its save folder.
    ``changes``: ``--key value`` pairs replacing TINY_OVERRIDES[model]'s (see ``tiny_overrides``)."""
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
        *tiny_overrides(model, *changes),
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
    ``tiny_classifiers("focalnet", "esc10")`` -> the save folder; ``tiny_classifiers("focalnet", "esc10",
    "--image_size", "64")``: one with those TINY_OVERRIDES changed."""
    made = {}

    def get(model, dataset, *changes):
        if (model, dataset, changes) not in made:
            data = request.getfixturevalue("synthetic_data" if dataset == "synthetic" else "esc10_data")
            n_classes, length_s = (3, 1) if dataset == "synthetic" else (10, 5)
            out = tmp_path_factory.mktemp(f"{dataset}_{model}")
            made[model, dataset, changes] = train_tiny_classifier(data, out, n_classes, length_s, model, changes)
        return made[model, dataset, changes]

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


def logged(out, stage, term):
    """``stage term`` per epoch, from a recipe's train_log.txt."""
    import re

    text = (out / "train_log.txt").read_text()
    return [float(v) for v in re.findall(rf"^epoch: \d+.*? {stage} {term}: ([-0-9.e+]+)", text, flags=re.M)]


def assert_objective_falls(out, term="loss"):
    """A trained interpreter learned its own objective: on the validation clips, lower at every epoch and
    at least 3% lower after training than after the first epoch (a broken method, e.g. no gradient reaching
    the trained part or a sign error, does not). Needs >= 3 epochs (e.g. ``--debug_epochs 3 --lr 0.01``)."""
    values = logged(out, "valid", term)
    assert (
        len(values) >= 3
        and all(b < a for a, b in zip(values[:-1], values[1:], strict=True))
        and values[-1] < values[0] - 0.03 * abs(values[0])
    ), values


def rebuild_run(out, recover=False):
    """What an interpreter recipe run in ``out`` explained, rebuilt from its own files: its hparams (from
    out/hyperparams.yaml, overrides included), the classifier (weights from out/save/classifier), the
    interpreter (with ``recover``: its best checkpoint by valid loss), and the waveforms and spectrograms
    of the test clips its per-clip table lists, in that order; with those rows."""
    import tempfile

    import torch

    from common.data.audio import load_audio
    from common.models.pretrained import load_classifier
    from common.recipe import load_hparams

    hparams = load_hparams(out / "hyperparams.yaml")
    classifier = hparams["classifier"]
    with tempfile.TemporaryDirectory() as tmp:
        load_classifier(classifier, out / "save" / "classifier", tmp)
    if recover:
        assert hparams["checkpointer"].recover_if_possible(min_key="loss") is not None
    interpreter = hparams["interpreter"].eval()
    classifier.eval()
    with open(out / "test_metrics_per_clip.csv") as f:
        rows = list(csv.DictReader(f))
    manifest = json.loads((out / "manifest" / "test.json").read_text())
    wavs = torch.stack(
        [
            load_audio(manifest[r["id"]]["wav"], hparams["sample_rate"], length_s=hparams["signal_length_s"])
            for r in rows
        ]
    )
    with torch.no_grad():
        X = classifier.features(wavs)
    return hparams, classifier, interpreter, wavs, X, rows


def per_clip_correlation(a, b):
    """Pearson correlation of each clip's two maps (B, ...) -> (B,)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-30)
