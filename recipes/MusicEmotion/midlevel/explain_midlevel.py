#!/usr/bin/env python3
"""Explain a trained mid-level bottleneck and, beside it, the black box, over the same seven concepts.

    python explain_midlevel.py hparams/joint.yaml --midlevel_folder MID --soundtracks_folder ST \
        --output_folder RUN --blackbox_source BLACKBOX_RUN/save

RUN is the bottleneck's training run (train.py with the same hparams file; its best checkpoint by validation
emotion correlation is explained). On the test emotion clips: the bottleneck's effects w_ek m_k (bars, and
the global weights), concept-level Kernel SHAP of the black box and of the bottleneck (the generator re-renders
a clip with concepts set to the reference value), all judged against the generator's truth
(``common/analysis/midlevel_explanations.py``). Writes RUN/explanations/: agreement.md, weights_vs_truth.md,
weights_per_emotion.md, correlations_on_explained_clips.md, global_weights.png, and per example clip its bars
and wavs (the clip, and the clip with its most effective concept set to the middle of its range).
The black box's run is rebuilt from its hyperparams.yaml, which runs code: only explain runs you trust.
"""

import json
import logging
import sys
from pathlib import Path

import numpy as np

from common.analysis.midlevel_explanations import SyntheticClip, explain_clip, write_midlevel_report
from common.data import prepare_from_hparams
from common.data.synthetic.midlevel_music import REFERENCE_VALUE
from common.errors import CheckpointError, DataNotFoundError
from common.io import atomic_write_json
from common.recipe import load_hparams, setup_experiment

logger = logging.getLogger(__name__)
BEST_KEY = "emotion_r"


def load_best(checkpointer, model, what, command):
    """``model`` in eval mode from the checkpointer's best checkpoint by validation emotion correlation."""
    ckpt = checkpointer.find_checkpoint(max_key=BEST_KEY)
    if ckpt is None:
        raise CheckpointError(
            f"No checkpoint of the {what} in {checkpointer.checkpoints_dir}. Train it first: {command}"
        )
    checkpointer.load_checkpoint(ckpt)
    return model.eval()


def load_blackbox(source):
    """The black box of a train.py hparams/blackbox.yaml run (its save folder), from the run's hyperparams.yaml."""
    saved = Path(source).parent / "hyperparams.yaml"
    if not saved.is_file():
        raise CheckpointError(
            f"{saved} not found: --blackbox_source must be the save folder of a run of "
            "train.py hparams/blackbox.yaml (RUN/save, with RUN/hyperparams.yaml beside it)."
        )
    hparams = load_hparams(saved)
    if hparams["model"].bottleneck:
        raise CheckpointError(f"{saved} is a bottleneck model, not the black box (mode: {hparams['mode']}).")
    return load_best(
        hparams["checkpointer"], hparams["model"], "black box", "python train.py hparams/blackbox.yaml ..."
    )


def synthetic_clips(manifest, truth_path, n):
    """The first ``n`` emotion-rated clips of the manifest as re-renderable clips, and their ratings."""
    entries = json.loads(Path(manifest).read_text())
    truth = json.loads(Path(truth_path).read_text())
    clips, ratings = [], []
    for clip_id, entry in entries.items():
        if entry["dataset"] != "soundtracks" or clip_id not in truth["clips"]:
            continue
        t = truth["clips"][clip_id]
        clips.append(SyntheticClip(clip_id, t["seed"], t["target"], truth["sample_rate"], truth["duration_s"]))
        ratings.append(entry["emotion"])
        if len(clips) == n:
            break
    return clips, np.array(ratings)


def main(argv=None):
    hparams, run_opts, _, _ = setup_experiment(argv)
    prepare_from_hparams(hparams)
    if not hparams["model"].bottleneck:
        raise CheckpointError(
            "explain_midlevel.py explains a bottleneck model: use hparams/joint.yaml or separate.yaml"
        )
    bottleneck = load_best(
        hparams["checkpointer"], hparams["model"], "bottleneck", "python train.py hparams/joint.yaml ..."
    )
    if not hparams.get("blackbox_source"):
        raise CheckpointError("Set --blackbox_source to the save folder of a train.py hparams/blackbox.yaml run.")
    blackbox = load_blackbox(hparams["blackbox_source"])
    truth_path = Path(hparams["ground_truth"] or Path(hparams["soundtracks_folder"]).parent / "ground_truth.json")
    if not truth_path.is_file():
        raise DataNotFoundError(
            f"No ground truth at {truth_path}: the concept-level comparison re-renders synthetic clips with "
            "concepts changed, so it runs on tools/make_midlevel_music.py's data (pass --ground_truth FILE)."
        )
    clips, ratings = synthetic_clips(hparams["test_annotation"], truth_path, hparams["n_explained"])
    explained = []
    for i, clip in enumerate(clips):
        explained.append(
            explain_clip(
                clip,
                bottleneck,
                blackbox,
                REFERENCE_VALUE,
                hparams["shap_samples"],
                hparams["explain_batch_size"],
                seed=i,
            )
        )
    weights, _ = bottleneck.rating_weights()
    out = Path(hparams["output_folder"]) / "explanations"
    summary = write_midlevel_report(
        explained, clips, ratings, weights.detach().cpu().numpy(), out, hparams["n_examples"], hparams["mode"]
    )
    per_clip = {
        c.clip_id: {k: np.asarray(v).round(4).tolist() for k, v in e.items() if k != "wav"}
        for c, e in zip(clips, explained, strict=True)
    }
    atomic_write_json(out / "explanations.json", per_clip)
    atomic_write_json(out / "summary.json", summary)
    logger.info("Explanations of %d clips in %s:\n%s", len(clips), out, (out / "agreement.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
