"""Explaining music emotion over seven mid-level concepts: the bottleneck's own explanation, Kernel SHAP on the
black box, and the truth of the generator that made the clips.

* The bottleneck's explanation (Chowdhury et al. 2019): emotion_e = sum_k w_ek m_k + b_e, so the effect of
  feature k is w_ek m_k (``weight_x_value``, the paper's bars). Relative to a reference clip it is
  w_ek (m_k(x) - m_k(reference)), and these effects sum to the change of the prediction.
* Kernel SHAP over concepts (``concept_kernel_shap``): the players are the seven attributes of the synthetic
  music; a coalition keeps the clip's own value of its attributes and sets the others to the reference
  value, the generator re-renders the clip (same seed: only what those attributes control changes), and the
  model's outputs are explained by the Shapley regression of ``common.interpreters.lime_shap`` (all
  2^7 coalitions when the budget allows: exact Shapley values). On the black box this is the post-hoc
  explanation the survey asked for; on the bottleneck it tests whether its own explanation is what it does;
  on the generator's noise-free emotions it is the truth both are judged against.

Only synthetic music can be re-rendered with a concept changed, so the concept-level comparison needs the
generator's ground truth; on real data the bottleneck's explanations are written alone.
"""

import logging
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from common.data.midlevel import EMOTIONS, MIDLEVEL_FEATURES
from common.data.synthetic.midlevel_music import REFERENCE_VALUE, TRUE_WEIGHTS, render, true_emotions
from common.interpreters.lime_shap import constrained_shapley_regression, shapley_coalitions
from common.metrics.regression import correlation_table, explanation_agreement
from common.reports.audio import save_wav
from common.reports.figures import save_grouped_bars, save_weight_matrices
from common.reports.tables import write_table

logger = logging.getLogger(__name__)

SIGN_THRESHOLD = 0.05  # rating points: effects smaller than this have no sign worth comparing


def concept_kernel_shap(outputs_of, attributes, reference, n_samples=200, seed=0):
    """(phi (n_outputs, K), outputs of every coalition (N, n_outputs), coalitions (N, K)), for the outputs of
    ``outputs_of(rows)``: rows (N, K) of attribute values, the clip's own where a coalition keeps a concept and
    ``reference`` elsewhere. Rows 0 and 1 are the full and the empty coalitions; the efficiency constraint
    sum_k phi_k = f(full) - f(empty) holds exactly."""
    attributes = np.asarray(attributes, dtype=np.float64)
    K = len(attributes)
    coalitions, weights = shapley_coalitions(K, n_samples, np.random.default_rng(seed))
    rows = np.concatenate([np.ones((1, K), bool), np.zeros((1, K), bool), coalitions])
    values = np.asarray(outputs_of(np.where(rows, attributes, reference)), dtype=np.float64)
    full, empty, rest = values[0], values[1], values[2:]
    phi = np.stack(
        [
            constrained_shapley_regression(coalitions, rest[:, o] - empty[o], weights, full[o] - empty[o])
            for o in range(values.shape[1])
        ]
    )
    return phi, values, rows


class SyntheticClip:
    """One generated clip that can be re-rendered with attributes changed: its seed and target attributes."""

    def __init__(self, clip_id, seed, target, sample_rate, duration_s):
        self.clip_id, self.seed, self.target = clip_id, int(seed), np.asarray(target, dtype=np.float64)
        self.sample_rate, self.duration_s = int(sample_rate), float(duration_s)

    def render(self, attributes):
        """(wav, realised attributes) of this clip with ``attributes``."""
        return render(attributes, self.seed, self.sample_rate, self.duration_s)


@torch.no_grad()
def model_outputs(model, wavs, batch_size):
    """{"emotion": (N, 8), "mid": (N, 7) or None} in rating units, batched."""
    emotion, mid = [], []
    for lo in range(0, len(wavs), batch_size):
        batch = torch.as_tensor(np.stack(wavs[lo : lo + batch_size]))
        out = model(batch.to(next(model.parameters()).device))
        emotion.append(out["emotion"].cpu().numpy())
        if out["mid"] is not None:
            mid.append(out["mid"].cpu().numpy())
    return {"emotion": np.concatenate(emotion), "mid": np.concatenate(mid) if mid else None}


def explain_clip(clip, bottleneck, blackbox, reference, n_samples, batch_size, seed=0):
    """Every explanation of one clip's eight emotions, each (8, 7) in emotion rating points:

    ``effects`` (the bottleneck's w_ek (m_k(x) - m_k(reference clip))), ``weight_x_value`` (w_ek m_k(x)),
    ``shap_blackbox`` / ``shap_bottleneck`` (concept Kernel SHAP of each model), ``truth`` (concept Shapley
    values of the generator's noise-free emotions), and the predictions of both models on the clip."""
    rendered = []  # every coalition's clip, row 0 the clip itself

    def outputs_of(rows):
        rendered[:] = [clip.render(row) for row in rows]
        wavs, real = [w for w, _ in rendered], np.stack([r for _, r in rendered])
        b = model_outputs(bottleneck, wavs, batch_size)
        k = model_outputs(blackbox, wavs, batch_size)
        return np.concatenate([k["emotion"], b["emotion"], true_emotions(real), b["mid"]], axis=1)

    phi, values, _ = concept_kernel_shap(outputs_of, clip.target, reference, n_samples, seed)
    n_e = len(EMOTIONS)
    weights, _ = (t.detach().cpu().numpy() for t in bottleneck.rating_weights())
    mid_full, mid_reference = values[0, 3 * n_e :], values[1, 3 * n_e :]
    return {
        "effects": weights * (mid_full - mid_reference)[None, :],
        "weight_x_value": weights * mid_full[None, :],
        "shap_blackbox": phi[:n_e],
        "shap_bottleneck": phi[n_e : 2 * n_e],
        "truth": phi[2 * n_e : 3 * n_e],
        "blackbox_emotion": values[0, :n_e],
        "bottleneck_emotion": values[0, n_e : 2 * n_e],
        "true_emotion": values[0, 2 * n_e : 3 * n_e],
        "blackbox_reference_emotion": values[1, :n_e],
        "bottleneck_reference_emotion": values[1, n_e : 2 * n_e],
        "true_reference_emotion": values[1, 2 * n_e : 3 * n_e],
        "bottleneck_mid": mid_full,
        "realised": rendered[0][1],
        "wav": rendered[0][0],
    }


AGREEMENTS = (
    ("bottleneck effects", "effects", "truth", "truth"),
    ("black-box Kernel SHAP", "shap_blackbox", "truth", "truth"),
    ("bottleneck Kernel SHAP", "shap_bottleneck", "truth", "truth"),
    ("bottleneck effects", "effects", "black-box Kernel SHAP", "shap_blackbox"),
    ("bottleneck effects", "effects", "bottleneck Kernel SHAP", "shap_bottleneck"),
    ("random (control)", "random", "truth", "truth"),
)


def agreement_rows(explained, seed=0):
    """One row per pair of explanations compared over every (clip, emotion): Spearman, signs, top-1."""
    stacked = {
        key: np.stack([e[key] for e in explained]) for key in ("effects", "shap_blackbox", "shap_bottleneck", "truth")
    }
    scale = np.abs(stacked["truth"]).std()
    stacked["random"] = np.random.default_rng(seed).normal(0.0, scale, stacked["truth"].shape)
    rows = []
    for name_a, key_a, name_b, key_b in AGREEMENTS:
        agreement = explanation_agreement(stacked[key_a], stacked[key_b], threshold=SIGN_THRESHOLD)
        rows.append(
            {
                "explanation": name_a,
                "compared with": name_b,
                "spearman": round(agreement["spearman"], 3),
                "sign agreement": round(agreement["sign_agreement"], 3),
                "top-1 agreement": round(agreement["top1_agreement"], 3),
                "clip x emotion": agreement["n"],
            }
        )
    return rows


def weight_rows(learned, true_weights=TRUE_WEIGHTS, rating_scale=9.0):
    """Learned (8, 7) weights (emotion points per mid-level rating point) against the generator's (per unit
    of attribute, i.e. per ``rating_scale`` rating points): sign agreement where the truth is not 0, Spearman
    over all weights and per emotion. Returns (summary dict, per-emotion rows)."""
    learned, truth = np.asarray(learned, dtype=np.float64), np.asarray(true_weights, dtype=np.float64) / rating_scale
    nonzero = truth != 0
    summary = {
        "sign agreement (true weight != 0)": float((np.sign(learned) == np.sign(truth))[nonzero].mean()),
        "spearman (all 56 weights)": float(stats.spearmanr(learned.ravel(), truth.ravel()).statistic),
        "largest |weight| on a zero true weight": float(np.abs(learned[~nonzero]).max()) if (~nonzero).any() else 0.0,
        "smallest |weight| on a non-zero true weight": float(np.abs(learned[nonzero]).min()),
    }
    rows = [
        {
            "emotion": emotion,
            "spearman": round(float(stats.spearmanr(learned[e], truth[e]).statistic), 3),
            "signs right": f"{int((np.sign(learned[e]) == np.sign(truth[e]))[nonzero[e]].sum())}/{int(nonzero[e].sum())}",
        }
        for e, emotion in enumerate(EMOTIONS)
    ]
    return summary, rows


def write_midlevel_report(explained, clips, ratings, learned_weights, out_folder, n_examples, model_name):
    """Tables (agreement, weights, correlations on the explained clips), figures and wavs; returns the summary."""
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    agreement = agreement_rows(explained)
    write_table(agreement, out / "agreement")
    summary, per_emotion = weight_rows(learned_weights)
    write_table(per_emotion, out / "weights_per_emotion")
    write_table([{"measure": k, "value": round(v, 4)} for k, v in summary.items()], out / "weights_vs_truth")
    save_weight_matrices(
        {f"learned ({model_name})": learned_weights, "true / 9": TRUE_WEIGHTS / 9.0},
        EMOTIONS,
        MIDLEVEL_FEATURES,
        out / "global_weights.png",
        title="emotion points per mid-level rating point",
    )
    predictions = {
        key: np.stack([e[key] for e in explained]) for key in ("bottleneck_emotion", "blackbox_emotion", "true_emotion")
    }
    corr_rows = []
    for name, key in (("bottleneck", "bottleneck_emotion"), ("black box", "blackbox_emotion")):
        rated = correlation_table(predictions[key], ratings, EMOTIONS)
        noise_free = correlation_table(predictions[key], predictions["true_emotion"], EMOTIONS)
        corr_rows += [
            {
                "model": name,
                "emotion": emotion,
                "r (ratings)": round(rated[emotion], 3),
                "r (noise-free truth)": round(noise_free[emotion], 3),
            }
            for emotion in EMOTIONS
        ]
    write_table(corr_rows, out / "correlations_on_explained_clips")
    for e, clip in list(zip(explained, clips, strict=True))[:n_examples]:
        emotion = int(np.abs(e["truth"]).sum(axis=1).argmax())  # the emotion the clip's attributes move most
        name = clip.clip_id.replace("/", "_")
        save_grouped_bars(
            {
                "bottleneck: w (m - m_ref)": e["effects"][emotion],
                "black box: Kernel SHAP": e["shap_blackbox"][emotion],
                "truth (generator)": e["truth"][emotion],
            },
            MIDLEVEL_FEATURES,
            out / f"{name}_{EMOTIONS[emotion]}.png",
            title=f"{clip.clip_id}: {EMOTIONS[emotion]} (bottleneck {e['bottleneck_emotion'][emotion]:.2f}, "
            f"black box {e['blackbox_emotion'][emotion]:.2f}, truth {e['true_emotion'][emotion]:.2f})",
            ylabel=f"effect on {EMOTIONS[emotion]} (rating points)",
        )
        save_grouped_bars(
            {EMOTIONS[k]: e["weight_x_value"][k] for k in range(len(EMOTIONS))},
            MIDLEVEL_FEATURES,
            out / f"{name}_weight_x_value.png",
            title=f"{clip.clip_id}: the bottleneck's weight x value per emotion",
            ylabel="w x predicted rating",
        )
        save_wav(out / f"{name}_input.wav", e["wav"], clip.sample_rate)
        # the clip with its most effective concept set to the middle of its range, to listen to; a concept whose
        # realised value the middle does not change (its effect is leakage from other concepts) is passed over
        realised = e["realised"]
        for top in np.argsort(-np.abs(e["effects"][emotion])):
            changed = clip.target.copy()
            changed[top] = REFERENCE_VALUE
            wav, realised_changed = clip.render(changed)
            if realised_changed[top] != realised[top]:
                save_wav(out / f"{name}_without_{MIDLEVEL_FEATURES[top]}.wav", wav, clip.sample_rate)
                break
    return {"agreement": agreement, "weights": summary}
