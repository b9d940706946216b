"""Music emotion data: the Mid-level Perceptual Features dataset and the Soundtracks emotion dataset.

Layouts (each extracted into its own folder, found at any depth below it):

* Mid-level Perceptual Features (Aljanaki & Soleymani 2018, osf.io/5aupt):
  ``metadata_annotations/annotations.csv``, comma-separated, one row per clip:
  ``song_id`` and the mean ratings (1-10) of ``melody`` (melodiousness),
  ``articulation``, ``rhythm_stability``, ``rhythm_complexity``,
  ``dissonance``, ``tonal_stability``, ``minorness``; ``audio/<song_id>.mp3``.
  (``metadata.csv`` beside it, semicolon-separated, names each clip's source
  and artist; it is not needed.)
* Soundtracks (Eerola & Vuoskoski 2011, osf.io/p6vkg): ``Set1/<NNN>.mp3``
  (001-360) and ``mean_ratings_set1.csv``, one row per clip: its number and
  the mean ratings (1-9) of ``valence``, ``energy``, ``tension``, ``anger``,
  ``fear``, ``happy``, ``sad``, ``tender`` (further columns, e.g. TARGET, are
  ignored).

Column names are matched case- and space-insensitively. Audio may be mp3, wav,
flac or ogg (read with soundfile; the offline generator,
``tools/make_midlevel_music.py``, writes wav).

``prepare_music_emotion`` opens every clip (a corrupt, empty or missing one
is named before training), splits each data set at random with a seed, and
writes train / valid / test manifests whose entries carry ``mid`` (7 ratings)
and/or ``emotion`` (8 ratings), NaN for what a clip's data set does not rate:
the joint model learns the mid-level features from the first set and the
emotions from the second, as Chowdhury et al. do. Downloads list the OSF
project's files through the OSF API and check each against the SHA-256 that
OSF publishes for it.
"""

import csv
import json
import logging
import math
import random
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from common.data.audio import audio_info, load_audio
from common.data.download import download_file, extracted
from common.errors import DataError, DataNotFoundError
from common.io import atomic_write_json, stamp_matches

logger = logging.getLogger(__name__)

MIDLEVEL_FEATURES = (
    "melodiousness",
    "articulation",
    "rhythm_stability",
    "rhythm_complexity",
    "dissonance",
    "tonal_stability",
    "minorness",
)
MIDLEVEL_COLUMNS = ("melody", *MIDLEVEL_FEATURES[1:])  # annotations.csv calls melodiousness "melody"
EMOTIONS = ("valence", "energy", "tension", "anger", "fear", "happy", "sad", "tender")
SOUNDTRACK_COLUMNS = EMOTIONS
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg")
SPLITS = ("train", "valid", "test")
OSF_API = "https://api.osf.io/v2/nodes/{node}/files/osfstorage/"
OSF_PROJECTS = {"midlevel": "5aupt", "soundtracks": "p6vkg"}
MANIFEST_STAMP = ".music_emotion_manifest_inputs.json"
OFFLINE_HINT = (
    "Download the Mid-level Perceptual Features dataset from https://osf.io/5aupt/ and the Soundtracks dataset "
    "from https://osf.io/p6vkg/ and extract them into --midlevel_folder and --soundtracks_folder; offline, "
    "python tools/make_midlevel_music.py DIR writes synthetic music in both layouts (DIR/midlevel, DIR/soundtracks)."
)


def _key(name):
    """A column name as compared: case, surrounding space, inner spaces and hyphens do not matter (a byte-order
    mark is dropped when the file is read as utf-8-sig)."""
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def read_ratings(path, id_columns, columns, delimiter=","):
    """{clip id: (len(columns),) float ratings} of a ratings CSV; a missing column or a bad row names the line."""
    path = Path(path)
    wanted = [_key(c) for c in columns]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=delimiter))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path} ({exc}). Restore it from the data set's archive.") from exc
    if not rows:
        raise DataError(f"{path} is empty. Restore it from the data set's archive.")
    header = [_key(h) for h in rows[0]]
    id_at = next((header.index(_key(c)) for c in id_columns if _key(c) in header), None)
    missing = [c for c, k in zip(columns, wanted, strict=True) if k not in header]
    if id_at is None or missing:
        raise DataError(
            f"{path}: its header {rows[0]} lacks "
            f"{'an id column (' + ' or '.join(id_columns) + ')' if id_at is None else ''}"
            f"{' and ' if id_at is None and missing else ''}{'the columns ' + str(missing) if missing else ''}. "
            "Is this the data set's own ratings file?"
        )
    at = [header.index(k) for k in wanted]
    ratings = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            clip = row[id_at].strip()
            values = np.array([float(row[i]) for i in at])
        except (IndexError, ValueError) as exc:
            raise DataError(
                f"{path}, line {line_no}: {row!r} is not an id and {len(at)} numbers ({exc}). Fix or remove the row."
            ) from exc
        if not clip or not np.isfinite(values).all():
            raise DataError(
                f"{path}, line {line_no}: an empty id or a non-finite rating in {row!r}. Fix or remove the row."
            )
        clip = str(int(clip)) if clip.isdigit() else clip
        if clip in ratings:
            raise DataError(f"{path}, line {line_no}: clip {clip} is rated twice. Remove one of the rows.")
        ratings[clip] = values
    if not ratings:
        raise DataError(f"{path} holds no ratings. Restore it from the data set's archive.")
    return ratings


def _find_one(folder, name):
    found = sorted(Path(folder).rglob(name))
    return found[0] if found else None


def _audio_file(folder, stem):
    for ext in AUDIO_EXTENSIONS:
        for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def read_midlevel(folder):
    """[(clip id, audio path, (7,) ratings)] of a Mid-level Perceptual Features folder."""
    annotations = _find_one(folder, "annotations.csv")
    if annotations is None:
        raise DataNotFoundError(f"No metadata_annotations/annotations.csv under {folder}. {OFFLINE_HINT}")
    ratings = read_ratings(annotations, ("song_id", "song id", "id"), MIDLEVEL_COLUMNS)
    audio = annotations.parent.parent / "audio"
    if not audio.is_dir():
        audio = next((p for p in sorted(Path(folder).rglob("audio")) if p.is_dir()), None)
    if audio is None:
        raise DataNotFoundError(f"No audio/ folder beside {annotations.parent}. {OFFLINE_HINT}")
    return _with_audio(ratings, audio, str, annotations)


def read_soundtracks(folder):
    """[(clip id NNN, audio path, (8,) ratings)] of a Soundtracks folder (Set1)."""
    table = _find_one(folder, "mean_ratings_set1.csv")
    if table is None:
        raise DataNotFoundError(f"No mean_ratings_set1.csv under {folder}. {OFFLINE_HINT}")
    ratings = read_ratings(table, ("number", "no", "id", "excerpt"), SOUNDTRACK_COLUMNS)
    audio = next((p for p in sorted(Path(folder).rglob("*")) if p.is_dir() and p.name.lower() == "set1"), None)
    if audio is None:
        raise DataNotFoundError(f"No Set1/ folder of audio under {folder}. {OFFLINE_HINT}")
    return _with_audio(ratings, audio, lambda clip: f"{int(clip):03d}" if clip.isdigit() else clip, table)


def _with_audio(ratings, audio_folder, stem_of, table):
    entries, missing = [], []
    for clip, values in ratings.items():
        path = _audio_file(audio_folder, stem_of(clip))
        if path is None:
            missing.append(stem_of(clip))
        else:
            entries.append((stem_of(clip), path, values))
    if missing:
        raise DataError(
            f"{len(missing)} clips rated in {table} have no audio in {audio_folder} (e.g. {missing[:5]}). "
            "Extract the whole audio archive there, or remove their rows."
        )
    return entries


# ------------------------------------------------------------------ download
def osf_files(node, api=OSF_API, timeout=60):
    """[(name, download url, sha256)] of every file of an OSF project's storage (folders followed, pages too)."""
    files, pending = [], [api.format(node=node)]
    while pending:
        url = pending.pop()
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            listing = json.load(resp)
        for item in listing.get("data", []):
            attributes = item.get("attributes", {})
            if attributes.get("kind") == "folder":
                pending.append(item["relationships"]["files"]["links"]["related"]["href"])
            else:
                sha256 = ((attributes.get("extra") or {}).get("hashes") or {}).get("sha256")
                files.append((attributes["name"], item["links"]["download"], sha256))
        if (listing.get("links") or {}).get("next"):
            pending.append(listing["links"]["next"])
    return files


def download_osf_project(node, folder, api=OSF_API):
    """Every file of the OSF project into ``folder``, each checked against OSF's SHA-256; archives extracted
    safely (members escaping the folder refuse the archive) and removed."""
    folder = Path(folder)
    try:
        files = osf_files(node, api)
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise DataNotFoundError(f"Cannot list the files of osf.io/{node} ({exc}). {OFFLINE_HINT}") from exc
    for name, url, sha256 in files:
        if not sha256:
            raise DataError(f"osf.io/{node} publishes no SHA-256 for {name}; refusing an unverifiable download.")
        dest = folder / name
        logger.info("Downloading %s from osf.io/%s", name, node)
        try:
            download_file(url, dest, sha256=sha256)
        except (urllib.error.URLError, OSError) as exc:
            raise DataNotFoundError(f"Download of {name} from osf.io/{node} failed ({exc}). {OFFLINE_HINT}") from exc
        if dest.suffix.lower() == ".zip":
            with extracted(dest, folder, dest.stem) as staging:
                for item in staging.iterdir():
                    item.rename(folder / item.name)
            dest.unlink()


def ensure_data(folder, which, download=True, api=OSF_API):
    """The folder's entries (``read_midlevel`` / ``read_soundtracks``), downloading the project if absent."""
    read = read_midlevel if which == "midlevel" else read_soundtracks
    try:
        return read(folder)
    except DataNotFoundError:
        if not download:
            raise
    download_osf_project(OSF_PROJECTS[which], folder, api)
    return read(folder)


# ------------------------------------------------------------------ manifests
def split_ids(ids, ratios, seed):
    """{split: ids}: a seeded shuffle cut at the ratios (train, valid, test)."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise DataError(f"split_ratios {ratios} must be three non-negative numbers summing to 1.")
    ids = sorted(ids)
    random.Random(seed).shuffle(ids)
    n_train, n_valid = int(round(ratios[0] * len(ids))), int(round(ratios[1] * len(ids)))
    return {"train": ids[:n_train], "valid": ids[n_train : n_train + n_valid], "test": ids[n_train + n_valid :]}


def prepare_music_emotion(
    midlevel_folder,
    soundtracks_folder,
    manifest_paths,
    split_ratios=(0.8, 0.1, 0.1),
    soundtracks_split_ratios=(0.6, 0.2, 0.2),
    seed=1234,
    download=True,
    skip_prep=False,
):
    """Write {train, valid, test} manifests (JSON {id: {wav, duration, dataset, mid, emotion}}) of both sets."""
    manifest_paths = {s: Path(manifest_paths[s]) for s in SPLITS}
    fingerprint = {
        "midlevel": str(Path(midlevel_folder).resolve()) if midlevel_folder else None,
        "soundtracks": str(Path(soundtracks_folder).resolve()),
        "ratios": [list(split_ratios), list(soundtracks_split_ratios)],
        "seed": seed,
    }
    stamp = manifest_paths["train"].parent / MANIFEST_STAMP
    if skip_prep or stamp_matches(stamp, fingerprint, manifest_paths.values()):
        logger.info("Music-emotion manifests in %s are up to date; skipping preparation", stamp.parent)
        return
    manifests = {s: {} for s in SPLITS}
    sets = [("soundtracks", soundtracks_folder, soundtracks_split_ratios)]
    if midlevel_folder:
        sets.insert(0, ("midlevel", midlevel_folder, split_ratios))
    nan_mid, nan_emotion = [math.nan] * len(MIDLEVEL_FEATURES), [math.nan] * len(EMOTIONS)
    for which, folder, ratios in sets:
        entries = {clip: (path, values) for clip, path, values in ensure_data(Path(folder), which, download)}
        for split, ids in split_ids(entries, ratios, seed).items():
            for clip in ids:
                path, values = entries[clip]
                info = audio_info(path, "Replace or remove the clip (and its ratings row).")
                manifests[split][f"{which}/{clip}"] = {
                    "wav": str(path),
                    "duration": info.duration,
                    "dataset": which,
                    "mid": values.tolist() if which == "midlevel" else nan_mid,
                    "emotion": values.tolist() if which == "soundtracks" else nan_emotion,
                }
    for split, path in manifest_paths.items():
        atomic_write_json(path, manifests[split])
    atomic_write_json(stamp, fingerprint)
    logger.info("Music-emotion manifests: %s", {s: len(m) for s, m in manifests.items()})


def prepare_music_emotion_from_hparams(hparams):
    return prepare_music_emotion(
        hparams.get("midlevel_folder"),
        hparams["soundtracks_folder"],
        {s: hparams[f"{s}_annotation"] for s in SPLITS},
        split_ratios=hparams.get("split_ratios", (0.8, 0.1, 0.1)),
        soundtracks_split_ratios=hparams.get("soundtracks_split_ratios", (0.6, 0.2, 0.2)),
        seed=hparams.get("split_seed", 1234),
        download=hparams.get("download", True),
        skip_prep=hparams.get("skip_manifest_creation", False),
    )


def read_targets(manifest_path):
    """(ids, (N, 7) mid, (N, 8) emotion) of a manifest, NaN where a clip is not rated."""
    with open(manifest_path, encoding="utf-8") as f:
        entries = json.load(f)
    ids = list(entries)
    mid = np.array([entries[i]["mid"] for i in ids], dtype=np.float64).reshape(-1, len(MIDLEVEL_FEATURES))
    emotion = np.array([entries[i]["emotion"] for i in ids], dtype=np.float64).reshape(-1, len(EMOTIONS))
    return ids, mid, emotion


def emotion_datasets(manifest_paths, sample_rate, signal_length_s):
    """{split: DynamicItemDataset} of (sig, mid, emotion): the first ``signal_length_s`` of each clip (padded),
    decoded once and kept in memory (the front-end is fixed, the clips are short)."""
    import speechbrain as sb
    import torch

    datasets = {}
    for split, path in manifest_paths.items():
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        data = {
            clip: {
                "sig": load_audio(e["wav"], sample_rate, length_s=signal_length_s),
                "mid": torch.tensor(e["mid"], dtype=torch.float32),
                "emotion": torch.tensor(e["emotion"], dtype=torch.float32),
            }
            for clip, e in entries.items()
        }
        dataset = sb.dataio.dataset.DynamicItemDataset(data)
        dataset.set_output_keys(["id", "sig", "mid", "emotion"])
        datasets[split] = dataset
    return datasets
