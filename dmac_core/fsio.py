"""Files that survive a killed process: the one copy of each helper the workbench writes with.

- :func:`atomic_write_bytes` / ``_text`` / ``_json``: write a temporary file next to the
  target, flush it to disk, rename it over the target and sync the directory, so a reader
  sees the old file or the new one, never half of either (a crash mid-write loses nothing).
- :func:`commit`: the same last steps for a file a library wrote to a temporary path.
- :func:`append_jsonl` and :func:`read_jsonl`: append-only JSON-lines caches whose reader
  skips a torn last line (what a killed writer leaves) instead of failing.
- :func:`open_locked` and :func:`exclusive_lock`: an exclusive ``flock`` between processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


def fsync_path(path: Path) -> None:
    """Make what was written to ``path`` durable: a file's bytes, or a directory's entries (a
    rename or a new file in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (one call may write fewer)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def temp_path(path: Path) -> Path:
    """A hidden temporary name next to ``path``, unique per process and thread, so concurrent
    writers of the same file never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def commit(tmp: Path, path: Path, durable: bool = True) -> None:
    """Rename the finished ``tmp`` over ``path``; with ``durable``, its bytes are on disk first
    and the rename is synced too. Caches that can be rebuilt pass ``durable=False``."""
    if durable:
        fsync_path(tmp)
    os.replace(tmp, path)
    if durable:
        fsync_path(path.parent)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` all at once (see the module's docstring); ``mode`` is
    set before the rename, so a private file (0o600) is never readable by others."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed or widened it
            write_all(fd, data)
        finally:
            os.close(fd)
        commit(tmp, path, durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = True, mode: int = 0o644) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), durable, mode)


def atomic_write_json(path: Path, data: Any, durable: bool = True, indent: int | None = 2) -> None:
    """:func:`atomic_write_bytes` of ``data`` as JSON (values JSON does not know, such as
    dates, written as their ``str``)."""
    atomic_write_text(path, json.dumps(data, indent=indent, default=str), durable)


def append_lines(path: Path, lines: Iterable[bytes], durable: bool = True) -> None:
    """Append ``lines`` (without their newlines). They start on a fresh line even when an
    earlier writer was killed mid-line (the torn fragment stays one unreadable line that readers
    skip); ``durable``: on disk, a new file's directory entry included, before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        prefix = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        write_all(fd, prefix + b"".join(line + b"\n" for line in lines))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    if durable and created:
        fsync_path(path.parent)


def append_jsonl(path: Path, rows: Iterable[Any], durable: bool = True) -> None:
    """Append ``rows`` as JSON lines with :func:`append_lines`."""
    append_lines(path, [json.dumps(row, ensure_ascii=False).encode("utf-8") for row in rows], durable)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON object in a JSON-lines file, in order; lines that are torn, not JSON or not
    an object are skipped; a missing file has none."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                try:
                    row = json.loads(raw)
                except ValueError:
                    continue  # a torn line after a crash
                if isinstance(row, dict):
                    rows.append(row)
    except FileNotFoundError:
        pass
    return rows


def open_locked(path: Path, blocking: bool = True) -> int:
    """Open (creating) ``path`` and take an exclusive ``flock`` on it; returns the descriptor,
    whose closing releases the lock. Without ``blocking`` a held lock raises
    :class:`BlockingIOError`. A lock is per open file, so threads of one process need their own
    lock besides this one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def exclusive_lock(path: Path) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block."""
    fd = open_locked(path)
    try:
        yield fd
    finally:
        os.close(fd)


__all__ = ["append_jsonl", "append_lines", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "commit",
           "exclusive_lock", "fsync_path", "open_locked", "read_jsonl", "temp_path", "write_all"]
