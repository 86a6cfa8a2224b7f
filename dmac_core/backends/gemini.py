"""Gemini over the ``google-genai`` SDK (``from google import genai``).

The SDK client is built with retries off (``HttpOptions.retry_options`` unset means one
attempt) because the router retries; its timeout is given in milliseconds, as the SDK
expects. Every SDK or transport error becomes a :class:`BackendError` whose ``kind`` and
``retryable`` follow the shared rules in :mod:`dmac_core.backends.retry`, and whose message
never contains the API key.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterator

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ..config import GeminiModelConfig
from ..serving.attachments import ImageError, gemini_image_parts
from .api_base import MAX_DETAIL, APIBackend
from .base import BackendError, Generation, Message
from .retry import error_from_status, parse_retry_after

try:  # the pinned SDK uses the httpx2 fork; plain httpx is accepted too in case a version switches
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed SDK version
    import httpx as _httpx  # type: ignore[no-redef]



def to_gemini_contents(
    messages: list[Message], data_dir: str | Path | None = None
) -> tuple[list[types.Content], str | None]:
    """Convert OpenAI-style ``[{role, content}]`` to Gemini ``contents`` + system instruction.

    ``assistant`` becomes ``model``; all ``system`` messages are joined (in order) into the
    one system instruction Gemini accepts. A message's ``images`` (references stored under
    ``data_dir``, see :mod:`dmac_core.serving.attachments`) become inline-data parts after its text.
    Raises :class:`BackendError` (bad_request) for an unknown role, an unreadable image, or when
    no user/assistant turn is left.
    """
    contents: list[types.Content] = []
    system: list[str] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        text = msg.get("content")
        text = "" if text is None else str(text)
        if role == "system":
            if text:
                system.append(text)
        elif role in ("user", "assistant", "model"):
            parts = [types.Part(text=text)]
            if msg.get("images"):
                if data_dir is None:
                    raise BackendError("message has images but no image directory is configured", kind="bad_request")
                try:
                    parts += gemini_image_parts(data_dir, list(msg["images"]))
                except ImageError as exc:
                    raise BackendError(str(exc), kind="bad_request") from None
            contents.append(types.Content(role="user" if role == "user" else "model", parts=parts))
        else:
            raise BackendError(f"message {i} has unknown role {role!r}", kind="bad_request")
    if not contents:
        raise BackendError("no user or assistant message to send", kind="bad_request")
    return contents, "\n\n".join(system) if system else None


def _retry_delay_from_details(details: Any) -> float | None:
    """Gemini puts its wish in the body (``google.rpc.RetryInfo.retryDelay`` = ``"37s"``)."""
    try:
        items = details.get("error", details).get("details") or []
    except AttributeError:
        return None
    for item in items:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            match = re.fullmatch(r"\s*([0-9.]+)s\s*", str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


class GeminiBackend(APIBackend):
    """A :class:`~dmac_core.backends.base.Backend` for one Gemini model."""

    accepts_images = True  # messages may carry "images": [ref, ...] (sent as inline data)

    def __init__(
        self, name: str, config: GeminiModelConfig, api_key: str | None, data_dir: str | Path | None = None
    ) -> None:
        super().__init__(name, config, api_key)
        self.data_dir = data_dir  # where image references resolve (<data_dir>/images/)

    def _new_client(self) -> genai.Client:
        return genai.Client(
            api_key=self._api_key,
            vertexai=False,
            http_options=types.HttpOptions(
                base_url=self.config.base_url,
                timeout=int(self.config.timeout_s * 1000),  # milliseconds
                retry_options=None,  # one attempt: the router owns retries
            ),
        )

    def _complete(self, client: genai.Client, request: tuple[list[types.Content], types.GenerateContentConfig]) -> Any:
        contents, gen_config = request
        return client.models.generate_content(model=self.config.model, contents=contents, config=gen_config)

    def _answer(self, response: Any, start: float) -> Generation:
        return self._generation(response.text or "", response, start)

    def _deltas(self, client: genai.Client, request: tuple[list[types.Content], types.GenerateContentConfig],
                state: dict[str, Any]) -> Iterator[str]:
        contents, gen_config = request
        for chunk in client.models.generate_content_stream(model=self.config.model, contents=contents,
                                                           config=gen_config):
            state["last"] = chunk
            state["usage"] = chunk.usage_metadata or state.get("usage")
            yield chunk.text or ""

    def _streamed(self, text: str, state: dict[str, Any], start: float) -> Generation:
        return self._generation(text, state.get("last"), start, usage=state.get("usage"))

    def _request(
        self, messages: list[Message], max_new_tokens: int | None, temperature: float | None
    ) -> tuple[list[types.Content], types.GenerateContentConfig]:
        contents, system = to_gemini_contents(messages, self.data_dir)
        answer_budget = max_new_tokens or self.config.max_output_tokens
        thinking = self.config.thinking_budget
        gen_config = types.GenerateContentConfig(
            system_instruction=system,
            # Gemini counts thinking in max_output_tokens: the thinking budget comes on top, so
            # a 64-token comparison still leaves a thinking model 64 tokens to answer in.
            max_output_tokens=answer_budget + (thinking or 0),
            temperature=self.config.temperature if temperature is None else temperature,
            thinking_config=None if thinking is None else types.ThinkingConfig(thinking_budget=thinking),
        )
        return contents, gen_config

    def _generation(self, text: str, response: Any, start: float, usage: Any = None) -> Generation:
        usage = usage or getattr(response, "usage_metadata", None)
        extra: dict[str, Any] = {}
        candidates = getattr(response, "candidates", None) or []
        if candidates and candidates[0].finish_reason is not None:
            extra["finish_reason"] = str(getattr(candidates[0].finish_reason, "value", candidates[0].finish_reason))
        if getattr(response, "model_version", None):
            # The exact snapshot the API ran; kept out of model_version, which the records
            # reserve for local learner versions (see the README, *Data*).
            extra["response_model"] = response.model_version
        thoughts = (usage.thoughts_token_count or 0) if usage is not None else 0
        answer_tokens = usage.candidates_token_count if usage is not None else None
        if thoughts:
            extra["thoughts_tokens"] = thoughts
            extra["answer_tokens"] = answer_tokens
        if not text.strip():
            # billed, but nothing to show or score: an error, never an empty "answer"
            spent = f" after {thoughts} thinking tokens" if thoughts else ""
            raise BackendError(
                f"{self.name} ({self.config.model}) returned no answer{spent} "
                f"(finish reason {extra.get('finish_reason', 'unknown')}); raise max_output_tokens "
                "or thinking_budget in its config", kind="empty")
        return Generation(
            text=text,
            provider_model=self.config.model,
            model_version=None,
            tokens_in=usage.prompt_token_count if usage is not None else None,
            # billed output: the answer and the thinking before it (what caps must count)
            tokens_out=(answer_tokens or 0) + thoughts if usage is not None else None,
            latency_ms=(time.perf_counter() - start) * 1000,
            extra=extra,
        )

    def _error(self, exc: BaseException, who: str) -> BackendError:
        if isinstance(exc, genai_errors.APIError):
            headers = getattr(getattr(exc, "response", None), "headers", None)
            retry_after = parse_retry_after(headers)
            if retry_after is None:
                retry_after = _retry_delay_from_details(exc.details)
            detail = exc.message or exc.status or type(exc).__name__
            return error_from_status(who, int(exc.code or 0), str(detail)[:MAX_DETAIL], retry_after)
        if isinstance(exc, _httpx.TimeoutException):
            return BackendError(f"{who}: no answer within {self.config.timeout_s:g} s ({type(exc).__name__})",
                                retryable=True, kind="timeout")
        if isinstance(exc, _httpx.TransportError):
            return BackendError(
                f"{who}: cannot reach {self.config.base_url or 'the Gemini API'} ({type(exc).__name__}: {exc})",
                retryable=True, kind="connection")
        return BackendError(f"{who}: {type(exc).__name__}: {str(exc)[:MAX_DETAIL]}", kind="error")
