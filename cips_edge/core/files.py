"""Files written whole or not at all, and the temporary files of killed writes cleaned up.

Every file is written under a temporary name beside its final one and renamed when complete, so a
reader never sees a half-written file and a failure leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .errors import UserError


def shown(text: str | os.PathLike, limit: int = 120) -> str:
    """A path or pattern short enough for a one-line message: its start and end around '...'."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 40]}...{text[-37:]}"


# Every file is written under a temporary name beside its final one, ".NAME.HOST-PID.RANDOM.tmp", and
# renamed when complete. A process killed mid-write leaves that file behind; the name says whose it was,
# so the next write into the folder removes it once that process is gone (or, for files from another
# machine sharing the folder, once nothing has touched it for STALE_AFTER_S).
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
STALE_AFTER_S = 24 * 3600
_TEMPORARY = re.compile(r"\..*\.([0-9a-f]{6})-(\d+)\.[A-Za-z0-9_]+\.tmp")
_cleaned: set[str] = set()  # folders already cleaned by this process


def check_input_file(path: Path, what: str, kind: str) -> None:
    """A one-line UserError unless path is a regular file to read `what` from, naming what is wrong
    ("model not found: P", "model is a folder, not an ONNX file: P"). A pipe or device is refused
    before anything opens it (opening a pipe waits for a writer)."""
    if path.is_file():
        return
    if path.is_dir():
        raise UserError(f"{what} is a folder, not {kind}: {shown(path)}")
    if path.exists():
        raise UserError(f"{what} is not a regular file (a device, pipe or socket): {shown(path)}")
    raise UserError(f"{what} not found: {shown(path)}")


def make_folders(folder: Path) -> list[Path]:
    """mkdir -p `folder`; returns the folders it created, the deepest first (remove_empty_folders undoes
    them). OSError as mkdir raises it."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return made


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove each folder that is still empty, in order (what fails leaves no folder it made)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def temporary_prefix(path: str | os.PathLike) -> str:
    """mkstemp's prefix for a temporary file of `path` (use suffix=".tmp"): the start of its name, the
    host and this process. The name is cut short so that the temporary name fits where `path` fits."""
    return f".{Path(path).name[:64]}.{HOST_TAG}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, another user's
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of writes that were killed in `folder` (our naming only: those of a
    process of this host that no longer runs, or untouched for STALE_AFTER_S); returns what went. Once
    per folder and process: a command writing many files into one folder lists it once."""
    folder = Path(folder)
    key = os.path.abspath(folder)
    if key in _cleaned:
        return []
    _cleaned.add(key)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name) if entry.name.endswith(".tmp") else None
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            ours_and_dead = match.group(1) == HOST_TAG and not _alive(int(match.group(2)))
            if ours_and_dead or now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: str | os.PathLike, check: Callable[[Path], None] | None = None,
              fsync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary file in the same folder, checked with
    check(temporary path) if given (fsync: on disk first), then renamed over `path` when the block
    ends. Readers never see a half-written file; an error (raised as it came) leaves nothing behind."""
    path = Path(path)
    clean_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual mode of a new file
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None],
                 check: Callable[[Path], None] | None = None) -> None:
    """write(f) through replacing(path, check); a system error (full disk, no permission) is a
    UserError naming the file."""
    try:
        with replacing(path, check) as f:
            write(f)
    except OSError as e:
        raise UserError(f"cannot write {shown(path)}: {e.strerror or e}") from None


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex; read once per file version (path, size, modification time)
    in a process, so asking again for a model or weights file costs nothing."""
    path = Path(path)
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
