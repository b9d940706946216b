"""L2I's parts: psi, relevance, the NMF mask, its loss terms, layer hooks, loading a dictionary."""

import math

import pytest
import torch
import torch.nn.functional as F
from speechbrain.lobes.models.Cnn14 import Cnn14
from speechbrain.lobes.models.ECAPA_TDNN import Classifier
from speechbrain.lobes.models.L2I import NMFDecoderAudio, Theta
from speechbrain.lobes.models.PIQ import Conv2dEncoder_v2

from common.errors import CheckpointError
from common.features import Log1pSpectrogram, n_frames
from common.interpreters.base import Explanation, FrozenOutputs
from common.interpreters.l2i import L2IInterpreter, L2IPsi
from common.models import AudioClassifier
from common.models.pretrained import load_nmf_dictionary

SR = 16000
T = n_frames(SR, 1, 11.6099)


def conv2d_l2i(K=12, n_classes=3, relevance_th=0.2, seed=0):
    torch.manual_seed(seed)
    classifier = AudioClassifier(Log1pSpectrogram(), Conv2dEncoder_v2(8), Classifier(8, out_neurons=n_classes), 30)
    classifier.eval().requires_grad_(False)
    interpreter = L2IInterpreter(
        classifier,
        L2IPsi([8], K=K, dim=8, n_upsample=2),
        Theta(n_comp=K, T=T, num_classes=n_classes),
        NMFDecoderAudio(n_comp=K, n_freq=513, device="cpu"),
        relevance_th=relevance_th,
    )
    return classifier, interpreter


def frozen_batch(classifier, B=2):
    wavs = torch.randn(B, SR) * 0.1
    X = classifier.features(wavs)
    hidden, logits = classifier.hidden_and_logits(X)
    return FrozenOutputs(wavs, X, hidden, logits)


def test_frames_match_the_stft():
    for seconds in (1, 2.5, 5):
        X = Log1pSpectrogram()(torch.zeros(1, int(SR * seconds)))
        assert X.shape[1] == n_frames(SR, seconds, 11.6099)


def test_psi_maps_one_or_several_hidden_maps_to_activations():
    psi = L2IPsi([16, 8], K=10, dim=8, n_upsample=2)
    H = psi([torch.randn(2, 16, 6, 4), torch.randn(2, 8, 13, 9)], n_frames=87)
    assert H.shape == (2, 10, 87) and (H >= 0).all()
    with pytest.raises(ValueError, match=r"channels \[16, 8\] but got \[16, 4\]"):
        psi([torch.randn(2, 16, 6, 4), torch.randn(2, 4, 13, 9)], n_frames=87)


def test_layer_hooks_return_what_cnn14_returns_with_return_reps():
    torch.manual_seed(0)
    encoder = Cnn14(mel_bins=64, emb_dim=32, return_reps=True).eval()
    classifier = AudioClassifier(Log1pSpectrogram(n_mels=64), encoder, torch.nn.Linear(32, 3)).eval()
    X = torch.rand(2, 64, 64)
    with torch.no_grad():
        maps, logits = classifier.hidden_and_logits(X, ["conv_block6", "conv_block5", "conv_block4", "conv_block3"])
        _, reps = encoder(X)
    assert [m.shape[1] for m in maps] == [32, 1024, 512, 256]
    for got, expected in zip(maps, reps, strict=True):
        assert torch.equal(got, expected)
    assert torch.allclose(logits, classifier.logits(X))


def test_relevance_is_normalised_and_the_threshold_selects_components():
    classifier, interpreter = conv2d_l2i()
    H = torch.rand(2, 12, T)
    target = torch.tensor([0, 2])
    r = interpreter.relevance(H, target)
    assert torch.allclose(r.abs().amax(dim=1), torch.ones(2))
    # by hand: theta's class weights times the time-pooled activations
    z = H @ interpreter.theta.hard_att.weight[0]
    expected = interpreter.theta.classifier[0].weight[target] * z
    assert torch.allclose(r, expected / expected.abs().amax(dim=1, keepdim=True), atol=1e-6)
    interpreter.relevance_th = -2.0  # every component: W H / W H = 1 wherever W H > 0
    assert torch.allclose(interpreter.stft_mask(H, target), torch.ones(2, T, 513), atol=1e-4)
    interpreter.relevance_th = 1.0  # none passes (r <= 1): nothing is kept
    assert interpreter.stft_mask(H, target).abs().max() == 0
    interpreter.relevance_th = 0.2
    mask = interpreter.stft_mask(H, target)
    assert mask.shape == (2, T, 513) and 0.0 <= mask.min() and mask.max() <= 1.0


def test_loss_terms_train_psi_and_theta_only():
    classifier, interpreter = conv2d_l2i()
    frozen = frozen_batch(classifier)
    terms, explanation = interpreter.loss_terms(frozen)
    assert set(terms) == {"rec", "sparsity", "fidelity"}
    H = explanation.extras["activations"]
    # hand-computed terms
    W = F.relu(interpreter.nmf_decoder.W)
    assert torch.allclose(terms["rec"], ((torch.einsum("fk,bkt->btf", W, H) - frozen.X) ** 2).mean(), atol=1e-6)
    assert torch.allclose(terms["sparsity"], H.abs().mean())
    p_theta = interpreter.theta(H)
    # SpeechBrain's train_l2i.py: (softmax(classification_out / classifier_temp) * -log(theta_out)).mean(),
    # classification_out being the cosine head's output (logits / 30); classifier_temp 1 by default
    loss_fdi = (F.softmax(frozen.logits / 30 / 1.0, dim=1) * -torch.log(p_theta)).mean()
    assert torch.allclose(terms["fidelity"], loss_fdi, atol=1e-6)
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in interpreter.psi.parameters())
    assert interpreter.theta.hard_att.weight.grad is not None
    assert interpreter.nmf_decoder.W.grad is None  # the dictionary is fixed
    assert all(p.grad is None for p in classifier.parameters())
    assert explanation.mask.shape == frozen.X.shape and explanation.stft_mask.shape == frozen.X.shape
    assert explanation.extras["per_clip"]["theta_fidelity"].shape == (2,)


def test_mel_classifier_gets_a_mel_mask_and_a_listenable_stft_mask():
    torch.manual_seed(0)
    encoder = Cnn14(mel_bins=64, emb_dim=32)
    classifier = AudioClassifier(Log1pSpectrogram(n_mels=64), encoder, torch.nn.Linear(32, 3)).eval()
    classifier.requires_grad_(False)
    layers = ["conv_block6", "conv_block3"]
    interpreter = L2IInterpreter(
        classifier,
        L2IPsi([32, 256], K=6, dim=8, n_upsample=1),
        Theta(n_comp=6, T=T, num_classes=3),
        NMFDecoderAudio(n_comp=6, n_freq=513, device="cpu"),
        relevance_th=-2.0,  # every component: the mask is all ones
        layers=layers,
    ).eval()
    wavs = torch.randn(2, SR) * 0.1
    explanation = interpreter.explain(wavs)
    assert explanation.mask.shape == (2, T, 64) and explanation.stft_mask.shape == (2, T, 513)
    listenable = explanation.to_wav(classifier, wavs)
    assert torch.allclose(listenable, wavs, atol=1e-3)  # an all-ones STFT mask gives the input back
    X = classifier.features(wavs)
    hidden, logits = classifier.hidden_and_logits(X, layers)
    terms, _ = interpreter.loss_terms(FrozenOutputs(wavs, X, hidden, logits))
    target = Log1pSpectrogram().forward(wavs)  # W reconstructs the linear-grid spectrogram, not the mel input
    W = F.relu(interpreter.nmf_decoder.W)
    H = interpreter.activations(hidden, T)
    assert torch.allclose(terms["rec"], ((torch.einsum("fk,bkt->btf", W, H) - target) ** 2).mean(), atol=1e-5)


def test_explanation_prefers_the_stft_mask_for_audio():
    front_end = Log1pSpectrogram(n_mels=64)
    classifier = AudioClassifier(front_end, torch.nn.Identity(), torch.nn.Identity())
    wavs = torch.randn(1, SR) * 0.1
    X = front_end(wavs)
    zeros = torch.zeros_like(X)
    silent = Explanation(zeros, zeros, torch.zeros(1, dtype=torch.long), stft_mask=torch.zeros(1, T, 513))
    assert silent.to_wav(classifier, wavs).abs().max() < 1e-6
    kept = Explanation(zeros, zeros, torch.zeros(1, dtype=torch.long), stft_mask=torch.ones(1, T, 513))
    assert torch.allclose(kept.to_wav(classifier, wavs), wavs, atol=1e-3)


def test_nmf_dictionary_loads_speechbrains_layout_and_refuses_others(tmp_path):
    published = tmp_path / "published"
    published.mkdir()
    W = torch.rand(513, 100)
    torch.save({"W": W}, published / "nmf_decoder.ckpt")  # SpeechBrain's nmf_decoder.ckpt: NMFDecoderAudio's state
    decoder = NMFDecoderAudio(n_comp=100, n_freq=513, device="cpu")
    load_nmf_dictionary(decoder, published, tmp_path / "collect")
    assert torch.equal(decoder.W.data, W)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_nmf_dictionary(NMFDecoderAudio(n_comp=50, n_freq=513, device="cpu"), published, tmp_path / "c2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"nmf_decoder\.ckpt.*train_nmf\.py"):
        load_nmf_dictionary(decoder, tmp_path / "empty", tmp_path / "c3")


def test_fidelity_is_speechbrains_mean_over_classes_at_its_temperature():
    """Pinned against SpeechBrain's expression by hand: a mean (not a sum) over the classes of
    softmax(cos / 0.01) * -log theta, for the conv2d recipe's cosine head and temperature."""
    from hyperpyyaml import load_hyperpyyaml

    from tests.conftest import INTERPRET

    temps = {}
    for name in ("l2i_conv2d", "l2i_cnn14"):
        line = next(
            x
            for x in (INTERPRET / "hparams" / f"{name}.yaml").read_text().splitlines()
            if x.startswith("classifier_temp:")
        )
        temps[name] = load_hyperpyyaml(line)["classifier_temp"]
    assert temps == {"l2i_conv2d": 0.01, "l2i_cnn14": 1}  # SpeechBrain's l2i_conv2d.yaml / l2i_cnn14.yaml
    classifier, interpreter = conv2d_l2i(n_classes=4)
    interpreter.classifier_temp = 0.01
    cos = torch.tensor([[0.30, 0.25, -0.10, 0.05], [-0.2, 0.1, 0.12, 0.0]])
    theta = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.2, 0.3, 0.4, 0.1]])
    # by hand, clip 0: softmax(cos / 0.01) = e^(30, 25, -10, 5) / sum
    w0 = torch.tensor([1.0, math.exp(-5), math.exp(-40), math.exp(-25)])
    w0 = w0 / w0.sum()
    w1 = torch.tensor([math.exp(-32), math.exp(-2), 1.0, math.exp(-12)])
    w1 = w1 / w1.sum()
    by_hand = ((w0 * -theta[0].log()).sum() + (w1 * -theta[1].log()).sum()) / (2 * 4)
    got = interpreter.fidelity(cos * classifier.logit_scale, theta)
    assert torch.allclose(got, by_hand, rtol=1e-5), (float(got), float(by_hand))
