"""What every API backend shares: one SDK client built on first use (and rebuilt after
``close``), availability from the config and the key, whole and streamed answers with the
time to the first token, and SDK errors turned into key-free :class:`BackendError` s.

A subclass says only what differs between APIs: how to build the client and the request, how
to call it (whole and streamed) and read the answer, and which SDK errors mean what.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

from ..secrets import missing_key_reason
from .base import Availability, BackendError, Generation, Message, StreamItem
from .redact import redact

MAX_DETAIL = 300  # characters of a server's error text kept: readable in the UI and the logs


class APIBackend:
    """The skeleton of a :class:`~dmac_core.backends.base.Backend` over a vendor SDK."""

    # whether the model cannot be called without a key (a keyless local server can)
    key_required = True

    def __init__(self, name: str, config: Any, api_key: str | None) -> None:
        self.name = name
        self.config = config
        self._api_key = api_key or None
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key, even by accident
        return f"{type(self).__name__}(name={self.name!r}, model={self.config.model!r})"

    # -- protocol --------------------------------------------------------------------
    def available(self) -> Availability:
        """Usable when enabled in config and, where a key is needed, the key is known (no network call)."""
        if not self.config.enabled:
            return Availability(False, f"{self.name} is disabled in config")
        if self._key_missing():
            return Availability(False, missing_key_reason(self.config.api_key_env))
        return Availability(True)

    def generate(
        self, messages: list[Message], max_new_tokens: int | None = None, temperature: float | None = None, **_: Any
    ) -> Generation:
        """One whole answer. Raises :class:`BackendError` on any failure."""
        request = self._request(messages, max_new_tokens, temperature)
        client = self._get_client()
        start = time.perf_counter()
        try:
            response = self._complete(client, request)
        except Exception as exc:
            raise self._map_error(exc) from None
        return self._answer(response, start)

    def stream(
        self, messages: list[Message], max_new_tokens: int | None = None, temperature: float | None = None, **_: Any
    ) -> Iterator[StreamItem]:
        """Yield text deltas, then one final :class:`Generation`.

        The request is sent on the first ``next()``; errors before the first delta can be
        retried by the caller without the user having seen anything.
        """
        request = self._request(messages, max_new_tokens, temperature)
        client = self._get_client()
        start = time.perf_counter()
        parts: list[str] = []
        state: dict[str, Any] = {}
        first_ms: float | None = None
        try:
            for delta in self._deltas(client, request, state):
                if delta:
                    if first_ms is None:
                        first_ms = (time.perf_counter() - start) * 1000
                    parts.append(delta)
                    yield delta
        except Exception as exc:
            raise self._map_error(exc) from None
        gen = self._streamed("".join(parts), state, start)
        gen.extra["first_token_ms"] = first_ms
        yield gen

    def close(self) -> None:
        """Close the SDK's HTTP connections (a new client is built on the next call)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- shared helpers ----------------------------------------------------------------
    def _key_missing(self) -> bool:
        needed = self.key_required or bool(self.config.api_key_env)
        return needed and not self._api_key

    def _get_client(self) -> Any:
        if self._key_missing():
            raise BackendError(f"{self.name}: {missing_key_reason(self.config.api_key_env)}", kind="auth")
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _map_error(self, exc: BaseException) -> BackendError:
        """An SDK or transport exception as a :class:`BackendError` whose message never holds the key."""
        if isinstance(exc, BackendError):
            err = exc
        else:
            err = self._error(exc, f"{self.name} ({self.config.model})")
        # the key never belongs in a message, whatever a server or SDK put into the text
        err.args = (redact(str(err), [self._api_key]),)
        return err

    # -- what each API says differently ------------------------------------------------
    def _new_client(self) -> Any:
        raise NotImplementedError

    def _request(self, messages: list[Message], max_new_tokens: int | None, temperature: float | None) -> Any:
        raise NotImplementedError

    def _complete(self, client: Any, request: Any) -> Any:
        """Send ``request`` for a whole answer; the SDK's response."""
        raise NotImplementedError

    def _answer(self, response: Any, start: float) -> Generation:
        raise NotImplementedError

    def _deltas(self, client: Any, request: Any, state: dict[str, Any]) -> Iterator[str]:
        """Send ``request`` streamed; yield text pieces, keeping in ``state`` what the final
        :class:`Generation` needs (usage, finish reason, the last chunk)."""
        raise NotImplementedError

    def _streamed(self, text: str, state: dict[str, Any], start: float) -> Generation:
        raise NotImplementedError

    def _error(self, exc: BaseException, who: str) -> BackendError:
        raise NotImplementedError


__all__ = ["APIBackend", "MAX_DETAIL"]
