"""ESC-50 preparation: download path (against a local archive), verification, manifests, bad input."""

import csv
import json
import logging
import urllib.error
import urllib.request
import zipfile

import pytest

from common.data import esc50
from common.data.esc50 import ensure_esc50, file_sha256, prepare_esc50, safe_extract_zip
from common.errors import AudioError, DataError, DataNotFoundError, IntegrityError
from tests.conftest import copy_dataset


def manifests(folder):
    return [folder / "manifest" / f"{s}.json" for s in ("train", "valid", "test")]


def prepare(data, out, **kw):
    return prepare_esc50(data, *manifests(out), **kw)


def rewrite_csv(path, transform):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows, fields = transform(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def make_archive(src, zip_path, prefix="ESC-50-master/"):
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                zf.write(p, prefix + str(p.relative_to(src)))
    return zip_path


def test_manifests_follow_folds_and_metadata(synthetic_data, tmp_path):
    data = copy_dataset(synthetic_data, tmp_path / "data")
    prepare(data, tmp_path, train_fold_nums=[1, 2, 3], valid_fold_nums=[4], test_fold_nums=[5])
    train, valid, test = (json.loads(p.read_text()) for p in manifests(tmp_path))
    assert (len(train), len(valid), len(test)) == (9, 3, 3)
    assert {e["fold"] for e in train.values()} == {1, 2, 3} and {e["fold"] for e in test.values()} == {5}
    for key, entry in train.items():
        assert entry["wav"].endswith(key + ".wav") and entry["duration"] == pytest.approx(1.0)
        assert entry["classID"] == int(key.split("-")[-1])
    assert (data / esc50.VERIFIED_MARKER).is_file()


def test_manifests_are_reused_and_rebuilt_when_inputs_change(synthetic_data, tmp_path):
    data = copy_dataset(synthetic_data, tmp_path / "data")
    prepare(data, tmp_path)
    first = [p.stat().st_mtime_ns for p in manifests(tmp_path)]
    prepare(data, tmp_path)
    assert [p.stat().st_mtime_ns for p in manifests(tmp_path)] == first
    prepare(data, tmp_path, train_fold_nums=[2, 3, 4], valid_fold_nums=[5], test_fold_nums=[1])
    test = json.loads(manifests(tmp_path)[2].read_text())
    assert {e["fold"] for e in test.values()} == {1}


def test_failed_preparation_leaves_earlier_manifests_intact(synthetic_data, tmp_path):
    data = copy_dataset(synthetic_data, tmp_path / "data")
    prepare(data, tmp_path)
    before = [p.read_bytes() for p in manifests(tmp_path)]
    victim = sorted((data / "audio").iterdir())[0]
    victim.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match=victim.name):
        prepare(data, tmp_path, train_fold_nums=[2, 3, 4], valid_fold_nums=[5], test_fold_nums=[1])
    assert [p.read_bytes() for p in manifests(tmp_path)] == before
    assert not list((tmp_path / "manifest").glob(".*.tmp"))


@pytest.mark.parametrize(
    "folds, message",
    [
        (([1, 2, 3], [3], [5]), "overlap on fold"),
        (([1, 2], [4], [5, 2]), "overlap on fold"),
        (([0, 1], [4], [5]), "values in"),
        (([1, 2, 3], [6], [5]), "values in"),
    ],
)
def test_bad_fold_lists_raise(synthetic_data, tmp_path, folds, message):
    with pytest.raises(DataError, match=message):
        prepare(synthetic_data, tmp_path, train_fold_nums=folds[0], valid_fold_nums=folds[1], test_fold_nums=folds[2])


def test_missing_data_folder_offline_says_where_to_put_the_data(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = tmp_path / "ESC-50-master"
    with pytest.raises(DataNotFoundError, match=r"download failed.*--data_folder.*ESC-50-master"):
        prepare(target, tmp_path)
    with pytest.raises(DataNotFoundError, match="meta/esc50.csv missing"):
        prepare(target, tmp_path, download=False)
    assert not list(tmp_path.glob(".*.part"))


def test_download_path_installs_and_verifies_a_local_archive(synthetic_data, tmp_path):
    archive = make_archive(synthetic_data, tmp_path / "master.zip")
    target = tmp_path / "data" / "ESC-50-master"
    ensure_esc50(target, url=archive.as_uri(), sha256=file_sha256(archive))
    assert (target / "meta" / "esc50.csv").is_file() and len(list((target / "audio").iterdir())) == 15
    marker = json.loads((target / esc50.VERIFIED_MARKER).read_text())
    assert marker["archive_sha256"] == file_sha256(archive)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_archive_with_wrong_sha256_is_refused(synthetic_data, tmp_path):
    archive = make_archive(synthetic_data, tmp_path / "master.zip")
    target = tmp_path / "data" / "ESC-50-master"
    with pytest.raises(IntegrityError, match="SHA-256 .* expected 0000"):
        ensure_esc50(target, url=archive.as_uri(), sha256="0" * 64)
    assert not (target / "meta").exists()


def test_archive_member_escaping_the_folder_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ESC-50-master/meta/esc50.csv", "filename,fold,target,category\n")
        zf.writestr("ESC-50-master/../../escaped.txt", "gotcha")
    target = tmp_path / "a" / "b"
    with pytest.raises(IntegrityError, match="escaped.txt.*outside"):
        safe_extract_zip(evil, target)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "a" / "escaped.txt").exists()
    with pytest.raises(IntegrityError):
        ensure_esc50(tmp_path / "c" / "ESC-50-master", url=evil.as_uri())
    assert not (tmp_path / "escaped.txt").exists()


def test_csv_missing_a_column_names_it(synthetic_data, tmp_path):
    data = copy_dataset(synthetic_data, tmp_path / "data")
    rewrite_csv(
        data / "meta" / "esc50.csv",
        lambda rows: (
            [{k: v for k, v in r.items() if k != "target"} for r in rows],
            [k for k in rows[0] if k != "target"],
        ),
    )
    with pytest.raises(DataError, match=r"esc50.csv lacks column\(s\) \['target'\]"):
        prepare(data, tmp_path)


def test_csv_with_unknown_fold_names_the_line(synthetic_data, tmp_path):
    data = copy_dataset(synthetic_data, tmp_path / "data")

    def bump(rows):
        rows[3]["fold"] = "7"
        return rows, list(rows[0])

    rewrite_csv(data / "meta" / "esc50.csv", bump)
    with pytest.raises(DataError, match="line 5: fold 7 .* is not one of"):
        prepare(data, tmp_path)


def test_metadata_listing_missing_files_names_them(synthetic_data, tmp_path):
    data = copy_dataset(synthetic_data, tmp_path / "data")
    gone = sorted((data / "audio").iterdir())[2]
    gone.unlink()
    with pytest.raises(DataError, match=f"missing from .*audio: {gone.name}"):
        prepare(data, tmp_path)


def test_audio_files_absent_from_metadata_are_ignored_with_a_warning(synthetic_data, tmp_path, caplog):
    data = copy_dataset(synthetic_data, tmp_path / "data")
    stray = data / "audio" / "5-999-A-1.wav"
    stray.write_bytes(sorted((data / "audio").iterdir())[0].read_bytes())
    with caplog.at_level(logging.WARNING):
        prepare(data, tmp_path)
    assert "5-999-A-1.wav" in caplog.text
    assert "5-999-A-1" not in json.loads(manifests(tmp_path)[2].read_text())
