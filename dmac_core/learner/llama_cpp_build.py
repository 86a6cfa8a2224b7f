"""The state of the llama-cpp-python build that ``make run`` starts in the background.

PyPI has only llama-cpp-python's source, so on a new machine it is compiled for this CPU, which
takes minutes. ``make run`` does not wait: ``scripts/bootstrap.py`` builds it detached and keeps
a small JSON status file in the venv (state, fraction done, seconds left, log path) while the
local model answers through the torch loop. This module reads that file for the status panel,
and tells the backend when the build has finished so that the next answer is served by
llama.cpp.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

STATUS_FILE = "llama-cpp-build.json"


def default_status_path() -> Path:
    """Where ``scripts/bootstrap.py`` writes the build's status: the running venv's root."""
    return Path(sys.prefix) / STATUS_FILE


@dataclass(frozen=True)
class BuildStatus:
    """One reading of the background build."""

    state: str  # "building", "done", "failed", or "stopped" (its process is gone mid-build)
    fraction: float
    seconds_left: float
    log: str

    @property
    def building(self) -> bool:
        return self.state == "building"

    def describe(self) -> str:
        """The build in words, for the status panel."""
        if self.state == "building":
            minutes = max(1, round(self.seconds_left / 60))
            return (f"llama.cpp is being built in the background ({self.fraction:.0%}, about {minutes} min left; "
                    f"log: {self.log}); answers switch to it by themselves when it is ready")
        if self.state == "failed":
            return f"the llama.cpp build failed (log: {self.log}); `make setup` retries it and says what to fix"
        if self.state == "stopped":
            return "the llama.cpp build was stopped before it finished; `make run` or `make setup` restarts it"
        return "llama.cpp was built"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def read_build_status(path: Path | None = None) -> BuildStatus | None:
    """The background build's status, or None when no build was ever started in this venv (or
    its file cannot be read). A build whose process has gone is reported as ``stopped``."""
    try:
        data = json.loads((path or default_status_path()).read_text(encoding="utf-8"))
        state = str(data["state"])
        status = BuildStatus(state=state, fraction=float(data.get("fraction", 0.0)),
                             seconds_left=float(data.get("seconds_left", 0.0)), log=str(data.get("log", "")))
        pid = int(data.get("pid", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if status.building and pid and not _alive(pid):
        return BuildStatus("stopped", status.fraction, 0.0, status.log)
    return status


__all__ = ["BuildStatus", "STATUS_FILE", "default_status_path", "read_build_status"]
