"""The journal of one user's deletion: what is known and done, so a re-run after a crash finishes.

``<data_dir>/privacy/delete-<sha256 of the name, 16 hex>.json``, replaced atomically at every
change. It holds ids and counts only, never a prompt or an answer: the ids of the user's
interactions, feedback and votes found so far (persisted before any file is rewritten, so feedback
by others on an interaction that is already gone is still found), the runs and model versions
trained on their data, and the count per place of each finished phase. The name is stored as
its SHA-256 only: the journal must not become one more place naming the user, and the hash
is enough to find the journal again (a short, guessable name can be confirmed by hashing it,
so this is a pseudonym, not anonymity). The journal is removed when the deletion completes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fsio import atomic_write_json

FORMAT = 1


def user_hash(user: str) -> str:
    return hashlib.sha256(user.encode("utf-8")).hexdigest()


def journal_path(data_dir: Path, user: str) -> Path:
    """Where the journal of deleting ``user`` lives."""
    return Path(data_dir) / "privacy" / f"delete-{user_hash(user)[:16]}.json"


@dataclass
class Journal:
    """One deletion's progress (see the module docstring)."""

    path: Path
    user_sha256: str
    interaction_ids: set[str] = field(default_factory=set)
    feedback_ids: set[str] = field(default_factory=set)
    machine_ids: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)
    vote_ids: set[str] = field(default_factory=set)  # their votes and votes on their answers
    versions: set[str] = field(default_factory=set)
    phases: dict[str, dict[str, int]] = field(default_factory=dict)  # finished phase → counts
    resumed: bool = False  # an earlier run of this deletion did not finish

    @classmethod
    def open(cls, data_dir: Path, user: str) -> "Journal":
        """The journal of an interrupted deletion of ``user``, or a fresh one (not yet written)."""
        path = journal_path(data_dir, user)
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path, user_hash(user))
        if data.get("user_sha256") != user_hash(user) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a deletion journal of this user (format {data.get('format')!r})")
        return cls(path, data["user_sha256"], set(data.get("interaction_ids", [])), set(data.get("feedback_ids", [])),
                   set(data.get("machine_ids", [])), set(data.get("runs", [])),
                   vote_ids=set(data.get("vote_ids", [])), versions=set(data.get("versions", [])),
                   phases={k: dict(v) for k, v in data.get("phases", {}).items()}, resumed=True)

    def save(self) -> None:
        """Write the journal atomically and durably (it must be on disk before what it allows)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {
            "format": FORMAT, "user_sha256": self.user_sha256,
            "interaction_ids": sorted(self.interaction_ids), "feedback_ids": sorted(self.feedback_ids),
            "machine_ids": sorted(self.machine_ids), "vote_ids": sorted(self.vote_ids), "runs": sorted(self.runs),
            "versions": sorted(self.versions),
            "phases": self.phases,
        }, indent=None)

    def finish(self, phase: str, counts: dict[str, int]) -> None:
        """Mark ``phase`` done with what it removed, durably."""
        self.phases[phase] = counts
        self.save()

    def remove(self) -> None:
        """The deletion is complete: nothing is left to resume. Temporary copies a killed run left
        (ids only) go too; no other run of this deletion writes them now (the logs are locked)."""
        self.path.unlink(missing_ok=True)
        for orphan in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            orphan.unlink(missing_ok=True)
