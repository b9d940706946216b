"""Damaged checkpoints and wrong paths are named, never a bare torch/yaml error (issue 20, items 4 and 5):
resuming skips a damaged checkpoint with a warning, evaluating a damaged best is a CheckpointError naming
the file, a CKPT.yaml that is not SpeechBrain's mapping is skipped; from_hparams / interpret_file say what
a wrong path is instead of asking the hub for it."""

import logging
import time

import pytest
import torch
from speechbrain.utils.epoch_loop import EpochCounter

from common.checkpoints import STAGING_PREFIX, AtomicCheckpointer
from common.errors import AudioError, CheckpointError, CheckpointNotFoundError, HubUnavailableError
from tests.conftest import CLASSIFICATION, TINY_OVERRIDES, run_recipe


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def three_checkpoints(folder):
    """Checkpoints with acc 0.3, 0.8 (the best), 0.6 (the newest), oldest first; each model's weight filled
    with its epoch, so what was loaded is visible."""
    model = torch.nn.Linear(4, 3)
    ckpter = AtomicCheckpointer(folder, recoverables={"model": model, "counter": EpochCounter(5)})
    for epoch, acc in enumerate([0.3, 0.8, 0.6], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        ckpter.save_and_keep_only(meta={"acc": acc, "epoch": epoch}, max_keys=["acc"], num_to_keep=3)
        time.sleep(0.01)  # distinct unixtime, so recency is well defined
    return sorted(ckpter.list_checkpoints(), key=lambda c: c.meta["epoch"])


def fresh(folder):
    model = torch.nn.Linear(4, 3)
    return model, AtomicCheckpointer(folder, recoverables={"model": model, "counter": EpochCounter(5)})


def test_resume_skips_a_truncated_newest_checkpoint_naming_it(tmp_path, caplog):
    ckpts = three_checkpoints(tmp_path)
    truncate(ckpts[2].path / "model.ckpt")
    model, ckpter = fresh(tmp_path)
    with caplog.at_level(logging.WARNING):
        recovered = ckpter.recover_if_possible()  # what Brain.on_fit_start calls to resume
    assert recovered.meta["epoch"] == 2 and torch.all(model.weight == 2)
    assert str(ckpts[2].path / "model.ckpt") in caplog.text and "Skipping checkpoint" in caplog.text
    assert ckpts[1].path.name in caplog.text  # says which one it resumes from instead
    assert (ckpts[2].path / "model.ckpt").exists()  # left on disk for inspection
    # the skipped one is not the "best" of this run either (evaluation after resumed training)
    assert ckpter.find_checkpoint(max_key="acc").meta["epoch"] == 2


def test_resume_with_every_checkpoint_damaged_is_one_error_naming_the_folder(tmp_path):
    ckpts = three_checkpoints(tmp_path)
    for ckpt in ckpts:
        truncate(ckpt.path / "model.ckpt")
    _, ckpter = fresh(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"None of the 3 checkpoints in .* can be loaded .*damaged, e.g. truncated"
    ) as err:
        ckpter.recover_if_possible()
    assert str(ckpts[2].path / "model.ckpt") in str(err.value)


def test_a_damaged_best_checkpoint_is_an_error_naming_the_file_not_a_silent_second_best(tmp_path):
    ckpts = three_checkpoints(tmp_path)
    truncate(ckpts[1].path / "model.ckpt")
    _, ckpter = fresh(tmp_path)
    with pytest.raises(CheckpointError) as err:
        ckpter.recover_if_possible(max_key="acc")  # what Brain.on_evaluate_start (--test_only) calls
    message = str(err.value)
    assert str(ckpts[1].path / "model.ckpt") in message and "PytorchStreamReader" in message
    assert f"delete {ckpts[1].path.name}" in message and f"the next best, {ckpts[2].path.name}" in message


def test_a_checkpoint_that_reads_but_does_not_fit_is_not_called_damaged(tmp_path):
    three_checkpoints(tmp_path)
    ckpter = AtomicCheckpointer(tmp_path, recoverables={"model": torch.nn.Linear(5, 3), "counter": EpochCounter(5)})
    with pytest.raises(CheckpointError, match=r"does not fit what it is loaded into \(were the hparams changed") as err:
        ckpter.recover_if_possible()
    assert "damaged, e.g." not in str(err.value) and "size mismatch" in str(err.value)


@pytest.mark.parametrize(
    "text, why",
    [("hello\n", "holds a str ('hello')"), ("unixtime: [1,\n", "is not valid YAML"), ("acc: 0.9\n", "no 'unixtime'")],
    ids=["a-string", "not-yaml", "no-unixtime"],
)
def test_a_ckpt_yaml_that_is_not_speechbrains_mapping_is_skipped_with_a_warning(tmp_path, caplog, text, why):
    ckpts = three_checkpoints(tmp_path)
    (ckpts[1].path / "CKPT.yaml").write_text(text)
    model, ckpter = fresh(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert ckpter.find_checkpoint(max_key="acc").meta["epoch"] == 3  # the best of the readable ones
        assert ckpter.recover_if_possible().meta["epoch"] == 3 and torch.all(model.weight == 3)
        ckpter.save_and_keep_only(meta={"acc": 0.1, "epoch": 4}, max_keys=["acc"], num_to_keep=1)
    assert caplog.text.count(f"Skipping damaged checkpoint {ckpts[1].path}") == 1  # named once, not per listing
    assert why in caplog.text
    assert ckpts[1].path.is_dir()  # never deleted: it is not a checkpoint the ranking can judge


def test_reading_another_runs_save_folder_skips_a_damaged_ckpt_yaml_and_leaves_its_staging(tmp_path):
    from common.models.pretrained import best_checkpoint_dir

    ckpts = three_checkpoints(tmp_path)
    (ckpts[1].path / "CKPT.yaml").write_text("unixtime: [1,\n")  # cut short
    staging = tmp_path / f"{STAGING_PREFIX}CKPT+being-written"  # that run saving right now
    staging.mkdir()
    assert best_checkpoint_dir(tmp_path, key="acc") == ckpts[2].path
    assert staging.is_dir()


def test_a_truncated_speechbrain_checkpoint_file_is_named(tmp_path):
    from common.models.pretrained import load_speechbrain_params

    path = tmp_path / "embedding_model.ckpt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), path)
    truncate(path)
    with pytest.raises(CheckpointError, match=rf"Checkpoint file {path} cannot be read .*damaged"):
        load_speechbrain_params(torch.nn.Linear(4, 3), path, tmp_path / "collect")


TINY_INTERPRETER_YAML = """\
sample_rate: 16000
classifier: !new:torch.nn.Linear [4, 3]
interpreter: !new:torch.nn.Linear [4, 3]
loadables:
    interpreter: !ref <interpreter>
"""


def test_from_hparams_names_a_truncated_loadable(tmp_path):
    from common.inference import PretrainedInterpreter

    (tmp_path / "hyperparams.yaml").write_text(TINY_INTERPRETER_YAML)
    torch.save(torch.nn.Linear(4, 3).state_dict(), tmp_path / "interpreter.ckpt")
    truncate(tmp_path / "interpreter.ckpt")
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'interpreter.ckpt'} cannot be read .*interpreter"):
        PretrainedInterpreter.from_hparams(source=str(tmp_path))


@pytest.mark.parametrize(
    "source", ["results/piq/exportt", "./my_export", "~/no-such-export", "ABSOLUTE", "results\\piq", "my_export"]
)
def test_from_hparams_says_a_missing_local_path_does_not_exist_and_never_asks_the_hub(source, tmp_path, monkeypatch):
    import huggingface_hub

    from common.inference import PretrainedInterpreter

    def no_hub(*args, **kwargs):
        raise AssertionError("a path was sent to the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    monkeypatch.chdir(tmp_path)
    source = str(tmp_path / "gone" / "export") if source == "ABSOLUTE" else source
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as err:
        PretrainedInterpreter.from_hparams(source=source)
    assert "looked for /" in str(err.value)


def test_from_hparams_an_unfetchable_owner_name_says_there_is_no_local_folder_either(tmp_path, monkeypatch):
    from common.inference import PretrainedInterpreter

    monkeypatch.chdir(tmp_path)
    with pytest.raises(HubUnavailableError) as err:
        PretrainedInterpreter.from_hparams(source="someone/not-cached", savedir=str(tmp_path / "cache"))
    message = str(err.value)
    assert f"there is no {tmp_path / 'someone' / 'not-cached'}" in message
    assert "huggingface-cli download someone/not-cached" in message


def test_interpret_file_says_a_directory_or_a_missing_file_is_one(tmp_path):
    from common.inference import PretrainedInterpreter

    modules = {"classifier": torch.nn.Linear(4, 3), "interpreter": torch.nn.Linear(4, 3), "sample_rate": 16000}
    interp = PretrainedInterpreter(modules, label_encoder=None)
    with pytest.raises(AudioError, match=rf"{tmp_path} is a directory, not an audio file"):
        interp.interpret_file(tmp_path)
    with pytest.raises(AudioError, match=rf"Audio file {tmp_path / 'dgo.wav'} does not exist") as err:
        interp.interpret_file(tmp_path / "dgo.wav")
    assert "--data_folder" not in str(err.value)


def test_classification_recipe_test_only_skips_a_bad_ckpt_yaml_and_names_a_truncated_best(synthetic_data, tmp_path):
    out = tmp_path / "out"
    args = [
        *("--data_folder", synthetic_data, "--output_folder", out, "--use_pretrained", "0", "--out_n_neurons", "3"),
        *("--batch_size", "2", "--signal_length_s", "1", *TINY_OVERRIDES["conv2d"]),
    ]
    train, hparams = CLASSIFICATION / "train.py", CLASSIFICATION / "hparams" / "conv2d.yaml"
    run_recipe(train, hparams, *args, "--debug", "--debug_persistently")
    (best,) = [p.name for p in (out / "save").glob("CKPT+*")]
    bogus = out / "save" / "CKPT+bogus"
    bogus.mkdir()
    (bogus / "CKPT.yaml").write_text("unixtime: [1,\n")  # cut short
    proc = run_recipe(train, hparams, *args, "--test_only")
    assert f"Skipping damaged checkpoint {bogus}" in proc.stdout and f"Evaluating checkpoint {best}" in proc.stdout
    truncate(out / "save" / best / "embedding_model.ckpt")
    proc = run_recipe(train, hparams, *args, "--test_only", check=False)
    assert proc.returncode != 0 and "CheckpointError" in proc.stdout
    assert f"Checkpoint file {out / 'save' / best / 'embedding_model.ckpt'} cannot be loaded" in proc.stdout
    assert "the file is damaged" in proc.stdout
