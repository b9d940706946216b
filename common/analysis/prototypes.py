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

from common.interpreters.prototypes import high_activation_box, prototype_maps
from common.io import atomic_write_json
from common.reports.audio import save_wav
from common.reports.figures import save_prototype_figure
from common.reports.tables import write_table


def _batches(dataset, indices, batch_size):
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        items = [dataset[i] for i in chunk]
        yield chunk, torch.stack([it["sig"] for it in items]), torch.stack([it["labels"] for it in items])


def choose_prototypes(model, dataset, clip_indices, max_prototypes):
    """Prototypes of the classes that occur most among the analysed clips (all of them if ``max_prototypes`` is None)."""
    head = model.head
    if max_prototypes is None:
        return list(range(head.n_prototypes))
    counts = torch.zeros(head.n_classes)
    for i in clip_indices:
        counts += dataset.labels_of(dataset.row(i))
    order = [int(c) for c in torch.argsort(counts, descending=True, stable=True) if counts[c] > 0]
    k = head.prototypes_per_class
    chosen = [p for c in order for p in range(c * k, (c + 1) * k)]
    return chosen[:max_prototypes]


@torch.no_grad()
def top_clips_per_prototype(model, dataset, clip_indices, prototype_ids, top_k, batch_size=8):
    """For each prototype in ``prototype_ids``, the ``top_k`` clips (of ``clip_indices``) most similar to it.

    Keeps a running top-k, so memory is (prototypes x top_k) whatever the
    number of clips. Returns (similarities (P', k), clip indices (P', k)).
    """
    ids = torch.as_tensor(prototype_ids)
    best_sims = torch.full((len(ids), 0), -1.0)
    best_clips = torch.zeros((len(ids), 0), dtype=torch.long)
    for chunk, wavs, _ in _batches(dataset, clip_indices, batch_size):
        X = model.features(wavs)
        maxima = model.head.similarity_maps(model.head.upsample(model.hidden(X)), ids).flatten(2).amax(-1)  # (B, P')
        sims = torch.cat([best_sims, maxima.T], dim=1)
        clips = torch.cat([best_clips, torch.as_tensor(chunk).expand(len(ids), -1)], dim=1)
        keep = sims.topk(min(top_k, sims.shape[1]), dim=1)
        best_sims, best_clips = keep.values, clips.gather(1, keep.indices)
    return best_sims, best_clips


def _clip_outputs(model, dataset, index):
    """wav, spectrogram and labels of one clip."""
    item = dataset[index]
    return item["sig"], model.features(item["sig"][None]), item["labels"]


def _write_match(model, wav, X, sim_map, box, stem, title):
    """png (spectrogram, heatmap, box), clip wav and boxed-region wav; returns their file names."""
    front_end = model.front_end
    save_prototype_figure(X[0], sim_map, box, stem.with_suffix(".png"), title=title)
    save_wav(stem.with_name(stem.name + "_clip.wav"), wav, front_end.sample_rate)
    region = front_end.box_to_wav(wav, *box)
    save_wav(stem.with_name(stem.name + "_region.wav"), region, front_end.sample_rate)
    return {"png": stem.name + ".png", "clip_wav": stem.name + "_clip.wav", "region_wav": stem.name + "_region.wav"}


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
def global_analysis(model, dataset, out_dir, class_names, top_k=5, max_prototypes=None, max_clips=None, percentile=95):
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
            maps, _ = prototype_maps(model, X, [p])
            sim_map = maps[0, 0]
            box = high_activation_box(sim_map, percentile)
            title = f"prototype {p} ({class_names[cls]}) rank {rank}: clip {clip}, similarity {sim:.3f}"
            files = _write_match(model, wav, X, sim_map, box, folder / f"rank{rank}_clip{clip}", title)
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
):
    """Explain ``n_clips`` test clips by their prototypes; returns the localization summary (or None)."""
    model.eval()
    out_dir = Path(out_dir)
    head, k = model.head, model.head.prototypes_per_class
    scored = list(range(head.n_classes)) if class_indices is None else list(class_indices)
    overlaps = []
    for clip in range(min(n_clips, len(dataset))):
        wav, X, labels = _clip_outputs(model, dataset, clip)
        out = model.prototype_outputs(X)
        logits = out.logits[0]
        probs = torch.sigmoid(logits)
        sims = out.max_similarities[0]
        top_cls = sorted(scored, key=lambda c: -float(logits[c]))[:top_classes]
        allowed = torch.zeros(head.n_prototypes, dtype=torch.bool)
        for c in scored:
            allowed[c * k : (c + 1) * k] = True
        most = torch.where(allowed, sims, torch.full_like(sims, -1.0)).topk(top_prototypes).indices.tolist()
        shown = list(dict.fromkeys(most + [p for c in top_cls for p in range(c * k, (c + 1) * k)]))
        maps, _ = prototype_maps(model, X, shown)
        folder = out_dir / f"clip{clip:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        weights = torch.relu(head.last_layer.weight)
        entries = []
        for j, p in enumerate(shown):
            cls = p // k
            box = high_activation_box(maps[0, j], percentile)
            title = f"clip {clip}: prototype {p} ({class_names[cls]}), similarity {float(sims[p]):.3f}"
            files = _write_match(model, wav, X, maps[0, j], box, folder / f"prototype_{p:06d}", title)
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
            entries.append(entry | {"training_matches": _training_matches(global_index, global_dir, p, folder)})
        true = [class_names[i] for i in torch.nonzero(labels).flatten().tolist()]
        report = {
            "clip": clip,
            "clip_id": f"{dataset.name}-{clip}",
            "labels": true,
            "top_classes": [
                {"class": class_names[c], "logit": float(logits[c]), "probability": float(probs[c])} for c in top_cls
            ],
            "logits": {class_names[c]: float(logits[c]) for c in scored},
            "probabilities": {class_names[c]: float(probs[c]) for c in scored},
            "bias": {class_names[c]: float(head.last_layer.bias[c]) for c in top_cls},
            "prototypes": entries,
        }
        if ground_truth is not None and str(clip) in ground_truth:
            report["localization"] = _localize(model, X, labels, ground_truth[str(clip)], class_names, percentile)
            overlaps.extend(report["localization"])
        atomic_write_json(folder / "explanation.json", report)
    return _summarize_localization(overlaps, out_dir) if ground_truth is not None else None


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
        {key: m[key] for key in ("clip_id", "similarity", "box", "png", "region_wav")} | {"folder": entry["folder"]}
        for m in matches
    ]


def _localize(model, X, labels, events, class_names, percentile=95):
    """Per labelled species with true events: its most activated prototype's box against those events."""
    from common.data.synthetic.soundscapes import event_boxes_mask

    fe, k = model.front_end, model.head.prototypes_per_class
    T, F = X.shape[1], X.shape[2]
    rows = []
    for cls in torch.nonzero(labels).flatten().tolist():
        own = [e for e in events if e["species"] == class_names[cls]]
        if not own:
            continue
        truth = event_boxes_mask(own, T, F, sample_rate=fe.sample_rate, hop_length=fe.hop_length, n_fft=fe.n_fft)
        maps, maxima = prototype_maps(model, X, list(range(cls * k, (cls + 1) * k)))
        best = int(maxima[0].argmax())
        t0, t1, f0, f1 = high_activation_box(maps[0, best], percentile)
        inside = truth[t0:t1, f0:f1].mean()
        area = (t1 - t0) * (f1 - f0)
        rows.append(
            {
                "species": class_names[cls],
                "prototype": cls * k + best,
                "box": [t0, t1, f0, f1],
                "overlap_fraction": float(inside),
                "iou": float(truth[t0:t1, f0:f1].sum() / (truth.sum() + area - truth[t0:t1, f0:f1].sum())),
                "random_box_overlap": _random_box_overlap(truth, t1 - t0, f1 - f0),
            }
        )
    return rows


def _random_box_overlap(truth, height, width, draws=200, seed=0):
    """Mean overlap fraction of a box of the same size placed uniformly at random: the chance level."""
    rng = np.random.default_rng(seed)
    T, F = truth.shape
    values = []
    for _ in range(draws):
        t0, f0 = rng.integers(0, T - height + 1), rng.integers(0, F - width + 1)
        values.append(truth[t0 : t0 + height, f0 : f0 + width].mean())
    return float(np.mean(values))


def _summarize_localization(rows, out_dir):
    if not rows:
        return None
    summary = {
        "pairs": len(rows),
        "overlap_fraction": float(np.mean([r["overlap_fraction"] for r in rows])),
        "random_box_overlap": float(np.mean([r["random_box_overlap"] for r in rows])),
        "iou": float(np.mean([r["iou"] for r in rows])),
    }
    atomic_write_json(out_dir / "localization.json", {"summary": summary, "pairs": rows})
    write_table([summary], out_dir / "localization")
    return summary
