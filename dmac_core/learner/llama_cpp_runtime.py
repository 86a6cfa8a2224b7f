"""Serve the local learner through llama.cpp: a GGUF copy of the served version, a C decode loop.

Decoding one token reads every weight once, so on a CPU the speed follows the bytes per
weight and the kernels: llama.cpp over f16 weights (the default: the fp32 model's answers)
decodes ≈ 2× faster than the torch loop, over 8-bit blocks ≈ 3× but with answers that drift
from fp32 (bench/RESULTS.md). The served version is
exported to GGUF once (:func:`ensure_gguf`, cached under the registry's ``gguf/`` folder,
~3 s for the bundled model), then generated from by :class:`LlamaCppGenerator`, which has
the same ``stream_tokens`` interface as the torch
:class:`~dmac_core.learner.fast_decode.FastGenerator`: prompts are tokenized by the HF
tokenizer and token ids go in and out, so chat templates, stop tokens and the text the rest
of the system sees are unchanged.

``llama-cpp-python`` is built from source by ``make setup``; where it is missing (or the
model cannot be exported), the torch loop serves and ``LocalBackend.runtime_status`` says why.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..fsio import atomic_write_json
from .gguf_export import GGUFExportError, write_gguf


def llama_cpp_importable() -> bool:
    """True when the llama_cpp package is installed (``make setup`` builds it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def ensure_gguf(
    target: Path,
    source: list[list[Any]],
    load_hf_model: Callable[[], Any],
    template_gguf: Path,
    quant: str,
    name: str,
    protect: Sequence[Path] = (),
) -> Path:
    """Return ``target``, exporting the model to it first unless a copy made from ``source``
    (a :func:`~dmac_core.learner.base_model.weights_fingerprint`) is already there.

    ``load_hf_model`` is only called on a cache miss (loading and merging costs seconds).
    Older copies are pruned, except those in ``protect`` (the served version's).
    Raises :class:`~dmac_core.learner.gguf_export.GGUFExportError` when the model cannot be exported.
    """
    stamp = target.with_name(target.name + ".json")
    try:
        if target.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("source") == source:
            return target
    except (OSError, ValueError, AttributeError):
        pass  # no stamp or a broken one: export again
    write_gguf(load_hf_model(), target, template_gguf, quant=quant, name=name)
    atomic_write_json(stamp, {"source": source, "weights": quant}, indent=None)
    prune_cache(target.parent, keep=KEEP_GGUF_COPIES, protect=protect)
    return target


# GGUF copies kept: the one just made and the one before it (a rollback is instant), besides
# the served version's (protected).
KEEP_GGUF_COPIES = 2


def prune_cache(directory: Path, keep: int = KEEP_GGUF_COPIES, protect: Sequence[Path] = ()) -> list[Path]:
    """Delete all but the ``keep`` newest GGUF copies (and their stamps), never one in
    ``protect``; returns the deleted.

    Each copy is ~270 MB (f16; ~140 MB q8_0), one per version served or checked by the gate.
    A process still serving a deleted copy keeps reading it: the file lives on until unmapped.
    """
    protected = {Path(p).resolve() for p in protect}

    def modified(path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except OSError:  # pruned meanwhile by another process
            return 0

    copies = sorted(Path(directory).glob("*.gguf"), key=modified, reverse=True)
    removed = []
    for path in copies[keep:]:
        if path.resolve() in protected:
            continue
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".json").unlink(missing_ok=True)
        removed.append(path)
    return removed


# Generators still open at interpreter exit: closed by an atexit hook, while the C library and
# ctypes are still usable (finalizers at shutdown may run after they are torn down).
_OPEN: "weakref.WeakSet[LlamaCppGenerator]" = weakref.WeakSet()


@atexit.register
def _close_open_generators() -> None:
    for generator in list(_OPEN):
        generator.close()


class LlamaCppGenerator:
    """Token-level generation with llama.cpp over one GGUF file.

    Drives llama.cpp's C API directly (decode, then sample in C) rather than through
    ``llama_cpp.Llama``, which copies every step's 49,152 logits into numpy and runs a
    repetition-penalty pass even for greedy decoding, and leaves flash attention to llama.cpp
    ("auto"; ``Llama`` turns it off): 1.17× ``Llama.generate`` on the same file (bench/RESULTS.md). The KV cache of the previous call is
    reused for the prompt prefix they share, so a growing chat only prefills its new turn.
    Thread-safe (one call at a time holds the context).
    """

    def __init__(self, path: Path, n_threads: int | None = None, n_ctx: int = 8192, n_batch: int = 512) -> None:
        import llama_cpp

        _init_llama_cpp()
        threads = n_threads or max(1, len(os.sched_getaffinity(0)))
        self.path = Path(path)
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self._api = llama_cpp
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), llama_cpp.llama_model_default_params())
        if not self._model:
            raise ValueError(f"llama.cpp could not load {self.path}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
        params.n_threads, params.n_threads_batch = threads, threads
        params.flash_attn_type = -1  # auto: on where the backend supports it (measured faster here)
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            self._model = None
            raise ValueError(f"llama.cpp could not create a context of {n_ctx} tokens for {self.path}")
        self._cached: list[int] = []  # tokens whose keys/values are in the cache, in order
        self._prompt_len = 0  # length of the previous call's prompt
        self._lock = threading.Lock()
        _OPEN.add(self)

    def _decode(self, tokens: list[int]) -> None:
        api = self._api
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start: start + self.n_batch]
            array = (api.llama_token * len(chunk))(*chunk)
            status = api.llama_decode(self._ctx, api.llama_batch_get_one(array, len(chunk)))
            if status != 0:
                self._forget()
                raise RuntimeError(f"llama.cpp decode failed (status {status})")
            self._cached.extend(chunk)

    def _forget(self) -> None:
        self._api.llama_memory_clear(self._api.llama_get_memory(self._ctx), True)
        self._cached = []

    def reset(self) -> None:
        """Drop the cached prompt: the next call prefills from scratch (benchmarks do this)."""
        with self._lock:
            if self._ctx is not None:
                self._forget()

    def _reuse_prefix(self, ids: list[int]) -> int:
        """Keep the cached keys/values when this prompt continues the previous call's
        conversation (the whole previous prompt is its prefix; at least one prompt token is
        always decoded, for its logits); returns how many prompt tokens are cached.

        Any other prompt is prefilled from scratch, so a question's answer never depends on
        what was asked before: the promotion gate and evaluation, which ask one question at
        a time, measure exactly the answers chat gives."""
        keep = 0
        for cached, new in zip(self._cached, ids[:-1]):
            if cached != new:
                break
            keep += 1
        if keep < self._prompt_len:
            keep = 0  # a different conversation
        self._prompt_len = len(ids)
        if keep < len(self._cached):
            if not self._api.llama_memory_seq_rm(self._api.llama_get_memory(self._ctx), 0, keep, -1):
                self._forget()
                return 0
            del self._cached[keep:]
        return keep

    def _sampler(self, temperature: float, top_p: float, seed: int | None, repeat_penalty: float = 1.0,
                 penalty_window: int = 64) -> Any:
        api = self._api
        chain = api.llama_sampler_chain_init(api.llama_sampler_chain_default_params())
        if repeat_penalty != 1.0:
            # Only sampled tokens are "accepted" by the chain (llama_sampler_sample accepts what it
            # picks; the prompt is never fed to it), so the penalty covers the answer, not the question.
            n_vocab = api.llama_vocab_n_tokens(api.llama_model_get_vocab(self._model))
            api.llama_sampler_chain_add(chain, api.llama_sampler_init_penalties(
                n_vocab, int(penalty_window), float(repeat_penalty), 0.0, 0.0))
        if temperature > 0:  # as transformers: temperature, then nucleus, then draw
            api.llama_sampler_chain_add(chain, api.llama_sampler_init_temp(float(temperature)))
            api.llama_sampler_chain_add(chain, api.llama_sampler_init_top_p(float(top_p), 1))
            api.llama_sampler_chain_add(chain, api.llama_sampler_init_dist(
                api.LLAMA_DEFAULT_SEED if seed is None else int(seed) & 0xFFFFFFFF))
        else:
            api.llama_sampler_chain_add(chain, api.llama_sampler_init_greedy())
        return chain

    def stream_tokens(
        self,
        prompt: Sequence[int] | Any,
        max_new_tokens: int,
        temperature: float = 0.0,
        eos_ids: Sequence[int] = (),
        top_p: float = 0.95,
        seed: int | None = None,
        repeat_penalty: float = 1.0,
        penalty_window: int = 64,
    ) -> Iterator[int]:
        """Yield up to ``max_new_tokens`` new token ids after ``prompt`` (ids), stopping before
        any of ``eos_ids``. ``temperature`` 0 is greedy decoding; ``repeat_penalty`` (1.0 = off)
        applies to the last ``penalty_window`` generated tokens (see :mod:`.decoding`)."""
        ids = prompt.tolist() if hasattr(prompt, "tolist") else list(prompt)
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("empty prompt")
        if len(ids) + max_new_tokens > self.n_ctx:
            raise ValueError(
                f"prompt of {len(ids)} tokens + {max_new_tokens} new tokens exceeds the context of {self.n_ctx}"
            )
        stops = set(int(i) for i in eos_ids)
        with self._lock:
            if self._ctx is None:
                raise RuntimeError("generator is closed")
            keep = self._reuse_prefix(ids)
            self._decode(ids[keep:])
            chain = self._sampler(temperature, top_p, seed, repeat_penalty, penalty_window)
            try:
                for produced in range(max_new_tokens):
                    token = int(self._api.llama_sampler_sample(chain, self._ctx, -1))
                    if token in stops:
                        return
                    yield token
                    if produced + 1 < max_new_tokens:
                        self._decode([token])
            finally:
                self._api.llama_sampler_free(chain)

    def close(self) -> None:
        """Free llama.cpp's context and model now instead of at exit."""
        _OPEN.discard(self)
        with self._lock:
            if self._ctx is not None:
                self._api.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                self._api.llama_model_free(self._model)
                self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the C library may already be gone
            pass


_BACKEND_READY = threading.Lock()
_backend_initialised = False


def _init_llama_cpp() -> None:
    """Initialise llama.cpp's backends once per process, with its load logs silenced (llama.cpp
    logs every model load to stderr; its errors still come through, as with ``verbose=False``)."""
    global _backend_initialised
    import logging

    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    with _BACKEND_READY:
        if not _backend_initialised:
            llama_cpp.llama_backend_init()
            _backend_initialised = True


__all__ = ["GGUFExportError", "LlamaCppGenerator", "ensure_gguf", "llama_cpp_importable", "prune_cache"]
