"""AudioMNIST preparation (Becker et al. 2018): the official layout, speaker metadata, speaker-disjoint splits.

Layout (the authors' repository, github.com/soerenab/AudioMNIST):
``data_folder/data/<speaker>/<digit>_<speaker>_<index>.wav`` (48 kHz mono
spoken digits, 60 speakers x 10 digits x 50 repetitions) and
``data_folder/data/audioMNIST_meta.txt``, a JSON object mapping each speaker
("01" .. "60") to its metadata (``gender``, ``age``, ``accent``,
``native speaker``, ``origin``, ``recordingdate``, ``recordingroom``).
``data_folder`` may also be the ``data`` folder itself.

Tasks: ``digit`` (10 classes) and ``gender`` (2). Splits are by speaker, so
no speaker is heard in two of train / valid / test:

* ``official``: the authors' splits (``audiomnist/train/splits.py`` of their
  repository): for ``digit`` five folds of 12 speakers, split ``k`` testing on
  one fold, validating on another and training on the other three; for
  ``gender`` four splits of 12 training, 6 validation and 6 test speakers of
  the 24 they balance by gender. They name speakers 1-60, so they need the
  real data set (or a folder with those speaker ids).
* ``balanced``: a seeded draw for any folder (e.g. the synthetic spoken digits
  of ``tools/make_spoken_digits.py``): speakers shuffled within each gender
  and dealt to train / valid / test by ``split_ratios``, so every split holds
  both genders.

Manifests (one JSON per split, the ESC-50 manifests' format: ``wav``,
``classID``, ``class_string``, ``duration``, plus ``speaker``, ``digit`` and
``gender``) are written atomically and reused while the listing and the
options are unchanged. The model's input length and rate (the paper: 1 s at
8 kHz) are the recipe's ``signal_length_s`` and ``sample_rate``.
"""

import hashlib
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

from common.data.audio import audio_info
from common.data.download import check_digests, download_and_install, extracted
from common.errors import DataError, IntegrityError
from common.io import atomic_write_json, stamp_matches

logger = logging.getLogger(__name__)

# The repository's snapshot (about 1 GB); no digest is published, so none is enforced unless given.
AUDIOMNIST_URL = "https://github.com/soerenab/AudioMNIST/archive/refs/heads/master.zip"
META_FILE = "audioMNIST_meta.txt"
TASKS = ("digit", "gender")
GENDERS = ("male", "female")  # the authors' label order: 0 male, 1 female
SPLITS = ("train", "valid", "test")
MANIFEST_STAMP = ".audiomnist_manifest_inputs.json"
RECORDING = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[0-9]+)_(?P<index>[0-9]+)\.wav$")

# The authors' speaker-disjoint splits (speaker numbers), from their audiomnist/train/splits.py.
_DIGIT_FOLDS = (
    (28, 56, 7, 19, 35, 1, 6, 16, 23, 34, 46, 53),
    (36, 57, 9, 24, 37, 2, 8, 17, 29, 39, 48, 54),
    (43, 58, 14, 25, 38, 3, 10, 20, 30, 40, 49, 55),
    (12, 47, 59, 15, 27, 41, 4, 11, 21, 31, 44, 50),
    (26, 52, 60, 18, 32, 42, 5, 13, 22, 33, 45, 51),
)
_GENDER_GROUPS = ((36, 47, 56, 2, 44, 50), (26, 12, 57, 25, 37, 45), (43, 28, 52, 48, 53, 41), (58, 59, 60, 7, 23, 38))


def official_split(task, split_index):
    """{split: frozenset of speaker numbers} of the authors' split ``split_index`` for ``task``."""
    if task == "digit":
        n = len(_DIGIT_FOLDS)
        test, valid = (split_index + 4) % n, (split_index + 3) % n  # split 0 tests fold 4 and validates on fold 3
        train = [f for f in range(n) if f not in (test, valid)]
        folds = {"train": train, "valid": [valid], "test": [test]}
        groups = _DIGIT_FOLDS
    elif task == "gender":
        n = len(_GENDER_GROUPS)
        folds = {
            "train": [split_index, (split_index + 1) % n],
            "valid": [(split_index + 2) % n],
            "test": [(split_index + 3) % n],
        }
        groups = _GENDER_GROUPS
    else:
        raise DataError(f"task={task!r}: use one of {TASKS}.")
    if not 0 <= split_index < n:
        raise DataError(f"split_index={split_index}: the official {task} splits are 0..{n - 1}.")
    return {name: frozenset(s for g in chosen for s in groups[g]) for name, chosen in folds.items()}


def balanced_split(speaker_genders, split_ratios=(0.6, 0.2, 0.2), seed=1234):
    """{split: frozenset of speakers}: speakers shuffled within each gender (seeded) and dealt by ``split_ratios``,
    each split getting at least one speaker of every gender that has at least three."""
    if len(split_ratios) != 3 or min(split_ratios) < 0 or sum(split_ratios) <= 0:
        raise DataError(f"split_ratios={split_ratios}: give three non-negative shares (train, valid, test).")
    total = float(sum(split_ratios))
    out = {name: set() for name in SPLITS}
    rng = random.Random(seed)
    for gender in sorted(set(speaker_genders.values())):
        speakers = sorted(s for s, g in speaker_genders.items() if g == gender)
        rng.shuffle(speakers)
        n = len(speakers)
        n_valid = max(1 if n >= 3 else 0, round(n * split_ratios[1] / total))
        n_test = max(1 if n >= 3 else 0, round(n * split_ratios[2] / total))
        n_train = n - n_valid - n_test
        out["train"].update(speakers[:n_train])
        out["valid"].update(speakers[n_train : n_train + n_valid])
        out["test"].update(speakers[n_train + n_valid :])
    return {name: frozenset(s) for name, s in out.items()}


# ----------------------------------------------------------------- layout
def find_audiomnist_folder(data_folder):
    """The folder holding the speaker folders and ``audioMNIST_meta.txt`` (``data_folder/data``, a repository
    snapshot's ``AudioMNIST-master/data``, or ``data_folder`` itself), or None."""
    data_folder = Path(data_folder)
    for candidate in (data_folder / "data", data_folder / "AudioMNIST-master" / "data", data_folder):
        if (candidate / META_FILE).is_file():
            return candidate
    return None


def read_speaker_metadata(path):
    """{speaker number: metadata dict} of ``audioMNIST_meta.txt``; every speaker must say ``gender``."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); re-save it as UTF-8 JSON.") from exc
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). It must be one JSON "
            f'object mapping each speaker ("01") to its metadata, as in the AudioMNIST repository.'
        ) from exc
    if not isinstance(meta, dict) or not meta:
        raise DataError(
            f"{path} must be a JSON object mapping each speaker to its metadata; it holds {type(meta).__name__}."
        )
    speakers = {}
    for key, record in meta.items():
        if not str(key).isdigit():
            raise DataError(f'{path}: speaker {key!r} is not a speaker number such as "01".')
        gender = record.get("gender") if isinstance(record, dict) else None
        if gender not in GENDERS:
            raise DataError(
                f'{path}: speaker {key!r} has gender {gender!r}; each speaker needs "gender": one of {GENDERS}.'
            )
        speakers[int(key)] = dict(record)
    return speakers


def list_recordings(folder, speakers):
    """[(path, digit, speaker number, index)] of every recording in ``folder``'s speaker folders.

    A file whose name is not ``<digit>_<speaker>_<index>.wav``, that sits in another speaker's folder, or whose
    speaker has no metadata is an error naming it (hidden files, e.g. macOS ``._*``, are ignored).
    """
    folder = Path(folder)
    recordings = []
    for speaker_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(speaker_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            match = RECORDING.match(path.name)
            if match is None:
                raise DataError(
                    f"{path}: not an AudioMNIST recording name (<digit>_<speaker>_<index>.wav, e.g. 3_07_12.wav). "
                    "Rename or remove it."
                )
            speaker = int(match["speaker"])
            if not speaker_dir.name.isdigit() or int(speaker_dir.name) != speaker:
                raise DataError(
                    f"{path}: speaker {match['speaker']} is in folder {speaker_dir.name}/; move it to its speaker's folder."
                )
            if speaker not in speakers:
                raise DataError(f"{path}: speaker {match['speaker']} has no entry in {folder / META_FILE}; add one.")
            recordings.append((path, int(match["digit"]), speaker, int(match["index"])))
    if not recordings:
        raise DataError(f"{folder} holds no recordings (<speaker>/<digit>_<speaker>_<index>.wav).")
    return recordings


def _listing_signature(recordings):
    digest = hashlib.sha256()
    for path, *_ in recordings:
        st = path.stat()
        digest.update(f"{path.parent.name}/{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()


# ------------------------------------------------------- download / install
def install_audiomnist_archive(archive, data_folder, sha256=None):
    """Verify (hash when given), extract safely, and move the archive's ``data`` folder to ``data_folder/data``."""
    data_folder = Path(data_folder)
    check_digests(archive, sha256=sha256, what=f"Archive {archive}")
    data_folder.mkdir(parents=True, exist_ok=True)
    with extracted(archive, data_folder, "audiomnist") as staging:
        found = next((p.parent for p in sorted(staging.rglob(META_FILE))), None)
        if found is None:
            raise IntegrityError(f"Archive {archive} holds no {META_FILE}; it is not the AudioMNIST repository.")
        dest = data_folder / "data"
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(found, dest)
    return dest


def ensure_audiomnist(data_folder, url=AUDIOMNIST_URL, sha256=None, download=True):
    """The folder of speaker folders and metadata; the repository snapshot is downloaded first when absent (and allowed)."""
    data_folder = Path(data_folder)
    found = find_audiomnist_folder(data_folder)
    if found is not None:
        return found
    how_to = (
        f"Download {url} (or clone github.com/soerenab/AudioMNIST) yourself and pass the folder holding "
        f"data/<speaker>/*.wav and data/{META_FILE} as --data_folder (now {data_folder}). Offline, "
        "`python tools/make_spoken_digits.py DIR` writes synthetic spoken digits in the same layout."
    )
    return download_and_install(
        data_folder,
        url,
        "audiomnist.zip",
        lambda archive: install_audiomnist_archive(archive, data_folder, sha256=sha256),
        "AudioMNIST",
        f"no data/{META_FILE}",
        how_to,
        download,
        sha256=sha256,
    )


# ---------------------------------------------------------------- manifests
def prepare_audiomnist(
    data_folder,
    save_json_train,
    save_json_valid,
    save_json_test,
    task="digit",
    split="official",
    split_index=0,
    split_ratios=(0.6, 0.2, 0.2),
    split_seed=1234,
    skip_manifest_creation=False,
    download=True,
    url=AUDIOMNIST_URL,
    sha256=None,
):
    """Ensure AudioMNIST is in ``data_folder`` and write speaker-disjoint train/valid/test manifests for ``task``.

    Returns {split: manifest path}. The gender task keeps only the speakers its split names (``official``: the
    authors' 24 gender-balanced speakers).
    """
    if task not in TASKS:
        raise DataError(f"task={task!r}: use one of {TASKS}.")
    if split not in ("official", "balanced"):
        raise DataError(
            f"split={split!r}: use 'official' (the authors' speaker splits) or 'balanced' (seeded, any folder)."
        )
    outputs = dict(zip(SPLITS, (Path(save_json_train), Path(save_json_valid), Path(save_json_test)), strict=True))
    if skip_manifest_creation and all(p.is_file() for p in outputs.values()):
        return outputs
    folder = ensure_audiomnist(data_folder, url=url, sha256=sha256, download=download)
    speakers = read_speaker_metadata(folder / META_FILE)
    recordings = list_recordings(folder, speakers)
    heard = {s for _, _, s, _ in recordings}
    fingerprint = {
        "listing": _listing_signature(recordings),
        "meta": hashlib.sha256((folder / META_FILE).read_bytes()).hexdigest(),
        "folder": str(folder.resolve()),
        "task": task,
        "split": split,
    }
    if split == "official":
        fingerprint["split_index"] = int(split_index)
        chosen = official_split(task, int(split_index))
    else:
        fingerprint.update(split_ratios=[float(r) for r in split_ratios], split_seed=int(split_seed))
        chosen = balanced_split({s: speakers[s]["gender"] for s in heard}, split_ratios, split_seed)
    stamp = outputs["train"].parent / MANIFEST_STAMP
    if stamp_matches(stamp, fingerprint, outputs.values()):
        logger.info("AudioMNIST manifests in %s are up to date; skipping preparation.", stamp.parent)
        return outputs
    for name in SPLITS:
        missing = sorted(chosen[name] - heard)
        if missing:
            raise DataError(
                f"The official {task} split {split_index} puts speakers {missing} in {name}, but {folder} has no "
                "recordings of them. Use the full AudioMNIST, or split: balanced for another set of speakers."
            )
        genders = {speakers[s]["gender"] for s in chosen[name]}
        if task == "gender" and genders != set(GENDERS):
            raise DataError(
                f"The {name} split of {folder} holds only {sorted(genders)} speakers; the gender task needs both."
            )
    # every file chosen is opened (its header), so a corrupt one is named here, not in the middle of training
    for wav, _, speaker, _ in recordings:
        if any(speaker in c for c in chosen.values()):
            audio_info(wav, "Restore it from the repository or remove it.")
    for name, path in outputs.items():
        entries = {}
        for wav, digit, speaker, index in recordings:
            if speaker not in chosen[name]:
                continue
            gender = speakers[speaker]["gender"]
            label = str(digit) if task == "digit" else gender
            entries[f"{digit}_{speaker:02d}_{index}"] = {
                "wav": str(wav),
                "classID": digit if task == "digit" else GENDERS.index(gender),
                "class_string": label,
                "speaker": speaker,
                "digit": digit,
                "gender": gender,
            }
        if not entries:
            raise DataError(f"The {split} {task} split leaves no recordings for {name}; check the data in {folder}.")
        atomic_write_json(path, entries)
    atomic_write_json(stamp, fingerprint)
    logger.info(
        "Wrote AudioMNIST %s manifests (%s split; speakers %s) to %s",
        task,
        split,
        "/".join(str(len(chosen[s])) for s in SPLITS),
        stamp.parent,
    )
    return outputs


def prepare_audiomnist_from_hparams(hparams):
    """Run ``prepare_audiomnist`` with the recipe's keys (once, on the main process); the contract of
    ``prepare_esc50_from_hparams``, so a recipe picks its data set with ``prepare: !name:...``."""
    from speechbrain.utils.distributed import run_on_main

    run_on_main(
        prepare_audiomnist,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_json_train": hparams["train_annotation"],
            "save_json_valid": hparams["valid_annotation"],
            "save_json_test": hparams["test_annotation"],
            "task": hparams.get("task", "digit"),
            "split": hparams.get("split", "official"),
            "split_index": hparams.get("split_index", 0),
            "split_ratios": hparams.get("split_ratios", (0.6, 0.2, 0.2)),
            "split_seed": hparams.get("split_seed", 1234),
            "skip_manifest_creation": hparams.get("skip_manifest_creation", False),
            "download": hparams.get("download", True),
            "sha256": hparams.get("archive_sha256"),
        },
    )
