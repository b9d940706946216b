"""The clips a leaderboard explains: which rows of the data set, their audio and their ground truth."""

from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import ConfigError


@dataclass
class Clips:
    """The clips a leaderboard explains, for one classifier's front-end.

    wavs (N, samples); ids (N,); labels: true class names; ground_truth (N, T, F)
    event masks on the classifier's grid and event_wavs (N, samples), or None;
    part_masks (N, P, T, F) each event's own mask (conjunction, order) and
    cue_masks (N, T, F) the shortcut cue's (clever_hans), its waveforms
    cue_wavs (N, samples) and the class it marks, cue_class, or None;
    followed_cue (N,) bool: where the classifier followed the cue (set by the run).
    """

    wavs: torch.Tensor
    ids: list
    labels: list
    ground_truth: torch.Tensor = None
    event_wavs: torch.Tensor = None
    part_masks: torch.Tensor = None
    cue_masks: torch.Tensor = None
    cue_wavs: torch.Tensor = None
    cue_class: str = None
    followed_cue: torch.Tensor = None

    def __len__(self):
        return len(self.ids)

    def batches(self, batch_size):
        """(wavs, ground truth or None, event wavs or None) per batch, in order (``evaluate_interpreter``'s input)."""
        for lo in range(0, len(self), batch_size):
            hi = min(lo + batch_size, len(self))
            yield (
                self.wavs[lo:hi],
                None if self.ground_truth is None else self.ground_truth[lo:hi],
                None if self.event_wavs is None else self.event_wavs[lo:hi],
            )


def prepare_data(data):
    """The data folder, written as synthetic scenes when ``synthetic`` options are given and it is empty."""
    from common.data.synthetic.scenes import make_synthetic_esc50

    folder = Path(data["folder"]).resolve()
    if not (folder / "meta" / "esc50.csv").is_file():
        if data.get("synthetic") is None:
            raise ConfigError(
                f"data.folder {folder} holds no meta/esc50.csv; point it at an ESC-50-layout folder "
                "(for ESC-10: python /path/to/shared/data/esc10/materialize.py DIR) or give data.synthetic options"
            )
        make_synthetic_esc50(folder, **data["synthetic"])
        print(f"synthetic data set: {folder}")
    return folder


def select_rows(folder, folds, n_clips):
    """``n_clips`` rows of the given folds, classes taken in turn (sorted by file name within a class)."""
    from common.data.esc50 import read_metadata

    rows = [r for r in read_metadata(folder / "meta" / "esc50.csv") if r["fold"] in set(folds)]
    by_class = {}
    for row in sorted(rows, key=lambda r: r["filename"]):
        by_class.setdefault(row["category"], []).append(row)
    chosen, queues = [], [list(v) for _, v in sorted(by_class.items())]
    while len(chosen) < n_clips and any(queues):
        for queue in queues:
            if queue and len(chosen) < n_clips:
                chosen.append(queue.pop(0))
    return chosen


def load_clips(folder, rows, sample_rate, length_s, front_end):
    """The rows' audio as Clips, with their ground truth on ``front_end``'s grid when every clip has one."""
    from common.data.audio import fix_length, load_audio
    from common.data.synthetic.ground_truth import batch_from_truths, load_truths, stacked

    wavs = torch.stack([load_audio(folder / "audio" / r["filename"], sample_rate, length_s) for r in rows])
    ids = [Path(r["filename"]).stem for r in rows]
    with torch.no_grad():
        shape = front_end(wavs[:1]).shape[1:]
    truths = load_truths(folder, ids, front_end, shape)
    masks, events = batch_from_truths(truths, n_samples=wavs.shape[-1])
    cues = stacked(truths, "cue")
    return Clips(
        wavs=wavs,
        ids=ids,
        labels=[r["category"] for r in rows],
        ground_truth=masks,
        event_wavs=events,
        part_masks=stacked(truths, "part_masks"),
        cue_masks=stacked(truths, "cue_mask"),
        cue_wavs=None if cues is None else fix_length(cues, wavs.shape[-1]),
        cue_class=next((t.cue_class for t in truths or [] if t.cue_class), None),
    )
