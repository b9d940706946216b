"""Synthetic bird soundscapes: determinism, structure, calls in their bands, labels and grid boxes that match."""

import numpy as np
import pytest
import torchaudio

from common.data.synthetic.signals import stft_magnitude
from common.data.synthetic.soundscapes import (
    CALL_TYPES,
    SpeciesBank,
    cut_segments,
    event_boxes_mask,
    event_boxes_on_grid,
    hz_to_mel_bin,
    segment_labels,
)

SR, HOP, N_FFT, N_MELS = 32000, 256, 2048, 256


@pytest.fixture(scope="module")
def bank():
    return SpeciesBank(16, seed=0)


MEL_FB = (
    torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SR / 2, N_MELS, SR, mel_scale="htk").double().numpy()
)


def stft_power(wav):
    """(frames, freqs) power as torchaudio's Spectrogram makes it: centred Hann frames, reflect padding."""
    x = np.pad(np.asarray(wav, dtype=np.float64), N_FFT // 2, mode="reflect")
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(1 + (len(x) - N_FFT) // HOP)[:, None]
    return np.abs(np.fft.rfft(x[idx] * np.hanning(N_FFT + 1)[:-1], axis=1)) ** 2


def mel_power(wav):
    """(frames, mels) power on the BirdSet front end's grid (HTK mel 0..16 kHz); numpy, as torch threads are slow here."""
    return stft_power(wav) @ MEL_FB


def check_wav(wav, n):
    assert wav.shape == (n,) and wav.dtype == np.float32
    assert np.isfinite(wav).all() and 0 < np.abs(wav).max() <= 1.0


def test_deterministic_by_seed():
    a, b, c = SpeciesBank(8, seed=3), SpeciesBank(8, seed=3), SpeciesBank(8, seed=4)
    assert a.species == b.species and a.species != c.species
    assert [s.call_type for s in a.species] == [s.call_type for s in c.species]  # the seed varies parameters only
    sa, sb, sc = a.soundscape(rng=7), b.soundscape(rng=7), a.soundscape(rng=8)
    assert np.array_equal(sa["wav"], sb["wav"]) and sa["events"] == sb["events"]
    assert not np.array_equal(sa["wav"], sc["wav"])
    # without an rng, a bank's own generator makes the sequence deterministic by its seed
    assert np.array_equal(a.focal_recording(1, 3.0)["wav"], b.focal_recording(1, 3.0)["wav"])
    assert np.array_equal(a.long_soundscape(10.0)["wav"], b.long_soundscape(10.0)["wav"])
    # species i does not depend on the bank's size
    assert SpeciesBank(5, seed=3).species == a.species[:5]


def test_species_names_types_and_distinct_bands():
    bank = SpeciesBank(60, seed=0)
    assert bank.names[:3] == ["synsp00", "synsp01", "synsp02"] and len(set(bank.names)) == 60 == len(bank)
    assert {s.call_type for s in bank.species} == set(CALL_TYPES) and len(CALL_TYPES) >= 8
    pairs = {(s.call_type, round(s.f_lo), round(s.f_hi)) for s in bank.species}
    assert len(pairs) == 60
    for s in bank.species:
        assert 200 < s.f_lo < s.f_hi < SR / 2
        assert 0.3 <= s.call_s[0] <= s.call_s[1] <= 1.5
    for t in CALL_TYPES:  # species sharing a call type are a clear factor apart in band
        centres = sorted(np.sqrt(s.f_lo * s.f_hi) for s in bank.species if s.call_type == t)
        assert min(np.diff(np.log(centres))) > np.log(1.05)


def test_shapes_durations_and_dtypes(bank):
    rng = np.random.default_rng(0)
    for i in range(len(bank)):
        wav, f_lo, f_hi = bank.render_call(i, rng)
        assert wav.dtype == np.float32 and np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
        assert 0.3 * SR - 1 <= len(wav) <= 1.5 * SR + 1
        assert bank.species[i].f_lo <= f_lo < f_hi <= bank.species[i].f_hi
    scene = bank.soundscape(rng=rng)
    check_wav(scene["wav"], 5 * SR)
    focal = bank.focal_recording(2, 8.0, rng)
    check_wav(focal["wav"], 8 * SR)
    assert focal["species"] == 2 and len(focal["events"]) >= 2
    for (t0, t1), nxt in zip(focal["events"], focal["events"][1:] + [(8.0, 8.0)], strict=True):
        assert 0 <= t0 < t1 <= nxt[0] <= 8.0  # in order, not overlapping
    long = bank.long_soundscape(30.0, rng)
    check_wav(long["wav"], 30 * SR)
    assert all(0 <= e["t0"] < e["t1"] <= 30.0 for e in long["events"])


def test_labels_are_the_species_of_the_events(bank):
    rng = np.random.default_rng(1)
    n_multi = 0
    for _ in range(15):
        scene = bank.soundscape(5.0, rng, max_species=3, p_empty=0.0)
        assert scene["labels"] == sorted({e["species"] for e in scene["events"]})
        assert 1 <= len(scene["labels"]) <= 3
        for e in scene["events"]:
            assert 0 <= e["t0"] < e["t1"] <= 5.0 and e["f_lo"] < e["f_hi"]
        n_multi += len(scene["labels"]) > 1
        for sp in scene["labels"]:  # a species never overlaps itself
            spans = sorted((e["t0"], e["t1"]) for e in scene["events"] if e["species"] == sp)
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert n_multi >= 5


def test_p_empty_one_gives_no_calls(bank):
    for seed in range(3):
        scene = bank.soundscape(rng=seed, p_empty=1.0)
        assert scene["labels"] == [] and scene["events"] == []
        check_wav(scene["wav"], 5 * SR)


def test_energy_is_in_each_species_band(bank):
    rng = np.random.default_rng(2)
    freqs = np.fft.rfftfreq(N_FFT, 1 / SR)
    for i in range(len(bank)):  # every call type, each in two bands
        for _ in range(2):
            wav, f_lo, f_hi = bank.render_call(i, rng)
            power = stft_magnitude(wav.astype(np.float64), N_FFT, HOP, N_FFT) ** 2
            inside = (freqs >= f_lo) & (freqs <= f_hi)
            ratio = power[:, inside].sum() / power[:, ~inside].sum()
            assert ratio > 100, (bank.species[i].call_type, ratio)


def test_snr_and_boxes_match_the_mixture(bank):
    """At 20 dB in-band SNR each call's box is far louder than the same mel bands when nobody calls."""
    rng = np.random.default_rng(3)
    for _ in range(3):
        scene = bank.soundscape(rng=rng, p_empty=0.0, max_species=2, snr_db=20.0)
        power = mel_power(scene["wav"])
        n_frames = power.shape[0]
        assert n_frames == 5 * SR // HOP + 1
        busy = event_boxes_mask(scene["events"], n_frames, N_MELS)
        for _, f0, f1, m0, m1 in event_boxes_on_grid(scene["events"], n_frames, N_MELS):
            quiet = ~busy[:, m0:m1].any(axis=1)
            if quiet.sum() < 20:
                continue
            assert power[f0:f1, m0:m1].mean() > 10 * power[quiet, m0:m1].mean()


def test_segment_labels_and_long_soundscape(bank):
    events = [
        {"species": 1, "t0": 4.0, "t1": 6.0, "f_lo": 1e3, "f_hi": 2e3},
        {"species": 2, "t0": 4.95, "t1": 5.5, "f_lo": 1e3, "f_hi": 2e3},
        {"species": 3, "t0": 9.0, "t1": 9.05, "f_lo": 1e3, "f_hi": 2e3},
    ]
    assert segment_labels(events, 0.0, 5.0) == [1]  # species 2 overlaps by only 0.05 s
    assert segment_labels(events, 5.0, 10.0) == [1, 2, 3]  # a call shorter than min_overlap_s counts whole
    assert segment_labels(events, 10.0, 15.0) == []
    assert segment_labels(events, 0.0, 5.0, min_overlap_s=0.01) == [1, 2]

    scene = bank.long_soundscape(30.0, np.random.default_rng(4), max_species=4)
    segments = cut_segments(scene, 5.0, SR)
    assert len(segments) == 6
    union = set()
    for seg in segments:
        check_wav(seg["wav"], 5 * SR)
        assert seg["labels"] == segment_labels(scene["events"], seg["start_s"], seg["start_s"] + 5.0)
        assert seg["labels"] == sorted({e["species"] for e in seg["events"]})
        assert all(0 <= e["t0"] < e["t1"] <= 5.0 for e in seg["events"])
        union |= set(seg["labels"])
    assert union == set(scene["labels"]) and scene["labels"]  # every call is >= 0.3 s, so each is counted somewhere
    assert any(seg["labels"] for seg in segments) and len(scene["events"]) >= 3


def test_mel_bins_follow_torchaudio_htk():
    fb = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SR / 2, N_MELS, SR, mel_scale="htk")
    freqs = np.linspace(0, SR / 2, N_FFT // 2 + 1)
    peaks = freqs[fb.argmax(dim=0).numpy()]  # the linear bin where each filter peaks
    pos = hz_to_mel_bin(peaks, N_MELS, SR)
    assert np.abs(pos - np.arange(N_MELS)).max() < 1.0
    assert hz_to_mel_bin(0.0, N_MELS, SR) == pytest.approx(-1.0) and hz_to_mel_bin(SR / 2, N_MELS, SR) == pytest.approx(
        N_MELS
    )


def test_event_boxes_and_mask_on_the_grid(bank):
    scene = bank.soundscape(rng=5, p_empty=0.0, max_species=3)
    n_frames = 5 * SR // HOP + 1
    boxes = event_boxes_on_grid(scene["events"], n_frames, N_MELS)
    assert len(boxes) == len(scene["events"])
    mask = event_boxes_mask(scene["events"], n_frames, N_MELS)
    assert mask.shape == (n_frames, N_MELS) and mask.dtype == bool
    for sp, f0, f1, m0, m1 in boxes:
        assert 0 <= f0 < f1 <= n_frames and 0 <= m0 < m1 <= N_MELS
        assert mask[f0:f1, m0:m1].all()
        own = event_boxes_mask(scene["events"], n_frames, N_MELS, species=sp)
        assert own[f0:f1, m0:m1].all() and not (own & ~mask).any()
    assert mask.sum() <= sum((f1 - f0) * (m1 - m0) for _, f0, f1, m0, m1 in boxes)
    # an offset shifts the boxes; events outside the window give none
    e = {"species": 0, "t0": 6.0, "t1": 7.0, "f_lo": 2000.0, "f_hi": 3000.0}
    assert event_boxes_on_grid([e], n_frames, N_MELS) == []
    ((_, f0, f1, _, _),) = event_boxes_on_grid([e], n_frames, N_MELS, offset_s=5.0)
    assert (f0, f1) == (round(1.0 * SR / HOP), round(2.0 * SR / HOP) + 1)

    # clean calls at known places: nearly all their mel energy falls inside the mask
    rng = np.random.default_rng(6)
    wav, events = np.zeros(5 * SR, dtype=np.float32), []
    for i, t in zip((0, 3, 5, 6), (0.2, 1.0, 2.4, 3.5), strict=True):
        call, f_lo, f_hi = bank.render_call(i, rng)
        start = int(t * SR)
        wav[start : start + len(call)] += call
        events.append({"species": i, "t0": t, "t1": (start + len(call)) / SR, "f_lo": f_lo, "f_hi": f_hi})
    power = mel_power(wav)
    inside = power[event_boxes_mask(events, n_frames, N_MELS)].sum() / power.sum()
    assert inside > 0.97


def _mean_log_mel(wav):
    spec = stft_power(wav).mean(axis=0) @ MEL_FB  # the mean of the mel spectrogram over time
    return np.log(spec + 1e-10 * spec.max())


@pytest.mark.parametrize("species", [range(6), range(6, 12)])
def test_species_are_distinguishable(bank, species):
    """Nearest centroid of mean log-mel spectra, 10 calls per species, on fresh calls."""
    rng = np.random.default_rng(7)
    centroids = np.stack([np.mean([_mean_log_mel(bank.render_call(i, rng)[0]) for _ in range(10)], 0) for i in species])
    correct = total = 0
    for k, i in enumerate(species):
        for _ in range(10):
            feat = _mean_log_mel(bank.render_call(i, rng)[0])
            correct += int(np.argmin(((centroids - feat) ** 2).sum(axis=1)) == k)
            total += 1
    assert correct / total > 0.9
