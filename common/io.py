"""Atomic, crash-safe file writes shared by every layer.

A reader never sees a half-written manifest, table or checkpoint: each write
goes to a temporary file in the same folder and is moved into place with
``os.replace``, which is atomic on POSIX file systems.
"""

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path

_umask_lock = threading.Lock()


def current_umask():
    """The process's umask (reading it means setting it; the lock keeps threads from seeing the 0 in between)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path next to ``path``; move it into place on success.

    On any exception the temporary file is removed and ``path`` is untouched. The file gets the mode
    ``open()`` would give it (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    # mkstemp makes the file 0600 whatever the umask; give it the mode a plain open() would, so a shared
    # result, table or report is as readable as the rest of the folder.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def stamp_matches(stamp, fingerprint, outputs=()):
    """Whether every path of ``outputs`` exists and the JSON file ``stamp`` holds ``fingerprint``: the work
    that wrote them was done with these inputs, so it can be skipped (an unreadable stamp never matches)."""
    stamp = Path(stamp)
    if not stamp.is_file() or not all(Path(p).is_file() for p in outputs):
        return False
    try:
        return json.loads(stamp.read_text()) == fingerprint
    except ValueError:
        return False
