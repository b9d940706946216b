"""Models built from the recipe YAML: published-checkpoint compatibility, local/hub loading, the interface."""

import hashlib
import json

import pytest
import torch
import transformers
from speechbrain.lobes.models.Cnn14 import Cnn14
from speechbrain.lobes.models.PIQ import Conv2dEncoder_v2

from common.errors import CheckpointError, HubUnavailableError
from common.models.pretrained import load_speechbrain_params, load_transformers_weights
from common.recipe import load_hparams
from tests.conftest import CLASSIFICATION, INTERPRET, TINY_OVERRIDES


def build(name, tmp_path, **overrides):
    return load_hparams(
        CLASSIFICATION / "hparams" / f"{name}.yaml",
        {"data_folder": str(tmp_path / "data"), "output_folder": str(tmp_path / "out"), **overrides},
    )


def tiny(name):
    args = TINY_OVERRIDES[name]
    return {
        k.lstrip("-"): (json.loads(v) if v.startswith("[") else int(v))
        for k, v in zip(args[::2], args[1::2], strict=True)
    }


def layout(module):
    """(number of tensors, number of elements, digest of the ordered ``key:shape`` list) of a state dict."""
    state = module.state_dict()
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    return len(state), sum(v.numel() for v in state.values()), hashlib.sha256(text.encode()).hexdigest()[:16]


# The state dicts of SpeechBrain's published files, recorded (speechbrain 1.1.2) from the lobes and arguments of
# SpeechBrain's own hparams: classification conv2d.yaml / interpret piq.yaml (Conv2dEncoder_v2 dim 256; ECAPA
# Classifier 256 -> 50, lin_blocks 1) for speechbrain/PIQ-ESC50, classification cnn14.yaml and interpret
# l2i_cnn14.yaml (Cnn14 mel_bins 80, emb_dim 2048; Linear 2048 -> 50) for speechbrain/cnn14-esc50. A recipe YAML
# that builds another model, or a speechbrain release whose lobe no longer has that layout, fails here.
PUBLISHED = {
    "PIQ-ESC50/embedding_modelft.ckpt": (42, 3812870, "49c63c2491ae6d64"),
    "PIQ-ESC50/classifier.ckpt": (8, 59969, "6e8e04da4493b627"),
    "cnn14-esc50/embedding_model.ckpt": (77, 75493773, "1f8897c704411e23"),
    "cnn14-esc50/classifier.ckpt": (2, 102450, "ebb22a7c6f42bb2e"),
}


def test_conv2d_encoder_matches_speechbrain_piq_esc50_layout(tmp_path):
    hp = build("conv2d", tmp_path)
    assert layout(hp["embedding_model"]) == PUBLISHED["PIQ-ESC50/embedding_modelft.ckpt"]
    assert layout(hp["classifier"]) == PUBLISHED["PIQ-ESC50/classifier.ckpt"]


def test_cnn14_matches_speechbrain_cnn14_esc50_layout(tmp_path):
    hp = build("cnn14", tmp_path)
    assert layout(hp["embedding_model"]) == PUBLISHED["cnn14-esc50/embedding_model.ckpt"]
    assert layout(hp["classifier"]) == PUBLISHED["cnn14-esc50/classifier.ckpt"]
    X = hp["model"].features(torch.randn(1, 16000))
    assert X.shape[-1] == 80  # log1p mel, 80 bands


def test_the_recorded_layouts_tell_models_apart():
    """The check above can fail: a smaller encoder, another head size, another lobe all differ."""
    assert layout(Conv2dEncoder_v2(dim=128)) != PUBLISHED["PIQ-ESC50/embedding_modelft.ckpt"]
    assert layout(Cnn14(mel_bins=64, emb_dim=2048)) != PUBLISHED["cnn14-esc50/embedding_model.ckpt"]
    assert layout(torch.nn.Linear(2048, 10)) != PUBLISHED["cnn14-esc50/classifier.ckpt"]


# speechbrain/PIQ-ESC50 and speechbrain/cnn14-esc50 as SpeechBrain's hparams reference their files:
# classification conv2d.yaml (embedding_model.ckpt: the encoder before PIQ fine-tuning), interpret piq.yaml and
# l2i_conv2d.yaml (embedding_modelft.ckpt + classifier.ckpt, nmf_decoder.ckpt), speechbrain.inference's
# PIQAudioInterpreter (hyperparams.yaml, psi_model.ckpt); classification cnn14.yaml (embedding_model.ckpt),
# l2i_cnn14.yaml / lmac_cnn14.yaml (embedding_model.ckpt + classifier.ckpt), AudioClassifier (hyperparams.yaml,
# label_encoder.txt).
PUBLISHED_FILES = {
    "PIQ-ESC50": [
        "hyperparams.yaml",
        "embedding_model.ckpt",
        "embedding_modelft.ckpt",
        "classifier.ckpt",
        "psi_model.ckpt",
        "nmf_decoder.ckpt",
    ],
    "cnn14-esc50": ["hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt", "label_encoder.txt"],
}
# interpret hparams -> the published repository its pretrained_classifier names (and tiny sizes, where the
# full model would take seconds to build: the file layout, not the size, is what is checked)
PUBLISHED_CLASSIFIER_OF = {
    "piq": ("PIQ-ESC50", {}),
    "l2i_conv2d": ("PIQ-ESC50", {}),
    "lmac_conv2d": ("PIQ-ESC50", {}),
    "l2i_cnn14": ("cnn14-esc50", {"emb_dim": 64}),
    "lmac_cnn14": ("cnn14-esc50", {"emb_dim": 64}),
}


def published_folder(root, repo, encoder, head, seed):
    """A local folder laid out as the published repository, with distinct weights in each file."""
    folder = root / "speechbrain" / repo
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    weights = {}
    for name in PUBLISHED_FILES[repo]:
        if name in ("embedding_model.ckpt", "embedding_modelft.ckpt"):
            for p in encoder.parameters():
                torch.nn.init.normal_(p)
            weights[name] = {k: v.clone() for k, v in encoder.state_dict().items()}
        elif name == "classifier.ckpt":
            for p in head.parameters():
                torch.nn.init.normal_(p)
            weights[name] = {k: v.clone() for k, v in head.state_dict().items()}
        elif name.endswith(".ckpt"):
            weights[name] = {"unused": torch.zeros(1)}
        if name in weights:
            torch.save(weights[name], folder / name)
    (folder / "hyperparams.yaml").write_text("# SpeechBrain's own inference file\n")
    if repo == "cnn14-esc50":  # SpeechBrain's CategoricalEncoder format, its own class order
        labels = ["dog", "car_horn", "thunderstorm"] + [f"class{i}" for i in range(3, 50)]
        text = "".join(f"'{lab}' => {i}\n" for i, lab in enumerate(labels))
        (folder / "label_encoder.txt").write_text(text + "================\n'starting_index' => 0\n")
    return folder, weights


@pytest.mark.parametrize("name", sorted(PUBLISHED_CLASSIFIER_OF))
def test_use_pretrained_loads_the_published_pair_from_a_folder_laid_out_as_the_hub_repository(
    name, speechbrain_sample, tmp_path
):
    """``--use_pretrained True --pretrained_classifier DIR`` loads the encoder the published head was trained on
    (PIQ-ESC50: embedding_modelft.ckpt, not embedding_model.ckpt) and the folder's own label encoder."""
    from common.training.interpreter import prepare_explained_classifier

    repo, sizes = PUBLISHED_CLASSIFIER_OF[name]
    hparams_file = INTERPRET / "hparams" / f"{name}.yaml"
    base = {"data_folder": str(speechbrain_sample), "output_folder": str(tmp_path / "out"), **sizes}
    default = load_hparams(hparams_file, base)
    assert default["pretrained_classifier"] == f"speechbrain/{repo}"
    folder, weights = published_folder(
        tmp_path / "hub", repo, default["embedding_model"], default["classifier"].classifier, seed=1
    )
    hp = load_hparams(hparams_file, {**base, "use_pretrained": True, "pretrained_classifier": str(folder)})
    prepare_explained_classifier(hp)
    loaded = {
        "encoder": hp["classifier"].embedding_model.state_dict(),
        "head": hp["classifier"].classifier.state_dict(),
    }
    encoder_file = "embedding_modelft.ckpt" if repo == "PIQ-ESC50" else "embedding_model.ckpt"
    for key, value in weights[encoder_file].items():
        assert torch.equal(loaded["encoder"][key], value), key
    if repo == "PIQ-ESC50":
        assert not torch.equal(loaded["encoder"]["conv1.weight"], weights["embedding_model.ckpt"]["conv1.weight"])
    for key, value in weights["classifier.ckpt"].items():
        assert torch.equal(loaded["head"][key], value), key
    encoder = hp["label_encoder"]
    if repo == "cnn14-esc50":  # the published folder's class order, not the data's ESC-50 targets
        assert encoder.lab2ind["car_horn"] == 1 and encoder.lab2ind["thunderstorm"] == 2
    else:  # no label encoder published there: the data's ESC-50 targets
        assert encoder.lab2ind["car_horn"] == 43 and encoder.lab2ind["thunderstorm"] == 19


def test_published_checkpoint_loads_from_a_local_path(tmp_path):
    donor = Conv2dEncoder_v2(dim=32)
    ckpt = tmp_path / "hub" / "embedding_model.ckpt"
    ckpt.parent.mkdir()
    torch.save(donor.state_dict(), ckpt)
    model = Conv2dEncoder_v2(dim=32)
    load_speechbrain_params(model, ckpt, tmp_path / "collect")
    for k, v in donor.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


def test_incompatible_checkpoint_says_what_was_expected(tmp_path):
    ckpt = tmp_path / "embedding_model.ckpt"
    torch.save(Conv2dEncoder_v2(dim=16).state_dict(), ckpt)
    with pytest.raises(CheckpointError, match=r"shape mismatches .*bn1.bias: checkpoint \(16,\) vs model \(32,\)"):
        load_speechbrain_params(Conv2dEncoder_v2(dim=32), ckpt, tmp_path / "collect")


def test_hub_id_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(HubUnavailableError, match="--use_pretrained 0"):
        load_speechbrain_params(Conv2dEncoder_v2(dim=8), "speechbrain/PIQ-ESC50/embedding_model.ckpt", tmp_path)
    hp = build("focalnet", tmp_path, **tiny("focalnet"))
    with pytest.raises(HubUnavailableError, match="microsoft/focalnet-base"):
        hp["load_pretrained"](hp["embedding_model"])


@pytest.mark.parametrize("name", ["focalnet", "vit"])
def test_transformers_backbone_loads_from_a_local_folder(tmp_path, name):
    hp = build(name, tmp_path, **tiny(name))
    donor = build(name, tmp_path, **tiny(name), seed=99)["embedding_model"]
    donor.save_pretrained(tmp_path / "local_backbone")
    load_transformers_weights(hp["embedding_model"], str(tmp_path / "local_backbone"))
    for k, v in donor.state_dict().items():
        assert torch.equal(v, hp["embedding_model"].state_dict()[k])
    assert isinstance(hp["embedding_model"], (transformers.FocalNetBackbone, transformers.ViTModel))


@pytest.mark.parametrize("name", ["conv2d", "cnn14", "focalnet", "vit"])
def test_classifier_interface_shapes(tmp_path, name):
    hp = build(name, tmp_path, out_n_neurons=7, **tiny(name))
    model = hp["model"].eval()
    wavs = torch.randn(2, 16000)
    X = model.features(wavs)
    assert X.ndim == 3 and X.shape[0] == 2 and X.shape[1] == 87  # 1 s at hop 186
    with torch.no_grad():
        H = model.hidden(X)
        logits = model.logits(X)
    assert H.shape[0] == 2 and H.ndim in (3, 4)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    probs = model.predict_proba(X)
    assert torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-5)
