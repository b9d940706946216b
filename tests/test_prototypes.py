"""The AudioProtoPNet prototype head, the converter for published weights, and its benchmark."""

import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.errors import CheckpointError
from common.models.audioprotopnet_weights import (
    build_from_audioprotopnet,
    load_audioprotopnet_checkpoint,
    split_audioprotopnet_state_dict,
)
from common.models.prototypes import ClassSpecificLinear, PrototypeHead

REPO = Path(__file__).resolve().parents[1]


def reference_similarity(features_up, prototypes, frequency_weights=None):
    """AudioProtoPNet's similarity written out per position with F.cosine_similarity.

    Their eps channels and the eps added to the lengths make it differ from a
    plain cosine by ~1e-4 relative; this reference adds them back explicitly.
    """
    eps = 1e-4
    batch, _, height, width = features_up.shape
    x = torch.cat([features_up, torch.full((batch, 2, height, width), eps)], 1)  # (B, C+2, H, W)
    p = torch.cat([prototypes.flatten(1), torch.full((prototypes.shape[0], 2), eps)], 1)  # (P, C+2)
    x_len = x.norm(dim=1)  # (B, H, W)
    p_len = p.norm(dim=1)  # (P,)
    cos = F.cosine_similarity(x[:, None], p[None, :, :, None, None], dim=2, eps=0)  # (B, P, H, W)
    # their lengths: sqrt(|x|^2 + eps) and sqrt(|p|^2 + eps) + eps
    scale = (x_len[:, None] / (x_len[:, None] ** 2 + eps).sqrt()) * (p_len / ((p_len**2 + eps).sqrt() + eps))[
        None, :, None, None
    ]
    sims = cos * scale / 1.01
    if frequency_weights is not None:
        sims = sims * torch.sigmoid(frequency_weights)[None, :, :, None]
    return sims.clamp(min=0)


@pytest.fixture
def head():
    torch.manual_seed(0)
    return PrototypeHead(n_classes=3, prototypes_per_class=4, channels=6).eval()


def test_similarity_matches_cosine_reference(head):
    features = torch.randn(2, 6, 3, 5)
    up = head.upsample(features)
    assert up.shape == (2, 6, 6, 10)
    torch.testing.assert_close(up, F.interpolate(features, size=(6, 10), mode="bilinear", align_corners=False))
    with torch.no_grad():
        sims = head.similarity_maps(up)
    expected = reference_similarity(up, head.prototype_vectors.detach())
    assert sims.shape == (2, 12, 6, 10)
    torch.testing.assert_close(sims, expected, atol=1e-6, rtol=1e-5)
    # random features: some positions dissimilar enough that relu clips them
    assert (sims == 0).any() and (sims > 0.5).any()
    # a slice of prototypes gives the same rows; with autograd the same values too
    torch.testing.assert_close(head.similarity_maps(up, slice(3, 7)).detach(), expected[:, 3:7], atol=1e-6, rtol=1e-5)
    # far from eps, their similarity is the plain cosine / 1.01
    plain = F.cosine_similarity(up[:, None], head.prototype_vectors.detach()[None, :, :, :, :], dim=2) / 1.01
    torch.testing.assert_close(sims, plain.clamp(min=0), atol=1e-3, rtol=1e-3)


def test_frequency_weights_scale_rows():
    torch.manual_seed(1)
    head = PrototypeHead(2, 2, 5, frequency_height=4).eval()
    assert head.frequency_weights.shape == (4, 4) and torch.all(head.frequency_weights == 3.0)
    with torch.no_grad():
        head.frequency_weights.copy_(torch.randn(4, 4))
    up = head.upsample(torch.randn(3, 5, 2, 3))
    expected = reference_similarity(up, head.prototype_vectors.detach(), head.frequency_weights.detach())
    torch.testing.assert_close(head.similarity_maps(up).detach(), expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="6 rows high but the frequency weights have 4"):
        head(torch.randn(1, 5, 3, 3))


def test_forward_max_pooling_and_logits(head):
    features = torch.randn(2, 6, 3, 5)
    with torch.no_grad():
        head.last_layer.weight.copy_(torch.rand(3, 4) * 2)
        out = head(features)
    maps = reference_similarity(head.upsample(features), head.prototype_vectors.detach())
    expected_max = maps.amax(dim=(2, 3))
    torch.testing.assert_close(out.max_similarities, expected_max, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.similarity_maps, maps, atol=1e-6, rtol=1e-5)
    # location: the flat position of each maximum
    at_location = out.similarity_maps.flatten(2).gather(-1, out.max_locations[..., None])[..., 0]
    torch.testing.assert_close(at_location, out.max_similarities)
    logits = torch.zeros(2, 3)
    for b in range(2):
        for p in range(12):
            c = head.class_of(p)
            logits[b, c] += head.last_layer.weight[c, p % 4] * expected_max[b, p]
    logits += head.last_layer.bias
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 12, 100])
def test_chunked_equals_unchunked(chunk_size):
    torch.manual_seed(2)
    head = PrototypeHead(3, 4, 6, frequency_height=6, chunk_size=None).eval()
    with torch.no_grad():
        head.frequency_weights.copy_(torch.randn(12, 6))
        features = torch.randn(2, 6, 3, 5)
        full = head(features)
        head.chunk_size = chunk_size
        chunked = head(features)
    assert chunked.similarity_maps is None and full.similarity_maps is not None
    torch.testing.assert_close(chunked.max_similarities, full.max_similarities, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(chunked.logits, full.logits, atol=1e-5, rtol=1e-6)
    # each chunked location holds the maximum of the full map
    at_location = full.similarity_maps.flatten(2).gather(-1, chunked.max_locations[..., None])[..., 0]
    torch.testing.assert_close(at_location, full.max_similarities, atol=1e-6, rtol=1e-6)
    top2 = full.similarity_maps.flatten(2).topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-5  # maxima not tied within rounding
    assert clear.float().mean() > 0.5
    assert torch.equal(chunked.max_locations[clear], full.max_locations[clear])


def test_chunking_only_in_inference():
    head = PrototypeHead(2, 3, 4, chunk_size=2)
    features = torch.randn(1, 4, 2, 2)
    assert head.train()(features).similarity_maps is not None  # training with autograd: full maps
    with torch.no_grad():
        assert head.train()(features).similarity_maps is None
    assert head.eval()(features).similarity_maps is None
    # chunked with autograd still gives gradients to the prototypes
    head.eval()(features).logits.sum().backward()
    assert head.prototype_vectors.grad is not None


def test_last_layer_init_and_non_negativity():
    layer = ClassSpecificLinear(3, 2)
    assert torch.all(layer.weight == 1.0) and torch.all(layer.bias == -2.0)
    sims = torch.rand(4, 6)
    torch.testing.assert_close(layer(sims), sims.view(4, 3, 2).sum(-1) - 2.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.0, 2.0], [0.5, -3.0], [-0.1, -0.2]]))
    expected = torch.stack([2 * sims[:, 1], 0.5 * sims[:, 2], torch.zeros(4)], 1) - 2.0
    torch.testing.assert_close(layer(sims), expected)
    head = PrototypeHead(3, 2, 4, init_weight=0.5, init_bias=0.0)
    assert torch.all(head.last_layer.weight == 0.5) and torch.all(head.last_layer.bias == 0)
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        layer(torch.rand(4, 5))


def test_prototype_bookkeeping(head):
    assert head.prototype_class_identity.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert "prototype_class_identity" not in head.state_dict()
    assert [head.class_of(p) for p in (0, 3, 4, 11)] == [0, 0, 1, 2]
    assert list(head.prototypes_of_class(1)) == [4, 5, 6, 7]
    assert head.prototype_vectors.shape == (12, 6, 1, 1)
    assert 0 <= head.prototype_vectors.min() and head.prototype_vectors.max() < 1
    with pytest.raises(IndexError):
        head.class_of(12)
    with pytest.raises(IndexError):
        head.prototypes_of_class(3)


def test_channel_mismatch_names_both_numbers(head):
    with pytest.raises(ValueError, match="5 channels but the prototypes have 6"):
        head(torch.randn(1, 5, 2, 2))
    with pytest.raises(ValueError, match="5 channels but the prototypes have 6"):
        head.similarity_maps(torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        head(torch.randn(6, 2, 2))


def test_orthogonality_loss():
    head = PrototypeHead(n_classes=2, prototypes_per_class=3, channels=5, frequency_height=4)
    basis = torch.linalg.qr(torch.randn(5, 5))[0][:3]  # 3 orthonormal rows
    with torch.no_grad():
        # both classes use the same basis: only orthogonality within a class counts
        head.prototype_vectors.copy_(torch.cat([basis, 4 * basis]).view(6, 5, 1, 1))
    loss = head.orthogonality_loss()
    assert 0 <= loss.item() < 1e-4
    with torch.no_grad():
        head.prototype_vectors.copy_(torch.rand(6, 5, 1, 1) + 0.5)
    loss = head.orthogonality_loss()
    assert loss.item() > 1e-2
    loss.backward()
    assert head.prototype_vectors.grad is not None and head.prototype_vectors.grad.abs().sum() > 0
    assert head.last_layer.weight.grad is None and head.last_layer.bias.grad is None
    assert head.frequency_weights.grad is None


def published_state_dict(backbone, head, convnext_prefix=False, full_last_layer=False):
    """A state dict laid out as the published AudioProtoPNet checkpoints are."""
    prefix = "model.backbone." + ("convnext." if convnext_prefix else "")
    state = {prefix + k: v.detach().clone() for k, v in backbone.state_dict().items()}
    for key, value in head.state_dict().items():
        state["head." + key] = value.detach().clone()
    if full_last_layer:
        k, n_classes = head.prototypes_per_class, head.n_classes
        full = torch.full((n_classes, n_classes * k), -0.5)
        for p in range(n_classes * k):
            full[p // k, p] = head.last_layer.weight.detach()[p // k, p % k]
        state["head.last_layer.weight"] = full
    return state


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import ConvNextConfig, ConvNextModel

    torch.manual_seed(3)
    config = ConvNextConfig(num_channels=1, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])
    backbone = ConvNextModel(config).eval()
    head = PrototypeHead(n_classes=5, prototypes_per_class=2, channels=32, frequency_height=4).eval()
    with torch.no_grad():
        head.last_layer.weight.copy_(torch.rand(5, 2) + 0.1)
        head.last_layer.bias.normal_()
        head.frequency_weights.normal_()
        # perturb the ConvNeXt layer scales and norms so a wrong key mapping shows in the logits
        for name, param in backbone.named_parameters():
            if "layer_scale" in name or "layernorm" in name:
                param.add_(torch.randn_like(param) * 0.5)
    return config, backbone, head


def logits_of(backbone, head, x):
    with torch.no_grad():
        return head(backbone(x).last_hidden_state).logits


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_converter_round_trip(tiny_model, tmp_path, suffix):
    from safetensors.torch import save_file

    config, backbone, head = tiny_model
    state = published_state_dict(backbone, head, convnext_prefix=suffix == ".pt")
    state["model.backbone.classifier.weight"] = torch.zeros(3, 32)  # dropped: the head replaces it
    path = tmp_path / f"audioprotopnet{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    loaded = load_audioprotopnet_checkpoint(path)
    backbone2, head2 = build_from_audioprotopnet(loaded, config)
    assert not backbone2.training and not head2.training
    assert head2.frequency_height == 4 and head2.n_classes == 5 and head2.prototypes_per_class == 2
    x = torch.randn(2, 1, 64, 160)
    expected = logits_of(backbone, head, x)
    torch.testing.assert_close(logits_of(backbone2, head2, x), expected, atol=1e-5, rtol=1e-5)
    head2.chunk_size = 3
    torch.testing.assert_close(logits_of(backbone2, head2, x), expected, atol=1e-5, rtol=1e-5)


def test_converter_full_last_layer(tiny_model):
    config, backbone, head = tiny_model
    state = published_state_dict(backbone, head, full_last_layer=True)
    with pytest.warns(UserWarning, match="40 weights connect prototypes to other classes"):
        _, head_state, info = split_audioprotopnet_state_dict(state)
    assert info == {"n_classes": 5, "prototypes_per_class": 2, "channels": 32, "frequency_height": 4}
    torch.testing.assert_close(head_state["last_layer.weight"], head.last_layer.weight.detach())
    # zero off-class weights: nothing is lost, so no warning
    state["head.last_layer.weight"] = state["head.last_layer.weight"].clamp(min=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone2, head2 = build_from_audioprotopnet(state, config)
    x = torch.randn(1, 1, 64, 160)
    torch.testing.assert_close(logits_of(backbone2, head2, x), logits_of(backbone, head, x), atol=1e-5, rtol=1e-5)


def test_converter_rejects_unknown_and_inconsistent_keys(tiny_model):
    config, backbone, head = tiny_model
    state = published_state_dict(backbone, head)
    state["head.add_on_layers.weight"] = torch.zeros(1)
    state["optimizer.step"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"2 unknown keys \['head.add_on_layers.weight', 'optimizer.step'\]"):
        split_audioprotopnet_state_dict(state)
    state = published_state_dict(backbone, head)
    del state["head.last_layer.bias"]
    with pytest.raises(CheckpointError, match="lacks.*head.last_layer.bias"):
        split_audioprotopnet_state_dict(state)
    state = published_state_dict(backbone, head)
    state["head.last_layer.weight"] = torch.ones(5, 3)
    with pytest.raises(CheckpointError, match=r"expected \(5, 2\) or \(5, 10\)"):
        split_audioprotopnet_state_dict(state)
    state = published_state_dict(backbone, head)
    del state["model.backbone.layernorm.weight"]
    with pytest.raises(CheckpointError, match="missing keys"):
        build_from_audioprotopnet(state, config)
    from transformers import ConvNextConfig

    with pytest.raises(CheckpointError, match="32 channels"):
        build_from_audioprotopnet(published_state_dict(backbone, head), ConvNextConfig(num_channels=1))


def test_checkpoint_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.safetensors not found"):
        load_audioprotopnet_checkpoint(tmp_path / "nowhere.safetensors")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"broken\.pt"):
        load_audioprotopnet_checkpoint(broken)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match=r"broken\.safetensors"):
        load_audioprotopnet_checkpoint(broken)


def test_benchmark_quick_reports_every_configuration():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_prototypes.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\| \d", line)]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    header = [c.strip() for c in proc.stdout.split("\n", 1)[0].strip("|").split("|")]
    assert header[:2] == ["P", "mode"] and header[-1] == "clips/s"
    # quick: P = 40 and 200, each chunked and unchunked
    assert sorted({(c[0], c[1]) for c in cells}) == [
        ("200", "chunked"),
        ("200", "unchunked"),
        ("40", "chunked"),
        ("40", "unchunked"),
    ]
    for c in cells:
        column = {name: c[header.index(name)] for name in header}
        assert column["similarity tensor"] == f"2 x {c[0]} x 16 x 38"  # B x P x (2 x 8) x (2 x 19)
        # the reported sizes follow from the shapes and from each other (to the table's 4 decimals)
        assert float(column["materialised (GiB)"]) == pytest.approx(2 * int(c[0]) * 16 * 38 * 4 / 2**30, abs=1e-4)
        before, peak = float(column["before head (GiB)"]), float(column["peak RSS (GiB)"])
        assert before > 0 and peak >= before and float(c[-1]) > 0
        assert float(column["head increment (GiB)"]) == pytest.approx(peak - before, abs=2e-4)


def test_benchmark_modes_compute_the_same_head(monkeypatch):
    """What the benchmark's worker compares, chunked against unchunked, is the same function on the same inputs:
    (a worker that chunked in both modes, or a chunked path that drops the last partial chunk, fails)."""
    tool = runpy.run_path(str(REPO / "tools" / "benchmark_prototypes.py"))  # the tool's code, not its command line
    QUICK, run_worker = tool["QUICK"], tool["run_worker"]

    outputs = {}
    forward = PrototypeHead.forward

    def spy(self, features):
        out = forward(self, features)
        outputs.setdefault(self.chunk_size, []).append((features.clone(), out))
        return out

    monkeypatch.setattr(PrototypeHead, "forward", spy)
    config = {"P": 200, "prototypes_per_class": 20, "channels": QUICK["channels"], "map_height": 8, "map_width": 19}
    config.update(batch_size=QUICK["batch_size"], chunk_size=QUICK["chunk_size"], repeats=1)  # 200 = 3 x 64 + 8
    for mode in ("chunked", "unchunked"):
        assert run_worker({**config, "mode": mode})["clips_per_s"] > 0
    assert sorted(outputs, key=str) == [64, None] and all(len(v) == 2 for v in outputs.values())  # warm-up + 1
    (x_chunked, chunked), (x_full, full) = outputs[64][-1], outputs[None][-1]
    assert torch.equal(x_chunked, x_full) and chunked.similarity_maps is None and full.similarity_maps is not None
    assert full.similarity_maps.shape == (2, 200, 16, 38)
    torch.testing.assert_close(chunked.max_similarities, full.max_similarities, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(chunked.logits, full.logits, atol=1e-5, rtol=1e-6)


def test_leaderboard_prototype_net_is_trained_as_the_multilabel_net_it_is(monkeypatch):
    """The net is built multi-label (sigmoid outputs, what the metrics read): it must learn with the BirdSet
    recipe's multi-label loss on one-hot targets, and end up better on that loss than untrained."""
    from common.features import MelDbSpectrogram
    from common.interpreters.base import FitData
    from common.interpreters.prototypes import PrototypeInterpreter
    from common.models import AudioClassifier
    from common.models.genre_cnn import GenreHead, LogMelCNN
    from common.models.losses import AsymmetricLoss

    torch.manual_seed(0)
    front_end = MelDbSpectrogram(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32)
    classifier = AudioClassifier(front_end, LogMelCNN(channels=[4, 8]), GenreHead(8, 3, hidden=8)).eval()
    labels = torch.arange(3).repeat(6)
    X = torch.randn(len(labels), 24, 32) * 0.3
    for i, c in enumerate(labels.tolist()):  # each class has energy in its own band
        X[i, :, 10 * c : 10 * c + 6] += 3.0
    seen = []
    forward = AsymmetricLoss.forward

    def spy(self, logits, targets):
        seen.append(targets.detach().clone())
        return forward(self, logits, targets)

    monkeypatch.setattr(AsymmetricLoss, "forward", spy)
    data = FitData(X=X, labels=labels, classes=["low", "mid", "high"])
    untrained = PrototypeInterpreter.fit(classifier, data, epochs=0).classifier
    fitted = PrototypeInterpreter.fit(classifier, data, epochs=60)
    network = fitted.classifier
    assert network is not classifier and network.labels == {0: "low", 1: "mid", 2: "high"}
    assert network.multilabel and seen, "the multi-label net must be trained with the multi-label loss"
    assert all(set(t.sum(dim=1).tolist()) == {1.0} and set(t.unique().tolist()) <= {0.0, 1.0} for t in seen)
    monkeypatch.setattr(AsymmetricLoss, "forward", forward)
    targets = F.one_hot(labels, 3).float()
    with torch.no_grad():
        before = AsymmetricLoss()(untrained.logits(X), targets)
        after = AsymmetricLoss()(network.logits(X), targets)
        probabilities = network.predict_proba(X)
    assert after < 0.7 * before, (float(before), float(after))
    assert (probabilities.argmax(1) == labels).float().mean() > 0.6  # chance: 1/3 (a random, frozen encoder)
