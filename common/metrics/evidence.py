"""Is the ground truth the classifier's evidence? An intervention check, per classifier.

A leaderboard scores explanations against the ground truth, which only means
something if the classifier decides from it. ``evidence_check`` silences the
ground-truth bins of every clip with the front-end's true silence
(``keep_masked`` / ``silence_of``, not 0, which is the mean level of a
z-scored dB front end) and, as the control, an equal number of the loudest
non-ground-truth bins (the distractors). It passes when the first drops
accuracy to near chance and the second does not.

Both interventions punch holes; a classifier that never saw any in training
is thrown by them, or reads the silenced event's outline, and fails for that
reason (docs/leaderboards.md): the leaderboards' classifiers are trained with
``common.models.augment.SilencePatches``. ``evidence_by_dominance`` asks the converse,
whether the ground truth claims bins the classifier ignores: it silences the event's bins band by band
of how much the event dominates them. ``cue_reliance`` measures how much a classifier follows a planted
shortcut cue (clever_hans).
"""

import torch

from common.features import keep_masked, silence_of

# How far above chance the ground-truth-silenced accuracy, and below the clean one the
# distractor-silenced accuracy, may be (about two binomial standard errors at 32 clips, 4 classes).
MARGIN = 0.15


def _accuracy(classifier, X, labels, batch_size):
    return _target_probability(classifier, X, labels, batch_size)[0]


def distractor_masks(X, gt, silence, seed=0):
    """(N, T, F) bool: per clip, as many non-ground-truth bins as it has ground-truth bins, the loudest ones.

    Loudness is the bin's level above the clip's silence; ties (e.g. bins at
    silence) are broken by a seeded random order, so the choice is deterministic.
    """
    generator = torch.Generator().manual_seed(int(seed))
    loud = (X - silence).flatten(1).double()
    jitter = torch.rand(loud.shape, generator=generator, dtype=torch.float64) * 1e-9
    loud = torch.where(gt.flatten(1), torch.full_like(loud, -torch.inf), loud + jitter)
    out = torch.zeros_like(loud, dtype=torch.bool)
    for k in range(X.shape[0]):
        n = min(int(gt[k].sum()), int((~gt[k]).sum()))
        if n:
            out[k, loud[k].topk(n).indices] = True
    return out.reshape(X.shape)


def evidence_check(classifier, X, labels, gt_masks, seed=0, n_classes=None, margin=MARGIN, batch_size=16):
    """Accuracy on X, with the ground truth silenced and with as many distractor bins silenced.

    X (N, T, F) features; labels (N,) class indices; gt_masks (N, T, F), a bin
    is ground truth where its mask is > 0 (any share of the evidence). Returns
    a dict: ``accuracy``, ``accuracy_gt_silenced``, ``accuracy_other_silenced``,
    ``chance`` (1 / n_classes, n_classes from the logits when not given),
    ``margin``, ``gt_fraction`` (mean share of bins silenced), ``passed`` and
    ``reason``. Passed: clean accuracy >= chance + margin (else nothing can
    drop), gt-silenced <= chance + margin, other-silenced >= clean - margin.
    """
    X = X.detach()
    labels = torch.as_tensor(labels).reshape(-1).long()
    gt = torch.as_tensor(gt_masks).to(X.device) > 0
    with torch.no_grad():
        silence = silence_of(classifier, X)
        if n_classes is None:
            n_classes = classifier.logits(X[:1]).shape[-1]
        distractors = distractor_masks(X, gt, silence, seed)
        X_gt = keep_masked(X, (~gt).to(X.dtype), silence)
        X_other = keep_masked(X, (~distractors).to(X.dtype), silence)
    clean = _accuracy(classifier, X, labels, batch_size)
    acc_gt = _accuracy(classifier, X_gt, labels, batch_size)
    acc_other = _accuracy(classifier, X_other, labels, batch_size)
    chance = 1.0 / n_classes
    reasons = []
    if clean < chance + margin:
        reasons.append(f"clean accuracy {clean:.2f} is within {margin} of chance {chance:.2f}")
    if acc_gt > chance + margin:
        reasons.append(f"silencing the ground truth leaves accuracy {acc_gt:.2f} > chance + {margin}")
    if acc_other < clean - margin:
        reasons.append(f"silencing as many distractor bins drops accuracy to {acc_other:.2f} < clean - {margin}")
    return {
        "accuracy": clean,
        "accuracy_gt_silenced": acc_gt,
        "accuracy_other_silenced": acc_other,
        "chance": chance,
        "margin": margin,
        "gt_fraction": float(gt.double().mean()),
        "n_clips": int(X.shape[0]),
        "passed": not reasons,
        "reason": "; ".join(reasons),
        "control": "equal number of the loudest non-ground-truth bins per clip (level above silence)",
    }


# Bands of event-minus-rest level (dB) that evidence_by_dominance silences one at a time, the last one open.
DOMINANCE_EDGES = (-6.0, -3.0, 0.0, 3.0, 6.0, 10.0)


def _target_probability(classifier, X, labels, batch_size):
    """(accuracy, mean softmax probability of each clip's own class)."""
    correct, prob = 0, 0.0
    with torch.no_grad():
        for lo in range(0, X.shape[0], batch_size):
            logits = classifier.logits(X[lo : lo + batch_size])
            target = labels[lo : lo + batch_size]
            correct += int((logits.argmax(-1) == target).sum())
            prob += float(logits.softmax(-1).gather(1, target[:, None]).sum())
    n = max(X.shape[0], 1)
    return correct / n, prob / n


def evidence_by_dominance(
    classifier, X, labels, source_db, rest_db, edges=DOMINANCE_EDGES, floor_db=-60.0, seed=0, batch_size=16
):
    """How much the classifier uses the event's bins, by how much the event dominates each.

    X (N, T, F) features; labels (N,); source_db / rest_db (N, T, F) the event's and the rest's level on X's
    grid (``ground_truth.levels_on_grid``). For each band (lo, hi] of source_db - rest_db (``edges``, the last
    band open above), among bins within ``floor_db`` of the event's peak, those bins alone are silenced (the
    front end's silence) and the drop of the mean probability of the true class is divided by the share of the
    plane silenced (in %): a band the classifier ignores drops as little per area as the baseline row, as many
    random bins where the event is not within that range at all (below the first edge or under the floor) as
    the clip has bins above 0 dB. A ground-truth rule should keep the bands that drop well above the baseline.
    Returns a list of dicts: ``band`` (lo, hi), ``area`` (mean share of bins), ``accuracy``, ``probability``,
    ``drop_per_percent``; the first entry is the clean clips (band None), the last the baseline (band
    "baseline").
    """
    X = X.detach()
    labels = torch.as_tensor(labels).reshape(-1).long()
    margin = (source_db - rest_db).to(X.device)
    audible = source_db.to(X.device) > source_db.flatten(1).amax(1).to(X.device)[:, None, None] + floor_db
    with torch.no_grad():
        silence = silence_of(classifier, X)
    accuracy, probability = _target_probability(classifier, X, labels, batch_size)
    rows = [{"band": None, "area": 0.0, "accuracy": accuracy, "probability": probability, "drop_per_percent": 0.0}]

    def silenced(mask, band):
        with torch.no_grad():
            X_b = keep_masked(X, (~mask).to(X.dtype), silence)
        acc, prob = _target_probability(classifier, X_b, labels, batch_size)
        area = float(mask.double().mean())
        drop = (probability - prob) / (100 * area) if area > 0 else float("nan")
        rows.append({"band": band, "area": area, "accuracy": acc, "probability": prob, "drop_per_percent": drop})

    bounds = list(edges) + [float("inf")]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        silenced(audible & (margin > lo) & (margin <= hi), (lo, hi))
    generator = torch.Generator().manual_seed(int(seed))
    elsewhere = (~audible | (margin <= edges[0])).flatten(1).cpu()
    baseline = torch.zeros_like(elsewhere)
    for k in range(X.shape[0]):
        pool = elsewhere[k].nonzero().squeeze(1)
        n = min(int((audible[k] & (margin[k] > 0)).sum()), len(pool))
        baseline[k, pool[torch.randperm(len(pool), generator=generator)[:n]]] = True
    silenced(baseline.reshape(X.shape).to(X.device), "baseline")
    return rows


def cue_reliance(classifier, X_with, X_without, labels, has_cue, cue_class, batch_size=16):
    """How much the classifier relies on a shortcut cue (clever_hans), from the same clips with and without it.

    X_with / X_without (N, T, F): the clips' features with the cue as mixed in
    and with its waveform subtracted; labels (N,) class indices; has_cue (N,)
    bool; cue_class: the index of the class the cue marks in training. Over
    the clips with a cue (other classes' clips, in the shortcut-test split):
    ``accuracy_with_cue`` / ``accuracy_without_cue``, ``flip_rate`` (the
    prediction changes when the cue is added), ``cue_class_rate`` (predicted
    the cue's class with it) and ``cue_class_rate_without``; ``followed`` (N,)
    bool: predicted the cue's class with the cue and another class without it.
    """

    def predict(X):
        with torch.no_grad():
            return torch.cat(
                [classifier.logits(X[lo : lo + batch_size]).argmax(-1) for lo in range(0, len(X), batch_size)]
            )

    labels = torch.as_tensor(labels).reshape(-1).long()
    has_cue = torch.as_tensor(has_cue).reshape(-1).bool()
    with_cue, without = predict(X_with.detach()), predict(X_without.detach())
    followed = has_cue & (with_cue == cue_class) & (without != cue_class)
    on = has_cue
    n = int(on.sum())

    def rate(mask):
        return float(mask[on].double().mean()) if n else float("nan")

    return {
        "n_clips_with_cue": n,
        "accuracy_with_cue": rate(with_cue == labels),
        "accuracy_without_cue": rate(without == labels),
        "flip_rate": rate(with_cue != without),
        "cue_class_rate": rate(with_cue == cue_class),
        "cue_class_rate_without": rate(without == cue_class),
        "followed_rate": rate(followed),
        "followed": followed,
    }
