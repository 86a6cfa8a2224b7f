"""Serve the local learner through llama.cpp (issue 9): 4-bit weights, a C++ decode loop.

Decoding one token reads every weight once, so on a CPU the speed follows the bytes per
weight: llama.cpp's 4-bit blocks (4.5 bits a weight) and its AVX2 kernels decode 2-3× faster
than the torch loop over fp16 weights (bench/RESULTS.md). The served version is exported to
GGUF once (:func:`ensure_gguf`, cached under the registry's ``gguf/`` folder, ~3 s for the
bundled model), then generated from by
:class:`LlamaCppGenerator`, which has the same ``stream_tokens`` interface as the torch
:class:`~dmac_core.backends.fast_decode.FastGenerator`: prompts are tokenized by the HF
tokenizer and token ids go in and out, so chat templates, stop tokens and the text the rest
of the system sees are unchanged.

``llama-cpp-python`` is built from source by ``make setup``; where it is missing (or the
model cannot be exported), the torch path serves and :func:`runtime_status` says why.
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

from ..gguf_export import GGUFExportError, write_gguf

def llama_cpp_importable() -> bool:
    """True when the llama_cpp package is installed (``make setup`` builds it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def fingerprint(files: Sequence[Path]) -> list[list[Any]]:
    """What a GGUF copy was made from: path, size and mtime of each source weight file, so a
    re-converted base model or a re-created version id never serves a stale copy."""
    found = []
    for path in files:
        try:
            stat = Path(path).stat()
        except OSError:
            continue
        found.append([str(path), stat.st_size, stat.st_mtime_ns])
    return found


def ensure_gguf(
    target: Path,
    source: list[list[Any]],
    load_hf_model: Callable[[], Any],
    template_gguf: Path,
    quant: str,
    name: str,
) -> Path:
    """Return ``target``, exporting the model to it first unless a copy made from ``source``
    (a :func:`fingerprint`) is already there.

    ``load_hf_model`` is only called on a cache miss (loading and merging costs seconds).
    Raises :class:`~dmac_core.gguf_export.GGUFExportError` when the model cannot be exported.
    """
    stamp = target.with_name(target.name + ".json")
    try:
        if target.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("source") == source:
            return target
    except (OSError, ValueError, AttributeError):
        pass  # no stamp or a broken one: export again
    write_gguf(load_hf_model(), target, template_gguf, quant=quant, name=name)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"source": source, "weights": quant}), encoding="utf-8")
    os.replace(tmp, stamp)
    return target


# Generators still open at interpreter exit: closed by an atexit hook, because llama-cpp-python's
# own finalizer runs after ctypes is torn down and prints a TypeError traceback.
_OPEN: "weakref.WeakSet[LlamaCppGenerator]" = weakref.WeakSet()


@atexit.register
def _close_open_generators() -> None:
    for generator in list(_OPEN):
        generator.close()


class LlamaCppGenerator:
    """Token-level generation with llama.cpp over one GGUF file.

    Not thread-safe (one llama.cpp context): callers serialise, as ``LocalBackend`` does with
    the model's fair lock.
    """

    def __init__(self, path: Path, n_threads: int | None = None, n_ctx: int = 8192) -> None:
        import llama_cpp

        threads = n_threads or max(1, len(os.sched_getaffinity(0)))
        self.path = Path(path)
        self.n_ctx = n_ctx
        # llama.cpp prints its load log to stderr unless verbose=False.
        self.llm = llama_cpp.Llama(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self._lock = threading.Lock()
        _OPEN.add(self)

    def stream_tokens(
        self,
        prompt: Sequence[int] | Any,
        max_new_tokens: int,
        temperature: float = 0.0,
        eos_ids: Sequence[int] = (),
        top_p: float = 0.95,
        seed: int | None = None,
    ) -> Iterator[int]:
        """Yield up to ``max_new_tokens`` new token ids after ``prompt`` (ids), stopping before
        any of ``eos_ids``. ``temperature`` 0 is greedy decoding."""
        ids = prompt.tolist() if hasattr(prompt, "tolist") else list(prompt)
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("empty prompt")
        if len(ids) + max_new_tokens > self.n_ctx:
            raise ValueError(
                f"prompt of {len(ids)} tokens + {max_new_tokens} new tokens exceeds the context of {self.n_ctx}"
            )
        stops = set(int(i) for i in eos_ids)
        if seed is not None:
            self.llm.set_seed(seed)
        sampling: dict[str, Any] = (
            {"temp": float(temperature), "top_p": float(top_p), "top_k": 0}
            if temperature > 0
            else {"temp": 0.0, "top_k": 1}
        )
        with self._lock:
            count = 0
            # reset=True still reuses the longest common prefix with the previous prompt
            # (llama-cpp-python keeps the KV cache), which is what a growing chat wants.
            for token in self.llm.generate(ids, reset=True, **sampling):
                if token in stops:
                    return
                yield int(token)
                count += 1
                if count >= max_new_tokens:
                    return

    def close(self) -> None:
        """Free llama.cpp's model and context now instead of at garbage collection."""
        _OPEN.discard(self)
        closer = getattr(self.llm, "close", None)
        if closer is not None:
            closer()


__all__ = ["GGUFExportError", "LlamaCppGenerator", "ensure_gguf", "fingerprint", "llama_cpp_importable"]
