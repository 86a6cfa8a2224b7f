"""Parsed copies of large interaction logs, so a restart does not parse them again.

Parsing JSON is the cost of loading the logs: a million interactions (≈ 0.5 GB) take about
3 s of Arrow's JSON reader on two cores, and a server restart or a CLI command would pay it
every time. So once a month file's parsed rows pass ``min_bytes``, the reader writes them as
an Arrow IPC file next to the log (``.2026-03.jsonl.arrow``, hidden from the month-file glob)
with what it covers: the log's inode, the byte offset, the 64 bytes before that offset and
the number of unreadable lines skipped. The next reader memory-maps it (no parse, no copy)
when the log is still that file, at least that long, with those bytes at the offset, and
parses only what was appended since. Anything else — another inode after ``doctor --fix`` or
``delete-user``, a shorter file, other bytes, an unreadable snapshot — and the snapshot is
ignored and rewritten. The log stays the only source of truth; a snapshot can always be deleted.

Rewrites of a log (doctor, delete-user) remove its snapshot, so deleted records do not
linger there; a reader that snapshotted the old file concurrently notices the new inode
after renaming its snapshot into place and removes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fsio import commit

FORMAT = 1


def snapshot_path(log: Path) -> Path:
    """Where the snapshot of ``log`` lives (a hidden file next to it)."""
    return log.with_name(f".{log.name}.arrow")


def discard_snapshot(log: Path) -> None:
    """Remove the snapshot of ``log`` (after a rewrite: it may hold records no longer there)."""
    snapshot_path(log).unlink(missing_ok=True)


@dataclass
class Snapshot:
    """The parsed rows of bytes ``[0, offset)`` of the log file with inode ``inode``."""

    table: Any  # pyarrow.Table, memory-mapped
    inode: int
    offset: int
    fingerprint: bytes  # the log's bytes just before ``offset``
    skipped: int


def load_snapshot(log: Path) -> Snapshot | None:
    """The snapshot of ``log`` as written, or None when there is none or it cannot be read.
    Whether it still describes the log (same inode, long enough, same bytes at its end) is
    the caller's check — the same one its own read cache uses."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_file(pa.memory_map(str(snapshot_path(log)), "r")).read_all()
        meta = json.loads((table.schema.metadata or {})[b"dmac_snapshot"])
        if meta.get("format") != FORMAT or table.num_rows != int(meta["rows"]):
            return None
        return Snapshot(table.replace_schema_metadata(None), int(meta["inode"]), int(meta["offset"]),
                        bytes.fromhex(meta["fingerprint"]), int(meta["skipped"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None  # unreadable or from another version: parse the log instead


def save_snapshot(log: Path, table: Any, inode: int, offset: int, fingerprint: bytes, skipped: int) -> bool:
    """Write the snapshot atomically (temp file + rename); False when the log changed meanwhile
    or the snapshot could not be written (it is only an optimisation: nothing is raised)."""
    import pyarrow as pa

    path = snapshot_path(log)
    _remove_orphans(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    meta = {"format": FORMAT, "inode": inode, "offset": offset, "fingerprint": fingerprint.hex(),
            "skipped": skipped, "rows": table.num_rows}
    try:
        table = table.replace_schema_metadata({"dmac_snapshot": json.dumps(meta)})
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        commit(Path(tmp), path, durable=False)  # a cache: rebuilt from the log if lost
        if os.stat(log).st_ino != inode:  # rewritten (delete-user, doctor) while we wrote
            path.unlink(missing_ok=True)
            return False
        return True
    except (OSError, pa.ArrowException):
        Path(tmp).unlink(missing_ok=True)
        return False


def _remove_orphans(path: Path) -> None:
    """Delete temp files of writers that died mid-write (their pid is gone)."""
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        try:
            os.kill(int(tmp.name.split(".")[-2]), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            continue
