"""DRSA over a classification data set: concept subspaces per class, their evaluation and listenable concepts.

For a class c (a genre): LRP explains c on the class's training segments;
the (activation, context) pairs at the chosen layer are collected and DRSA
fits K subspaces (``fit_class_concepts``). On the class's test segments
(``evaluate_class_concepts``):

- the standard LRP heatmap, the K DRSA concept heatmaps and those of K random
  orthogonal subspaces (the baseline; same layer, same rules);
- the shared evaluation suite on the LRP and DRSA explanations;
- patch / concept flipping (AUPC) of each, by every removal order asked for;
- with synthetic ground truth (``ground_truth/<clip>.json``, see
  ``common.data.synthetic.music``), the separation of the known components
  by the concept heatmaps, DRSA against the random subspaces;
- for the first few segments, a figure (log-mel | LRP | K concepts) and the
  concepts as audio (positive-relevance mask -> original phase -> ISTFT).

Recipes wire it (recipes/GTZAN/drsa/train_drsa.py); nothing here is GTZAN-specific.
"""

import logging
from pathlib import Path

import speechbrain as sb
import torch

from common.interpreters.drsa import DRSAInterpreter, collect_drsa_pairs, concept_explanations, fit_drsa
from common.metrics.concepts import aupc, concept_separation, flipping_curve, flipping_order
from common.models.classifier import as_targets
from common.reports.audio import save_wav
from common.reports.figures import save_image_panels

logger = logging.getLogger(__name__)


def class_loader(dataset, class_name, batch_size, max_items=None):
    """Batches of the items of ``dataset`` whose ``class_string`` is ``class_name`` (the first ``max_items``)."""
    subset = dataset.filtered_sorted(key_test={"class_string": lambda label: label == class_name}, select_n=max_items)
    return sb.dataio.dataloader.make_dataloader(subset, batch_size=batch_size, shuffle=False, num_workers=0)


@torch.no_grad()
def batch_spectrograms(classifier, batch, device="cpu"):
    """(wavs, X) of a batch of the classification datasets."""
    wavs = batch.sig[0].to(device)
    return wavs, classifier.features(wavs)


def fit_class_concepts(
    lrp,
    classifier,
    loader,
    class_index,
    layer,
    n_concepts,
    n_positions=None,
    positions_as_samples=True,
    fit_options=None,
):
    """Fit DRSA subspaces for ``class_index`` on the pairs collected over ``loader``: (U, history, n_segments).

    Every segment explains the class (its own label, as the paper's per-class
    analysis does), so the subspaces are the class's concepts.
    ``positions_as_samples``: each kept position is a sample of the objective
    (else a segment is, its relevance summed over its positions).
    """

    def spectrograms():
        for batch in loader:
            _, X = batch_spectrograms(classifier, batch)
            yield X, as_targets(class_index, X)

    acts, ctxs = collect_drsa_pairs(lrp, spectrograms(), layer, n_positions=n_positions)
    n_segments = acts.shape[0]
    points = "positions" if positions_as_samples else "clips"
    U, history = fit_drsa(acts, ctxs, n_concepts, **{"points": points, **(fit_options or {})})
    return U, history, n_segments


def segment_component_masks(ground_truth_folder, front_end, clip_ids, starts, n_frames):
    """(B, M, T, F) masks of each clip's known components, with their names; (None, None) without ground truth."""
    from common.data.synthetic.ground_truth import read_ground_truth
    from common.data.synthetic.music import component_masks

    folder = Path(ground_truth_folder) if ground_truth_folder else None
    if folder is None or not all((folder / f"{clip}.json").is_file() for clip in clip_ids):
        return None, None
    names, stacked = None, []
    for clip, start in zip(clip_ids, starts, strict=True):
        masks = component_masks(read_ground_truth(folder.parent, clip), front_end, n_frames, start_s=start)
        if names is None:
            names = list(masks)
        if list(masks) != names:  # the classes differ in their components; one class shares one layout
            raise ValueError(f"{clip} has components {list(masks)}, its class's first segment {names}")
        stacked.append(torch.stack([masks[name] for name in names]))
    return torch.stack(stacked), names


def _flipping_scores(classifier, X, target, heatmaps, patch, flip_steps, fill, orders):
    """{f"aupc_{order}": (B,)} for concept heatmaps (B, K, T, F), or {"aupc": (B,)} for one heatmap (B, T, F)."""
    if heatmaps.ndim == 3:
        return {
            "aupc": aupc(
                flipping_curve(classifier, X, target, flipping_order(heatmaps, patch), patch, flip_steps, fill)
            )
        }
    return {
        f"aupc_{order}": aupc(
            flipping_curve(classifier, X, target, flipping_order(heatmaps, patch, order), patch, flip_steps, fill)
        )
        for order in orders
    }


def save_concept_examples(folder, clip, wavs, X, standard, explanation, classifier, sample_rate, title):
    """Figure log-mel | LRP | K concepts, and each concept as audio, in ``folder/clip``.

    ``explanation``: DRSA's explanation of this one clip (batch of 1); ``wavs`` (samples,), ``X`` and ``standard`` (T, F).
    """
    out = Path(folder) / clip
    concepts = explanation.extras["concepts"][0]
    panels = [("log-mel", X), ("LRP", standard)] + [(f"concept {k}", h) for k, h in enumerate(concepts)]
    save_image_panels(panels, out / "concepts.png", title=title)
    save_wav(out / "original.wav", wavs, sample_rate)
    for k, concept in enumerate(concept_explanations(explanation)):
        save_wav(out / f"concept_{k}.wav", concept.to_wav(classifier, wavs[None])[0], sample_rate)


def evaluate_class_concepts(
    classifier,
    lrp,
    drsa,
    loader,
    class_index,
    suite,
    n_random=3,
    patch=(8, 8),
    flip_steps=16,
    fill="silence",
    orders=("positive", "max", "concepts"),
    ground_truth_folder=None,
    examples_folder=None,
    n_examples=0,
    sample_rate=None,
):
    """Per-segment scores on ``loader`` (segments of one class, explained for it).

    Returns rows ``{"id", "method", <score>: float}`` for the methods ``lrp``,
    ``drsa`` and ``random`` (the mean over ``n_random`` random-subspace
    baselines), plus the component names when ground truth exists.
    """
    randoms = [
        DRSAInterpreter.with_random_subspaces(
            classifier,
            drsa.U.shape[0],
            drsa.n_concepts,
            subspace_dim=drsa.U.shape[1] // drsa.n_concepts,
            seed=seed,
            layer=drsa.layer,
            composite=drsa.composite,
            composite_kwargs=drsa.composite_kwargs,
            merge_batchnorm=drsa.merge_batchnorm,
        )
        for seed in range(n_random)
    ]
    rows, component_names, saved = [], None, 0
    for batch in loader:
        wavs, X = batch_spectrograms(classifier, batch)
        target = as_targets(class_index, X)
        standard = lrp.explain(X=X, target=target)
        concepts = drsa.explain(X=X, target=target)
        scores = {
            "lrp": {
                **suite.evaluate(classifier, X, standard),
                **_flipping_scores(classifier, X, target, standard.saliency, patch, flip_steps, fill, orders),
            },
            "drsa": {
                **suite.evaluate(classifier, X, concepts),
                **_flipping_scores(classifier, X, target, concepts.extras["concepts"], patch, flip_steps, fill, orders),
            },
        }
        random_heatmaps = [r.concept_heatmaps(X, target)[0] for r in randoms]
        random_scores = [
            _flipping_scores(classifier, X, target, heatmaps, patch, flip_steps, fill, orders)
            for heatmaps in random_heatmaps
        ]
        scores["random"] = {k: torch.stack([s[k] for s in random_scores]).mean(dim=0) for k in random_scores[0]}
        masks, names = segment_component_masks(
            ground_truth_folder, classifier.front_end, batch.clip_id, batch.segment_start_s.tolist(), X.shape[1]
        )
        if masks is not None:
            component_names = names
            scores["drsa"]["separation"] = concept_separation(concepts.extras["concepts"], masks)
            scores["random"]["separation"] = torch.stack(
                [concept_separation(h, masks) for h in random_heatmaps]
            ).nanmean(dim=0)
        for method, values in scores.items():
            for k, clip in enumerate(batch.id):
                rows.append({"id": clip, "method": method, **{name: float(v[k]) for name, v in values.items()}})
        for k, clip in enumerate(batch.id):
            if examples_folder is None or saved >= n_examples:
                break
            one = type(concepts)(
                saliency=concepts.saliency[k : k + 1],
                mask=concepts.mask[k : k + 1],
                target=target[k : k + 1],
                extras={"concepts": concepts.extras["concepts"][k : k + 1]},
            )
            title = f"{clip}: LRP and {drsa.n_concepts} DRSA concepts"
            save_concept_examples(
                examples_folder, clip, wavs[k], X[k], standard.saliency[k], one, classifier, sample_rate, title
            )
            saved += 1
    return rows, component_names


def run_concept_analysis(hparams, datasets):
    """Fit (or, with ``test_only``, load) DRSA subspaces per class and evaluate them; write the tables.

    Reads from ``hparams``: classifier, label_encoder, lrp (an LRPInterpreter),
    drsa_layer, n_concepts, subspace_dim, drsa_classes (null: every class),
    max_train_items, max_test_items, n_positions, positions_as_samples, fit_options (fit_drsa's keyword arguments),
    batch_size, metrics, curve_steps, n_random, flip_patch, flip_steps,
    flip_fill, flip_orders, ground_truth_folder, n_examples, sample_rate,
    save_folder, output_folder, test_only.
    Writes ``<save_folder>/drsa/<class>.pt`` and, under ``output_folder``,
    ``concepts_per_clip.csv`` (one row per segment and method), ``concepts_summary.{md,csv}`` and ``examples/<class>/<segment>/``.
    Returns the summary rows (one per class and method).
    """
    from common.interpreters.drsa import load_subspaces, save_subspaces
    from common.metrics import EvaluationSuite
    from common.metrics.suite import summarize
    from common.reports.tables import write_metric_tables

    classifier, lrp = hparams["classifier"].eval(), hparams["lrp"]
    encoder = hparams["label_encoder"]
    classes = hparams.get("drsa_classes") or [encoder.ind2lab[i] for i in sorted(encoder.ind2lab)]
    suite = EvaluationSuite(hparams["metrics"], n_steps=hparams.get("curve_steps", 10))
    out, per_segment, summary = Path(hparams["output_folder"]), [], []
    for class_name in classes:
        class_index = encoder.lab2ind[class_name]
        path = Path(hparams["save_folder"]) / "drsa" / f"{class_name}.pt"
        objective, n_train = float("nan"), 0
        if hparams.get("test_only"):
            U, _, _ = load_subspaces(path)
        else:
            train = class_loader(datasets["train"], class_name, hparams["batch_size"], hparams.get("max_train_items"))
            U, history, n_train = fit_class_concepts(
                lrp,
                classifier,
                train,
                class_index,
                hparams["drsa_layer"],
                hparams["n_concepts"],
                n_positions=hparams.get("n_positions"),
                positions_as_samples=hparams.get("positions_as_samples", True),
                fit_options={"subspace_dim": hparams.get("subspace_dim"), **(hparams.get("fit_options") or {})},
            )
            objective = history[-1]
            save_subspaces(path, U, hparams["n_concepts"], layer=hparams["drsa_layer"], objective=objective)
            logger.info("%s: DRSA objective %.4g -> %.4g on %d segments", class_name, history[0], objective, n_train)
        drsa = DRSAInterpreter(
            classifier,
            U,
            hparams["n_concepts"],
            layer=hparams["drsa_layer"],
            composite=lrp.composite,
            composite_kwargs=lrp.composite_kwargs,
            merge_batchnorm=lrp.merge_batchnorm,
        )
        test = class_loader(datasets["test"], class_name, hparams["batch_size"], hparams.get("max_test_items"))
        rows, components = evaluate_class_concepts(
            classifier,
            lrp,
            drsa,
            test,
            class_index,
            suite,
            n_random=hparams.get("n_random", 3),
            patch=tuple(hparams["flip_patch"]),
            flip_steps=hparams["flip_steps"],
            fill=hparams["flip_fill"],
            orders=tuple(hparams["flip_orders"]),
            ground_truth_folder=hparams.get("ground_truth_folder"),
            examples_folder=out / "examples" / class_name,
            n_examples=hparams.get("n_examples", 0),
            sample_rate=hparams["sample_rate"],
        )
        per_segment += [{"class": class_name, **row} for row in rows]
        for method in ("lrp", "drsa", "random"):
            mine = [row for row in rows if row["method"] == method]
            names = list(dict.fromkeys(k for row in mine for k in row if k not in ("id", "method")))
            means = summarize({k: torch.tensor([row.get(k, float("nan")) for row in mine]) for k in names})
            summary.append(
                {
                    "class": class_name,
                    "method": method,
                    "n_test": len(mine),
                    "n_train": n_train,
                    "objective": objective if method == "drsa" else float("nan"),
                    "components": ", ".join(components or []),
                    **means,
                }
            )
    text = write_metric_tables(per_segment, summary, out, stem="concepts")
    logger.info("DRSA concepts (%s):\n%s", out / "concepts_summary.md", text)
    return summary
