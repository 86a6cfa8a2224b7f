"""Any OpenAI-compatible chat API over the ``openai`` SDK: DeepSeek, Ollama, vLLM, OpenAI.

The client is built with ``max_retries=0`` on purpose (the SDK would otherwise retry twice
on 429/5xx, and the router retries too: requests would multiply) and with the configured
timeout instead of the SDK's 600 s default. Errors become :class:`BackendError` with the
shared kind/retryable rules; messages never contain the API key.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import openai

from dmac_core.backends.base import Availability, BackendError, Generation, Message, StreamItem
from dmac_core.backends.redact import redact
from dmac_core.backends.retry import error_from_status, parse_retry_after
from dmac_core.config import OpenAICompatModelConfig
from dmac_core.secrets import missing_key_reason

# Keyless servers (a local Ollama) still need some string: the SDK refuses an empty key.
PLACEHOLDER_KEY = "not-needed"
_MAX_DETAIL = 300
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


class OpenAICompatBackend:
    """A :class:`~dmac_core.backends.base.Backend` for one model behind an OpenAI-style API."""

    def __init__(self, name: str, config: OpenAICompatModelConfig, api_key: str | None) -> None:
        self.name = name
        self.config = config
        self._api_key = api_key or None
        self._client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"OpenAICompatBackend(name={self.name!r}, model={self.config.model!r}, base_url={self.config.base_url!r})"

    # -- protocol --------------------------------------------------------------------
    def available(self) -> Availability:
        """Usable when enabled and, if the config names a key variable, that key is known."""
        if not self.config.enabled:
            return Availability(False, f"{self.name} is disabled in config")
        if self.config.api_key_env and not self._api_key:
            return Availability(False, missing_key_reason(self.config.api_key_env))
        return Availability(True)

    def generate(
        self, messages: list[Message], max_new_tokens: int | None = None, temperature: float | None = None, **_: Any
    ) -> Generation:
        """One whole answer. Raises :class:`BackendError` on any failure."""
        kwargs = self._request(messages, max_new_tokens, temperature)
        client = self._get_client()
        start = time.perf_counter()
        try:
            response = client.chat.completions.create(**kwargs)
        except Exception as exc:
            raise self._map_error(exc) from None
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content if choice is not None else None) or ""
        return self._generation(text, response, response.usage, start, choice.finish_reason if choice else None)

    def stream(
        self, messages: list[Message], max_new_tokens: int | None = None, temperature: float | None = None, **_: Any
    ) -> Iterator[StreamItem]:
        """Yield text deltas, then one final :class:`Generation` (usage from the last chunk).

        The request is sent on the first ``next()``; errors before the first delta can be
        retried by the caller without the user having seen anything.
        """
        kwargs = self._request(messages, max_new_tokens, temperature)
        client = self._get_client()
        start = time.perf_counter()
        parts: list[str] = []
        last: Any = None
        usage: Any = None
        finish: str | None = None
        first_ms: float | None = None
        try:
            chunks = client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
            for chunk in chunks:
                last = chunk
                usage = chunk.usage or usage
                for choice in chunk.choices or []:
                    finish = choice.finish_reason or finish
                    delta = choice.delta.content if choice.delta is not None else None
                    if delta:
                        if first_ms is None:
                            first_ms = (time.perf_counter() - start) * 1000
                        parts.append(delta)
                        yield delta
        except Exception as exc:
            raise self._map_error(exc) from None
        gen = self._generation("".join(parts), last, usage, start, finish)
        gen.extra["first_token_ms"] = first_ms
        yield gen

    def close(self) -> None:
        """Close the SDK's HTTP connections (a new client is built on the next call)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- helpers ---------------------------------------------------------------------
    def _get_client(self) -> openai.OpenAI:
        if self.config.api_key_env and not self._api_key:
            raise BackendError(f"{self.name}: {missing_key_reason(self.config.api_key_env)}", kind="auth")
        with self._client_lock:
            if self._client is None:
                self._client = openai.OpenAI(
                    api_key=self._api_key or PLACEHOLDER_KEY,
                    base_url=self.config.base_url,
                    timeout=self.config.timeout_s,
                    max_retries=0,  # the router retries; never stack SDK retries on top
                )
            return self._client

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

    def _map_error(self, exc: BaseException) -> BackendError:
        """Translate an SDK exception into a :class:`BackendError` (key-free)."""
        who = f"{self.name} ({self.config.model})"
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, openai.APITimeoutError):  # subclass of APIConnectionError: check first
            err = BackendError(
                f"{who}: no answer within {self.config.timeout_s:g} s", retryable=True, kind="timeout"
            )
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            err = BackendError(f"{who}: cannot reach {self.config.base_url} ({why})", retryable=True, kind="connection")
        elif isinstance(exc, openai.APIStatusError):
            retry_after = parse_retry_after(exc.response.headers)
            detail = getattr(exc, "message", None) or str(exc)
            err = error_from_status(who, exc.status_code, str(detail)[:_MAX_DETAIL], retry_after)
        else:
            err = BackendError(f"{who}: {type(exc).__name__}: {str(exc)[:_MAX_DETAIL]}", kind="error")
        err.args = (redact(str(err), [self._api_key]),)
        return err
