"""ESC50/interpret: AMT, PIQ on FocalNet/ViT, L-MAC (and FT) end to end, offline, and eval.py on contaminated inputs."""

import csv
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from common.interpreters.baselines import InputMagnitude
from common.metrics import EvaluationSuite
from tests.conftest import (
    INTERPRET,
    assert_objective_falls,
    check_interpreter_outputs,
    per_clip_correlation,
    rebuild_run,
    run_recipe,
    tiny_overrides,
)

# (script, hparams, classifier architecture, interpreter-size overrides)
RECIPES = {
    "amt_focalnet": ("interpret_amt.py", "focalnet", []),
    "amt_vit": ("interpret_amt.py", "vit", []),
    "piq_focalnet": ("train_piq.py", "focalnet", ["--K", "12", "--decoder_channels", "[8,8,8,8,8]"]),
    "piq_vit": ("train_piq.py", "vit", ["--K", "12", "--decoder_channels", "[8,8,8,8]"]),
    "lmac_cnn14": ("train_lmac.py", "cnn14", ["--decoder_dim", "8"]),
    "lmac_conv2d": ("train_lmac.py", "conv2d", ["--decoder_dim", "8"]),
}


# the tiny FocalNet's last stage at image_size 32 is 1 x 1, so its modulator map (AMT's saliency) would be one
# constant: AMT explains a FocalNet trained at 64 (a 2 x 2 map)
CLASSIFIER_CHANGES = {"amt_focalnet": ("--image_size", "64")}

# trained recipes: enough steps for the objective to move (3 debug epochs of 2 batches, a higher learning rate)
LEARNS = ["--debug_epochs", "3", "--lr", "0.01"]


def objective(name):
    """The logged validation term a trained recipe minimises (L-MAC: its whole loss; PIQ: reconstruction)."""
    return "loss" if name.startswith("lmac") else "rec"


def classifier_for(name, dataset, tiny_classifiers):
    return tiny_classifiers(RECIPES[name][1], dataset, *CLASSIFIER_CHANGES.get(name, ()))


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
        *tiny_overrides(model, *CLASSIFIER_CHANGES.get(name, ())),
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


def check_amt_reads_the_classifier(out, top_fraction=0.1):
    """AMT trains nothing, so what can break is what it reads. On the clips the run explained (rebuilt from
    its files): the mask keeps the top 10% of bins, the map is not a constant, the per-clip table is of this
    explanation, and the map comes from the classifier: not the input-magnitude control, and it changes
    when the backbone is re-initialised (a broken AMT reading the input, or a constant, fails).

    The suite's faithfulness scores are not compared with the opposite (1 - mask) or a random mask here:
    the debug-trained classifiers are at chance and their outputs hardly depend on the input, so those
    comparisons go either way (measured: ViT deletion AUC 0.18 / 0.32 / 0.28 for AMT, 0.16 / 0.09 / 0.27
    for the reversed ranking, on the 3 synthetic clips)."""
    _, classifier, amt, _, X, rows = rebuild_run(out)
    explanation = amt.explain(X=X)
    saliency = explanation.saliency.flatten(1)
    kept = explanation.mask.flatten(1).mean(dim=1)
    assert torch.all((kept >= top_fraction - 0.01) & (kept <= top_fraction + 0.05)), kept
    # relative spread: 1e-10 (float noise) for a 1 x 1 map; 1e-3 for a tiny ViT's near-uniform attention
    assert torch.all(saliency.std(dim=1) > 1e-4 * saliency.abs().mean(dim=1)), saliency.std(dim=1)
    sps = EvaluationSuite(["sps"]).evaluate(classifier, X, explanation)["sps"]
    assert torch.allclose(sps, torch.tensor([float(r["sps"]) for r in rows]), rtol=1e-3, atol=1e-6)
    assert torch.all(
        per_clip_correlation(explanation.saliency, InputMagnitude(classifier).attribute(X, explanation.target)) < 0.9
    )
    torch.manual_seed(0)
    backbone = classifier.embedding_model
    for module in backbone.modules():
        if module is not backbone and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    assert torch.all(per_clip_correlation(explanation.saliency, amt.explain(X=X).saliency) < 0.9)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_debug_run_on_synthetic(name, synthetic_data, tiny_classifiers, tmp_path):
    classifier = classifier_for(name, "synthetic", tiny_classifiers)
    out = tmp_path / name
    learns = [] if name.startswith("amt") else LEARNS
    args = recipe_args(name, synthetic_data, classifier, out, 3, 1)
    run_interpreter(name, *args, *learns, "--debug", "--debug_persistently")
    result, summary = check_interpreter_outputs(out, n_clips=3, n_samples=16000)
    check_terms(name, out)
    if learns:
        assert_objective_falls(out, objective(name))
    else:
        check_amt_reads_the_classifier(out)
    assert 0.0 <= result["localization_auc"] <= 1.0 and 0.0 <= result["relevance_mass_accuracy"] <= 1.0


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_debug_run_on_real_esc10(name, esc10_data, tiny_classifiers, tmp_path):
    classifier = classifier_for(name, "esc10", tiny_classifiers)
    out = tmp_path / name
    args = [*recipe_args(name, esc10_data, classifier, out, 10, 5), "--n_examples", "1", "--curve_steps", "2"]
    learns = ["--debug_epochs", "1"] if name.startswith("amt") else LEARNS
    run_interpreter(name, *args, "--debug", *learns)
    result, summary = check_interpreter_outputs(out, n_clips=4, n_samples=80000)
    assert math.isnan(result["localization_auc"])  # real clips have no ground truth: NaN, not made up
    check_terms(name, out)
    if name.startswith("amt"):
        check_amt_reads_the_classifier(out)
    else:
        assert_objective_falls(out, objective(name))


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
