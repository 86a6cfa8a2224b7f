"""The OpenAI chat wire format: requests checked field by field, responses and stream chunks
shaped as OpenAI's, errors as ``{"error": {"message", "type", "param", "code"}}``.

Honoured request fields: ``model``, ``messages`` (roles system / user / assistant; content a
string or a list of text parts), ``stream``, ``max_tokens`` / ``max_completion_tokens``,
``temperature``. Accepted and ignored, because common clients send them and they do not change
what is logged: ``top_p``, ``stop``, ``n`` = 1, ``user``, ``stream_options``, ``presence_penalty``,
``frequency_penalty``, ``seed``, ``metadata``, ``store``. Anything else (tools, images, n > 1,
logprobs...) is refused with 400 naming the field, rather than silently answered differently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..serving.router import ChatResult

ROLES = ("system", "user", "assistant")
IGNORED_FIELDS = frozenset({"top_p", "stop", "n", "user", "stream_options", "presence_penalty",
                            "frequency_penalty", "seed", "metadata", "store"})
HONOURED_FIELDS = frozenset({"model", "messages", "stream", "max_tokens", "max_completion_tokens", "temperature"})
MAX_NEW_TOKENS_LIMIT = 8192
# OpenAI has no "repetition" or "cut_off": a loop the learner stopped is a stop; the record keeps the truth
_FINISH = {"length": "length"}


class WireError(Exception):
    """A request the gateway refuses: HTTP ``status``, OpenAI error ``type`` and ``code``, the
    field at fault (``param``) and, for 429/503, seconds to wait (``retry_after``)."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> WireError:
    return WireError(400, message, "invalid_request_error", code, param)


@dataclass
class ChatRequest:
    """A checked chat request: what the router needs."""

    model: str
    messages: list[dict[str, str]]
    stream: bool = False
    include_usage: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def _text_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"{where}.content[{i}]: only text parts are supported here (got {kind!r})",
                                  f"{where}.content")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"{where}.content must be a string or a list of text parts", f"{where}.content")


def parse_chat_request(body: Any) -> ChatRequest:
    """Check a decoded JSON body; raise :class:`WireError` (400) naming the first bad field."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    unknown = sorted(set(body) - HONOURED_FIELDS - IGNORED_FIELDS)
    if unknown:
        raise bad_request(f"Unsupported field {unknown[0]!r}: this gateway answers plain chat only "
                          f"(supported: {', '.join(sorted(HONOURED_FIELDS))})", unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required: 'auto', a configured model name, or a learner version "
                          "such as 'deepseek@v0003' (GET /v1/models lists them)", "model")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty list", "messages")
    messages = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with 'role' and 'content'", where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)} (got {role!r})", f"{where}.role")
        messages.append({"role": role, "content": _text_content(message.get("content"), where)})
    if body.get("n", 1) != 1:
        raise bad_request("Only n = 1 is supported", "n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    stream_options = body.get("stream_options") or {}
    include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
    options: dict[str, Any] = {}
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NEW_TOKENS_LIMIT:
            raise bad_request(f"'{name}' must be an integer from 1 to {MAX_NEW_TOKENS_LIMIT}", name)
        options.setdefault("max_new_tokens", value)
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise bad_request("'temperature' must be a number from 0 to 2", "temperature")
        options["temperature"] = float(temperature)
    return ChatRequest(model=model.strip(), messages=messages, stream=stream, include_usage=include_usage,
                       options=options)


def completion_id(interaction_id: str) -> str:
    """The OpenAI response id of an interaction: the record id is recoverable from it."""
    return f"chatcmpl-{interaction_id}"


def served_model_name(result: ChatResult) -> str:
    """What answered, as a client would ask for it again (the learner with its version)."""
    return f"{result.model}@{result.model_version}" if result.model_version else result.model


def usage_body(result: ChatResult) -> dict[str, int]:
    prompt, completion = result.tokens_in or 0, result.tokens_out or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def extension(result: ChatResult) -> dict[str, Any]:
    """The workbench's own fields: where the record is and why this model answered."""
    return {"interaction_id": result.interaction_id, "route_reason": result.route_reason,
            "model": result.model, "model_version": result.model_version, "finish_reason": result.finish_reason}


def completion_body(result: ChatResult, created: int | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object for a whole answer."""
    return {
        "id": completion_id(result.interaction_id),
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": served_model_name(result),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "finish_reason": _FINISH.get(result.finish_reason or "", "stop"), "logprobs": None}],
        "usage": usage_body(result),
        "dmac": extension(result),
    }


def chunk_body(chunk_id: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a streamed answer."""
    return {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}


def final_chunk(chunk_id: str, created: int, result: ChatResult) -> dict[str, Any]:
    return chunk_body(chunk_id, served_model_name(result), created, {},
                      _FINISH.get(result.finish_reason or "", "stop"), dmac=extension(result))


def header_text(text: str) -> str:
    """``text`` as an HTTP header value (latin-1 only: arrows and other characters replaced)."""
    return text.replace("→", "->").replace("—", "-").encode("ascii", "replace").decode("ascii")[:1000]
