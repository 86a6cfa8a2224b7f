"""Fake Gemini and OpenAI-compatible HTTP servers on 127.0.0.1 for tests.

The real SDKs talk to these servers over real sockets, so tests exercise the SDK's own
request building, streaming parser, error classes, timeouts and retry settings — nothing
is patched in Python. Each server is scriptable:

* ``server.enqueue(Reply(...))`` queues responses, answered in order, one per request;
* when the queue is empty the server answers with ``server.default_text`` (the "instant"
  mode load tests use: every request gets the same text at once);
* ``server.requests`` logs every request received (path, headers, parsed JSON body), so a
  test can assert exactly how many calls reached the server and what they carried.

A :class:`Reply` with ``text`` is rendered in the right shape for the request (plain JSON
or SSE stream, Gemini or OpenAI); a reply with ``body`` is sent as it is (errors).

Use the fixtures ``fake_gemini`` / ``fake_openai`` (import them into a test module or list
this module in ``pytest_plugins``).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest


@dataclass
class Reply:
    """One scripted response.

    ``text``: a successful answer, rendered per request (JSON or SSE). ``body``: a raw body
    (dict/list → JSON, str/bytes as they are) sent with ``status`` — used for errors.
    ``delay``: seconds to wait before the status line (a stalled server). ``chunks``: how
    many SSE chunks a streamed ``text`` is split into.
    """

    status: int = 200
    text: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    tokens_in: int = 7
    tokens_out: int = 5
    chunks: int = 3
    thoughts_tokens: int = 0  # Gemini: tokens spent thinking (billed as output, not in the text)
    finish: str = "STOP"  # Gemini's finishReason on the last chunk
    chunk_delay: float = 0.0  # seconds between the pieces of a streamed answer (a slow model)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    raw: bytes


def error_body(status: int, message: str, kind: str = "ERROR") -> dict[str, Any]:
    """An error body in the Google/OpenAI style (both accept this shape)."""
    return {"error": {"code": status, "message": message, "status": kind, "type": kind.lower()}}


def _split(text: str, n: int) -> list[str]:
    n = max(1, min(n, len(text) or 1))
    size = -(-len(text) // n) if text else 0
    return [text[i : i + size] for i in range(0, len(text), size)] if text else [""]


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 (port chosen by the OS) speaking one API dialect."""

    def __init__(self, dialect: str, default_text: str = "Hello from the fake server.") -> None:
        if dialect not in ("gemini", "openai"):
            raise ValueError(f"unknown dialect {dialect!r}")
        self.dialect = dialect
        self.default_text = default_text
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()  # wakes stalled handlers at shutdown
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a stalled handler must not block close()
        # A short poll interval keeps close() (and so every test teardown) fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    # -- scripting -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL without the API version (Gemini SDK's ``base_url``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL an OpenAI client expects (with ``/v1``)."""
        return self.url + "/v1"

    def enqueue(self, *replies: Reply) -> "FakeServer":
        with self._lock:
            self._queue.extend(replies)
        return self

    def set_instant(self, text: str) -> "FakeServer":
        """Answer every request immediately with ``text`` (drops queued replies)."""
        with self._lock:
            self._queue.clear()
            self.default_text = text
        return self

    def _next(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else Reply(text=self.default_text)

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rendering -------------------------------------------------------------------
    def _gemini_payload(self, text: str, reply: Reply, final: bool) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        payload: dict[str, Any] = {"candidates": [cand], "modelVersion": "fake-gemini-001"}
        if final:
            cand["finishReason"] = reply.finish
            payload["usageMetadata"] = {
                "promptTokenCount": reply.tokens_in,
                "candidatesTokenCount": reply.tokens_out,
                "totalTokenCount": reply.tokens_in + reply.tokens_out + reply.thoughts_tokens,
            }
            if reply.thoughts_tokens:
                payload["usageMetadata"]["thoughtsTokenCount"] = reply.thoughts_tokens
        return payload

    def _openai_chunk(self, req: RecordedRequest, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        model = (req.body or {}).get("model", "fake")
        return {
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _render_success(self, req: RecordedRequest, reply: Reply) -> tuple[str, list[bytes]]:
        """Return (content type, body pieces) for a text reply in this server's dialect."""
        text = reply.text or ""
        if self.dialect == "gemini":
            if ":streamGenerateContent" in req.path:
                parts = _split(text, reply.chunks)
                events = [self._gemini_payload(p, reply, i == len(parts) - 1) for i, p in enumerate(parts)]
                return "text/event-stream", [f"data: {json.dumps(e)}\r\n\r\n".encode() for e in events]
            return "application/json", [json.dumps(self._gemini_payload(text, reply, True)).encode()]
        body = req.body or {}
        usage = {"prompt_tokens": reply.tokens_in, "completion_tokens": reply.tokens_out,
                 "total_tokens": reply.tokens_in + reply.tokens_out}
        if body.get("stream"):
            chunks = [self._openai_chunk(req, {"role": "assistant", "content": ""}, None)]
            chunks += [self._openai_chunk(req, {"content": p}, None) for p in _split(text, reply.chunks)]
            chunks.append(self._openai_chunk(req, {}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                last = self._openai_chunk(req, {}, None)
                last["choices"] = []
                last["usage"] = usage
                chunks.append(last)
            pieces = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
            return "text/event-stream", pieces
        completion = {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        }
        return "application/json", [json.dumps(completion).encode()]

    # -- HTTP ------------------------------------------------------------------------
    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, the client's delayed
            # ACK adds ~40 ms to every non-streamed answer (measured here: 22 → ~150-200 req/s through the SDKs).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                req = RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, parsed, raw)
                with server._lock:
                    server.requests.append(req)
                reply = server._next()
                if reply.delay and server._stop.wait(reply.delay):
                    return  # shutting down
                try:
                    if reply.text is not None and reply.status == 200:
                        ctype, pieces = server._render_success(req, reply)
                    else:
                        body = reply.body if reply.body is not None else error_body(reply.status, "scripted error")
                        if isinstance(body, (dict, list)):
                            ctype, data = "application/json", json.dumps(body).encode()
                        else:
                            ctype, data = "text/plain", body.encode() if isinstance(body, str) else body
                        pieces = [data]
                    self.send_response(reply.status)
                    self.send_header("Content-Type", ctype)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if ctype == "text/event-stream":
                        # Stream without a length: close the connection to end the body.
                        self.send_header("Connection", "close")
                        self.end_headers()
                        for i, piece in enumerate(pieces):
                            if i and reply.chunk_delay and server._stop.wait(reply.chunk_delay):
                                return  # shutting down
                            self.wfile.write(piece)
                            self.wfile.flush()
                        self.close_connection = True
                    else:
                        data = b"".join(pieces)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test): nothing to answer

        return Handler


@pytest.fixture
def fake_gemini() -> Iterator[FakeServer]:
    """A fresh fake Gemini API server, closed after the test."""
    with FakeServer("gemini") as server:
        yield server


@pytest.fixture
def fake_openai() -> Iterator[FakeServer]:
    """A fresh fake OpenAI-compatible chat completions server, closed after the test."""
    with FakeServer("openai") as server:
        yield server
