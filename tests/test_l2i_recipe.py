"""ESC50/interpret: the NMF dictionary and L2I (conv2d and Cnn14) end to end, --test_only, failures."""

import json

import matplotlib.image as mpimg
import pytest
import torch

from common.inference import PretrainedInterpreter
from tests.conftest import INTERPRET, check_interpreter_outputs, run_recipe
from tools.export_interpreter import export_interpreter

NMF_ARGS = ["--batch_size", "2"]
L2I_TINY = ["--K", "100", "--psi_dim", "16", "--psi_upsample", "2", "--batch_size", "2"]


def run_nmf(data, out, n_classes, length_s, *extra):
    args = ["--data_folder", data, "--output_folder", out, "--out_n_neurons", n_classes, "--signal_length_s", length_s]
    return run_recipe(INTERPRET / "train_nmf.py", INTERPRET / "hparams" / "nmf.yaml", *args, *NMF_ARGS, *extra)


def check_nmf_outputs(out, K=100):
    result = json.loads((out / "test_results.json").read_text())
    assert result["K"] == K and result["n_clips"] > 0
    assert 0.0 < result["relative_error"] < 5.0 and result["loss"] > 0.0
    assert 0.0 <= result["activation_zero_fraction"] <= 1.0
    assert mpimg.imread(out / "nmf.png").ndim == 3
    ckpt = next((out / "save").glob("CKPT+*"))
    W = torch.load(ckpt / "nmf_decoder.ckpt", weights_only=True)["W"]
    assert W.shape == (513, K) and torch.isfinite(W).all()
    return result


@pytest.fixture(scope="module")
def synthetic_nmf(synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("nmf")
    run_nmf(synthetic_data, out, 3, 1, "--debug", "--debug_persistently")
    return out


def test_nmf_debug_on_synthetic_then_test_only_reproduces(synthetic_data, synthetic_nmf):
    first = check_nmf_outputs(synthetic_nmf)
    run_nmf(synthetic_data, synthetic_nmf, 3, 1, "--test_only")
    again = check_nmf_outputs(synthetic_nmf)
    assert again == first


def l2i_args(data, classifier, nmf, out, n_classes, length_s):
    return [
        "--data_folder",
        data,
        "--classifier_source",
        classifier,
        "--nmf_source",
        nmf,
        "--output_folder",
        out,
        "--out_n_neurons",
        n_classes,
        "--signal_length_s",
        length_s,
        *L2I_TINY,
    ]


def check_l2i_outputs(out, n_clips, n_samples):
    result, summary = check_interpreter_outputs(out, n_clips, n_samples)
    assert "theta_fidelity" in summary and 0.0 <= result["theta_fidelity"] <= 1.0
    for term in ("rec", "sparsity", "fidelity"):
        assert result[term] >= 0.0
    return result, summary


def test_l2i_conv2d_debug_on_synthetic_then_test_only_reproduces(
    synthetic_data, synthetic_classifier, synthetic_nmf, tmp_path
):
    out = tmp_path / "l2i"
    args = l2i_args(synthetic_data, synthetic_classifier, synthetic_nmf / "save", out, 3, 1)
    hparams = INTERPRET / "hparams" / "l2i_conv2d.yaml"
    run_recipe(INTERPRET / "train_l2i.py", hparams, *args, "--emb_dim", "16", "--debug", "--debug_persistently")
    first, summary = check_l2i_outputs(out, n_clips=3, n_samples=16000)
    assert 0.0 <= first["relevance_mass_accuracy"] <= 1.0 and 0.0 <= first["localization_auc"] <= 1.0
    run_recipe(INTERPRET / "train_l2i.py", hparams, *args, "--emb_dim", "16", "--test_only")
    again, summary_again = check_l2i_outputs(out, n_clips=3, n_samples=16000)
    assert summary_again == summary and again["checkpoint"] == first["checkpoint"]
    # exported, it loads offline through the pretrained-interpreter code path
    exported = export_interpreter(out, tmp_path / "exported", INTERPRET / "hparams" / "inference_l2i_conv2d.yaml")
    assert {"psi.ckpt", "theta.ckpt", "nmf_decoder.ckpt"} <= {p.name for p in exported.iterdir()}
    interp = PretrainedInterpreter.from_hparams(source=str(exported))
    listenable, label = interp.interpret_file(next((synthetic_data / "audio").iterdir()))
    assert listenable.shape == (16000,) and torch.isfinite(listenable).all()
    assert label in {"harmonic_low", "up_chirp", "click_train"}


def test_l2i_cnn14_debug_on_synthetic_then_test_only_reproduces(
    synthetic_data, synthetic_nmf, tiny_classifiers, tmp_path
):
    classifier = tiny_classifiers("cnn14", "synthetic")
    out = tmp_path / "l2i"
    args = [*l2i_args(synthetic_data, classifier, synthetic_nmf / "save", out, 3, 1), "--emb_dim", "64"]
    hparams = INTERPRET / "hparams" / "l2i_cnn14.yaml"
    run_recipe(INTERPRET / "train_l2i.py", hparams, *args, "--debug", "--debug_persistently")
    first, summary = check_l2i_outputs(out, n_clips=3, n_samples=16000)
    # the ground-truth masks (STFT grid) are mapped to the classifier's mel bands
    assert 0.0 <= first["relevance_mass_accuracy"] <= 1.0
    run_recipe(INTERPRET / "train_l2i.py", hparams, *args, "--test_only")
    _, summary_again = check_l2i_outputs(out, n_clips=3, n_samples=16000)
    assert summary_again == summary


def test_nmf_and_l2i_debug_on_real_esc10(esc10_data, esc10_classifier, tiny_classifiers, tmp_path):
    nmf = tmp_path / "nmf"
    run_nmf(esc10_data, nmf, 10, 5, "--debug", "--debug_persistently")
    check_nmf_outputs(nmf)
    out = tmp_path / "l2i_conv2d"
    args = [*l2i_args(esc10_data, esc10_classifier, nmf / "save", out, 10, 5), "--n_examples", "2", "--debug"]
    run_recipe(INTERPRET / "train_l2i.py", INTERPRET / "hparams" / "l2i_conv2d.yaml", *args, "--emb_dim", "16")
    result, summary = check_l2i_outputs(out, n_clips=4, n_samples=80000)
    assert "nan" in summary.lower()  # no ground truth for real clips: localization is NaN, not made up
    cnn14 = tiny_classifiers("cnn14", "esc10")
    out = tmp_path / "l2i_cnn14"
    args = [*l2i_args(esc10_data, cnn14, nmf / "save", out, 10, 5), "--n_examples", "1", "--debug"]
    run_recipe(INTERPRET / "train_l2i.py", INTERPRET / "hparams" / "l2i_cnn14.yaml", *args, "--emb_dim", "64")
    check_l2i_outputs(out, n_clips=4, n_samples=80000)


def test_missing_nmf_dictionary_says_what_was_expected(synthetic_data, synthetic_classifier, tmp_path):
    (tmp_path / "empty").mkdir()
    args = l2i_args(synthetic_data, synthetic_classifier, tmp_path / "empty", tmp_path / "o", 3, 1)
    proc = run_recipe(
        INTERPRET / "train_l2i.py",
        INTERPRET / "hparams" / "l2i_conv2d.yaml",
        *args,
        "--emb_dim",
        "16",
        "--debug",
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "nmf_decoder.ckpt" in out and "train_nmf.py" in out
