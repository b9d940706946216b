"""The model-parameter randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

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
import re

import torch


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
        # an interpreter that explains only the classifier's own decision explains the randomised one's
        asked = target if interpreter.class_conditional else None
        explained = rebind(interpreter, classifier, randomized).explain(X=X, target=asked).saliency
        rho = spearman(saliency, explained)
        per_clip.append(rho)
        steps.append(float(rho.mean()))
    return {"steps": steps, "per_clip": per_clip, "passed": bool(steps[-1] <= threshold)}
