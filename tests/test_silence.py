"""Every front end declares its silence, and everything that removes evidence fills with it.

Silence is what a bin holding no energy becomes: 0 for log1p, but for a
z-scored dB front end 0 is the mean level, so "removing" by zeroing would
raise quiet bins instead.
"""

import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from common import features as features_module
from common.features import Log1pSpectrogram, MelDbSpectrogram, keep_masked
from common.interpreters.base import Explanation
from common.interpreters.baselines import InputMagnitude
from common.interpreters.components import make_baseline
from common.metrics.concepts import flipping_curve
from common.metrics.suite import EvaluationSuite
from common.models import AudioClassifier
from common.models.genre_cnn import GenreHead, LogMelCNN

REPO = Path(__file__).resolve().parents[1]


class _Tagged(dict):
    tag = None


class _HparamsLoader(yaml.SafeLoader):
    """Reads hyperpyyaml files as plain data: ``!ref <key>`` -> ("ref", key), ``!new:cls`` mappings -> tagged dicts."""


def _construct_tagged(loader, tag_suffix, node):
    if isinstance(node, yaml.MappingNode):
        out = _Tagged(loader.construct_mapping(node, deep=True))
    elif isinstance(node, yaml.SequenceNode):
        out = _Tagged(args=loader.construct_sequence(node, deep=True))
    else:
        value = loader.construct_scalar(node)
        if tag_suffix == "ref":
            return ("ref", value)
        out = _Tagged(value=value)
    out.tag = tag_suffix
    return out


_HparamsLoader.add_multi_constructor("!", _construct_tagged)


def _resolve(value, top):
    if isinstance(value, tuple) and value[0] == "ref":
        match = re.fullmatch(r"<([\w.]+)>", value[1].strip())
        assert match, f"only plain references are resolved here, got {value[1]!r}"
        return _resolve(top[match.group(1)], top)
    return value


def recipe_front_ends():
    """(file, class name, kwargs) of every front end an hparams file of the repository builds."""
    found = []
    for path in sorted([*REPO.glob("recipes/**/hparams/*.yaml"), *REPO.glob("tools/**/*.yaml")]):
        text = path.read_text(encoding="utf-8")
        if "!new:common.features." not in text:
            continue
        top = yaml.load(text, Loader=_HparamsLoader)
        for value in top.values():
            if isinstance(value, _Tagged) and value.tag.startswith("new:common.features."):
                kwargs = {k: _resolve(v, top) for k, v in value.items()}
                found.append((path.relative_to(REPO).as_posix(), value.tag.split(".")[-1], kwargs))
    return found


FRONT_ENDS = recipe_front_ends()


def test_the_hparams_files_build_front_ends_of_both_kinds():
    kinds = {name for _, name, _ in FRONT_ENDS}
    assert {"Log1pSpectrogram", "MelDbSpectrogram"} <= kinds, kinds
    assert len(FRONT_ENDS) >= 20


@pytest.mark.parametrize("path, name, kwargs", FRONT_ENDS, ids=[f"{p}:{n}" for p, n, _ in FRONT_ENDS])
def test_every_front_end_turns_a_silent_clip_into_its_declared_silence(path, name, kwargs):
    front_end = getattr(features_module, name)(**kwargs)
    silent = front_end(torch.zeros(1, int(front_end.sample_rate)))
    assert torch.allclose(silent, torch.full_like(silent, front_end.silence), atol=1e-5), (
        f"{path}: {name} declares silence {front_end.silence} but a silent clip gives "
        f"{silent.min().item()}..{silent.max().item()}"
    )
    # and silence is below everything a sounding clip produces (no bin is quieter than no energy)
    sounding = front_end(torch.randn(1, int(front_end.sample_rate)) * 0.1)
    assert sounding.min() >= front_end.silence - 1e-5


def test_a_z_scored_db_front_end_is_not_silent_at_zero():
    front_end = MelDbSpectrogram(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=128, mean=-10.0, std=15.0)
    assert front_end.silence == pytest.approx((-100.0 + 10.0) / 15.0)
    assert Log1pSpectrogram().silence == 0.0


class LevelEncoder(torch.nn.Module):
    """(B, T, F) -> (B, 2): the mean level of the low and the high half of the bins (a loudness-driven model)."""

    def forward(self, X):
        half = X.shape[2] // 2
        return torch.stack([X[..., :half].mean(dim=(1, 2)), X[..., half:].mean(dim=(1, 2))], dim=1)


def db_classifier():
    """A z-scored dB front end (GTZAN's statistics) and a model whose output follows the level."""
    front_end = MelDbSpectrogram(sample_rate=16000, n_fft=512, hop_length=256, n_mels=32, mean=-10.0, std=15.0)
    head = torch.nn.Linear(2, 4)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0], [1.0, -1.0]]))
        head.bias.zero_()
    return AudioClassifier(front_end, LevelEncoder(), head).eval()


def clip_features(classifier, n=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    wavs = torch.randn(n, 16000, generator=generator) * torch.linspace(0.0, 0.5, 16000)
    with torch.no_grad():
        return classifier.features(wavs)


def silent_probs(classifier, n):
    with torch.no_grad():
        silent = classifier.features(torch.zeros(1, 16000))
        return torch.softmax(classifier.logits(silent), dim=-1).expand(n, -1)


def test_removing_everything_in_the_suite_gives_the_output_on_a_silent_clip():
    classifier = db_classifier()
    X = clip_features(classifier)
    target = classifier.logits(X).argmax(dim=1).detach()
    p_x = torch.softmax(classifier.logits(X), dim=-1).detach().gather(1, target[:, None]).squeeze(1)
    p_silent = silent_probs(classifier, len(X)).gather(1, target[:, None]).squeeze(1)
    suite = EvaluationSuite(["faithfulness_mask_out", "faithfulness_mask_in"], n_steps=4)
    everything = torch.ones_like(X)
    scores = suite.evaluate(classifier, X, Explanation(everything, everything, target))
    # mask-out of the whole clip is the silent clip; mask-in of it is the clip itself
    assert torch.allclose(scores["faithfulness_mask_out"], p_x - p_silent, atol=1e-5)
    assert (p_x - p_silent).abs().min() > 0.05  # the check can tell silence from another fill
    assert torch.allclose(scores["faithfulness_mask_in"], torch.zeros_like(p_x), atol=1e-6)
    nothing = torch.zeros_like(X)
    scores = suite.evaluate(classifier, X, Explanation(torch.rand_like(X), nothing, target))
    assert torch.allclose(scores["faithfulness_mask_in"], p_x - p_silent, atol=1e-5)


def test_the_curves_end_and_start_at_the_silent_clip():
    classifier = db_classifier()
    X = clip_features(classifier)
    target = classifier.logits(X).argmax(dim=1).detach()
    suite = EvaluationSuite(["deletion_auc", "insertion_auc"], n_steps=4)
    _, probs = suite._predictions(classifier, X, torch.ones_like(X), torch.rand_like(X))
    expected = silent_probs(classifier, len(X))
    assert torch.allclose(probs["deletion"][-1], expected, atol=1e-5)
    assert torch.allclose(probs["insertion"][0], expected, atol=1e-5)
    # the inner steps replace removed bins by silence too: at step k, exactly the removed bins hold it
    saliency = torch.rand_like(X)
    rows = suite._blocks(X, torch.ones_like(X), saliency, classifier.silence)
    deletion = next(b for b in rows if b.key == "deletion").build(0, len(X))  # step 1 of every clip
    n_removed = (deletion == classifier.silence).flatten(1).sum(dim=1) - (X == classifier.silence).flatten(1).sum(1)
    assert (n_removed > 0).all()
    assert target.numel() == len(X)


def test_perturbation_baselines_flipping_and_the_magnitude_control_use_the_silence():
    classifier = db_classifier()
    X = clip_features(classifier)
    silent = classifier.features(torch.zeros(1, 16000)).detach()
    assert torch.allclose(make_baseline("silence", X, classifier=classifier), silent.expand_as(X), atol=1e-5)
    # the z-scored floor is far from 0, and from the clips' own minimum
    assert classifier.silence < X.amin() - 0.5
    target = torch.zeros(len(X), dtype=torch.long)
    n_patches = math.ceil(X.shape[1] / 4) * math.ceil(X.shape[2] / 4)
    order = torch.arange(n_patches).expand(len(X), -1)
    curve = flipping_curve(classifier, X, target, order, (4, 4), n_steps=2)
    with torch.no_grad():
        silent_logit = classifier.logits(silent)[0, 0]
    assert torch.allclose(curve[:, -1], silent_logit.expand(len(X)), atol=1e-5)
    magnitude = InputMagnitude(classifier).attribute(torch.cat([X[:1], silent]))
    assert torch.allclose(magnitude[1], torch.zeros_like(magnitude[1]), atol=1e-5)
    assert (magnitude[0] >= 0).all() and magnitude[0].mean() > 1.0


def test_keep_masked_keeps_x_and_fills_silence():
    X = torch.tensor([[[1.0, -2.0, 3.0]]])
    keep = torch.tensor([[[1.0, 0.0, 0.5]]])
    assert keep_masked(X, keep, -6.0).tolist() == [[[1.0, -6.0, -1.5]]]
    assert keep_masked(X, keep, 0.0).tolist() == (keep * X).tolist()


def test_a_classifier_without_a_declared_silence_is_refused_by_name():
    from common.errors import ConfigError

    classifier = AudioClassifier(torch.nn.Identity(), LogMelCNN(channels=(4,)), GenreHead(4, 2, hidden=0)).eval()
    X = torch.rand(1, 8, 8)
    with pytest.raises(ConfigError, match="silence"):
        EvaluationSuite(["faithfulness_mask_out"]).evaluate(
            classifier, X, Explanation(X, torch.ones_like(X), torch.zeros(1, dtype=torch.long))
        )
    declared = AudioClassifier(torch.nn.Identity(), LogMelCNN(channels=(4,)), GenreHead(4, 2, hidden=0), silence=-3.0)
    assert declared.silence == -3.0
