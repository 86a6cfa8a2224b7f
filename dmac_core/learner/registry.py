"""Model registry: versions of the local learner and which one is served.

Layout under ``<data_dir>/models/``::

    v0001/            one directory per version (LoRA adapter + tokenizer + version.json)
    served.json       {"version": "v0001", "history": [...]}  (absent: the base model is served)

A version directory is built in a temporary directory and renamed into place, and
``served.json`` is replaced atomically (temp file, fsync, rename), so a half-written version
is never served and a crash never leaves the pointer torn.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fsio import atomic_write_json
from ..logs.records import format_ts, utc_now
from .base_model import is_model_dir

BASE_VERSION = "base"
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class RegistryError(RuntimeError):
    """A registry operation was refused (unknown version, nothing to roll back to...)."""


@dataclass
class ModelVersion:
    """One registered version of the local learner."""

    id: str
    path: Path | None  # None for the base model
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_base(self) -> bool:
        return self.id == BASE_VERSION

    @property
    def adapter_path(self) -> Path | None:
        """Directory holding a LoRA adapter, or None when the version is a full model or the base."""
        if self.path is not None and (self.path / "adapter_config.json").is_file():
            return self.path
        return None


def version_base(version: ModelVersion, default_base: Path) -> Path:
    """The full weights a version applies to: the base recorded at training time when it
    still exists, else ``default_base`` (versions from before transfer learning recorded the
    configured base, which is the same thing)."""
    if version.path is not None and is_model_dir(version.path):
        return version.path  # a fully fine-tuned version is its own base
    recorded = version.metadata.get("base_model")
    if recorded and is_model_dir(Path(recorded)):
        return Path(recorded)
    return Path(default_base)


class ModelRegistry:
    """Versions of the local learner under ``models_dir`` and the served pointer."""

    def __init__(self, models_dir: str | os.PathLike[str]) -> None:
        self.models_dir = Path(models_dir)
        self._lock = threading.Lock()

    @property
    def _served_file(self) -> Path:
        return self.models_dir / "served.json"

    def versions(self) -> list[ModelVersion]:
        """All complete versions, oldest first (the base model is not listed)."""
        if not self.models_dir.is_dir():
            return []
        found = []
        for path in self.models_dir.iterdir():
            if path.is_dir() and _VERSION_RE.match(path.name) and (path / "version.json").is_file():
                found.append(self._load(path))
        return sorted(found, key=lambda v: int(v.id[1:]))

    def _load(self, path: Path) -> ModelVersion:
        try:
            metadata = json.loads((path / "version.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metadata = {"error": "version.json unreadable"}
        return ModelVersion(id=path.name, path=path, metadata=metadata)

    def get(self, version_id: str) -> ModelVersion:
        if version_id == BASE_VERSION:
            return ModelVersion(id=BASE_VERSION, path=None, metadata={"description": "bundled base model"})
        path = self.models_dir / version_id
        if not _VERSION_RE.match(version_id) or not (path / "version.json").is_file():
            raise RegistryError(f"No model version {version_id!r} in {self.models_dir}")
        return self._load(path)

    def served_id(self) -> str:
        """Id of the served version (``"base"`` until a version is promoted)."""
        try:
            data = json.loads(self._served_file.read_text(encoding="utf-8"))
            return str(data.get("version") or BASE_VERSION)
        except FileNotFoundError:
            return BASE_VERSION
        except (OSError, ValueError):
            return BASE_VERSION  # an unreadable pointer falls back to the always-valid base

    def previous_id(self) -> str | None:
        """The version served before the current one (what :meth:`rollback` would serve), or
        None when no version was ever promoted."""
        history = self._history()
        if not history:
            return None
        return str(history[-2]["version"]) if len(history) >= 2 else BASE_VERSION

    def served(self) -> ModelVersion:
        return self.get(self.served_id())

    def register(self, source_dir: Path, metadata: dict[str, Any]) -> ModelVersion:
        """Copy a finished model/adapter directory in as the next version; atomic."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.models_dir))
            try:
                shutil.copytree(source_dir, staging, dirs_exist_ok=True)
                numbers = [int(v.id[1:]) for v in self.versions()]
                version_id = f"v{(max(numbers) + 1) if numbers else 1:04d}"
                meta = {"id": version_id, "created": format_ts(utc_now()), **metadata}
                atomic_write_json(staging / "version.json", meta)
                os.rename(staging, self.models_dir / version_id)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return self.get(version_id)

    def problem(self, version_id: str) -> str | None:
        """Why ``version_id`` cannot be loaded, judged from its files without loading them
        (``None`` when they are complete). Loading can still fail on a file that is present but
        corrupt; the serving backend reports that itself."""
        if version_id == BASE_VERSION:
            return None
        try:
            version = self.get(version_id)
        except RegistryError as exc:
            return str(exc)
        if version.metadata.get("error"):
            return str(version.metadata["error"])
        assert version.path is not None  # only the base has no directory
        if version.adapter_path is not None:
            try:
                json.loads((version.path / "adapter_config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return "adapter_config.json unreadable"
            if not any(version.path.glob("adapter_model.*")):
                return "adapter weights (adapter_model.safetensors) missing"
            return None
        if not is_model_dir(version.path):
            return "neither a LoRA adapter nor complete model weights in its directory"
        return None

    def promote(self, version_id: str, reason: str = "") -> ModelVersion:
        """Serve ``version_id`` from now on (the previous one is kept for rollback). Raises
        :class:`RegistryError` for an unknown version or one whose files cannot be loaded."""
        version = self.get(version_id)
        problem = self.problem(version_id)
        if problem:
            raise RegistryError(f"Version {version_id} cannot be served: {problem}")
        with self._lock:
            history = self._history()
            history.append({"version": version_id, "ts": format_ts(utc_now()), "reason": reason})
            self.models_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self._served_file, {"version": version_id, "history": history})
        return version

    def rollback(self) -> ModelVersion:
        """Serve the version that was served before the current one."""
        with self._lock:
            history = self._history()
            if len(history) < 1:
                raise RegistryError("Nothing to roll back to: no version was ever promoted")
            history.pop()
            previous = history[-1]["version"] if history else BASE_VERSION
            atomic_write_json(self._served_file, {"version": previous, "history": history})
        return self.get(previous)

    def _history(self) -> list[dict[str, Any]]:
        try:
            return list(json.loads(self._served_file.read_text(encoding="utf-8")).get("history", []))
        except (OSError, ValueError):
            return []

    def update_metadata(self, version_id: str, **updates: Any) -> ModelVersion:
        """Merge ``updates`` into a version's metadata (e.g. evaluation results)."""
        version = self.get(version_id)
        if version.path is None:
            raise RegistryError("The base model has no metadata file to update")
        with self._lock:
            atomic_write_json(version.path / "version.json", {**version.metadata, **updates})
        return self.get(version_id)
