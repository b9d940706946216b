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
    ``event`` (samples,) the class event's waveform as mixed in, where the design keeps it (scenes), on
    the scale of the peak-normalised clip the classifiers load (so that clip - event is the rest);
    ``part_masks`` (P, T, F) each event's own mask (the designs after loud_evidence; P = 2 for conjunction, order);
    ``cue_mask`` (T, F) the shortcut cue's bins where the clip has one (clever_hans; all 0 without it),
    ``cue`` (samples,) its waveform as mixed in (0 without it) and ``cue_class`` the class it marks in training."""

    mask: torch.Tensor
    event: torch.Tensor = None
    part_masks: torch.Tensor = None
    cue_mask: torch.Tensor = None
    cue: torch.Tensor = None
    cue_class: str = None


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
    if not start_s and "mask_rule" in record and callable(getattr(front_end, "to_db", None)):
        return _scene_truth_on_grid(data_folder, clip_id, record, front_end, shape)
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
    return GroundTruth(mask, torch.from_numpy(record["event"]).float() * _peak_scale(data_folder, clip_id))


def _peak_scale(data_folder, clip_id):
    """1 / the clip's peak: what load_audio's peak normalisation multiplies it by (1 when unreadable)."""
    import soundfile as sf

    path = Path(data_folder) / "audio" / f"{clip_id}.wav"
    try:
        peak = float(np.abs(sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)).max())
    except (OSError, RuntimeError, ValueError):
        return 1.0
    return 1.0 / peak if peak > 0 else 1.0


def levels_on_grid(front_end, source, rest):
    """(source dB, rest dB), each (T, F) on ``front_end``'s grid (on the CPU); source and rest are (samples,)."""
    # on the front end's device (an interpreter Brain may have moved it to a GPU)
    device = next((t.device for t in (*front_end.parameters(), *front_end.buffers())), torch.device("cpu"))
    with torch.no_grad():
        parts = torch.stack([source, rest]).float().to(device)
        to_db = getattr(front_end, "parts_to_db", None)  # each part on the mixture's scale, where a front end says
        s_db, r_db = to_db(parts) if callable(to_db) else front_end.to_db(front_end(parts))
    return s_db.cpu(), r_db.cpu()


def evidence_on_grid(front_end, source, rest, ratio_db, floor_db):
    """(T, F) bool: bins of ``front_end``'s grid where ``source`` is above ``rest`` + ratio_db dB and within
    floor_db dB of its own peak (a scene's ``mask_rule``); source and rest are (samples,) waveforms."""
    s_db, r_db = levels_on_grid(front_end, source, rest)
    return (s_db > r_db + ratio_db) & (s_db > s_db.max() + floor_db)


def _scene_truth_on_grid(data_folder, clip_id, record, front_end, shape):
    """A scene's GroundTruth with its masks computed on the classifier's own grid by the design's rule:
    a mel band is evidence where the event dominates in that band, not where most of its STFT bins do
    (a tone fills one bin of a wide high band)."""
    import soundfile as sf

    path = Path(data_folder) / "audio" / f"{clip_id}.wav"
    mix = torch.from_numpy(np.asarray(sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)))
    event = torch.from_numpy(record["event"]).float()
    n = min(len(mix), len(event))
    mix, event = mix[:n], event[:n]
    scale = 1.0 / float(mix.abs().max()) if mix.abs().max() > 0 else 1.0  # what load_audio's peak norm does
    mix, event = mix * scale, event * scale
    ratio_db, floor_db = (float(v) for v in record["mask_rule"])
    mask = evidence_on_grid(front_end, event, mix - event, ratio_db, floor_db).float()
    if tuple(mask.shape) != tuple(shape):
        logger.warning(
            "Ground truth of %s computes to %s, not the classifier's %s: skipped", clip_id, mask.shape, shape
        )
        return None
    parts = None
    if "parts" in record:
        waves = torch.from_numpy(record["parts"]).float()[:, :n] * scale
        parts = torch.stack([evidence_on_grid(front_end, w, mix - w, ratio_db, floor_db) for w in waves]).float()
    truth = GroundTruth(mask, event, parts)
    if "cue" in record:
        tick = torch.from_numpy(record["cue"]).float()[:n] * scale
        on = evidence_on_grid(front_end, tick, mix - tick, ratio_db, floor_db).float() * float(tick.abs().max() > 0)
        truth.cue_mask, truth.cue = on, tick
        truth.cue_class = str(record["cue_class"]) if "cue_class" in record else None
    return truth


def load_truths(data_folder, clip_ids, front_end, shape, starts=None):
    """Every clip's GroundTruth on the grid, or None unless every clip has one."""
    starts = [0.0] * len(clip_ids) if starts is None else [float(s) for s in starts]
    truths = []
    for clip, start in zip(clip_ids, starts, strict=True):
        truth = load_ground_truth(data_folder, clip, front_end, shape, start)
        if truth is None:
            return None
        truths.append(truth)
    return truths


def stacked(truths, field):
    """torch.stack of one field of every GroundTruth, or None unless every clip has it."""
    values = [getattr(t, field) for t in truths or []]
    return torch.stack(values) if values and all(v is not None for v in values) else None


def load_batch_ground_truth(data_folder, clip_ids, front_end, shape, starts=None, n_samples=None):
    """(masks (N, T, F), event waveforms (N, samples) or None) of the clips, or (None, None) unless every
    clip has ground truth on the grid (localization needs all of them).

    ``starts``: each clip's segment start (s); ``n_samples``: the events are
    cut or zero-padded to this length (else they keep the stored one).
    """
    return batch_from_truths(load_truths(data_folder, clip_ids, front_end, shape, starts), n_samples)


def batch_from_truths(truths, n_samples=None):
    """(masks (N, T, F), event waveforms (N, samples) or None) of ``load_truths``' list; (None, None) for None."""
    if truths is None:
        return None, None
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
