"""ESC-50 preparation: download, safe extraction, verification and manifests.

The official archive is fetched to a temporary file, moved into place
atomically, extracted member by member (refusing any that would land outside
the target folder) and verified before the folder is marked ready: every file
of ``meta/esc50.csv`` present and decodable and, when a SHA-256 is given, the
archive's hash. No hash is published for that archive, so none is assumed.

Manifests are SpeechBrain-style JSON files, one per split, written atomically
and reused as long as their inputs (metadata, audio listing, folds) are the
same.
"""

import codecs
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import soundfile as sf

from common.data.audio import read_audio_file
from common.data.download import (  # noqa: F401 (re-exported)
    check_digests,
    download_and_install,
    download_file,
    file_sha256,
    safe_extract_zip,
)
from common.errors import DataError, DataNotFoundError, IntegrityError
from common.io import atomic_write_json, stamp_matches

logger = logging.getLogger(__name__)

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
REQUIRED_COLUMNS = ("filename", "fold", "target", "category")
VALID_FOLDS = (1, 2, 3, 4, 5)
VERIFIED_MARKER = ".esc50_verified.json"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


# ----------------------------------------------------------------- metadata
def _read_metadata_text(csv_path):
    """The CSV's text: UTF-8, with a UTF-8 byte-order mark (as spreadsheet exports write) dropped and said so."""
    raw = Path(csv_path).read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(
            f"{csv_path} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8 "
            "(in a spreadsheet: 'CSV UTF-8'; or `iconv -f UTF-16 -t UTF-8`)."
        )
    if raw.startswith(codecs.BOM_UTF8):
        logger.warning("%s starts with a UTF-8 byte-order mark (BOM); it is ignored.", csv_path)
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{csv_path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}; Latin-1 or "
            "Windows-1252, perhaps). Re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 esc50.csv > fixed.csv`."
        ) from exc


def read_metadata(csv_path):
    """Read and validate ``meta/esc50.csv``; return a list of row dicts.

    Every row gets ``fold`` and ``target`` as ints. Raises DataError naming
    the file, the row and the field for anything malformed: a non-integer,
    negative or out-of-range value, a clip listed twice, text that is not UTF-8.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataNotFoundError(
            f"Metadata file {csv_path} not found. An ESC-50 data folder holds "
            "meta/esc50.csv and audio/*.wav, as in the official archive."
        )
    reader = csv.DictReader(io.StringIO(_read_metadata_text(csv_path), newline=""))
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{csv_path} lacks column(s) {missing} (has {columns}). The "
            f"ESC-50 metadata needs at least {list(REQUIRED_COLUMNS)}."
        )
    rows, lines_of = [], {}
    for line, row in enumerate(reader, start=2):
        try:
            row["fold"] = int(row["fold"])
            row["target"] = int(row["target"])
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{csv_path}, line {line}: 'fold' and 'target' must be "
                f"integers, got fold={row.get('fold')!r} "
                f"target={row.get('target')!r}."
            ) from exc
        if row["fold"] not in VALID_FOLDS:
            raise DataError(
                f"{csv_path}, line {line}: fold {row['fold']} of {row['filename']} is not one of {list(VALID_FOLDS)}."
            )
        if row["target"] < 0:
            raise DataError(
                f"{csv_path}, line {line}: target {row['target']} of {row['filename']} is negative; class "
                "targets are 0, 1, 2, ... (one per category)."
            )
        if not row["filename"] or not row["category"]:
            raise DataError(f"{csv_path}, line {line}: empty filename or category.")
        # Manifests are keyed by the file's stem: a second row of the same clip (or of a.wav and a.flac)
        # would put one recording in two splits, or silently replace the first row.
        lines_of.setdefault(Path(row["filename"]).stem, []).append((line, row["filename"]))
        rows.append(row)
    duplicated = {stem: found for stem, found in lines_of.items() if len(found) > 1}
    if duplicated:
        shown = "; ".join(
            ", ".join(f"line {line} ({name})" for line, name in found) for found in list(duplicated.values())[:5]
        )
        raise DataError(
            f"{csv_path} lists {len(duplicated)} clip(s) more than once: {shown}"
            f"{' ...' if len(duplicated) > 5 else ''}. Each clip must have one row (one fold, one target); "
            "remove the extra rows."
        )
    if not rows:
        raise DataError(f"{csv_path} has no data rows.")
    categories = {}
    for row in rows:
        if categories.setdefault(row["target"], row["category"]) != row["category"]:
            raise DataError(
                f"{csv_path}: target {row['target']} names two categories "
                f"({categories[row['target']]!r} and {row['category']!r})."
            )
    return rows


def check_folds(train_fold_nums, valid_fold_nums, test_fold_nums):
    """Folds must be in 1..5 and the three lists disjoint; return them as lists."""
    folds = {}
    for name, value in (
        ("train_fold_nums", train_fold_nums),
        ("valid_fold_nums", valid_fold_nums),
        ("test_fold_nums", test_fold_nums),
    ):
        value = [value] if isinstance(value, int) else list(value)
        bad = [v for v in value if v not in VALID_FOLDS]
        if bad or not value:
            raise DataError(f"{name}={value}: folds must be a non-empty list of values in {list(VALID_FOLDS)}.")
        folds[name] = value
    names = list(folds)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common_folds = sorted(set(folds[a]) & set(folds[b]))
            if common_folds:
                raise DataError(
                    f"{a}={folds[a]} and {b}={folds[b]} overlap on fold(s) {common_folds}; they must be disjoint."
                )
    return folds["train_fold_nums"], folds["valid_fold_nums"], folds["test_fold_nums"]


# ------------------------------------------------------------- verification
SAMPLED_BYTES = 4096  # per place sampled in each audio file by the verification fingerprint


def _sampled_content(path, size):
    """A few KiB from the start, middle and end of a file: a changed header or a rewritten clip changes
    them, even when the size and modification time were kept (a copy with ``cp -p``, a restore)."""
    with open(path, "rb") as f:
        parts = []
        for offset in sorted({0, max(0, size // 2 - SAMPLED_BYTES // 2), max(0, size - SAMPLED_BYTES)}):
            f.seek(offset)
            parts.append(f.read(SAMPLED_BYTES))
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _listing_signature(csv_path, audio_folder):
    """A cheap fingerprint of the metadata and audio folder (names, sizes, mtimes and sampled content)."""
    digest = hashlib.sha256(Path(csv_path).read_bytes())
    for entry in sorted(os.scandir(audio_folder), key=lambda e: e.name):
        if entry.is_file():
            st = entry.stat()
            content = _sampled_content(entry.path, st.st_size)
            digest.update(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}:{content};".encode())
    return digest.hexdigest()


def verify_esc50(data_folder, audio_folder=None, decode=True):
    """Check that every file listed in meta/esc50.csv is present and decodable.

    Audio files that the metadata does not list are reported with a warning
    and ignored. Returns the validated metadata rows.
    """
    data_folder = Path(data_folder)
    audio_folder = Path(audio_folder) if audio_folder else data_folder / "audio"
    rows = read_metadata(data_folder / "meta" / "esc50.csv")
    if not audio_folder.is_dir():
        raise DataNotFoundError(f"Audio folder {audio_folder} not found; expected audio/*.wav next to meta/esc50.csv.")
    on_disk = {p.name for p in audio_folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS}
    listed = {row["filename"] for row in rows}
    unsupported = sorted(n for n in listed - on_disk if (audio_folder / n).is_file())
    if unsupported:
        shown = ", ".join(unsupported[:5]) + (" ..." if len(unsupported) > 5 else "")
        raise DataError(
            f"{len(unsupported)} file(s) listed in {data_folder / 'meta' / 'esc50.csv'} are in {audio_folder} but "
            f"not in a format the recipes read ({', '.join(AUDIO_EXTENSIONS)}): {shown}. Convert them (e.g. "
            "`ffmpeg -i clip.mp3 clip.wav`) and rename them in the metadata."
        )
    missing = sorted(listed - on_disk)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{len(missing)} file(s) listed in {data_folder / 'meta' / 'esc50.csv'} are "
            f"missing from {audio_folder}: {shown}. Restore them, or remove their rows."
        )
    extra = sorted(on_disk - listed)
    if extra:
        shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
        logger.warning(
            "%d audio file(s) in %s are not in the metadata and are ignored: %s", len(extra), audio_folder, shown
        )
    if decode:
        for row in rows:
            read_audio_file(audio_folder / row["filename"])
    return rows


def is_verified(data_folder, audio_folder=None):
    """True when a verification marker matches the folder as it is now."""
    data_folder = Path(data_folder)
    audio_folder = Path(audio_folder) if audio_folder else data_folder / "audio"
    marker = data_folder / VERIFIED_MARKER
    csv_path = data_folder / "meta" / "esc50.csv"
    if not (marker.is_file() and csv_path.is_file() and audio_folder.is_dir()):
        return False
    try:
        saved = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return saved.get("signature") == _listing_signature(csv_path, audio_folder)


def mark_verified(data_folder, audio_folder=None, archive_sha256=None):
    """Write the verification marker (skipped, with a note, on read-only folders)."""
    data_folder = Path(data_folder)
    audio_folder = Path(audio_folder) if audio_folder else data_folder / "audio"
    record = {"signature": _listing_signature(data_folder / "meta" / "esc50.csv", audio_folder)}
    if archive_sha256:
        record["archive_sha256"] = archive_sha256
    try:
        atomic_write_json(data_folder / VERIFIED_MARKER, record)
    except OSError as exc:
        logger.info("Could not write %s (%s); the folder will be re-verified next time.", VERIFIED_MARKER, exc)


# ------------------------------------------------------- download / extract
def install_esc50_archive(zip_path, data_folder, sha256=None):
    """Verify (hash when given), extract safely and move ESC-50 into ``data_folder``."""
    data_folder = Path(data_folder)
    digest = check_digests(zip_path, sha256=sha256, what=f"Archive {zip_path}")
    staging = Path(tempfile.mkdtemp(prefix=".esc50-extract-", dir=data_folder.parent))
    try:
        safe_extract_zip(zip_path, staging)
        tops = [p for p in staging.iterdir() if p.is_dir()]
        root = tops[0] if len(tops) == 1 and not (staging / "meta").exists() else staging
        if not (root / "meta" / "esc50.csv").is_file():
            raise IntegrityError(f"Archive {zip_path} holds no meta/esc50.csv; it is not the ESC-50 archive.")
        verify_esc50(root)
        data_folder.mkdir(parents=True, exist_ok=True)
        for item in root.iterdir():
            dest = data_folder / item.name
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            os.replace(item, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    mark_verified(data_folder, archive_sha256=digest)
    return digest


def ensure_esc50(data_folder, audio_folder=None, url=ESC50_URL, sha256=None, download=True):
    """Make sure verified ESC-50 data is in ``data_folder``; download if absent."""
    data_folder = Path(data_folder)
    if is_verified(data_folder, audio_folder):
        return
    if (data_folder / "meta" / "esc50.csv").is_file():
        verify_esc50(data_folder, audio_folder)
        mark_verified(data_folder, audio_folder)
        return
    how_to = (
        f"Download {url} yourself, unzip it, and pass the folder holding meta/esc50.csv and "
        f"audio/ as --data_folder (now {data_folder})."
    )
    download_and_install(
        data_folder,
        url,
        "esc50-master.zip",
        lambda archive: install_esc50_archive(archive, data_folder, sha256=sha256),
        "ESC-50",
        "meta/esc50.csv missing",
        how_to,
        download,
        sha256=sha256,
    )


# ---------------------------------------------------------------- manifests
def _manifest_entries(rows, audio_folder, folds):
    entries = {}
    for row in rows:
        if row["fold"] not in folds:
            continue
        path = Path(audio_folder) / row["filename"]
        info = sf.info(str(path))
        entries[Path(row["filename"]).stem] = {
            "wav": str(path),
            "classID": row["target"],
            "class_string": row["category"],
            "fold": row["fold"],
            "duration": info.frames / info.samplerate,
        }
    return entries


def prepare_esc50(
    data_folder,
    save_json_train,
    save_json_valid,
    save_json_test,
    train_fold_nums=(1, 2, 3),
    valid_fold_nums=(4,),
    test_fold_nums=(5,),
    audio_data_folder=None,
    skip_manifest_creation=False,
    sha256=None,
    download=True,
):
    """Ensure the data is ready and write train/valid/test JSON manifests.

    Manifests are reused when the metadata, the audio folder listing and the
    folds are unchanged (a fingerprint is stored next to them). Each manifest
    is written atomically, so a failure never leaves a half-written one and
    earlier manifests stay as they were.
    """
    folds = check_folds(train_fold_nums, valid_fold_nums, test_fold_nums)
    data_folder = Path(data_folder)
    audio_folder = Path(audio_data_folder) if audio_data_folder else data_folder / "audio"
    outputs = [Path(save_json_train), Path(save_json_valid), Path(save_json_test)]
    if skip_manifest_creation and all(p.is_file() for p in outputs):
        return
    ensure_esc50(data_folder, audio_folder, sha256=sha256, download=download)
    csv_path = data_folder / "meta" / "esc50.csv"
    fingerprint = {
        "listing": _listing_signature(csv_path, audio_folder),
        "audio_folder": str(audio_folder.resolve()),
        "folds": [list(f) for f in folds],
    }
    stamp = outputs[0].parent / ".esc50_manifest_inputs.json"
    if stamp_matches(stamp, fingerprint, outputs):
        logger.info("Manifests in %s are up to date; skipping preparation.", stamp.parent)
        return
    rows = read_metadata(csv_path)
    present = sorted({row["fold"] for row in rows})
    for split, split_folds in zip(("train", "valid", "test"), folds, strict=True):
        if not any(row["fold"] in split_folds for row in rows):  # before any manifest is written
            raise DataError(
                f"The {split} split ({split}_fold_nums={list(split_folds)}) has no clips: {csv_path} has rows "
                f"in fold(s) {present} only. Set --{split}_fold_nums to folds that hold clips."
            )
    for path, split_folds in zip(outputs, folds, strict=True):
        atomic_write_json(path, _manifest_entries(rows, audio_folder, split_folds))
    atomic_write_json(stamp, fingerprint)
    logger.info("Wrote manifests %s", ", ".join(map(str, outputs)))


def prepare_esc50_from_hparams(hparams):
    """Run ``prepare_esc50`` with the recipe's keys (once, on the main process)."""
    from speechbrain.utils.distributed import run_on_main

    run_on_main(
        prepare_esc50,
        kwargs={
            "data_folder": hparams["data_folder"],
            "audio_data_folder": hparams["audio_data_folder"],
            "save_json_train": hparams["train_annotation"],
            "save_json_valid": hparams["valid_annotation"],
            "save_json_test": hparams["test_annotation"],
            "train_fold_nums": hparams["train_fold_nums"],
            "valid_fold_nums": hparams["valid_fold_nums"],
            "test_fold_nums": hparams["test_fold_nums"],
            "skip_manifest_creation": hparams["skip_manifest_creation"],
            "sha256": hparams["archive_sha256"],
            "download": hparams["download"],
        },
    )
