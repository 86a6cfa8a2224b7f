"""Usage per model (requests and tokens per UTC day and per minute), counted from the logs,
and the cap rules that judge it.

The counts come from the interaction records themselves, so caps hold across restarts and
across processes. The counter tails the current month's file itself: it remembers its byte
offset and parses only the lines appended since the last look (with the store's line
parser), so a cap check costs microseconds even with millions of stored interactions (going
through the store's DataFrame cache would cost an Arrow parse per new record).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left, insort
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from ..config import CapsConfig
from ..logs.parsing import parse_lines
from ..logs.records import parse_ts, utc_now
from ..logs.store import REQUIRED_FIELDS, LearningStore
from .usage_checkpoint import UsageCheckpoint, checkpoint_matches, fingerprint, read_checkpoint, write_checkpoint

log = logging.getLogger(__name__)


@dataclass
class Usage:
    requests_today: int = 0
    tokens_today: int = 0
    requests_last_minute: int = 0
    tokens_last_minute: int = 0
    # today's requests that were not chat, by purpose ("evaluation", "teacher"): all count in caps
    requests_by_purpose: dict[str, int] = field(default_factory=dict)
    # calls admitted but not yet logged (see serving.reservations), with their token estimate:
    # they count in both the day's and the minute's window until their record replaces them
    requests_in_flight: int = 0
    tokens_in_flight: int = 0

    @property
    def requests_day(self) -> int:
        """Today's requests, the logged ones and those in flight."""
        return self.requests_today + self.requests_in_flight

    @property
    def tokens_day(self) -> int:
        """Today's tokens, the logged ones and the estimates of calls in flight."""
        return self.tokens_today + self.tokens_in_flight

    @property
    def requests_minute(self) -> int:
        return self.requests_last_minute + self.requests_in_flight

    @property
    def tokens_minute(self) -> int:
        return self.tokens_last_minute + self.tokens_in_flight


def _tokens(row: dict[str, Any]) -> int:
    return int(row.get("tokens_in") or 0) + int(row.get("tokens_out") or 0)


class UsageCounter:
    """Per-model usage of the current UTC day, kept up to date from the interaction log.

    With a ``checkpoint_path`` the counter saves its state there (after a catch-up from scratch,
    then every ``checkpoint_every_rows`` new records or ``checkpoint_every_s`` seconds with new
    records) and a new counter, e.g. after a restart, starts from it when it still describes
    the log (see :mod:`.usage_checkpoint`) instead of recounting the whole month."""

    def __init__(self, store: LearningStore, clock: Callable[[], datetime] = utc_now,
                 checkpoint_path: Path | None = None, checkpoint_every_s: float = 5.0,
                 checkpoint_every_rows: int = 1000) -> None:
        self.store = store
        self.clock = clock
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every_s = checkpoint_every_s
        self.checkpoint_every_rows = checkpoint_every_rows
        self._lock = threading.Lock()
        self._day = ""
        self._month = ""
        self._offset = 0  # bytes of the current month's file already counted
        self._inode = -1
        self._requests: dict[str, int] = defaultdict(int)
        self._tokens: dict[str, int] = defaultdict(int)
        self._purposes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        # each model's calls of the last minute, kept in time order (lines are not always appended
        # in time order: an answer is logged when it ends), so the expired ones are a prefix
        self._recent: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        self._saved_offset = 0  # the offset of the last checkpoint written or restored
        self._saved_at = -1e18  # time.monotonic() of that checkpoint
        self._rows_since_save = 0

    def _reset(self) -> None:
        self._offset = 0
        self._inode = -1
        self._requests.clear()
        self._tokens.clear()
        self._purposes.clear()
        self._recent.clear()
        self._rows_since_save = 0
        self._saved_offset = -1  # a recount is saved once done, whatever the last checkpoint said

    # -- the checkpoint ------------------------------------------------------------------
    def _restore(self, fd: int, stat: os.stat_result, now: datetime) -> None:
        """Start from the saved checkpoint when it describes this file today (else keep counting
        from scratch)."""
        checkpoint = read_checkpoint(self.checkpoint_path) if self.checkpoint_path else None
        if checkpoint is None or not checkpoint_matches(checkpoint, fd, stat, self._day, self._month, now):
            return
        self._offset, self._inode = checkpoint.offset, checkpoint.inode
        self._requests.update(checkpoint.requests)
        self._tokens.update(checkpoint.tokens)
        for model, purposes in checkpoint.purposes.items():
            self._purposes[model].update(purposes)
        minute_ago = now - timedelta(minutes=1)
        for model, calls in checkpoint.recent.items():
            # every call, not only the oldest, is checked: records are not appended in time order
            self._recent[model] = sorted((ts, tokens) for ts, tokens in calls if ts >= minute_ago)
        self._saved_offset, self._saved_at = checkpoint.offset, time.monotonic()

    def _save_due(self, from_scratch: bool) -> bool:
        if self.checkpoint_path is None or self._offset == self._saved_offset:
            return False
        return (from_scratch or self._rows_since_save >= self.checkpoint_every_rows
                or time.monotonic() - self._saved_at >= self.checkpoint_every_s)

    def _save(self, fd: int, now: datetime) -> None:
        checkpoint = UsageCheckpoint(
            day=self._day, month=self._month, saved_at=now, inode=self._inode, offset=self._offset,
            fingerprint=fingerprint(fd, self._offset), requests=dict(self._requests), tokens=dict(self._tokens),
            purposes={model: dict(p) for model, p in self._purposes.items() if p},
            recent={model: list(calls) for model, calls in self._recent.items() if calls})
        try:
            write_checkpoint(self.checkpoint_path, checkpoint)  # type: ignore[arg-type]  # _save_due checked it
        except OSError as exc:  # a read-only data dir: counting still works, a restart recounts
            log.warning("could not save the usage checkpoint %s: %s", self.checkpoint_path, exc)
        self._saved_offset, self._saved_at, self._rows_since_save = self._offset, time.monotonic(), 0

    # -- counting ----------------------------------------------------------------------
    def _count(self, rows: list[dict], day: str, minute_ago: datetime) -> None:
        for row in rows:
            if row.get("request_sent") is False:
                continue  # a failed call that never reached the server
            ts_text = str(row.get("ts", ""))
            try:
                ts = parse_ts(ts_text)
            except ValueError:
                continue
            model = str(row.get("model"))
            if ts >= minute_ago:  # the last minute is a minute, across midnight too
                insort(self._recent[model], (ts, _tokens(row)))
            if not ts_text.startswith(day):
                continue  # another day's
            self._requests[model] += 1
            self._tokens[model] += _tokens(row)
            purpose = str(row.get("purpose") or "chat")
            if purpose != "chat":
                self._purposes[model][purpose] += 1

    def _catch_up(self, now: datetime) -> None:
        """Count the complete lines appended to this month's interaction file since the last look."""
        day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
        if month != self._month:
            self._day, self._month = day, month
            self._reset()
        elif day != self._day:
            # A new day in the same month: every line read so far was written before this look,
            # so none is today's. Today's counts start at zero and reading goes on from here,
            # instead of rereading the month (seconds with a million lines) at midnight.
            self._day = day
            self._requests.clear()
            self._tokens.clear()
            self._purposes.clear()
            self._saved_offset = -1  # the new day's counts are checkpointed at the next look
        minute_ago = now - timedelta(minutes=1)
        path = self.store.kind_dir("interactions") / f"{month}.jsonl"
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            handle = None
        if handle is not None:
            with handle:
                fd = handle.fileno()
                stat = os.fstat(fd)
                if stat.st_ino != self._inode or stat.st_size < self._offset:  # new or rewritten file
                    self._reset()
                    self._restore(fd, stat, now)
                    if self._inode != stat.st_ino:  # no checkpoint of this file: count it all
                        self._inode = stat.st_ino
                from_scratch = self._offset == 0
                chunk = os.pread(fd, stat.st_size - self._offset, self._offset)
                end = chunk.rfind(b"\n")  # past it: a line still being written
                if end >= 0:
                    self._offset += end + 1
                    # The store's own line parser: torn fragments and non-records are skipped (and
                    # counted by the store's readers), exactly as everywhere else the logs are read.
                    rows = parse_lines(chunk[: end + 1], REQUIRED_FIELDS["interactions"])[0]
                    self._rows_since_save += len(rows)
                    self._count(rows, day, minute_ago)
                if self._save_due(from_scratch):
                    self._save(fd, now)
        for window in self._recent.values():
            del window[:bisect_left(window, (minute_ago,))]

    def usage(self, model: str) -> Usage:
        now = self.clock().astimezone(timezone.utc)
        with self._lock:
            self._catch_up(now)
            recent = self._recent.get(model, [])
            return Usage(
                requests_today=self._requests.get(model, 0),
                tokens_today=self._tokens.get(model, 0),
                requests_last_minute=len(recent),
                tokens_last_minute=sum(t for _, t in recent),
                requests_by_purpose=dict(self._purposes.get(model, {})),
            )


def cap_exceeded(model: str, usage: Usage, caps: CapsConfig | None, tokens: int = 0) -> str | None:
    """A short reason when one more call of ``model`` (of up to ``tokens`` tokens) is not
    admitted, else None. Calls in flight count at their estimate. A request cap admits a call
    while fewer than the cap are used; a token cap while the tokens used plus ``tokens`` fit
    (``tokens`` = 0: while any are left, the preview the status panel and routing show)."""
    if caps is None:
        return None
    checks = (
        (caps.requests_per_day, usage.requests_day, 0, "requests today"),
        (caps.tokens_per_day, usage.tokens_day, tokens, "tokens today"),
        (caps.requests_per_minute, usage.requests_minute, 0, "requests this minute"),
        (caps.tokens_per_minute, usage.tokens_minute, tokens, "tokens this minute"),
    )
    for limit, used, more, what in checks:
        if limit is not None and (used >= limit or used + more > limit):
            call = f", this call may use up to {more}" if used < limit else ""
            return f"{model}: {used}/{limit} {what}{_in_flight_note(usage)}{call}"
    return None


def cap_wait(caps: CapsConfig, usage: Usage, now: datetime | None = None) -> float:
    """Seconds until a capped model may be asked again: the next UTC day for a daily cap that is
    used up, else the next minute."""
    now = now or datetime.now(timezone.utc)
    day_full = any(limit is not None and used >= limit for limit, used in (
        (caps.requests_per_day, usage.requests_day), (caps.tokens_per_day, usage.tokens_day)))
    if day_full:
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return max(1.0, (midnight - now).total_seconds())
    return 60.0


def _in_flight_note(usage: Usage) -> str:
    return f" ({usage.requests_in_flight} in flight)" if usage.requests_in_flight else ""


def day_budget_shortfall(model: str, usage: Usage, caps: CapsConfig | None, requests: int,
                         tokens: int) -> str | None:
    """Why ``requests`` calls of up to ``tokens`` tokens in all would pass ``model``'s daily caps
    (with the numbers), or None when they fit. Checked before a batch of calls starts (an
    evaluation), so it is refused whole instead of failing half-way. Calls in flight (other
    sessions') count as used."""
    if caps is None:
        return None
    used = f"{usage.requests_today:,} used today{f', {usage.requests_in_flight:,} in flight' if usage.requests_in_flight else ''}"
    if caps.requests_per_day is not None and usage.requests_day + requests > caps.requests_per_day:
        left = max(0, caps.requests_per_day - usage.requests_day)
        return f"{model}: needs {requests:,} requests, {left:,} of its {caps.requests_per_day:,} a day are left ({used})"
    if caps.tokens_per_day is not None and usage.tokens_day + tokens > caps.tokens_per_day:
        left = max(0, caps.tokens_per_day - usage.tokens_day)
        return (f"{model}: may use up to {tokens:,} tokens, {left:,} of its {caps.tokens_per_day:,} a day are left "
                f"({usage.tokens_today:,} used today{f', up to {usage.tokens_in_flight:,} in flight' if usage.tokens_in_flight else ''})")
    return None


def minute_cap_reached(model: str, usage: Usage, caps: CapsConfig | None) -> bool:
    """Whether ``model`` is at one of its per-minute caps, calls in flight included (a batch of
    calls waits, then goes on)."""
    if caps is None:
        return False
    return any(limit is not None and used >= limit for limit, used in (
        (caps.requests_per_minute, usage.requests_minute), (caps.tokens_per_minute, usage.tokens_minute)))
