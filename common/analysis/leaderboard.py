"""One leaderboard for every explanation method: evaluation, sanity check, timing, table.

Every method is an Interpreter around a classifier; the leaderboard explains
the same clips with each one and scores the explanations with the shared
``EvaluationSuite`` (so a number means what it means in every recipe's table),
times ``explain`` alone (seconds per clip), and runs the model-parameter
randomisation sanity check of Adebayo et al. (2018, "Sanity checks for
saliency maps"):

* the classifier is deep-copied and its top layers re-initialised, cascading:
  first the head (``classifier``), then also the encoder's last block;
* the interpreter is re-bound to the randomised copy (everything it learned
  stays as trained: PIQ's codebook, L-MAC's decoder, DRSA's subspaces; only
  the classifier changes) and explains the same clips for the same targets;
* the similarity of each explanation before and after is the Spearman rank
  correlation of the absolute saliency maps, per clip, averaged. It must
  drop: a method whose maps stay similar (above ``threshold`` at the last
  step of the cascade) does not depend on the model it claims to explain and
  is flagged ``fail``.
"""

import copy
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from common.features import mask_on_grid
from common.interpreters.base import Explanation
from common.metrics import (
    FAITHFULNESS_METRICS,
    HIGHER_IS_BETTER,
    LOCALIZATION_METRICS,
    EvaluationSuite,
    display_name,
    merge_per_clip,
    summarize,
)

# Columns of the leaderboard, in order (metrics by registered name; missing ones are left out).
METRIC_COLUMNS = FAITHFULNESS_METRICS + LOCALIZATION_METRICS


# -- the clips --------------------------------------------------------------------------------------
@dataclass
class Clips:
    """The clips a leaderboard explains, for one classifier's front-end.

    wavs (N, samples); ids (N,); labels: true class names; ground_truth (N, T, F)
    event masks on the classifier's grid and event_wavs (N, samples), or None.
    """

    wavs: torch.Tensor
    ids: list
    labels: list
    ground_truth: torch.Tensor = None
    event_wavs: torch.Tensor = None

    def __len__(self):
        return len(self.ids)

    def batches(self, batch_size):
        for lo in range(0, len(self), batch_size):
            hi = min(lo + batch_size, len(self))
            yield (
                lo,
                hi,
                self.wavs[lo:hi],
                None if self.ground_truth is None else self.ground_truth[lo:hi],
                None if self.event_wavs is None else self.event_wavs[lo:hi],
            )


def attach_ground_truth(clips, ground_truths, front_end, shape):
    """Put per-clip ground truth ({"mask": (T, F'), "event": (samples,)} or None) on the classifier's grid.

    Localization needs every clip's mask on the grid; otherwise the clips get none.
    """
    if not ground_truths or any(gt is None for gt in ground_truths):
        return clips
    masks = [mask_on_grid(torch.as_tensor(gt["mask"]).float(), front_end, shape) for gt in ground_truths]
    if any(m is None for m in masks):
        return clips
    n = clips.wavs.shape[-1]
    events = torch.zeros(len(ground_truths), n)
    for k, gt in enumerate(ground_truths):
        event = torch.as_tensor(gt["event"]).float()[:n]
        events[k, : len(event)] = event
    clips.ground_truth, clips.event_wavs = torch.stack(masks), events
    return clips


# -- the sanity check -------------------------------------------------------------------------------
def last_encoder_block(encoder):
    """Names (relative to ``encoder``) of the modules that make up its last block.

    transformers backbones: the last ``layer.N`` / ``layers.N`` / ``blocks.N``
    module (a ViT's last encoder layer, a FocalNet's last layer of its last
    stage); other encoders: the last weight layer (conv or linear) and every
    parameterised layer after it (its normalisation).
    """
    if getattr(getattr(encoder, "config", None), "model_type", None) is not None:
        blocks = [name for name, _ in encoder.named_modules() if re.search(r"(^|\.)(layer|layers|blocks?)\.\d+$", name)]
        if blocks:
            return [blocks[-1]]
    leaves = [
        (name, module)
        for name, module in encoder.named_modules()
        if not any(True for _ in module.children()) and any(True for _ in module.parameters(recurse=False))
    ]
    weights = [k for k, (_, m) in enumerate(leaves) if getattr(m, "weight", None) is not None and m.weight.ndim >= 2]
    if not weights:
        return [name for name, _ in leaves[-1:]]
    return [name for name, _ in leaves[weights[-1] :]]


def default_cascade(classifier):
    """The randomisation cascade: [the head], then [the head, the encoder's last block] (names in the classifier)."""
    block = [
        f"embedding_model.{name}" if name else "embedding_model"
        for name in last_encoder_block(classifier.embedding_model)
    ]
    return [["classifier"], ["classifier", *block]]


def reinitialize(module, seed=0):
    """Re-initialise every parameter of ``module`` in place, reproducibly.

    Layers with ``reset_parameters`` (conv, linear, norms: their running
    statistics too) use it; other >= 2-D parameters (e.g. a cosine head's
    weight) get Xavier-uniform draws; other 1-D parameters (layer scales) are kept.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(seed))
        for sub in module.modules():
            if callable(getattr(sub, "reset_parameters", None)):
                sub.reset_parameters()
            else:
                for param in sub.parameters(recurse=False):
                    if param.ndim >= 2:
                        torch.nn.init.xavier_uniform_(param)
    return module


def randomized_copy(classifier, names, seed=0):
    """A deep copy of ``classifier`` with the submodules ``names`` re-initialised (the original is untouched)."""
    copied = copy.deepcopy(classifier)
    for k, name in enumerate(names):
        try:
            module = copied.get_submodule(name)
        except AttributeError:
            known = [n for n, _ in classifier.named_modules() if n][-10:]
            raise ValueError(f"sanity check: the classifier has no submodule {name!r} (e.g. {known})") from None
        reinitialize(module, seed=seed + k)
    return copied.eval()


def rebind(interpreter, old_classifier, new_classifier):
    """A copy of ``interpreter`` that explains ``new_classifier`` instead of ``old_classifier``.

    Deep copy with every module and parameter of the old classifier mapped to
    its counterpart in the new one (the two share their structure), so any
    reference the interpreter keeps (the classifier, its encoder, a view like
    LRP's ``LogitPath``) now points into the new classifier; what the
    interpreter holds of its own (a trained decoder, subspaces) is copied as is.
    """
    memo = {}
    new_modules = dict(new_classifier.named_modules())
    for name, module in old_classifier.named_modules():
        memo[id(module)] = new_modules[name]
    new_params = dict(new_classifier.named_parameters())
    for name, param in old_classifier.named_parameters():
        memo[id(param)] = new_params[name]
    new_buffers = dict(new_classifier.named_buffers())
    for name, buffer in old_classifier.named_buffers():
        memo[id(buffer)] = new_buffers[name]
    return copy.deepcopy(interpreter, memo)


def _ranks(values):
    from scipy.stats import rankdata

    return torch.as_tensor(rankdata(values.detach().double().cpu().numpy(), axis=1), dtype=torch.float64)


def spearman(a, b):
    """Per-clip Spearman rank correlation of |a| and |b| (B, ...) -> (B,) (ties get average ranks).

    A constant map has no ranking: two constant maps count as identical (1), one constant map as unrelated (0).
    """
    ra, rb = _ranks(a.flatten(1).abs()), _ranks(b.flatten(1).abs())
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    na, nb = ra.norm(dim=1), rb.norm(dim=1)
    rho = (ra * rb).sum(dim=1) / (na * nb).clamp(min=1e-300)
    constant_a, constant_b = na == 0, nb == 0
    rho = torch.where(constant_a & constant_b, torch.ones_like(rho), rho)
    return torch.where(constant_a ^ constant_b, torch.zeros_like(rho), rho)


def sanity_check(interpreter, classifier, X, target, saliency=None, cascade=None, threshold=0.5, seed=0):
    """Model-parameter randomisation test of ``interpreter`` on spectrograms X for ``target``.

    ``cascade``: lists of classifier submodule names re-initialised at each
    step (default: ``default_cascade``). ``saliency``: the explanation of the
    trained classifier (computed when None). Returns ``{"steps": [mean
    similarity per step], "per_clip": [(B,) per step], "passed": bool}``;
    it passes when the last step's mean similarity is at most ``threshold``.
    """
    cascade = cascade or default_cascade(classifier)
    if saliency is None:
        saliency = interpreter.explain(X=X, target=target).saliency
    steps, per_clip = [], []
    for k, names in enumerate(cascade):
        randomized = randomized_copy(classifier, names, seed=seed + 100 * k)
        explained = rebind(interpreter, classifier, randomized).explain(X=X, target=target).saliency
        rho = spearman(saliency, explained)
        per_clip.append(rho)
        steps.append(float(rho.mean()))
    return {"steps": steps, "per_clip": per_clip, "passed": bool(steps[-1] <= threshold)}


# -- evaluating one method --------------------------------------------------------------------------
@dataclass
class MethodResult:
    """What the leaderboard keeps of one method: per-clip scores, timing, sanity, examples for the report."""

    label: str
    classifier: str
    per_clip: dict
    seconds_per_clip: float
    sanity: dict = None
    examples: list = field(default_factory=list)  # (clip index, wav tensor, X, mask) for the report
    accuracy: float = float("nan")


def evaluate_method(
    label,
    interpreter,
    classifier,
    clips,
    metrics,
    batch_size=4,
    n_steps=10,
    sanity=None,
    n_examples=0,
    classifier_name="",
    progress=True,
):
    """Explain ``clips`` with ``interpreter`` and score them; returns a MethodResult.

    ``sanity``: None, or the options of ``sanity_check`` plus ``n_clips`` (the
    first clips it runs on). Seconds per clip are measured around ``explain``.
    ``n_examples``: keep the listenable explanation and the mask of the first clips.
    """
    from tqdm import tqdm

    classifier.eval()
    suite = EvaluationSuite(metrics, n_steps=n_steps)
    scores, seconds, examples, correct = [], 0.0, [], []
    saliencies, targets, spectrograms = [], [], []
    batches = list(clips.batches(batch_size))
    for lo, hi, wavs, gt, events in tqdm(batches, desc=f"{label} ({classifier_name})", disable=not progress):
        with torch.no_grad():
            X = classifier.features(wavs)
        tic = time.perf_counter()
        explanation = interpreter.explain(X=X)
        seconds += time.perf_counter() - tic
        explanation = Explanation(
            saliency=explanation.saliency.detach(),
            mask=explanation.mask.detach(),
            target=explanation.target,
            stft_mask=None if explanation.stft_mask is None else explanation.stft_mask.detach(),
        )
        with torch.no_grad():
            interpretation = explanation.to_wav(classifier, wavs)
            n = min(interpretation.shape[-1], wavs.shape[-1] if events is None else events.shape[-1])
            scores.append(
                suite.evaluate(
                    classifier,
                    X,
                    explanation,
                    ground_truth=gt,
                    interpretation_wavs=None if events is None else interpretation[..., :n],
                    event_wavs=None if events is None else events[..., :n],
                )
            )
        correct += [clips.labels[lo + k] for k in range(hi - lo)]
        saliencies.append(explanation.saliency)
        targets.append(torch.as_tensor(explanation.target).reshape(-1))
        spectrograms.append(X)
        for k in range(hi - lo):
            if lo + k < n_examples:
                examples.append(
                    {
                        "index": lo + k,
                        "wav": interpretation[k].detach(),
                        "X": X[k].detach(),
                        "mask": explanation.mask[k],
                        "target": int(targets[-1][k]),
                    }
                )
    per_clip = merge_per_clip(scores)
    result = MethodResult(label, classifier_name, per_clip, seconds / max(len(clips), 1), examples=examples)
    if sanity is not None:
        options = dict(sanity)
        n = int(options.pop("n_clips", 8))
        X, target = torch.cat(spectrograms)[:n], torch.cat(targets)[:n]
        result.sanity = sanity_check(interpreter, classifier, X, target, saliency=torch.cat(saliencies)[:n], **options)
    return result


# -- the table --------------------------------------------------------------------------------------
def leaderboard_rows(results, metrics, cascade_names=("head", "head+block")):
    """One row per method: method, classifier, every metric's mean, the sanity similarities and verdict, s/clip."""
    rows = []
    for result in results:
        summary = summarize(result.per_clip)
        row = {"method": result.label, "classifier": result.classifier}
        for name in metrics:
            if name in summary:
                row[display_name(name)] = summary[name]
        if result.sanity is not None:
            for name, value in zip(cascade_names, result.sanity["steps"], strict=False):
                row[f"sanity rho ({name})"] = value
            row["sanity"] = "pass" if result.sanity["passed"] else "fail"
        else:
            row["sanity"] = "-"
        row["s / clip"] = result.seconds_per_clip
        row["clips"] = len(next(iter(result.per_clip.values()))) if result.per_clip else 0
        rows.append(row)
    return rows


def drop_empty_columns(rows):
    """Leave out metric columns that are NaN for every method (e.g. localization without ground truth)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def empty(column):
        values = [row.get(column) for row in rows]
        return all(isinstance(v, float) and math.isnan(v) for v in values if v is not None)

    keep = [c for c in columns if not empty(c)]
    return [{k: row.get(k, "") for k in keep} for row in rows], keep


def direction_legend(metrics):
    """'Fid-In (higher is better), ...' for the table's caption."""
    return (
        ", ".join(f"{display_name(m)} {'higher' if HIGHER_IS_BETTER.get(m, True) else 'lower'}" for m in metrics)
        + "; sanity rho lower (must drop when the classifier's top layers are randomised)"
    )


def finite_fraction(per_clip):
    """Share of finite per-clip values of each metric (a test helper and a log line)."""
    return {k: float(np.isfinite(torch.as_tensor(v).double().numpy()).mean()) for k, v in per_clip.items()}


# -- a prototype network on a trained encoder ------------------------------------------------------
def prototype_network(classifier, X, labels, prototypes_per_class=2, epochs=30, lr=0.02, batch_size=16, seed=0):
    """An AudioProtoPNet-style network whose backbone is ``classifier``'s encoder (frozen, shared weights copied)
    and whose prototype head is trained here on spectrograms X (N, T, F) with class indices ``labels`` (N,).

    The head (cosine similarity to 1x1 prototypes, max pooling, class-specific last layer) learns as the
    BirdSet recipe's stage 2 does: the Asymmetric Loss on one-hot targets plus the orthogonality of each
    class's prototypes. The network is multi-label (sigmoid outputs, what the metrics read), so it is
    trained as one: a softmax cross-entropy would fit only the logits' differences, not the probabilities
    the suite scores. Returns the network in eval mode.
    """
    from common.models.protopnet import AudioProtoPNet
    from common.models.prototypes import PrototypeHead
    from common.training.losses import AsymmetricLoss

    encoder = copy.deepcopy(classifier.embedding_model)
    with torch.no_grad():
        channels = classifier.hidden(X[:1]).shape[1]
    n_classes = int(labels.max()) + 1
    targets = torch.nn.functional.one_hot(labels, n_classes).float()
    loss_fn = AsymmetricLoss()  # the BirdSet recipe's defaults (gamma- 4, gamma+ 1, clip 0.05)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        head = PrototypeHead(n_classes, prototypes_per_class, channels)
        model = AudioProtoPNet(classifier.front_end, encoder, head, freeze_backbone=True)
        optimizer = torch.optim.Adam(head.parameters(), lr=lr)
        model.eval()  # the frozen backbone's maps once (BatchNorm in eval mode): only the head learns
        with torch.no_grad():
            hidden = torch.cat([model.hidden(X[k : k + batch_size]) for k in range(0, len(X), batch_size)])
        model.train()
        for _ in range(int(epochs)):
            order = torch.randperm(len(X))
            for lo in range(0, len(X), batch_size):
                index = order[lo : lo + batch_size]
                maps = hidden[index]
                loss = loss_fn(model.head(maps).logits, targets[index])
                loss = loss + model.regularization_loss()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return model.eval()
