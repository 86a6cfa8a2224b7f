"""Any OpenAI-compatible chat API over the ``openai`` SDK: DeepSeek, Ollama, vLLM, OpenAI.

The client is built with ``max_retries=0`` on purpose (the SDK would otherwise retry twice
on 429/5xx, and the router retries too: requests would multiply) and with the configured
timeout instead of the SDK's 600 s default. Errors become :class:`BackendError` with the
shared kind/retryable rules; messages never contain the API key.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import openai

from ..config import OpenAICompatModelConfig
from .api_base import MAX_DETAIL, APIBackend
from .base import BackendError, Generation, Message
from .retry import error_from_status, parse_retry_after

# Keyless servers (a local Ollama) still need some string: the SDK refuses an empty key.
PLACEHOLDER_KEY = "not-needed"
_ROLES = ("system", "user", "assistant")


def to_openai_messages(messages: list[Message]) -> list[dict[str, str]]:
    """Keep only ``role`` and ``content`` (other keys, e.g. ids, confuse strict servers)."""
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in _ROLES:
            raise BackendError(f"message {i} has unknown role {role!r}", kind="bad_request")
        content = msg.get("content")
        out.append({"role": str(role), "content": "" if content is None else str(content)})
    if not any(m["role"] != "system" for m in out):
        raise BackendError("no user or assistant message to send", kind="bad_request")
    return out


class OpenAICompatBackend(APIBackend):
    """A :class:`~dmac_core.backends.base.Backend` for one model behind an OpenAI-style API."""

    key_required = False  # a keyless server (a local Ollama) is fine unless the config names a key variable

    def __init__(self, name: str, config: OpenAICompatModelConfig, api_key: str | None) -> None:
        super().__init__(name, config, api_key)

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"OpenAICompatBackend(name={self.name!r}, model={self.config.model!r}, base_url={self.config.base_url!r})"

    def _new_client(self) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=self._api_key or PLACEHOLDER_KEY,
            base_url=self.config.base_url,
            timeout=self.config.timeout_s,
            max_retries=0,  # the router retries; never stack SDK retries on top
        )

    def _complete(self, client: openai.OpenAI, request: dict[str, Any]) -> Any:
        return client.chat.completions.create(**request)

    def _answer(self, response: Any, start: float) -> Generation:
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content if choice is not None else None) or ""
        return self._generation(text, response, response.usage, start, choice.finish_reason if choice else None)

    def _deltas(self, client: openai.OpenAI, request: dict[str, Any], state: dict[str, Any]) -> Iterator[str]:
        chunks = client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
        for chunk in chunks:
            state["last"] = chunk
            state["usage"] = chunk.usage or state.get("usage")  # usage comes with the last chunk
            for choice in chunk.choices or []:
                state["finish"] = choice.finish_reason or state.get("finish")
                delta = choice.delta.content if choice.delta is not None else None
                if delta:
                    yield delta

    def _streamed(self, text: str, state: dict[str, Any], start: float) -> Generation:
        return self._generation(text, state.get("last"), state.get("usage"), start, state.get("finish"))

    def _request(self, messages: list[Message], max_new_tokens: int | None, temperature: float | None) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "messages": to_openai_messages(messages),
            # max_tokens (not max_completion_tokens): what DeepSeek, Ollama and vLLM accept.
            "max_tokens": max_new_tokens or self.config.max_output_tokens,
            "temperature": self.config.temperature if temperature is None else temperature,
        }

    def _generation(self, text: str, response: Any, usage: Any, start: float, finish: str | None) -> Generation:
        extra: dict[str, Any] = {}
        if finish:
            extra["finish_reason"] = finish
        if getattr(response, "model", None):
            # What the server says it ran (e.g. a dated snapshot); model_version is reserved
            # for local learner versions (see the README, *Data*).
            extra["response_model"] = response.model
        return Generation(
            text=text,
            provider_model=self.config.model,
            model_version=None,
            tokens_in=getattr(usage, "prompt_tokens", None),
            tokens_out=getattr(usage, "completion_tokens", None),
            latency_ms=(time.perf_counter() - start) * 1000,
            extra=extra,
        )

    def _error(self, exc: BaseException, who: str) -> BackendError:
        if isinstance(exc, openai.APITimeoutError):  # subclass of APIConnectionError: check first
            return BackendError(f"{who}: no answer within {self.config.timeout_s:g} s", retryable=True, kind="timeout")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            return BackendError(f"{who}: cannot reach {self.config.base_url} ({why})", retryable=True, kind="connection")
        if isinstance(exc, openai.APIStatusError):
            retry_after = parse_retry_after(exc.response.headers)
            detail = getattr(exc, "message", None) or str(exc)
            return error_from_status(who, exc.status_code, str(detail)[:MAX_DETAIL], retry_after)
        return BackendError(f"{who}: {type(exc).__name__}: {str(exc)[:MAX_DETAIL]}", kind="error")
