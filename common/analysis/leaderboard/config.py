"""The leaderboard's YAML schema: loading (safe YAML, ``--set key.sub=value`` overrides) and checking.

A config (see tools/leaderboard/*.yaml) names the data (an ESC-50-layout
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
* an interpreter that ``needs_fit`` (DRSA, the prototype net) with ``fit: {...}``:
  fitted here on training clips (``fit.n_clips`` of them; the other keys, and
  ``kwargs``, go to its ``fit``).

``data.explain_folder`` (relative to ``data.folder``, e.g. clever_hans's
``shortcut_test``): the clips explained come from that ESC-50-layout folder's
test folds, while the classifiers train on ``data.folder``.
``rank_by`` (a metric name or a list) picks the rank column(s) (default:
localization AUC when the data has ground truth, else deletion AUC);
``bootstrap`` (``n_resamples``, ``confidence``, ``seed``) sets the intervals.
``localization_clips``: ``all`` (default) scores the ground-truth metrics on every clip; ``correct`` only on
the clips the explained model classifies correctly (each method explains the predicted class, and the ground
truth is the true class's evidence, so on a misclassified clip it is not the evidence of what is explained;
the other clips score NaN there, as a clip with no event does).
``data_randomization`` on a classifier (true or ``{seed: N}``) also trains it on
shuffled labels for the sanity check's data randomisation test (``sanity.py``).
"""

from pathlib import Path

import yaml

from common.errors import ConfigError
from common.recipe import resolve

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
    "rank_by",
    "bootstrap",
    "localization_clips",
}
LOCALIZATION_CLIPS = ("all", "correct")
DATA_KEYS = {"folder", "synthetic", "test_folds", "train_folds", "n_clips", "explain_folder"}
CLASSIFIER_KEYS = {
    "hparams",
    "recipe",
    "architecture",
    "training",
    "checkpoint",
    "label",
    "data_randomization",
    "pretrained",
}
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
BOOTSTRAP_KEYS = {"n_resamples", "confidence", "seed"}


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
        if not resolve(entry["hparams"]).is_file():
            _fail(path, f"classifiers.{name}.hparams", f"file {entry['hparams']} not found")
        randomization = entry.get("data_randomization", False)
        if not isinstance(randomization, bool) and not (
            isinstance(randomization, dict) and set(randomization) <= {"seed"}
        ):
            _fail(path, f"classifiers.{name}.data_randomization", "true, false or {seed: N}")
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
        if method_classifier(config, method) not in classifiers:
            _fail(
                path,
                f"{where}.classifier",
                f"{method_classifier(config, method)!r} is not one of classifiers {sorted(classifiers)}",
            )
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
    # rank_by: the metric(s) of the rank column(s); default localization AUC with ground truth, else deletion AUC
    rank_by = config.get("rank_by")
    for name in [rank_by] if isinstance(rank_by, str) else rank_by or []:
        if name not in METRICS:
            _fail(path, "rank_by", f"unknown metric {name!r}; known: {METRICS.names()}")
        if config.get("metrics") and name not in config["metrics"]:
            _fail(path, "rank_by", f"{name!r} is not one of the leaderboard's metrics")
    if config.get("localization_clips", "all") not in LOCALIZATION_CLIPS:
        _fail(path, "localization_clips", f"one of {list(LOCALIZATION_CLIPS)}, got {config['localization_clips']!r}")
    for key in set(config.get("bootstrap") or {}) - BOOTSTRAP_KEYS:
        _fail(path, f"bootstrap.{key}", f"unknown key; known: {sorted(BOOTSTRAP_KEYS)}")


def method_label(method):
    """The row name of a method: its ``label``, else its registry name."""
    return str(method.get("label") or method["name"])


def method_classifier(config, method):
    """The name of the classifier a method explains (default: the config's first)."""
    return method.get("classifier", next(iter(config["classifiers"])))
