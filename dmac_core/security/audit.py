"""The audit log: who trained, promoted, rolled back, deleted a user's data, changed users or
roles, lifted a lockout, and when.

One JSON line per event in ``<data_dir>/audit/YYYY-MM.jsonl``, appended under a file lock
and fsync-ed like the learning logs (a killed process leaves at most one torn last line, which
readers skip). It lives outside the learning logs' directories, so nothing that builds
training data or metrics ever reads it. It names users, never prompts, answers or secrets.
"""

from __future__ import annotations

import getpass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..fsio import append_jsonl, exclusive_lock, read_jsonl


class AuditLog:
    """Append-only record of privileged actions."""

    def __init__(self, directory: Path, durable: bool = True) -> None:
        self.directory = Path(directory)
        self.durable = durable

    def record(self, actor: str, action: str, via: str = "web", **details: Any) -> dict[str, Any]:
        """Append one event and return it; ``details`` are short facts (a version id, a count)."""
        now = datetime.now(timezone.utc)
        event = {"ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "actor": actor,
                 "action": action, "via": via, **details}
        if via == "cli":
            event["os_user"] = _os_user()
        self.directory.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.directory / ".lock"):
            append_jsonl(self.directory / f"{now:%Y-%m}.jsonl", [event], durable=self.durable)
        return event

    def entries(self, limit: int | None = 500) -> list[dict[str, Any]]:
        """The newest events first (``limit`` of them; None for all)."""
        events: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob("*.jsonl"), reverse=True):
            events.extend(reversed(read_jsonl(path)))
            if limit is not None and len(events) >= limit:
                break
        return events[:limit] if limit is not None else events


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"
