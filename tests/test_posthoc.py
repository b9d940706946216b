"""Post-hoc interpreters (captum methods, LIME, Kernel SHAP), components, baselines and their report helpers.

Everything runs on a tiny LogMelCNN classifier with random weights over a
short synthetic clip, or on toy classifiers whose answer is known.
"""

import csv
import itertools
import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from common.errors import ConfigError, DataError
from common.features import MelDbSpectrogram
from common.interpreters import components as comp
from common.interpreters import lime_shap, posthoc
from common.interpreters.base import Explanation
from common.interpreters.components import top_components_mask
from common.metrics import EvaluationSuite
from common.models import AudioClassifier
from common.models.genre_cnn import GenreHead, LogMelCNN
from common.registry import INTERPRETERS
from common.reports.audio import save_wav
from common.reports.figures import save_component_bars, save_saliency_heatmap
from tests.conftest import run_recipe

SAMPLE_RATE = 8000
CAPTUM_METHODS = {
    "saliency": {},
    "smoothgrad": {"n_samples": 8},
    "integrated_gradients": {"n_steps": 32},
    "deeplift": {},
    "gradient_shap": {"n_samples": 16},
    "deeplift_shap": {},
    "occlusion": {"window": (16, 8), "stride": (16, 8)},
    "gradcam": {},
}
COMPONENT_METHODS = {
    "lime": {"components": "time_mel_grid", "component_options": {"n_time": 4, "n_freq": 3}, "n_samples": 64},
    "kernel_shap": {"components": "time_segments", "component_options": {"n_segments": 5}, "n_samples": 64},
}


def tiny_classifier(seed=0, logit_scale=10.0):
    """front end -> LogMelCNN (Conv/BN/ReLU/MaxPool) -> head, random weights, BatchNorm with non-trivial stats."""
    torch.manual_seed(seed)
    front_end = MelDbSpectrogram(sample_rate=SAMPLE_RATE, n_fft=256, hop_length=64, n_mels=32)
    classifier = AudioClassifier(
        front_end, LogMelCNN(channels=[4, 8]), GenreHead(8, 3, hidden=16, dropout=0.0), logit_scale=logit_scale
    )
    for module in classifier.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    classifier.eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    return classifier


def synthetic_wavs(n=2, seconds=1.0, seed=0):
    """Tones with bursts and a little noise: a clip with structure in time and frequency."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    wavs = []
    for k in range(n):
        tone = np.sin(2 * np.pi * (300 + 200 * k) * t) * (t > 0.2) * (t < 0.6)
        burst = np.sin(2 * np.pi * 2000 * t) * (t > 0.7)
        wavs.append(0.5 * tone + 0.3 * burst + 0.02 * rng.standard_normal(t.size))
    return torch.tensor(np.stack(wavs), dtype=torch.float32)


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


@pytest.fixture(scope="module")
def wavs():
    return synthetic_wavs()


@pytest.fixture(scope="module")
def X(classifier, wavs):
    return classifier.features(wavs)


class RegionEnergy(nn.Module):
    """A toy encoder: the mean of X over frames [t0, t1) only, (B, 1).

    Computed through an identity 1x1 Conv2d of X with the other frames zeroed, so that Grad-CAM has a conv
    map to read, and that map is 0 outside the region (the output is the same as without it).
    """

    def __init__(self, t0, t1):
        super().__init__()
        self.t0, self.t1 = t0, t1
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()

    def forward(self, X):
        window = torch.zeros(X.shape[1], 1, dtype=X.dtype, device=X.device)
        window[self.t0 : self.t1] = 1.0
        region = self.conv((X * window)[:, None])
        return region.sum(dim=(1, 2, 3))[:, None] / ((self.t1 - self.t0) * X.shape[2])


def region_classifier(t0, t1):
    """Two classes whose logits are +-2 x the mean of X in frames [t0, t1): nothing else matters."""
    head = nn.Linear(1, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0], [-2.0]]))
        head.bias.zero_()
    front_end = MelDbSpectrogram(sample_rate=SAMPLE_RATE, n_fft=256, hop_length=64, n_mels=32)
    return AudioClassifier(front_end, RegionEnergy(t0, t1), head).eval()


# -- captum methods -------------------------------------------------------------------
def test_every_method_is_registered():
    for name in [*CAPTUM_METHODS, *COMPONENT_METHODS]:
        assert name in INTERPRETERS


@pytest.mark.parametrize("name", list(CAPTUM_METHODS))
def test_captum_method_shape_finite_and_under_no_grad(classifier, X, name):
    interpreter = INTERPRETERS.build(name, classifier, **CAPTUM_METHODS[name])
    classifier.train()  # the interpreter evaluates in eval mode and restores the caller's mode
    try:
        with torch.no_grad():  # as the interpreter Brain calls it
            explanation = interpreter.explain(X=X)
    finally:
        assert classifier.training
        classifier.eval()
    assert explanation.saliency.shape == X.shape
    assert torch.isfinite(explanation.saliency).all()
    assert explanation.saliency.abs().sum() > 0
    assert 0.0 <= float(explanation.mask.min()) and float(explanation.mask.max()) <= 1.0
    assert explanation.target.tolist() == classifier.logits(X).argmax(dim=1).tolist()
    # the map answers the class asked about: another class's map differs (a method ignoring the target fails)
    other = (explanation.target + 1) % 3
    with torch.no_grad():
        other_map = interpreter.explain(X=X, target=other).saliency
    assert not torch.allclose(other_map, explanation.saliency, rtol=1e-3, atol=1e-6 * explanation.saliency.abs().max())


def test_integrated_gradients_completeness(classifier, X):
    # a piecewise-linear network: the path integral converges as the steps resolve its kinks (2 % at 64 steps here)
    interpreter = posthoc.IntegratedGradientsInterpreter(classifier, n_steps=128, baseline="minimum")
    explanation = interpreter.explain(X=X)
    per_clip, target = explanation.extras["per_clip"], explanation.target[:, None]
    with torch.no_grad():
        change = (classifier.logits(X) - classifier.logits(comp.make_baseline("minimum", X))).gather(1, target)[:, 0]
    assert change.abs().min() > 1e-2  # a real difference to account for
    assert torch.allclose(per_clip["output_change"], change, atol=1e-5)
    total = explanation.saliency.flatten(1).sum(dim=1)
    assert torch.allclose(total, change, rtol=0.01, atol=1e-4)
    assert torch.allclose(per_clip["additivity_gap"], (total - change).abs(), atol=1e-5)


@pytest.mark.parametrize("baseline", ["zeros", "minimum", "noise"])
def test_deeplift_sums_to_delta_through_relu_and_maxpool(classifier, X, baseline):
    """Summation-to-delta holds exactly; it failed before separate_hook_tensors (ReLU -> MaxPool in LogMelCNN)."""
    explanation = posthoc.DeepLiftInterpreter(classifier, baseline=baseline).explain(X=X)
    per_clip = explanation.extras["per_clip"]
    assert per_clip["output_change"].abs().min() > 1e-3
    assert (per_clip["additivity_gap"] <= 1e-4 * (1 + per_clip["output_change"].abs())).all()


def test_shap_estimators_add_up_to_the_mean_output_change(classifier, X):
    exact = posthoc.DeepLiftShapInterpreter(classifier, baselines=["minimum", "noise", "noise"]).explain(X=X)
    change = exact.extras["per_clip"]["output_change"]
    assert (exact.extras["per_clip"]["additivity_gap"] <= 1e-4 * (1 + change.abs())).all()
    # GradientShap adds up only in expectation (random path points): with one baseline it is a Monte-Carlo
    # Integrated Gradients, within 10 % after 200 samples; the draws are seeded, so a second run is identical
    options = {"baselines": ["minimum", "minimum"], "n_samples": 200, "seed": 1}
    sampled = posthoc.GradientShapInterpreter(classifier, **options).explain(X=X)
    gap, change = sampled.extras["per_clip"]["additivity_gap"], sampled.extras["per_clip"]["output_change"]
    assert (gap <= 0.1 * change.abs()).all()
    again = posthoc.GradientShapInterpreter(classifier, **options).explain(X=X)
    assert torch.equal(sampled.saliency, again.saliency)


def test_occlusion_and_gradcam_localise_the_region_that_decides():
    classifier = region_classifier(40, 60)
    X = classifier.features(synthetic_wavs(1))
    for interpreter in (
        posthoc.OcclusionInterpreter(classifier, window=(10, 32), stride=(10, 32)),
        posthoc.GradientSaliency(classifier),
    ):
        saliency = interpreter.attribute(X, torch.tensor([0]))
        per_frame = saliency[0].abs().sum(dim=1)
        assert per_frame[40:60].sum() > 0.99 * per_frame.sum()


def test_bad_input_and_options_are_named():
    classifier = tiny_classifier()
    with pytest.raises(DataError, match=r"\(B, T, F\)"):
        posthoc.GradientSaliency(classifier).attribute(torch.zeros(126, 32), 0)
    with pytest.raises(DataError, match="NaN"):
        posthoc.GradientSaliency(classifier).attribute(torch.full((1, 126, 32), float("nan")), 0)
    with pytest.raises(ConfigError, match="not a submodule"):
        posthoc.GradCamInterpreter(classifier, layer="features.99")
    with pytest.raises(ConfigError, match="at least 2 baselines"):
        posthoc.DeepLiftShapInterpreter(classifier, baselines=["minimum"])
    with pytest.raises(ConfigError, match="baseline"):
        lime_shap.LimeInterpreter(classifier, baseline="quietness")
    with pytest.raises(ConfigError, match="components"):
        lime_shap.LimeInterpreter(classifier, components="phonemes")


# -- components and baselines --------------------------------------------------------------
@pytest.mark.parametrize(
    "components, options, expected",
    [
        ("time_segments", {"n_segments": 7}, 7),
        ("mel_bands", {"n_bands": 5}, 5),
        ("time_mel_grid", {"n_time": 6, "n_freq": 4}, 24),
        ("superpixels", {"algorithm": "quickshift", "max_dist": 5}, None),
        ("superpixels", {"algorithm": "slic", "n_segments": 12}, None),
        ("superpixels", {"algorithm": "felzenszwalb", "scale": 20}, None),
    ],
)
def test_components_cover_X_with_consecutive_ids(X, components, options, expected):
    if components == "superpixels":
        pytest.importorskip("skimage")
    ids = comp.make_components(components, options)(X)
    assert ids.shape == X.shape and ids.dtype == torch.long
    for clip in ids:
        present = torch.unique(clip)
        assert present.tolist() == list(range(len(present)))  # every id 0..K-1 used, nothing else
        if expected is not None:
            assert len(present) == expected
        else:
            assert len(present) >= 2
    if components == "time_segments":
        assert (ids == ids[:, :, :1]).all()  # one segment spans every frequency
    if components == "mel_bands":
        assert (ids == ids[:, :1, :]).all()


def test_components_reject_impossible_counts(X):
    with pytest.raises(ConfigError, match="n_segments"):
        comp.TimeSegments(n_segments=X.shape[1] + 1)(X)
    with pytest.raises(ConfigError, match="superpixel algorithm"):
        comp.Superpixels(algorithm="watershed")


def test_baselines(X):
    ids = comp.TimeSegments(4)(X)
    minimum = comp.make_baseline("minimum", X)
    assert torch.equal(minimum[:, 0, 0], X.flatten(1).min(dim=1).values)
    assert (minimum == minimum[:, :1, :1]).all()
    mean = comp.make_baseline("mean", X, ids)
    for k in range(4):
        inside = ids[0] == k
        assert torch.allclose(mean[0][inside], X[0][inside].mean().expand(int(inside.sum())), atol=1e-5)
    assert torch.allclose(comp.make_baseline("mean", X)[:, 0, 0], X.flatten(1).mean(dim=1))
    noise = comp.make_baseline("noise", X, seed=3)
    assert torch.equal(noise, comp.make_baseline("noise", X, seed=3))
    assert not torch.equal(noise, comp.make_baseline("noise", X, seed=4))
    assert torch.allclose(noise.flatten(1).std(dim=1), X.flatten(1).std(dim=1), rtol=0.1)
    assert (comp.make_baseline("zeros", X) == 0).all()
    assert (comp.make_baseline(-1.5, X) == -1.5).all()
    with pytest.raises(ConfigError, match="zeros"):
        comp.make_baseline("median", X)


def test_top_components_mask_keeps_only_the_best_positive_components():
    ids = torch.arange(6).repeat_interleave(2)[:, None].expand(12, 3)
    weights = torch.tensor([0.1, -0.5, 0.7, 0.0, 0.3, -0.2])
    mask = comp.top_components_mask(weights, ids, k=2)
    kept = sorted(int(k) for k in torch.unique(ids[mask > 0]))
    assert kept == [2, 4]
    assert comp.top_components_mask(weights, ids, k=10).sum() == 3 * 2 * 3  # only the 3 positive ones
    assert comp.top_components_mask(-weights.abs(), ids, k=3).sum() == 0


# -- LIME and Kernel SHAP ----------------------------------------------------------------------
def test_kernel_shap_is_exact_shapley_when_every_coalition_fits(classifier, X):
    interpreter = lime_shap.KernelShapInterpreter(
        classifier, components="time_segments", component_options={"n_segments": 4}, n_samples=64, output="logit"
    )
    explanation = interpreter.explain(X=X[:1])
    phi = explanation.extras["component_weights"][0].double().numpy()
    x, ids, target = X[0], explanation.extras["components"][0], int(explanation.target[0])
    base = classifier.silence(X[:1])[0]  # the default baseline: what the front end makes of no energy

    def value(coalition):
        keep = torch.zeros(4, dtype=torch.bool)
        keep[list(coalition)] = True
        with torch.no_grad():
            return float(classifier.logits(torch.where(keep[ids], x, base)[None])[0, target])

    exact = np.zeros(4)
    for i in range(4):
        others = [j for j in range(4) if j != i]
        for size in range(4):
            for S in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(4 - size - 1) / math.factorial(4)
                exact[i] += weight * (value(S + (i,)) - value(S))
    assert np.abs(exact).max() > 1e-3
    np.testing.assert_allclose(phi, exact, rtol=1e-3, atol=1e-5)


def test_kernel_shap_efficiency_with_sampled_coalitions(classifier, X):
    interpreter = lime_shap.KernelShapInterpreter(
        classifier, components="time_mel_grid", component_options={"n_time": 6, "n_freq": 4}, n_samples=120
    )
    explanation = interpreter.explain(X=X)
    per_clip = explanation.extras["per_clip"]
    for b, weights in enumerate(explanation.extras["component_weights"]):
        assert weights.shape == (24,)
        assert float(weights.double().sum()) == pytest.approx(float(per_clip["output_change"][b]), abs=1e-5)
    assert (per_clip["additivity_gap"] < 1e-5).all()
    # the saliency is each bin's component weight
    ids = explanation.extras["components"]
    assert torch.equal(explanation.saliency[1], explanation.extras["component_weights"][1][ids[1]])


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_component_methods_find_the_only_component_that_matters(method):
    classifier = region_classifier(51, 76)  # frames 51..75 = time segment 2 of 5 (126 frames)
    X = classifier.features(synthetic_wavs(1))
    interpreter = INTERPRETERS.build(
        method,
        classifier,
        components="time_segments",
        component_options={"n_segments": 5},
        n_samples=200,
        top_k=1,
        baseline="minimum",
    )
    explanation = interpreter.explain(X=X, target=torch.tensor([0]))
    weights = explanation.extras["component_weights"][0]
    others = torch.cat([weights[:2], weights[3:]])
    assert int(weights.argmax()) == 2 and weights[2] > 0
    if method == "kernel_shap":  # the others are dummy players: Shapley value 0
        assert others.abs().max() < 1e-6
    else:
        assert others.abs().max() < 0.05 * weights[2]
        assert explanation.extras["per_clip"]["surrogate_r2"][0] > 0.9
    segment = explanation.extras["components"][0] == 2
    assert torch.equal(explanation.mask[0], segment.float())  # top_k=1: exactly that segment


def test_lime_matches_lime_image(classifier, X):
    """Same seed, segmentation, baseline and sample count: the same weights as the `lime` package."""
    lime_image = pytest.importorskip("lime.lime_image")
    x = X[:1]
    components = comp.TimeMelGrid(4, 3)
    ours = lime_shap.LimeInterpreter(classifier, components=components, n_samples=150, batch_size=16, seed=5)
    explanation = ours.explain(X=x)
    target = int(explanation.target[0])

    def classifier_fn(images):
        with torch.no_grad():
            logits = classifier.logits(torch.from_numpy(np.ascontiguousarray(images[..., 0])).float())
        return torch.softmax(logits, dim=-1).numpy()

    theirs = lime_image.LimeImageExplainer(random_state=5).explain_instance(
        x[0].double().numpy(),
        classifier_fn,
        labels=(target,),
        top_labels=None,
        hide_color=float(classifier.silence(x)),  # our default baseline
        num_samples=150,
        batch_size=16,
        segmentation_fn=lambda image: components(x)[0].numpy(),
        random_seed=5,
    )
    reference = dict(theirs.local_exp[target])
    reference = np.array([reference[k] for k in range(12)])
    np.testing.assert_allclose(explanation.extras["component_weights"][0].numpy(), reference, rtol=1e-3, atol=1e-6)
    assert float(explanation.extras["per_clip"]["surrogate_r2"][0]) == pytest.approx(theirs.score, abs=1e-4)


def test_lime_superpixels_and_noise_baseline(classifier, X):
    pytest.importorskip("skimage")
    interpreter = lime_shap.LimeInterpreter(
        classifier,
        components="superpixels",
        component_options={"algorithm": "slic", "n_segments": 10},
        baseline="noise",
        n_samples=80,
        top_k=2,
    )
    explanation = interpreter.explain(X=X)
    for b in range(2):
        ids = explanation.extras["components"][b]
        weights = explanation.extras["component_weights"][b]
        assert weights.shape == (int(ids.max()) + 1,)
        assert torch.isfinite(weights).all()
        kept = torch.unique(ids[explanation.mask[b] > 0])
        assert len(kept) == min(2, int((weights > 0).sum())) and (weights[kept] > 0).all()


# -- every interpreter through the shared evaluation suite ------------------------------------------
SUITE_METRICS = ["fid_in", "faithfulness_mask_out", "ai", "ad", "ag", "sps", "comp", "deletion_auc", "insertion_auc"]


@pytest.mark.parametrize("name", [*CAPTUM_METHODS, *COMPONENT_METHODS])
def test_every_interpreter_through_the_evaluation_suite(wavs, name):
    """On a classifier that reads frames 40..59 only (the tone: class 0), every method's explanation must move
    the suite's curves the right way: deleting its most salient bins first kills p_c, restoring them first
    brings it back, and its opposite (-saliency, 1 - mask) and the random control do neither. A method that
    explains another class, flips its sign, transposes or ignores the model fails."""
    from common.interpreters.base import Explanation
    from common.interpreters.baselines import RandomSaliency

    classifier = region_classifier(40, 60)
    X = classifier.features(wavs)
    options = {**CAPTUM_METHODS, **COMPONENT_METHODS}[name]
    explanation = INTERPRETERS.build(name, classifier, **options).explain(X=X)
    assert explanation.target.tolist() == [0, 0]  # the tone makes frames 40..59 loud: class 0
    region = torch.zeros_like(X)
    region[:, 40:60] = 1.0
    suite = EvaluationSuite([*SUITE_METRICS, "relevance_mass_accuracy"], n_steps=5)
    scores = suite.evaluate(classifier, X, explanation, ground_truth=region, wavs=wavs)
    assert suite.skipped == []
    for metric, values in scores.items():
        assert values.shape == (2,) and torch.isfinite(values).all(), metric
    assert set(scores["fid_in"].tolist()) <= {0.0, 1.0}
    for metric in ("ai", "ad"):
        assert ((scores[metric] >= 0) & (scores[metric] <= 100)).all()
    assert (scores["faithfulness_mask_out"].abs() <= 1).all()
    # the mask keeps the region (measured: >= 0.32 of its mass there, the region being 0.16 of the bins), and
    # its opposite does not (the mask-based scores saturate here: removing any of the region flips the class)
    share = {
        k: (m * region).sum((1, 2)) / m.sum((1, 2))
        for k, m in (("mask", explanation.mask), ("1-M", 1 - explanation.mask))
    }
    assert (share["mask"] > 1.5 * region.mean()).all() and (share["mask"] > share["1-M"]).all(), share

    opposite = Explanation(saliency=-explanation.saliency, mask=1 - explanation.mask, target=explanation.target)
    control = RandomSaliency(classifier).explain(X=X, target=explanation.target)
    against = {
        key: suite.evaluate(classifier, X, e, ground_truth=region)
        for key, e in (("opposite", opposite), ("random", control))
    }
    # measured: deletion 0.09 vs >= 0.41 for the opposite; insertion >= 0.54 vs <= 0.11 (opposite, random);
    # share of positive saliency on the region >= 0.40 (component methods: their components overlap it) vs 0.16
    rma = against["random"]["relevance_mass_accuracy"]
    assert (scores["relevance_mass_accuracy"] > 2 * rma).all()
    assert (scores["deletion_auc"] < against["opposite"]["deletion_auc"] - 0.2).all()
    for key in ("opposite", "random"):
        assert (scores["insertion_auc"] > against[key]["insertion_auc"] + 0.3).all(), key


# -- report helpers ---------------------------------------------------------------------------
def test_report_helpers_write_readable_png_and_wav(tmp_path, classifier, X, wavs):
    explanation = lime_shap.KernelShapInterpreter(
        classifier, components="time_segments", component_options={"n_segments": 6}, n_samples=64
    ).explain(X=X[:1])
    weights, ids = explanation.extras["component_weights"][0], explanation.extras["components"][0]

    save_saliency_heatmap(X[0], explanation.saliency[0], tmp_path / "heatmap.png", title="kernel shap")
    save_component_bars(weights, tmp_path / "bars.png", labels=[f"{0.16 * k:.2f} s" for k in range(6)])
    for name in ("heatmap.png", "bars.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01  # something was drawn
    with pytest.raises(ValueError, match="labels"):
        save_component_bars(weights, tmp_path / "bad.png", labels=["a"])

    # keep the best segment plus a surely silent one: the wav holds only the kept segments' audio
    weights = torch.full((6,), -1.0)
    weights[2] = 1.0
    mask = top_components_mask(weights, ids, 3)
    assert torch.equal(mask, (ids == 2).float())
    listenable = Explanation(saliency=mask[None], mask=mask[None], target=torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        save_wav(tmp_path / "top.wav", listenable.to_wav(classifier, wavs[:1])[0], SAMPLE_RATE)
    audio, rate = sf.read(tmp_path / "top.wav")
    assert rate == SAMPLE_RATE and audio.shape == (wavs.shape[1],)
    hop = classifier.front_end.hop_length
    frames = torch.nonzero(ids[:, 0] == 2).flatten()
    start, end = int(frames[0]) * hop, int(frames[-1]) * hop
    inside = np.abs(audio[start + 256 : end - 256]).mean()
    outside = np.abs(np.concatenate([audio[: max(start - 512, 1)], audio[end + 512 :]])).mean()
    assert inside > 0.05 and outside < 0.1 * inside


# -- the GTZAN explanation recipes ------------------------------------------------------------------
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "GTZAN" / "lime_shap"
TINY_MODEL = {"channels": [4, 8], "head_hidden": 8}


def _check_written_results(out):
    """test_results.json holds the means of the per-clip table (NaN clips left out), and each clip's row is
    one explanation of one target: AI, AD and p(X) - p(MX) agree in sign as their definitions require."""
    results = json.loads((out / "test_results.json").read_text())
    with open(out / "test_metrics_per_clip.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert results["n_clips"] == len(rows)
    for name in set(rows[0]) - {"id", "class", "predicted"}:
        values = [float(row[name]) for row in rows if math.isfinite(float(row[name]))]
        mean = sum(values) / len(values) if values else math.nan
        assert math.isclose(results[name], mean, rel_tol=1e-6, abs_tol=1e-9) or (
            math.isnan(mean) and math.isnan(results[name])
        ), name
    for row in rows:
        drop = float(row["faithfulness_mask_in"])
        assert float(row["ai"]) == (100.0 if drop < 0 else 0.0) and (float(row["ad"]) > 0) == (drop > 0), row
    return results, rows


def test_explanation_recipes_on_synthetic_music(tmp_path):
    """explain_lime.py from the command line, explain_shap.py's DeepLiftShap in process, on synthetic GTZAN."""
    from common.data.synthetic.music import make_synthetic_gtzan
    from common.recipe import load_hparams
    from common.training.interpreter import run_interpreter_recipe
    from common.training.posthoc import PosthocInterpreterBrain

    music = tmp_path / "music"
    genres = ("blues", "classical", "metal", "reggae")
    make_synthetic_gtzan(music, n_per_genre=3, duration_s=3.0, seed=0, genres=genres)  # 1 test song (3 s) per genre
    # a classifier save folder in the layout --classifier_source accepts (random weights: nothing to learn here)
    sizes = {**TINY_MODEL, "genres": list(genres), "out_n_neurons": len(genres)}
    hparams = load_hparams(
        RECIPE / "hparams" / "lime.yaml",
        {"data_folder": str(music), "output_folder": str(tmp_path / "x"), **sizes},
    )
    source = tmp_path / "classifier"
    source.mkdir()
    torch.save(hparams["classifier"].embedding_model.state_dict(), source / "embedding_model.ckpt")
    torch.save(hparams["classifier"].classifier.state_dict(), source / "classifier.ckpt")
    common = ["--data_folder", music, "--classifier_source", source, "--channels", "[4, 8]", "--head_hidden", "8"]
    common += ["--genres", f"[{', '.join(genres)}]", "--out_n_neurons", "4", "--n_examples", "2", "--batch_size", "3"]

    lime_out = tmp_path / "lime"
    run_recipe(
        RECIPE / "explain_lime.py",
        RECIPE / "hparams" / "lime.yaml",
        *common,
        *["--output_folder", lime_out, "--n_samples", "64", "--components", "time_segments"],
        *["--component_options", "{time_segments: {n_segments: 6}}", "--top_k", "2"],
    )
    shap_out = tmp_path / "deeplift_shap"
    run_interpreter_recipe(
        [str(RECIPE / "hparams" / "deeplift_shap.yaml"), *map(str, common), "--output_folder", str(shap_out)],
        brain_class=PosthocInterpreterBrain,
    )

    for out, method in ((lime_out, "lime"), (shap_out, "deeplift_shap")):
        results, _ = _check_written_results(out)
        assert results["n_clips"] == len(genres)
        for name in ("fid_in", "relevance_mass_accuracy", "pointing_game", "deletion_auc", "insertion_auc"):
            assert 0.0 <= results[name] <= 1.0, (method, name)
        with open(out / "test_metrics_per_clip.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(genres) and all(math.isfinite(float(row["faithfulness_mask_out"])) for row in rows)
        summary = (out / "test_metrics_summary.md").read_text()
        assert summary.startswith("| method |") and f"| {method} |" in summary
        examples = sorted((out / "interpretations").iterdir())
        assert len(examples) == 2
        for clip_dir in examples:
            original, rate = sf.read(clip_dir / "original.wav")
            interpretation, _ = sf.read(clip_dir / "interpretation.wav")
            assert rate == 22050 and original.shape == interpretation.shape == (3 * 22050,)
            assert np.abs(interpretation).sum() <= np.abs(original).sum() + 1e-3  # a mask in [0, 1] only removes
            assert matplotlib.image.imread(clip_dir / "saliency.png").ndim == 3
        assert all((d / "components.png").is_file() == (method == "lime") for d in examples)
    lime_rows = list(csv.DictReader(open(lime_out / "test_metrics_per_clip.csv", newline="")))
    assert all(float(row["n_components"]) == 6 and float(row["surrogate_r2"]) <= 1.0 for row in lime_rows)
    shap_rows = list(csv.DictReader(open(shap_out / "test_metrics_per_clip.csv", newline="")))
    assert all(float(r["additivity_gap"]) <= 1e-3 * (1 + abs(float(r["output_change"]))) for r in shap_rows)


def test_explanation_scripts_on_real_esc10(esc10_data, tmp_path):
    """The same explanation scripts on the real ESC-10 clips (ESC-50 layout, 5 s clips cut into 3 s segments):
    LIME, GradientShap and LRP, in process, on a tiny classifier, the first test batch (--debug)."""
    from common.recipe import load_hparams
    from common.training.interpreter import run_interpreter_recipe
    from common.training.posthoc import PosthocInterpreterBrain

    hparams = load_hparams(
        RECIPE / "hparams" / "lime.yaml",
        {"data_folder": str(esc10_data), "output_folder": str(tmp_path / "x"), **TINY_MODEL},
    )
    source = tmp_path / "classifier"
    source.mkdir()
    torch.save(hparams["classifier"].embedding_model.state_dict(), source / "embedding_model.ckpt")
    torch.save(hparams["classifier"].classifier.state_dict(), source / "classifier.ckpt")
    common = ["--dataset", "esc50", "--data_folder", esc10_data, "--segment_hop_s", "2", "--classifier_source", source]
    common += ["--channels", "[4, 8]", "--head_hidden", "8", "--batch_size", "2", "--n_examples", "1"]
    common += ["--debug", "--debug_batches", "1"]
    runs = {
        "lime": (RECIPE / "hparams" / "lime.yaml", ["--n_samples", "32"]),
        "gradient_shap": (RECIPE / "hparams" / "gradient_shap.yaml", []),
        "lrp": (RECIPE.parent / "drsa" / "hparams" / "lrp_cnn.yaml", []),
    }
    for name, (hparams_file, extra) in runs.items():
        out = tmp_path / name
        argv = [str(hparams_file), *map(str, common), *extra, "--output_folder", str(out)]
        run_interpreter_recipe(argv, brain_class=PosthocInterpreterBrain)
        results, _ = _check_written_results(out)
        assert results["n_clips"] == 2, name
        for metric in ("fid_in", "sps", "deletion_auc", "insertion_auc"):
            assert 0.0 <= results[metric] <= 1.0, (name, metric)
        assert "relevance_mass_accuracy" not in results or not math.isfinite(results["relevance_mass_accuracy"])
        (example,) = (out / "interpretations").iterdir()
        wav, rate = sf.read(example / "interpretation.wav")
        assert rate == 22050 and wav.shape == (3 * 22050,) and np.isfinite(wav).all()
