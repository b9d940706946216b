"""Synthetic designs: layout, determinism, output unchanged by seed, and ground truth that matches the audio and
the front-end grid, read by one loader whatever the design."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from common.data.audio import load_audio
from common.data.esc50 import read_metadata, verify_esc50
from common.data.synthetic.ground_truth import (
    load_batch_ground_truth,
    load_ground_truth,
    read_ground_truth,
    read_soundscape_events,
)
from common.data.synthetic.music import make_synthetic_gtzan
from common.data.synthetic.scenes import make_synthetic_esc50
from common.data.synthetic.soundscapes import SpeciesBank, cut_segments, event_boxes_mask
from common.features import Log1pSpectrogram, MelDbSpectrogram


def test_layout_is_esc50_and_verifies(synthetic_data):
    rows = verify_esc50(synthetic_data)
    assert len(rows) == 15 and {r["fold"] for r in rows} == {1, 2, 3, 4, 5}
    assert {r["target"] for r in rows} == {0, 1, 2}
    for fold in range(1, 6):  # every fold holds every class once
        assert sorted(r["target"] for r in rows if r["fold"] == fold) == [0, 1, 2]


def test_deterministic_by_seed(tmp_path):
    a = make_synthetic_esc50(tmp_path / "a", n_classes=2, clips_per_class=2, duration_s=0.5, event_s=(0.2, 0.3), seed=3)
    b = make_synthetic_esc50(tmp_path / "b", n_classes=2, clips_per_class=2, duration_s=0.5, event_s=(0.2, 0.3), seed=3)
    make_synthetic_esc50(tmp_path / "c", n_classes=2, clips_per_class=2, duration_s=0.5, event_s=(0.2, 0.3), seed=4)
    assert a == b
    wav = a[0]["filename"]

    def read(folder):  # compare samples: float WAV headers carry a timestamp
        return sf.read(tmp_path / folder / "audio" / wav)[0]

    assert np.array_equal(read("a"), read("b")) and not np.array_equal(read("a"), read("c"))


def test_ground_truth_matches_audio_and_front_end_grid(synthetic_data):
    front_end = Log1pSpectrogram()
    for row in read_metadata(synthetic_data / "meta" / "esc50.csv"):
        stem = row["filename"][:-4]
        gt = read_ground_truth(synthetic_data, stem)
        mix, sr = sf.read(synthetic_data / "audio" / row["filename"], dtype="float32")
        assert sr == int(gt["sample_rate"]) and gt["event"].shape == mix.shape
        X = front_end(load_audio(synthetic_data / "audio" / row["filename"], 16000)[None])
        assert gt["mask"].shape == tuple(X.shape[1:])  # (time, freq) of the classifier's grid
        assert 0 < gt["mask"].mean() < 0.5  # the event is a localised part of the plane
        # the mask lies within the event's time span (one frame of slack for the window)
        frames = np.nonzero(gt["mask"].any(axis=1))[0]
        hop_s = int(gt["hop"]) / sr
        assert frames.min() * hop_s >= float(gt["onset_s"]) - 2 * hop_s
        assert frames.max() * hop_s <= float(gt["offset_s"]) + 2 * hop_s
        # the event dominates the mixture inside its mask
        ev_energy = np.sum(gt["event"] ** 2)
        assert ev_energy > 0.05 * np.sum(mix**2)


def test_classes_differ_where_the_masks_say(synthetic_data):
    """Mean masked log-spectra of two classes differ more than two clips of one class."""
    rows = read_metadata(synthetic_data / "meta" / "esc50.csv")
    profiles = {}
    for row in rows:
        gt = read_ground_truth(synthetic_data, row["filename"][:-4])
        profiles.setdefault(row["target"], []).append(torch.from_numpy(gt["mask"]).float().mean(0))
    within = torch.stack([(p[0] - p[1]).abs().sum() for p in profiles.values()]).mean()
    between = (torch.stack(profiles[0]).mean(0) - torch.stack(profiles[1]).mean(0)).abs().sum()
    assert between > within


# ------------------------------------------------------------ output unchanged by seed
def _fingerprint(*parts):
    """(sum, sum of squares, position-weighted sum) of the parts laid end to end: any change of a draw or a
    formula moves them far more than the rounding differences between machines (rtol 1e-7 below)."""
    x = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])
    return [float(x.sum()), float((x**2).sum()), float((x * np.linspace(-1.0, 1.0, len(x))).sum())]


def design_fingerprints():
    """{design: fingerprints of its audio, then of its ground truth} for fixed seeds."""
    from common.data.synthetic.music import MIXTURES, render_clip

    with tempfile.TemporaryDirectory() as folder:
        rows = make_synthetic_esc50(folder, n_classes=10, clips_per_class=1, duration_s=1.0, seed=3)
        wavs = [sf.read(Path(folder) / "audio" / r["filename"])[0] for r in rows]
        truths = [read_ground_truth(folder, r["filename"][:-4]) for r in rows]
        scenes = _fingerprint(*wavs) + _fingerprint(*[t["event"] for t in truths], *[t["mask"] for t in truths])
    clips = [render_clip(g, np.random.default_rng([7, len(g)]), duration_s=2.0) for g in MIXTURES]
    boxes = [b for _, truth in clips for c in truth["components"] for b in c["boxes"]]
    music = _fingerprint(*[wav for wav, _ in clips]) + _fingerprint(boxes)
    bank = SpeciesBank(9, seed=5)
    calls = [bank.render_call(i, rng=i)[0] for i in range(len(bank))]
    focal = bank.focal_recording(2, 3.0, rng=1)
    scene = bank.soundscape(5.0, rng=4, p_empty=0.0)
    events = [[e["t0"], e["t1"], e["f_lo"], e["f_hi"]] for e in scene["events"]]
    soundscapes = _fingerprint(*calls, focal["wav"], scene["wav"]) + _fingerprint(events, focal["events"])
    return {"scenes": scenes, "music": music, "soundscapes": soundscapes}


# What design_fingerprints gave before the designs shared common.data.synthetic.signals (issue 17, commit
# 03cd05c); the full outputs were also compared sample for sample then and were bit-identical.
BEFORE_SHARED_SIGNALS = {
    "scenes": [-152.44830863926836, 9477.465963812192, -98.45541477694907, 66339.62441938074, 73811.88641315221,
               34764.52362083125],
    "music": [716.1311679937116, 40009.66461295527, 214.98320458755444, 1692400.3971000002, 13972168434.83471,
              125767.73508391518],
    "soundscapes": [-0.005128355998976986, 72672.46172797291, 6.063892156238163, 39381.31058649023,
                    140947731.41976157, -3640.8382023780946],
}  # fmt: skip


def test_every_design_gives_the_same_output_for_a_seed_as_before():
    now = design_fingerprints()
    for design, before in BEFORE_SHARED_SIGNALS.items():
        assert now[design] == pytest.approx(before, rel=1e-7, abs=1e-9), design


# ------------------------------------------------------------ one ground-truth loader
def _mask_fingerprint(x):
    x = torch.as_tensor(x).double().flatten()
    return [float(x.sum()), float((x * torch.linspace(-1, 1, len(x), dtype=torch.float64)).sum())]


def test_scene_ground_truth_loads_onto_linear_and_mel_grids_as_before(tmp_path):
    """Expected values: the masks the interpreter Brain and the leaderboard built before the one loader."""
    rows = make_synthetic_esc50(tmp_path, n_classes=3, clips_per_class=2, duration_s=2.0, seed=1)
    ids = [r["filename"][:-4] for r in rows]
    wavs = torch.stack([load_audio(tmp_path / "audio" / r["filename"], 16000) for r in rows])
    before = {"mel": ([173, 80], [7290.0, 857.8504317248521]), "linear": ([173, 513], [37099.0, 14217.839872073437])}
    for name, front_end in (("mel", Log1pSpectrogram(n_mels=80)), ("linear", Log1pSpectrogram())):
        shape = front_end(wavs[:1]).shape[1:]
        masks, events = load_batch_ground_truth(tmp_path, ids, front_end, shape)
        assert list(masks.shape[1:]) == before[name][0] and masks.shape[0] == len(ids)
        assert _mask_fingerprint(masks) == pytest.approx(before[name][1], rel=1e-9)
        # the events as stored, now on the scale of the loaded (peak-normalised) clip: loud_evidence writes its
        # mixtures with peak 0.9
        assert _mask_fingerprint(events) == pytest.approx([-52.8274531155767 / 0.9, -24.63043936577121 / 0.9], rel=1e-5)
        assert events.dtype == torch.float32 and events.shape == wavs.shape
    front_end = Log1pSpectrogram()
    shape = front_end(wavs[:1]).shape[1:]
    _, cut = load_batch_ground_truth(tmp_path, ids[:2], front_end, shape, n_samples=20000)
    assert cut.shape == (2, 20000) and torch.equal(cut[:, :20000], events[:2, :20000])
    _, padded = load_batch_ground_truth(tmp_path, ids[:2], front_end, shape, n_samples=40000)
    assert torch.equal(padded[:, :32000], events[:2]) and not padded[:, 32000:].any()
    # a grid the STFT mask does not map onto, a segment of the clip, a clip without ground truth: none
    assert load_ground_truth(tmp_path, ids[0], MelDbSpectrogram(), (251, 256)) is None
    assert load_ground_truth(tmp_path, ids[0], front_end, shape, start_s=0.5) is None
    assert load_ground_truth(tmp_path, ids[0], torch.nn.Identity(), (173, 80)) is None  # precomputed spectrograms
    assert torch.equal(load_ground_truth(tmp_path, ids[0], torch.nn.Identity(), shape).mask, masks[0])
    assert load_batch_ground_truth(tmp_path, [ids[0], "no-such-clip"], front_end, shape) == (None, None)


def test_music_ground_truth_loads_the_discriminative_sources_of_each_segment_as_before(tmp_path):
    make_synthetic_gtzan(tmp_path, n_per_genre=2, duration_s=4.0, seed=0, genres=("metal", "trio_a"))
    front_end = MelDbSpectrogram(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=128, mean=-10.0, std=15.0)
    clips, starts = ["metal.00000", "metal.00001", "trio_a.00000", "trio_a.00001"], [0.0, 1.0, 0.5, 1.5]
    masks, events = load_batch_ground_truth(tmp_path, clips, front_end, (65, 128), starts=torch.tensor(starts))
    assert masks.shape == (4, 65, 128) and masks.dtype == torch.float32 and events is None
    assert _mask_fingerprint(masks) == pytest.approx([699.0, -197.2628083776556], rel=1e-9)
    # the segment's own part of the clip: a later start moves the mask
    later = load_ground_truth(tmp_path, "metal.00001", front_end, (65, 128), start_s=2.0).mask
    assert not torch.equal(later, masks[1])


def test_soundscape_events_load_onto_the_mel_grid_as_before(tmp_path):
    """The per-species masks prototype localization built before (inline, from event_boxes_on_grid)."""
    bank = SpeciesBank(4, seed=0)
    segments = cut_segments(bank.long_soundscape(20.0, np.random.default_rng(0)), 5.0, 32000)
    events = {str(k): seg["events"] for k, seg in enumerate(segments)}
    (tmp_path / "ground_truth_test_5s.json").write_text(json.dumps(events), encoding="utf-8")
    truth = read_soundscape_events(tmp_path / "ground_truth_test_5s.json")
    assert read_soundscape_events(tmp_path / "ground_truth_valid.json") is None
    masks = [
        event_boxes_mask(truth[str(k)], 626, 128, species=sp, sample_rate=32000, hop_length=256, n_fft=2048)
        for k in range(len(segments))
        for sp in range(4)
    ]
    assert _mask_fingerprint(np.stack(masks)) == pytest.approx([18956.0, 572.601959210544], rel=1e-9)
