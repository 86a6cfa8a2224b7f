"""The local learner ("DeepSeek-RL"): a transformers causal LM served in-process.

Serves the registry's current version: the base model, or the base with a LoRA adapter
merged in, decoded by llama.cpp from a GGUF copy (``runtime: auto``, see
``llama_cpp_runtime``) or by the torch decode loop (``fast_decode``). When a new version is promoted the next request loads it; a request that has
already started keeps the model object it started with, so in-flight answers finish on
their version and nobody needs a restart.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..base_model import is_model_dir, weights_fingerprint
from ..config import LocalModelConfig
from ..training.registry import BASE_VERSION, ModelRegistry, ModelVersion
from ..training.transfer import version_base
from .base import Availability, BackendError, Generation, Message, StreamItem
from .fair_lock import FairLock
from .fast_decode import SERVING_WEIGHTS, FastGenerator, eos_ids_from, eos_token_ids, supports
from .llama_cpp_runtime import GGUFExportError, LlamaCppGenerator, ensure_gguf, llama_cpp_importable


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are only fast on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere
    torch emulates them and fp32 is faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(precision: str) -> torch.dtype:
    if precision == "bf16" or (precision == "auto" and cpu_supports_bf16()):
        return torch.bfloat16
    return torch.float32


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
    ) -> None:
        if model is None and load_model is None:
            raise ValueError("LoadedModel needs a model or a way to load it")
        self.version = version
        self.tokenizer = tokenizer
        self.fast = fast
        self.runtime = runtime  # what decodes chat answers, for the status panel
        self.base_name = base_name  # the base model this version was trained on (records' provider_model)
        # One generation at a time per model object: two cores gain nothing from overlap and
        # interleaved decoding would only slow each other down. Waiters are served in
        # arrival order, so no chat session is starved by others.
        self.lock = FairLock()
        self._model = model
        self._load_model = load_model
        self._model_lock = threading.Lock()
        self.eos_ids = eos_ids if eos_ids is not None else eos_token_ids(model, tokenizer)

    @property
    def model(self) -> Any:
        """The HF model of this version (merged adapter), loaded on first use."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    assert self._load_model is not None
                    self._model = self._load_model()
        return self._model


def _load_hf(source: Path, version: ModelVersion, dtype: torch.dtype) -> tuple[Any, Any]:
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
    decode loop (issue 9) that ``LocalBackend.stream`` uses; None for callers that only need
    the HF model (evaluation, export).
    """
    # Each version on the weights it was trained on (a version trained from another base
    # model, or on a fully fine-tuned version, recorded that base in its metadata).
    source = version_base(version, base_path)
    model, tokenizer = _load_hf(source, version, dtype)
    # share_weights: the HF model computes with the packed served weights too (one copy in memory)
    fast = FastGenerator(model, weights=fast_weights, share_weights=True) if fast_weights and supports(model) else None
    runtime = f"torch ({fast_weights} weights)" if fast is not None else "transformers generate()"
    return LoadedModel(version=version.id, model=model, tokenizer=tokenizer, fast=fast, runtime=runtime,
                       base_name=source.name)


def served_gguf(base_path: Path, version: ModelVersion, weights: str, cache_dir: Path) -> Path:
    """The GGUF copy of ``version`` under ``cache_dir``, exported first when missing or made
    from other weights (~3 s for the bundled model, plus loading and merging). Raises
    ``GGUFExportError`` for a model llama.cpp cannot run."""
    from ..base_model import bundled_gguf_path

    source = version_base(version, base_path)
    files = [source / "model.safetensors"]
    if version.adapter_path is not None:
        files.append(version.adapter_path / "adapter_model.safetensors")
    return ensure_gguf(
        Path(cache_dir) / f"{version.id}.{weights}.gguf",
        weights_fingerprint(files),
        lambda: _load_hf(source, version, torch.float32)[0],
        bundled_gguf_path(),
        quant=weights,
        name=f"dmac-learner {version.id}",
    )


def load_llama_cpp(
    base_path: Path, version: ModelVersion, dtype: torch.dtype, weights: str, cache_dir: Path, threads: int = 0
) -> LoadedModel:
    """Serve ``version`` through llama.cpp from its GGUF copy (:func:`served_gguf`). Raises
    ``GGUFExportError`` for a model llama.cpp cannot run, ``ImportError`` without llama-cpp-python."""
    from transformers import AutoTokenizer, GenerationConfig

    path = served_gguf(base_path, version, weights, cache_dir)
    source = version_base(version, base_path)
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
        load_model=lambda: _load_hf(source, version, dtype)[0],
        eos_ids=eos_ids_from(generation, tokenizer),
        runtime=f"llama.cpp ({weights} GGUF)",
        base_name=source.name,
    )


class LocalBackend:
    """Backend protocol implementation for the local learner."""

    def __init__(self, name: str, config: LocalModelConfig, base_path: Path, registry: ModelRegistry) -> None:
        self.name = name
        self.config = config
        self.base_path = Path(base_path)
        self.registry = registry
        self.dtype = resolve_dtype(config.precision)
        # precision "fp32" keeps answers token-for-token those of fp32 generate(); otherwise
        # serve the measured fastest format (bench/generation_bench.py, bench/RESULTS.md)
        self.fast_weights = "fp32" if config.precision == "fp32" else SERVING_WEIGHTS
        # GGUF copies of served versions for llama.cpp, made on first use
        self.gguf_dir = registry.models_dir / "gguf"
        self._loaded: LoadedModel | None = None
        self._loaded_for = ""  # the served id self._loaded was loaded for
        self._load_lock = threading.Lock()
        self._fallback_reason = ""  # why llama.cpp does not serve although runtime is auto

    def wants_llama_cpp(self) -> bool:
        """Whether the configured runtime is llama.cpp (precision fp32 always means torch)."""
        return self.config.precision != "fp32" and self.config.runtime != "torch"

    def available(self) -> Availability:
        if not self.config.enabled:
            return Availability(False, "disabled in config (models.deepseek.enabled: false)")
        if not is_model_dir(self.base_path):
            return Availability(False, f"base model not found at {self.base_path}; run `make setup`")
        if self.config.runtime == "llama_cpp" and self.wants_llama_cpp() and not llama_cpp_importable():
            return Availability(False, "runtime llama_cpp, but llama-cpp-python is not installed; "
                                       "run `make setup` or set models.deepseek.runtime: auto")
        return Availability(True)

    def runtime_status(self) -> str:
        """What decodes chat answers, in words (for the status panel)."""
        loaded = self._loaded
        if loaded is not None:
            note = f" — llama.cpp not used: {self._fallback_reason}" if self._fallback_reason else ""
            return loaded.runtime + note
        if not self.wants_llama_cpp():
            return f"torch ({self.fast_weights} weights; runtime: torch or precision: fp32)"
        if not llama_cpp_importable():
            return "torch — llama-cpp-python is not installed (make setup builds it)"
        return f"llama.cpp ({self.config.gguf_weights} GGUF), loaded with the first answer"

    def served_version(self) -> str:
        return self.registry.served_id()

    def current(self) -> LoadedModel:
        """The loaded model of the served version (loads it when the served version changed)."""
        wanted = self.registry.served_id()
        loaded = self._loaded
        if loaded is not None and self._loaded_for == wanted:
            return loaded
        with self._load_lock:
            if self._loaded is None or self._loaded_for != wanted:
                self._loaded = self._load(self._version(wanted))
                # keyed by the id asked for, so a broken served version is not reloaded per answer
                self._loaded_for = wanted
            return self._loaded

    def _version(self, version_id: str) -> ModelVersion:
        try:
            return self.registry.get(version_id)
        except Exception:  # an unreadable version never takes the learner down
            return self.registry.get(BASE_VERSION)

    def prepare(self) -> str:
        """Make the served version's GGUF copy now when llama.cpp will serve it, without loading
        anything to serve with (``setup`` calls this, so the first chat answer does not wait);
        returns what will run the learner, in words. Raises ``GGUFExportError``."""
        if not (self.available().ok and self.wants_llama_cpp() and llama_cpp_importable()):
            return self.runtime_status()
        version = self._version(self.registry.served_id())
        served_gguf(self.base_path, version, self.config.gguf_weights, self.gguf_dir)
        return f"llama.cpp ({self.config.gguf_weights} GGUF)"

    def _load(self, version: ModelVersion) -> LoadedModel:
        self._fallback_reason = ""
        if self.wants_llama_cpp() and llama_cpp_importable():
            try:
                return load_llama_cpp(self.base_path, version, self.dtype, self.config.gguf_weights,
                                      self.gguf_dir, self.config.threads)
            except (GGUFExportError, ValueError, OSError) as exc:  # llama.cpp refuses a file with ValueError
                if self.config.runtime == "llama_cpp":
                    raise BackendError(f"{self.name}: llama.cpp cannot serve {version.id}: {exc}",
                                       kind="unavailable") from exc
                self._fallback_reason = str(exc)  # auto: the torch loop serves instead
        return load_model(self.base_path, version, self.dtype, self.fast_weights)

    def _inputs(self, loaded: LoadedModel, messages: list[Message]) -> dict[str, torch.Tensor]:
        chat = [{"role": m["role"], "content": str(m["content"])} for m in messages]
        encoded = loaded.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def _generate_kwargs(self, loaded: LoadedModel, options: dict[str, Any]) -> dict[str, Any]:
        temperature = options.get("temperature")
        temperature = self.config.temperature if temperature is None else temperature
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(options.get("max_new_tokens") or self.config.max_new_tokens),
            "pad_token_id": loaded.tokenizer.pad_token_id,
        }
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=float(temperature), top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def generate(self, messages: list[Message], **options: Any) -> Generation:
        final: Generation | None = None
        for item in self.stream(messages, **options):
            if isinstance(item, Generation):
                final = item
        assert final is not None
        return final

    def stream(self, messages: list[Message], **options: Any) -> Iterator[StreamItem]:
        from transformers import TextIteratorStreamer

        if not self.available().ok:
            raise BackendError(f"{self.name}: {self.available().reason}", kind="unavailable")
        loaded = self.current()  # pinned for the whole answer, even if a new version is promoted meanwhile
        started = time.perf_counter()
        inputs = self._inputs(loaded, messages)
        if loaded.fast is not None:
            yield from self._stream_fast(loaded, inputs, options, started)
            return
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        output: dict[str, Any] = {}

        def run() -> None:
            try:
                with loaded.lock, torch.inference_mode():
                    output["ids"] = loaded.model.generate(
                        **inputs, streamer=streamer, **self._generate_kwargs(loaded, options)
                    )
            except BaseException as exc:  # surfaced to the caller below
                output["error"] = exc
                streamer.end()

        worker = threading.Thread(target=run, name=f"generate-{self.name}", daemon=True)
        worker.start()
        pieces: list[str] = []
        for piece in streamer:
            if piece:
                pieces.append(piece)
                yield piece
        worker.join()
        if "error" in output:
            raise BackendError(f"{self.name}: local generation failed: {output['error']}") from output["error"]
        prompt_len = inputs["input_ids"].shape[1]
        tokens_out = int(output["ids"].shape[1] - prompt_len)
        yield Generation(
            text="".join(pieces).strip(),
            provider_model=loaded.base_name or self.base_path.name,
            model_version=loaded.version,
            tokens_in=int(prompt_len),
            tokens_out=tokens_out,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )

    def _stream_fast(
        self, loaded: LoadedModel, inputs: dict[str, torch.Tensor], options: dict[str, Any], started: float
    ) -> Iterator[StreamItem]:
        """Like the generate() path: a worker thread decodes under ``loaded.lock`` and hands
        token ids over a queue; text is decoded incrementally and a delta is only yielded
        when it does not end in a partial multi-byte character."""
        assert loaded.fast is not None
        kwargs = self._generate_kwargs(loaded, options)
        temperature = float(kwargs.get("temperature") or 0.0) if kwargs.get("do_sample") else 0.0
        prompt = inputs["input_ids"][0]
        tokens: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()  # set when the caller stops reading: free the model early
        done = object()

        def run() -> None:
            try:
                with loaded.lock:
                    for token in loaded.fast.stream_tokens(  # type: ignore[union-attr]
                        prompt, kwargs["max_new_tokens"], temperature, loaded.eos_ids, top_p=0.95,
                    ):
                        tokens.put(token)
                        if stop.is_set():
                            break
            except BaseException as exc:  # surfaced to the caller below
                tokens.put(exc)
            tokens.put(done)

        worker = threading.Thread(target=run, name=f"generate-{self.name}", daemon=True)
        worker.start()
        ids: list[int] = []
        sent = ""
        try:
            while (item := tokens.get(timeout=600)) is not done:
                if isinstance(item, BaseException):
                    raise BackendError(f"{self.name}: local generation failed: {item}") from item
                ids.append(item)
                text = loaded.tokenizer.decode(ids, skip_special_tokens=True)
                if len(text) > len(sent) and not text.endswith("\ufffd"):
                    yield text[len(sent):]
                    sent = text
        finally:
            stop.set()
        text = loaded.tokenizer.decode(ids, skip_special_tokens=True)
        if len(text) > len(sent):  # a trailing partial character, as TextIteratorStreamer ends
            yield text[len(sent):]
        yield Generation(
            text=text.strip(),
            provider_model=loaded.base_name or self.base_path.name,
            model_version=loaded.version,
            tokens_in=int(prompt.shape[0]),
            tokens_out=len(ids),
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
