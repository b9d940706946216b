"""Building a leaderboard method: around the classifier, fitted on training clips, or trained by its recipe."""

from pathlib import Path

import torch

from common.analysis.leaderboard.clips import load_clips
from common.analysis.leaderboard.config import method_label
from common.interpreters.base import FitData
from common.recipe import load_hparams, only_known, resolve, run_recipe

# Interpreter recipes evaluate their own test set after training; the leaderboard scores the
# methods itself, so the recipe's evaluation is kept cheap unless a method overrides these.
CHEAP_RECIPE_EVALUATION = {"metrics": ["fid_in"], "valid_metrics": ["fid_in"], "n_examples": 0}


def build_method(method, classifier_entry, classifier, out, data_folder, train_rows):
    """(interpreter, classifier it explains, hparams of that classifier or None) for one method entry.

    A ``needs_fit`` interpreter is built by its ``fit`` on the training clips (``FitData``), with the
    entry's ``fit`` and ``kwargs`` options; it explains its own ``classifier`` (the prototype net
    explains the network it trains on the classifier's encoder).
    """
    from common.interpreters import import_for
    from common.registry import INTERPRETERS

    name = method["name"]
    import_for(name)
    if "recipe" in method:
        return build_recipe_method(method, classifier_entry, out, data_folder)
    kwargs = method.get("kwargs") or {}
    if INTERPRETERS.get(name).needs_fit:
        data = fit_data(classifier, classifier_entry.hparams, data_folder, train_rows)
        interpreter = INTERPRETERS.get(name).fit(classifier, data, **(method.get("fit") or {}), **kwargs)
    else:
        interpreter = INTERPRETERS.build(name, classifier, **kwargs)
    return interpreter, interpreter.classifier, None


def fit_data(classifier, hparams, data_folder, rows, batch_size=8):
    """The training clips ``rows`` as a FitData: their features on ``classifier``'s front-end, class indices
    in the sorted order of the rows' class names."""
    clips = load_clips(data_folder, rows, hparams["sample_rate"], hparams["signal_length_s"], classifier.front_end)
    classes = sorted({r["category"] for r in rows})
    labels = torch.tensor([classes.index(r["category"]) for r in rows])
    with torch.no_grad():
        X = torch.cat([classifier.features(clips.wavs[k : k + batch_size]) for k in range(0, len(clips), batch_size)])
    return FitData(X=X, labels=labels, classes=classes)


def build_recipe_method(method, classifier_entry, out, data_folder):
    """A trained interpreter: its recipe trains it (unless its run or ``checkpoint`` holds one), loaded here."""
    from common.models.pretrained import load_classifier
    from common.reports.html import slug

    label = method_label(method)
    folder = Path(method["checkpoint"]).resolve() if method.get("checkpoint") else out / "methods" / slug(label)
    # the cheap evaluation and the classifier's architecture where the method's hparams have those keys
    overrides = {**only_known(CHEAP_RECIPE_EVALUATION, method["hparams"]), **(method.get("overrides") or {})}
    base = {
        "data_folder": str(data_folder),
        "output_folder": str(folder),
        **only_known(classifier_entry.architecture, method["hparams"]),
    }
    if not classifier_entry.pretrained:  # a pretrained model's hparams bring its weights: no source to pass
        base["classifier_source"] = str(classifier_entry.source)
    before = method.get("before")
    if before:
        before_folder = out / "methods" / f"{slug(label)}_{Path(before['recipe']).stem}"
        if not (before_folder / "save").is_dir() or not any((before_folder / "save").glob("CKPT*")):
            before_overrides = {"data_folder": str(data_folder), "output_folder": str(before_folder)}
            before_overrides.update(before.get("overrides") or {})
            run_recipe(before["recipe"], before["hparams"], before_overrides, before_folder / "recipe.log")
        base[before.get("pass_as", "nmf_source")] = str(before_folder / "save")
    trains = method.get("train", True)
    if trains and not method.get("checkpoint") and not (folder / "test_results.json").is_file():
        run_recipe(method["recipe"], method["hparams"], {**base, **overrides}, folder / "recipe.log")
    hparams = load_hparams(resolve(method["hparams"]), {**base, **overrides})
    classifier = hparams["classifier"]
    if not classifier_entry.pretrained:
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
