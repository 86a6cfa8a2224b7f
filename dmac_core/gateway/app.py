"""The OpenAI-compatible HTTP API over a :class:`~dmac_core.system.LearningSystem`.

``POST /v1/chat/completions`` (plain and streamed), ``GET /v1/models`` and ``POST /v1/feedback``.
Every answer goes through the workbench's router (caps, cooldown, fallback, the one loaded
learner and its first-come-first-served queue) and is logged as an interaction of the API
key's user, exactly as a Chat-page answer is; so it appears on Feedback, counts toward caps
and becomes training material once rated. Errors have OpenAI's shape and status: 400 bad
JSON or fields, 401 no or bad key, 403 role, 404 unknown model or interaction, 413 body too
large, 429 over a cap or a key's limit (with Retry-After), 503 nothing available (with the
reasons), 502 a model that failed mid-answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..logs.records import RecordError, new_id
from ..security.api_keys import KEY_PREFIX, ApiKey, ApiKeyError
from ..security.directory import LOCAL_USER
from ..security.roles import PermissionDenied
from ..serving.errors import MID_ANSWER, OVER_CAP, UNKNOWN_MODEL, RoutingError
from ..system import LearningSystem
from .answers import AnswerWorker, Event
from .limits import KeyRateLimiter
from .wire import (
    ChatRequest, WireError, bad_request, chunk_body, completion_body, completion_id, final_chunk, header_text,
    parse_chat_request, usage_body,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key's user (or the local user when sign-in is off and no key is sent)."""

    user: str
    key: ApiKey | None

    @property
    def session_id(self) -> str:
        return f"api:{self.key.id}" if self.key else "api"


def _error_response(error: WireError) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))} if error.retry_after is not None else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def routing_failure(exc: BaseException) -> WireError:
    """The HTTP error for a failure of the router (or of the caller's request to it)."""
    if isinstance(exc, WireError):
        return exc
    if isinstance(exc, PermissionDenied):
        return WireError(403, str(exc), "permission_error", "insufficient_role")
    if isinstance(exc, RoutingError):
        if exc.kind == UNKNOWN_MODEL:
            return WireError(404, f"{exc} (GET /v1/models lists what can be asked)", "invalid_request_error",
                             "model_not_found", "model")
        if exc.kind == OVER_CAP:
            return WireError(429, str(exc), "rate_limit_error", "usage_cap_reached", retry_after=exc.retry_after)
        if exc.kind == MID_ANSWER:
            return WireError(502, str(exc), "api_error", "model_failed")
        return WireError(503, str(exc), "service_unavailable", "no_model_available", retry_after=exc.retry_after)
    if isinstance(exc, ValueError):  # the router's own checks: an empty or over-long conversation
        return bad_request(str(exc), "messages")
    if isinstance(exc, TimeoutError):
        return WireError(504, f"The model did not answer in time: {exc}", "api_error", "timeout")
    log.exception("gateway: unexpected error", exc_info=exc)
    return WireError(500, f"Internal error ({type(exc).__name__}); the server log has the details", "api_error")


class Gateway:
    """The endpoints' logic, over one learning system."""

    def __init__(self, system: LearningSystem) -> None:
        self.system = system
        self.settings = system.config.gateway
        self.limiter = KeyRateLimiter()
        # Whole answers wait on their model in these threads (an API model for seconds): the
        # event loop's default pool has only a handful, which would queue the 7th client's call
        # behind others' even when its model is idle. Streamed answers have a thread each.
        self.answer_threads = ThreadPoolExecutor(max_workers=self.settings.max_parallel_answers,
                                                 thread_name_prefix="gateway-answer")

    # -- who, and how much ----------------------------------------------------------------
    def caller(self, request: Request) -> Caller:
        """Authenticate the request's ``Authorization: Bearer`` key and count it against the
        key's limit. Without sign-in configured (loopback only) a request may come without a
        workbench key and acts as the local user; with users configured a valid key is required."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        security = self.system.security
        try:
            key = security.key_user(token) if token else None
        except ApiKeyError as exc:
            raise WireError(503, str(exc), "service_unavailable", "keys_unreadable") from None
        required = security.sign_in_required()
        # Without users, tools that insist on sending some key ("none", "sk-...") still work;
        # a workbench key that is wrong or revoked is refused all the same, so its owner hears of it.
        if token and key is None and (required or token.startswith(KEY_PREFIX)):
            raise WireError(401, "Invalid or revoked API key", "invalid_request_error", "invalid_api_key")
        if key is None and required:
            raise WireError(401, "An API key is required: send 'Authorization: Bearer dmac-…'. An admin creates "
                                 "keys with `python -m dmac_core api-key create USER` or on the Admin page",
                            "invalid_request_error", "missing_api_key")
        if key is not None:
            limit = key.requests_per_minute or self.settings.requests_per_minute_per_key
            wait = self.limiter.admit(key.id, limit)
            if wait is not None:
                raise WireError(429, f"Key {key.id} is over its limit of {limit} requests a minute",
                                "rate_limit_error", "key_rate_limit", retry_after=wait)
        return Caller(key.user if key else LOCAL_USER, key)

    async def json_body(self, request: Request) -> Any:
        """The request's JSON body, refused with 413 past the size limit and 400 when not JSON."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise WireError(413, f"The request body is {int(declared):,} bytes; the limit is {limit:,}",
                            "invalid_request_error", "body_too_large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise WireError(413, f"The request body is over the limit of {limit:,} bytes",
                                "invalid_request_error", "body_too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            raise bad_request("The request body is empty; send a JSON object")
        try:
            body = json.loads(raw)
            # a lone surrogate decodes but can be neither logged as UTF-8 nor tokenized
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except (UnicodeError, ValueError) as exc:
            raise bad_request(f"The request body is not valid JSON: {exc}") from None
        return body

    # -- endpoints ------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        created = int(time.time())
        catalog = self.system.model_catalog()
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "dmac-workbench"}
                     for name, reason in catalog if reason is None],
            # not part of OpenAI's format; clients ignore it, people read it
            "unavailable": [{"id": name, "reason": reason} for name, reason in catalog if reason is not None],
        }

    def feedback(self, caller: Caller, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object")
        interaction_id = body.get("interaction_id")
        if isinstance(interaction_id, str) and interaction_id.startswith("chatcmpl-"):
            interaction_id = interaction_id[len("chatcmpl-"):]  # the completion's id names its record
        note = body.get("feedback", body.get("note", ""))
        for name, value in (("interaction_id", interaction_id), ("prompt", body.get("prompt")),
                            ("response", body.get("response")), ("feedback", note),
                            ("correction", body.get("correction"))):
            if value is not None and not isinstance(value, str):
                raise bad_request(f"'{name}' must be a string", name)
        if interaction_id is None and (body.get("prompt") is None or body.get("response") is None):
            raise bad_request("Give 'interaction_id' (the 'dmac.interaction_id' of an answer), or "
                              "'prompt' and 'response'", "interaction_id")
        try:
            record = self.system.rate(interaction_id, body.get("rating"), note or "", user=caller.user,
                                      correction=body.get("correction"), prompt=body.get("prompt"),
                                      response=body.get("response"))
        except RecordError as exc:
            if "no interaction with id" in str(exc):
                raise WireError(404, str(exc), "invalid_request_error", "interaction_not_found",
                                "interaction_id") from None
            raise bad_request(str(exc), "rating" if "rating" in str(exc) else None) from None
        return {"id": record.id, "object": "feedback", "interaction_id": record.interaction_id,
                "rating": record.rating, "user": record.user}

    async def chat(self, caller: Caller, chat: ChatRequest) -> Response:
        self.system.security.require(caller.user, "chat")
        record_id = new_id()
        headers = {"X-DMac-Interaction-Id": record_id}
        if not chat.stream:
            # the whole answer in a pooled thread; a client gone meanwhile changes nothing: the
            # answer completes and is recorded like any other
            try:
                result = await asyncio.get_running_loop().run_in_executor(self.answer_threads, partial(
                    self.system.chat, chat.messages, model=chat.model, user=caller.user,
                    session_id=caller.session_id, record_id=record_id, **chat.options))
            except Exception as exc:  # noqa: BLE001 - each failure becomes its HTTP error
                raise routing_failure(exc) from None
            headers["X-DMac-Route-Reason"] = header_text(result.route_reason)
            return JSONResponse(completion_body(result), headers=headers)
        worker = AnswerWorker(
            lambda on_route: self.system.chat_stream(
                chat.messages, model=chat.model, user=caller.user, session_id=caller.session_id,
                record_id=record_id, on_route=on_route, **chat.options),
            asyncio.get_running_loop()).begin()
        wait = self.settings.max_stream_wait_s
        # Wait for the first piece of text before answering: until then the router may still
        # refuse or fall back, and the client gets the proper status instead of a broken stream.
        routed: Event | None = None
        first = await worker.next(wait)
        while first.kind == "route":
            routed = first
            first = await worker.next(wait)
        if first.kind == "error":
            raise routing_failure(first.value)
        if routed is not None:
            headers["X-DMac-Route-Reason"] = header_text(routed.reason)
        model = routed.value if routed is not None and chat.model == "auto" else chat.model
        return StreamingResponse(self._events(worker, first, record_id, model, chat.include_usage),
                                 media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(self, worker: AnswerWorker, first: Event, record_id: str, model: str,
                      include_usage: bool) -> AsyncIterator[bytes]:
        """Server-sent events of a streamed answer, ending with ``[DONE]``; a failure after the
        first piece arrives as an ``error`` event (the status line was sent already)."""
        chunk_id, created = completion_id(record_id), int(time.time())
        try:
            yield _sse(chunk_body(chunk_id, model, created, {"role": "assistant", "content": ""}))
            event = first
            while True:
                if event.kind == "delta":
                    yield _sse(chunk_body(chunk_id, model, created, {"content": event.value}))
                elif event.kind == "done":
                    yield _sse(final_chunk(chunk_id, created, event.value))
                    if include_usage:
                        yield _sse({"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                                    "model": model, "choices": [], "usage": usage_body(event.value)})
                    yield b"data: [DONE]\n\n"
                    return
                elif event.kind == "error":
                    yield _sse(routing_failure(event.value).body())
                    return
                event = await worker.next(self.settings.max_stream_wait_s)
        finally:
            worker.abandon()  # the client went away mid-answer (a no-op once it finished)


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n\n"


def create_app(system: LearningSystem) -> FastAPI:
    """The gateway as an ASGI app (served by :mod:`.server`, or by any ASGI server)."""
    gateway = Gateway(system)
    app = FastAPI(title="DMac Learning Workbench API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway

    @app.exception_handler(WireError)
    async def _wire_error(_: Request, exc: WireError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(PermissionDenied)
    async def _denied(_: Request, exc: PermissionDenied) -> JSONResponse:
        return _error_response(routing_failure(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        what = "No such endpoint" if exc.status_code == 404 else str(exc.detail)
        return _error_response(WireError(exc.status_code, f"{what}; this API serves POST /v1/chat/completions, "
                                                          "GET /v1/models and POST /v1/feedback"))

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        caller = gateway.caller(request)
        system.security.require(caller.user, "view")
        return JSONResponse(await asyncio.to_thread(gateway.models))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        caller = gateway.caller(request)
        chat = parse_chat_request(await gateway.json_body(request))
        return await gateway.chat(caller, chat)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> JSONResponse:
        caller = gateway.caller(request)
        body = await gateway.json_body(request)
        return JSONResponse(await asyncio.to_thread(gateway.feedback, caller, body))

    return app
