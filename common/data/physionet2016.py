"""PhysioNet/CinC Challenge 2016 heart sounds: the training sets a-f, their labels and segmentations.

Layout (physionet.org/content/challenge-2016/1.0.0, ``training.zip`` and
``annotations.zip`` extracted into ``data_folder``, at any depth):

* ``training-<x>/`` (x in a-f): ``<name>.wav`` (PCG at 2 kHz, 5-120 s),
  ``<name>.hea``, and ``REFERENCE.csv`` with one ``name,label`` row per
  recording (1 abnormal, -1 normal; further columns, as the signal quality of
  ``REFERENCE_withSQI.csv``, are ignored);
* ``annotations/hand_corrected/training-<x>_StateAns/<name>_StateAns.mat``:
  the segmentation, a cell array ``state_ans`` of (sample, state) rows, each
  the 1-based sample where ``S1``, ``systole``, ``S2`` or ``diastole``
  starts (other marks, as ``(N``, start an unknown stretch).

``read_states`` turns a segmentation into one state per sample (0 unknown,
1 S1, 2 systole, 3 S2, 4 diastole; ``STATES``). The offline equivalent is
``tools/make_heart_sounds.py`` (``common.data.synthetic.heart_sounds``),
which also writes ``ground_truth.json``: where each synthetic murmur is.

``prepare_physionet2016`` lists every recording with its label, duration and
segmentation (every file is opened, so a corrupt one is named here, not in
the middle of training), and writes train / valid / test manifests of whole
recordings: a seeded split stratified by training set and label, since the
challenge's own test set is hidden (the sets do not say which recordings
share a subject, so a subject may be in two splits; say so when reporting).
Recipes cut the recordings into fixed windows (``segment_s`` / ``segment_hop_s``,
``common.data.segments``), each window with its recording's label, and decide
per recording from the mean of its windows' probabilities. Downloads are
checked against PhysioNet's published ``SHA256SUMS.txt``.
"""

import csv
import hashlib
import json
import logging
import random
import re
from pathlib import Path

import numpy as np
import torch

from common.data.audio import audio_info
from common.data.download import download_and_install, download_file, extracted
from common.errors import DataError, DataNotFoundError, IntegrityError
from common.io import atomic_write_json, stamp_matches

logger = logging.getLogger(__name__)

BASE_URL = "https://physionet.org/files/challenge-2016/1.0.0/"
ARCHIVES = ("training.zip", "annotations.zip")
SUMS_FILE = "SHA256SUMS.txt"
TRAINING_SETS = tuple("abcdef")
STATES = ("S1", "systole", "S2", "diastole")  # per-sample codes 1-4; 0 is unknown
CLASSES = ("normal", "abnormal")  # classID 0, 1; REFERENCE.csv says -1, 1
SPLITS = ("train", "valid", "test")
MANIFEST_STAMP = ".physionet2016_manifest_inputs.json"
SET_FOLDER = re.compile(r"^training-([a-z])$")


# ------------------------------------------------------------------ reading
def find_training_sets(data_folder):
    """{set letter: folder} of every ``training-<x>`` folder holding a ``REFERENCE.csv`` under ``data_folder``."""
    found = {}
    for reference in sorted(Path(data_folder).rglob("REFERENCE.csv")):
        match = SET_FOLDER.match(reference.parent.name)
        if match and match[1] not in found:
            found[match[1]] = reference.parent
    return found


def read_reference(path):
    """{recording name: classID} of a ``REFERENCE.csv`` (``name,label`` with label 1 abnormal, -1 normal)."""
    path = Path(path)
    labels = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            name = row[0].strip()
            label = row[1].strip() if len(row) > 1 else ""
            if not name or label not in ("1", "-1"):
                raise DataError(
                    f"{path}, line {line_no}: {','.join(row)!r} is not 'name,label' with label 1 (abnormal) or "
                    "-1 (normal). Fix the row or restore the file from the challenge's archive."
                )
            if name in labels:
                raise DataError(f"{path}, line {line_no}: recording {name!r} is listed twice; keep one row.")
            labels[name] = 1 if label == "1" else 0
    if not labels:
        raise DataError(f"{path} lists no recordings; restore it from the challenge's archive.")
    return labels


def state_code(name):
    """1-4 for S1, systole, S2, diastole (any case); 0 for any other mark."""
    lowered = str(name).strip().lower()
    return next((k for k, state in enumerate(STATES, start=1) if state.lower() == lowered), 0)


def read_states(path, n_samples):
    """(n_samples,) int8: the state of each sample (``STATES``; 0 before the first mark and for unknown marks)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    try:
        cells = loadmat(path)["state_ans"]
        marks = sorted(
            (int(np.asarray(row[0]).ravel()[0]) - 1, state_code(np.asarray(row[1]).ravel()[0])) for row in cells
        )
    except (MatReadError, KeyError, IndexError, TypeError, ValueError, OSError, NotImplementedError) as exc:
        raise DataError(
            f"{path} is not a segmentation in the challenge's format (a MATLAB file with a state_ans cell array of "
            f"(sample, state) rows): {exc}. Restore it from annotations.zip, or remove it."
        ) from exc
    states = np.zeros(n_samples, dtype=np.int8)
    for (start, code), (end, _) in zip(marks, [*marks[1:], (n_samples, 0)], strict=True):
        states[max(start, 0) : max(min(end, n_samples), 0)] = code
    return states


def list_recordings(data_folder, sets=None, require_segmentation=False):
    """[{name, set, wav, classID, duration, sample_rate, states}] of the chosen training sets.

    Every recording must have a label and every label a recording; every wav is opened. With
    ``require_segmentation`` each recording needs its ``_StateAns.mat`` (the segmentation-given classifier).
    """
    data_folder = Path(data_folder)
    found = find_training_sets(data_folder)
    sets = sorted(found) if not sets else list(sets)
    missing_sets = [s for s in sets if s not in found]
    if missing_sets:
        raise DataError(
            f"{data_folder} has no training-{missing_sets[0]}/REFERENCE.csv (sets found: {sorted(found) or 'none'}). "
            "Extract the challenge's training.zip there, or choose the sets it has with --sets."
        )
    segmentations = {}
    for path in data_folder.rglob("*_StateAns.mat"):
        match = re.match(r"^training-([a-z])_StateAns$", path.parent.name)
        if match:
            key = (match[1], path.name[: -len("_StateAns.mat")])
            # hand-corrected segmentations win over any other copy
            if key not in segmentations or "hand_corrected" in path.parts:
                segmentations[key] = path
    recordings = []
    for letter in sets:
        folder = found[letter]
        labels = read_reference(folder / "REFERENCE.csv")
        wavs = {p.stem: p for p in folder.glob("*.wav") if not p.name.startswith(".")}
        unlabeled = sorted(set(wavs) - set(labels))
        if unlabeled:
            raise DataError(
                f"{wavs[unlabeled[0]]} has no label in {folder / 'REFERENCE.csv'} ({len(unlabeled)} unlabeled). "
                "Add a 'name,label' row for it (1 abnormal, -1 normal) or remove the file."
            )
        absent = sorted(set(labels) - set(wavs))
        if absent:
            raise DataError(
                f"{folder / 'REFERENCE.csv'} lists {absent[0]!r} but {folder / (absent[0] + '.wav')} does not exist "
                f"({len(absent)} missing). Restore the recordings from training.zip or remove their rows."
            )
        for name in sorted(labels):
            wav = wavs[name]
            info = audio_info(wav, "Restore it from training.zip or remove it.")
            states = segmentations.get((letter, name))
            if require_segmentation and states is None:
                raise DataError(
                    f"{wav} has no segmentation (training-{letter}_StateAns/{name}_StateAns.mat); the segmentation-"
                    "given classifier needs one per recording. Extract annotations.zip into the data folder."
                )
            recordings.append(
                {
                    "name": name,
                    "set": letter,
                    "wav": str(wav),
                    "classID": labels[name],
                    "duration": info.frames / info.samplerate,
                    "sample_rate": info.samplerate,
                    "states": None if states is None else str(states),
                }
            )
    return recordings


def window_states(states, recording_rate, start_s, n_samples, sample_rate):
    """(n_samples,) int64: the states of a window of ``n_samples`` at ``sample_rate`` starting at ``start_s``,
    from a recording's per-sample ``states`` at ``recording_rate`` (nearest earlier sample; 0 past the end)."""
    times = start_s + np.arange(n_samples) / float(sample_rate)
    index = np.floor(times * recording_rate + 1e-9).astype(np.int64)
    inside = index < len(states)
    out = np.zeros(n_samples, dtype=np.int64)
    out[inside] = states[index[inside]]
    return torch.from_numpy(out)


class WindowStates:
    """The per-sample states of windows of manifest entries, each recording's segmentation read once."""

    def __init__(self):
        self.cache = {}

    def __call__(self, path, recording_rate, clip_duration, start_s, n_samples, sample_rate):
        if path is None:
            raise DataError("a recording without a segmentation reached a step that needs one; re-prepare")
        if path not in self.cache:
            self.cache[path] = read_states(path, int(round(float(recording_rate) * float(clip_duration))))
        return window_states(self.cache[path], float(recording_rate), float(start_s), n_samples, sample_rate)


def add_states(datasets, sample_rate, signal_length_s):
    """Give each window of ``datasets`` (from ``classification_datasets``) its per-sample states (``states_sig``,
    at ``sample_rate``, ``signal_length_s`` long) from its recording's segmentation, each file read once."""
    import speechbrain as sb

    states_of = WindowStates()
    n_samples = int(round(sample_rate * signal_length_s))

    @sb.utils.data_pipeline.takes("states", "recording_rate", "clip_duration", "start_s")
    @sb.utils.data_pipeline.provides("states_sig")
    def states_pipeline(path, recording_rate, duration, start_s):
        return states_of(path, recording_rate, duration, start_s, n_samples, sample_rate)

    for dataset in datasets.values():
        dataset.add_dynamic_item(states_pipeline)
        dataset.set_output_keys([*dataset.pipeline.output_mapping, "states_sig"])
    return datasets


def stratified_split(recordings, split_ratios=(0.7, 0.15, 0.15), seed=1234):
    """{split: set of names}: within each (training set, label), shuffled by ``seed`` and dealt by ``split_ratios``."""
    if len(split_ratios) != 3 or min(split_ratios) < 0 or sum(split_ratios) <= 0:
        raise DataError(f"split_ratios={list(split_ratios)} must be three non-negative shares (train, valid, test).")
    groups = {}
    for r in recordings:
        groups.setdefault((r["set"], r["classID"]), []).append(r["name"])
    chosen = {s: set() for s in SPLITS}
    rng = random.Random(seed)
    total = float(sum(split_ratios))
    for key in sorted(groups):
        names = sorted(groups[key])
        rng.shuffle(names)
        n_valid = round(len(names) * split_ratios[1] / total)
        n_test = round(len(names) * split_ratios[2] / total)
        chosen["valid"].update(names[:n_valid])
        chosen["test"].update(names[n_valid : n_valid + n_test])
        chosen["train"].update(names[n_valid + n_test :])
    return chosen


# ------------------------------------------------------- download / install
def read_sums(path):
    """{file name: sha256} of a ``SHA256SUMS.txt`` (``<hash>  <path>`` lines)."""
    sums = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            sums[parts[1].lstrip("*")] = parts[0]
    return sums


def install_archive(archive, data_folder):
    """Extract ``archive`` safely into ``data_folder`` (the challenge's zips hold training-*/ and annotations/)."""
    data_folder = Path(data_folder)
    data_folder.mkdir(parents=True, exist_ok=True)
    with extracted(archive, data_folder, "physionet2016") as staging:
        for item in sorted(staging.iterdir()):
            dest = data_folder / item.name
            if dest.exists():
                raise IntegrityError(f"{dest} already exists; remove it before installing {archive} again.")
            item.rename(dest)
    return data_folder


def ensure_physionet2016(data_folder, base_url=BASE_URL, download=True, sums_file=None):
    """The data folder with the training sets; downloaded (each archive checked against SHA256SUMS) when absent."""
    data_folder = Path(data_folder)
    if find_training_sets(data_folder):
        return data_folder
    how_to = (
        f"Download {base_url}training.zip and annotations.zip yourself, check them against {base_url}{SUMS_FILE}, "
        f"and extract both into --data_folder (now {data_folder}). Offline, `python tools/make_heart_sounds.py DIR` "
        "writes synthetic heart sounds in the same layout."
    )
    if not download:
        raise DataNotFoundError(f"No PhysioNet 2016 data in {data_folder} (no training-*/REFERENCE.csv). {how_to}")
    data_folder.mkdir(parents=True, exist_ok=True)
    sums_path = Path(sums_file) if sums_file else data_folder / SUMS_FILE
    if not sums_path.is_file():
        try:
            download_file(base_url + SUMS_FILE, sums_path)
        except OSError as exc:
            raise DataNotFoundError(
                f"No PhysioNet 2016 data in {data_folder} and {SUMS_FILE} could not be downloaded ({exc}). {how_to}"
            ) from exc
    sums = read_sums(sums_path)
    for archive in ARCHIVES:
        if archive not in sums:
            raise IntegrityError(f"{sums_path} has no checksum for {archive}; delete it and download it again.")
        download_and_install(
            data_folder,
            base_url + archive,
            archive,
            lambda path: install_archive(path, data_folder),
            "PhysioNet 2016",
            "no training-*/REFERENCE.csv",
            how_to,
            download,
            sha256=sums[archive],
        )
    return data_folder


def read_ground_truth(data_folder):
    """{name: {"label", "murmur"}} of a synthetic set's ``ground_truth.json``, or {} (the real data has none)."""
    path = Path(data_folder) / "ground_truth.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); regenerate it.") from exc


# ---------------------------------------------------------------- manifests
def prepare_physionet2016(
    data_folder,
    save_json_train,
    save_json_valid,
    save_json_test,
    sets=None,
    split_ratios=(0.7, 0.15, 0.15),
    split_seed=1234,
    require_segmentation=False,
    skip_manifest_creation=False,
    download=True,
    base_url=BASE_URL,
):
    """Ensure the challenge's training sets are in ``data_folder`` and write the split manifests (module doc).

    Entries: ``wav``, ``classID``, ``class_string`` (normal / abnormal), ``duration``, ``set``, ``states``
    (the segmentation file or null) and, for synthetic data, ``murmur`` (its phase or null).
    """
    outputs = dict(zip(SPLITS, (Path(save_json_train), Path(save_json_valid), Path(save_json_test)), strict=True))
    if skip_manifest_creation and all(p.is_file() for p in outputs.values()):
        return outputs
    folder = ensure_physionet2016(data_folder, base_url=base_url, download=download)
    recordings = list_recordings(folder, sets, require_segmentation=require_segmentation)
    truth = read_ground_truth(folder)
    listing = hashlib.sha256(json.dumps(recordings, sort_keys=True).encode()).hexdigest()
    fingerprint = {
        "listing": listing,
        "truth": hashlib.sha256(json.dumps(truth, sort_keys=True).encode()).hexdigest(),
        "sets": sorted({r["set"] for r in recordings}),
        "split_ratios": [float(r) for r in split_ratios],
        "split_seed": int(split_seed),
    }
    stamp = outputs["train"].parent / MANIFEST_STAMP
    if stamp_matches(stamp, fingerprint, outputs.values()):
        logger.info("PhysioNet 2016 manifests in %s are up to date; skipping preparation.", stamp.parent)
        return outputs
    chosen = stratified_split(recordings, split_ratios, split_seed)
    for split, path in outputs.items():
        entries = {}
        for r in recordings:
            if r["name"] not in chosen[split]:
                continue
            entries[r["name"]] = {
                "wav": r["wav"],
                "classID": r["classID"],
                "class_string": CLASSES[r["classID"]],
                "duration": r["duration"],
                "set": r["set"],
                "states": r["states"],
                "recording_rate": r["sample_rate"],
                "murmur": truth.get(r["name"], {}).get("murmur"),
            }
        if not entries:
            raise DataError(f"The {split} split of {folder} is empty; use more recordings or other split_ratios.")
        atomic_write_json(path, entries)
    atomic_write_json(stamp, fingerprint)
    logger.info("Wrote PhysioNet 2016 manifests (%d recordings) to %s", len(recordings), stamp.parent)
    return outputs


def prepare_physionet2016_from_hparams(hparams):
    """``prepare_physionet2016`` with the recipe's keys, once, on the main process."""
    from speechbrain.utils.distributed import run_on_main

    run_on_main(
        prepare_physionet2016,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_json_train": hparams["train_annotation"],
            "save_json_valid": hparams["valid_annotation"],
            "save_json_test": hparams["test_annotation"],
            "sets": hparams.get("sets"),
            "split_ratios": hparams.get("split_ratios", (0.7, 0.15, 0.15)),
            "split_seed": hparams.get("split_seed", 1234),
            "require_segmentation": bool(hparams.get("use_segmentation", False)),
            "skip_manifest_creation": hparams.get("skip_manifest_creation", False),
            "download": hparams.get("download", True),
            "base_url": hparams.get("base_url", BASE_URL),
        },
    )
