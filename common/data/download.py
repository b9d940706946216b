"""Downloads, checksums and safe archive extraction shared by every data set.

A download goes to a temporary file and is moved into place only once its
hash matches (SHA-256 or MD5, whichever the data set publishes). Archives
(zip, tar, tar.gz) are checked member by member before anything is written:
a member that is absolute, climbs out of the target with ``..``, or is a
link or device file makes the whole archive be refused.
"""

import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from common.errors import DataNotFoundError, IntegrityError
from common.io import current_umask

logger = logging.getLogger(__name__)


def file_digest(path, algorithm="sha256", chunk=1 << 20):
    """Hex digest of a file (``algorithm``: any hashlib name, e.g. sha256 or md5), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path, chunk=1 << 20):
    """SHA-256 hex digest of a file, read in chunks."""
    return file_digest(path, "sha256", chunk)


def check_digests(path, sha256=None, md5=None, what=None, fix="Delete it and download again."):
    """Raise IntegrityError when a given SHA-256 or MD5 does not match ``path``; return its SHA-256."""
    digest = file_sha256(path)
    what = what or f"File {path}"
    if sha256 and digest.lower() != sha256.lower():
        raise IntegrityError(f"{what} has SHA-256 {digest}, expected {sha256}. {fix}")
    if md5:
        got = file_digest(path, "md5")
        if got.lower() != md5.lower():
            raise IntegrityError(f"{what} has MD5 {got}, expected {md5}. {fix}")
    return digest


def download_file(url, dest, sha256=None, md5=None, timeout=60):
    """Fetch ``url`` to a temporary file and move it to ``dest`` atomically.

    When ``sha256`` or ``md5`` is given, a mismatch raises IntegrityError and
    nothing is left at ``dest``. Returns the file's SHA-256.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # as open() would, not mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        fix = "Deleted it; retry, or check the expected hash."
        digest = check_digests(tmp, sha256=sha256, md5=md5, what=f"Download of {url}", fix=fix)
        os.replace(tmp, dest)
        return digest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _refuse(archive_path, name, target):
    raise IntegrityError(
        f"Archive {archive_path} holds member {name!r} that would land outside "
        f"{target} (or is a link); refusing to extract. The archive is not a genuine copy."
    )


def _escapes(target, name):
    dest = (target / name).resolve()
    return name.startswith(("/", "\\")) or (dest != target and target not in dest.parents)


def safe_extract_zip(zip_path, target_folder):
    """Extract ``zip_path`` into ``target_folder``, refusing escaping members.

    A member that is absolute, climbs out with ``..``, or is a symbolic link
    raises IntegrityError before anything is written.
    """
    target = Path(target_folder).resolve()
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            if _escapes(target, info.filename) or is_link:
                _refuse(zip_path, info.filename, target)
        target.mkdir(parents=True, exist_ok=True)
        archive.extractall(target)


def safe_extract_tar(tar_path, target_folder):
    """Extract a tar archive (any compression) into ``target_folder``, refusing escaping members.

    Only regular files and folders are accepted: links and device files, like
    absolute or ``..`` paths, raise IntegrityError before anything is written.
    """
    target = Path(target_folder).resolve()
    with tarfile.open(tar_path) as archive:
        members = archive.getmembers()
        for member in members:
            if _escapes(target, member.name) or not (member.isfile() or member.isdir()):
                _refuse(tar_path, member.name, target)
        target.mkdir(parents=True, exist_ok=True)
        archive.extractall(target, members=members, filter="data")


def safe_extract(archive_path, target_folder):
    """Extract a zip or tar archive safely (see ``safe_extract_zip`` / ``safe_extract_tar``)."""
    if zipfile.is_zipfile(archive_path):
        return safe_extract_zip(archive_path, target_folder)
    if tarfile.is_tarfile(archive_path):
        return safe_extract_tar(archive_path, target_folder)
    raise IntegrityError(f"{archive_path} is neither a zip nor a tar archive. Delete it and download again.")


@contextlib.contextmanager
def extracted(archive_path, beside, name):
    """A staging folder next to ``beside`` holding ``archive_path`` extracted safely (``safe_extract``),
    removed on exit whatever happens: an install moves what it needs out of it first."""
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-extract-", dir=Path(beside).parent))
    try:
        safe_extract(archive_path, staging)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_and_install(data_folder, url, archive_name, install, what, missing, how_to, download=True, **digests):
    """``install(archive)`` of ``url`` downloaded beside ``data_folder`` (checked against ``digests``: sha256=,
    md5=); the archive is removed after. DataNotFoundError naming ``missing`` and ``how_to`` when downloading
    is not allowed or fails (a hash mismatch, IntegrityError, propagates as it is)."""
    if not download:
        raise DataNotFoundError(f"No {what} data in {data_folder} ({missing}). {how_to}")
    logger.info("%s not found in %s: downloading %s", what, data_folder, url)
    data_folder.parent.mkdir(parents=True, exist_ok=True)
    archive = data_folder.parent / f".{data_folder.name}-{archive_name}"
    try:
        download_file(url, archive, **digests)
    except (urllib.error.URLError, OSError) as exc:
        raise DataNotFoundError(f"No {what} data in {data_folder} and the download failed ({exc}). {how_to}") from exc
    try:
        return install(archive)
    finally:
        archive.unlink(missing_ok=True)
