"""AudioMNIST preparation: the authors' speaker splits, manifests, bad layouts and metadata, download and
install, and the espeak-ng spoken digits written in its layout."""

import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import soundfile as sf

from common.data.audiomnist import (
    balanced_split,
    ensure_audiomnist,
    official_split,
    prepare_audiomnist,
    read_speaker_metadata,
)
from common.errors import DataError, DataNotFoundError, IntegrityError

# Speakers of the authors' splits.py, spelled out here (not derived from the module under test)
AUTHORS_DIGIT_TEST_SPLIT0 = {26, 52, 60, 18, 32, 42, 5, 13, 22, 33, 45, 51}
AUTHORS_DIGIT_VALID_SPLIT0 = {12, 47, 59, 15, 27, 41, 4, 11, 21, 31, 44, 50}
AUTHORS_DIGIT_TEST_SPLIT1 = {28, 56, 7, 19, 35, 1, 6, 16, 23, 34, 46, 53}
AUTHORS_GENDER_TRAIN_SPLIT1 = {26, 12, 57, 43, 28, 52, 25, 37, 45, 48, 53, 41}
AUTHORS_GENDER_TEST_SPLIT1 = {36, 47, 56, 2, 44, 50}
# one gender per speaker, 3 + 3 in each of the authors' gender groups of six
FEMALE = {36, 47, 56, 26, 12, 57, 43, 28, 52, 58, 59, 60, 9, 14}


def write_official_layout(root, speakers=range(1, 61), digits=range(10), repetitions=1):
    data = root / "data"
    meta = {}
    rng = np.random.default_rng(0)
    for s in speakers:
        (data / f"{s:02d}").mkdir(parents=True, exist_ok=True)
        for d in digits:
            for i in range(repetitions):
                sf.write(data / f"{s:02d}" / f"{d}_{s:02d}_{i}.wav", rng.standard_normal(480) * 0.1, 48000)
        meta[f"{s:02d}"] = {"gender": "female" if s in FEMALE else "male", "age": "30", "accent": "german"}
    (data / "audioMNIST_meta.txt").write_text(json.dumps(meta))
    return data


def manifests(tmp_path, name="m"):
    return [tmp_path / name / f"{s}.json" for s in ("train", "valid", "test")]


def speakers_of(path):
    return {e["speaker"] for e in json.loads(path.read_text()).values()}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("AudioMNIST")
    write_official_layout(root)
    return root


def test_official_splits_are_the_authors_speaker_sets():
    split0 = official_split("digit", 0)
    assert split0["test"] == AUTHORS_DIGIT_TEST_SPLIT0 and split0["valid"] == AUTHORS_DIGIT_VALID_SPLIT0
    assert official_split("digit", 1)["test"] == AUTHORS_DIGIT_TEST_SPLIT1
    tested = []
    for k in range(5):
        s = official_split("digit", k)
        assert not (s["train"] & s["valid"] or s["train"] & s["test"] or s["valid"] & s["test"])
        assert s["train"] | s["valid"] | s["test"] == set(range(1, 61)) and len(s["train"]) == 36
        tested += sorted(s["test"])
    assert sorted(tested) == list(range(1, 61))  # every speaker is tested once over the five splits
    g1 = official_split("gender", 1)
    assert g1["train"] == AUTHORS_GENDER_TRAIN_SPLIT1 and g1["test"] == AUTHORS_GENDER_TEST_SPLIT1
    with pytest.raises(DataError, match="0..3"):
        official_split("gender", 4)


def test_prepare_writes_speaker_disjoint_manifests_with_the_task_labels(official, tmp_path):
    paths = prepare_audiomnist(official, *manifests(tmp_path, "digit"), task="digit", split_index=0, download=False)
    assert speakers_of(paths["test"]) == AUTHORS_DIGIT_TEST_SPLIT0
    assert speakers_of(paths["valid"]) == AUTHORS_DIGIT_VALID_SPLIT0
    test = json.loads(paths["test"].read_text())
    assert len(test) == 12 * 10
    entry = test["7_26_0"]
    assert entry["classID"] == 7 and entry["class_string"] == "7" and entry["wav"].endswith("data/26/7_26_0.wav")
    paths = prepare_audiomnist(official, *manifests(tmp_path, "gender"), task="gender", split_index=1, download=False)
    test = json.loads(paths["test"].read_text())
    assert {e["speaker"] for e in test.values()} == AUTHORS_GENDER_TEST_SPLIT1
    for e in test.values():
        assert e["class_string"] == ("female" if e["speaker"] in FEMALE else "male")
        assert e["classID"] == {"male": 0, "female": 1}[e["class_string"]]  # the authors' coding


def test_prepare_skips_work_already_done_and_redoes_it_when_an_option_changes(official, tmp_path):
    paths = prepare_audiomnist(official, *manifests(tmp_path), split_index=0, download=False)
    before = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    prepare_audiomnist(official, *manifests(tmp_path), split_index=0, download=False)
    assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == before
    prepare_audiomnist(official, *manifests(tmp_path), split_index=2, download=False)
    assert speakers_of(paths["test"]) == official_split("digit", 2)["test"]


def test_official_split_on_other_speakers_and_bad_options_are_clear_errors(tmp_path):
    write_official_layout(tmp_path / "few", speakers=range(1, 7))
    with pytest.raises(DataError, match=r"official digit split 0 puts speakers \[.*\] in train.*split: balanced"):
        prepare_audiomnist(tmp_path / "few", *manifests(tmp_path), download=False)
    with pytest.raises(DataError, match="task='speaker'"):
        prepare_audiomnist(tmp_path / "few", *manifests(tmp_path), task="speaker", download=False)
    assert not (tmp_path / "m").exists()  # nothing written


def test_balanced_split_is_speaker_disjoint_seeded_and_holds_both_genders():
    genders = {s: ("female" if s % 3 == 0 else "male") for s in range(1, 13)}
    a = balanced_split(genders, seed=1)
    assert a == balanced_split(genders, seed=1) and a != balanced_split(genders, seed=2)
    assert not (a["train"] & a["test"] or a["train"] & a["valid"] or a["valid"] & a["test"])
    assert a["train"] | a["valid"] | a["test"] == set(genders)
    for split in a.values():
        assert {genders[s] for s in split} == {"male", "female"}


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / "audioMNIST_meta.txt").write_text('{"01": {"gender": "male"},\n "02": }'),
            r"meta.txt is not valid JSON \(line 2",
        ),
        (lambda d: (d / "audioMNIST_meta.txt").write_text('{"01": {"age": "30"}}'), r"speaker '01' has gender None"),
        (lambda d: (d / "01" / "seven.wav").write_bytes(b"x"), r"01/seven.wav: not an AudioMNIST recording name"),
        (lambda d: shutil.copy(d / "02" / "0_02_0.wav", d / "01" / "0_02_5.wav"), r"speaker 02 is in folder 01/"),
        (
            lambda d: (d / "audioMNIST_meta.txt").write_text('{"01": {"gender": "male"}}'),
            r"speaker 02 has no entry in .*audioMNIST_meta.txt",
        ),
        (
            lambda d: (d / "03" / "4_03_0.wav").write_bytes(b"RIFF\x00\x00garbage"),
            r"4_03_0.wav cannot be read as audio",
        ),
        (lambda d: sf.write(d / "02" / "5_02_0.wav", np.zeros(0), 48000), r"5_02_0.wav holds no samples"),
    ],
    ids=["malformed-json", "no-gender", "bad-name", "wrong-folder", "unknown-speaker", "corrupt-wav", "empty-wav"],
)
def test_bad_layouts_and_metadata_name_the_file_and_the_fix(tmp_path, damage, message):
    data = write_official_layout(tmp_path / "AM", speakers=range(1, 5))
    damage(data)
    with pytest.raises(DataError, match=message):
        prepare_audiomnist(tmp_path / "AM", *manifests(tmp_path), split="balanced", download=False)
    assert not (tmp_path / "m").exists()


def test_hidden_files_are_ignored_and_the_data_folder_itself_is_accepted(tmp_path):
    data = write_official_layout(tmp_path / "AM", speakers=range(1, 7))
    (data / "01" / "._0_01_0.wav").write_bytes(b"\0")
    paths = prepare_audiomnist(data, *manifests(tmp_path), split="balanced", download=False)
    assert sum(len(json.loads(p.read_text())) for p in paths.values()) == 6 * 10
    assert read_speaker_metadata(data / "audioMNIST_meta.txt")[1]["gender"] == "male"


def test_missing_data_offline_says_where_to_get_it(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(
        DataNotFoundError, match=r"download failed.*soerenab/AudioMNIST.*--data_folder.*make_spoken_digits"
    ):
        prepare_audiomnist(tmp_path / "AM", *manifests(tmp_path))
    with pytest.raises(DataNotFoundError, match="No AudioMNIST data in .*AM"):
        prepare_audiomnist(tmp_path / "AM", *manifests(tmp_path), download=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_download_installs_a_repository_snapshot_and_refuses_bad_archives(tmp_path):
    src = write_official_layout(tmp_path / "src", speakers=range(1, 4))
    archive = tmp_path / "master.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(src.rglob("*")):
            z.write(path, f"AudioMNIST-master/data/{path.relative_to(src)}")
    folder = ensure_audiomnist(tmp_path / "AM", url=archive.as_uri())
    assert folder == tmp_path / "AM" / "data" and len(list(folder.glob("*/*.wav"))) == 30
    with pytest.raises(IntegrityError, match="SHA-?256"):
        ensure_audiomnist(tmp_path / "bad", url=archive.as_uri(), sha256="0" * 64)
    assert not (tmp_path / "bad" / "data").exists()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("AudioMNIST-master/data/audioMNIST_meta.txt", "{}")
        z.writestr("AudioMNIST-master/../../escaped.wav", b"x")
    with pytest.raises(IntegrityError, match="escaped.wav.*outside"):
        ensure_audiomnist(tmp_path / "e", url=evil.as_uri())
    assert not list(tmp_path.rglob("escaped.wav"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


# ------------------------------------------------------------ espeak-ng spoken digits
def need_espeak():
    from common.data.synthetic.spoken_digits import espeak_available

    if not espeak_available():
        if os.environ.get("CI"):
            pytest.fail("espeak-ng is not installed, and CI is set: .ci/run installs Debian's espeak-ng package")
        pytest.skip("espeak-ng not installed (apt-get install -y --no-install-recommends espeak-ng)")


def f0_hz(x, sr, lo=60.0, hi=400.0):
    """Median autocorrelation pitch over the voiced 40 ms frames."""
    n, out = int(0.04 * sr), []
    for start in range(0, len(x) - n, n // 2):
        frame = x[start : start + n] - x[start : start + n].mean()
        if np.sqrt(np.mean(frame**2)) < 0.1 * np.abs(x).max():
            continue
        ac = np.correlate(frame, frame, "full")[n - 1 :]
        lags = np.arange(int(sr / hi), int(sr / lo))
        out.append(sr / lags[np.argmax(ac[lags])])
    return float(np.median(out))


def test_spoken_digits_are_written_in_audiomnist_layout_with_audible_gender(tmp_path):
    need_espeak()
    from common.data.synthetic.spoken_digits import SAMPLE_RATE, make_spoken_digits

    folder = make_spoken_digits(tmp_path / "SD", n_speakers=6, repetitions=1, seed=3)
    meta = read_speaker_metadata(folder / "audioMNIST_meta.txt")
    assert (
        sorted(meta) == [1, 2, 3, 4, 5, 6]
        and sorted(m["gender"] for m in meta.values()) == ["female"] * 3 + ["male"] * 3
    )
    wavs = sorted(folder.glob("*/*.wav"))
    assert len(wavs) == 6 * 10
    pitch = {"male": [], "female": []}
    for path in wavs:
        x, sr = sf.read(path)
        assert sr == SAMPLE_RATE and x.ndim == 1 and 0.1 < len(x) / sr < 1.0 and np.abs(x).max() > 0.05
        if path.name.startswith("1_"):  # "one" of every speaker
            pitch[meta[int(path.parent.name)]["gender"]].append(f0_hz(x, sr))
    assert min(pitch["female"]) > 1.3 * max(pitch["male"])
    # different digits and different speakers are different sounds (not one file copied)
    a, b, c = (sf.read(folder / p)[0] for p in ("01/1_01_0.wav", "01/2_01_0.wav", "02/1_02_0.wav"))
    assert len({len(a), len(b), len(c)}) > 1 or not (np.allclose(a, b) or np.allclose(a, c))
    again = make_spoken_digits(tmp_path / "SD2", n_speakers=6, repetitions=1, seed=3)
    assert np.array_equal(sf.read(again / "01/5_01_0.wav")[0], sf.read(folder / "01/5_01_0.wav")[0])  # seeded
    paths = prepare_audiomnist(tmp_path / "SD", *manifests(tmp_path), task="gender", split="balanced", download=False)
    for p in paths.values():
        assert {e["class_string"] for e in json.loads(p.read_text()).values()} == {"male", "female"}
