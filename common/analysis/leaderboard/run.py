"""Running a leaderboard: every method explains the same clips, scored by the shared evaluation loop.

Every method is an Interpreter around a classifier; the leaderboard explains
the same clips with each one and scores the explanations with the shared
``EvaluationSuite`` through ``common.metrics.evaluation`` (so a number means
what it means in every recipe's table), times ``explain`` alone (seconds per
clip) and runs the sanity check (``sanity.py``). The table (``leaderboard.md``
/ ``.csv``), the per-clip scores (``leaderboard_per_clip.csv``), ``run.json``
and ``examples/`` (what the HTML report shows) go to the output folder, each
file written atomically.
"""

import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.analysis.leaderboard.classifiers import ClassifierEntry
from common.analysis.leaderboard.clips import load_clips, prepare_data, select_rows
from common.analysis.leaderboard.config import method_classifier, method_label
from common.analysis.leaderboard.curves import save_area_curves
from common.analysis.leaderboard.methods import build_method
from common.analysis.leaderboard.sanity import sanity_check, save_cascade_plot, shuffled_labels_classifier
from common.analysis.leaderboard.table import (
    METRIC_COLUMNS,
    direction_legend,
    drop_empty_columns,
    interval_rows,
    leaderboard_rows,
    rank_metrics,
    uncertainty_legend,
)
from common.errors import ConfigError
from common.metrics import LOCALIZATION_METRICS, EvaluationSuite, per_clip_rows
from common.metrics.evaluation import evaluate_interpreter


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


# Per-design analyses, scored like metrics (per clip, with intervals): where each of two events'
# relevance goes (conjunction: the class's two patterns in class order; order: first, then second in
# time) and whether the top region is the shortcut cue (clever_hans; NaN on clips without it).
EVENT_SHARES = ("relevance on event 1", "relevance on event 2")
CUE_COLUMN = "top region on cue (model followed it)"
DESIGN_COLUMNS = (*EVENT_SHARES, CUE_COLUMN)
DOMINANCE_CAPTION = (
    "Which of the event's bins each classifier uses (common.metrics.evidence.evidence_by_dominance): the event's "
    "bins (within 60 dB of its peak) grouped by how far the event is above everything else in them, each group "
    "silenced alone with the front end's silence over the test clips; the drop of the true class's mean "
    "probability per 1 % of the plane silenced, against as many random bins without the event (baseline). The "
    "ground truth should hold the bands that drop well above the baseline, and only those."
)


def dominance_text(rows):
    """A markdown table of ``evidence_by_dominance``'s rows."""
    from common.reports.tables import markdown_table

    def name(band):
        if band is None:
            return "none silenced"
        return "baseline (bins without the event)" if band == "baseline" else f"({band[0]:+g}, {band[1]:+g}]"

    columns = ["event - rest (dB)", "share of bins", "accuracy", "p(true class)", "drop of p per 1 % of bins"]
    shown = [
        dict(
            zip(
                columns,
                (
                    name(row["band"]),
                    f"{row['area']:.4f}",
                    f"{row['accuracy']:.2f}",
                    f"{row['probability']:.3f}",
                    f"{row['drop_per_percent']:.3f}",
                ),
                strict=True,
            )
        )
        for row in rows
    ]
    return markdown_table(shown, columns)


def design_scores(evaluation, clips):
    """{column: (N,) per-clip scores} of the design analyses the clips' ground truth allows."""
    from common.metrics.localization import relevance_shares, top_region_on

    if clips.part_masks is None and clips.cue_masks is None:
        return {}
    saliency = torch.cat([b.explanation.saliency for b in evaluation.batches]).detach()
    scores = {}
    if clips.part_masks is not None and clips.part_masks.shape[1] == len(EVENT_SHARES):
        shares = relevance_shares(saliency, clips.part_masks)
        scores.update({name: shares[:, k] for k, name in enumerate(EVENT_SHARES)})
    if clips.cue_masks is not None and clips.followed_cue is not None:
        # only where the model followed the cue is the cue its evidence (unknown for a model other than the
        # classifier, e.g. a prototype net on its encoder: no column then)
        region = clips.cue_masks * clips.followed_cue.to(clips.cue_masks.dtype)[:, None, None]
        scores[CUE_COLUMN] = top_region_on(saliency, region)
    return scores


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
    true_targets=None,
):
    """Explain ``clips`` with ``interpreter`` and score them; returns a MethodResult.

    ``true_targets`` (N,) class indices: the localization metrics and event shares score NaN on the clips
    whose explained (predicted) class is not the true one (the config's ``localization_clips: correct``).

    ``sanity``: None, or the options of ``sanity_check`` plus ``n_clips`` (the
    first clips it runs on). Seconds per clip are measured around ``explain``.
    ``n_examples``: keep the listenable explanation and the mask of the first clips.
    """
    from tqdm import tqdm

    def bar(batches):
        return tqdm(batches, desc=f"{label} ({classifier_name})", disable=not progress)

    suite = EvaluationSuite(metrics, n_steps=n_steps)
    evaluation = evaluate_interpreter(interpreter, classifier, clips.batches(batch_size), suite, progress=bar)
    examples = []
    for batch in evaluation.batches:
        explanation = batch.explanation
        target = torch.as_tensor(explanation.target).reshape(-1)
        for k in range(min(batch.hi, n_examples) - batch.lo):
            examples.append(
                {
                    "index": batch.lo + k,
                    "wav": batch.interpretation[k].detach(),
                    "X": batch.X[k].detach(),
                    "mask": explanation.mask[k],
                    "target": int(target[k]),
                }
            )
    seconds = evaluation.explain_seconds / max(len(clips), 1)
    per_clip = {**evaluation.per_clip, **design_scores(evaluation, clips)}
    if true_targets is not None:  # localization only where the explained (predicted) class is the true one
        predicted = torch.cat([torch.as_tensor(b.explanation.target).reshape(-1) for b in evaluation.batches])
        wrong = predicted.cpu() != torch.as_tensor(true_targets).reshape(-1)
        for name in set(per_clip) & {*LOCALIZATION_METRICS, *EVENT_SHARES}:
            scores = torch.as_tensor(per_clip[name], dtype=torch.float64)
            per_clip[name] = torch.where(wrong, torch.full_like(scores, float("nan")), scores)
    result = MethodResult(label, classifier_name, per_clip, seconds, examples=examples)
    # a black box (LiteRT's BirdNET) declares it has no weights to randomise: no sanity check, its row says '-'
    if sanity is not None and getattr(classifier, "randomizable", True):
        options = dict(sanity)
        n = int(options.pop("n_clips", 8))
        X = torch.cat([b.X for b in evaluation.batches])[:n]
        target = torch.cat([torch.as_tensor(b.explanation.target).reshape(-1) for b in evaluation.batches])[:n]
        saliency = torch.cat([b.explanation.saliency for b in evaluation.batches])[:n]
        result.sanity = sanity_check(interpreter, classifier, X, target, saliency=saliency, **options)
    return result


def save_examples(result, clips, explained, labels, sample_rate, out, example_meta):
    """The report's files for ``result``'s examples (the clip's own once, then this method's) under out/examples."""
    from common.reports.audio import save_wav
    from common.reports.html import save_mask_overlay, save_spectrogram, slug

    label = result.label
    for example in result.examples:
        k = example["index"]
        clip = clips.ids[k]
        clip_dir = out / "examples" / clip
        if clip not in example_meta:
            save_wav(clip_dir / "original.wav", clips.wavs[k], sample_rate)
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
        target = labels.get(example["target"], example["target"]) if labels else example["target"]
        save_wav(clip_dir / f"{slug(label)}.wav", example["wav"], sample_rate)
        save_mask_overlay(
            example["X"], example["mask"], clip_dir / f"{slug(label)}.png", title=f"{label}: mask for {target}"
        )
        example_meta[clip]["methods"].append(
            {
                "label": label,
                "classifier": result.classifier,
                "target": str(target),
                "wav": f"examples/{clip}/{slug(label)}.wav",
                "png": f"examples/{clip}/{slug(label)}.png",
            }
        )


def true_indices(clips, labels, method):
    """(N,) the clips' true class indices in ``labels`` (index -> name) of the model a method explains."""
    index = {name: k for k, name in (labels or {}).items()}
    missing = sorted({name for name in clips.labels if name not in index})
    if missing:
        raise ConfigError(
            f"localization_clips: correct needs each clip's class among the labels of the model {method} explains; "
            f"{missing} are not (its labels: {sorted(index)}); use localization_clips: all"
        )
    return torch.tensor([index[name] for name in clips.labels])


def classifier_evidence(entry, classifier, hp, labels, data_folder, rows, seed=0):
    """``evidence_check`` of one classifier on the test clips with ground truth; {"skipped": why} without it."""
    from common.metrics.evidence import evidence_check

    clips = load_clips(data_folder, rows, hp["sample_rate"], hp["signal_length_s"], classifier.front_end)
    if clips.ground_truth is None:
        return {"skipped": "no ground truth for the test clips"}
    if not labels:
        return {"skipped": "no label encoder next to the classifier"}
    index = {name: k for k, name in labels.items()}
    if any(name not in index for name in clips.labels):
        return {"skipped": "the test clips' classes are not the classifier's"}
    with torch.no_grad():
        X = classifier.features(clips.wavs)
    targets = torch.tensor([index[name] for name in clips.labels])
    check = evidence_check(classifier, X, targets, clips.ground_truth, seed=seed, n_classes=len(labels))
    if clips.event_wavs is not None:  # which of the event's bins the classifier uses (is the rule too wide?)
        from common.data.synthetic.ground_truth import levels_on_grid
        from common.metrics.evidence import evidence_by_dominance

        levels = [
            levels_on_grid(classifier.front_end, e, w - e) for e, w in zip(clips.event_wavs, clips.wavs, strict=True)
        ]
        source_db, rest_db = (torch.stack(v) for v in zip(*levels, strict=True))
        check["by_dominance"] = evidence_by_dominance(classifier, X, targets, source_db, rest_db, seed=seed)
    return check


def classifier_cue_reliance(classifier, labels, clips):
    """``cue_reliance`` of a classifier on clips with a shortcut cue (clever_hans), or None without one."""
    from common.metrics.evidence import cue_reliance

    if clips.cue_wavs is None or not clips.cue_class or not labels:
        return None
    index = {name: k for k, name in labels.items()}
    if clips.cue_class not in index or any(name not in index for name in clips.labels):
        return None
    with torch.no_grad():
        X_with = classifier.features(clips.wavs)
        X_without = classifier.features(clips.wavs - clips.cue_wavs)
    has_cue = clips.cue_wavs.abs().amax(dim=-1) > 0
    targets = torch.tensor([index[name] for name in clips.labels])
    return cue_reliance(classifier, X_with, X_without, targets, has_cue, index[clips.cue_class])


def reliance_text(reliance):
    return (
        f"on {reliance['n_clips_with_cue']} clips of other classes with the cue planted: accuracy "
        f"{reliance['accuracy_with_cue']:.2f} with it / {reliance['accuracy_without_cue']:.2f} without; "
        f"predicted the cue's class {reliance['cue_class_rate']:.2f} with it / "
        f"{reliance['cue_class_rate_without']:.2f} without; flip rate {reliance['flip_rate']:.2f}; "
        f"followed the cue on {reliance['followed_rate']:.2f}"
    )


def evidence_text(check):
    if "skipped" in check:
        return f"skipped ({check['skipped']})"
    return (
        f"{check['accuracy']:.2f} / {check['accuracy_gt_silenced']:.2f} / {check['accuracy_other_silenced']:.2f} "
        f"(chance {check['chance']:.2f}, margin {check['margin']}, {check['n_clips']} clips): "
        + ("pass" if check["passed"] else f"fail, {check['reason']}")
    )


def scored_design_columns(results):
    return [name for name in DESIGN_COLUMNS if any(name in r.per_clip for r in results)]


def flagged_rows(results, evidence, entries, metrics, rank_by, bootstrap):
    """``leaderboard_rows`` with the methods of a classifier that failed its evidence check ranked apart, their
    rank cells emptied and flagged; the others are ranked among themselves."""
    displays = {e.display for n, e in entries.items() if not evidence.get(n, {}).get("passed", True)}
    failed = [r for r in results if r.classifier in displays]
    kept = [r for r in results if r.classifier not in displays]
    rows = {
        id(r): row
        for group in (kept, failed)
        if group
        for r, row in zip(group, leaderboard_rows(group, metrics, rank_by=rank_by, **bootstrap), strict=True)
    }
    out = []
    for result in results:
        row = rows[id(result)]
        verdict = next(
            (
                "skipped" if "skipped" in evidence[n] else ("pass" if evidence[n]["passed"] else "fail")
                for n, e in entries.items()
                if e.display == result.classifier and n in evidence
            ),
            "-",
        )
        if verdict == "fail":
            row.update({k: "" for k in row if k.startswith("rank (")})
        row["classifier evidence check"] = verdict
        out.append(row)
    return out


def meta_evaluation(per_clip, table_rows, out, bootstrap):
    """Write meta_evaluation.md / .csv next to the leaderboard (``common.analysis.meta_evaluation``) when some
    classifier has ground truth; flagged classifiers are left out (and say so). Returns the markdown, or ""."""
    from common.analysis.meta_evaluation import FLAGGED, meta_evaluate, write_meta_evaluation

    rows, notes = meta_evaluate(per_clip, table_rows, **bootstrap)
    if not rows and FLAGGED not in notes.values():  # nothing with ground truth to meta-evaluate
        return ""
    return write_meta_evaluation(rows, notes, out, bootstrap["n_resamples"], bootstrap["confidence"])


def run(config, progress=True):
    """Run the leaderboard of ``config`` (a checked dict, see ``load_config``); return (rows, output folder)."""
    from common.io import atomic_write_text
    from common.metrics.uncertainty import CONFIDENCE, N_RESAMPLES
    from common.reports.html import RUN_FILE, write_html_report
    from common.reports.tables import markdown_table, write_csv

    torch.manual_seed(int(config.get("seed", 0)))
    out = Path(config["output_folder"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = config["data"]
    data_folder = prepare_data(data)
    # the clips explained (and checked for evidence): the data folder's, or an explain_folder beside its training clips
    clips_folder = (data_folder / data["explain_folder"]).resolve() if data.get("explain_folder") else data_folder
    test_folds = data.get("test_folds", [5])
    train_folds = data.get("train_folds", [f for f in range(1, 6) if f not in test_folds])
    rows = select_rows(clips_folder, test_folds, data.get("n_clips", 20))
    train_rows = select_rows(data_folder, train_folds, 10**6)
    metrics = config.get("metrics") or METRIC_COLUMNS
    sanity_options = {"threshold": 0.5, "n_clips": 8, "seed": 0, **(config.get("sanity") or {})}
    n_report = int(config.get("n_report_clips", 3))
    only_correct = config.get("localization_clips", "all") == "correct"

    entries, loaded, shuffled = {}, {}, {}
    for name, entry in config["classifiers"].items():
        if not any(method_classifier(config, m) == name for m in config["methods"]):
            continue
        entries[name] = ClassifierEntry(name, entry, data_folder, out)
        entries[name].ensure_trained()
        if entry.get("data_randomization"):  # the data randomisation test's twin, trained on shuffled labels
            seed = (entry["data_randomization"] if isinstance(entry["data_randomization"], dict) else {}).get("seed", 0)
            shuffled[name] = shuffled_labels_classifier(name, entry, data_folder, out, seed=seed)

    results, example_meta, failures, reliance = [], {}, [], {}
    for method in config["methods"]:
        label = method_label(method)
        entry = entries[method_classifier(config, method)]
        if entry.name not in loaded:
            classifier, hp = entry.load()
            loaded[entry.name] = (classifier, hp, entry.labels(classifier))
        classifier, hp, labels = loaded[entry.name]
        try:
            interpreter, explained, method_hp = build_method(method, entry, classifier, out, data_folder, train_rows)
        except Exception as exc:  # one broken method must not cost the others' results
            traceback.print_exc()
            print(f"!! {label} could not be built: {exc}; its row says so", flush=True)
            failures.append({"method": label, "classifier": entry.display, "sanity": "error", "error": str(exc)[:200]})
            continue
        hp_used = method_hp or hp
        labels_used = getattr(explained, "labels", None) or labels
        if isinstance(labels_used, (list, tuple)):  # a model that lists its own labels (BirdNET)
            labels_used = dict(enumerate(labels_used))
        class_names = labels_used  # before any display names: the clips' categories are these
        display_name = getattr(explained, "display_name", None)  # plain names where a model declares them
        if callable(display_name) and labels_used:
            labels_used = {k: display_name(v) for k, v in labels_used.items()}
        shown = entry.display if explained is classifier or method_hp else f"prototype net on {entry.display}'s encoder"
        clips = load_clips(clips_folder, rows, hp_used["sample_rate"], hp_used["signal_length_s"], explained.front_end)
        if clips.cue_wavs is not None and explained is classifier:
            if entry.name not in reliance:
                reliance[entry.name] = classifier_cue_reliance(classifier, labels, clips)
            clips.followed_cue = (reliance[entry.name] or {}).get("followed")
        try:
            result = evaluate_method(
                label,
                interpreter,
                explained,
                clips,
                metrics,
                batch_size=int(config.get("batch_size", 4)),
                n_steps=int(config.get("curve_steps", 10)),
                sanity={**sanity_options, **(method.get("sanity") or {}), "shuffled": shuffled.get(entry.name)},
                n_examples=n_report,
                classifier_name=shown,
                progress=progress,
                true_targets=true_indices(clips, class_names, label) if only_correct else None,
            )
        except Exception as exc:
            traceback.print_exc()
            print(f"!! {label} failed: {exc}; its row says so", flush=True)
            failures.append({"method": label, "classifier": shown, "sanity": "error", "error": str(exc)[:200]})
            continue
        results.append(result)
        save_examples(result, clips, explained, labels_used, hp_used["sample_rate"], out, example_meta)
        del interpreter

    evidence, bands = {}, []
    for name, entry in entries.items():
        if name not in loaded:
            classifier, hp = entry.load()
            loaded[name] = (classifier, hp, entry.labels(classifier))
        evidence[name] = classifier_evidence(entry, *loaded[name], clips_folder, rows, int(config.get("seed", 0)))
        print(f"evidence check ({entry.display}): {evidence_text(evidence[name])}", flush=True)
        if evidence[name].get("by_dominance"):
            bands.append(f"## {entry.display}\n\n{dominance_text(evidence[name]['by_dominance'])}")
        if reliance.get(name):
            print(f"cue reliance ({entry.display}): {reliance_text(reliance[name])}", flush=True)

    if bands:
        atomic_write_text(out / "evidence_bands.md", DOMINANCE_CAPTION + "\n\n" + "\n".join(bands))
    # The CSV keeps each mean's interval bounds as columns; the markdown and the report show "mean [lo, hi]".
    bootstrap = {"n_resamples": N_RESAMPLES, "confidence": CONFIDENCE, "seed": 0, **(config.get("bootstrap") or {})}
    table_rows, columns = drop_empty_columns(
        flagged_rows(
            results, evidence, entries, metrics + scored_design_columns(results), config.get("rank_by"), bootstrap
        )
        + failures
    )
    write_csv(table_rows, out / "leaderboard.csv", columns=columns)
    shown_rows, shown_columns = interval_rows(table_rows, columns)
    text = markdown_table(shown_rows, shown_columns)
    atomic_write_text(out / "leaderboard.md", text)
    clip_names = [row["filename"] for row in rows]
    per_clip = [
        row
        for result in results
        for row in per_clip_rows(result.per_clip, clip_names, method=result.label, classifier=result.classifier)
    ]
    write_csv(per_clip, out / "leaderboard_per_clip.csv")
    save_cascade_plot(results, out / "sanity_cascade.png")  # Spearman and SSIM per cascade step, per method
    save_area_curves(results, out / "matched_area_curves.png")  # each family against the area, per method
    meta_text = meta_evaluation(per_clip, table_rows, out, bootstrap)
    caption = (
        f"{len(rows)} clips of folds {test_folds} of {data_folder.name}; per-clip means. "
        + (
            "The ground-truth metrics (localization, relevance on each event) are means over the clips the "
            "explained model classifies correctly (localization_clips: correct): each method explains the "
            "predicted class, and the ground truth is the true class's evidence. "
            if only_correct
            else ""
        )
        + f"Directions: {direction_legend([m for m in metrics if any(m in r.per_clip for r in results)])}. "
        f"Sanity: Spearman rank correlation and SSIM of |saliency| before/after re-initialising the classifier's "
        f"layers cumulatively from the top (the head, then also each encoder block down to the input; 'last step': "
        f"every layer random; mean over {sanity_options['n_clips']} clips; per step in sanity_cascade.png); fail "
        f"when the last step's rho is above {sanity_options['threshold']}. "
        + uncertainty_legend(
            rank_metrics(results, metrics, config.get("rank_by")), bootstrap["n_resamples"], bootstrap["confidence"]
        )
        + " Classifier evidence check (accuracy clean / ground truth silenced / as many of the loudest other bins "
        "silenced, with the front-end's silence; a failing classifier's rows are not ranked): "
        + "; ".join(f"{entries[n].display}: {evidence_text(e)}" for n, e in evidence.items())
        + "."
        + "".join(
            f" Shortcut cue reliance ({entries[n].display}): {reliance_text(r)}; '{CUE_COLUMN}': the share of"
            " those clips whose top region (the most salient bins, as many as the cue has) lies mostly on the cue."
            for n, r in reliance.items()
            if r
        )
    )
    run_info = {
        "title": config.get("title", "Leaderboard"),
        "caption": caption,
        "columns": shown_columns,
        "rows": shown_rows,
        # the bands go to evidence_bands.md (their open bound and empty bands' NaN are not JSON)
        "evidence_check": {
            entries[n].display: {k: v for k, v in e.items() if k != "by_dominance"} for n, e in evidence.items()
        },
        "cue_reliance": {
            entries[n].display: {k: v for k, v in r.items() if k != "followed"} for n, r in reliance.items() if r
        },
        "clips": list(example_meta.values()),
    }
    atomic_write_text(out / RUN_FILE, json.dumps(run_info, indent=1, default=str))
    index = write_html_report(out)
    print(text)
    print(caption)
    print(f"\nLeaderboard: {out / 'leaderboard.md'} (and .csv)")
    if meta_text:
        print(f"\n{meta_text}\nMeta-evaluation: {out / 'meta_evaluation.md'} (and .csv)")
    print(f"HTML report: {index}")
    return table_rows, out
