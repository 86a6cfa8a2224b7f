"""``LearningStore``: the append-only JSONL learning logs, partitioned by UTC month.

Layout: ``<data_dir>/{interactions,feedback,evals}/YYYY-MM.jsonl``.

Writes are crash-safe and concurrent: a per-directory cross-process lock (``flock``) plus a
thread lock serialise appends; every record starts on a fresh line even when a killed writer
left a torn fragment (STACK-NOTES measured that otherwise the next acknowledged record is
glued onto the fragment and lost); the file is ``fsync``-ed before an append returns (when
``storage.fsync`` is on) and the directory is synced when a month file is created.

Reads are tolerant and incremental: blank, partial, non-JSON, non-UTF-8 and schema-invalid
lines are skipped and counted per file (see :meth:`LearningStore.health`), and only the
bytes appended since the last read are parsed again.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from .records import EvalResult, Feedback, Interaction, RecordError, _Record, validate_record

KINDS = ("interactions", "feedback", "evals")
# Required keys per kind: enough to tell a record from a fragment that happens to be JSON,
# without paying for full validation of millions of lines on every read.
_REQUIRED = {
    "interactions": ("id", "ts", "model", "prompt", "response"),
    "feedback": ("id", "ts", "prompt", "response", "rating"),
    "evals": ("id", "ts", "model", "suite", "metrics"),
}


@dataclass
class FileHealth:
    """Read statistics of one log file."""

    path: str
    records: int = 0
    skipped: int = 0
    # True when the file ends in an unterminated line (a write in progress or a torn one).
    partial_tail: bool = False

    def notice(self) -> str:
        return f"{self.skipped} unreadable line{'s' if self.skipped != 1 else ''} skipped in {self.path}"


@dataclass
class _FileCache:
    inode: int = -1
    offset: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    partial_tail: bool = False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class LearningStore:
    """Append-only learning logs under ``data_dir``; safe across threads and processes."""

    def __init__(self, data_dir: str | os.PathLike[str], fsync: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.fsync = fsync
        self._thread_locks = {kind: threading.RLock() for kind in KINDS}
        self._cache: dict[Path, _FileCache] = {}
        self._cache_lock = threading.Lock()

    # -- paths and locking -------------------------------------------------------------
    def kind_dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
        return self.data_dir / kind

    def month_files(self, kind: str) -> list[Path]:
        directory = self.kind_dir(kind)
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.glob("[0-9][0-9][0-9][0-9]-[0-9][0-9].jsonl") if p.is_file())

    @contextmanager
    def locked(self, kind: str) -> Iterator[None]:
        """Hold the cross-process write lock of ``kind`` (used by appends and rewrites)."""
        directory = self.kind_dir(kind)
        directory.mkdir(parents=True, exist_ok=True)
        with self._thread_locks[kind]:
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    # -- appends -----------------------------------------------------------------------
    def append(self, kind: str, record: _Record) -> _Record:
        """Append a validated record to its month file; return once it is durable."""
        line = json.dumps(record.to_json_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        directory = self.kind_dir(kind)
        path = directory / f"{record.month()}.jsonl"
        with self.locked(kind):
            created = not path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size > 0:
                    # A writer killed mid-record leaves no trailing newline: start on a fresh
                    # line so this acknowledged record is never glued onto the fragment.
                    rfd = os.open(path, os.O_RDONLY)
                    try:
                        last = os.pread(rfd, 1, size - 1)
                    finally:
                        os.close(rfd)
                    if last != b"\n":
                        line = b"\n" + line
                _write_all(fd, line)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if created and self.fsync:
                _fsync_dir(directory)
        return record

    def append_interaction(self, **fields: Any) -> Interaction:
        """Validate and append an interaction record (fields as in DESIGN.md)."""
        record = validate_record("interactions", fields)
        assert isinstance(record, Interaction)
        self.append("interactions", record)
        return record

    def append_feedback(
        self,
        *,
        prompt: str | None = None,
        response: str | None = None,
        rating: Any,
        feedback: str = "",
        interaction_id: str | None = None,
        user: str = "anonymous",
        correction: str | None = None,
        ts: str | None = None,
    ) -> Feedback:
        """Append a rating (1..5) with optional textual feedback.

        Link by ``interaction_id`` (prompt and response are then taken from that interaction
        when not given), or by ``prompt`` + ``response`` as the seed's ``provide_feedback``
        does: the newest logged interaction with exactly that prompt and response is linked,
        and with none the feedback stands alone (it is still training material).
        Refuses bad ratings, empty responses and unknown interaction ids; nothing is written then.
        """
        if interaction_id is not None:
            interaction = self.get_interaction(interaction_id)
            if interaction is None:
                raise RecordError(f"Refused feedback, nothing written: no interaction with id {interaction_id!r}")
            prompt = interaction["prompt"] if prompt is None else prompt
            response = interaction["response"] if response is None else response
        elif prompt is not None and response is not None:
            interaction_id = self.find_interaction_id(prompt, response)
        if prompt is None or response is None:
            raise RecordError("Refused feedback, nothing written: give interaction_id, or prompt and response")
        data: dict[str, Any] = {
            "user": user,
            "interaction_id": interaction_id,
            "prompt": prompt,
            "response": response,
            "rating": rating,
            "feedback": feedback or "",
            "correction": correction or None,
        }
        if ts:
            data["ts"] = ts
        record = validate_record("feedback", data)
        assert isinstance(record, Feedback)
        self.append("feedback", record)
        return record

    def append_eval(self, **fields: Any) -> EvalResult:
        record = validate_record("evals", fields)
        assert isinstance(record, EvalResult)
        self.append("evals", record)
        return record

    # -- reads -------------------------------------------------------------------------
    def _refresh_file(self, kind: str, path: Path) -> _FileCache:
        """Parse the bytes appended to ``path`` since the last read (all of it if rewritten)."""
        with self._cache_lock:
            cache = self._cache.setdefault(path, _FileCache())
            try:
                stat = path.stat()
            except FileNotFoundError:
                self._cache.pop(path, None)
                return _FileCache()
            if stat.st_ino != cache.inode or stat.st_size < cache.offset:
                cache = self._cache[path] = _FileCache(inode=stat.st_ino)
            if stat.st_size == cache.offset:
                return cache
            with open(path, "rb") as handle:
                handle.seek(cache.offset)
                chunk = handle.read(stat.st_size - cache.offset)
            end = chunk.rfind(b"\n")
            complete = chunk[: end + 1] if end >= 0 else b""
            cache.partial_tail = end < len(chunk) - 1
            required = _REQUIRED[kind]
            for raw in complete.split(b"\n"):
                if not raw.strip():
                    continue  # blank lines (our own fresh-line separators) are not errors
                row = _parse_line(raw, required)
                if row is None:
                    cache.skipped += 1
                else:
                    cache.rows.append(row)
            cache.offset += len(complete)
            return cache

    def records(self, kind: str) -> list[dict[str, Any]]:
        """All readable records of ``kind``, oldest month first, in file order."""
        rows: list[dict[str, Any]] = []
        for path in self.month_files(kind):
            rows.extend(self._refresh_file(kind, path).rows)
        return rows

    def month_records(self, kind: str, month: str) -> list[dict[str, Any]]:
        """Readable records of one month file (``YYYY-MM``), in file order; the list only grows
        until the file is rewritten, so callers may remember how far they have read."""
        path = self.kind_dir(kind) / f"{month}.jsonl"
        return self._refresh_file(kind, path).rows if path.is_file() else []

    def health(self) -> list[FileHealth]:
        """Per-file counts of readable records and skipped lines, for every log file."""
        report = []
        for kind in KINDS:
            for path in self.month_files(kind):
                cache = self._refresh_file(kind, path)
                report.append(
                    FileHealth(
                        path=f"{kind}/{path.name}",
                        records=len(cache.rows),
                        skipped=cache.skipped,
                        partial_tail=cache.partial_tail,
                    )
                )
        return report

    def interactions(self) -> pd.DataFrame:
        """All interactions as a DataFrame (columns as in DESIGN.md; ``ts`` as UTC datetimes)."""
        return _frame(self.records("interactions"), Interaction.columns())

    def feedback(self, latest_only: bool = True) -> pd.DataFrame:
        """Feedback records; with ``latest_only`` a newer record for the same answer and user
        supersedes the older one (feedback is append-only, so edits are new records)."""
        rows = self.records("feedback")
        if latest_only:
            newest: dict[tuple[Any, ...], dict[str, Any]] = {}
            for row in rows:
                newest[feedback_key(row)] = row  # later rows win: files and lines are in time order
            rows = list(newest.values())
        return _frame(rows, Feedback.columns())

    def evals(self) -> pd.DataFrame:
        return _frame(self.records("evals"), EvalResult.columns())

    def get_interaction(self, interaction_id: str) -> dict[str, Any] | None:
        for row in reversed(self.records("interactions")):
            if row.get("id") == interaction_id:
                return row
        return None

    def find_interaction_id(self, prompt: str, response: str) -> str | None:
        """Id of the newest interaction with exactly this prompt and response, if any."""
        for row in reversed(self.records("interactions")):
            if row.get("prompt") == prompt and row.get("response") == response:
                return row["id"]
        return None


def feedback_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a feedback record is about: its interaction (or prompt+response) and its author."""
    about = row.get("interaction_id") or (row.get("prompt"), row.get("response"))
    return (about, row.get("user"))


def _parse_line(raw: bytes, required: tuple[str, ...]) -> dict[str, Any] | None:
    try:
        row = json.loads(raw.decode("utf-8").lstrip("\ufeff"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(row, dict) or any(key not in row for key in required):
        return None
    return row


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype="object")
    if len(frame):
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601", errors="coerce")
    else:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame
