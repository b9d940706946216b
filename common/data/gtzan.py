"""GTZAN preparation: download, safe extraction, readable-file check, splits and segment manifests.

Layout: ``data_folder/genres/<genre>/<genre>.000NN.wav`` (the official
archive; ``.au`` is read too), or ``genres_original/`` (and
``Data/genres_original/``) as in the Kaggle copy. Songs are ~30 s at
22,050 Hz mono; other rates and channel counts are resampled and averaged
to mono when loaded (common.data.audio), so preparation accepts them.

Files that cannot be decoded (common copies ship a corrupt
``jazz.00054.wav``) are skipped with a warning naming each one. Hidden
files (the ``._*`` resource forks of macOS copies) are ignored.

Splits, at song level (a song's segments never straddle two splits):
``random``, stratified by genre and seeded; ``artist``, the fault-filtered
artist split of Kereliuk, Sturm & Larsen (2015), shipped in
``gtzan_splits/`` (or read from ``artist_split_folder``).

Manifests (one JSON per split, the ESC-50 manifests' format) hold one entry
per fixed-length segment (default 3 s every 3 s: ten per song) with the
song's ``clip_id``, the segment's ``start_s`` and ``duration_s``, and the
genre (``class_string``, ``classID``). They are written atomically and
reused while the audio listing and the options are unchanged.
"""

import hashlib
import logging
import math
import os
import random
import shutil
from pathlib import Path

from common.data.audio import read_audio_file
from common.data.download import check_digests, download_and_install, extracted
from common.data.segments import MIN_SEGMENT_COVERAGE, segment_entries
from common.errors import AudioError, DataError, DataNotFoundError, IntegrityError
from common.io import atomic_write_json, stamp_matches

logger = logging.getLogger(__name__)

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
GTZAN_URL = "http://opihi.cs.uvic.ca/sound/genres.tar.gz"
GTZAN_MD5 = "5b3d6dddb579ab49814ab86dba69e7c7"  # as torchaudio and mirdata check it
GENRE_FOLDERS = ("genres", "genres_original", "Data/genres_original")
AUDIO_EXTENSIONS = (".wav", ".au")
SPLITS = ("train", "valid", "test")
ARTIST_SPLIT_FILES = tuple(f"{split}_filtered.txt" for split in SPLITS)
PACKAGED_ARTIST_SPLIT = Path(__file__).resolve().parent / "gtzan_splits"
MANIFEST_STAMP = ".gtzan_manifest_inputs.json"


# ----------------------------------------------------------------- layout
def find_genres_folder(data_folder):
    """The folder holding one sub-folder per genre (``data_folder`` itself when it holds them), or None."""
    for name in GENRE_FOLDERS:
        folder = Path(data_folder) / name
        if folder.is_dir():
            return folder
    if any((Path(data_folder) / genre).is_dir() for genre in GTZAN_GENRES):
        return Path(data_folder)
    return None


def list_songs(genres_folder, genres=GTZAN_GENRES):
    """{clip_id: (path, genre)} for the audio files of each genre folder (clip_id = file stem).

    A missing genre folder raises DataNotFoundError naming it; folders of
    other names are ignored with a warning.
    """
    genres_folder = Path(genres_folder)
    missing = [g for g in genres if not (genres_folder / g).is_dir()]
    if missing:
        raise DataNotFoundError(
            f"Genre folder(s) {missing} not found in {genres_folder}. GTZAN has one folder per genre "
            f"({', '.join(genres)}); restore them, or set `genres` to the ones you have."
        )
    others = sorted(p.name for p in genres_folder.iterdir() if p.is_dir() and p.name not in genres)
    if others:
        logger.warning("Ignoring folder(s) %s in %s: not in genres %s", others, genres_folder, list(genres))
    songs = {}
    for genre in genres:
        for path in sorted((genres_folder / genre).iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
                continue
            if path.stem in songs:
                raise DataError(
                    f"Two songs are named {path.stem}: {songs[path.stem][0]} and {path}. Rename or remove one."
                )
            songs[path.stem] = (path, genre)
    if not songs:
        raise DataNotFoundError(
            f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) in the genre folders of {genres_folder}."
        )
    return songs


def readable_songs(songs):
    """Decode every song once; return {clip_id: duration_s} of those that decode.

    Each unreadable file is logged with a warning naming it and left out.
    """
    durations = {}
    for clip_id, (path, _) in songs.items():
        try:
            data, rate = read_audio_file(path)
        except AudioError as exc:
            logger.warning("Skipping unreadable GTZAN file %s: %s", path, exc)
            continue
        durations[clip_id] = data.shape[0] / rate
    return durations


def _listing_signature(songs):
    digest = hashlib.sha256()
    for clip_id in sorted(songs):
        path, genre = songs[clip_id]
        st = path.stat()
        digest.update(f"{genre}/{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()


# ------------------------------------------------------- download / install
def install_gtzan_archive(archive, data_folder, md5=None, sha256=None):
    """Verify (hash when given), extract safely and move the genre folders into ``data_folder``."""
    data_folder = Path(data_folder)
    check_digests(archive, sha256=sha256, md5=md5, what=f"Archive {archive}")
    data_folder.mkdir(parents=True, exist_ok=True)
    with extracted(archive, data_folder, "gtzan") as staging:
        found = find_genres_folder(staging)
        if found is None:
            raise IntegrityError(f"Archive {archive} holds no genres/ folder; it is not the GTZAN archive.")
        relative = found.relative_to(staging)
        dest = data_folder / (relative if relative.parts else "genres")  # genre folders at the archive's top
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(found, dest)
    return dest


def ensure_gtzan(data_folder, url=GTZAN_URL, md5=GTZAN_MD5, download=True):
    """The genres folder of ``data_folder``; downloaded and installed first when absent (and allowed)."""
    data_folder = Path(data_folder)
    found = find_genres_folder(data_folder)
    if found is not None:
        return found
    how_to = (
        f"Download {url} yourself (MD5 {md5}), extract it, and pass the folder holding genres/<genre>/*.wav "
        f"(or the Kaggle copy's genres_original/) as --data_folder (now {data_folder})."
    )
    return download_and_install(
        data_folder,
        url,
        "gtzan-genres.tar.gz",
        lambda archive: install_gtzan_archive(archive, data_folder, md5=md5),
        "GTZAN",
        f"no {' or '.join(GENRE_FOLDERS)} folder",
        how_to,
        download,
        md5=md5,
    )


# ------------------------------------------------------------------ splits
def check_ratios(split_ratios):
    """(train, valid, test) ratios: non-negative, summing to 1, a positive train share."""
    ratios = [float(r) for r in split_ratios]
    if len(ratios) != 3 or any(r < 0 for r in ratios) or ratios[0] <= 0 or not math.isclose(sum(ratios), 1.0):
        raise DataError(
            f"split_ratios={list(split_ratios)}: give three non-negative (train, valid, test) shares summing to 1, "
            "e.g. [0.7, 0.1, 0.2]."
        )
    return ratios


def random_split(song_genres, split_ratios=(0.7, 0.1, 0.2), seed=1234):
    """{split: [clip_id]}: each genre's songs shuffled (seeded) and cut by ``split_ratios``.

    Every split with a positive share gets at least one song of each genre,
    so a genre needs at least as many songs as such splits.
    """
    ratios = check_ratios(split_ratios)
    by_genre = {}
    for clip_id, genre in song_genres.items():
        by_genre.setdefault(genre, []).append(clip_id)
    splits = {split: [] for split in SPLITS}
    for genre in sorted(by_genre):
        clips = sorted(by_genre[genre])
        random.Random(f"{seed}:{genre}").shuffle(clips)  # per genre, so one genre's songs do not move another's
        n = len(clips)
        n_valid, n_test = (max(1, math.floor(r * n + 0.5)) if r > 0 else 0 for r in ratios[1:])
        if n - n_valid - n_test < 1:
            raise DataError(
                f"Genre {genre} has only {n} readable song(s): too few for split_ratios {ratios} (every split with a "
                "positive share needs one). Add songs, or set the valid/test shares to 0."
            )
        splits["valid"] += clips[:n_valid]
        splits["test"] += clips[n_valid : n_valid + n_test]
        splits["train"] += clips[n_valid + n_test :]
    return {split: sorted(clips) for split, clips in splits.items()}


def read_split_list(path, genres=GTZAN_GENRES):
    """Clip ids listed in a split file, one per line.

    Lines are file names (``blues/blues.00029.wav``, ``blues.00029.wav`` or
    ``blues.00029``) or, as in dnn-mgr's original lists, 1-based indices into
    the sorted list of the 1000 GTZAN files (30 -> blues.00029).
    """
    clips = []
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.isdigit():
            index = int(line) - 1
            if not 0 <= index < 100 * len(GTZAN_GENRES):
                raise DataError(f"{path}, line {line_no}: index {line} is outside 1..{100 * len(GTZAN_GENRES)}.")
            genre = GTZAN_GENRES[index // 100]
            clips.append(f"{genre}.{index % 100:05d}")
            continue
        name = line.split()[0].replace("\\", "/").rsplit("/", 1)[-1]
        stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in AUDIO_EXTENSIONS else name
        clips.append(stem)
    return clips


def artist_split(song_genres, artist_split_folder=None):
    """{split: [clip_id]} from ``train_filtered.txt``, ``valid_filtered.txt`` and ``test_filtered.txt``.

    ``artist_split_folder``: a folder with those three files; by default the
    fault-filtered lists shipped with the toolkit. Listed songs that are not
    available (missing or unreadable) are left out with a warning; songs in
    no list are left out (the split drops 70 faulty songs on purpose).
    """
    folder = Path(artist_split_folder) if artist_split_folder else PACKAGED_ARTIST_SPLIT
    absent = [name for name in ARTIST_SPLIT_FILES if not (folder / name).is_file()]
    if absent:
        raise DataNotFoundError(
            f"Artist split file(s) {absent} not found in {folder}. The artist split needs {list(ARTIST_SPLIT_FILES)}, "
            "one song per line (e.g. blues/blues.00029.wav); point artist_split_folder at a folder holding them."
        )
    splits, seen = {}, {}
    for split, name in zip(SPLITS, ARTIST_SPLIT_FILES, strict=True):
        listed = read_split_list(folder / name)
        for clip in listed:
            if clip in seen and seen[clip] != split:
                raise DataError(
                    f"{clip} is listed in both {seen[clip]} and {split} of {folder}; the splits must be disjoint."
                )
            seen[clip] = split
        unavailable = sorted(c for c in set(listed) if c not in song_genres)
        if unavailable:
            shown = ", ".join(unavailable[:10]) + (" ..." if len(unavailable) > 10 else "")
            logger.warning(
                "%d song(s) of %s are missing or unreadable and left out: %s", len(unavailable), folder / name, shown
            )
        splits[split] = sorted(c for c in set(listed) if c in song_genres)
    unlisted = len(set(song_genres) - set(seen))
    if unlisted:
        logger.info("%d song(s) are in no list of %s and are not used", unlisted, folder)
    return splits


# ---------------------------------------------------------------- manifests
def prepare_gtzan(
    data_folder,
    save_folder=None,
    split="random",
    segment_s=3.0,
    segment_hop_s=None,
    split_ratios=(0.7, 0.1, 0.2),
    split_seed=1234,
    artist_split_folder=None,
    genres=GTZAN_GENRES,
    save_json_train=None,
    save_json_valid=None,
    save_json_test=None,
    skip_manifest_creation=False,
    download=True,
    url=GTZAN_URL,
    md5=GTZAN_MD5,
):
    """Ensure GTZAN is in ``data_folder`` and write train/valid/test segment manifests.

    Manifests go to ``save_json_*`` (default ``save_folder/{train,valid,test}.json``).
    They are reused when the audio listing and every option are unchanged
    (a fingerprint is stored next to them); each is written atomically.
    Returns {split: manifest path}.
    """
    if split not in ("random", "artist"):
        raise DataError(
            f"split={split!r}: use 'random' (stratified, seeded) or 'artist' (fault-filtered artist split)."
        )
    explicit = (save_json_train, save_json_valid, save_json_test)
    if save_folder is None and not all(explicit):
        raise DataError("Give save_folder, or all of save_json_train, save_json_valid and save_json_test.")
    outputs = {
        name: Path(path) if path else Path(save_folder) / f"{name}.json"
        for name, path in zip(SPLITS, explicit, strict=True)
    }
    if skip_manifest_creation and all(p.is_file() for p in outputs.values()):
        return outputs
    genres = list(genres)
    songs = list_songs(ensure_gtzan(data_folder, url=url, md5=md5, download=download), genres)
    fingerprint = {
        "listing": _listing_signature(songs),
        "data_folder": str(Path(data_folder).resolve()),
        "genres": genres,
        "split": split,
        "segment_s": float(segment_s),
        "segment_hop_s": float(segment_hop_s or segment_s),
        "min_segment_coverage": MIN_SEGMENT_COVERAGE,
    }
    if split == "random":
        fingerprint.update(split_ratios=check_ratios(split_ratios), split_seed=split_seed)
    else:
        folder = Path(artist_split_folder) if artist_split_folder else PACKAGED_ARTIST_SPLIT
        fingerprint["artist_lists"] = [
            hashlib.sha256((folder / n).read_bytes()).hexdigest() if (folder / n).is_file() else None
            for n in ARTIST_SPLIT_FILES
        ]
    stamp = outputs["train"].parent / MANIFEST_STAMP
    if stamp_matches(stamp, fingerprint, outputs.values()):
        logger.info("GTZAN manifests in %s are up to date; skipping preparation.", stamp.parent)
        return outputs
    durations = readable_songs(songs)
    song_genres = {clip: songs[clip][1] for clip in durations}
    if split == "random":
        clips_of = random_split(song_genres, split_ratios, split_seed)
    else:
        clips_of = artist_split(song_genres, artist_split_folder)
    for name, path in outputs.items():
        if not clips_of[name]:
            raise DataError(f"The {split} split leaves no songs for {name}; check the data in {data_folder}.")
        songs_entries = {
            clip: {
                "wav": str(songs[clip][0]),
                "classID": genres.index(song_genres[clip]),
                "class_string": song_genres[clip],
                "duration": durations[clip],
            }
            for clip in clips_of[name]
        }
        atomic_write_json(path, segment_entries(songs_entries, segment_s, segment_hop_s))
    atomic_write_json(stamp, fingerprint)
    logger.info(
        "Wrote GTZAN %s-split manifests (%s songs) to %s",
        split,
        "/".join(str(len(clips_of[s])) for s in SPLITS),
        stamp.parent,
    )
    return outputs


def prepare_gtzan_from_hparams(hparams):
    """Run ``prepare_gtzan`` with the recipe's keys (once, on the main process); the contract of
    ``prepare_esc50_from_hparams``, so a recipe picks its data set with ``prepare: !name:...``."""
    from speechbrain.utils.distributed import run_on_main

    run_on_main(
        prepare_gtzan,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_json_train": hparams["train_annotation"],
            "save_json_valid": hparams["valid_annotation"],
            "save_json_test": hparams["test_annotation"],
            "split": hparams.get("split", "random"),
            "segment_s": hparams.get("segment_s", 3.0),
            "segment_hop_s": hparams.get("segment_hop_s"),
            "split_ratios": hparams.get("split_ratios", (0.7, 0.1, 0.2)),
            "split_seed": hparams.get("split_seed", 1234),
            "artist_split_folder": hparams.get("artist_split_folder"),
            "genres": hparams.get("genres") or GTZAN_GENRES,
            "skip_manifest_creation": hparams.get("skip_manifest_creation", False),
            "download": hparams.get("download", True),
            "md5": hparams.get("archive_md5", GTZAN_MD5),
        },
    )
