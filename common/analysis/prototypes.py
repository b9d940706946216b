"""Global and local analyses of a trained AudioProtoPNet (after the paper's and ProtoPNet's).

* global: for each prototype, the training clips most similar to it: the
  spectrogram with the similarity heatmap and the box of its most activated
  region, the clip's wav and the wav of the boxed region, one folder per
  prototype, plus ``global_analysis.json`` (the index the local analysis uses);
* local: for each test clip, its most activated prototypes and the prototypes
  of its top classes: similarity maps with boxes, the matched training
  examples of the global analysis, the wav of the matched region and a JSON
  of logits, probabilities, similarities and last-layer weights;
* with ground-truth events (synthetic soundscapes), how much of each
  labelled species' most activated prototype's box falls on that species'
  true events, against a same-size box placed at random.
"""

import shutil
from pathlib import Path

import numpy as np
import torch

from common.data.birdset import clip_batches
from common.interpreters.prototypes import box_maps, high_activation_box, prototype_maps
from common.io import atomic_path, atomic_write_json
from common.models.protopnet import nearest_clips
from common.reports.audio import save_wav
from common.reports.figures import save_prototype_figure, save_spectrogram_crops
from common.reports.tables import write_table


def choose_prototypes(model, dataset, clip_indices, max_prototypes):
    """Prototypes (not pruned) of the classes that occur most among the analysed clips (all of them if
    ``max_prototypes`` is None)."""
    head = model.head
    kept = set(head.kept_prototypes)
    if max_prototypes is None:
        return sorted(kept)
    counts = torch.zeros(head.n_classes)
    for i in clip_indices:
        counts += dataset.labels_of(dataset.row(i))
    order = [int(c) for c in torch.argsort(counts, descending=True, stable=True) if counts[c] > 0]
    k = head.prototypes_per_class
    chosen = [p for c in order for p in range(c * k, (c + 1) * k) if p in kept]
    return chosen[:max_prototypes]


def top_clips_per_prototype(model, dataset, clip_indices, prototype_ids, top_k, batch_size=8):
    """For each prototype in ``prototype_ids``, the ``top_k`` clips (of ``clip_indices``) most similar to it:
    (similarities (P', k), clip indices (P', k))."""
    sims, clips, _ = nearest_clips(model, clip_batches(dataset, clip_indices, batch_size), prototype_ids, top_k)
    return sims, clips


def _clip_outputs(model, dataset, index):
    """wav, spectrogram and labels of one clip."""
    item = dataset[index]
    return item["sig"], model.features(item["sig"][None]), item["labels"]


def _write_match(model, wav, X, sim_map, box, stem, title, patch=False, box_map="similarity"):
    """png (spectrogram, heatmap, box), clip wav and boxed-region wav (and, with ``patch``, the boxed crop of the
    spectrogram as png and npy: a prototype's training patch); returns their file names."""
    front_end = model.front_end
    map_title = "similarity to the prototype" if box_map == "similarity" else "the similarity's relevance"
    save_prototype_figure(X[0], sim_map, box, stem.with_suffix(".png"), title=title, map_title=map_title)
    files = {}
    if patch:
        t0, t1, f0, f1 = box
        crop = X[0, t0:t1, f0:f1].detach().cpu()
        save_spectrogram_crops([crop], [f"frames {t0}-{t1}, mel bands {f0}-{f1}"],
                               stem.with_name(stem.name + "_patch.png"), title)  # fmt: skip
        with atomic_path(stem.with_name(stem.name + "_patch.npy")) as tmp, open(tmp, "wb") as f:
            np.save(f, crop.numpy())  # to the handle: np.save would add ".npy" to the temporary name
        files = {"patch_png": stem.name + "_patch.png", "patch_npy": stem.name + "_patch.npy"}
    save_wav(stem.with_name(stem.name + "_clip.wav"), wav, front_end.sample_rate)
    region = front_end.box_to_wav(wav, *box)
    save_wav(stem.with_name(stem.name + "_region.wav"), region, front_end.sample_rate)
    return {"png": stem.name + ".png", "clip_wav": stem.name + "_clip.wav", "region_wav": stem.name + "_region.wav",
            **files}  # fmt: skip


def _save_side_by_side(X, box, match, global_dir, folder, prototype, title):
    """The test clip's boxed region beside the training patch the prototype is best matched with (the global
    analysis's top match); returns the png's name, or None when that patch was not saved."""
    patch = Path(global_dir) / match["folder"] / match["patch_npy"] if match.get("patch_npy") else None
    if patch is None or not patch.is_file():
        return None
    t0, t1, f0, f1 = box
    name = f"prototype_{prototype:06d}_test_vs_training.png"
    save_spectrogram_crops(
        [X[t0:t1, f0:f1].detach().cpu(), np.load(patch)],
        [f"this clip: frames {t0}-{t1}, mel bands {f0}-{f1}", f"training patch: {match['clip_id']}"],
        folder / name,
        title,
    )
    return name


def box_seconds(model, box):
    """A (frame0, frame1, mel0, mel1) box in seconds and Hz."""
    fe = model.front_end
    edges = fe.mel_band_edges_hz()
    t0, t1, f0, f1 = box
    return {
        "t0_s": t0 * fe.hop_length / fe.sample_rate,
        "t1_s": t1 * fe.hop_length / fe.sample_rate,
        "f_lo_hz": float(edges[f0]),
        "f_hi_hz": float(edges[min(f1 + 1, len(edges) - 1)]),
    }


@torch.no_grad()
def global_analysis(
    model, dataset, out_dir, class_names, top_k=5, max_prototypes=None, max_clips=None, percentile=95,
    box_rule="connected", box_map="similarity", relevance_steps=1,
):  # fmt: skip
    """Write one folder per prototype with its ``top_k`` most similar training clips; return the index."""
    model.eval()
    out_dir = Path(out_dir)
    clip_indices = list(range(len(dataset)))[:max_clips]
    prototype_ids = choose_prototypes(model, dataset, clip_indices, max_prototypes)
    sims, clips = top_clips_per_prototype(model, dataset, clip_indices, prototype_ids, top_k)
    k = model.head.prototypes_per_class
    index = {"prototypes_per_class": k, "n_clips_searched": len(clip_indices), "prototypes": {}}
    for row, p in enumerate(prototype_ids):
        cls = p // k
        folder = out_dir / f"prototype_{p:06d}_{class_names[cls]}"
        if folder.exists():
            shutil.rmtree(folder)  # a rerun replaces, never mixes, a prototype's matches
        folder.mkdir(parents=True)
        matches = []
        for rank, (sim, clip) in enumerate(zip(sims[row].tolist(), clips[row].tolist(), strict=True)):
            wav, X, labels = _clip_outputs(model, dataset, clip)
            sim_map = _box_map(model, X, [p], box_map, relevance_steps)[0, 0]
            box = high_activation_box(sim_map, percentile, box_rule)
            title = f"prototype {p} ({class_names[cls]}) rank {rank}: clip {clip}, similarity {sim:.3f}"
            files = _write_match(model, wav, X, sim_map, box, folder / f"rank{rank}_clip{clip}", title, patch=True,
                                 box_map=box_map)  # fmt: skip
            matches.append(
                {
                    "rank": rank,
                    "clip": int(clip),
                    "clip_id": f"{dataset.name}-{clip}",
                    "clip_labels": [class_names[i] for i in torch.nonzero(labels).flatten().tolist()],
                    "similarity": float(sim),
                    "box": list(box),
                    "box_seconds_hz": box_seconds(model, box),
                    **files,
                }
            )
        entry = {"prototype": p, "class": class_names[cls], "folder": folder.name, "matches": matches}
        atomic_write_json(folder / "prototype.json", entry)
        index["prototypes"][str(p)] = entry
    atomic_write_json(out_dir / "global_analysis.json", index)
    return index


@torch.no_grad()
def local_analysis(
    model,
    dataset,
    out_dir,
    class_names,
    class_indices=None,
    global_index=None,
    global_dir=None,
    n_clips=20,
    top_prototypes=5,
    top_classes=3,
    percentile=95,
    ground_truth=None,
    box_rule="connected",
    box_map="similarity",
    relevance_steps=1,
):
    """Explain ``n_clips`` test clips by their prototypes; with ``ground_truth`` ({clip: events}), measure the
    localization of every clip that has events (rendered or not) and return its summary (else None)."""
    model.eval()
    out_dir = Path(out_dir)
    rows = []
    measured = sorted(int(c) for c in ground_truth if int(c) < len(dataset)) if ground_truth else []
    for clip in sorted(set(range(min(n_clips, len(dataset)))) | set(measured)):
        wav, X, labels = _clip_outputs(model, dataset, clip)
        localization = None
        if clip in measured:
            localization = localize_prototypes(model, X, labels, ground_truth[str(clip)], class_names, percentile,
                                               box_rule, box_map, relevance_steps)  # fmt: skip
            rows.extend({"clip": clip, **r} for r in localization)
        if clip < n_clips:
            report = _explain_clip(model, dataset, clip, wav, X, labels, out_dir, class_names, class_indices,
                                   global_index, global_dir, top_prototypes, top_classes, percentile, box_rule,
                                   box_map, relevance_steps)  # fmt: skip
            if localization is not None:
                report["localization"] = localization
            atomic_write_json(out_dir / f"clip{clip:05d}" / "explanation.json", report)
    return summarize_localization(rows, out_dir) if ground_truth is not None else None


def _explain_clip(model, dataset, clip, wav, X, labels, out_dir, class_names, class_indices, global_index,
                  global_dir, top_prototypes, top_classes, percentile, box_rule, box_map, relevance_steps):  # fmt: skip
    """One clip's figures, wavs and report (the most activated prototypes and the top classes' prototypes)."""
    head, k = model.head, model.head.prototypes_per_class
    scored = list(range(head.n_classes)) if class_indices is None else list(class_indices)
    out = model.prototype_outputs(X)
    logits = out.logits[0]
    probs = torch.sigmoid(logits)
    sims = out.max_similarities[0]
    top_cls = sorted(scored, key=lambda c: -float(logits[c]))[:top_classes]
    allowed = torch.zeros(head.n_prototypes, dtype=torch.bool)
    for c in scored:
        allowed[c * k : (c + 1) * k] = True
    allowed &= head.prototype_mask.cpu() > 0  # pruned prototypes are not part of the model
    most = torch.where(allowed, sims, torch.full_like(sims, -1.0)).topk(min(top_prototypes, int(allowed.sum())))
    most = most.indices.tolist()
    shown = list(dict.fromkeys(most + [p for c in top_cls for p in range(c * k, (c + 1) * k) if allowed[p]]))
    maps = _box_map(model, X, shown, box_map, relevance_steps)
    folder = out_dir / f"clip{clip:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    weights = torch.relu(head.last_layer.weight)
    entries = []
    for j, p in enumerate(shown):
        cls = p // k
        box = high_activation_box(maps[0, j], percentile, box_rule)
        title = f"clip {clip}: prototype {p} ({class_names[cls]}), similarity {float(sims[p]):.3f}"
        files = _write_match(model, wav, X, maps[0, j], box, folder / f"prototype_{p:06d}", title, box_map=box_map)
        entry = {
            "prototype": p,
            "class": class_names[cls],
            "similarity": float(sims[p]),
            "last_layer_weight": float(weights[cls, p % k]),
            "contribution": float(sims[p] * weights[cls, p % k]),
            "among_most_activated": p in most,
            "box": list(box),
            "box_seconds_hz": box_seconds(model, box),
            **files,
        }
        matches = _training_matches(global_index, global_dir, p, folder)
        if matches:
            entry["side_by_side_png"] = _save_side_by_side(X[0], box, matches[0], global_dir, folder, p, title)
        entries.append(entry | {"training_matches": matches})
    return {
        "clip": clip,
        "clip_id": f"{dataset.name}-{clip}",
        "labels": [class_names[i] for i in torch.nonzero(labels).flatten().tolist()],
        "top_classes": [
            {"class": class_names[c], "logit": float(logits[c]), "probability": float(probs[c])} for c in top_cls
        ],
        "logits": {class_names[c]: float(logits[c]) for c in scored},
        "probabilities": {class_names[c]: float(probs[c]) for c in scored},
        "bias": {class_names[c]: float(head.last_layer.bias[c]) for c in top_cls},
        "prototypes": entries,
    }


def _training_matches(global_index, global_dir, prototype, folder):
    """The global analysis's training clips for ``prototype``, with the best one's png copied beside the clip's."""
    if not global_index or str(prototype) not in global_index["prototypes"]:
        return []
    entry = global_index["prototypes"][str(prototype)]
    matches = entry["matches"]
    if matches and global_dir is not None:
        src = Path(global_dir) / entry["folder"] / matches[0]["png"]
        if src.is_file():
            shutil.copyfile(src, folder / f"prototype_{prototype:06d}_training_match.png")
    return [
        {
            key: m[key]
            for key in ("clip_id", "similarity", "box", "png", "region_wav", "patch_png", "patch_npy")
            if key in m
        }
        | {"folder": entry["folder"]}
        for m in matches
    ]


def _box_map(model, X, prototype_ids, box_map, relevance_steps):
    """The maps boxes are drawn on (``box_maps``); a relevance map's positive part, the evidence for the match."""
    maps = box_maps(model, X, prototype_ids, box_map, relevance_steps)
    return maps if box_map == "similarity" else maps.clamp(min=0)


def _box_scores(score_map, truth, percentile, box_rule):
    """How one (T, F) map localizes against a (T, F) bool truth: its box's share on the truth, the box's IoU,
    a same-size random box's share, the map's mass on the truth, and whether its maximum is on the truth."""
    t0, t1, f0, f1 = high_activation_box(score_map, percentile, box_rule)
    values = score_map.detach().float().cpu().numpy()
    values = values - min(float(values.min()), 0.0)  # mass of a non-negative map (an input may be negative)
    inside = truth[t0:t1, f0:f1]
    area = (t1 - t0) * (f1 - f0)
    peak = np.unravel_index(int(values.argmax()), values.shape)
    return {
        "box": [t0, t1, f0, f1],
        "box_on_events": float(inside.mean()),
        "iou": float(inside.sum() / (truth.sum() + area - inside.sum())),
        "random_box_on_events": _random_box_overlap(truth, t1 - t0, f1 - f0),
        "mass_on_events": float(values[truth].sum() / max(values.sum(), 1e-12)),
        "peak_on_event": bool(truth[peak]),
    }


def localize_prototypes(model, X, labels, events, class_names, percentile=95, box_rule="connected",
                        box_map="similarity", relevance_steps=1):  # fmt: skip
    """Per labelled species with true events: each of its prototypes' and the input magnitude's localization.

    Returns one row per (species, prototype) with ``_box_scores``'s numbers (read off ``box_map``: the
    similarity map or its relevance, ``box_maps``), whether it is the species' most activated prototype
    (``top``), the events' share of the spectrogram (the chance of the pointing game and the mass share of
    a flat map), the intervention check of the box (``box_intervention``), and the same numbers for the
    model-blind control, the input spectrogram itself (``input_*``).
    """
    from common.data.synthetic.soundscapes import event_boxes_mask

    fe, k = model.front_end, model.head.prototypes_per_class
    T, F = X.shape[1], X.shape[2]
    control = None
    rows = []
    for cls in torch.nonzero(labels).flatten().tolist():
        own = [e for e in events if e["species"] == class_names[cls]]
        if not own:
            continue
        truth = event_boxes_mask(own, T, F, sample_rate=fe.sample_rate, hop_length=fe.hop_length, n_fft=fe.n_fft)
        control = {f"input_{key}": v for key, v in _box_scores(X[0], truth, percentile, box_rule).items()}
        kept = [p for p in range(cls * k, (cls + 1) * k) if model.head.prototype_mask[p] > 0]  # not pruned
        similarity, maxima = prototype_maps(model, X, kept)
        maps = similarity if box_map == "similarity" else _box_map(model, X, kept, box_map, relevance_steps)
        top = int(maxima[0].argmax())
        scores = [_box_scores(maps[0, j], truth, percentile, box_rule) for j in range(len(kept))]
        for j, row in enumerate(scores):  # the similarity map's own maximum, whatever the box is drawn on
            peak = np.unravel_index(int(similarity[0, j].argmax()), truth.shape)
            row["similarity_peak_on_event"] = bool(truth[peak])
        drops = box_intervention(model, X, kept, [r["box"] for r in scores], seed=len(rows), original=maxima[0])
        for j, p in enumerate(kept):
            rows.append(
                {
                    "species": class_names[cls],
                    "prototype": p,
                    "top": j == top,
                    "similarity": float(maxima[0, j]),
                    "events_area": float(truth.mean()),
                    **scores[j],
                    **drops[j],
                    **control,
                }
            )
    return rows


@torch.no_grad()
def box_intervention(model, X, prototype_ids, boxes, draws=4, seed=0, original=None):
    """Is a prototype's box where its match is? Its maximum similarity when the box is silenced (the front
    end's silence), relative to the clip's (``original``, (P,): computed when not given), against the same
    for ``draws`` boxes of the same size placed at random: per prototype {"similarity_drop_box",
    "similarity_drop_random_box"} (1 - kept / original)."""
    from common.features import keep_masked, silence_of

    rng = np.random.default_rng(seed)
    T, F = X.shape[1], X.shape[2]
    keeps, owners = [], []
    for j, (t0, t1, f0, f1) in enumerate(boxes):
        placed = [(t0, f0)] + [(rng.integers(0, T - (t1 - t0) + 1), rng.integers(0, F - (f1 - f0) + 1))
                               for _ in range(draws)]  # fmt: skip
        for a, b in placed:
            keep = torch.ones(T, F)
            keep[a : a + t1 - t0, b : b + f1 - f0] = 0
            keeps.append(keep)
            owners.append(j)
    keep = torch.stack(keeps).to(X)
    masked = keep_masked(X.expand(len(keep), -1, -1), keep, silence_of(model, X))
    ids = torch.as_tensor(prototype_ids)
    original = prototype_maps(model, X, ids)[1][0] if original is None else original  # (P,)
    sims = torch.cat([prototype_maps(model, masked[k : k + 32], ids)[1] for k in range(0, len(masked), 32)])
    kept = sims[torch.arange(len(sims)), torch.as_tensor(owners)] / original[torch.as_tensor(owners)].clamp_min(1e-8)
    kept = kept.view(len(boxes), draws + 1)
    return [
        {"similarity_drop_box": float(1 - kept[j, 0]), "similarity_drop_random_box": float(1 - kept[j, 1:].mean())}
        for j in range(len(boxes))
    ]


def _random_box_overlap(truth, height, width, draws=200, seed=0):
    """Mean overlap fraction of a box of the same size placed uniformly at random: the chance level."""
    rng = np.random.default_rng(seed)
    T, F = truth.shape
    values = []
    for _ in range(draws):
        t0, f0 = rng.integers(0, T - height + 1), rng.integers(0, F - width + 1)
        values.append(truth[t0 : t0 + height, f0 : f0 + width].mean())
    return float(np.mean(values))


LOCALIZATION_KEYS = ("box_on_events", "random_box_on_events", "iou", "mass_on_events", "peak_on_event",
                     "similarity_peak_on_event")  # fmt: skip
INTERVENTION_KEYS = ("similarity_drop_box", "similarity_drop_random_box")


def summarize_localization(rows, out_dir):
    """Means over (clip, species) pairs of the most activated prototype, of every own prototype, and of the
    input-magnitude control; a per-prototype table. Writes localization.json/.md, per_prototype.md."""
    if not rows:
        return None
    top = [r for r in rows if r["top"]]

    def mean(selected, key):
        return float(np.mean([float(r[key]) for r in selected]))

    summary = {"pairs": len(top), "events_area": mean(top, "events_area")}
    summary |= {key: mean(top, key) for key in LOCALIZATION_KEYS}
    summary |= {key: mean(top, key) for key in INTERVENTION_KEYS}
    summary |= {f"all_prototypes_{key}": mean(rows, key) for key in LOCALIZATION_KEYS}
    summary |= {f"input_{key}": mean(top, f"input_{key}") for key in LOCALIZATION_KEYS
                if key != "similarity_peak_on_event"}  # fmt: skip
    per_prototype = []
    for p in sorted({r["prototype"] for r in rows}):
        own = [r for r in rows if r["prototype"] == p]
        per_prototype.append(
            {"prototype": p, "species": own[0]["species"], "clips": len(own),
             "times_top": sum(r["top"] for r in own), **{key: mean(own, key) for key in LOCALIZATION_KEYS}}
        )  # fmt: skip
    atomic_write_json(out_dir / "localization.json", {"summary": summary, "per_prototype": per_prototype,
                                                       "rows": rows})  # fmt: skip
    write_table([summary], out_dir / "localization")
    write_table(per_prototype, out_dir / "per_prototype")
    return summary


def localization_line(summary):
    """One line of a localization summary: the most activated prototype's box, mass and peak against the
    random box, the events' area and the input-magnitude control."""
    s = summary
    return (
        f"most activated prototype's box on the true events {s['box_on_events']:.3f} of its area (random box "
        f"{s['random_box_on_events']:.3f}, input magnitude's box {s['input_box_on_events']:.3f}), IoU {s['iou']:.3f}; "
        f"its map's mass on events {s['mass_on_events']:.3f} (input {s['input_mass_on_events']:.3f}, events' area "
        f"{s['events_area']:.3f}); maximum on an event {s['peak_on_event']:.3f} (input {s['input_peak_on_event']:.3f}; the "
        f"similarity map's maximum {s['similarity_peak_on_event']:.3f}); "
        f"{s['pairs']} (clip, species) pairs"
        f"; silencing the box lowers its similarity by {s['similarity_drop_box']:.3f} (a random box of its size: "
        f"{s['similarity_drop_random_box']:.3f})"
    )
