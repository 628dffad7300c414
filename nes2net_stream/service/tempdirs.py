"""Temporary directories that a later start can recognise as left behind, and remove.

A process killed with ``SIGKILL`` (or by the OOM killer) never runs its clean-up, and its
temporary directories (Prometheus multi-process files, a local Redis's data) would stay in the
temporary folder for good. :func:`owned_tempdir` creates a directory holding a lock file that
its process keeps ``flock(2)``-ed for its lifetime (the kernel releases it however the process
ends; unlike a process id it is not reused and holds across PID namespaces sharing a folder),
and first removes the directories of the same prefix whose lock is free. Directories without a
lock file, or of another user, are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from nes2net_stream.logs import get_logger

log = get_logger("nes2net.tempdirs")
LOCK_FILE = ".owner.lock"
_held: dict[str, int] = {}  # directory -> descriptor holding its lock, for the process's life


def _owner_gone(d: Path) -> bool:
    try:
        fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # not marked: not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: its owner is alive
    finally:
        os.close(fd)
    return True


def remove_stale(prefix: str, parent: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove this user's ``<prefix>*`` directories whose owning process has ended."""
    base = Path(parent or tempfile.gettempdir())
    removed: list[Path] = []
    uid = os.getuid()
    for d in sorted(base.glob(f"{prefix}*")):
        try:
            if d.is_symlink() or not d.is_dir() or d.stat().st_uid != uid:
                continue
        except OSError:
            continue
        if str(d) in _held or not _owner_gone(d):
            continue
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed.append(d)
    if removed:
        log.info("removed temporary directories left by ended processes", prefix=prefix,
                 directories=len(removed))
    return removed


def owned_tempdir(prefix: str, parent: str | os.PathLike[str] | None = None) -> str:
    """Create a temporary directory locked by this process, after removing stale ones.

    The lock is held until :func:`release` or the end of the process; child processes do not
    inherit it.
    """
    with contextlib.suppress(OSError):
        remove_stale(prefix, parent)
    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    fd = os.open(Path(d) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held[d] = fd
    return d


def release(directory: str) -> None:
    """Remove a directory made by :func:`owned_tempdir` and drop its lock."""
    shutil.rmtree(directory, ignore_errors=True)
    fd = _held.pop(directory, None)
    if fd is not None:
        os.close(fd)
