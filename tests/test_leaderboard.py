"""The leaderboard: sanity check (model-parameter randomisation), config errors, and the debug run end to end."""

import csv
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml

from common.analysis.leaderboard import (
    default_cascade,
    last_encoder_block,
    load_config,
    randomized_copy,
    rebind,
    run,
    sanity_check,
    spearman,
)
from common.errors import ConfigError
from common.features import Log1pSpectrogram
from common.interpreters.baselines import InputMagnitude
from common.interpreters.lrp import LRPInterpreter
from common.interpreters.posthoc import GradientSaliency
from common.metrics.uncertainty import shared_ranks
from common.models import AudioClassifier
from common.models.genre_cnn import GenreHead, LogMelCNN

REPO = Path(__file__).resolve().parents[1]
DEBUG_CONFIG = REPO / "tools" / "leaderboard" / "debug.yaml"


def tiny_classifier(n_classes=3):
    front_end = Log1pSpectrogram(sample_rate=16000, n_mels=32)
    return AudioClassifier(front_end, LogMelCNN(channels=(8, 16)), GenreHead(16, n_classes, hidden=16, dropout=0.0))


@pytest.fixture(scope="module")
def trained(synthetic_data):
    """A tiny log-mel CNN trained in-process on the synthetic clips until it fits them, and their spectrograms."""
    from common.data.audio import load_audio
    from common.data.esc50 import read_metadata

    torch.manual_seed(0)
    rows = read_metadata(synthetic_data / "meta" / "esc50.csv")
    wavs = torch.stack([load_audio(synthetic_data / "audio" / r["filename"], 16000, 1.0) for r in rows])
    labels = torch.tensor([r["target"] for r in rows])
    model = tiny_classifier()
    with torch.no_grad():
        X = model.features(wavs)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(80):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.logits(X), labels)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model.logits(X).argmax(1) == labels).float().mean())
    assert accuracy >= 0.9, f"the tiny model did not fit its training clips (accuracy {accuracy})"
    return model, X


def test_spearman_identity_reversal_and_constant_maps():
    a = torch.rand(3, 10, 8)
    assert torch.allclose(spearman(a, a), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(spearman(a, 2 * a + 1), torch.ones(3, dtype=torch.float64))  # ranks only
    flipped = a.flatten(1).max() + 1 - a  # positive, reversed order
    assert torch.allclose(spearman(a, flipped), -torch.ones(3, dtype=torch.float64))
    constant = torch.ones_like(a)
    assert torch.equal(spearman(constant, constant), torch.ones(3, dtype=torch.float64))
    assert torch.equal(spearman(a, constant), torch.zeros(3, dtype=torch.float64))


def test_cascade_names_head_then_last_conv_block():
    model = tiny_classifier()
    # LogMelCNN: features = [conv, bn, relu, pool, conv, bn, relu, pool]: the last block is conv 4 + bn 5
    assert last_encoder_block(model.embedding_model) == ["features.4", "features.5"]
    assert default_cascade(model) == [
        ["classifier"],
        ["classifier", "embedding_model.features.4", "embedding_model.features.5"],
    ]


def test_randomized_copy_changes_only_the_named_layers():
    model = tiny_classifier()
    copied = randomized_copy(model, ["classifier"], seed=3)
    original, changed = dict(model.named_parameters()), dict(copied.named_parameters())
    for name, param in original.items():
        same = torch.equal(param, changed[name])
        assert same != name.startswith("classifier."), name
    with pytest.raises(ValueError, match="no submodule"):
        randomized_copy(model, ["not_a_layer"])


def test_rebind_points_every_reference_into_the_new_classifier():
    model = tiny_classifier()
    other = randomized_copy(model, ["classifier", "embedding_model"], seed=1)
    lrp = LRPInterpreter(model)
    moved = rebind(lrp, model, other)
    assert moved.classifier is other
    assert moved.path.encoder is other.embedding_model and moved.path.head is other.classifier
    assert lrp.classifier is model and lrp.path.encoder is model.embedding_model  # the original is untouched


def test_sanity_check_flags_a_model_independent_method_and_passes_gradients(trained):
    model, X = trained
    target = model.logits(X).argmax(1)
    broken = sanity_check(InputMagnitude(model), model, X, target, threshold=0.5)
    assert not broken["passed"]
    assert broken["steps"] == pytest.approx([1.0, 1.0, 1.0])  # the full cascade: head, block 2, block 1
    gradient = sanity_check(GradientSaliency(model), model, X, target, threshold=0.5)
    assert gradient["passed"], gradient["steps"]
    assert gradient["steps"][-1] < 0.5
    assert all(rho.shape == (len(X),) for rho in gradient["per_clip"])


def write_config(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_malformed_configs_name_the_file_and_the_key(tmp_path):
    base = (
        "output_folder: out\ndata: {folder: d}\n"
        "classifiers: {cnn: {hparams: recipes/ESC50/classification/hparams/logmel_cnn.yaml}}\n"
    )
    cases = {
        "methods: [{name: no_such_method}]\n": "methods[0].name",
        "methods: [{name: saliency, kwarg: {}}]\n": "methods[0].kwarg",
        "methods: [{name: saliency, classifier: vit}]\n": "methods[0].classifier",
        "methods: [{name: saliency}]\nmetrics: [fid_out]\n": "metrics",
        "methods: [{name: saliency}]\nsanity: {treshold: 0.5}\n": "sanity.treshold",
        "methods: []\n": "methods",
        "methods: [{name: saliency}]\nlocalization_clips: right\n": "localization_clips",
    }
    for tail, key in cases.items():
        path = write_config(tmp_path, base + tail)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value).startswith(f"{path}: key '{key}':"), str(info.value)
    path = write_config(tmp_path, "methods: [name: x\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    """The debug leaderboard run, with the files moved into place by an atomic write recorded."""
    import common.io

    out = tmp_path_factory.mktemp("leaderboard")
    moved, replace = [], common.io.os.replace
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(common.io.os, "replace", lambda src, dst: (moved.append(Path(dst)), replace(src, dst))[1])
        rows, folder = run(load_config(DEBUG_CONFIG, data_folder=out / "data", output_folder=out), progress=False)
    return rows, folder, moved


def test_debug_run_writes_every_output_atomically_and_keeps_the_methods_extras(debug_run):
    """The table, the per-clip CSV and run.json are moved into place whole (a crash never leaves half a file);
    the per-clip rows carry each method's own diagnostics (DRSA's concept relevances) beside the metrics."""
    _, folder, moved = debug_run
    moved = {path.name for path in moved if path.parent == folder}
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard_per_clip.csv", "run.json"} <= moved
    with open(folder / "leaderboard_per_clip.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    drsa = [row for row in rows if row["method"] == "drsa"]
    assert len(drsa) == 6 and all(math.isfinite(float(row["concept0_relevance"])) for row in drsa)
    assert all(row["concept0_relevance"] == "" for row in rows if row["method"] == "saliency")


# Ranges of each column (None: any finite value)
RANGES = {
    "Fid-In": (0, 1),
    "Faith. mask-out (p(X)-p((1-M)X))": (-1, 1),
    "Faith. mask-in (p(X)-p(MX))": (-1, 1),
    "AI (%)": (0, 100),
    "AD (%)": (0, 100),
    "AG (%)": (0, 100),
    "SPS": (0, 1),
    "COMP": (0, None),
    "Deletion AUC": (0, 1),
    "Insertion AUC": (0, 1),
    "Relevance mass acc.": (0, 1),
    "Pointing game": (0, 1),
    "Localization AUC": (0, 1),
    "SI-SNR (dB)": (None, None),
    "sanity rho (head)": (-1, 1),
    "sanity rho (head+block)": (-1, 1),
    "s / clip": (0, None),
}


def test_debug_leaderboard_table(debug_run):
    rows, folder, _ = debug_run
    methods = [row["method"] for row in rows]
    config = yaml.safe_load(DEBUG_CONFIG.read_text())
    assert methods == [m.get("label", m["name"]) for m in config["methods"]]
    assert {"saliency", "lrp", "drsa", "prototypes", "lmac", "input_magnitude"} <= {
        m["name"] for m in config["methods"]
    }
    with open(folder / "leaderboard.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["method"] for row in table] == methods
    for column, (low, high) in RANGES.items():
        for row in table:
            value = float(row[column])
            assert math.isfinite(value), (row["method"], column)
            assert low is None or value >= low - 1e-6, (row["method"], column, value)
            assert high is None or value <= high + 1e-6, (row["method"], column, value)
    # Every metric's mean comes with its bootstrap interval; the rank column (localization AUC by default, the
    # data has ground truth) follows the shared-rank rule on those bounds, the control ranked like any method.
    for column in (c for c in RANGES if not c.startswith("sanity") and c != "s / clip"):
        for row in table:
            lo, mean, hi = (float(row[column + suffix]) for suffix in (" lo", "", " hi"))
            assert lo <= mean + 1e-9 and mean <= hi + 1e-9, (row["method"], column, lo, mean, hi)
    # A classifier that fails the evidence check (tests/test_evidence_check.py) has its rows flagged, not ranked.
    ranked = [row for row in table if row["classifier evidence check"] != "fail"]
    assert all(row["rank (Localization AUC)"] == "" for row in table if row not in ranked)
    bounds = [(float(row["Localization AUC lo"]), float(row["Localization AUC hi"])) for row in ranked]
    assert [int(row["rank (Localization AUC)"]) for row in ranked] == shared_ranks(bounds)
    assert min(int(row["rank (Localization AUC)"]) for row in ranked) == 1
    sanity = {row["method"]: row["sanity"] for row in table}
    assert sanity["input magnitude (broken on purpose)"] == "fail"
    assert sanity["saliency"] == "pass"
    assert all(row["clips"] == "6" for row in table)
    assert all("log-mel CNN" in row["classifier"] for row in table)
    assert table[methods.index("prototypes")]["classifier"].startswith("prototype net on log-mel CNN")
    markdown = (folder / "leaderboard.md").read_text().splitlines()
    assert markdown[0].startswith("| method | classifier | rank (Localization AUC) | Fid-In |")
    assert " Fid-In lo " not in markdown[0]  # the markdown shows "mean [lo, hi]" in one cell
    fid_in = markdown[0].strip("|").split(" | ").index("Fid-In")
    cells = [line.strip("|").split(" | ")[fid_in].strip() for line in markdown[2:]]
    assert all(re.fullmatch(r"-?[\d.e-]+ \[-?[\d.e-]+, -?[\d.e-]+\]", cell) for cell in cells), cells
    assert len(markdown) == 2 + len(methods)
    with open(folder / "leaderboard_per_clip.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6 * len(methods)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_debug_run_writes_a_parsable_html_report(debug_run):
    _, folder, _ = debug_run
    run = json.loads((folder / "run.json").read_text())
    n_methods = len(run["rows"])
    assert len(run["clips"]) == 2 and all(len(clip["methods"]) == n_methods for clip in run["clips"])
    parser = _Tags()
    parser.feed((folder / "report" / "index.html").read_text())
    audio = [attrs["src"] for tag, attrs in parser.tags if tag == "audio"]
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(audio) == 2 * (1 + n_methods) and len(images) == 2 * (1 + n_methods)
    assert all(not Path(src).is_absolute() and (folder / "report" / src).is_file() for src in audio + images)
    assert sum(tag == "tr" for tag, _ in parser.tags) == 1 + n_methods


def test_every_needs_fit_method_is_built_by_its_fit_on_the_training_clips(synthetic_data, monkeypatch):
    """No name check: an interpreter declaring ``needs_fit`` is built by ``fit(classifier, FitData, **options)``
    (the entry's ``fit`` options and ``kwargs``) on the training clips, and explains the classifier it holds."""
    from types import SimpleNamespace

    from common.analysis.leaderboard import select_rows
    from common.analysis.leaderboard.methods import build_method
    from common.data.audio import load_audio
    from common.interpreters.base import FitData, Interpreter
    from common.registry import INTERPRETERS

    model, other, calls = tiny_classifier(), tiny_classifier(), []

    class Fitted(Interpreter):
        needs_fit = True

        def attribute(self, X, target):
            return X

        @classmethod
        def fit(cls, classifier, data, **options):
            calls.append((classifier, data, options))
            return cls(other)

    monkeypatch.setitem(INTERPRETERS._items, "fitted_for_the_test", Fitted)
    rows = select_rows(synthetic_data, [1, 2, 3, 4], 10**6)
    entry = SimpleNamespace(hparams={"sample_rate": 16000, "signal_length_s": 1.0})
    method = {"name": "fitted_for_the_test", "fit": {"n_clips": 5, "epochs": 3}, "kwargs": {"percentile": 90}}
    interpreter, explained, hparams = build_method(method, entry, model, None, synthetic_data, rows)
    assert isinstance(interpreter, Fitted) and explained is other and hparams is None
    [(classifier, data, options)] = calls
    assert classifier is model and options == {"n_clips": 5, "epochs": 3, "percentile": 90}
    assert isinstance(data, FitData) and data.classes == sorted({r["category"] for r in rows})
    assert [data.classes[i] for i in data.labels.tolist()] == [r["category"] for r in rows]
    wavs = torch.stack([load_audio(synthetic_data / "audio" / r["filename"], 16000, 1.0) for r in rows])
    with torch.no_grad():
        torch.testing.assert_close(data.X, model.features(wavs))


def test_drsa_fit_is_fit_drsa_on_the_lrp_pairs_of_the_first_clips(trained):
    from common.interpreters.base import FitData
    from common.interpreters.drsa import DRSAInterpreter, collect_drsa_pairs, fit_drsa

    model, X = trained
    data = FitData(X=X, labels=torch.zeros(len(X), dtype=torch.long), classes=["a"])
    options = {"subspace_dim": 4, "n_steps": 15, "n_restarts": 1}
    fitted = DRSAInterpreter.fit(model, data, n_concepts=2, n_clips=8, n_positions=16, **options)
    acts, ctxs = collect_drsa_pairs(LRPInterpreter(model), list(X[:8].split(4)), None, n_positions=16)
    U, _ = fit_drsa(acts.flatten(0, 1), ctxs.flatten(0, 1), 2, **options)
    assert fitted.classifier is model and fitted.n_concepts == 2 and fitted.layer is None
    torch.testing.assert_close(fitted.U, U.float())


def test_evaluation_loop_scores_with_the_suite_and_keeps_the_interpreters_diagnostics(trained, synthetic_data):
    """explain -> to_wav -> suite, batch by batch, is the suite on all clips at once; the interpreter's
    per-clip diagnostics join the scores; every clip is scored once, in order."""
    from common.analysis.leaderboard import load_clips, select_rows
    from common.interpreters.base import Interpreter
    from common.metrics import EvaluationSuite
    from common.metrics.evaluation import evaluate_interpreter

    class Diagnosed(Interpreter):
        def attribute_with_extras(self, X, target):
            saliency = X - X.amin(dim=(1, 2), keepdim=True)
            return saliency, {"per_clip": {"peak": saliency.flatten(1).amax(dim=1)}}

    model, _ = trained
    clips = load_clips(synthetic_data, select_rows(synthetic_data, [5], 3), 16000, 1.0, model.front_end)
    assert clips.ground_truth is not None and clips.event_wavs is not None
    names = ["fid_in", "pointing_game", "si_snr"]
    evaluation = evaluate_interpreter(Diagnosed(model), model, clips.batches(2), EvaluationSuite(names))
    assert [(b.lo, b.hi) for b in evaluation.batches] == [(0, 2), (2, 3)] and evaluation.explain_seconds > 0
    with torch.no_grad():
        X = model.features(clips.wavs)
    explanation = Diagnosed(model).explain(X=X)
    wavs = explanation.to_wav(model, clips.wavs)
    expected = EvaluationSuite(names).evaluate(
        model, X, explanation, ground_truth=clips.ground_truth, interpretation_wavs=wavs, event_wavs=clips.event_wavs
    )
    assert set(evaluation.per_clip) == {*names, "peak"}
    for name in names:
        torch.testing.assert_close(evaluation.per_clip[name].double(), expected[name].double(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(evaluation.per_clip["peak"], explanation.saliency.flatten(1).amax(dim=1))


def test_localization_on_correct_clips_blanks_only_the_misclassified_clips(trained, synthetic_data):
    """localization_clips: correct. The ground-truth metrics of a clip whose explained (predicted) class is not
    its true class are NaN; every other score and every other clip is as with all clips."""
    from common.analysis.leaderboard import load_clips, select_rows
    from common.analysis.leaderboard.run import evaluate_method

    model, _ = trained
    clips = load_clips(synthetic_data, select_rows(synthetic_data, [4, 5], 6), 16000, 1.0, model.front_end)
    assert len(clips) == 6
    with torch.no_grad():
        predicted = model.logits(model.features(clips.wavs)).argmax(1)
    truth = predicted.clone()
    truth[[1, 4]] = (predicted[[1, 4]] + 1) % 3  # as if clips 1 and 4 were misclassified
    names = ["localization_auc", "pointing_game", "fid_in"]
    interpreter = GradientSaliency(model)
    kept = evaluate_method("saliency", interpreter, model, clips, names, batch_size=4, progress=False)
    only = evaluate_method(
        "saliency", interpreter, model, clips, names, batch_size=4, progress=False, true_targets=truth
    )
    wrong = torch.zeros(6, dtype=torch.bool)
    wrong[[1, 4]] = True
    for name in ("localization_auc", "pointing_game"):
        assert torch.isnan(only.per_clip[name][wrong]).all()
        torch.testing.assert_close(only.per_clip[name][~wrong].double(), kept.per_clip[name][~wrong].double())
    torch.testing.assert_close(only.per_clip["fid_in"], kept.per_clip["fid_in"])


@pytest.mark.parametrize("config", sorted((REPO / "tools" / "leaderboard").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(config):
    """Every config the README points at loads and passes the checks (keys, metrics, methods, files)."""
    from common.analysis.leaderboard.config import load_config

    loaded = load_config(config)
    assert loaded["methods"] and loaded["classifiers"]
