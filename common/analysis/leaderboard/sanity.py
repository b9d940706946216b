"""The model-parameter randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

* the classifier is deep-copied and its layers re-initialised, cascading from
  the top (``full_cascade``, the default): first the head (``classifier``),
  then also the encoder's last block, then also the block before it, ... down
  to the block next to the input, where every layer is random (Adebayo et
  al.'s cascading randomisation; ``default_cascade`` is its first two steps);
* the interpreter is re-bound to the randomised copy (everything it learned
  stays as trained: PIQ's codebook, L-MAC's decoder, DRSA's subspaces; only
  the classifier changes) and explains the same clips for the same targets;
* the similarity of each explanation before and after is measured per clip,
  twice, as Adebayo et al. do: the Spearman rank correlation of the absolute
  maps, and the SSIM of the absolute maps normalised to [0, 1] (|map| / its
  max); both are averaged over the clips. It must drop: a method whose maps
  stay similar (Spearman above ``threshold`` at the last step of the cascade)
  does not depend on the model it claims to explain and is flagged ``fail``.

``save_cascade_plot`` draws both similarities against the cascade step, one
line per method (the leaderboard's ``sanity_cascade.png``).

The data randomisation test (Adebayo et al.'s second test, optional: a
leaderboard classifier's ``data_randomization`` key) compares the maps of the
classifier with those of its twin trained by the same recipe on permuted
labels (``shuffled_labels_folder``, ``shuffled_labels_classifier``,
``data_randomization_check``). It is reported, not part of the verdict: two
models trained on the true labels from different seeds can differ as much.
"""

import copy
import math
import re
import warnings
from pathlib import Path

import torch

# Modules of a transformers backbone that are its blocks (a ViT's encoder layers, a FocalNet's / Swin's layers).
BLOCK_PATTERN = r"(^|\.)(layer|layers|blocks?)\.\d+$"


def last_encoder_block(encoder):
    """Names (relative to ``encoder``) of the modules that make up its last block.

    transformers backbones: the last ``layer.N`` / ``layers.N`` / ``blocks.N``
    module (a ViT's last encoder layer, a FocalNet's last layer of its last
    stage); other encoders: the last weight layer (conv or linear) and every
    parameterised layer after it (its normalisation).
    """
    declared = getattr(encoder, "blocks", None)
    if callable(declared):
        return declared()[-1][1]
    if _is_transformers(encoder):
        blocks = [name for name, _ in encoder.named_modules() if re.search(BLOCK_PATTERN, name)]
        if blocks:
            return [blocks[-1]]
    leaves = _parameterised_leaves(encoder)
    weights = [k for k, (_, m) in enumerate(leaves) if _is_weight_layer(m)]
    if not weights:
        return [name for name, _ in leaves[-1:]]
    return [name for name, _ in leaves[weights[-1] :]]


def _is_transformers(encoder):
    return getattr(getattr(encoder, "config", None), "model_type", None) is not None


def _parameterised_leaves(encoder):
    """(name, module) of the modules without children that hold parameters of their own, in registration order."""
    return [
        (name, module)
        for name, module in encoder.named_modules()
        if not any(True for _ in module.children()) and any(True for _ in module.parameters(recurse=False))
    ]


def _is_weight_layer(module):
    return getattr(module, "weight", None) is not None and module.weight.ndim >= 2


def encoder_blocks(encoder):
    """The encoder's blocks from the input up, as [(name, [module names relative to ``encoder``]), ...].

    transformers backbones: each innermost ``layer.N`` / ``layers.N`` /
    ``blocks.N`` module is a block (``block 1`` .. ``block n``, the last one
    as in ``last_encoder_block``), and what lies outside them (patch
    embeddings, position embeddings, norms between and after the blocks) is
    the block next to the input, ``embeddings`` (the whole encoder, so that
    the cascade's last step leaves nothing trained). Other encoders: each
    weight layer (conv or linear) with every parameterised layer after it up
    to the next weight layer (its normalisation) is a block; parameterised
    layers before the first weight layer join the first block.
    """
    declared = getattr(encoder, "blocks", None)
    if callable(declared):  # an encoder that names its own blocks (BirdNET's stages)
        return declared()
    if _is_transformers(encoder):
        named = [name for name, _ in encoder.named_modules() if re.search(BLOCK_PATTERN, name)]
        # Swin-like nesting (layers.N.blocks.M): the inner blocks are the layers of the cascade
        innermost = [b for b in named if not any(other.startswith(b + ".") for other in named)]
        if innermost:
            return [("embeddings", [""])] + [(f"block {k + 1}", [b]) for k, b in enumerate(innermost)]
    leaves = _parameterised_leaves(encoder)
    groups = []
    for name, module in leaves:
        if _is_weight_layer(module) or not groups:
            groups.append([])
        groups[-1].append(name)
    return [(f"block {k + 1}", names) for k, names in enumerate(groups)]


def full_cascade(classifier, names=False):
    """Adebayo et al.'s cascading randomisation: [the head], [the head, the encoder's last block], [the head, the
    last two blocks], ... down to the block next to the input (``encoder_blocks``), as classifier submodule names.

    ``names=True``: also the step names, ("head", "block n", ..., "block 1"), for tables and plots.
    """

    def qualified(name):
        return f"embedding_model.{name}" if name else "embedding_model"

    steps, step_names, randomized = [["classifier"]], ["head"], ["classifier"]
    for block, modules in reversed(encoder_blocks(classifier.embedding_model)):
        randomized = randomized + [qualified(name) for name in modules]
        steps.append(randomized)
        step_names.append(block)
    return (steps, step_names) if names else steps


def default_cascade(classifier):
    """The short cascade (``cascade: last_block``): [the head], then [the head, the encoder's last block].

    The first two steps of ``full_cascade`` for conv encoders; the sanity check's default before the full one.
    """
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


def _unit_maps(maps):
    """|maps| (B, ...) as (B, H, W) float64 numpy arrays scaled to [0, 1] by their max (an all-zero map stays 0).

    Adebayo et al.'s normalisation (``abs_grayscale_norm`` of their code: |x| / max |x|); a map of more than
    two dimensions keeps its first and folds the others into its second.
    """
    a = maps.detach().abs().double().cpu()
    a = a.reshape(a.shape[0], a.shape[1], -1) if a.ndim >= 3 else a.reshape(a.shape[0], -1, 1)
    peak = a.flatten(1).amax(dim=1).clamp(min=1e-300).reshape(-1, 1, 1)
    return (a / peak).numpy()


def ssim(a, b):
    """Per-clip SSIM of |a| and |b| (B, ...) -> (B,), each map normalised to [0, 1] first (``_unit_maps``).

    scikit-image's ``structural_similarity`` with ``data_range=1`` and its default 7 x 7 uniform window (smaller
    for maps under 7 bins on a side). NaN, with a warning, when scikit-image is not installed
    (``pip install -r extra_requirements.txt``): the Spearman verdict does not need it.
    """
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        warnings.warn("scikit-image is not installed: the sanity check's SSIM is NaN", stacklevel=2)
        return torch.full((a.shape[0],), math.nan, dtype=torch.float64)
    ua, ub = _unit_maps(a), _unit_maps(b)
    side = min(ua.shape[1:])
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        return torch.full((a.shape[0],), math.nan, dtype=torch.float64)
    values = [structural_similarity(x, y, data_range=1.0, win_size=window) for x, y in zip(ua, ub, strict=True)]
    return torch.tensor(values, dtype=torch.float64)


CASCADES = {"full": full_cascade, "last_block": default_cascade}


def resolve_cascade(classifier, cascade=None):
    """(steps, step names) of ``cascade``: None or "full" (``full_cascade``), "last_block" (``default_cascade``),
    or explicit lists of classifier submodule names (named "step 1", "step 2", ...)."""
    if cascade is None or cascade == "full":
        return full_cascade(classifier, names=True)
    if cascade == "last_block":
        return default_cascade(classifier), ["head", "head+block"]
    if isinstance(cascade, str):
        raise ValueError(f"sanity check: unknown cascade {cascade!r}; known: {sorted(CASCADES)} or lists of names")
    steps = [list(names) for names in cascade]
    return steps, [f"step {k + 1}" for k in range(len(steps))]


def _explain_with(interpreter, classifier, other, X, target):
    """``interpreter``'s saliency of X when it explains ``other`` (same structure as ``classifier``) instead."""
    # an interpreter that explains only the classifier's own decision explains the other one's
    asked = target if interpreter.class_conditional else None
    return rebind(interpreter, classifier, other).explain(X=X, target=asked).saliency


def data_randomization_check(interpreter, classifier, shuffled, X, target, saliency=None):
    """Adebayo et al.'s data randomisation test: ``interpreter``'s maps of ``classifier`` vs. of ``shuffled`` (the
    same architecture trained by the same recipe on permuted labels, ``shuffled_labels_folder``), on X.

    Returns ``{"spearman", "ssim"}`` (means), ``"per_clip"`` / ``"ssim_per_clip"`` ((B,)); ``{"skipped": why}``
    when ``shuffled`` does not have ``classifier``'s structure (e.g. a prototype net built on the encoder).
    """
    if [n for n, _ in classifier.named_parameters()] != [n for n, _ in shuffled.named_parameters()]:
        return {"skipped": "the explained model is not the classifier trained on shuffled labels"}
    if saliency is None:
        saliency = interpreter.explain(X=X, target=target).saliency
    explained = _explain_with(interpreter, classifier, shuffled.eval(), X, target)
    rho, structural = spearman(saliency, explained), ssim(saliency, explained)
    return {
        "spearman": float(rho.mean()),
        "ssim": float(structural.mean()),
        "per_clip": rho,
        "ssim_per_clip": structural,
    }


def sanity_check(interpreter, classifier, X, target, saliency=None, cascade=None, threshold=0.5, seed=0, shuffled=None):
    """Model-parameter randomisation test of ``interpreter`` on spectrograms X for ``target``.

    ``cascade``: the steps (``resolve_cascade``; default: ``full_cascade``, head down to the input).
    ``saliency``: the explanation of the trained classifier (computed when None). Returns
    ``{"steps": [mean Spearman per step], "ssim_steps": [mean SSIM per step], "per_clip": [(B,) Spearman per
    step], "ssim_per_clip": [(B,) SSIM per step], "step_names": [...], "passed": bool}``; it passes when the
    last step's mean Spearman similarity is at most ``threshold``. ``shuffled``: a classifier trained on
    shuffled labels; then ``"data_randomization"`` holds ``data_randomization_check``'s result too (not part
    of the verdict).
    """
    cascade, step_names = resolve_cascade(classifier, cascade)
    if saliency is None:
        saliency = interpreter.explain(X=X, target=target).saliency
    steps, per_clip, ssim_steps, ssim_per_clip = [], [], [], []
    for k, names in enumerate(cascade):
        randomized = randomized_copy(classifier, names, seed=seed + 100 * k)
        explained = _explain_with(interpreter, classifier, randomized, X, target)
        rho, structural = spearman(saliency, explained), ssim(saliency, explained)
        per_clip.append(rho)
        steps.append(float(rho.mean()))
        ssim_per_clip.append(structural)
        ssim_steps.append(float(structural.mean()))
    result = {
        "steps": steps,
        "ssim_steps": ssim_steps,
        "per_clip": per_clip,
        "ssim_per_clip": ssim_per_clip,
        "step_names": step_names,
        "passed": bool(steps[-1] <= threshold),
    }
    if shuffled is not None:
        result["data_randomization"] = data_randomization_check(
            interpreter, classifier, shuffled, X, target, saliency=saliency
        )
    return result


def shuffled_labels_folder(data_folder, out_folder, seed=0):
    """An ESC-50-layout copy of ``data_folder`` whose labels are permuted across clips (the data randomisation
    test's training set): meta/esc50.csv with its (target, category) pairs shuffled, every other file and folder
    (audio, ground truth) linked to the original. Class counts are kept; written once (kept when present)."""
    import csv
    import io
    import random

    from common.io import atomic_write_text

    data_folder, out_folder = Path(data_folder).resolve(), Path(out_folder)
    meta = out_folder / "meta" / "esc50.csv"
    if meta.is_file():
        return out_folder
    (out_folder / "meta").mkdir(parents=True, exist_ok=True)
    for item in data_folder.iterdir():
        if item.name != "meta" and not (out_folder / item.name).exists():
            (out_folder / item.name).symlink_to(item, target_is_directory=item.is_dir())
    for item in (data_folder / "meta").iterdir():
        if item.name != "esc50.csv" and not (out_folder / "meta" / item.name).exists():
            (out_folder / "meta" / item.name).symlink_to(item, target_is_directory=item.is_dir())
    with open(data_folder / "meta" / "esc50.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    labels = [(row["target"], row["category"]) for row in rows]
    random.Random(seed).shuffle(labels)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row, (target, category) in zip(rows, labels, strict=True):
        writer.writerow({**row, "target": target, "category": category})
    atomic_write_text(meta, buf.getvalue())
    return out_folder


def save_cascade_plot(results, path, title="Model-parameter randomisation cascade"):
    """Spearman and SSIM against the cascade step, one line per method, as a png (``save_figure``).

    ``results``: objects with ``label``, ``classifier`` and ``sanity`` (a ``sanity_check`` result or None), e.g.
    the leaderboard's MethodResults. One row of two panels (Spearman | SSIM) per classifier, since the cascade's
    steps are the classifier's layers. Returns {classifier: [method labels drawn]}, or {} when none has a result.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.reports.figures import save_figure

    by_classifier = {}
    for result in results:
        if result.sanity is not None:
            by_classifier.setdefault(result.classifier, []).append(result)
    if not by_classifier:
        return {}
    fig, axes = plt.subplots(len(by_classifier), 2, figsize=(13, 3.6 * len(by_classifier)), squeeze=False)
    for row, (classifier, group) in zip(axes, by_classifier.items(), strict=True):
        names = max((r.sanity["step_names"] for r in group), key=len)
        for ax, key, metric in ((row[0], "steps", "Spearman rank correlation"), (row[1], "ssim_steps", "SSIM")):
            for k, result in enumerate(group):
                values = result.sanity[key]
                # tab20: a leaderboard has up to ~20 methods, more than the default cycle's 10 colours
                color = plt.cm.tab10(k) if len(group) <= 10 else plt.cm.tab20(k % 20)
                ax.plot(range(len(values)), values, marker="o", label=result.label, color=color)
            ax.set_xticks(range(len(names)), names, rotation=30)
            ax.set_ylim(-0.25 if key == "steps" else -0.05, 1.05)
            ax.axhline(0.0, color="grey", lw=0.5)
            ax.set_xlabel("re-initialised down to (cumulative, from the top)")
            ax.set_ylabel(metric)
            ax.set_title(f"{metric}, {classifier}", fontsize=9)
        row[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the lines, not over them
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=90)
    return {classifier: [r.label for r in group] for classifier, group in by_classifier.items()}


def shuffled_labels_classifier(name, entry, data_folder, out, seed=0):
    """The leaderboard classifier ``entry`` (config ``classifiers.<name>``) trained again by its own recipe and
    budget on ``shuffled_labels_folder(data_folder)``, as out/classifiers/<name>_shuffled_labels; loaded (eval)."""
    from common.analysis.leaderboard.classifiers import ClassifierEntry

    folder = shuffled_labels_folder(data_folder, Path(out) / "data_shuffled_labels" / f"seed{seed}", seed=seed)
    # a checkpoint names the trained model only; the shuffled one is always trained here
    twin = {k: v for k, v in entry.items() if k not in ("data_randomization", "checkpoint")}
    shuffled = ClassifierEntry(f"{name}_shuffled_labels", twin, folder, Path(out))
    shuffled.ensure_trained()
    model, _ = shuffled.load()
    return model.eval()
