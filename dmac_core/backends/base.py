"""The one small protocol every model backend implements.

A backend knows how to talk to one model: ``available()`` says whether it can be used now
(and why not), ``generate()`` returns a whole answer, ``stream()`` yields text deltas and
ends with the complete :class:`Generation`. Backends do not retry and do not log: the
router (``ModelManager``) decides about retries, fallback and capture, so retries are never
stacked on top of each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Union, runtime_checkable

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant", "content": str}


def chat_messages(prompt: str | list[Message], system: str = "") -> list[Message]:
    """The messages of a request: a question becomes one user turn; a conversation is copied
    (each message a new dict, extra keys such as ``images`` kept). ``system`` is put first
    unless the conversation already starts with a system message."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if system and (not messages or messages[0].get("role") != "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


@dataclass
class Generation:
    """A finished answer with what the logs need to know about it."""

    text: str
    provider_model: str
    model_version: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: float | None = None
    # Why the answer ended: "stop" (the model ended its turn), "length" (cut at the token
    # limit), "repetition" (stopped by the local learner's loop guard); None when unknown.
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Availability:
    ok: bool
    reason: str = ""


class BackendError(Exception):
    """A backend call failed.

    ``retryable``: worth trying the same backend again (429, 5xx, timeouts, connection errors).
    ``retry_after``: seconds the server asked us to wait, when it said so.
    ``status``: HTTP status when there was one. The message never contains an API key.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        kind: str = "error",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.kind = kind  # "timeout" | "rate_limit" | "server" | "auth" | "bad_request" | "connection" | "empty" | "error"


StreamItem = Union[str, Generation]


@runtime_checkable
class Backend(Protocol):
    name: str  # the config name, e.g. "gemini"

    def available(self) -> Availability: ...

    def generate(self, messages: list[Message], **options: Any) -> Generation: ...

    def stream(self, messages: list[Message], **options: Any) -> Iterator[StreamItem]:
        """Yield text deltas (``str``), then exactly one final :class:`Generation`."""
        ...
