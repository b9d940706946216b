"""The classifier-training recipes' own Brains: each script holds its step (compute_forward, compute_objectives)
on a base Brain of common/training/ that holds none, and the step computes what the former shared Brain did
(``old_*`` below: its code at commit 03cd05c), loss, gradients and metrics' bookkeeping alike."""

import random

import numpy as np
import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from common.recipe import load_hparams
from common.training.classifier import ClassifierBrain
from common.training.multilabel import MultiLabelBrain
from common.training.segments import ClipAggregator, SegmentClassifierBrain
from tests.conftest import CLASSIFICATION, REPO
from tests.test_recipe_brains import load_script

GTZAN = REPO / "recipes" / "GTZAN" / "lime_shap"
BIRDSET = REPO / "recipes" / "BirdSet" / "protopnet"
BIRDSET_TINY = {"hidden_sizes": [8, 16, 24, 32], "embedding_channels": 32, "depths": [1, 1, 1, 1], "n_mels": 64}
# script, Brain, its base, hparams file, overrides, clip seconds
RECIPES = {
    "esc50": (CLASSIFICATION / "train.py", "ESC50Brain", ClassifierBrain, CLASSIFICATION / "hparams" / "conv2d.yaml",
              {"emb_dim": 16, "out_n_neurons": 3}, 1.0),
    "gtzan": (GTZAN / "train_classifier.py", "GTZANBrain", SegmentClassifierBrain,
              GTZAN / "hparams" / "classifier_cnn.yaml", {"channels": [4, 8], "head_hidden": 8}, 3.0),
    "convnext": (BIRDSET / "train_convnext.py", "ConvNeXtBrain", MultiLabelBrain, BIRDSET / "hparams" / "convnext.yaml",
                 {**BIRDSET_TINY, "out_n_neurons": 3}, 2.0),
    # an orthogonality weight not 1, so that a dropped weight shows
    "audioprotopnet": (BIRDSET / "train_audioprotopnet.py", "AudioProtoPNetBrain", MultiLabelBrain,
                       BIRDSET / "hparams" / "audioprotopnet.yaml",
                       {**BIRDSET_TINY, "out_n_neurons": 3, "prototypes_per_class": 2, "orthogonality_weight": 2.5,
                        "prototype_channels": 24, "frequency_height": 8},
                       2.0),
}  # fmt: skip


def old_forward(brain, batch, stage):
    """The former ClassifierBrain.compute_forward (MultiLabelBrain inherited it), in fewer lines."""
    wavs, lens = batch.to(brain.device).sig
    if stage == sb.Stage.TRAIN and getattr(brain.hparams, "augmentation", None) is not None:
        wavs, lens = brain.hparams.augmentation(wavs, lens)
    return brain.modules.model(wavs, head_scores=True)


def old_classifier_objectives(brain, predictions, batch, stage):
    """The former ClassifierBrain.compute_objectives and SegmentClassifierBrain's addition: (loss, confusion, clips)."""
    classid, _ = batch.class_string_encoded
    classid = classid.reshape(-1)
    n_aug = predictions.shape[0] // classid.shape[0]
    classid = classid.repeat(n_aug)
    loss = brain.hparams.compute_cost(predictions.unsqueeze(1), classid.unsqueeze(1))
    confusion = np.zeros((brain.hparams.out_n_neurons,) * 2, dtype=np.int64)
    np.add.at(confusion, (classid.cpu().numpy(), predictions.argmax(dim=-1).cpu().numpy()), 1)
    clips = ClipAggregator(brain.hparams.out_n_neurons)
    if stage != sb.Stage.TRAIN and hasattr(batch, "clip_id"):
        probabilities = torch.softmax(predictions.detach() * brain.modules.model.logit_scale, dim=-1)
        clips.add(batch.clip_id, probabilities, batch.class_string_encoded[0])
    return loss, {"confusion": confusion, "clips": clips.sums}


def old_multilabel_objectives(brain, logits, batch, stage):
    """The former MultiLabelBrain.compute_objectives: (loss, the scores and targets recorded)."""
    targets = batch.labels.data.to(logits.dtype)
    n_aug = logits.shape[0] // targets.shape[0]
    targets = targets.repeat(n_aug, 1)
    if brain.class_mask is not None:
        logits, targets = logits[:, brain.class_mask], targets[:, brain.class_mask]
    loss = brain.hparams.compute_cost(logits, targets)
    regularization = getattr(brain.modules.model, "regularization_loss", None)
    weight = getattr(brain.hparams, "regularization_weight", 0.0)
    if regularization is not None and weight:
        loss = loss + weight * regularization()
    return loss, {"scores": [logits.detach()], "targets": [targets.to(torch.uint8)]}


def recorded(brain):
    """What the new step left in the stage's bookkeeping, in old_*_objectives' form."""
    if isinstance(brain, MultiLabelBrain):
        return {"scores": brain.scores._scores, "targets": brain.scores._targets}
    return {"confusion": brain.confusion, "clips": getattr(brain, "clips", ClipAggregator(0)).sums}


def assert_same(new, old):
    assert new.keys() == old.keys()
    for key in new:
        if key == "clips":
            assert new[key].keys() == old[key].keys() and all(
                np.array_equal(new[key][c], old[key][c]) for c in old[key]
            )
        elif key == "confusion":
            assert np.array_equal(new[key], old[key]), (new[key], old[key])
        else:
            assert all(torch.equal(a, b) for a, b in zip(new[key], old[key], strict=True))


def make_batch(name, hparams, seconds, generator):
    """Four clips of noise (two segments of each of two songs, for GTZAN); class ids or multi-hot labels."""
    n = int(seconds * hparams["sample_rate"])
    examples = []
    for k, label in enumerate([0, 2, 1, 2]):
        example = {"id": f"clip{k}", "sig": 0.1 * torch.randn(n, generator=generator)}
        if name in ("esc50", "gtzan"):
            example["class_string_encoded"] = torch.LongTensor([label])
        if name == "gtzan":
            example["clip_id"] = f"song{k // 2}"
        else:
            example["labels"] = torch.tensor([float(label == 0), float(label == 1), 1.0])
        examples.append(example)
    return PaddedBatch(examples)


def doubling(wavs, lens):
    """An augmenter that concatenates a copy, as SpeechBrain's with concat_original: targets must repeat."""
    return torch.cat([wavs, 0.5 * wavs]), torch.cat([lens, lens])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_classifier_recipe_holds_its_step_and_it_computes_the_former_objective(name, tmp_path):
    script, brain_name, base, hparams_file, overrides, seconds = RECIPES[name]
    module = load_script(script)
    brain_class = getattr(module, brain_name)
    assert issubclass(brain_class, base) and brain_class.__module__ == module.__name__
    assert {"compute_forward", "compute_objectives"} <= set(vars(brain_class))  # the step is the script's
    for shared in (ClassifierBrain, SegmentClassifierBrain, MultiLabelBrain):  # and no base holds one
        assert not {"compute_forward", "compute_objectives"} & set(vars(shared)), shared.__name__

    torch.manual_seed(0)
    hparams = load_hparams(hparams_file, {"data_folder": str(tmp_path), "output_folder": str(tmp_path), **overrides})
    brain = brain_class(modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"})
    brain.modules.eval()  # no dropout: the two passes see the same network
    params = [p for p in brain.modules.parameters() if p.requires_grad]
    real_augmenter = getattr(brain.hparams, "augmentation", None)
    passes = [(sb.Stage.TRAIN, real_augmenter, None), (sb.Stage.TRAIN, doubling, None), (sb.Stage.VALID, None, None)]
    if base is MultiLabelBrain:
        passes.append((sb.Stage.TEST, None, [0, 2]))  # a test set scoring its own classes only
    old_objectives = old_multilabel_objectives if base is MultiLabelBrain else old_classifier_objectives
    for k, (stage, augmenter, class_mask) in enumerate(passes):
        brain.hparams.augmentation, brain.class_mask = augmenter, class_mask
        # one batch per pass (an augmenter may change its input in place)
        batch, old_batch = (make_batch(name, hparams, seconds, torch.Generator().manual_seed(k)) for _ in range(2))
        brain.on_stage_start(stage)
        random.seed(1), torch.manual_seed(1)  # the real augmenter draws its drops: the same ones in both passes
        loss = brain.compute_objectives(brain.compute_forward(batch, stage), batch, stage)
        random.seed(1), torch.manual_seed(1)
        old_loss, old_state = old_objectives(brain, old_forward(brain, old_batch, stage), old_batch, stage)
        assert torch.equal(loss, old_loss), (stage, float(loss), float(old_loss))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        old_grads = torch.autograd.grad(old_loss, params, allow_unused=True)
        assert all((g is None and o is None) or torch.equal(g, o) for g, o in zip(grads, old_grads, strict=True))
        assert_same(recorded(brain), old_state)
    if name == "audioprotopnet":  # the orthogonality term is in the objective, with its weight
        plain = brain.hparams.compute_cost(*brain.scored_classes(brain.compute_forward(batch, sb.Stage.VALID), batch))
        regularization = brain.modules.model.regularization_loss()
        assert float(regularization.detach()) > 0 and torch.allclose(old_loss, plain + 2.5 * regularization)


@pytest.mark.parametrize(
    "model, brain_name", [("AudioProtoPNet", "AudioProtoPNetBrain"), ("AudioClassifier", "ConvNeXtBrain")]
)
def test_birdset_evaluation_scores_each_model_with_its_stage_brain(model, brain_name, monkeypatch):
    """evaluate.py runs the stage script's Brain of the model its hparams build (its test loss is that
    stage's objective: AudioProtoPNet's includes the orthogonality term)."""
    import common.models.classifier
    import common.models.protopnet

    evaluate = load_script(BIRDSET / "evaluate.py")
    model_class = getattr(common.models.protopnet if model == "AudioProtoPNet" else common.models.classifier, model)
    hparams = {"model": object.__new__(model_class)}
    used = []
    monkeypatch.setattr(evaluate, "setup_experiment", lambda argv: (hparams, {}, None, None))
    monkeypatch.setattr(evaluate, "birdset_datasets", lambda hp: {})
    monkeypatch.setattr(evaluate, "run_multilabel_recipe", lambda *args: used.append(args) or (None, []))
    evaluate.main([])
    assert hparams["test_only"] is True and len(used) == 1 and used[0][3].__name__ == brain_name
