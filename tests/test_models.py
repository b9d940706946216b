"""Models built from the recipe YAML: published-checkpoint compatibility, local/hub loading, the interface."""

import json

import pytest
import torch
import transformers
from speechbrain.lobes.models.Cnn14 import Cnn14
from speechbrain.lobes.models.PIQ import Conv2dEncoder_v2

from common.errors import CheckpointError, HubUnavailableError
from common.models.pretrained import load_speechbrain_params, load_transformers_weights
from common.recipe import load_hparams
from tests.conftest import CLASSIFICATION, TINY_OVERRIDES


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


def same_layout(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(sa[k].shape == sb[k].shape for k in sa)


def test_conv2d_encoder_matches_speechbrain_piq_esc50_layout(tmp_path):
    hp = build("conv2d", tmp_path)
    assert same_layout(hp["embedding_model"], Conv2dEncoder_v2(dim=256))


def test_cnn14_matches_speechbrain_cnn14_esc50_layout(tmp_path):
    hp = build("cnn14", tmp_path)
    assert same_layout(hp["embedding_model"], Cnn14(mel_bins=80, emb_dim=2048))
    X = hp["model"].features(torch.randn(1, 16000))
    assert X.shape[-1] == 80  # log1p mel, 80 bands


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
