"""The recipes' own Brains: each trained method's script holds its step (its terms, with the hparams' weights),
on the evaluation Brain of common/training/interpreter.py; post-hoc figures read only the explanation."""

import importlib.util
import sys
from types import SimpleNamespace

import pytest
import speechbrain as sb
import torch

from common.interpreters.components import MelBands, Superpixels, TimeMelGrid, TimeSegments
from common.training.interpreter import InterpreterBrain
from common.training.posthoc import component_axis
from tests.conftest import INTERPRET, REPO


def load_script(path):
    """A recipe script as a module (its folder on sys.path, as when it is run: eval.py imports its siblings)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def bare_brain(brain_class, weights):
    """The Brain's objective alone: no modules, only the weights and the stage's running sums."""
    brain = object.__new__(brain_class)
    brain.hparams = SimpleNamespace(loss_weights=weights)
    brain.term_sums, brain.n_seen = {}, 0
    return brain


# weights distinct and not 1 (a dropped or swapped weight shows), exact in float32 (the gradients are compared)
PIQ_W = {"rec": 2.0, "vq": 3.0, "commit": 5.0}
L2I_W = {"rec": 2.0, "sparsity": 0.75, "fidelity": 7.0}
LMAC_W = {"in": 4.0, "out": 0.25, "l1": 6.5, "tv": 3.0, "guide": 9.0}
# script, Brain, weights, the terms in the order the interpreter's loss_terms returns them
METHODS = {
    "piq": ("train_piq.py", "PIQBrain", PIQ_W, ["rec", "vq", "commit"]),
    "l2i": ("train_l2i.py", "L2IBrain", L2I_W, ["rec", "sparsity", "fidelity"]),
    "lmac": ("train_lmac.py", "LMACBrain", LMAC_W, ["in", "out", "l1", "tv"]),
    "lmac_ft": ("train_lmac.py", "LMACBrain", LMAC_W, ["in", "out", "guide", "l1", "tv"]),  # with guidance
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_recipe_objective_is_its_terms_with_the_hparams_weights(name):
    """compute_objectives of each recipe Brain: the weighted sum of its method's terms, bit for bit what the
    former shared Brain computed (zeros + sum in the terms' order), and the terms logged per batch."""
    script, brain_name, weights, names = METHODS[name]
    brain_class = getattr(load_script(INTERPRET / script), brain_name)
    assert issubclass(brain_class, InterpreterBrain)
    generator = torch.Generator().manual_seed(0)
    terms = {k: torch.rand((), generator=generator, requires_grad=True) for k in names}
    brain = bare_brain(brain_class, weights)
    batch = SimpleNamespace(id=["a", "b", "c"])
    loss = brain.compute_objectives({"terms": terms}, batch, sb.Stage.TRAIN)
    before = sum((weights.get(k, 1.0) * v for k, v in terms.items()), torch.zeros(()))
    assert torch.equal(loss, before), (float(loss), float(before))
    grads = torch.autograd.grad(loss, list(terms.values()))
    assert [float(g) for g in grads] == [weights[k] for k in names]  # each term enters once, with its own weight
    assert brain.n_seen == 3 and brain.term_sums == pytest.approx({k: 3 * float(v) for k, v in terms.items()})
    with pytest.raises(KeyError):  # a weight missing from the hparams is an error, not a silent 1
        bare_brain(brain_class, {k: w for k, w in weights.items() if k != names[0]}).compute_objectives(
            {"terms": terms}, batch, sb.Stage.TRAIN
        )


def test_methods_without_a_step_run_the_evaluation_brain():
    """AMT and LRP train nothing: their scripts run the evaluation Brain itself; eval.py runs each trained
    interpreter with its recipe's Brain (found by the interpreter's registered name)."""
    for script in (INTERPRET / "interpret_amt.py", REPO / "recipes" / "GTZAN" / "drsa" / "explain_lrp.py"):
        assert "brain_class=InterpreterBrain" in script.read_text()
    evaluation = load_script(INTERPRET / "eval.py")
    assert {name: brain.__name__ for name, brain in evaluation.BRAINS.items()} == {
        "piq": "PIQBrain",
        "l2i": "L2IBrain",
        "lmac": "LMACBrain",
    }
    from common.interpreters.l2i import L2IInterpreter
    from common.interpreters.lmac import LMACInterpreter
    from common.interpreters.piq import PIQInterpreter

    assert [c.registry_name for c in (PIQInterpreter, L2IInterpreter, LMACInterpreter)] == ["piq", "l2i", "lmac"]


def test_explain_shap_is_explain_lime():
    """One script serves LIME and SHAP (the hparams pick the method); explain_shap.py is it under its name."""
    lime = load_script(REPO / "recipes" / "GTZAN" / "lime_shap" / "explain_lime.py")
    shap = load_script(REPO / "recipes" / "GTZAN" / "lime_shap" / "explain_shap.py")
    assert shap.main.__code__ is lime.main.__code__ or shap.main.__module__ == "explain_lime"


@pytest.mark.parametrize(
    "components, axis",
    [
        (TimeSegments(6), "time segment"),
        (MelBands(4), "mel band"),
        (TimeMelGrid(3, 2), None),
        (Superpixels("slic"), None),
        (TimeSegments(1), "component"),
    ],
)
def test_component_axis_is_read_from_the_component_ids(components, axis):
    """The post-hoc Brain labels the component bars from the ids the explanation returns, not the interpreter's
    type: whole frames are time segments, whole bins mel bands; grids and superpixels get no bars."""
    X = torch.zeros(2, 40, 16)
    X[:, 5:20, 2:9], X[:, 25:35, 8:14] = 1.0, 0.6  # two blobs, so that superpixels are not one region
    ids = components(X + 0.05 * torch.rand(2, 40, 16, generator=torch.Generator().manual_seed(0)))
    assert component_axis(ids[0]) == axis and component_axis(ids[1]) == axis
