"""Misspelled names are ConfigErrors that list the valid ones, raised before any download or data work
(issue 20): BirdSet configs, the offline message's tool, LIME / Kernel SHAP component kinds and options."""

import importlib
import importlib.util
import re
import shlex

import pytest
from hyperpyyaml import load_hyperpyyaml

from common.errors import ConfigError, DataNotFoundError
from tests.conftest import REPO

LIME_SHAP = REPO / "recipes" / "GTZAN" / "lime_shap" / "hparams"


# --- BirdSet --------------------------------------------------------------------------------------
@pytest.fixture
def hub_calls(monkeypatch):
    """Every call to ``datasets.load_dataset`` (the hub), each failing as it does offline."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("Couldn't reach 'DBD-research-group/BirdSet' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    return calls


def _offline_message(folder):
    from common.data.birdset import load_birdset_split

    with pytest.raises(DataNotFoundError) as info:
        load_birdset_split(folder, "HSN", "test_5s")
    return str(info.value)


def test_birdset_offline_message_names_a_tool_that_exists(tmp_path, hub_calls):
    message = _offline_message(tmp_path)
    tools = re.findall(r"tools/[\w/]+\.py", message)
    assert tools, message
    for tool in tools:
        assert (REPO / tool).is_file(), f"{tool} (named in the offline message) does not exist"


def test_birdset_offline_message_command_writes_a_data_folder_the_loader_reads(tmp_path, hub_calls):
    from common.data.birdset import load_birdset_split

    commands = re.findall(r"`(python [^`]+)`", _offline_message(tmp_path / "empty"))
    assert len(commands) == 1, commands
    hub_calls.clear()  # the offline message's own attempt
    python, script, *args = shlex.split(commands[0].replace("DIR", str(tmp_path / "synthetic")))
    assert (REPO / script).is_file(), script
    spec = importlib.util.spec_from_file_location("birdset_tool", REPO / script)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([*args, "--debug"])  # --debug: 3 species, 3 recordings each, one soundscape per test set
    data = tmp_path / "synthetic" / "data"  # "into DIR/data", as the message says
    assert len(load_birdset_split(data, "XCM", "train")) == 9
    assert len(load_birdset_split(data, "POW", "test_5s")) > 0
    assert not hub_calls  # the command's folder, not the hub


def _birdset_hparams(folder, **extra):
    return {
        "data_folder": folder,
        "train_config": "XCM",
        "test_configs": ["POW", "PER"],
        "sample_rate": 32000,
        "signal_length_s": 5.0,
        **extra,
    }


@pytest.mark.parametrize(
    ("changes", "field", "bad", "suggestion"),
    [
        ({"test_configs": ["POW", "XYZ"]}, "test_configs", "XYZ", None),
        ({"test_configs": ["POW", "POWW"]}, "test_configs", "POWW", "POW"),
        ({"test_configs": ["pow_scape"]}, "test_configs", "pow_scape", "POW_scape"),
        ({"train_config": "XCN"}, "train_config", "XCN", "XCM"),
    ],
)
def test_unknown_birdset_config_is_a_config_error_before_any_download(
    tmp_path, hub_calls, changes, field, bad, suggestion
):
    from common.data.birdset import birdset_datasets

    with pytest.raises(ConfigError) as info:
        birdset_datasets(_birdset_hparams(tmp_path, **changes))
    message = str(info.value)
    assert message.startswith(f"{field}: {bad!r} is not a BirdSet config"), message
    for valid in ("HSN", "NBP", "NES", "PER", "POW", "SNE", "SSW", "UHH", "XCL", "XCM"):
        assert valid in message
    if suggestion:
        assert f"Did you mean {suggestion!r}?" in message
    assert not hub_calls  # not even the training config was fetched


def test_birdset_split_a_config_lacks_and_a_string_test_configs_are_config_errors(tmp_path, hub_calls):
    from common.data.birdset import birdset_datasets, load_birdset_split

    with pytest.raises(ConfigError, match=r"'XCM' has the splits \['train', 'valid'\], not 'test_5s'"):
        load_birdset_split(tmp_path, "XCM", "test_5s")
    with pytest.raises(ConfigError, match=r"valid_split: BirdSet config 'HSN_xc' has the splits \['train'\]"):
        birdset_datasets(_birdset_hparams(tmp_path, train_config="HSN_xc"))
    with pytest.raises(ConfigError, match=r"test_configs must be a list, e.g. --test_configs \[POW\]"):
        birdset_datasets(_birdset_hparams(tmp_path, test_configs="POW"))
    assert not hub_calls


def test_valid_birdset_names_still_reach_the_hub_and_local_copies_may_have_any_name(tmp_path, hub_calls):
    from common.data.birdset import birdset_datasets, load_birdset_split, write_birdset_fixture

    for config in ("NES", "NES_scape"):  # a real config goes to the hub (offline here: its own message)
        with pytest.raises(DataNotFoundError):
            load_birdset_split(tmp_path / "empty", config, "test_5s")
    assert [call[1] for call in hub_calls] == ["NES", "NES_scape"]
    write_birdset_fixture(
        tmp_path / "own",
        n_species=2,
        test_configs=("MYSITE",),
        recordings_per_species=2,
        focal_s=(2.0, 3.0),
        soundscape_s=10.0,
        soundscapes_per_test=1,
    )
    data = birdset_datasets(_birdset_hparams(tmp_path / "own", test_configs=["MYSITE"]))
    assert list(data["tests"]) == ["MYSITE"] and len(hub_calls) == 2


def test_birdset_recipe_reports_an_unknown_test_config_not_a_download_failure(tmp_path, hub_calls):
    pytest.importorskip("transformers")
    recipe = REPO / "recipes" / "BirdSet" / "protopnet"
    spec = importlib.util.spec_from_file_location("train_convnext", recipe / "train_convnext.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tiny = ["--hidden_sizes", "[8,16,24,32]", "--embedding_channels", "32", "--depths", "[1,1,1,1]"]
    argv = [str(recipe / "hparams" / "convnext.yaml"), "--data_folder", str(tmp_path / "data"), *tiny]
    with pytest.raises(ConfigError, match=r"test_configs: 'XYZ' is not a BirdSet config.*HSN"):
        script.main([*argv, "--output_folder", str(tmp_path / "out"), "--test_configs", "[POW, XYZ]"])
    assert not hub_calls


# --- LIME / Kernel SHAP components ----------------------------------------------------------------
def _load(yaml_name, overrides):
    with open(LIME_SHAP / yaml_name, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, f"data_folder: /nonexistent\n{overrides}")


@pytest.mark.parametrize("yaml_name", ["lime.yaml", "shap.yaml"])
def test_misspelled_components_kind_in_the_recipe_hparams_is_a_config_error(yaml_name):
    with pytest.raises(ConfigError) as info:
        _load(yaml_name, "components: time_mel_gird")
    message = str(info.value)
    assert "'time_mel_gird' is unknown. Did you mean 'time_mel_grid'?" in message
    assert "['mel_bands', 'superpixels', 'time_mel_grid', 'time_segments']" in message
    hparams = _load(yaml_name, "components: mel_bands")  # the right name still wires its options
    assert hparams["interpreter"].components.n_bands == 8


def test_component_options_with_a_misspelled_or_missing_kind_are_config_errors():
    with pytest.raises(ConfigError, match=r"component_options kind 'time_segmnts' is unknown. Did you mean"):
        _load("lime.yaml", "components: time_segments\ncomponent_options: {time_segmnts: {n_segments: 6}}")
    # a user's YAML with options for one kind only, components left at another (overrides merge into the
    # recipe's mapping, so this is the function the YAML applies, called as a user's own YAML would)
    wiring = re.search(r"component_options: !apply:([\w.]+) ", (LIME_SHAP / "lime.yaml").read_text()).group(1)
    module, name = wiring.rsplit(".", 1)
    options_for = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match=r"options for \['time_segments'\] but none for components 'time_mel_grid'"):
        options_for({"time_segments": {"n_segments": 6}}, "time_mel_grid")
    assert options_for({"mel_bands": {"n_bands": 4}}, "mel_bands") == {"n_bands": 4}
    hparams = _load("lime.yaml", "components: time_segments\ncomponent_options: {time_segments: {n_segments: 6}}")
    assert hparams["interpreter"].components.n_segments == 6


def test_misspelled_component_option_is_a_config_error_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"option 'n_tme' is unknown. Did you mean 'n_time'\? Valid: \['n_freq', "):
        _load("lime.yaml", "component_options: {time_mel_grid: {n_tme: 10, n_freq: 8}}")
    pytest.importorskip("skimage")
    from common.interpreters.components import make_components

    # scikit-image's own keyword, misspelled: refused when built, not at the first clip
    with pytest.raises(ConfigError, match=r"superpixels \(slic\) option 'n_segmnts'.*Did you mean 'n_segments'"):
        make_components("superpixels", {"algorithm": "slic", "n_segmnts": 9})
    assert make_components("superpixels", {"algorithm": "slic", "n_segments": 9}).options["n_segments"] == 9


# --- SHAP baselines -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["GradientShapInterpreter", "DeepLiftShapInterpreter"])
def test_a_misspelled_shap_baseline_is_refused_when_the_interpreter_is_built(cls):
    """Not at the first clip, after the data preparation and the classifier's loading."""
    import torch

    from common.interpreters import posthoc

    with pytest.raises(ConfigError, match=r"shap_baselines entry 'silense' is unknown. Did you mean 'silence'"):
        getattr(posthoc, cls)(torch.nn.Linear(2, 2), baselines=["silense", "mean"])
    assert getattr(posthoc, cls)(torch.nn.Linear(2, 2), baselines=["silence", 0.5]).baselines == ["silence", 0.5]
