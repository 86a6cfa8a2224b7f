"""A saved checkpoint of the usage counter, so a restarted process does not recount the month.

:class:`~.usage.UsageCounter` counts today's usage by tailing the month's interaction log from
a byte offset. A new process would start at offset 0 and parse the whole month (seconds with a
million records of today) before its first routed answer. So the counter saves its state now and
then (:func:`write_checkpoint`), and a new counter starts from it only when the checkpoint provably
describes the log as it is now (:func:`checkpoint_matches`):

- the same UTC day and month, and a clock that has not gone back since it was saved (the
  last-minute window only ever drops entries as time goes forward);
- the same file (inode) at least as long as the checkpoint's offset;
- the same bytes before the offset, by a fingerprint of sampled windows of them (the head, the
  64 KiB right before the offset, and windows spread between). The log is append-only; the only
  rewrites (a user's data deleted, ``doctor`` quarantining broken lines) replace the file with
  one that lacks some lines, so every byte after the first removed line moves and the window
  right before the offset changes. Hashing the whole prefix would mean reading the file that the
  checkpoint exists to spare.

Anything else (no checkpoint, another day, a rewritten file, a torn or corrupt checkpoint: it
carries a checksum of its own content) is ignored and the month recounted from scratch. Every
checkpoint describes the shared log, not the process that wrote it, so processes sharing a data
directory may write and read each other's; the last one written wins, and an older one costs
only a longer tail to read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..fsio import atomic_write_bytes

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
_HEAD = 4096  # bytes hashed at the start of the file
_TAIL = 65536  # bytes hashed right before the offset
_SPREAD_WINDOWS = 16  # windows of _WINDOW bytes spread evenly between them
_WINDOW = 4096


@dataclass
class UsageCheckpoint:
    """What :class:`~.usage.UsageCounter` knows after counting ``offset`` bytes of the month's log."""

    day: str  # YYYY-MM-DD (UTC) the counts are of
    month: str  # YYYY-MM: the interaction file counted
    saved_at: datetime  # the counter's clock when the checkpoint was taken
    inode: int
    offset: int  # bytes of the file counted (whole lines)
    fingerprint: str  # of the bytes before ``offset``, see :func:`fingerprint`
    requests: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    purposes: dict[str, dict[str, int]] = field(default_factory=dict)
    recent: dict[str, list[tuple[datetime, int]]] = field(default_factory=dict)  # the last minute's calls

    def to_json(self) -> dict[str, Any]:
        """The checkpoint as JSON values (timestamps in ISO form, which round-trips exactly)."""
        return {
            "day": self.day, "month": self.month, "saved_at": self.saved_at.isoformat(), "inode": self.inode,
            "offset": self.offset, "fingerprint": self.fingerprint, "requests": self.requests,
            "tokens": self.tokens, "purposes": self.purposes,
            "recent": {model: [[ts.isoformat(), tokens] for ts, tokens in calls] for model, calls in self.recent.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageCheckpoint:
        """The checkpoint :meth:`to_json` wrote; raises ``ValueError``/``TypeError``/``KeyError``
        on anything else."""
        def counts(value: Any) -> dict[str, int]:
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and type(v) is int and v >= 0 for k, v in value.items()):
                raise ValueError("counts must map names to non-negative integers")
            return dict(value)

        saved_at = datetime.fromisoformat(data["saved_at"])
        if saved_at.tzinfo is None:
            raise ValueError("saved_at has no time zone")
        recent: dict[str, list[tuple[datetime, int]]] = {}
        for model, calls in data["recent"].items():
            entries = []
            for ts_text, tokens in calls:
                ts = datetime.fromisoformat(ts_text)
                if ts.tzinfo is None or type(tokens) is not int:
                    raise ValueError("a recent call needs an aware timestamp and integer tokens")
                entries.append((ts, tokens))
            recent[str(model)] = entries
        checkpoint = cls(
            day=str(data["day"]), month=str(data["month"]), saved_at=saved_at, inode=int(data["inode"]),
            offset=int(data["offset"]), fingerprint=str(data["fingerprint"]), requests=counts(data["requests"]),
            tokens=counts(data["tokens"]), purposes={str(m): counts(p) for m, p in data["purposes"].items()},
            recent=recent,
        )
        if checkpoint.offset < 0:
            raise ValueError("negative offset")
        return checkpoint


def _windows(offset: int) -> list[tuple[int, int]]:
    """(start, length) of the byte ranges before ``offset`` that the fingerprint hashes."""
    if offset <= _HEAD + _TAIL + _SPREAD_WINDOWS * _WINDOW:
        return [(0, offset)]  # a small file: all of it
    middle_start, middle_end = _HEAD, offset - _TAIL
    step = (middle_end - middle_start) // _SPREAD_WINDOWS
    spread = [(middle_start + i * step, _WINDOW) for i in range(_SPREAD_WINDOWS)]
    return [(0, _HEAD), *spread, (offset - _TAIL, _TAIL)]


def fingerprint(fd: int, offset: int) -> str:
    """A hash of sampled windows of the first ``offset`` bytes of the open file ``fd`` (see the
    module's docstring for why a sample tells a rewritten log from the one counted)."""
    digest = hashlib.blake2b(str(offset).encode(), digest_size=16)
    for start, length in _windows(offset):
        chunk = os.pread(fd, length, start)
        if len(chunk) != length:
            return ""  # shorter than the offset: matches no checkpoint
        digest.update(chunk)
    return digest.hexdigest()


def checkpoint_matches(checkpoint: UsageCheckpoint, fd: int, stat: os.stat_result, day: str, month: str,
                       now: datetime) -> bool:
    """Whether ``checkpoint`` describes the open log ``fd`` (with ``stat``) for ``day`` at ``now``."""
    return (checkpoint.day == day and checkpoint.month == month and checkpoint.saved_at <= now
            and checkpoint.inode == stat.st_ino and stat.st_size >= checkpoint.offset
            and fingerprint(fd, checkpoint.offset) == checkpoint.fingerprint)


def _checksum(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def write_checkpoint(path: Path, checkpoint: UsageCheckpoint) -> None:
    """Replace the checkpoint at ``path`` atomically. Not synced to disk: a checkpoint lost in a
    crash only costs one recount."""
    body = json.dumps(checkpoint.to_json(), sort_keys=True, separators=(",", ":"))
    envelope = {"version": CHECKPOINT_VERSION, "checksum": _checksum(body.encode()), "checkpoint": body}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(envelope).encode(), durable=False)


def read_checkpoint(path: Path) -> UsageCheckpoint | None:
    """The checkpoint at ``path``, or None when there is none or it is torn, corrupt or of another
    version (the caller then recounts)."""
    try:
        envelope = json.loads(path.read_bytes())
        body = envelope["checkpoint"]
        if envelope["version"] != CHECKPOINT_VERSION or _checksum(body.encode()) != envelope["checksum"]:
            raise ValueError("version or checksum mismatch")
        return UsageCheckpoint.from_json(json.loads(body))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.info("ignoring the usage checkpoint %s (%s): recounting the log", path, exc)
        return None


__all__ = ["UsageCheckpoint", "fingerprint", "read_checkpoint", "checkpoint_matches", "write_checkpoint"]
