"""LRP (zennit composites, BatchNorm canonizer) and DRSA: conservation, exact decomposition, subspace recovery."""

import contextlib
import math

import numpy as np
import pytest
import torch
import zennit.canonizers
from torch import nn

from common.errors import CheckpointError
from common.features import MelDbSpectrogram
from common.interpreters.drsa import (
    DRSAInterpreter,
    collect_drsa_pairs,
    concept_explanations,
    drsa_objective,
    fit_drsa,
    load_subspaces,
    random_orthogonal,
    save_subspaces,
)
from common.interpreters.lrp import LRPInterpreter, conv_blocks, gradient_saliency, lrp_context
from common.metrics import EvaluationSuite
from common.metrics.concepts import aupc, concept_separation, flipping_curve, flipping_order, patch_relevance
from common.models import AudioClassifier
from common.registry import INTERPRETERS

try:  # the shared VGG-type log-mel CNN; the same layout is built here until it exists
    from common.models.genre_cnn import LogMelCNN
except ImportError:
    LogMelCNN = None


class _LogMelCNN(nn.Module):
    """Blocks of Conv2d(3x3) -> BatchNorm2d -> ReLU (x convs_per_block) -> MaxPool2d(2), as modules in order."""

    def __init__(self, channels, convs_per_block=2):
        super().__init__()
        layers, c_in = [], 1
        for c_out in channels:
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)

    def forward(self, X):
        return self.features(X.unsqueeze(1))


# -- test helpers: how well DRSA recovers planted subspaces; zennit's BatchNorm merging as a context ----
def subspace_alignment(U, n_concepts, true_bases):
    """How well learned subspaces recover known ones, in [0, 1] (1: each U_k inside its own true subspace).

    ``true_bases``: list of (D, d_m) orthonormal bases. Energy fraction
    ||B_m^T U_k||^2 / d of every (k, m) pair, concepts matched one-to-one to
    true subspaces (Hungarian), averaged over the matched pairs.
    """
    from scipy.optimize import linear_sum_assignment

    blocks = U.view(U.shape[0], n_concepts, -1)
    d = blocks.shape[2]
    energy = torch.stack(
        [torch.stack([(B.T @ blocks[:, k]).pow(2).sum() / d for B in true_bases]) for k in range(n_concepts)]
    )
    rows, cols = linear_sum_assignment(energy.double().numpy(), maximize=True)
    return float(energy[rows, cols].mean())


@contextlib.contextmanager
def merged_batchnorm(module):
    """BatchNorms merged into the convolutions before them inside the context, restored after."""
    handles = zennit.canonizers.SequentialMergeBatchNorm().apply(module)
    try:
        yield module
    finally:
        for handle in handles:
            handle.remove()


def make_classifier(front_end=None, channels=(4, 8), n_classes=3, logit_scale=1.0, seed=0):
    """A VGG-type CNN with BatchNorm statistics and affine parameters away from their defaults, in eval mode."""
    torch.manual_seed(seed)
    encoder = LogMelCNN(channels=list(channels), convs_per_block=2) if LogMelCNN else _LogMelCNN(channels)
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(channels[-1], 16), nn.ReLU(), nn.Linear(16, n_classes))
    head[-1].weight.data.abs_()  # positive logits: evidence for the class to explain, as in a trained model
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return AudioClassifier(front_end or nn.Identity(), encoder, head, logit_scale=logit_scale).eval()


def zero_biases(classifier):
    """Biases and BatchNorm shifts to 0: the network is then positively homogeneous and LRP conserves exactly."""
    for module in classifier.modules():
        if getattr(module, "bias", None) is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.zero_()


def spectrograms(n=3, T=24, F=16, seed=1):
    return torch.randn(n, T, F, generator=torch.Generator().manual_seed(seed))


def layer_after_block(classifier, block):
    """Name of the ReLU output that ends conv block ``block`` (just before its pooling) in features."""
    layers = list(classifier.embedding_model.features)
    pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
    return f"features.{pools[block] - 1}"


COMPOSITES = [
    ("epsilon_plus_flat", {}),
    ("epsilon_gamma_box", {"gamma": 0.25}),
    ("name_map", {"gammas": [0.5, 0.1], "first_rule": "zbox"}),
    ("name_map", {"gammas": [0.25, 0.0], "first_rule": "flat"}),
    ("epsilon_plus", {}),
]


@pytest.mark.parametrize("composite,kwargs", COMPOSITES)
@pytest.mark.parametrize("logit_scale", [1.0, 3.0])
def test_lrp_conserves_the_explained_logit_when_biases_are_zero(composite, kwargs, logit_scale):
    classifier = make_classifier(logit_scale=logit_scale)
    zero_biases(classifier)
    X = spectrograms()
    logits = classifier.logits(X)
    target = logits.argmax(dim=1)
    relevance = LRPInterpreter(classifier, composite, kwargs).attribute(X, target)
    assert relevance.shape == X.shape
    explained = logits.gather(1, target[:, None]).squeeze(1).detach()
    assert explained.abs().min() > 1e-3  # a logit large enough for a relative check
    assert torch.allclose(relevance.sum(dim=(1, 2)), explained, rtol=1e-3, atol=0), (relevance.sum((1, 2)), explained)
    # not a trivial map: signed, spread over many bins
    assert (relevance != 0).float().mean() > 0.5


def test_lrp_relevance_is_not_conserved_with_biases_so_the_check_can_fail():
    classifier = make_classifier()
    X = spectrograms()
    logits = classifier.logits(X)
    target = logits.argmax(dim=1)
    relevance = LRPInterpreter(classifier).attribute(X, target)
    explained = logits.gather(1, target[:, None]).squeeze(1).detach()
    assert not torch.allclose(relevance.sum(dim=(1, 2)), explained, rtol=1e-3, atol=0)


def test_canonizer_merges_batchnorm_exactly_and_the_model_is_unchanged_after():
    classifier = make_classifier()
    X = spectrograms()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    out_before = classifier.logits(X).detach()
    with merged_batchnorm(classifier.embedding_model):
        batchnorms = [m for m in classifier.embedding_model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(torch.equal(bn.weight, torch.ones_like(bn.weight)) for bn in batchnorms)  # BN is the identity
        assert all(torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean)) for bn in batchnorms)
        out_merged = classifier.logits(X).detach()
    assert torch.allclose(out_merged, out_before, rtol=1e-5, atol=1e-6)
    lrp = LRPInterpreter(classifier, "name_map", {"gammas": [0.25, 0.1]})
    lrp.attribute(X, out_before.argmax(1))
    classifier.train()  # the interpreter switches to eval inside and restores the caller's mode
    lrp.attribute(X, out_before.argmax(1))
    assert classifier.training and classifier.embedding_model.features[1].training
    classifier.eval()
    after = classifier.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():  # byte-identical parameters and buffers
        assert value.dtype == after[key].dtype and torch.equal(value, after[key]), key
    assert torch.equal(classifier.logits(X).detach(), out_before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in classifier.modules())
    assert all(p.grad is None for p in classifier.parameters())


def test_lrp_context_keeps_hooks_only_inside():
    classifier = make_classifier()
    lrp = LRPInterpreter(classifier)
    X = spectrograms()
    with lrp_context(lrp.path, lrp._composite(X)):
        assert any(m._forward_hooks for m in classifier.modules())
        assert not classifier.training
    assert not any(m._forward_hooks for m in classifier.modules())


def test_composites_are_found_by_name_and_bad_settings_say_how_to_fix():
    classifier = make_classifier()
    assert conv_blocks(LRPInterpreter(classifier).path.encoder, prefix="encoder") == [
        ["encoder.features.0", "encoder.features.3"],
        ["encoder.features.7", "encoder.features.10"],
    ]
    with pytest.raises(ValueError, match="one gamma per convolutional block: the encoder has 2 blocks"):
        LRPInterpreter(classifier, "name_map", {"gammas": [0.25]}).attribute(spectrograms(), torch.zeros(3).long())
    with pytest.raises(KeyError, match="Unknown LRP composite 'nope'"):
        LRPInterpreter(classifier, "nope")
    assert isinstance(INTERPRETERS.build("lrp", classifier), LRPInterpreter)


def test_lrp_differs_from_the_gradient_and_layer_relevance_is_what_reaches_the_input():
    classifier = make_classifier()
    zero_biases(classifier)
    X = spectrograms()
    target = classifier.logits(X).argmax(1)
    lrp = LRPInterpreter(classifier)
    layer = layer_after_block(classifier, 0)
    activation, relevance = lrp.layer_relevance(X, target, layer)
    assert activation.shape == relevance.shape == (3, 4, 24, 16)
    heatmap = lrp.attribute(X, target)
    # with zero biases each layer passes on what it gets: layer relevance sums to the input relevance
    assert torch.allclose(relevance.sum(dim=(1, 2, 3)), heatmap.sum(dim=(1, 2)), rtol=1e-3)
    grad = gradient_saliency(classifier, X, target)
    assert grad.shape == X.shape and not torch.allclose(grad, heatmap, atol=1e-2 * heatmap.abs().max())
    with pytest.raises(ValueError, match="no layer 'features.99'"):
        lrp.layer_relevance(X, target, "features.99")


@pytest.mark.parametrize("block", [0, 1])
def test_drsa_concept_heatmaps_sum_to_the_standard_lrp_heatmap(block):
    classifier = make_classifier()
    X = spectrograms()
    target = classifier.logits(X).argmax(1)
    layer = layer_after_block(classifier, block)
    n_channels = (4, 8)[block]
    drsa = DRSAInterpreter.with_random_subspaces(classifier, n_channels, n_concepts=2, layer=layer, seed=3)
    heatmaps, concept_relevance = drsa.concept_heatmaps(X, target)
    standard = LRPInterpreter(classifier).attribute(X, target)
    assert heatmaps.shape == (3, 2, 24, 16)
    scale = standard.abs().max()
    assert torch.allclose(heatmaps.sum(dim=1), standard, atol=1e-5 * scale, rtol=0)
    assert torch.allclose(drsa.attribute(X, target), standard, atol=1e-5 * scale, rtol=0)
    # the concepts really differ from each other and from the whole
    assert not torch.allclose(heatmaps[:, 0], heatmaps[:, 1], atol=1e-3 * scale)
    _, layer_relevance = drsa.layer_relevance(X, target, layer)
    assert torch.allclose(concept_relevance.sum(dim=1), layer_relevance.sum(dim=(1, 2, 3)), rtol=1e-4)


def planted_concepts(n_samples=300, dim=8, n_concepts=2, seed=5):
    """Activations with isotropic parts in K orthogonal subspaces; each sample's relevance comes from one of them.

    c = P_m a for the sample's concept m, so R = |P_m a|^2 >= 0 lies entirely in subspace m.
    """
    generator = torch.Generator().manual_seed(seed)
    basis = random_orthogonal(dim, dim, generator=generator)
    d = dim // n_concepts
    bases = [basis[:, k * d : (k + 1) * d] for k in range(n_concepts)]
    acts = torch.randn(n_samples, dim, generator=generator)
    concept = torch.randint(0, n_concepts, (n_samples,), generator=generator)
    projections = torch.stack([b @ b.T for b in bases])
    ctxs = torch.einsum("nd,nde->ne", acts, projections[concept])
    return acts, ctxs, bases


def test_fit_drsa_keeps_u_orthonormal_raises_the_objective_and_recovers_planted_concepts():
    acts, ctxs, bases = planted_concepts()
    U, history = fit_drsa(acts, ctxs, n_concepts=2, n_restarts=3, n_steps=100, lr=0.5, seed=11)
    assert U.shape == (8, 8)
    assert torch.allclose(U.T @ U, torch.eye(8), atol=1e-5)
    assert len(history) == 101 and all(math.isfinite(v) for v in history)
    assert history[-1] > history[0] * 1.05
    assert history[-1] == pytest.approx(float(drsa_objective(U, acts, ctxs, 2)), rel=1e-4)
    learned = subspace_alignment(U, 2, bases)
    random_scores = [
        subspace_alignment(random_orthogonal(8, 8, generator=torch.Generator().manual_seed(s)), 2, bases)
        for s in range(100, 120)
    ]
    assert learned > 0.95, learned
    assert learned > sum(random_scores) / len(random_scores) + 0.25, (learned, random_scores)
    assert float(drsa_objective(U, acts, ctxs, 2)) > float(drsa_objective(torch.cat(bases, 1), acts, ctxs, 2)) * 0.98


def mixed_clips(n_clips=60, n_positions=4, dim=8, n_concepts=2, seed=5):
    """(N, P, D) pairs where every clip holds every concept, each at its own positions (c = P_m a there).

    As in a clip with several sources: each position's relevance lies in one subspace, each clip's in all.
    """
    generator = torch.Generator().manual_seed(seed)
    basis = random_orthogonal(dim, dim, generator=generator)
    d = dim // n_concepts
    bases = [basis[:, k * d : (k + 1) * d] for k in range(n_concepts)]
    acts = torch.randn(n_clips, n_positions, dim, generator=generator)
    concept = torch.arange(n_positions).remainder(n_concepts).expand(n_clips, -1)
    projections = torch.stack([b @ b.T for b in bases])
    ctxs = torch.einsum("npd,npde->npe", acts, projections[concept])
    return acts, ctxs, bases


def test_fit_drsa_takes_each_position_as_a_data_point_as_the_paper_does():
    # Chormai et al. (and p16i/drsa-demo) fit on one (a, c) row per spatial location. When every clip holds
    # every concept, summing a clip's positions first leaves nothing to separate: only positions recover them.
    acts, ctxs, bases = mixed_clips()
    options = {"n_restarts": 3, "n_steps": 100, "lr": 0.5, "seed": 11}
    U, history = fit_drsa(acts, ctxs, 2, **options)  # (N, P, D), the default
    flat_U, flat_history = fit_drsa(acts.flatten(0, 1), ctxs.flatten(0, 1), 2, **options)
    assert torch.allclose(U, flat_U) and history == pytest.approx(flat_history)
    assert float(drsa_objective(U, acts, ctxs, 2)) == pytest.approx(
        float(drsa_objective(U, acts.flatten(0, 1), ctxs.flatten(0, 1), 2)), rel=1e-6
    )
    clip_U, _ = fit_drsa(acts, ctxs, 2, points="clips", **options)
    random_mean = (
        sum(
            subspace_alignment(random_orthogonal(8, 8, generator=torch.Generator().manual_seed(s)), 2, bases)
            for s in range(100, 120)
        )
        / 20
    )
    assert subspace_alignment(U, 2, bases) > 0.95
    assert subspace_alignment(clip_U, 2, bases) < random_mean + 0.1  # the per-clip variant does not find them
    with pytest.raises(ValueError, match="points='pixels'"):
        fit_drsa(acts, ctxs, 2, points="pixels")


def test_fit_drsa_with_clips_as_points_and_a_partial_basis():
    acts, ctxs, bases = planted_concepts(n_samples=240, dim=8, n_concepts=2)
    # (N, P, D) with points="clips": 4 positions per sample, the sample's relevance sums over them
    U, history = fit_drsa(
        acts.view(60, 4, 8), ctxs.view(60, 4, 8), 2, subspace_dim=2, n_restarts=1, n_steps=30, points="clips"
    )
    assert U.shape == (8, 4) and torch.allclose(U.T @ U, torch.eye(4), atol=1e-5)
    assert history[-1] >= history[0]
    with pytest.raises(ValueError, match="do not fit in the layer's D=8 channels"):
        fit_drsa(acts, ctxs, 3, subspace_dim=3)


def test_collect_pairs_save_load_and_the_drsa_interpreter_from_a_file(tmp_path):
    classifier = make_classifier()
    lrp = LRPInterpreter(classifier)
    X = spectrograms(n=4)
    layer = layer_after_block(classifier, 1)
    target = classifier.logits(X).argmax(1)
    acts, ctxs = collect_drsa_pairs(lrp, [X[:2], (X[2:], target[2:])], layer)
    assert acts.shape == ctxs.shape == (4, 12 * 8, 8)
    _, relevance = lrp.layer_relevance(X, target, layer)
    assert torch.allclose((acts * ctxs).sum(dim=(1, 2)), relevance.sum(dim=(1, 2, 3)), rtol=1e-4)  # R = a * c
    sampled, _ = collect_drsa_pairs(lrp, [X], layer, n_positions=5)
    assert sampled.shape == (4, 5, 8)
    U, history = fit_drsa(acts, ctxs, n_concepts=4, n_restarts=2, n_steps=20)
    path = save_subspaces(tmp_path / "drsa" / "U.pt", U, 4, layer=layer, objective=history[-1])
    loaded, n_concepts, saved_layer = load_subspaces(path)
    assert torch.equal(loaded, U) and n_concepts == 4 and saved_layer == layer
    drsa = INTERPRETERS.build("drsa", classifier, str(path))
    assert drsa.layer == layer and drsa.n_concepts == 4
    explanation = drsa.explain(X=X)
    assert explanation.extras["concepts"].shape == (4, 4, 24, 16)
    assert torch.allclose(explanation.saliency, lrp.attribute(X, explanation.target), atol=1e-5, rtol=1e-4)
    with pytest.raises(CheckpointError, match="not found: fit them first"):
        load_subspaces(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="U has 8 rows but layer features.5 has 4 channels"):
        DRSAInterpreter(classifier, U, 4, layer=layer_after_block(classifier, 0)).attribute(X, target)
    with pytest.raises(ValueError, match="orthonormal"):
        DRSAInterpreter(classifier, 2 * U, 4, layer=layer)


def test_concept_separation_scores_known_layouts():
    masks = torch.zeros(1, 2, 4, 6, dtype=torch.bool)
    masks[0, 0, :, :3] = True  # component 0: low bins
    masks[0, 1, :, 3:5] = True  # component 1: two bins above; bin 5 belongs to no component
    separated = torch.zeros(1, 2, 4, 6)
    separated[0, 0, :, 4] = 1.0  # concept 0 lies in component 1, concept 1 in component 0
    separated[0, 1, :, 1] = 2.0
    assert concept_separation(separated, masks).item() == pytest.approx(1.0)
    outside = separated.clone()
    outside[0, 0, :, 5] = 10.0  # relevance outside every component does not count
    outside[0, 0, :, 0] = -5.0  # nor does negative relevance
    assert concept_separation(outside, masks).item() == pytest.approx(1.0)
    alike = torch.ones(1, 2, 4, 6)  # two copies of one heatmap: 1 / M
    assert concept_separation(alike, masks).item() == pytest.approx(0.5)
    leaky = separated.clone()
    leaky[0, 0, 0, 0] = 4.0  # concept 0: 4 of its 8 units inside components fall in the other one
    assert concept_separation(leaky, masks).item() == pytest.approx((4 + 8) / (8 + 8))
    three = torch.cat([masks, torch.zeros(1, 1, 4, 6, dtype=torch.bool)], dim=1)  # an absent component is skipped
    assert concept_separation(separated, three).item() == pytest.approx(1.0)
    assert math.isnan(concept_separation(torch.zeros(1, 2, 4, 6), masks).item())


def test_flipping_orders_of_concept_heatmaps():
    heatmaps = torch.zeros(1, 2, 2, 4)  # patches of one bin, numbered row-major: (t, f) -> 4 t + f
    heatmaps[0, 0, 0, 0], heatmaps[0, 0, 1, 1] = 3.0, 1.0  # concept 0: total 4
    heatmaps[0, 1, 0, 2], heatmaps[0, 1, 1, 3], heatmaps[0, 1, 1, 0] = 2.0, 2.5, -1.0  # concept 1: total 3.5
    assert flipping_order(heatmaps, (1, 1), "positive").tolist() == [[0, 7, 2, 5, 1, 3, 6, 4]]
    assert flipping_order(heatmaps, (1, 1), "concepts").tolist() == [[0, 5, 7, 2, 1, 3, 6, 4]]
    assert flipping_order(heatmaps.sum(dim=1), (1, 1)).tolist() == [[0, 7, 2, 5, 1, 3, 6, 4]]
    with pytest.raises(ValueError, match="flipping order mode"):
        flipping_order(heatmaps, (1, 1), "sideways")


class LinearScore(nn.Module):
    """logits[:, 0] = sum(W * X): the exact contribution of each bin is W * X."""

    silence = 0.0

    def __init__(self, weight):
        super().__init__()
        self.weight = weight
        self.training = False

    def logits(self, X):
        score = (X * self.weight).sum(dim=(1, 2))
        return torch.stack([score, -score], dim=1)


def test_flipping_curves_follow_the_order_and_aupc_ranks_orders():
    generator = torch.Generator().manual_seed(0)
    weight = torch.rand(8, 6, generator=generator)
    X = torch.rand(2, 8, 6, generator=generator) + 0.1
    model = LinearScore(weight)
    target = torch.zeros(2).long()
    contribution = X * weight
    patch = (2, 3)
    assert patch_relevance(contribution[:, None], patch).shape == (2, 1, 8)
    best = flipping_order(contribution, patch)
    worst = best.flip(1)
    curve = flipping_curve(model, X, target, best, patch, n_steps=8, fill=0.0)
    assert curve.shape == (2, 9)
    assert torch.allclose(curve[:, 0], model.logits(X)[:, 0]) and torch.allclose(curve[:, -1], torch.zeros(2))
    assert torch.all(curve[:, 1:] <= curve[:, :-1] + 1e-6)  # every removed patch had a positive contribution
    worst_curve = flipping_curve(model, X, target, worst, patch, n_steps=8, fill=0.0)
    assert torch.all(aupc(curve) < aupc(worst_curve))
    # concept heatmaps: positive relevance summed over concepts orders the patches
    concepts = torch.stack([contribution, -0.5 * contribution], dim=1)
    assert torch.equal(flipping_order(concepts, patch), best)
    with pytest.raises(ValueError, match="does not match"):
        flipping_curve(model, X, target, best[:, :3], patch)


def test_lrp_and_drsa_go_through_the_evaluation_suite_and_concepts_are_listenable():
    front_end = MelDbSpectrogram(sample_rate=22050, n_fft=512, hop_length=256, n_mels=32)
    classifier = make_classifier(front_end=front_end)
    wavs = torch.randn(2, 22050 // 2, generator=torch.Generator().manual_seed(2)) * 0.1
    X = classifier.features(wavs)
    suite = EvaluationSuite(
        ["fid_in", "faithfulness_mask_out", "sps", "comp", "deletion_auc", "insertion_auc"], n_steps=4
    )
    layer = layer_after_block(classifier, 1)
    for interpreter in (
        LRPInterpreter(classifier, "epsilon_gamma_box"),
        DRSAInterpreter.with_random_subspaces(classifier, 8, n_concepts=4, layer=layer),
    ):
        with torch.no_grad():  # as the interpreter Brain calls it: LRP turns gradients back on itself
            explanation = interpreter.explain(X=X)
        scores = suite.evaluate(classifier, X, explanation)
        assert set(scores) == set(suite.names)
        for name, value in scores.items():
            assert value.shape == (2,) and torch.isfinite(value).all(), name
        assert torch.all((explanation.mask >= 0) & (explanation.mask <= 1))
    concepts = concept_explanations(explanation)
    assert len(concepts) == 4
    wav = concepts[0].to_wav(classifier, wavs)
    assert wav.shape == wavs.shape and torch.isfinite(wav).all()
    assert 0 < wav.pow(2).sum() < wavs.pow(2).sum()  # a filtered part of the input


@pytest.fixture(scope="module")
def tiny_genre_setup(tmp_path_factory):
    """Two synthetic genres (5 clips of 3 s each) and an untrained tiny genre CNN saved as a classifier source."""
    from common.data.synthetic.music import make_synthetic_gtzan
    from common.models.genre_cnn import GenreHead

    root = tmp_path_factory.mktemp("drsa_recipe")
    make_synthetic_gtzan(root / "data", n_per_genre=5, duration_s=3.0, seed=0, genres=("hiphop", "metal"))
    torch.manual_seed(0)
    source = root / "classifier"
    source.mkdir()
    torch.save(LogMelCNN(channels=[4, 8], convs_per_block=1).state_dict(), source / "embedding_model.ckpt")
    torch.save(GenreHead(8, 2, hidden=8).state_dict(), source / "classifier.ckpt")
    return root


def test_train_drsa_recipe_writes_subspaces_tables_figures_and_concept_audio(tiny_genre_setup):
    import csv

    import soundfile as sf

    from common.analysis.concepts import run_concept_analysis
    from common.recipe import setup_experiment
    from common.training.interpreter import prepare_explained_classifier
    from tests.conftest import REPO, run_recipe

    root, out = tiny_genre_setup, tiny_genre_setup / "drsa_run"
    recipe = REPO / "recipes" / "GTZAN" / "drsa"
    args = [
        *("--data_folder", root / "data", "--classifier_source", root / "classifier", "--output_folder", out),
        *("--download", "False", "--genres", "[hiphop, metal]", "--out_n_neurons", "2"),
        *("--channels", "[4, 8]", "--head_hidden", "8", "--drsa_layer", "features.6", "--n_concepts", "2"),
        *("--drsa_classes", "[hiphop]", "--n_positions", "8", "--n_random", "1", "--n_examples", "1"),
        *("--fit_options", "{n_restarts: 3, n_steps: 30, lr: 0.5}", "--flip_patch", "[13, 16]", "--flip_steps", "4"),
    ]
    env = {"OMP_NUM_THREADS": "1"}
    run_recipe(recipe / "train_drsa.py", recipe / "hparams" / "drsa_cnn.yaml", *args, env=env)
    U, n_concepts, layer = load_subspaces(out / "save" / "drsa" / "hiphop.pt")
    assert U.shape == (8, 8) and n_concepts == 2 and layer == "features.6"
    assert torch.allclose(U.T @ U, torch.eye(8), atol=1e-5)
    with open(out / "concepts_summary.csv", encoding="utf-8") as f:
        summary = {row["method"]: row for row in csv.DictReader(f)}
    assert set(summary) == {"lrp", "drsa", "random"}
    assert summary["drsa"]["components"] == "drums, bass, scratch"
    for method in ("drsa", "random"):
        assert 0.0 <= float(summary[method]["separation"]) <= 1.0
        assert all(math.isfinite(float(summary[method][f"aupc_{o}"])) for o in ("positive", "max", "concepts"))
    assert math.isfinite(float(summary["lrp"]["aupc"])) and 0 <= float(summary["lrp"]["deletion_auc"]) <= 1
    # the saved U is the optimum of the paper's objective on the training segments' positions: it is that
    # objective, re-computed here on the same pairs, and beats random subspaces on it
    hparams, _, _, _ = setup_experiment([str(recipe / "hparams" / "drsa_cnn.yaml"), *map(str, args)])
    from common.analysis.concepts import batch_spectrograms, class_loader

    datasets = prepare_explained_classifier(hparams)
    index = hparams["label_encoder"].lab2ind["hiphop"]
    batches = [
        (X, torch.full((len(X),), index))
        for X in (batch_spectrograms(hparams["classifier"].eval(), b)[1] for b in class_loader(
            datasets["train"], "hiphop", hparams["batch_size"], None))
    ]  # fmt: skip
    acts, ctxs = collect_drsa_pairs(hparams["lrp"], batches, "features.6", n_positions=8)
    saved = torch.load(out / "save" / "drsa" / "hiphop.pt", weights_only=True)["objective"]
    assert float(drsa_objective(U, acts, ctxs, 2)) == pytest.approx(saved, rel=1e-3)
    randoms = [float(drsa_objective(random_orthogonal(8, 8, torch.Generator().manual_seed(s)), acts, ctxs, 2))
               for s in range(10)]  # fmt: skip
    assert saved > max(randoms), (saved, randoms)
    (example,) = (out / "examples" / "hiphop").iterdir()
    assert (example / "concepts.png").stat().st_size > 1000
    for name in ("original", "concept_0", "concept_1"):
        wav, sr = sf.read(example / f"{name}.wav")
        assert sr == 22050 and wav.shape == (3 * 22050,) and np.isfinite(wav).all()
    # --test_only reuses the saved subspaces and reproduces the scores (in-process: the imports are paid)
    hparams, _, _, _ = setup_experiment([str(recipe / "hparams" / "drsa_cnn.yaml"), *map(str, args), "--test_only"])
    run_concept_analysis(hparams, prepare_explained_classifier(hparams))
    with open(out / "concepts_summary.csv", encoding="utf-8") as f:
        again = {row["method"]: row for row in csv.DictReader(f)}
    assert again["drsa"]["separation"] == summary["drsa"]["separation"]
