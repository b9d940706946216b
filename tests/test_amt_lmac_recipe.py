"""ESC50/interpret: AMT, PIQ on FocalNet/ViT, L-MAC (and FT) end to end, offline, and eval.py on contaminated inputs."""

import csv
import math

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import INTERPRET, TINY_OVERRIDES, check_interpreter_outputs, run_recipe

# (script, hparams, classifier architecture, interpreter-size overrides)
RECIPES = {
    "amt_focalnet": ("interpret_amt.py", "focalnet", []),
    "amt_vit": ("interpret_amt.py", "vit", []),
    "piq_focalnet": ("train_piq.py", "focalnet", ["--K", "12", "--decoder_channels", "[8,8,8,8,8]"]),
    "piq_vit": ("train_piq.py", "vit", ["--K", "12", "--decoder_channels", "[8,8,8,8]"]),
    "lmac_cnn14": ("train_lmac.py", "cnn14", ["--decoder_dim", "8"]),
    "lmac_conv2d": ("train_lmac.py", "conv2d", ["--decoder_dim", "8"]),
}


def recipe_args(name, data, classifier, out, n_classes, length_s):
    _, model, sizes = RECIPES[name]
    return [
        "--data_folder",
        data,
        "--classifier_source",
        classifier,
        "--output_folder",
        out,
        "--out_n_neurons",
        n_classes,
        "--signal_length_s",
        length_s,
        "--batch_size",
        "2",
        "--use_pretrained",
        "0",
        *TINY_OVERRIDES[model],
        *sizes,
    ]


def run_interpreter(name, *args, check=True):
    script = RECIPES[name][0]
    return run_recipe(INTERPRET / script, INTERPRET / "hparams" / f"{name}.yaml", *args, check=check)


def check_terms(name, out):
    with open(out / "train_log.txt") as f:
        log = f.read()
    if name.startswith("amt"):
        assert "test fid_in" in log and "epoch" not in log  # evaluated, never trained
    elif name.startswith("lmac"):
        assert all(f"train {t}:" in log for t in ("in", "out", "l1", "tv"))
    else:
        assert all(f"train {t}:" in log for t in ("rec", "vq", "commit"))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_debug_run_on_synthetic(name, synthetic_data, tiny_classifiers, tmp_path):
    classifier = tiny_classifiers(RECIPES[name][1], "synthetic")
    out = tmp_path / name
    run_interpreter(name, *recipe_args(name, synthetic_data, classifier, out, 3, 1), "--debug", "--debug_persistently")
    result, summary = check_interpreter_outputs(out, n_clips=3, n_samples=16000)
    check_terms(name, out)
    assert 0.0 <= result["localization_auc"] <= 1.0 and 0.0 <= result["relevance_mass_accuracy"] <= 1.0
    if name.startswith("amt"):  # the mask keeps the top 10% of bins
        with open(out / "test_metrics_per_clip.csv") as f:
            assert all(0.0 <= float(r["sps"]) <= 1.0 for r in csv.DictReader(f))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_debug_run_on_real_esc10(name, esc10_data, tiny_classifiers, tmp_path):
    classifier = tiny_classifiers(RECIPES[name][1], "esc10")
    out = tmp_path / name
    args = [*recipe_args(name, esc10_data, classifier, out, 10, 5), "--n_examples", "1", "--curve_steps", "2"]
    run_interpreter(name, *args, "--debug", "--debug_epochs", "1")
    result, summary = check_interpreter_outputs(out, n_clips=4, n_samples=80000)
    assert math.isnan(result["localization_auc"])  # real clips have no ground truth: NaN, not made up
    check_terms(name, out)


def test_lmac_finetuning_and_contaminated_evaluation(synthetic_data, tiny_classifiers, tmp_path):
    classifier = tiny_classifiers("conv2d", "synthetic")
    base = tmp_path / "lmac"
    run_interpreter(
        "lmac_conv2d",
        *recipe_args("lmac_conv2d", synthetic_data, classifier, base, 3, 1),
        "--debug",
        "--debug_persistently",
    )
    # fine-tuning needs the trained L-MAC and a contamination, and says so
    ft = tmp_path / "lmac_ft"
    args = recipe_args("lmac_conv2d", synthetic_data, classifier, ft, 3, 1)
    proc = run_interpreter("lmac_conv2d", *args, "--debug", "--finetuning", "True", check=False)
    assert proc.returncode != 0 and "--pretrained_interpreter" in proc.stdout + proc.stderr
    run_interpreter(
        "lmac_conv2d",
        *args,
        "--debug",
        "--debug_persistently",
        "--finetuning",
        "True",
        "--pretrained_interpreter",
        base / "save",
        "--train_contamination",
        "white_noise",
        "--train_snr_db",
        "5",
    )
    log = (ft / "train_log.txt").read_text()
    assert "train guide:" in log
    # a local noise folder at an odd sample rate
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    sf.write(noise / "brown.wav", (np.cumsum(rng.standard_normal(24000)) / 200).astype("float32"), 8000)
    eval_args = [*recipe_args("lmac_conv2d", synthetic_data, classifier, ft, 3, 1), "--curve_steps", "2"]
    run_recipe(
        INTERPRET / "eval.py",
        INTERPRET / "hparams" / "lmac_conv2d.yaml",
        *eval_args,
        "--conditions",
        "clean,mixture,white_noise,noise_folder",
        "--snrs",
        "0,20",
        "--noise_folder",
        noise,
    )
    with open(ft / "contamination_summary.csv") as f:
        rows = {r["condition"]: r for r in csv.DictReader(f)}
    assert list(rows) == [
        "clean",
        "mixture 0.8/0.2",
        "white noise 0 dB",
        "white noise 20 dB",
        "noise folder 0 dB",
        "noise folder 20 dB",
    ]
    for condition, row in rows.items():
        assert 0.0 <= float(row["Fid-In"]) <= 1.0 and 0.0 <= float(row["AD (%)"]) <= 100.0
        assert 0.0 <= float(row["Localization AUC"]) <= 1.0  # clean: synthetic truth; others: the clean part's mask
        check_interpreter_outputs(ft / "contamination" / condition.replace(" ", "_").replace("/", "-"), 3, 16000)
    # the interpretation of a 20 dB mixture is closer to the clean clip than that of a 0 dB one
    assert float(rows["white noise 20 dB"]["SI-SNR (dB)"]) > float(rows["white noise 0 dB"]["SI-SNR (dB)"])
    proc = run_recipe(
        INTERPRET / "eval.py",
        INTERPRET / "hparams" / "lmac_conv2d.yaml",
        *eval_args,
        "--conditions",
        "noise_folder",
        "--noise_folder",
        tmp_path / "nowhere",
        check=False,
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "nowhere" in said and "does not exist" in said


def test_amt_without_a_classifier_checkpoint_names_the_files(synthetic_data, tmp_path):
    (tmp_path / "empty").mkdir()
    args = recipe_args("amt_vit", synthetic_data, tmp_path / "empty", tmp_path / "o", 3, 1)
    proc = run_interpreter("amt_vit", *args, "--debug", check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "embedding_model.ckpt" in said and "classifier.ckpt" in said
