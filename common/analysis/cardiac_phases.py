"""Which phase of the heart cycle a heart-sound classifier uses (Dissanayake et al. 2020's question).

Two views of one window, both on the front end's frames and the window's segmentation (per-frame states
1 S1, 2 systole, 3 S2, 4 diastole; 0 unknown, e.g. padding past a recording's end, is left out):

* ``importance_per_phase``: an attribution map (Kernel SHAP over time segments, occlusion, a control)
  summed over frequency, its positive part per frame, and each phase's share of it. Beside it,
  ``time_per_phase`` is each phase's share of the frames: what a map that ignores the sound would give.
* ``phase_occlusion``: the intervention that checks it. Every frame of one phase is set to the front end's
  silence at once and the drop in the explained class's log-odds is measured, one phase at a time.
  If a model uses the murmur, silencing its phase is what lowers the log-odds of abnormal.

``summarize_phases`` aggregates the windows per group (normal; abnormal with the murmur in systole or
diastole, for synthetic data whose ground truth says where it is) with 95 % bootstrap intervals, and for
abnormal windows with a known murmur how often the murmur's phase holds most of the importance.
"""

import numpy as np
import torch

from common.data.physionet2016 import STATES
from common.metrics.uncertainty import bootstrap_interval


def frame_importance(saliency):
    """(T, F) attribution -> (T,) its positive part per frame (evidence for the explained class)."""
    return saliency.clamp(min=0).sum(-1)


def importance_per_phase(saliency, frame_states):
    """(len(STATES),) each phase's share of the window's positive importance (NaN when it has none)."""
    importance = frame_importance(saliency).double().cpu()
    states = frame_states.cpu()
    per_phase = torch.stack([importance[states == k].sum() for k in range(1, len(STATES) + 1)])
    total = per_phase.sum()
    return (per_phase / total).numpy() if total > 0 else np.full(len(STATES), np.nan)


def time_per_phase(frame_states):
    """(len(STATES),) each phase's share of the window's known frames."""
    states = frame_states.cpu()
    counts = torch.stack([(states == k).sum() for k in range(1, len(STATES) + 1)]).double()
    return (counts / counts.sum().clamp(min=1)).numpy()


@torch.no_grad()
def phase_occlusion(score, X, frame_states, silence):
    """(len(STATES),) score(X) - score(X with every frame of the phase at ``silence``), per phase.

    ``score``: X (n, T, F) -> (n,) what is explained of the class (its log-odds: a probability near 1 hides
    how much a phase matters); X is one window (1, T, F); ``silence`` (1, 1, 1) the front end's; a phase
    absent from the window gives 0.
    """
    occluded = X.repeat(len(STATES), 1, 1)
    for k in range(len(STATES)):
        occluded[k, frame_states == k + 1] = silence.reshape(())
    base = score(X)[0]
    return (base - score(occluded)).cpu().numpy()


def group_of(entry):
    """The window's group: ``normal``, ``abnormal, murmur in <phase>`` (synthetic) or ``abnormal``."""
    if entry["class_string"] == "normal":
        return "normal"
    murmur = entry.get("murmur")
    return f"abnormal, murmur in {murmur}" if murmur else "abnormal"


PHASE_DROP, TIME_SHARE = "phase_drop", "time_share"  # the record keys of the intervention and the time shares


def summarize_phases(records, methods):
    """Rows of the per-phase table from ``records`` (one dict per window: ``group``, ``murmur``,
    ``time_share`` (each phase's share of the frames), ``phase_drop`` (``phase_occlusion``), and per method
    its phase shares under the method's name).

    For groups whose murmur is known, three numbers per method: how often the murmur's phase holds more than
    half of the importance (``murmur phase holds most``; the issue's criterion, but a long phase, diastole,
    wins it by its length alone, so read it beside ``share of time``), how often it has the largest share
    (``murmur phase is top``), and how often it has the largest share per unit of time (``top per time``:
    share / time share, which a map that ignores the sound cannot win).
    """
    rows = []
    groups = sorted({r["group"] for r in records}, key=lambda g: (g != "normal", g))
    for group in groups:
        members = [r for r in records if r["group"] == group]
        murmur = members[0]["murmur"]
        time_share = np.array([r[TIME_SHARE] for r in members], dtype=np.float64)
        for what, key in [
            *((m, m) for m in methods),
            ("phase occlusion (drop in log-odds)", PHASE_DROP),
            ("share of time", TIME_SHARE),
        ]:
            values = np.array([r[key] for r in members], dtype=np.float64)  # (n, 4)
            row = {"group": group, "windows": len(members), "importance": what}
            for k, state in enumerate(STATES):
                mean, lo, hi = bootstrap_interval(values[:, k])
                row[state] = f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"
            row["murmur phase holds most"] = row["murmur phase is top"] = row["top per time"] = ""
            if murmur and key != TIME_SHARE:
                k = STATES.index(murmur)
                finite = np.isfinite(values).all(axis=1)
                v, t = values[finite], time_share[finite]
                if len(v):
                    density = np.where(t > 0, v / np.where(t > 0, t, 1.0), -np.inf)
                    if key != PHASE_DROP:
                        row["murmur phase holds most"] = float(np.mean(v[:, k] > 0.5))
                    row["murmur phase is top"] = float(np.mean(v.argmax(axis=1) == k))
                    row["top per time"] = float(np.mean(density.argmax(axis=1) == k))
            rows.append(row)
    return rows
