"""ESC50/interpret: PIQ end to end (synthetic and ESC-10), --test_only, clear failures."""

import csv

import pytest
import torch

from common.interpreters.base import Explanation
from common.metrics import EvaluationSuite
from tests.conftest import CLASSIFICATION, INTERPRET, assert_objective_falls, check_interpreter_outputs, run_recipe

PIQ_TINY = ["--emb_dim", "16", "--K", "64", "--decoder_channels", "[8,8,4,4]"]
# enough steps for the objective to move: 3 debug epochs of 2 batches at a higher learning rate
LEARNS = ["--debug_epochs", "3", "--lr", "0.01"]


def test_piq_debug_on_synthetic_then_test_only_reproduces(synthetic_data, synthetic_classifier, tmp_path):
    out = tmp_path / "piq"
    args = [
        "--data_folder",
        synthetic_data,
        "--classifier_source",
        synthetic_classifier,
        "--output_folder",
        out,
        "--out_n_neurons",
        "3",
        "--batch_size",
        "2",
        "--signal_length_s",
        "1",
        *PIQ_TINY,
        *LEARNS,
    ]
    run_recipe(INTERPRET / "train_piq.py", INTERPRET / "hparams" / "piq.yaml", *args, "--debug", "--debug_persistently")
    first, summary = check_interpreter_outputs(out, n_clips=3, n_samples=16000)
    assert_objective_falls(out, "rec")
    # ground truth exists for synthetic scenes: localization and SI-SNR are reported
    assert 0.0 <= first["relevance_mass_accuracy"] <= 1.0 and 0.0 <= first["localization_auc"] <= 1.0
    assert "SI-SNR" in summary
    run_recipe(INTERPRET / "train_piq.py", INTERPRET / "hparams" / "piq.yaml", *args, "--test_only")
    again, summary_again = check_interpreter_outputs(out, n_clips=3, n_samples=16000)
    assert summary_again == summary and again["checkpoint"] == first["checkpoint"]


def test_piq_debug_on_real_esc10(esc10_data, esc10_classifier, tmp_path):
    clf = esc10_classifier
    out = tmp_path / "piq"
    run_recipe(
        INTERPRET / "train_piq.py",
        INTERPRET / "hparams" / "piq.yaml",
        "--data_folder",
        esc10_data,
        "--classifier_source",
        clf,
        "--output_folder",
        out,
        "--out_n_neurons",
        "10",
        "--batch_size",
        "2",
        "--n_examples",
        "2",
        "--debug",
        *PIQ_TINY,
        *LEARNS,
    )
    result, summary = check_interpreter_outputs(out, n_clips=4, n_samples=80000)
    assert_objective_falls(out, "rec")
    assert "SI-SNR" not in summary or "nan" in summary.lower()  # no ground truth for real clips
    assert 0.0 <= result["fid_in"] <= 1.0


def test_missing_classifier_checkpoint_says_what_was_expected(synthetic_data, tmp_path):
    proc = run_recipe(
        INTERPRET / "train_piq.py",
        INTERPRET / "hparams" / "piq.yaml",
        "--data_folder",
        synthetic_data,
        "--classifier_source",
        tmp_path / "empty",
        "--output_folder",
        tmp_path / "o",
        "--out_n_neurons",
        "3",
        "--debug",
        *PIQ_TINY,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "embedding_model.ckpt" in out and "classifier.ckpt" in out


def test_incompatible_classifier_checkpoint_is_refused(synthetic_data, synthetic_classifier, tmp_path):
    proc = run_recipe(
        INTERPRET / "train_piq.py",
        INTERPRET / "hparams" / "piq.yaml",
        "--data_folder",
        synthetic_data,
        "--classifier_source",
        synthetic_classifier,
        "--output_folder",
        tmp_path / "o",
        "--out_n_neurons",
        "3",
        "--debug",
        "--emb_dim",
        "32",
        "--K",
        "64",
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "does not fit" in out and "shape mismatches" in out


def test_pretrained_classifier_hub_id_offline_is_clear(synthetic_data, tmp_path):
    proc = run_recipe(
        INTERPRET / "train_piq.py",
        INTERPRET / "hparams" / "piq.yaml",
        "--data_folder",
        synthetic_data,
        "--use_pretrained",
        "True",
        "--output_folder",
        tmp_path / "o",
        "--out_n_neurons",
        "3",
        "--debug",
        *PIQ_TINY,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "speechbrain/PIQ-ESC50" in out and "HuggingFace hub" in out


def test_mask_of_the_wrong_shape_is_refused():
    X = torch.rand(2, 10, 8)
    with pytest.raises(ValueError, match=r"saliency \(2, 10, 8\) and mask \(2, 9, 8\)"):
        Explanation(saliency=X, mask=torch.rand(2, 9, 8), target=torch.zeros(2, dtype=torch.long))
    bad = Explanation(saliency=torch.rand(2, 9, 8), mask=torch.rand(2, 9, 8), target=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(2, 9, 8\) does not match X shape \(2, 10, 8\)"):
        EvaluationSuite(["fid_in", "sps"]).evaluate(torch.nn.Identity(), X, bad)


def test_export_round_trip_from_a_local_folder_and_a_local_hub_cache(
    synthetic_data, synthetic_classifier, tmp_path, monkeypatch
):
    import shutil

    from common.errors import HubUnavailableError
    from common.inference import PretrainedInterpreter
    from common.training.export import export_interpreter

    out = tmp_path / "piq"
    run_recipe(
        INTERPRET / "train_piq.py",
        INTERPRET / "hparams" / "piq.yaml",
        "--data_folder",
        synthetic_data,
        "--classifier_source",
        synthetic_classifier,
        "--output_folder",
        out,
        "--out_n_neurons",
        "3",
        "--batch_size",
        "2",
        "--signal_length_s",
        "1",
        "--n_examples",
        "1",
        *PIQ_TINY,
        "--debug",
        "--debug_persistently",
    )
    exported = export_interpreter(out, tmp_path / "exported")
    assert {p.name for p in exported.iterdir()} >= {
        "hyperparams.yaml",
        "psi.ckpt",
        "embedding_model.ckpt",
        "classifier.ckpt",
        "label_encoder.txt",
    }
    wav_path = next((synthetic_data / "audio").iterdir())
    local = PretrainedInterpreter.from_hparams(source=str(exported))
    listenable, label = local.interpret_file(wav_path)
    assert listenable.shape == (16000,) and torch.isfinite(listenable).all()
    assert label in {"harmonic_low", "up_chirp", "click_train"}
    # same files through the hub code path, served from a local hub cache (offline)
    cache = tmp_path / "hub_cache"
    snapshot = cache / "models--someone--piq-synthetic" / "snapshots" / ("0" * 40)
    shutil.copytree(exported, snapshot)
    (cache / "models--someone--piq-synthetic" / "refs").mkdir()
    (cache / "models--someone--piq-synthetic" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from_hub = PretrainedInterpreter.from_hparams(source="someone/piq-synthetic", savedir=str(cache))
    hub_wav, hub_label = from_hub.interpret_file(wav_path)
    assert hub_label == label and torch.allclose(hub_wav, listenable, atol=1e-5)
    with pytest.raises(HubUnavailableError, match="huggingface-cli download someone/not-cached"):
        PretrainedInterpreter.from_hparams(source="someone/not-cached", savedir=str(cache))


def test_trained_piq_localizes_better_than_random_and_all_ones_masks(tmp_path):
    """On synthetic scenes with known event masks, PIQ's masks point at the events, and so does the
    model-independent input-magnitude control: PIQ is trained towards the thresholded input, so its
    localization says nothing about the classifier (its masks follow the input's level)."""
    import soundfile as sf
    from speechbrain.lobes.models.ECAPA_TDNN import Classifier
    from speechbrain.lobes.models.PIQ import Conv2dEncoder_v2

    from common.data.synthetic.ground_truth import read_ground_truth
    from common.data.synthetic.scenes import make_synthetic_esc50
    from common.features import Log1pSpectrogram
    from common.interpreters.baselines import InputMagnitude
    from common.models import AudioClassifier

    data = tmp_path / "data"
    make_synthetic_esc50(data, n_classes=3, clips_per_class=10, duration_s=2.0, snr_db=10.0, seed=7)
    clf = tmp_path / "clf"
    classifier_args = "--use_pretrained 0 --out_n_neurons 3 --batch_size 4 --signal_length_s 2 --emb_dim 32"
    classifier_args += " --number_of_epochs 4 --lr_half_cycle_epochs 1 --lr 0.002"
    run_recipe(
        CLASSIFICATION / "train.py",
        CLASSIFICATION / "hparams" / "conv2d.yaml",
        "--data_folder",
        data,
        "--output_folder",
        clf,
        *classifier_args.split(),
    )
    out = tmp_path / "piq"
    piq_args = "--out_n_neurons 3 --batch_size 4 --signal_length_s 2 --number_of_epochs 12 --lr 0.003"
    piq_args += " --n_examples 0 --emb_dim 32 --K 128 --decoder_channels [32,16,8,8]"
    run_recipe(
        INTERPRET / "train_piq.py",
        INTERPRET / "hparams" / "piq.yaml",
        "--data_folder",
        data,
        "--classifier_source",
        clf / "save",
        "--output_folder",
        out,
        *piq_args.split(),
    )
    with open(out / "test_metrics_per_clip.csv") as f:
        rows = list(csv.DictReader(f))
    piq_rma = torch.tensor([float(r["relevance_mass_accuracy"]) for r in rows]).mean()
    piq_auc = torch.tensor([float(r["localization_auc"]) for r in rows]).mean()
    gt = torch.stack([torch.from_numpy(read_ground_truth(data, r["id"])["mask"]).float() for r in rows])
    target = torch.zeros(len(rows), dtype=torch.long)
    suite = EvaluationSuite(["relevance_mass_accuracy", "localization_auc"])
    # the controls' scores need no classifier pass, only its front end's silence (piq.yaml's front end)
    front_end = Log1pSpectrogram(sample_rate=16000, n_fft=1024, hop_length=11.6099, win_length=23.2199)
    stand_in = AudioClassifier(front_end, Conv2dEncoder_v2(8), Classifier(8, out_neurons=3), 30)
    baselines = {}
    for name, saliency in {
        "all-ones": torch.ones_like(gt),
        "random": torch.rand(gt.shape, generator=torch.Generator().manual_seed(0)),
    }.items():
        scores = suite.evaluate(stand_in, gt, Explanation(saliency, saliency, target), ground_truth=gt)
        baselines[name] = {k: float(torch.nan_to_num(v, nan=0.5).mean()) for k, v in scores.items()}
    control = InputMagnitude(stand_in)  # on the same clips; it reads no weights
    wavs = torch.stack([torch.from_numpy(sf.read(data / "audio" / f"{r['id']}.wav", dtype="float32")[0]) for r in rows])
    X = front_end(wavs / wavs.abs().amax(dim=1, keepdim=True))
    magnitude = control.attribute(X, target)
    scores = suite.evaluate(stand_in, X, Explanation(magnitude, magnitude / magnitude.amax(), target), ground_truth=gt)
    baselines["input magnitude"] = {k: float(torch.nan_to_num(v, nan=0.5).mean()) for k, v in scores.items()}
    for name in ("all-ones", "random"):
        base = baselines[name]
        assert piq_rma > base["relevance_mass_accuracy"], (name, float(piq_rma), base)
        assert piq_auc > base["localization_auc"] + 0.02, (name, float(piq_auc), base)
    # the control, which never reads the classifier, localizes at least as well as PIQ does
    magnitude_auc = baselines["input magnitude"]["localization_auc"]
    assert magnitude_auc > baselines["random"]["localization_auc"] + 0.02, baselines
    assert magnitude_auc >= float(piq_auc) - 0.05, (float(piq_auc), baselines)


def published_psi_state(seed=0):
    """A state dict laid out as speechbrain/PIQ-ESC50's psi_model.ckpt (VectorQuantizedPSI_Audio, dim 256,
    K 1024, adapter with reduced dim), written out here rather than taken from the lobe the YAML builds."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"codebook.embedding.weight": (1024, 256), "down.weight": (256, 256, 4, 4), "down.bias": (256,)}
    shapes.update({"up.weight": (256, 256, 4, 4), "up.bias": (256,)})
    convs = {"adapter.block.0": (256, 256, 3, 3), "adapter.block.3": (256, 256, 1, 1), "decoder.0": (256, 256, 3, 3)}
    convs.update({f"decoder.{i}": (256, 256, 4, 4) for i in (3, 6, 9)})
    for name, shape in convs.items():
        shapes.update({f"{name}.weight": shape, f"{name}.bias": (256,)})
    shapes.update({"decoder.12.weight": (256, 1, 12, 12), "decoder.12.bias": (1,)})
    state = {k: torch.randn(v, generator=g) * 0.05 for k, v in shapes.items()}
    for bn in ("adapter.block.1", "adapter.block.4", "decoder.2", "decoder.5", "decoder.8", "decoder.11"):
        state.update({f"{bn}.weight": 1 + 0.1 * torch.randn(256, generator=g), f"{bn}.bias": torch.zeros(256)})
        state.update({f"{bn}.running_mean": torch.zeros(256), f"{bn}.running_var": 1 + torch.rand(256, generator=g)})
        state[f"{bn}.num_batches_tracked"] = torch.tensor(1000)
    return state


def test_speechbrains_published_piq_layout_loads_through_the_hub_code_path(tmp_path, monkeypatch):
    """speechbrain/PIQ-ESC50's files (SpeechBrain's lobes and file names, full size), served offline from a
    local hub cache, explain a 5-s clip with SpeechBrain's geometry: the decoder's 417 frames are the clip's
    first 417 (train_piq.py crops X to them), not stretched over its 431."""
    from common.inference import PretrainedInterpreter
    from common.recipe import load_hparams

    hparams_file = INTERPRET / "hparams" / "inference_piq_speechbrain.yaml"
    published = load_hparams(hparams_file)
    psi_state = published_psi_state()
    cache = tmp_path / "hub"

    def cached_repo(repo, files):
        root = cache / f"models--{repo.replace('/', '--')}"
        snapshot = root / "snapshots" / ("1" * 40)
        snapshot.mkdir(parents=True)
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text("1" * 40)
        for name, write in files.items():
            write(snapshot / name)

    torch.manual_seed(0)
    modules = {"embedding_model": published["embedding_model"], "classifier": published["classifier_head"]}
    cached_repo(
        "speechbrain/PIQ-ESC50",
        {
            "embedding_modelft.ckpt": lambda p: torch.save(modules["embedding_model"].state_dict(), p),
            "classifier.ckpt": lambda p: torch.save(modules["classifier"].state_dict(), p),
            "psi_model.ckpt": lambda p: torch.save(psi_state, p),
            "hyperparams.yaml": lambda p: p.write_text("# SpeechBrain's own recipe file\n"),
        },
    )
    labels = "\n".join(f"'class{i}' => {i}" for i in range(50)) + "\n================\n'starting_index' => 0\n"
    cached_repo("speechbrain/cnn14-esc50", {"label_encoder.txt": lambda p: p.write_text(labels)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    interp = PretrainedInterpreter.from_hparams(
        source="speechbrain/PIQ-ESC50", hparams_file=hparams_file, savedir=str(cache)
    )
    loaded = interp.interpreter.psi.state_dict()
    assert set(loaded) == set(psi_state) and all(torch.equal(loaded[k], v) for k, v in psi_state.items())
    wavs = torch.randn(1, 5 * 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    listenable, predicted, explanation = interp.interpret_batch(wavs)
    X = interp.classifier.features(wavs)
    assert X.shape == (1, 431, 513) and explanation.mask.shape == X.shape
    assert listenable.shape == (1, 5 * 16000) and torch.isfinite(listenable).all() and predicted[0].startswith("class")
    with torch.no_grad():  # the lobe's own output, as SpeechBrain's interpret_computation_steps uses it
        hidden, logits = interp.classifier.hidden_and_logits(X)
        xhat = torch.sigmoid(interp.interpreter.psi(hidden, logits.argmax(-1))[0].squeeze(1))
    assert xhat.shape == (1, 417, 513)
    assert torch.allclose(explanation.mask[:, :417], xhat, atol=1e-6)  # frame i is frame i: no 417 -> 431 stretch
    assert torch.all(explanation.mask[:, 417:] == 0)  # the decoder does not reach the last 14 frames


def test_piq_explains_the_target_it_is_given_not_the_prediction():
    """explain(X, target=...) decodes with the given class's codebook keys; the prediction only fills a missing one."""
    from common.interpreters.piq import PIQInterpreter

    class Classifier(torch.nn.Module):
        def hidden_and_logits(self, X):
            return X.mean(dim=1, keepdim=True), torch.tensor([[5.0, 0.0, 0.0]]).expand(X.shape[0], 3)

        def hidden(self, X):
            return self.hidden_and_logits(X)[0]

        def logits(self, X):
            return self.hidden_and_logits(X)[1]

    class Recording(PIQInterpreter):
        def decode(self, X, hidden, target):
            self.decoded = target.tolist()
            return (torch.zeros_like(X),)

    piq = Recording(Classifier(), psi=torch.nn.Identity())
    X = torch.rand(2, 6, 4)
    assert piq.explain(X=X, target=torch.tensor([2, 1])).target.tolist() == [2, 1] and piq.decoded == [2, 1]
    assert piq.explain(X=X).target.tolist() == [0, 0] and piq.decoded == [0, 0]
