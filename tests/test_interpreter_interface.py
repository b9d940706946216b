"""Every registered interpreter has one interface: ``attribute(X, target)``, the base's ``explain``,
declared capabilities, returned (never stored) extras; non-class-conditional ones refuse a foreign target."""

import inspect

import pytest
import torch

from common.interpreters import FitData, ForeignTargetError, Interpreter, import_all
from common.interpreters.base import Explanation
from common.registry import INTERPRETERS
from tests.test_amt_lmac import lmac_setup, spectrogram, transformer_classifier
from tests.test_l2i import conv2d_l2i
from tests.test_lrp_drsa import make_classifier, spectrograms

CAPABILITIES = ("class_conditional", "trainable", "needs_fit")


def _conv2d():
    classifier, lmac, wavs, X, *_ = lmac_setup()
    return classifier, lmac, X


def _fit_data(X):
    return FitData(X=X, labels=torch.arange(len(X)) % 3, classes=["a", "b", "c"])


def build(name):
    """(interpreter, X) for each registered name, as small as it runs."""
    cls = INTERPRETERS.get(name)
    if name in ("lrp", "drsa", "deeplift", "deeplift_shap"):
        # a VGG-type CNN: LRP needs modules in forward order, DeepLIFT each ReLU used once
        classifier = make_classifier()
        classifier._silence = 0.0  # its inputs are log1p-like spectrograms: no energy is 0
        X = spectrograms(n=4).abs()
        if name != "drsa":
            return cls(classifier), X
        return cls.fit(classifier, _fit_data(X), n_concepts=2, subspace_dim=2, n_steps=5), X
    if name == "amt":
        classifier = transformer_classifier("vit")
        return cls(classifier), spectrogram(classifier)
    if name == "l2i":
        classifier, interpreter = conv2d_l2i()
        return interpreter, classifier.features(torch.randn(2, 16000) * 0.1)
    classifier, lmac, X = _conv2d()
    if name == "lmac":
        return lmac, X
    if name == "piq":
        from common.interpreters.piq import PIQPsi

        torch.manual_seed(0)
        return cls(classifier, PIQPsi(dim=16, K=6, numclasses=3, decoder_channels=(8, 8, 8, 8))), X
    if name == "prototypes":
        X = torch.cat([X, X.flip(1)])
        return cls.fit(classifier, _fit_data(X), prototypes_per_class=1, epochs=2), X
    small = {
        "smoothgrad": {"n_samples": 3},
        "integrated_gradients": {"n_steps": 4},
        "lime": {"n_samples": 8, "components": "time_segments"},
        "kernel_shap": {"n_samples": 8, "components": "time_segments"},
        "segment_linear": {"n_samples": 16},
        "segment_forest": {"n_samples": 16, "n_estimators": 10},
        "occlusion": {"window": (8, 8), "stride": (8, 8)},
    }
    return cls(classifier, **small.get(name, {})), X


def names():
    return sorted(import_all().names())


def test_the_registry_is_every_interpreter_module_and_nothing_else():
    """``import_all`` finds the interpreters by scanning the package: each name is an Interpreter subclass."""
    registered = names()
    assert {"saliency", "lime", "lrp", "drsa", "lmac", "piq", "l2i", "amt", "prototypes", "input_magnitude"} <= set(
        registered
    )
    for name in registered:
        cls = INTERPRETERS.get(name)
        assert issubclass(cls, Interpreter) and issubclass(cls, torch.nn.Module), name


@pytest.mark.parametrize("name", names())
def test_one_signature_and_declared_capabilities(name):
    cls = INTERPRETERS.get(name)
    assert cls.explain is Interpreter.explain, f"{name} overrides explain: only the base may"
    for verb in ("attribute", "attribute_with_extras"):
        params = list(inspect.signature(getattr(cls, verb)).parameters)
        assert params == ["self", "X", "target"], (name, verb, params)
    assert list(inspect.signature(cls.explain).parameters) == ["self", "wavs", "X", "target"]
    for capability in CAPABILITIES:
        assert isinstance(getattr(cls, capability), bool), (name, capability)
    # what each capability promises is there
    assert (cls.fit.__func__ is not Interpreter.fit.__func__) == cls.needs_fit, name
    assert callable(getattr(cls, "loss_terms", None)) == cls.trainable, name


@pytest.mark.parametrize("name", names())
def test_explain_returns_its_extras_and_stores_nothing(name):
    interpreter, X = build(name)
    interpreter.eval()
    state = {key: id(value) for key, value in vars(interpreter).items()}
    prediction = interpreter.predict(X)
    explanation = interpreter.explain(X=X)
    assert isinstance(explanation, Explanation) and explanation.saliency.shape == X.shape, name
    assert torch.equal(explanation.target, prediction), name
    assert float(explanation.mask.min()) >= 0 and float(explanation.mask.max()) <= 1, name
    saliency, extras = interpreter.attribute_with_extras(X, prediction)
    assert isinstance(extras, dict) and saliency.shape == X.shape, name
    assert {key: id(value) for key, value in vars(interpreter).items()} == state, f"{name} stored state in a call"
    with torch.no_grad():
        again = interpreter.attribute(X, prediction)
    if name != "random":  # a fresh draw per call, by design
        torch.testing.assert_close(again, saliency, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("name", names())
def test_class_conditional_methods_explain_the_class_asked_and_the_others_refuse_it(name):
    interpreter, X = build(name)
    interpreter.eval()
    prediction = interpreter.predict(X)
    other = (prediction + 1) % 3
    if interpreter.class_conditional:
        assert torch.equal(interpreter.explain(X=X, target=other).target, other), name
        return
    with pytest.raises(ForeignTargetError, match="own decision"):
        interpreter.explain(X=X, target=other)
    with pytest.raises(ForeignTargetError):
        interpreter.attribute(X, other)
    assert torch.equal(interpreter.explain(X=X, target=prediction).target, prediction)


def test_the_non_class_conditional_ones_are_lmac_and_amt():
    assert {name for name in names() if not INTERPRETERS.get(name).class_conditional} == {"lmac", "amt"}
    assert {name for name in names() if INTERPRETERS.get(name).trainable} == {"piq", "l2i", "lmac"}
    assert {name for name in names() if INTERPRETERS.get(name).needs_fit} == {"drsa", "prototypes"}
