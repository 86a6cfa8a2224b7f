"""Loading a learner version to serve or score it: the transformers model with the version's
LoRA adapter merged in (optionally packed for the torch decode loop), or its GGUF copy decoded
by llama.cpp; the dtype the machine computes fastest in; the fingerprint of the weight files a
version is made of (what caches derived from it depend on)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .base_model import bundled_gguf_path, weights_fingerprint
from .fair_lock import FairLock
from .fast_decode import FastGenerator, eos_ids_from, eos_token_ids, supports
from .llama_cpp_runtime import LlamaCppGenerator, ensure_gguf
from .registry import ModelVersion, version_base
from .scope import Scope


class LoadedModel:
    """The served version, loaded: tokenizer, decoder and (possibly lazily) the HF model.

    ``fast`` is what ``LocalBackend.stream`` decodes with: llama.cpp over a GGUF copy, the
    torch fast loop, or None for HF ``generate()``. When llama.cpp serves, the HF model is
    only loaded if something asks for ``model`` (evaluation, explanations), so serving alone
    keeps one copy of the weights in memory.
    """

    def __init__(
        self,
        version: str,
        tokenizer: Any,
        model: Any = None,
        fast: FastGenerator | LlamaCppGenerator | None = None,
        load_model: Callable[[], Any] | None = None,
        eos_ids: list[int] | None = None,
        runtime: str = "transformers",
        base_name: str = "",
        loss_model: str = "",
    ) -> None:
        if model is None and load_model is None:
            raise ValueError("LoadedModel needs a model or a way to load it")
        self.version = version
        self.tokenizer = tokenizer
        self.fast = fast
        self.runtime = runtime  # what decodes chat answers, for the status panel
        self.base_name = base_name  # the base model this version was trained on (records' provider_model)
        self.loss_model = loss_model or runtime  # what ``model`` computes losses with, in words
        # One generation at a time per model object: two cores gain nothing from overlap and
        # interleaved decoding would only slow each other down. Waiters are served in
        # arrival order, so no chat session is starved by others.
        self.lock = FairLock()
        self._model = model
        self._load_model = load_model
        self._model_lock = threading.Lock()
        self.eos_ids = eos_ids if eos_ids is not None else eos_token_ids(model, tokenizer)
        # A scoped version (see .scope): questions outside what it was taught go to ``fallback``.
        self.scope: Scope | None = None
        self.scope_threshold = 1.0
        self.fallback: LoadedModel | None = None

    def release_model(self) -> None:
        """Let go of the HF model when it can be loaded again on demand (llama.cpp serves)."""
        if self._load_model is not None:
            with self._model_lock:
                self._model = None

    @property
    def model(self) -> Any:
        """The HF model of this version (merged adapter), loaded on first use."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    assert self._load_model is not None
                    self._model = self._load_model()
        return self._model


def load_merged(source: Path, version: ModelVersion, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model, tokenizer) of ``version`` on the full weights at ``source``: its LoRA adapter, if
    it has one, merged in; in eval mode; the tokenizer with a pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if version.adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, version.adapter_path).merge_and_unload()
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_model(
    base_path: Path, version: ModelVersion, dtype: torch.dtype, fast_weights: str | None = None
) -> LoadedModel:
    """Load the base model, with the version's LoRA adapter merged in when it has one.

    ``fast_weights`` ("fp32" | "fp16" | "int8"): also pack the merged weights for the fast
    decode loop that ``LocalBackend.stream`` uses; None for callers that only need
    the HF model (evaluation, export).
    """
    # Each version on the weights it was trained on (a version trained from another base
    # model, or on a fully fine-tuned version, recorded that base in its metadata).
    source = version_base(version, base_path)
    model, tokenizer = load_merged(source, version, dtype)
    # share_weights: the HF model computes with the packed served weights too (one copy in memory)
    fast = FastGenerator(model, weights=fast_weights, share_weights=True) if fast_weights and supports(model) else None
    runtime = f"torch ({fast_weights} weights)" if fast is not None else "transformers generate()"
    precision = fast_weights if fast is not None else str(dtype).removeprefix("torch.").replace("float32", "fp32")
    return LoadedModel(version=version.id, model=model, tokenizer=tokenizer, fast=fast, runtime=runtime,
                       base_name=source.name, loss_model=f"transformers {precision}")


def version_fingerprint(base_path: Path, version: ModelVersion) -> list[list[Any]]:
    """Path, size and mtime of the weight files ``version`` is made of (its base and adapter):
    what a cache derived from the version (its GGUF copy, its evaluations) depends on."""
    source = version_base(version, base_path)
    files = [source / "model.safetensors"]
    if version.adapter_path is not None:
        files.append(version.adapter_path / "adapter_model.safetensors")
    return weights_fingerprint(files)


def gguf_copy_path(cache_dir: Path, version_id: str, weights: str) -> Path:
    """Where the GGUF copy of a version in a weight format lives."""
    return Path(cache_dir) / f"{version_id}.{weights}.gguf"


def served_gguf(base_path: Path, version: ModelVersion, weights: str, cache_dir: Path,
                protect: Sequence[Path] = (), load_hf_model: Callable[[], Any] | None = None) -> Path:
    """The GGUF copy of ``version`` under ``cache_dir``, exported first when missing or made
    from other weights (~3 s for the bundled model, plus loading and merging with
    ``load_hf_model``, by default the version's fp32 transformers model); pruning older copies
    spares ``protect``. Raises ``GGUFExportError`` for a model llama.cpp cannot run."""
    source = version_base(version, base_path)
    return ensure_gguf(
        gguf_copy_path(cache_dir, version.id, weights),
        version_fingerprint(base_path, version),
        load_hf_model or (lambda: load_merged(source, version, torch.float32)[0]),
        bundled_gguf_path(),
        quant=weights,
        name=f"dmac-learner {version.id}",
        protect=protect,
    )


def load_llama_cpp(
    base_path: Path, version: ModelVersion, weights: str, cache_dir: Path, threads: int = 0,
    protect: Sequence[Path] = (),
) -> LoadedModel:
    """Serve ``version`` through llama.cpp from its GGUF copy (:func:`served_gguf`). Raises
    ``GGUFExportError`` for a model llama.cpp cannot run, ``ImportError`` without llama-cpp-python."""
    from transformers import AutoTokenizer, GenerationConfig

    source = version_base(version, base_path)
    exported: list[Any] = []  # the fp32 model an export loaded: kept for losses (callers may release it)

    def load_for_export() -> Any:
        exported.append(load_merged(source, version, torch.float32)[0])
        return exported[0]

    path = served_gguf(base_path, version, weights, cache_dir, protect, load_for_export)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        generation = GenerationConfig.from_pretrained(source)
    except OSError:  # no generation_config.json: the tokenizer's EOS, as generate() does
        generation = None
    generator = LlamaCppGenerator(path, n_threads=threads or None)
    return LoadedModel(
        version=version.id,
        tokenizer=tokenizer,
        fast=generator,
        # losses and token accuracy (evaluation) come from the transformers model in fp32
        model=exported[0] if exported else None,
        load_model=lambda: load_merged(source, version, torch.float32)[0],
        eos_ids=eos_ids_from(generation, tokenizer),
        runtime=f"llama.cpp ({weights} GGUF)",
        base_name=source.name,
        loss_model="transformers fp32",
    )
