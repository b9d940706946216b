#!/usr/bin/env python3
"""One leaderboard for every explanation method of the toolkit, on one classifier and one data set.

    python tools/leaderboard.py tools/leaderboard/synthetic.yaml
    python tools/leaderboard.py tools/leaderboard/esc10.yaml --data_folder /tmp/esc10
    python tools/leaderboard.py CONFIG --set data.n_clips=8 --set classifiers.cnn.training.number_of_epochs=2

The YAML config (see tools/leaderboard/*.yaml) names the data (an ESC-50-layout
folder, written as synthetic scenes with ground truth when ``data.synthetic``
is given and the folder is empty), the classifier(s) (a classification recipe's
hparams, trained briefly by the recipe or loaded from an existing ``checkpoint``
folder) and the methods:

* a registry name (``name: integrated_gradients``, ``kwargs: {...}``): a post-hoc
  method built in this process around the classifier;
* a recipe (``recipe``, ``hparams``, ``overrides``): a trained interpreter (PIQ,
  L2I, L-MAC) trained by its recipe (skipped when its run folder already holds
  test results, or when ``checkpoint`` names a trained run), then loaded here;
  ``train: false`` for recipes with nothing to train (AMT); ``before`` runs a
  prerequisite recipe (L2I's NMF dictionary) whose save folder is passed as
  ``pass_as``;
* ``drsa`` with ``fit: {...}``: DRSA subspaces fitted here on training clips.

Every method explains the same test clips; the table (``leaderboard.md`` /
``.csv`` in the output folder) holds every metric of the shared suite, the
sanity check (similarity of each explanation before and after re-initialising
the classifier's top layers, and pass/fail), seconds per clip and the
classifier each method explains. ``run.json`` and ``examples/`` feed
``tools/report.py``; the HTML report is written at the end (``report/index.html``).
"""

import argparse
import csv
import json
import subprocess
import sys
import traceback
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.errors import ConfigError  # noqa: E402

CLASSIFICATION_RECIPE = "recipes/ESC50/classification/train.py"
TOP_KEYS = {
    "title",
    "output_folder",
    "data",
    "classifiers",
    "methods",
    "metrics",
    "curve_steps",
    "batch_size",
    "n_report_clips",
    "sanity",
    "seed",
}
DATA_KEYS = {"folder", "synthetic", "test_folds", "train_folds", "n_clips"}
CLASSIFIER_KEYS = {"hparams", "recipe", "architecture", "training", "checkpoint", "label"}
METHOD_KEYS = {
    "name",
    "label",
    "classifier",
    "kwargs",
    "recipe",
    "hparams",
    "overrides",
    "train",
    "checkpoint",
    "before",
    "fit",
    "sanity",
}
SANITY_KEYS = {"threshold", "n_clips", "seed", "cascade"}
# Interpreter recipes evaluate their own test set after training; the leaderboard scores the
# methods itself, so the recipe's evaluation is kept cheap unless a method overrides these.
CHEAP_RECIPE_EVALUATION = {"metrics": ["fid_in"], "valid_metrics": ["fid_in"], "n_examples": 0}


# -- the config ---------------------------------------------------------------------------------------
def _fail(path, key, message):
    raise ConfigError(f"{path}: key {key!r}: {message}")


def _set_dotted(config, dotted, value):
    keys = dotted.split(".")
    node = config
    for key in keys[:-1]:
        if isinstance(node, list):
            node = node[int(key)]
        else:
            node = node.setdefault(key, {})
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


def load_config(path, sets=(), data_folder=None, output_folder=None):
    """Read and check a leaderboard YAML (safe loading); ``sets``: ``key.sub=value`` overrides (values are YAML)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Leaderboard config {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a leaderboard config is a mapping (title, data, classifiers, methods, ...)")
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.sub=value")
        key, value = item.split("=", 1)
        _set_dotted(config, key, yaml.safe_load(value))
    if data_folder:
        config.setdefault("data", {})["folder"] = str(data_folder)
    if output_folder:
        config["output_folder"] = str(output_folder)
    check_config(config, path)
    return config


def check_config(config, path):
    """Raise ConfigError naming the file and the key for anything malformed."""
    import common.metrics  # noqa: F401  (registers the metrics)
    from common.interpreters import import_all
    from common.registry import METRICS

    unknown = set(config) - TOP_KEYS
    if unknown:
        _fail(path, sorted(unknown)[0], f"unknown key; known: {sorted(TOP_KEYS)}")
    for key in ("output_folder", "data", "classifiers", "methods"):
        if key not in config:
            _fail(path, key, "missing")
    data = config["data"]
    if not isinstance(data, dict) or "folder" not in data:
        _fail(path, "data.folder", "missing: the ESC-50-layout folder (meta/esc50.csv, audio/)")
    for key in set(data) - DATA_KEYS:
        _fail(path, f"data.{key}", f"unknown key; known: {sorted(DATA_KEYS)}")
    if not isinstance(data.get("n_clips", 1), int) or data.get("n_clips", 1) < 1:
        _fail(path, "data.n_clips", f"must be a positive integer, got {data.get('n_clips')!r}")
    classifiers = config["classifiers"]
    if not isinstance(classifiers, dict) or not classifiers:
        _fail(path, "classifiers", "must map names to classifier entries (hparams, architecture, training, ...)")
    for name, entry in classifiers.items():
        if not isinstance(entry, dict) or "hparams" not in entry:
            _fail(path, f"classifiers.{name}.hparams", "missing: the classification recipe's hparams file")
        for key in set(entry) - CLASSIFIER_KEYS:
            _fail(path, f"classifiers.{name}.{key}", f"unknown key; known: {sorted(CLASSIFIER_KEYS)}")
        if not (REPO / entry["hparams"]).is_file() and not Path(entry["hparams"]).is_file():
            _fail(path, f"classifiers.{name}.hparams", f"file {entry['hparams']} not found")
    methods = config["methods"]
    if not isinstance(methods, list) or not methods:
        _fail(path, "methods", "must be a non-empty list")
    registry = import_all()
    labels = set()
    for k, method in enumerate(methods):
        where = f"methods[{k}]"
        if not isinstance(method, dict) or "name" not in method:
            _fail(path, f"{where}.name", "missing")
        for key in set(method) - METHOD_KEYS:
            _fail(path, f"{where}.{key}", f"unknown key; known: {sorted(METHOD_KEYS)}")
        if method["name"] not in registry:
            _fail(path, f"{where}.name", f"unknown interpreter {method['name']!r}; known: {registry.names()}")
        classifier = method.get("classifier", next(iter(classifiers)))
        if classifier not in classifiers:
            _fail(path, f"{where}.classifier", f"{classifier!r} is not one of classifiers {sorted(classifiers)}")
        if ("recipe" in method) != ("hparams" in method):
            _fail(path, f"{where}.recipe", "a recipe method needs both recipe and hparams")
        label = method_label(method)
        if label in labels:
            _fail(path, f"{where}.label", f"two methods are labelled {label!r}: give one a label")
        labels.add(label)
    for name in config.get("metrics") or []:
        if name not in METRICS:
            _fail(path, "metrics", f"unknown metric {name!r}; known: {METRICS.names()}")
    for key in set(config.get("sanity") or {}) - SANITY_KEYS:
        _fail(path, f"sanity.{key}", f"unknown key; known: {sorted(SANITY_KEYS)}")


def method_label(method):
    return str(method.get("label") or method["name"])


# -- recipes as subprocesses --------------------------------------------------------------------------
def _resolve(path):
    path = Path(path)
    return path if path.is_absolute() or path.exists() and not (REPO / path).exists() else REPO / path


def _cli_value(value):
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value).replace(" ", "")
    return str(value)


def hparams_keys(hparams):
    """The top-level keys an hparams file defines (hyperpyyaml refuses overrides of any other key)."""
    import re

    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", _resolve(hparams).read_text(), flags=re.M))


def only_known(overrides, hparams):
    keys = hparams_keys(hparams)
    return {k: v for k, v in overrides.items() if k in keys}


def override_args(overrides):
    args = []
    for key, value in (overrides or {}).items():
        args += [f"--{key}", _cli_value(value)]
    return args


def run_recipe(script, hparams, overrides, log_file):
    """Run a recipe script with ``--key value`` overrides; its output goes to ``log_file``."""
    cmd = [sys.executable, str(_resolve(script)), str(_resolve(hparams)), *override_args(overrides)]
    print("$", " ".join(cmd), flush=True)
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        done = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "".join(Path(log_file).read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"Recipe failed (exit {done.returncode}); log: {log_file}\n{tail}")


# -- data -------------------------------------------------------------------------------------------
def prepare_data(data):
    """The data folder, written as synthetic scenes when ``synthetic`` options are given and it is empty."""
    from common.data.synthetic.scenes import make_synthetic_esc50

    folder = Path(data["folder"]).resolve()
    if not (folder / "meta" / "esc50.csv").is_file():
        if data.get("synthetic") is None:
            raise ConfigError(
                f"data.folder {folder} holds no meta/esc50.csv; point it at an ESC-50-layout folder "
                "(for ESC-10: python /path/to/shared/data/esc10/materialize.py DIR) or give data.synthetic options"
            )
        make_synthetic_esc50(folder, **data["synthetic"])
        print(f"synthetic data set: {folder}")
    return folder


def select_rows(folder, folds, n_clips):
    """``n_clips`` rows of the given folds, classes taken in turn (sorted by file name within a class)."""
    from common.data.esc50 import read_metadata

    rows = [r for r in read_metadata(folder / "meta" / "esc50.csv") if r["fold"] in set(folds)]
    by_class = {}
    for row in sorted(rows, key=lambda r: r["filename"]):
        by_class.setdefault(row["category"], []).append(row)
    chosen, queues = [], [list(v) for _, v in sorted(by_class.items())]
    while len(chosen) < n_clips and any(queues):
        for queue in queues:
            if queue and len(chosen) < n_clips:
                chosen.append(queue.pop(0))
    return chosen


def load_clips(folder, rows, sample_rate, length_s, front_end):
    from common.analysis.leaderboard import Clips, attach_ground_truth
    from common.data.audio import load_audio
    from common.data.synthetic.scenes import load_ground_truth

    wavs = torch.stack([load_audio(folder / "audio" / r["filename"], sample_rate, length_s) for r in rows])
    ids = [Path(r["filename"]).stem for r in rows]
    clips = Clips(wavs=wavs, ids=ids, labels=[r["category"] for r in rows])
    gt_files = [folder / "ground_truth" / f"{clip}.npz" for clip in ids]
    if all(f.is_file() for f in gt_files):
        with torch.no_grad():
            shape = front_end(wavs[:1]).shape[1:]
        clips = attach_ground_truth(clips, [load_ground_truth(folder, clip) for clip in ids], front_end, shape)
    return clips


# -- classifiers ------------------------------------------------------------------------------------
def read_labels(save_dir):
    """index -> class name from a recipe's label_encoder.txt near ``save_dir`` (None when absent)."""
    for folder in (Path(save_dir), *Path(save_dir).parents[:2]):
        encoder = folder / "label_encoder.txt"
        if encoder.is_file():
            from speechbrain.dataio.encoder import CategoricalEncoder

            enc = CategoricalEncoder()
            enc.load(str(encoder))
            return dict(enc.ind2lab)
    return None


class ClassifierEntry:
    """One classifier of the config: trained by its recipe (or taken from ``checkpoint``), then loaded here."""

    def __init__(self, name, entry, data_folder, out):
        self.name = name
        self.entry = entry
        self.data_folder = data_folder
        self.folder = out / "classifiers" / name
        self.architecture = dict(entry.get("architecture") or {})

    def ensure_trained(self):
        self.results_file = self.folder / "test_results.json"
        if self.entry.get("checkpoint"):
            self.source = Path(self.entry["checkpoint"]).resolve()
            self.results_file = self.source.parent / "test_results.json"  # the recipe's, next to its save folder
            return self.source
        self.source = self.folder / "save"
        if not (self.folder / "test_results.json").is_file():
            overrides = {
                "data_folder": self.data_folder,
                "output_folder": self.folder,
                "use_pretrained": False,
                **self.architecture,
                **(self.entry.get("training") or {}),
            }
            run_recipe(
                self.entry.get("recipe", CLASSIFICATION_RECIPE),
                self.entry["hparams"],
                overrides,
                self.folder / "recipe.log",
            )
        return self.source

    @property
    def accuracy(self):
        results = getattr(self, "results_file", self.folder / "test_results.json")
        return json.loads(results.read_text()).get("acc") if results.is_file() else None

    @property
    def display(self):
        label = self.entry.get("label", self.name)
        return label if self.accuracy is None else f"{label} (test acc {self.accuracy:.2f})"

    def hparams_overrides(self):
        return {"data_folder": str(self.data_folder), "output_folder": str(self.folder), **self.architecture}

    def load(self):
        """(AudioClassifier with the trained weights, hparams)."""
        from common.models.pretrained import load_classifier
        from common.recipe import load_hparams

        hparams = load_hparams(_resolve(self.entry["hparams"]), self.hparams_overrides())
        model = hparams.get("model") or hparams["classifier"]
        load_classifier(model, self.source, self.folder / "collect")
        return model.eval(), hparams


# -- methods ----------------------------------------------------------------------------------------
def build_method(method, classifier_entry, classifier, out, data_folder, train_rows):
    """(interpreter, classifier it explains, hparams of that classifier) for one method entry."""
    from common.interpreters import import_for
    from common.registry import INTERPRETERS

    name = method["name"]
    import_for(name)
    if "recipe" in method:
        return build_recipe_method(method, classifier_entry, out, data_folder)
    if name == "drsa":
        return fit_drsa_method(method, classifier, classifier_entry, data_folder, train_rows), classifier, None
    if name == "prototypes":
        network = fit_prototype_network(method, classifier, classifier_entry, data_folder, train_rows)
        return INTERPRETERS.build(name, network, **(method.get("kwargs") or {})), network, None
    return INTERPRETERS.build(name, classifier, **(method.get("kwargs") or {})), classifier, None


def build_recipe_method(method, classifier_entry, out, data_folder):
    from common.models.pretrained import load_classifier
    from common.recipe import load_hparams

    label = method_label(method)
    from common.reports.html import slug

    folder = Path(method["checkpoint"]).resolve() if method.get("checkpoint") else out / "methods" / slug(label)
    # the cheap evaluation and the classifier's architecture where the method's hparams have those keys
    overrides = {**only_known(CHEAP_RECIPE_EVALUATION, method["hparams"]), **(method.get("overrides") or {})}
    base = {
        "data_folder": str(data_folder),
        "output_folder": str(folder),
        "classifier_source": str(classifier_entry.source),
        **only_known(classifier_entry.architecture, method["hparams"]),
    }
    before = method.get("before")
    if before:
        before_folder = out / "methods" / f"{slug(label)}_{Path(before['recipe']).stem}"
        if not (before_folder / "save").is_dir() or not any((before_folder / "save").glob("CKPT*")):
            run_recipe(
                before["recipe"],
                before["hparams"],
                {
                    "data_folder": str(data_folder),
                    "output_folder": str(before_folder),
                    **(before.get("overrides") or {}),
                },
                before_folder / "recipe.log",
            )
        base[before.get("pass_as", "nmf_source")] = str(before_folder / "save")
    trains = method.get("train", True)
    if trains and not method.get("checkpoint") and not (folder / "test_results.json").is_file():
        run_recipe(method["recipe"], method["hparams"], {**base, **overrides}, folder / "recipe.log")
    hparams = load_hparams(_resolve(method["hparams"]), {**base, **overrides})
    classifier = hparams["classifier"]
    load_classifier(classifier, classifier_entry.source, folder / "collect_classifier")
    interpreter = hparams["interpreter"]
    if trains:
        best_key = hparams.get("best_checkpoint_key", "loss")
        checkpoint = hparams["checkpointer"].recover_if_possible(min_key=best_key)
        if checkpoint is None:
            raise RuntimeError(f"No trained checkpoint of {label} in {folder}/save: its recipe did not train it")
    interpreter.eval()
    for param in classifier.parameters():
        param.requires_grad_(False)
    return interpreter, classifier.eval(), hparams


def fit_drsa_method(method, classifier, classifier_entry, data_folder, train_rows):
    """DRSA subspaces at ``fit.layer`` (default: the encoder output) fitted on training clips' LRP pairs."""
    from common.interpreters.drsa import DRSAInterpreter, collect_drsa_pairs, fit_drsa
    from common.interpreters.lrp import LRPInterpreter

    options = dict(method.get("fit") or {})
    kwargs = dict(method.get("kwargs") or {})
    layer = options.pop("layer", None)
    n_concepts = int(options.pop("n_concepts", 2))
    n_clips = int(options.pop("n_clips", 16))
    n_positions = options.pop("n_positions", 32)
    hp = classifier_entry.hparams
    clips = load_clips(
        data_folder, train_rows[:n_clips], hp["sample_rate"], hp["signal_length_s"], classifier.front_end
    )
    lrp = LRPInterpreter(classifier, **{k: v for k, v in kwargs.items() if k in ("composite", "composite_kwargs")})
    with torch.no_grad():
        batches = [classifier.features(clips.wavs[k : k + 4]) for k in range(0, len(clips), 4)]
    acts, ctxs = collect_drsa_pairs(lrp, batches, layer, n_positions=n_positions)
    U, _ = fit_drsa(acts.flatten(0, 1), ctxs.flatten(0, 1), n_concepts, **options)
    return DRSAInterpreter(classifier, U, n_concepts=n_concepts, layer=layer, **kwargs)


def fit_prototype_network(method, classifier, classifier_entry, data_folder, train_rows):
    """A prototype head trained here on the classifier's frozen encoder (``fit``: prototypes_per_class, epochs,
    lr, n_clips of the training folds): the network that PrototypeInterpreter reads its explanations off."""
    from common.analysis.leaderboard import prototype_network

    options = dict(method.get("fit") or {})
    n_clips = int(options.pop("n_clips", 10**6))
    hp = classifier_entry.hparams
    rows = train_rows[:n_clips]
    clips = load_clips(data_folder, rows, hp["sample_rate"], hp["signal_length_s"], classifier.front_end)
    classes = sorted({r["category"] for r in rows})
    labels = torch.tensor([classes.index(r["category"]) for r in rows])
    with torch.no_grad():
        X = torch.cat([classifier.features(clips.wavs[k : k + 8]) for k in range(0, len(clips), 8)])
    network = prototype_network(classifier, X, labels, **options)
    network.labels = dict(enumerate(classes))
    return network


# -- the run ----------------------------------------------------------------------------------------
def run(config, progress=True):
    """Run the leaderboard of ``config`` (a checked dict); return (rows, output folder)."""
    from common.analysis.leaderboard import (
        METRIC_COLUMNS,
        direction_legend,
        drop_empty_columns,
        evaluate_method,
        leaderboard_rows,
    )
    from common.reports.audio import save_wav
    from common.reports.html import RUN_FILE, save_mask_overlay, save_spectrogram, slug, write_html_report
    from common.reports.tables import write_table

    torch.manual_seed(int(config.get("seed", 0)))
    out = Path(config["output_folder"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = config["data"]
    data_folder = prepare_data(data)
    test_folds = data.get("test_folds", [5])
    train_folds = data.get("train_folds", [f for f in range(1, 6) if f not in test_folds])
    rows = select_rows(data_folder, test_folds, data.get("n_clips", 20))
    train_rows = select_rows(data_folder, train_folds, 10**6)
    metrics = config.get("metrics") or METRIC_COLUMNS
    sanity_options = {"threshold": 0.5, "n_clips": 8, "seed": 0, **(config.get("sanity") or {})}
    n_report = int(config.get("n_report_clips", 3))

    entries, loaded = {}, {}
    for name, entry in config["classifiers"].items():
        if not any(m.get("classifier", next(iter(config["classifiers"]))) == name for m in config["methods"]):
            continue
        entries[name] = ClassifierEntry(name, entry, data_folder, out)
        entries[name].ensure_trained()

    results, example_meta, failures = [], {}, []
    for method in config["methods"]:
        label = method_label(method)
        cname = method.get("classifier", next(iter(config["classifiers"])))
        entry = entries[cname]
        if cname not in loaded:
            classifier, hp = entry.load()
            entry.hparams = hp
            loaded[cname] = (classifier, hp, read_labels(entry.source))
        classifier, hp, labels = loaded[cname]
        try:
            interpreter, explained, method_hp = build_method(method, entry, classifier, out, data_folder, train_rows)
        except Exception as exc:  # one broken method must not cost the others' results
            traceback.print_exc()
            print(f"!! {label} could not be built: {exc}; its row says so", flush=True)
            failures.append({"method": label, "classifier": entry.display, "sanity": "error", "error": str(exc)[:200]})
            continue
        hp_used = method_hp or hp
        labels_used = getattr(explained, "labels", None) or labels
        shown = entry.display if explained is classifier or method_hp else f"prototype net on {entry.display}'s encoder"
        clips = load_clips(data_folder, rows, hp_used["sample_rate"], hp_used["signal_length_s"], explained.front_end)
        sanity = {**sanity_options, **(method.get("sanity") or {})}
        try:
            result = evaluate_method(
                label,
                interpreter,
                explained,
                clips,
                metrics,
                batch_size=int(config.get("batch_size", 4)),
                n_steps=int(config.get("curve_steps", 10)),
                sanity=sanity,
                n_examples=n_report,
                classifier_name=shown,
                progress=progress,
            )
        except Exception as exc:
            traceback.print_exc()
            print(f"!! {label} failed: {exc}; its row says so", flush=True)
            failures.append({"method": label, "classifier": shown, "sanity": "error", "error": str(exc)[:200]})
            continue
        results.append(result)
        for example in result.examples:
            k = example["index"]
            clip = clips.ids[k]
            clip_dir = out / "examples" / clip
            if clip not in example_meta:
                save_wav(clip_dir / "original.wav", clips.wavs[k], hp_used["sample_rate"])
                with torch.no_grad():
                    X = explained.features(clips.wavs[k : k + 1])[0]
                save_spectrogram(X, clip_dir / "spectrogram.png", title=f"{clip} ({clips.labels[k]})")
                example_meta[clip] = {
                    "id": clip,
                    "label": clips.labels[k],
                    "original": f"examples/{clip}/original.wav",
                    "spectrogram": f"examples/{clip}/spectrogram.png",
                    "methods": [],
                }
            target = labels_used.get(example["target"], example["target"]) if labels_used else example["target"]
            save_wav(clip_dir / f"{slug(label)}.wav", example["wav"], hp_used["sample_rate"])
            save_mask_overlay(
                example["X"], example["mask"], clip_dir / f"{slug(label)}.png", title=f"{label}: mask for {target}"
            )
            example_meta[clip]["methods"].append(
                {
                    "label": label,
                    "classifier": shown,
                    "target": str(target),
                    "wav": f"examples/{clip}/{slug(label)}.wav",
                    "png": f"examples/{clip}/{slug(label)}.png",
                }
            )
        del interpreter

    table_rows, columns = drop_empty_columns(leaderboard_rows(results, metrics) + failures)
    text = write_table(table_rows, out / "leaderboard", columns=columns)
    per_clip = []
    for result in results:
        n = len(next(iter(result.per_clip.values())))
        for k in range(n):
            per_clip.append(
                {
                    "method": result.label,
                    "classifier": result.classifier,
                    "clip": rows[k]["filename"],
                    **{m: float(v[k]) for m, v in result.per_clip.items()},
                }
            )
    with open(out / "leaderboard_per_clip.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in per_clip for k in r)))
        writer.writeheader()
        writer.writerows(per_clip)
    caption = (
        f"{len(rows)} clips of folds {test_folds} of {data_folder.name}; per-clip means. "
        f"Directions: {direction_legend([m for m in metrics if any(m in r.per_clip for r in results)])}. "
        f"Sanity: Spearman rank correlation of |saliency| before/after re-initialising the head, then the head and "
        f"the encoder's last block (mean over {sanity_options['n_clips']} clips); fail above "
        f"{sanity_options['threshold']}."
    )
    run_info = {
        "title": config.get("title", "Leaderboard"),
        "caption": caption,
        "columns": columns,
        "rows": table_rows,
        "clips": list(example_meta.values()),
    }
    (out / RUN_FILE).write_text(json.dumps(run_info, indent=1, default=str))
    index = write_html_report(out)
    print(text)
    print(caption)
    print(f"\nLeaderboard: {out / 'leaderboard.md'} (and .csv)")
    print(f"HTML report: {index}")
    return table_rows, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="leaderboard YAML (e.g. tools/leaderboard/synthetic.yaml)")
    ap.add_argument("--data_folder", help="overrides data.folder")
    ap.add_argument("--output_folder", help="overrides output_folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    config = load_config(args.config, args.set, args.data_folder, args.output_folder)
    return run(config, progress=not args.no_progress)


if __name__ == "__main__":
    main()
