"""``LearningStore``: the append-only JSONL learning logs, partitioned by UTC month.

Layout: ``<data_dir>/{interactions,feedback,evals,votes,judgments}/YYYY-MM.jsonl``.

Writes are crash-safe and concurrent: a per-directory cross-process lock (``flock``) plus a
thread lock serialise appends; every record starts on a fresh line even when a killed writer
left a torn fragment (otherwise, as measured, the next acknowledged record is glued onto
the fragment and lost); the file is ``fsync``-ed before an append returns (when
``storage.fsync`` is on) and the directory is synced when a month file is created.

Reads are tolerant and incremental: blank, partial, non-JSON, non-UTF-8 and schema-invalid
lines are skipped and counted per file (see :meth:`LearningStore.health`), and only the
bytes appended since the last read are parsed again. Interactions (the big log) are parsed
with Arrow's multi-threaded JSON reader into one table per appended chunk (the parsers are
in :mod:`dmac_core.logs.parsing`), and large logs keep an on-disk Arrow snapshot for the
next process (:mod:`dmac_core.logs.snapshot`). Python dicts (:meth:`records`) are built
from the file lazily, only when asked for.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import orjson

if TYPE_CHECKING:  # pandas and pyarrow load lazily: processes that only append start fast
    import pandas as pd
    import pyarrow as pa

from ..fsio import exclusive_lock, fsync_path, write_all
from .parsing import parse_arrow, parse_lines, pyarrow_modules, records_frame, string_type
from .records import EvalResult, Feedback, Interaction, Judgment, Record, RecordError, Vote, validate_record
from .snapshot import load_snapshot, save_snapshot

__all__ = ["KINDS", "FileHealth", "LearningStore", "RecordError", "feedback_key"]

KINDS = ("interactions", "feedback", "evals", "votes", "judgments")
# Required keys per kind: enough to tell a record from a fragment that happens to be JSON,
# without paying for full validation of millions of lines on every read.
REQUIRED_FIELDS = {
    "interactions": ("id", "ts", "model", "prompt", "response"),
    "feedback": ("id", "ts", "prompt", "response", "rating"),
    "evals": ("id", "ts", "model", "suite", "metrics"),
    "votes": ("id", "ts", "interaction_a", "interaction_b", "choice"),
    "judgments": ("id", "ts", "judge", "rubric_id", "kind"),
}
# Kinds parsed with Arrow: only the interaction log grows to millions of lines; feedback is
# typed by people and evals hold free-form nested metrics that Arrow would turn into structs.
_ARROW_KINDS = ("interactions",)
_FINGERPRINT = 64  # bytes before the read offset remembered to notice a rewritten file
SNAPSHOT_MIN_BYTES = 16 * 2**20  # parsed logs this large get an on-disk Arrow snapshot


@dataclass
class FileHealth:
    """Read statistics of one log file."""

    path: str
    records: int = 0
    skipped: int = 0
    # True when the file ends in an unterminated line (a write in progress or a torn one).
    partial_tail: bool = False

    def notice(self) -> str:
        """The one-line warning the pages show, e.g. "3 unreadable lines skipped in ..."."""
        return f"{self.skipped} unreadable line{'s' if self.skipped != 1 else ''} skipped in {self.path}"


@dataclass
class _Segment:
    """The records parsed from one appended byte range ``[start, end)`` of a log file."""

    start: int
    end: int
    count: int
    table: pa.Table | None = None  # Arrow kinds: the readable rows (``ts`` still as text)
    ts: pa.Array | None = None  # Arrow kinds: ``ts`` parsed once, reused by every frame
    rows: list[dict[str, Any]] | None = None  # Python dicts, built lazily for Arrow kinds


@dataclass
class _FileCache:
    inode: int = -1
    offset: int = 0
    fingerprint: bytes = b""
    segments: list[_Segment] = field(default_factory=list)
    skipped: int = 0
    partial_tail: bool = False
    snapshot_offset: int = 0  # bytes covered by the on-disk snapshot (see snapshot.py)

    @property
    def count(self) -> int:
        return sum(segment.count for segment in self.segments)


class _Stale(Exception):
    """A log file was replaced (doctor, delete-user) while its rows were being read."""


def dump_record(data: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError:  # e.g. an integer beyond 64 bits in free-form metrics
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class LearningStore:
    """Append-only learning logs under ``data_dir``; safe across threads and processes.

    Frames returned by :meth:`interactions`, :meth:`feedback` and :meth:`evals` are cached
    and handed out as shallow copies: with pandas' copy-on-write, assigning to a returned
    frame never changes the cache, but the Python objects inside cells (dicts, lists) are
    shared, so do not mutate those in place.
    """

    def __init__(self, data_dir: str | os.PathLike[str], fsync: bool = True,
                 snapshot_min_bytes: int = SNAPSHOT_MIN_BYTES) -> None:
        """``snapshot_min_bytes``: parsed interaction logs at least this large are kept as an
        Arrow snapshot next to the log, so the next process loads them without parsing (0 = never)."""
        self.data_dir = Path(data_dir)
        self.fsync = fsync
        self.snapshot_min_bytes = snapshot_min_bytes
        self._snapshot_writers: dict[Path, threading.Thread] = {}
        self._thread_locks = {kind: threading.RLock() for kind in KINDS}
        self._cache: dict[Path, _FileCache] = {}
        # One re-entrant lock for all read caches: reads are cheap once cached, and a single
        # lock keeps file caches, frames and the index consistent with each other.
        self._cache_lock = threading.RLock()
        self._frames: dict[str, tuple[tuple[Any, ...], pd.DataFrame]] = {}
        self.parsed_bytes = 0  # bytes parsed so far: lets tests prove reads are incremental

    # -- paths and locking -------------------------------------------------------------
    def kind_dir(self, kind: str) -> Path:
        """The directory of one record kind (``<data_dir>/<kind>``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
        return self.data_dir / kind

    def month_files(self, kind: str) -> list[Path]:
        """The month files of ``kind``, oldest first."""
        directory = self.kind_dir(kind)
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.glob("[0-9][0-9][0-9][0-9]-[0-9][0-9].jsonl") if p.is_file())

    @contextmanager
    def locked(self, kind: str) -> Iterator[None]:
        """Hold the cross-process write lock of ``kind`` (used by appends and rewrites)."""
        directory = self.kind_dir(kind)
        directory.mkdir(parents=True, exist_ok=True)
        with self._thread_locks[kind], exclusive_lock(directory / ".lock"):
            yield

    # -- appends -----------------------------------------------------------------------
    def append(self, kind: str, record: Record) -> Record:
        """Append a validated record to its month file; return once it is durable."""
        line = dump_record(record.to_json_dict()) + b"\n"
        directory = self.kind_dir(kind)
        path = directory / f"{record.month()}.jsonl"
        fd = -1
        try:
            with self.locked(kind):
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
                size = os.fstat(fd).st_size
                # A writer killed mid-record leaves no trailing newline: start on a fresh
                # line so this acknowledged record is never glued onto the fragment.
                if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                write_all(fd, line)
            # fsync after releasing the lock: the bytes are already in place, and concurrent
            # writers' fsyncs then overlap (the journal commits them together) instead of
            # queueing one full disk flush per record behind the lock.
            if self.fsync:
                os.fsync(fd)
                if size == 0:  # a new month file is only durable once its directory entry is
                    fsync_path(directory)
        finally:
            if fd >= 0:
                os.close(fd)
        return record

    def append_interaction(self, **fields: Any) -> Interaction:
        """Validate and append an interaction record (fields as in the README, *Data*)."""
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
        """Validate and append an evaluation result."""
        record = validate_record("evals", fields)
        assert isinstance(record, EvalResult)
        self.append("evals", record)
        return record

    def append_vote(self, **fields: Any) -> Vote:
        """Validate and append a blind-comparison vote; both interactions must be logged.

        Refuses an unknown interaction id, two answers to different prompts, a choice other
        than a / b / tie / both_bad; nothing is written then.
        """
        record = validate_record("votes", fields)
        assert isinstance(record, Vote)
        sides = [self.get_interaction(record.interaction_a), self.get_interaction(record.interaction_b)]
        for name, row in zip((record.interaction_a, record.interaction_b), sides):
            if row is None:
                raise RecordError(f"Refused vote, nothing written: no interaction with id {name!r}")
        if sides[0]["prompt"] != sides[1]["prompt"]:  # type: ignore[index]
            raise RecordError("Refused vote, nothing written: the two answers are to different prompts")
        self.append("votes", record)
        return record

    def votes(self) -> pd.DataFrame:
        """Every blind-comparison vote, oldest first."""
        with self._cache_lock:
            version = self._version("votes")
            return self._cached_frame("votes", version, lambda: records_frame(self.records("votes"), Vote.columns()))

    def append_judgment(self, **fields: Any) -> Judgment:
        """Validate and append a judge's label; the judged interactions must be logged.

        Refuses an unknown interaction id, a score outside 1..5, a label that does not match
        ``parsed``; nothing is written then.
        """
        record = validate_record("judgments", fields)
        assert isinstance(record, Judgment)
        for name in (record.interaction_id, record.interaction_a, record.interaction_b):
            if name is not None and self.get_interaction(name) is None:
                raise RecordError(f"Refused judgment, nothing written: no interaction with id {name!r}")
        self.append("judgments", record)
        return record

    def judgments(self) -> pd.DataFrame:
        """Every judge label, oldest first."""
        with self._cache_lock:
            version = self._version("judgments")
            return self._cached_frame("judgments", version,
                                      lambda: records_frame(self.records("judgments"), Judgment.columns()))

    # -- incremental parsing -----------------------------------------------------------
    def _refresh_file(self, kind: str, path: Path) -> _FileCache:
        """Parse the bytes appended to ``path`` since the last read (all of it if rewritten)."""
        with self._cache_lock:
            try:
                handle = open(path, "rb")
            except FileNotFoundError:
                self._cache.pop(path, None)
                return _FileCache()
            with handle:
                stat = os.fstat(handle.fileno())
                cache = self._cache.get(path)
                if cache is None or not _same_file(handle.fileno(), stat, cache):
                    cache = self._cache[path] = self._from_snapshot(kind, path, handle.fileno(), stat)
                if stat.st_size == cache.offset:
                    return cache
                handle.seek(cache.offset)
                chunk = handle.read(stat.st_size - cache.offset)
            end = chunk.rfind(b"\n")
            complete = chunk[: end + 1] if end >= 0 else b""
            cache.partial_tail = end < len(chunk) - 1
            if not complete:
                return cache
            self.parsed_bytes += len(complete)
            start = cache.offset
            segment = None
            if kind in _ARROW_KINDS:
                try:
                    table, skipped = parse_arrow(complete, REQUIRED_FIELDS[kind])
                    segment = _Segment(start, start + len(complete), table.num_rows, table=table)
                except pyarrow_modules().errors:
                    pass  # lines Python reads but Arrow cannot type: the slower path below
            if segment is None:
                rows, skipped = parse_lines(complete, REQUIRED_FIELDS[kind])
                segment = _Segment(start, start + len(complete), len(rows), rows=rows)
            cache.segments.append(segment)
            cache.skipped += skipped
            cache.offset += len(complete)
            cache.fingerprint = complete[-_FINGERPRINT:]
            self._maybe_snapshot(kind, path, cache)
            return cache

    def _from_snapshot(self, kind: str, path: Path, fd: int, stat: os.stat_result) -> _FileCache:
        """A fresh file cache, pre-filled from the log's snapshot when one is valid."""
        if kind not in _ARROW_KINDS or not self.snapshot_min_bytes:
            return _FileCache(inode=stat.st_ino)
        found = load_snapshot(path)
        if found is None:
            return _FileCache(inode=stat.st_ino)
        segment = _Segment(0, found.offset, found.table.num_rows, table=found.table)
        cache = _FileCache(inode=found.inode, offset=found.offset, fingerprint=found.fingerprint,
                           segments=[segment], skipped=found.skipped, snapshot_offset=found.offset)
        # The snapshot stands in for an earlier read of this file: the same staleness check applies.
        return cache if _same_file(fd, stat, cache) else _FileCache(inode=stat.st_ino)

    def _maybe_snapshot(self, kind: str, path: Path, cache: _FileCache) -> None:
        """Snapshot a large log's parsed rows once they grew by half since the last snapshot
        (so appends do not rewrite it every time); only when every segment is Arrow."""
        if kind not in _ARROW_KINDS or not self.snapshot_min_bytes or cache.offset < self.snapshot_min_bytes:
            return
        if cache.offset - cache.snapshot_offset < max(self.snapshot_min_bytes, cache.snapshot_offset // 2):
            return
        if any(segment.table is None for segment in cache.segments):
            return  # a segment only Python could read: not representable in the snapshot
        if path in self._snapshot_writers and self._snapshot_writers[path].is_alive():
            return
        table = pyarrow_modules().pa.concat_tables([s.table for s in cache.segments], promote_options="permissive")
        # Written in the background (≈ 1 s for 0.5 GB): the reader that triggered it is not
        # held up. Not a daemon thread: a CLI process exits only once the snapshot is complete.
        writer = threading.Thread(
            target=save_snapshot, args=(path, table, cache.inode, cache.offset, cache.fingerprint, cache.skipped),
            name=f"dmac-snapshot-{path.name}",
        )
        self._snapshot_writers[path] = writer
        cache.snapshot_offset = cache.offset  # a failed write is retried after the next growth
        writer.start()

    def wait_for_snapshots(self, timeout: float | None = None) -> None:
        """Block until snapshots being written in the background are on disk (tests, benchmarks)."""
        for writer in list(self._snapshot_writers.values()):
            writer.join(timeout)

    def _file_rows(self, kind: str, path: Path) -> list[dict[str, Any]]:
        """All readable rows of one file as dicts, parsed from the file once and cached."""
        with self._cache_lock:
            for _attempt in range(5):
                cache = self._refresh_file(kind, path)
                try:
                    rows: list[dict[str, Any]] = []
                    for segment in cache.segments:
                        if segment.rows is None:
                            self._materialize(path, cache, segment, kind)
                        rows.extend(segment.rows or [])
                    return rows
                except _Stale:
                    self._cache.pop(path, None)
            raise OSError(f"{path} kept changing while it was read; try again")

    def _materialize(self, path: Path, cache: _FileCache, segment: _Segment, kind: str) -> None:
        """Fill ``segment.rows`` with dicts read back from the file, exactly as written."""
        rows = _materialize(path, cache, segment, REQUIRED_FIELDS[kind])
        if len(rows) != segment.count:
            # Arrow accepted a line Python refuses (or the reverse): Python's reading wins,
            # and this segment leaves the Arrow path so every view agrees on the rows.
            cache.skipped += segment.count - len(rows)
            segment.count, segment.table, segment.ts = len(rows), None, None
            self._frames.clear()
        segment.rows = rows

    def _version(self, kind: str) -> tuple[Any, ...]:
        """Refresh every file of ``kind``; a key that changes whenever its contents change."""
        key = []
        for path in self.month_files(kind):
            cache = self._refresh_file(kind, path)
            key.append((path.name, cache.inode, cache.offset, len(cache.segments)))
        return tuple(key)

    # -- reads -------------------------------------------------------------------------
    def records(self, kind: str) -> list[dict[str, Any]]:
        """All readable records of ``kind``, oldest month first, in file order."""
        self.kind_dir(kind)
        with self._cache_lock:
            rows: list[dict[str, Any]] = []
            for path in self.month_files(kind):
                rows.extend(self._file_rows(kind, path))
            return rows

    def month_records(self, kind: str, month: str) -> list[dict[str, Any]]:
        """Readable records of one UTC month (``YYYY-MM``) in file order; [] when none.

        Rows only ever get appended, so callers may remember how many they have seen; a
        shorter list than last time means the file was rewritten (doctor, delete-user).
        """
        path = self.kind_dir(kind) / f"{month}.jsonl"
        with self._cache_lock:
            return self._file_rows(kind, path) if path.is_file() else []

    def health(self) -> list[FileHealth]:
        """Per-file counts of readable records and skipped lines, for every log file."""
        report = []
        with self._cache_lock:
            for kind in KINDS:
                for path in self.month_files(kind):
                    cache = self._refresh_file(kind, path)
                    report.append(
                        FileHealth(
                            path=f"{kind}/{path.name}",
                            records=cache.count,
                            skipped=cache.skipped,
                            partial_tail=cache.partial_tail,
                        )
                    )
        return report

    def _cached_frame(self, name: str, version: tuple[Any, ...], build: Any) -> pd.DataFrame:
        cached = self._frames.get(name)
        if cached is None or cached[0] != version:
            cached = self._frames[name] = (version, build())
        # Copy-on-write (pandas >= 3) makes this shallow copy safe to modify for the caller.
        return cached[1].copy(deep=False)

    def interactions(self) -> pd.DataFrame:
        """All interactions as a DataFrame (columns as in the README, *Data*; ``ts`` as UTC datetimes).

        Text columns use pandas' Arrow-backed ``str`` dtype and ``messages`` an Arrow list
        dtype (cells read back as lists of dicts); a log Arrow cannot type consistently
        falls back to plain object columns.
        """
        with self._cache_lock:
            version = self._version("interactions")
            return self._cached_frame("interactions", version, self._build_interactions_frame)

    def _build_interactions_frame(self) -> pd.DataFrame:
        segments = [s for p in self.month_files("interactions") for s in self._refresh_file("interactions", p).segments]
        segments = [s for s in segments if s.count]
        if not segments:
            return records_frame([], Interaction.columns())
        try:
            return _arrow_frame(segments)
        except pyarrow_modules().errors:
            # Extra fields of conflicting types across chunks: correct, only slower.
            return records_frame(self.records("interactions"), Interaction.columns())

    def feedback(self, latest_only: bool = True) -> pd.DataFrame:
        """Feedback records; with ``latest_only`` a newer record for the same answer and user
        supersedes the older one (feedback is append-only, so edits are new records)."""
        with self._cache_lock:
            version = self._version("feedback")

            def build() -> pd.DataFrame:
                rows = self.records("feedback")
                if latest_only:
                    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
                    for row in rows:
                        newest[feedback_key(row)] = row  # later rows win: files and lines are in time order
                    rows = list(newest.values())
                return records_frame(rows, Feedback.columns())

            return self._cached_frame(f"feedback/{latest_only}", version, build)

    def evals(self) -> pd.DataFrame:
        """All evaluation results as a DataFrame."""
        with self._cache_lock:
            version = self._version("evals")
            return self._cached_frame("evals", version, lambda: records_frame(self.records("evals"), EvalResult.columns()))

    # -- lookups -----------------------------------------------------------------------
    def _find(self, column: str, value: str, also: tuple[str, str] | None = None) -> dict[str, Any] | None:
        """The newest interaction whose ``column`` equals ``value`` (and ``also``), or None.

        A vectorised scan of the cached Arrow columns, newest segment first: about 10 ms per
        million interactions, with no index to build (a dict index of a million ids took
        seconds to build and hundreds of MB to hold) and nothing to keep in sync on rewrites.
        """
        with self._cache_lock:
            pc = pyarrow_modules().pc
            files = [(p, self._refresh_file("interactions", p)) for p in self.month_files("interactions")]
            for _path, cache in reversed(files):
                for segment in reversed(cache.segments):
                    if segment.table is not None and segment.count:
                        mask = pc.equal(segment.table.column(column), value)
                        if also is not None:
                            mask = pc.and_(mask, pc.equal(segment.table.column(also[0]), also[1]))
                        hits = pc.indices_nonzero(mask)
                        if len(hits):
                            # ``ts`` is still the text as written; fields a line lacked read as None.
                            return segment.table.slice(hits[-1].as_py(), 1).to_pylist()[0]
                    elif segment.rows:
                        for row in reversed(segment.rows):
                            if row.get(column) == value and (also is None or row.get(also[0]) == also[1]):
                                return row
            return None

    def get_interaction(self, interaction_id: str) -> dict[str, Any] | None:
        """The interaction with this id (the newest one if an id was logged twice), or None."""
        return self._find("id", interaction_id)

    def find_interaction_id(self, prompt: str, response: str) -> str | None:
        """Id of the newest interaction with exactly this prompt and response, if any."""
        row = self._find("prompt", prompt, also=("response", response))
        return None if row is None else str(row["id"])


def _same_file(fd: int, stat: os.stat_result, cache: _FileCache) -> bool:
    """Whether ``fd`` is still the file ``cache`` was read from, only longer."""
    if stat.st_ino != cache.inode or stat.st_size < cache.offset:
        return False
    # Inode numbers are reused after a rewrite: compare the bytes just before the offset too.
    n = len(cache.fingerprint)
    return n == 0 or os.pread(fd, n, cache.offset - n) == cache.fingerprint


def feedback_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a feedback record is about: its interaction (or prompt+response) and its author."""
    about = row.get("interaction_id") or (row.get("prompt"), row.get("response"))
    return (about, row.get("user"))


def _materialize(path: Path, cache: _FileCache, segment: _Segment, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of one segment as dicts, read back from the file so they are exactly as written."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_ino != cache.inode:
            raise _Stale(path)
        handle.seek(segment.start)
        chunk = handle.read(segment.end - segment.start)
    if len(chunk) != segment.end - segment.start:
        raise _Stale(path)
    return parse_lines(chunk, required)[0]


def _segment_ts(segment: _Segment) -> pa.Array:
    if segment.ts is None:
        import pandas as pd

        A = pyarrow_modules()
        assert segment.table is not None
        text = segment.table.column("ts")
        try:
            segment.ts = A.pc.cast(text, A.ts_type).combine_chunks()
        except A.errors:
            parsed = pd.to_datetime(pd.Series(text.to_pylist()), utc=True, format="ISO8601", errors="coerce")
            segment.ts = A.pa.array(parsed.dt.as_unit("ms"), type=A.ts_type)
    return segment.ts


def _arrow_frame(segments: list[_Segment]) -> pd.DataFrame:
    A = pyarrow_modules()
    pa = A.pa
    if any(s.table is None for s in segments):
        raise pa.ArrowInvalid("a chunk was parsed without Arrow")
    tables = [s.table for s in segments if s.table is not None]
    table = pa.concat_tables(tables, promote_options="permissive")  # zero-copy: chunks kept
    ts = pa.chunked_array([_segment_ts(s) for s in segments], type=A.ts_type)
    table = table.set_column(table.schema.get_field_index("ts"), "ts", ts)
    frame = table.to_pandas(types_mapper=string_type)
    return frame
