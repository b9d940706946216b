"""Synthetic scenes: layout, determinism, and ground truth that matches the audio and the front-end grid."""

import numpy as np
import soundfile as sf
import torch

from common.data.audio import load_audio
from common.data.esc50 import read_metadata, verify_esc50
from common.data.synthetic.scenes import load_ground_truth, make_synthetic_esc50
from common.features import Log1pSpectrogram


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
        gt = load_ground_truth(synthetic_data, stem)
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
        gt = load_ground_truth(synthetic_data, row["filename"][:-4])
        profiles.setdefault(row["target"], []).append(torch.from_numpy(gt["mask"]).float().mean(0))
    within = torch.stack([(p[0] - p[1]).abs().sum() for p in profiles.values()]).mean()
    between = (torch.stack(profiles[0]).mean(0) - torch.stack(profiles[1]).mean(0)).abs().sum()
    assert between > within
