"""The ground truth of every synthetic design, read and put on the classifier's grid in one place.

What each design writes (``data_folder/ground_truth/<clip_id>.*``):

* scenes (``make_synthetic_esc50``): ``<clip_id>.npz`` holding the class
  event's waveform (``event``) and its mask on the linear STFT grid
  (``mask``, time x STFT bins), which goes to a mel front-end's bands;
* music (``make_synthetic_gtzan``): ``<clip_id>.json`` holding every
  component's boxes; the mask is where the genre's discriminative
  component(s) sound in the segment that starts at ``start_s``;
* soundscapes (``common.data.birdset.write_birdset_fixture``): ``ground_truth_<split>.json``
  beside each BirdSet split, every segment's events
  (``read_soundscape_events``), put on a mel grid by
  ``soundscapes.event_boxes_mask``.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.data.synthetic.music import component_masks

logger = logging.getLogger(__name__)


@dataclass
class GroundTruth:
    """A clip's ground truth on the classifier's grid: ``mask`` (T, F) float, 1 on the class's evidence;
    ``event`` (samples,) the class event's waveform as mixed in, where the design keeps it (scenes)."""

    mask: torch.Tensor
    event: torch.Tensor = None


def read_ground_truth(data_folder, clip_id):
    """The record a design stored for a clip: the scene's npz arrays or the music clip's json dict; None if none."""
    folder = Path(data_folder) / "ground_truth"
    if (folder / f"{clip_id}.npz").is_file():
        with np.load(folder / f"{clip_id}.npz") as z:
            return {k: z[k] for k in z.files}
    if (folder / f"{clip_id}.json").is_file():
        with open(folder / f"{clip_id}.json", encoding="utf-8") as f:
            return json.load(f)
    return None


def read_soundscape_events(path):
    """A synthetic BirdSet split's per-segment events (``ground_truth_<split>.json``), or None when absent (real data)."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def mask_on_grid(mask, front_end, shape):
    """A (T, F') ground-truth mask -> the classifier's (T, F) grid, or None when it cannot be mapped.

    A mask on the linear STFT grid goes to a mel front-end's bands (a band is
    in the event when at least half of its filter-weighted bins are), through
    the FrontEnd interface (``n_fft``, ``stft_mask_to_grid``). ``front_end``
    may be no FrontEnd (``nn.Identity`` over precomputed spectrograms): then
    only a mask already on the grid maps.
    """
    n_fft = getattr(front_end, "n_fft", None)  # duck-typed: the data layer does not import common.features
    if n_fft is not None and mask.shape[0] == shape[0] and mask.shape[1] == n_fft // 2 + 1 != shape[1]:
        mask = (front_end.stft_mask_to_grid(mask[None].float())[0] >= 0.5).float()
    return mask if tuple(mask.shape) == tuple(shape) else None


def load_ground_truth(data_folder, clip_id, front_end, shape, start_s=0.0):
    """A clip's GroundTruth on the grid of ``front_end`` (``shape``: its (T, F) output), whatever design wrote it.

    ``start_s``: where the segment the grid covers starts in the clip. None
    when the clip has no ground truth, or (with a warning) when it cannot be
    put on this grid.
    """
    record = read_ground_truth(data_folder, clip_id)
    if record is None:
        return None
    if "components" in record:  # music: boxes, cut to the segment
        masks = component_masks(record, front_end, shape[0], start_s=start_s)
        own = [masks[c["name"]] for c in record["components"] if c["discriminative"]]  # a concept class: three
        return GroundTruth(torch.stack(own).any(dim=0).float())
    mask = None if start_s else mask_on_grid(torch.from_numpy(record["mask"]).float(), front_end, shape)
    if mask is None:  # a scene's mask is of the whole clip on one STFT grid
        logger.warning(
            "Ground truth of %s is on a %s grid from 0 s, not the classifier's %s from %s s: localization skipped",
            clip_id,
            record["mask"].shape,
            tuple(shape),
            start_s,
        )
        return None
    return GroundTruth(mask, torch.from_numpy(record["event"]).float())


def load_batch_ground_truth(data_folder, clip_ids, front_end, shape, starts=None, n_samples=None):
    """(masks (N, T, F), event waveforms (N, samples) or None) of the clips, or (None, None) unless every
    clip has ground truth on the grid (localization needs all of them).

    ``starts``: each clip's segment start (s); ``n_samples``: the events are
    cut or zero-padded to this length (else they keep the stored one).
    """
    starts = [0.0] * len(clip_ids) if starts is None else [float(s) for s in starts]
    truths = []
    for clip, start in zip(clip_ids, starts, strict=True):
        truth = load_ground_truth(data_folder, clip, front_end, shape, start)
        if truth is None:
            return None, None
        truths.append(truth)
    masks = torch.stack([t.mask for t in truths])
    if any(t.event is None for t in truths):
        return masks, None
    if n_samples is None:
        return masks, torch.stack([t.event for t in truths])
    events = torch.zeros(len(truths), n_samples)
    for k, truth in enumerate(truths):
        event = truth.event[:n_samples]
        events[k, : len(event)] = event
    return masks, events
