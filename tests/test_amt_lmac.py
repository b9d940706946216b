"""AMT (FocalNet modulator, ViT CLS attention), ViT token maps for PIQ, and L-MAC's loss: unit tests."""

import math

import pytest
import torch
import transformers
from speechbrain.lobes.models.ECAPA_TDNN import Classifier

from common.features import Log1pSpectrogram
from common.interpreters.amt import ActivationMapInterpreter
from common.interpreters.base import FrozenOutputs
from common.interpreters.lmac import LMACDecoder, LMACInterpreter
from common.models import AudioClassifier


def transformer_classifier(kind, n_classes=3):
    torch.manual_seed(0)  # the tiny backbones are randomly initialised: the same ones in every run
    if kind == "focalnet":
        config = transformers.FocalNetConfig(
            image_size=64, embed_dim=8, depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 64], out_features=["stage4"]
        )
        backbone, dim = transformers.FocalNetBackbone(config), 64
    else:
        config = transformers.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
        )
        backbone, dim = transformers.ViTModel(config, add_pooling_layer=False), 16
    model = AudioClassifier(Log1pSpectrogram(), backbone, Classifier(input_size=dim, out_neurons=n_classes), 30)
    return model.eval()


def spectrogram(classifier, n=2, seconds=0.5):
    with torch.no_grad():
        return classifier.features(torch.randn(n, int(16000 * seconds), generator=torch.Generator().manual_seed(0)))


def test_focalnet_amt_is_the_last_modulators_channel_norm_resized_and_top_fraction_masked():
    classifier = transformer_classifier("focalnet")
    X = spectrogram(classifier)
    backbone = classifier.embedding_model
    modulator = backbone.focalnet.encoder.stages[-1].layers[-1].modulation.projection_context
    seen = []
    handle = modulator.register_forward_hook(lambda m, a, out: seen.append(out))
    amt = ActivationMapInterpreter(classifier, top_fraction=0.1)
    heat = amt.activation_map(X)
    handle.remove()
    assert heat.shape == (2, 2, 2)  # 64 / 32: the last stage's grid
    assert torch.allclose(heat, seen[-1].norm(dim=1))
    assert not modulator._forward_hooks  # AMT removed its own hook
    explanation = amt.explain(X=X)
    assert explanation.saliency.shape == X.shape
    # the mask is the bins at or above each clip's 0.9 quantile: at least a tenth, more only by ties
    # (the map is a bilinear upsampling of a 2x2 grid, so plateaus at the edges tie)
    flat = explanation.saliency.flatten(1)
    threshold = torch.quantile(flat, 0.9, dim=1, keepdim=True)
    assert torch.equal(explanation.mask.flatten(1), (flat >= threshold).float())
    assert torch.all(explanation.mask.flatten(1).mean(1) >= 0.1 - 1e-6)


def test_vit_amt_is_the_last_layers_cls_attention_averaged_over_heads():
    classifier = transformer_classifier("vit")
    X = spectrogram(classifier)
    vit = classifier.embedding_model
    last = vit.layers[-1]
    inputs = []
    handle = last.attention.register_forward_pre_hook(
        lambda m, args, kwargs: inputs.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    amt = ActivationMapInterpreter(classifier)
    heat = amt.activation_map(X)
    handle.remove()
    # The attention, recomputed by hand from the last layer's query/key projections.
    h = inputs[-1]
    heads, d = vit.config.num_attention_heads, vit.config.hidden_size // vit.config.num_attention_heads
    q = last.attention.q_proj(h).view(2, -1, heads, d).transpose(1, 2)
    k = last.attention.k_proj(h).view(2, -1, heads, d).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    expected = probs[:, :, 0, 1:].mean(1).reshape(2, 4, 4)
    assert torch.allclose(heat, expected, atol=1e-5)
    assert amt.explain(X=X).saliency.shape == X.shape


def test_amt_restores_the_models_attention_implementation():
    classifier = transformer_classifier("vit")
    before = classifier.embedding_model.config._attn_implementation
    ActivationMapInterpreter(classifier).activation_map(spectrogram(classifier))
    assert classifier.embedding_model.config._attn_implementation == before


def test_amt_refuses_a_classifier_without_activation_maps():
    from speechbrain.lobes.models.PIQ import Conv2dEncoder_v2

    conv = AudioClassifier(Log1pSpectrogram(), Conv2dEncoder_v2(dim=16), Classifier(input_size=16, out_neurons=3))
    with pytest.raises(ValueError, match="amt_focalnet.yaml"):
        ActivationMapInterpreter(conv)
    with pytest.raises(ValueError, match="top_fraction"):
        ActivationMapInterpreter(transformer_classifier("vit"), top_fraction=0)


def test_vit_tokens_are_laid_out_on_the_patch_grid_row_major():
    classifier = transformer_classifier("vit")
    tokens = torch.arange(17.0).view(1, 17, 1).expand(1, 17, 16)  # CLS, then patches 1..16
    grid = classifier.hidden_map(tokens)
    assert grid.shape == (1, 16, 4, 4)
    assert grid[0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0] and grid[0, 0, 3, 3] == 16.0
    with pytest.raises(ValueError, match="spatial layout"):
        transformer_classifier("focalnet").hidden_map(torch.zeros(1, 5, 8))


def lmac_setup(guidance=False):
    from speechbrain.lobes.models.PIQ import Conv2dEncoder_v2

    torch.manual_seed(0)
    classifier = AudioClassifier(
        Log1pSpectrogram(), Conv2dEncoder_v2(dim=16), Classifier(input_size=16, out_neurons=3), 30
    ).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    interpreter = LMACInterpreter(classifier, LMACDecoder([16], dim=8, n_upsample=1), guidance=guidance)
    wavs = torch.randn(2, 8000)
    X = classifier.features(wavs)
    hidden, logits = classifier.hidden_and_logits(X)
    return classifier, interpreter, wavs, X, hidden, logits


def test_lmac_terms_are_the_papers_and_only_the_decoder_learns():
    classifier, interpreter, wavs, X, hidden, logits = lmac_setup()
    terms, explanation = interpreter.loss_terms(FrozenOutputs(wavs, X, hidden, logits))
    assert set(terms) == {"in", "out", "l1", "tv"}
    mask = explanation.mask
    assert mask.shape == X.shape and 0 <= float(mask.min()) and float(mask.max()) <= 1
    target = logits.argmax(-1)
    expected_in = torch.nn.functional.cross_entropy(classifier.logits(mask * X), target)
    expected_out = torch.nn.functional.cross_entropy(classifier.logits((1 - mask) * X), target)
    assert torch.allclose(terms["in"], expected_in) and torch.allclose(terms["out"], -expected_out)
    assert torch.allclose(terms["l1"], mask.mean())
    tv = ((mask[:, 1:] - mask[:, :-1]).pow(2).sum() + (mask[:, :, 1:] - mask[:, :, :-1]).pow(2).sum()) / 2
    assert torch.allclose(terms["tv"], tv / len(mask))  # SpeechBrain's tv_loss: summed squares / (power * B)
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in interpreter.decoder.parameters())
    assert all(p.grad is None for p in classifier.parameters())


def test_lmac_guidance_needs_clean_inputs_and_switches_off_sparsity_where_it_applies():
    _, interpreter, wavs, X, hidden, logits = lmac_setup(guidance=True)
    terms, _ = interpreter.loss_terms(FrozenOutputs(wavs, X, hidden, logits))
    assert "guide" not in terms  # nothing to guide towards without the clean input
    interpreter.crosscor_th = -1.0  # every clip is "guided"
    terms, explanation = interpreter.loss_terms(FrozenOutputs(wavs, X, hidden, logits, clean_wavs=wavs, clean_X=X))
    assert float(terms["guide"]) > 0 and float(terms["l1"]) == 0.0
    assert explanation.extras["per_clip"]["guided"].tolist() == [1.0, 1.0]
    interpreter.crosscor_th = 2.0  # no clip is
    terms, _ = interpreter.loss_terms(FrozenOutputs(wavs, X, hidden, logits, clean_wavs=wavs, clean_X=X))
    assert float(terms["guide"]) == 0.0 and float(terms["l1"]) > 0


def recipe_loss_weights(name):
    """The loss weights an L-MAC hparams file resolves to (its weight lines only; nothing else is built)."""
    import re

    from hyperpyyaml import load_hyperpyyaml

    from tests.conftest import INTERPRET

    text = (INTERPRET / "hparams" / f"{name}.yaml").read_text()
    keys = "l_in_w|l_out_w|reg_w_l1|reg_w_tv|g_w|speechbrain_batch_size"
    scalars = "".join(re.findall(rf"(?m)^(?:{keys}): .*\n", text))
    block = re.search(r"(?m)^loss_weights:\n(?:    .*\n)+", text).group(0)
    return load_hyperpyyaml(scalars + block)["loss_weights"]


@pytest.mark.parametrize("name", ["lmac_cnn14", "lmac_conv2d", "lmac_logmel_cnn"])
def test_lmac_recipe_loss_is_speechbrains_train_lmac_objective_at_its_batch_size(name):
    """The recipe's weighted loss equals SpeechBrain's train_lmac.py expression, written out here as it is
    there (lmac_cnn14.yaml's weights, batch of 16), and the guidance weight is its g_w."""
    weights = recipe_loss_weights(name)
    classifier, interpreter, _, _, _, _ = lmac_setup()
    wavs = torch.randn(16, 8000, generator=torch.Generator().manual_seed(1))
    X = classifier.features(wavs)
    hidden, logits = classifier.hidden_and_logits(X)
    terms, explanation = interpreter.loss_terms(FrozenOutputs(wavs, X, hidden, logits))
    ours = sum(weights[k] * v for k, v in terms.items())
    # SpeechBrain (l_in_w 4, l_out_w 0.2, reg_w_l1 0.4, reg_w_tv 0, no fine-tuning: crosscor_mask all 0)
    xhat, class_pred = explanation.mask, logits.argmax(1)
    crosscor_mask = torch.zeros(len(xhat))
    l_in = F_nll(classifier.logits(xhat * X), class_pred)
    l_out = -F_nll(classifier.logits((1 - xhat) * X), class_pred)
    ao_loss = l_in * 4 + 0.2 * l_out
    r_m = (xhat.abs().mean((-1, -2, -3)) * 0.4 * torch.logical_not(crosscor_mask)).sum()
    assert torch.allclose(ours, ao_loss + r_m, rtol=1e-5), (float(ours), float(ao_loss + r_m))
    assert weights["guide"] == 4  # SpeechBrain's g_w: rec_loss = (bce * g_w * crosscor_mask).mean()

    # the TV weight follows the same rule: SpeechBrain's (0 there) x 16
    def sb_tv(m):
        return ((m[:, :, :-1] - m[:, :, 1:]).pow(2).sum() + (m[:, :-1] - m[:, 1:]).pow(2).sum()) / (2 * len(m))

    tv_sb = (sb_tv(xhat) * 0.3 * torch.logical_not(crosscor_mask)).sum()
    assert torch.allclose(terms["tv"] * 0.3 * 16, tv_sb, rtol=1e-5)
    assert weights["tv"] == 0.0


def F_nll(logits, target):
    return torch.nn.functional.nll_loss(logits.log_softmax(1), target)
