"""Per-token confidence of logged learner answers, computed off the chat path.

An answer's confidence is measured with the version that wrote it (the interaction's
``model_version``), in that version's own fp32 transformers copy: never the object that serves
chat, so no chat answer waits for its lock. One background thread scores one answer at a time,
at the lowest CPU priority, in the pauses of the conversation (not while the learner answers or
just answered), so opening Insights does not stall chat (``bench/insights_chat_latency.py``
measures it). Scores are
cached on disk per (interaction, version weights): an answer is scored once.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..fsio import append_jsonl, read_jsonl
from ..logs.store import LearningStore
from .explain import TokenScore, answer_token_scores

# How long the scorer waits between checks while the learner is in use.
_YIELD_S = 0.2


class ConfidenceScorer:
    """Token scores of learner answers, by the version that wrote each, from a background thread.

    ``backend`` is the local learner's backend (``fingerprint``, ``registry``, ``busy``) and
    ``load_version(version_id)`` loads a version's fp32 transformers model for scoring (a
    ``LoadedModel``), kept for the next answer of the same version.
    """

    def __init__(self, backend: Any, store: LearningStore, cache_path: Path,
                 load_version: Callable[[str], Any], system_prompt: str | None = None) -> None:
        self.backend, self.store, self.cache_path = backend, store, Path(cache_path)
        self.load_version = load_version
        self.system_prompt = system_prompt
        self._cache: dict[str, list[list[Any]]] | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._queued: set[str] = set()
        self._failed: dict[str, str] = {}
        self._loaded: tuple[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    # -- asking ------------------------------------------------------------------------------
    def scores(self, interaction: dict[str, Any]) -> list[TokenScore] | None:
        """The answer's token scores when known; otherwise queue it and return None."""
        key = self._key(interaction)
        with self._lock:
            cached = self._read_cache().get(key)
        if cached is not None:
            return [TokenScore(str(t), float(p), float(h)) for t, p, h in cached]
        self.request([interaction])
        return None

    def mean_entropy(self, interaction: dict[str, Any]) -> float | None:
        """Mean token entropy (nats) of the answer when known (NaN for an empty answer), else None (queued)."""
        scores = self.scores(interaction)
        if scores is None:
            return None
        return float(np.mean([s.entropy for s in scores])) if scores else float("nan")

    def failure(self, interaction: dict[str, Any]) -> str | None:
        """Why the answer could not be scored (its version cannot be loaded), if it could not."""
        return self._failed.get(self._key(interaction))

    def request(self, interactions: list[dict[str, Any]]) -> None:
        """Queue answers for scoring (each once; cached ones are skipped)."""
        with self._lock:
            cache = self._read_cache()
            for interaction in interactions:
                key = self._key(interaction)
                if key in cache or key in self._queued or key in self._failed:
                    continue
                self._queued.add(key)
                self._idle.clear()
                self._queue.put(interaction)
            if self._queued and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._work, name="confidence-scorer", daemon=True)
                self._thread.start()

    def pending(self) -> int:
        """Answers queued or being scored."""
        return len(self._queued)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty (True) or ``timeout`` passes (False)."""
        return self._idle.wait(timeout)

    # -- the background thread -----------------------------------------------------------------
    def _work(self) -> None:
        _lower_priority()
        while True:
            try:
                interaction = self._queue.get(timeout=1.0)
            except queue.Empty:
                with self._lock:
                    if not self._queued:
                        self._idle.set()
                        return
                continue
            key = self._key(interaction)
            try:
                while self.backend.busy():  # chat first: score in the pauses between questions
                    time.sleep(_YIELD_S)
                scores = self._score(interaction)
            except Exception as exc:  # noqa: BLE001 - an unloadable version: said on the page, not raised
                with self._lock:
                    self._failed[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
            else:
                self._store(key, scores)
            finally:
                with self._lock:
                    self._queued.discard(key)
                    if not self._queued:
                        self._idle.set()

    def _score(self, interaction: dict[str, Any]) -> list[TokenScore]:
        version = _version_of(interaction)
        if self._loaded is None or self._loaded[0] != version:
            self._loaded = None  # one version's copy at a time (~0.5 GB each)
            self._loaded = (version, self.load_version(version))
        logged = interaction.get("messages")
        messages = list(logged) if isinstance(logged, list) and logged else str(interaction.get("prompt") or "")
        return answer_token_scores(self._loaded[1], messages, str(interaction.get("response") or ""),
                                   self.system_prompt)

    # -- the cache ------------------------------------------------------------------------------
    def _key(self, interaction: dict[str, Any]) -> str:
        version = _version_of(interaction)
        weights = json.dumps(self.backend.fingerprint(version), default=str)
        return f"{interaction.get('id')}@{version}:{hashlib.sha256(weights.encode()).hexdigest()[:12]}"

    def _read_cache(self) -> dict[str, list[list[Any]]]:
        if self._cache is None:
            # a torn last line from a killed process is skipped: that answer is scored again
            self._cache = {str(row["key"]): row["tokens"] for row in read_jsonl(self.cache_path)
                           if "key" in row and "tokens" in row}
        return self._cache

    def _store(self, key: str, scores: list[TokenScore]) -> None:
        tokens = [[s.token, s.prob, s.entropy] for s in scores]
        with self._lock:
            self._read_cache()[key] = tokens
            append_jsonl(self.cache_path, [{"key": key, "tokens": tokens}])


def _version_of(interaction: dict[str, Any]) -> str:
    """The learner version that wrote a logged answer ("base" when the record names none)."""
    version = interaction.get("model_version")
    return version if isinstance(version, str) and version else "base"


def _lower_priority() -> None:
    """Run this thread's torch work on one core at the lowest CPU priority, so a chat answer
    decoding at the same time keeps the cores: ``torch.set_num_threads`` called here sets the
    OpenMP thread count of this thread's own parallel regions, and on Linux a thread's nice
    value is its own (the compute threads it starts inherit it). Elsewhere the scorer still
    works only in the pauses of the conversation."""
    import torch

    torch.set_num_threads(1)
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not permitted
        pass
