"""Bad data found by the 65-probe sweep (issue 20): each refused before anything is written, naming the file,
the row or the split and the fix (or, for what is usable, a warning that says what was done)."""

import csv
import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from common.data.datasets import build_label_encoder, classification_datasets
from common.data.esc50 import VERIFIED_MARKER, ensure_esc50, is_verified, mark_verified, prepare_esc50, read_metadata
from common.errors import AudioError, DataError
from common.io import atomic_write_json, atomic_write_text
from tests.conftest import CLASSIFICATION, copy_dataset, run_recipe


def manifests(folder):
    return [folder / "manifest" / f"{s}.json" for s in ("train", "valid", "test")]


def read_rows(data):
    with open(data / "meta" / "esc50.csv", newline="") as f:
        return list(csv.DictReader(f))


def write_rows(data, rows, encoding="utf-8"):
    with open(data / "meta" / "esc50.csv", "w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def data(synthetic_data, tmp_path):
    folder = copy_dataset(synthetic_data, tmp_path / "data")
    (folder / VERIFIED_MARKER).unlink(missing_ok=True)  # as verified by earlier tests: start unverified
    return folder


# -- 1. a clip listed twice --------------------------------------------------------------------------
@pytest.mark.parametrize("change", ["other_fold", "same_fold_other_target", "other_extension"])
def test_a_clip_listed_twice_is_refused_naming_both_rows(data, tmp_path, change):
    rows = read_rows(data)
    first = rows[0]
    other_fold = next(r for r in rows if r["fold"] != first["fold"])
    twin = dict(first)
    if change == "other_fold":  # one recording in train and in test
        twin.update(fold=other_fold["fold"], target=other_fold["target"], category=other_fold["category"])
    elif change == "same_fold_other_target":  # manifests are keyed by stem: the last row would win
        twin.update(target=other_fold["target"], category=other_fold["category"])
    else:  # a.wav and a.flac: the same stem, the same manifest key
        flac = first["filename"].replace(".wav", ".flac")
        x, sr = sf.read(data / "audio" / first["filename"])
        sf.write(data / "audio" / flac, x, sr)
        twin.update(filename=flac)
    write_rows(data, [*rows, twin])
    line = len(rows) + 2
    with pytest.raises(DataError, match=rf"more than once: line 2 \({first['filename']}\), line {line}"):
        prepare_esc50(data, *manifests(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing written


# -- 2. a negative target, and a saved encoder that no longer matches --------------------------------
def test_a_negative_target_is_refused_naming_its_line(data, tmp_path):
    rows = read_rows(data)
    rows[3]["target"] = "-1"
    write_rows(data, rows)
    with pytest.raises(DataError, match=r"esc50.csv, line 5: target -1 of .* is negative"):
        read_metadata(data / "meta" / "esc50.csv")


def test_a_negative_target_stops_the_recipe_before_it_writes_the_label_encoder(data, tmp_path):
    rows = read_rows(data)
    rows[0]["target"] = "-3"
    write_rows(data, rows)
    out = tmp_path / "run"
    args = ["--data_folder", data, "--output_folder", out, "--out_n_neurons", "3", "--signal_length_s", "1"]
    proc = run_recipe(CLASSIFICATION / "train.py", CLASSIFICATION / "hparams" / "conv2d.yaml", *args, check=False)
    assert proc.returncode != 0
    assert "line 2: target -3" in proc.stdout and "Class values must be non-negative" not in proc.stdout
    assert not (out / "save" / "label_encoder.txt").exists()


def _manifest(path, classes):
    atomic_write_json(
        path,
        {
            f"c{i}": {"wav": "x.wav", "classID": t, "class_string": c, "duration": 1.0}
            for i, (c, t) in enumerate(classes)
        },
    )
    return path


def test_a_saved_encoder_that_no_longer_matches_is_rebuilt_when_nothing_was_trained_with_it(tmp_path, caplog):
    save = tmp_path / "save" / "label_encoder.txt"
    build_label_encoder([_manifest(tmp_path / "bad.json", [("dog", 0), ("rain", 1), ("cat", 2)])], 3, save)
    fixed = _manifest(tmp_path / "fixed.json", [("dog", 0), ("rain", 2), ("cat", 1)])  # the CSV, corrected
    with caplog.at_level(logging.WARNING):
        encoder = build_label_encoder([fixed], 3, save)
    assert encoder.lab2ind == {"dog": 0, "cat": 1, "rain": 2}
    assert "does not match the metadata" in caplog.text
    # ... and the rebuilt one is what the next run reads
    assert build_label_encoder([fixed], 3, save).lab2ind == {"dog": 0, "cat": 1, "rain": 2}


def test_a_saved_encoder_that_checkpoints_use_is_never_silently_replaced(tmp_path):
    save = tmp_path / "save" / "label_encoder.txt"
    build_label_encoder([_manifest(tmp_path / "old.json", [("dog", 0), ("rain", 1)])], 2, save)
    (save.parent / "CKPT+2026-12-01+00-00-00+00").mkdir()
    with pytest.raises(DataError, match="new --output_folder"):
        build_label_encoder([_manifest(tmp_path / "new.json", [("dog", 1), ("rain", 0)])], 2, save)
    assert "'dog' => 0" in save.read_text()  # untouched


# -- 3. the CSV's encoding ---------------------------------------------------------------------------
def test_latin1_metadata_names_the_file_and_the_fix(data):
    rows = read_rows(data)
    rows[2]["category"] = "cafe\u0301".replace("e\u0301", "\u00e9")  # "café" in Latin-1: byte 0xe9
    write_rows(data, rows, encoding="latin-1")
    with pytest.raises(DataError, match=r"esc50.csv is not UTF-8 text \(byte 0xe9 on line 4.*iconv"):
        read_metadata(data / "meta" / "esc50.csv")


def test_a_utf8_byte_order_mark_is_said_and_ignored(data, caplog):
    csv_path = data / "meta" / "esc50.csv"
    expected = read_metadata(csv_path)
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())
    with caplog.at_level(logging.WARNING):
        assert read_metadata(csv_path) == expected
    assert "byte-order mark (BOM)" in caplog.text


def test_utf16_metadata_is_named_as_utf16(data):
    csv_path = data / "meta" / "esc50.csv"
    csv_path.write_bytes(csv_path.read_text().encode("utf-16"))
    with pytest.raises(DataError, match="is UTF-16 text"):
        read_metadata(csv_path)


# -- 8. a split with no clips ------------------------------------------------------------------------
def test_a_split_with_no_clips_is_named_with_its_folds_before_any_manifest_is_written(data, tmp_path):
    write_rows(data, [r for r in read_rows(data) if r["fold"] != "5"])
    for path in (data / "audio").glob("5-*"):
        path.unlink()
    with pytest.raises(
        DataError, match=r"The test split \(test_fold_nums=\[5\]\) has no clips.*fold\(s\) \[1, 2, 3, 4\]"
    ):
        prepare_esc50(data, *manifests(tmp_path / "out"), test_fold_nums=(5,))
    assert not any(p.exists() for p in manifests(tmp_path / "out"))


def test_an_empty_manifest_names_its_split(tmp_path):
    empty = tmp_path / "valid.json"
    empty.write_text("{}")
    clip = tmp_path / "a.wav"
    sf.write(clip, np.zeros(16000, dtype=np.float32), 16000)
    full = tmp_path / "train.json"
    full.write_text(json.dumps({"a": {"wav": str(clip), "classID": 0, "class_string": "dog", "duration": 1.0}}))
    encoder = build_label_encoder([full], 1)
    with pytest.raises(DataError, match=r"The valid split has no clips \(manifest .*valid.json is empty\)"):
        classification_datasets({"train": full, "valid": empty}, encoder, 16000, 1.0)


# -- a clip far shorter than the recipe's length -----------------------------------------------------
def test_clips_far_shorter_than_the_recipe_length_are_named_in_a_warning(tmp_path, caplog):
    entries = {}
    for name, n in (("fine", 16000), ("one_sample", 1), ("short", 4000)):
        sf.write(tmp_path / f"{name}.wav", np.full(n, 0.1, dtype=np.float32), 16000)
        entries[name] = {
            "wav": str(tmp_path / f"{name}.wav"),
            "classID": 0,
            "class_string": "dog",
            "duration": n / 16000,
        }
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps(entries))
    with caplog.at_level(logging.WARNING):
        classification_datasets({"train": manifest}, build_label_encoder([manifest], 1), 16000, 1.0)
    assert "2 clip(s) of the train split are far shorter than signal_length_s=1 s" in caplog.text
    assert "one_sample.wav (6.25e-05 s)" in caplog.text and "short.wav (0.25 s)" in caplog.text
    assert "fine.wav" not in caplog.text


# -- a clip corrupted in place, size and modification time kept ---------------------------------------
def test_a_clip_corrupted_with_its_size_and_mtime_kept_is_found_at_verification(data):
    ensure_esc50(data, download=False)
    assert is_verified(data)
    clip = sorted((data / "audio").glob("*.wav"))[4]
    st = clip.stat()
    raw = bytearray(clip.read_bytes())
    raw[:12] = b"NOT A RIFF!!"  # the header is gone; the size is the same
    clip.write_bytes(bytes(raw))
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert clip.stat().st_size == st.st_size and clip.stat().st_mtime_ns == st.st_mtime_ns
    assert not is_verified(data)
    with pytest.raises(AudioError, match=f"Cannot decode audio file .*{clip.name}"):
        ensure_esc50(data, download=False)


def test_the_verification_marker_still_holds_for_an_untouched_folder(data):
    mark_verified(data)
    assert is_verified(data)


# -- 9. the mode of atomically written files --------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "results.txt", "x")
        atomic_write_json(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "results.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == mode


# -- inputs the sweep found handled, pinned here so they stay so --------------------------------------
def _tone(n, rate, channels=1):
    t = np.arange(n) / rate
    return np.repeat((0.5 * np.sin(2 * np.pi * 440 * t))[:, None], channels, axis=1).astype(np.float32)


@pytest.mark.parametrize(
    "rate, subtype, channels", [(96000, "PCM_24", 1), (44100, "PCM_16", 6), (11025, "FLOAT", 2), (48000, "PCM_U8", 1)]
)
def test_odd_rates_depths_and_channel_counts_load_as_the_same_mono_tone(tmp_path, rate, subtype, channels):
    from common.data.audio import load_audio

    path = tmp_path / "clip.wav"
    sf.write(path, _tone(rate, rate, channels), rate, subtype=subtype)
    sig = load_audio(path, 16000)
    assert sig.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(sig.numpy()))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # 1 Hz bins: the tone, at its pitch, not aliased or sped up


def test_mp3_or_ogg_content_in_a_wav_name_is_decoded_by_its_content(tmp_path):
    from common.data.audio import load_audio

    path = tmp_path / "clip.wav"
    sf.write(path, _tone(16000, 16000), 16000, format="OGG", subtype="VORBIS")
    assert path.read_bytes()[:4] == b"OggS"
    sig = load_audio(path, 16000)
    assert abs(int(np.argmax(np.abs(np.fft.rfft(sig.numpy())))) - 440) <= 1


@pytest.mark.parametrize("content", ["empty", "inf"])
def test_an_empty_file_or_infinite_samples_name_the_file(tmp_path, content):
    from common.data.audio import load_audio

    path = tmp_path / "clip.wav"
    if content == "empty":
        path.write_bytes(b"")
        match = r"Cannot decode audio file .*clip.wav .*corrupt or truncated"
    else:
        x = _tone(16000, 16000)
        x[100] = np.inf
        sf.write(path, x, 16000, subtype="FLOAT")
        match = r"Audio file .*clip.wav contains NaN or infinite samples"
    with pytest.raises(AudioError, match=match):
        load_audio(path, 16000)


def test_a_listed_clip_in_a_format_the_recipes_do_not_read_is_not_called_missing(data, tmp_path):
    rows = read_rows(data)
    wav = data / "audio" / rows[0]["filename"]
    wav.rename(wav.with_suffix(".mp3"))
    rows[0]["filename"] = wav.with_suffix(".mp3").name
    write_rows(data, rows)
    with pytest.raises(DataError, match=r"are in .*audio but not in a format the recipes read .*\.mp3.*ffmpeg"):
        prepare_esc50(data, *manifests(tmp_path / "out"))


def test_a_non_integer_fold_names_its_line(data):
    rows = read_rows(data)
    rows[1]["fold"] = "two"
    write_rows(data, rows)
    with pytest.raises(DataError, match=r"line 3: 'fold' and 'target' must be integers, got fold='two'"):
        read_metadata(data / "meta" / "esc50.csv")


def test_a_symlinked_data_folder_is_prepared_through_the_link(data, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(data, target_is_directory=True)
    prepare_esc50(link, *manifests(tmp_path / "out"))
    entries = json.loads(manifests(tmp_path / "out")[0].read_text())
    assert entries and all(e["wav"].startswith(str(link)) for e in entries.values())


@pytest.mark.parametrize("kind", ["zip_symlink", "tar_symlink", "tar_hardlink"])
def test_links_inside_an_archive_are_refused_before_anything_is_written(tmp_path, kind):
    import io
    import tarfile
    import zipfile

    from common.data.download import safe_extract
    from common.errors import IntegrityError

    archive = tmp_path / ("a.zip" if kind.startswith("zip") else "a.tar")
    if kind == "zip_symlink":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("ok.txt", "fine")
            info = zipfile.ZipInfo("link")
            info.external_attr = (0o120777) << 16
            zf.writestr(info, "/etc/passwd")
    else:
        with tarfile.open(archive, "w") as tf:
            ok = tarfile.TarInfo("ok.txt")
            ok.size = 4
            tf.addfile(ok, io.BytesIO(b"fine"))
            link = tarfile.TarInfo("link")
            link.type, link.linkname = (tarfile.SYMTYPE if kind == "tar_symlink" else tarfile.LNKTYPE), "/etc/passwd"
            tf.addfile(link)
    with pytest.raises(IntegrityError, match=r"holds member 'link' .*or is a link"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_read_only_data_folder_is_used_and_verified_again_next_time(data, tmp_path, monkeypatch, caplog):
    """The verification marker cannot be written there (chmod does not stop root, so the write is refused
    as a read-only file system refuses it); the manifests go to the output folder as usual."""
    from common.data import esc50

    real_write = esc50.atomic_write_json

    def read_only_data(path, obj):
        if str(path).startswith(str(data)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_write(path, obj)

    monkeypatch.setattr(esc50, "atomic_write_json", read_only_data)
    with caplog.at_level(logging.INFO):
        prepare_esc50(data, *manifests(tmp_path / "out"))
    assert all(p.is_file() for p in manifests(tmp_path / "out"))
    assert not is_verified(data) and "will be re-verified next time" in caplog.text
