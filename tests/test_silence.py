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
    declared = front_end.silence(silent)
    assert declared.shape == (1, 1, 1)
    assert torch.allclose(silent, declared.expand_as(silent), atol=1e-5), (
        f"{path}: {name} declares silence {declared.item()} but a silent clip gives "
        f"{silent.min().item()}..{silent.max().item()}"
    )
    # and no bin of a sounding clip is quieter than its silence
    sounding = front_end(torch.randn(2, int(front_end.sample_rate)) * torch.tensor([[0.1], [0.001]]))
    assert (sounding >= front_end.silence(sounding) - 1e-5).all()


def tone_then_noise(sample_rate, seconds=1.0, seed=0):
    """A loud tone in the first half (the clip's maximum), quiet noise in the second."""
    n = int(sample_rate * seconds)
    t = torch.arange(n) / sample_rate
    generator = torch.Generator().manual_seed(seed)
    wav = 0.01 * torch.randn(n, generator=generator)
    wav[: n // 2] += 0.5 * torch.sin(2 * math.pi * 1000 * t[: n // 2])
    return wav[None]


@pytest.mark.parametrize(
    "front_end",
    [
        MelDbSpectrogram(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=128, mean=-10.0, std=15.0),
        MelDbSpectrogram(sample_rate=32000, n_fft=2048, hop_length=256, n_mels=256, mean=-13.369, std=13.162),
        MelDbSpectrogram(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40, top_db=None),
        Log1pSpectrogram(),
        Log1pSpectrogram(n_mels=80),
    ],
    ids=["gtzan_db", "birdset_db", "db_without_top_db", "log1p", "log1p_mel"],
)
def test_removing_bins_is_what_removing_their_energy_from_the_audio_gives(front_end):
    """The intervention check: silencing the second half of the waveform puts its frames at silence(X)."""
    wav = tone_then_noise(front_end.sample_rate)
    X = front_end(wav)
    emptied = wav.clone()
    emptied[:, wav.shape[1] // 2 :] = 0.0
    X_emptied = front_end(emptied)
    # frames whose whole window lies in the zeroed half, and frames whose window never reaches it
    hop, n_fft = front_end.hop, front_end.n_fft
    centres = torch.arange(X.shape[1]) * hop
    zeroed = centres - n_fft // 2 >= wav.shape[1] // 2
    untouched = centres + n_fft // 2 < wav.shape[1] // 2
    assert zeroed.sum() >= 3 and untouched.sum() >= 3
    keep = untouched[None, :, None].to(X.dtype).expand_as(X)
    removed = keep_masked(X, keep, front_end.silence(X))
    assert torch.allclose(removed[:, zeroed], X_emptied[:, zeroed], atol=1e-4)
    assert torch.allclose(removed[:, untouched], X_emptied[:, untouched], atol=1e-4)
    # filling with 0 instead is right only where 0 is silence
    is_log1p = isinstance(front_end, Log1pSpectrogram)
    assert torch.allclose(X_emptied[:, zeroed], torch.zeros_like(X_emptied[:, zeroed]), atol=1e-4) == is_log1p


def test_a_z_scored_db_front_end_is_not_silent_at_zero():
    front_end = MelDbSpectrogram(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=128, mean=-10.0, std=15.0)
    silent = front_end(torch.zeros(1, 22050))
    assert front_end.silence(silent).item() == pytest.approx((-100.0 + 10.0) / 15.0)
    X = front_end(tone_then_noise(22050))
    # a sounding clip's silence is its floor, top_db below its own maximum
    assert front_end.silence(X).item() == pytest.approx(X.max().item() - 80.0 / 15.0, abs=1e-5)
    assert front_end.silence(X).item() == pytest.approx(X.min().item(), abs=1e-5)
    assert Log1pSpectrogram().silence(X).abs().max() == 0


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
    wavs = wavs * torch.tensor([[1.0], [0.05]])[:n]  # two levels: two different floors
    with torch.no_grad():
        return classifier.features(wavs)


def probs_on(classifier, X):
    with torch.no_grad():
        return torch.softmax(classifier.logits(X), dim=-1)


def test_removing_everything_in_the_suite_gives_the_output_on_the_clips_silence():
    classifier = db_classifier()
    X = clip_features(classifier)
    silence = classifier.silence(X)
    assert silence[0] != silence[1]
    target = classifier.logits(X).argmax(dim=1).detach()
    p_x = probs_on(classifier, X).gather(1, target[:, None]).squeeze(1)
    p_silent = probs_on(classifier, silence.expand_as(X)).gather(1, target[:, None]).squeeze(1)
    p_zeros = probs_on(classifier, torch.zeros_like(X)).gather(1, target[:, None]).squeeze(1)
    assert (p_silent - p_zeros).abs().min() > 0.05  # the check can tell silence from a fill with 0
    suite = EvaluationSuite(["faithfulness_mask_out", "faithfulness_mask_in"], n_steps=4)
    everything = torch.ones_like(X)
    scores = suite.evaluate(classifier, X, Explanation(everything, everything, target))
    # mask-out of the whole clip is the clip's silence; mask-in of it is the clip itself
    assert torch.allclose(scores["faithfulness_mask_out"], p_x - p_silent, atol=1e-5)
    assert torch.allclose(scores["faithfulness_mask_in"], torch.zeros_like(p_x), atol=1e-6)
    nothing = torch.zeros_like(X)
    scores = suite.evaluate(classifier, X, Explanation(torch.rand_like(X), nothing, target))
    assert torch.allclose(scores["faithfulness_mask_in"], p_x - p_silent, atol=1e-5)


def test_removing_everything_from_a_log1p_clip_is_the_silent_clip():
    torch.manual_seed(0)
    classifier = AudioClassifier(Log1pSpectrogram(n_mels=32), LevelEncoder(), torch.nn.Linear(2, 3)).eval()
    X = classifier.features(torch.randn(2, 16000) * 0.1)
    target = torch.tensor([0, 2])
    suite = EvaluationSuite(["faithfulness_mask_out"], n_steps=4)
    everything = torch.ones_like(X)
    scores = suite.evaluate(classifier, X, Explanation(everything, everything, target))
    silent = classifier.features(torch.zeros(1, 16000)).expand_as(X)
    expected = probs_on(classifier, X) - probs_on(classifier, silent)
    assert torch.allclose(scores["faithfulness_mask_out"], expected.gather(1, target[:, None]).squeeze(1), atol=1e-5)


def test_the_curves_end_and_start_at_each_clips_silence():
    classifier = db_classifier()
    X = clip_features(classifier)
    suite = EvaluationSuite(["deletion_auc", "insertion_auc"], n_steps=4)
    saliency = torch.rand_like(X)
    _, probs = suite._predictions(classifier, X, torch.ones_like(X), saliency)
    expected = probs_on(classifier, classifier.silence(X).expand_as(X))
    assert torch.allclose(probs["deletion"][-1], expected, atol=1e-5)
    assert torch.allclose(probs["insertion"][0], expected, atol=1e-5)
    assert torch.allclose(probs["deletion"][0], probs_on(classifier, X), atol=1e-5)
    # at an inner step, exactly the removed bins hold the clip's silence, the others X
    silence = classifier.silence(X)
    rows = suite._blocks(X, torch.ones_like(X), saliency, silence)
    step1 = next(b for b in rows if b.key == "deletion").build(0, len(X))
    n_removed = int(round(X[0].numel() / 4))
    for b in range(len(X)):
        changed = step1[b] != X[b]
        assert int(changed.sum()) == n_removed
        assert torch.all(step1[b][changed] == silence[b])
        top = torch.argsort(saliency[b].flatten(), descending=True)[:n_removed]
        assert changed.flatten()[top].all()


def test_perturbation_baselines_flipping_and_the_magnitude_control_use_the_silence():
    classifier = db_classifier()
    X = clip_features(classifier)
    silence = classifier.silence(X)
    assert torch.allclose(make_baseline("silence", X, classifier=classifier), silence.expand_as(X))
    target = torch.zeros(len(X), dtype=torch.long)
    n_patches = math.ceil(X.shape[1] / 4) * math.ceil(X.shape[2] / 4)
    order = torch.arange(n_patches).expand(len(X), -1)
    curve = flipping_curve(classifier, X, target, order, (4, 4), n_steps=2)
    with torch.no_grad():
        silent_logit = classifier.logits(silence.expand_as(X))[:, 0]
        zero_logit = classifier.logits(torch.zeros_like(X))[:, 0]
    assert torch.allclose(curve[:, -1], silent_logit, atol=1e-5)
    assert (silent_logit - zero_logit).abs().min() > 0.1
    magnitude = InputMagnitude(classifier).attribute(X, target)
    assert torch.allclose(magnitude, X - silence)
    assert (magnitude >= 0).all()
    # a clip's silent stretch is the least salient, not (as |X| made it) among the most
    wav = tone_then_noise(16000)
    wav[:, 8000:] = 0.0
    X_tail = classifier.features(wav)
    quiet = X_tail <= classifier.silence(X_tail) + 1e-4
    assert quiet.float().mean() > 0.3
    assert InputMagnitude(classifier).attribute(X_tail, None)[quiet].max() < 1e-4


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
    assert declared.silence(X).tolist() == [[[-3.0]]]
