"""API backends through the real SDKs (google-genai, openai) against fake servers on 127.0.0.1.

Nothing is patched in Python: the SDKs build real HTTP requests, parse real (fake) answers
and raise their own errors, so these tests catch SDK changes in paths, shapes, retries and
timeouts.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from dmac_core.backends.base import Backend, BackendError, Generation
from dmac_core.backends.gemini import GeminiBackend
from dmac_core.backends.openai_compat import OpenAICompatBackend
from dmac_core.backends.redact import redact
from dmac_core.backends.retry import call_with_retries, parse_retry_after
from dmac_core.config import GeminiModelConfig, OpenAICompatModelConfig
from dmac_core.secrets import SecretsError, resolve_api_key
from tests.fake_servers import FakeServer, Reply, error_body, fake_gemini, fake_openai  # noqa: F401 - fixtures

KEY = "test-key-abcdef"
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
]


def gemini_backend(server: FakeServer, key: str | None = KEY, timeout_s: float = 5.0) -> GeminiBackend:
    config = GeminiModelConfig(kind="gemini", model="gemini-test", base_url=server.url, timeout_s=timeout_s)
    return GeminiBackend("gemini", config, key)


def openai_backend(server: FakeServer, key: str | None = KEY, timeout_s: float = 5.0, **kw: object) -> OpenAICompatBackend:
    config = OpenAICompatModelConfig(
        kind="openai_compat", model="deepseek-test", base_url=server.openai_base_url, timeout_s=timeout_s, **kw
    )
    return OpenAICompatBackend("deepseek_api", config, key)


def make_backend(kind: str, server: FakeServer, **kw: object) -> Backend:
    return gemini_backend(server, **kw) if kind == "gemini" else openai_backend(server, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["gemini", "openai"])
def api(request: pytest.FixtureRequest) -> tuple[str, FakeServer]:
    """Both backend kinds, each against its own fake server."""
    kind = request.param
    return kind, request.getfixturevalue("fake_gemini" if kind == "gemini" else "fake_openai")


def collect(stream) -> tuple[list[str], Generation]:  # type: ignore[no-untyped-def]
    items = list(stream)
    assert isinstance(items[-1], Generation) and all(isinstance(i, str) for i in items[:-1])
    return items[:-1], items[-1]


# -- success ---------------------------------------------------------------------------
def test_gemini_generate_sends_conversation_and_reads_usage(fake_gemini: FakeServer) -> None:
    fake_gemini.enqueue(Reply(text="Six.", tokens_in=21, tokens_out=2))
    backend = gemini_backend(fake_gemini)
    assert isinstance(backend, Backend) and backend.available().ok
    gen = backend.generate(CONVERSATION, max_new_tokens=33, temperature=0.2)
    assert (gen.text, gen.tokens_in, gen.tokens_out) == ("Six.", 21, 2)
    assert gen.provider_model == "gemini-test" and gen.model_version is None
    assert gen.extra["response_model"] == "fake-gemini-001"
    assert gen.latency_ms is not None and gen.latency_ms > 0
    [req] = fake_gemini.requests
    assert req.path == "/v1/models/gemini-test:generateContent"
    assert req.headers["x-goog-api-key"] == KEY
    assert [(c["role"], c["parts"][0]["text"]) for c in req.body["contents"]] == [
        ("user", "What is 2+2?"), ("model", "4"), ("user", "And 3+3?")
    ]
    assert req.body["systemInstruction"]["parts"][0]["text"] == "You are terse."
    # the answer's budget plus the thinking budget: Gemini counts both in maxOutputTokens
    assert req.body["generationConfig"] == {"maxOutputTokens": 33 + 1024, "temperature": 0.2,
                                            "thinkingConfig": {"thinking_budget": 1024}}  # as the SDK sends it


def test_gemini_stream_yields_deltas_then_generation(fake_gemini: FakeServer) -> None:
    fake_gemini.enqueue(Reply(text="Three plus three is six.", chunks=4, tokens_in=9, tokens_out=6))
    deltas, gen = collect(gemini_backend(fake_gemini).stream(CONVERSATION))
    assert len(deltas) == 4 and "".join(deltas) == "Three plus three is six." == gen.text
    assert (gen.tokens_in, gen.tokens_out) == (9, 6)
    assert gen.extra["first_token_ms"] is not None
    [req] = fake_gemini.requests
    assert req.path == "/v1/models/gemini-test:streamGenerateContent?alt=sse"
    assert len(req.body["contents"]) == 3 and "systemInstruction" in req.body
    # Config defaults apply when the caller gives no options.
    assert req.body["generationConfig"] == {"maxOutputTokens": 2048 + 1024, "temperature": 0.7,
                                            "thinkingConfig": {"thinking_budget": 1024}}  # as the SDK sends it


def test_gemini_thinking_tokens_are_billed_output_and_count_in_tokens_out(fake_gemini: FakeServer) -> None:
    fake_gemini.enqueue(Reply(text="Six.", tokens_in=21, tokens_out=2, thoughts_tokens=300))
    gen = gemini_backend(fake_gemini).generate(CONVERSATION, max_new_tokens=64)
    assert gen.tokens_out == 302  # what Google bills and what caps must count
    assert (gen.extra["thoughts_tokens"], gen.extra["answer_tokens"]) == (300, 2)
    # without thinking settings the request is what it was before thinking models
    config = GeminiModelConfig(kind="gemini", model="gemini-test", base_url=fake_gemini.url, thinking_budget=None)
    fake_gemini.enqueue(Reply(text="Six.", tokens_in=21, tokens_out=2))
    GeminiBackend("gemini", config, KEY).generate(CONVERSATION, max_new_tokens=64)
    assert fake_gemini.requests[-1].body["generationConfig"] == {"maxOutputTokens": 64, "temperature": 0.7}


@pytest.mark.parametrize("streamed", [False, True])
def test_gemini_thinking_away_the_whole_budget_is_an_error_not_an_empty_answer(
    fake_gemini: FakeServer, streamed: bool
) -> None:
    fake_gemini.enqueue(Reply(text="", tokens_out=0, thoughts_tokens=1088, finish="MAX_TOKENS"))
    backend = gemini_backend(fake_gemini)
    with pytest.raises(BackendError, match=r"returned no answer after 1088 thinking tokens \(finish reason MAX_TOKENS\)") as err:
        if streamed:
            list(backend.stream(CONVERSATION, max_new_tokens=64))
        else:
            backend.generate(CONVERSATION, max_new_tokens=64)
    assert err.value.kind == "empty" and not err.value.retryable


def test_openai_generate_sends_conversation_and_reads_usage(fake_openai: FakeServer) -> None:
    fake_openai.enqueue(Reply(text="Six.", tokens_in=21, tokens_out=2))
    backend = openai_backend(fake_openai)
    assert isinstance(backend, Backend) and backend.available().ok
    gen = backend.generate([{**m, "id": "x"} for m in CONVERSATION], max_new_tokens=33, temperature=0.2)
    assert (gen.text, gen.tokens_in, gen.tokens_out) == ("Six.", 21, 2)
    assert gen.provider_model == "deepseek-test" and gen.extra["finish_reason"] == "stop"
    assert gen.model_version is None and gen.extra["response_model"] == "deepseek-test"
    [req] = fake_openai.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.body["messages"] == CONVERSATION  # system prompt first, extra keys dropped
    assert (req.body["model"], req.body["max_tokens"], req.body["temperature"]) == ("deepseek-test", 33, 0.2)
    assert not req.body.get("stream")


def test_openai_stream_yields_deltas_and_usage_from_last_chunk(fake_openai: FakeServer) -> None:
    fake_openai.enqueue(Reply(text="Three plus three is six.", chunks=4, tokens_in=9, tokens_out=6))
    deltas, gen = collect(openai_backend(fake_openai).stream(CONVERSATION))
    assert len(deltas) == 4 and "".join(deltas) == gen.text == "Three plus three is six."
    assert (gen.tokens_in, gen.tokens_out) == (9, 6)
    [req] = fake_openai.requests
    assert req.body["stream"] is True and req.body["stream_options"] == {"include_usage": True}
    assert req.body["messages"] == CONVERSATION


def test_keyless_openai_compatible_server_needs_no_key(fake_openai: FakeServer) -> None:
    backend = openai_backend(fake_openai, key=None, api_key_env=None)
    assert backend.available().ok
    assert backend.generate([{"role": "user", "content": "hi"}]).text == fake_openai.default_text
    assert fake_openai.requests[0].headers["authorization"] == "Bearer not-needed"


def test_instant_mode_answers_every_request(fake_openai: FakeServer) -> None:
    fake_openai.enqueue(Reply(status=500))
    fake_openai.set_instant("same every time")  # drops the queued error
    backend = openai_backend(fake_openai)
    assert {backend.generate([{"role": "user", "content": str(i)}]).text for i in range(5)} == {"same every time"}
    assert len(fake_openai.requests) == 5


# -- errors and retries ----------------------------------------------------------------
def test_429_with_retry_after_is_retried_after_the_asked_wait(api: tuple[str, FakeServer]) -> None:
    kind, server = api
    server.enqueue(
        Reply(status=429, body=error_body(429, "slow down", "RESOURCE_EXHAUSTED"), headers={"Retry-After": "2"}),
        Reply(status=429, body=error_body(429, "slow down", "RESOURCE_EXHAUSTED"), headers={"Retry-After": "1.5"}),
        Reply(text="finally"),
    )
    backend = make_backend(kind, server)
    waits: list[float] = []
    gen = call_with_retries(lambda: backend.generate([{"role": "user", "content": "hi"}]), max_retries=3, sleep=waits.append)
    assert gen.text == "finally"
    assert len(server.requests) == 3  # no hidden SDK retries on top of ours
    assert waits == [2.0, 1.5]


def test_429_error_fields(api: tuple[str, FakeServer]) -> None:
    kind, server = api
    server.enqueue(Reply(status=429, headers={"Retry-After": "7"}))
    with pytest.raises(BackendError) as info:
        make_backend(kind, server).generate([{"role": "user", "content": "hi"}])
    err = info.value
    assert (err.kind, err.status, err.retryable, err.retry_after) == ("rate_limit", 429, True, 7.0)


def test_gemini_retry_delay_in_body_is_used_without_header(fake_gemini: FakeServer) -> None:
    body = error_body(429, "quota", "RESOURCE_EXHAUSTED")
    body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]
    fake_gemini.enqueue(Reply(status=429, body=body))
    with pytest.raises(BackendError) as info:
        gemini_backend(fake_gemini).generate([{"role": "user", "content": "hi"}])
    assert info.value.retry_after == 37.0


@pytest.mark.parametrize("streaming", [False, True])
def test_500_is_retryable_and_sent_once(api: tuple[str, FakeServer], streaming: bool) -> None:
    kind, server = api
    server.enqueue(Reply(status=500, body=error_body(500, "boom", "INTERNAL")))
    backend = make_backend(kind, server)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(BackendError) as info:
        list(backend.stream(msgs)) if streaming else backend.generate(msgs)
    assert (info.value.kind, info.value.status, info.value.retryable) == ("server", 500, True)
    assert len(server.requests) == 1


def test_500_then_success_uses_exponential_backoff(api: tuple[str, FakeServer]) -> None:
    kind, server = api
    server.enqueue(Reply(status=500), Reply(status=503), Reply(text="ok now"))
    backend = make_backend(kind, server)
    waits: list[float] = []
    gen = call_with_retries(lambda: backend.generate([{"role": "user", "content": "hi"}]), max_retries=2, sleep=waits.append)
    assert gen.text == "ok now" and waits == [0.5, 1.0] and len(server.requests) == 3


def test_401_is_auth_not_retryable_one_request(api: tuple[str, FakeServer]) -> None:
    kind, server = api
    server.enqueue(Reply(status=401, body=error_body(401, "API key not valid", "UNAUTHENTICATED")))
    backend = make_backend(kind, server)
    waits: list[float] = []
    with pytest.raises(BackendError) as info:
        call_with_retries(lambda: backend.generate([{"role": "user", "content": "hi"}]), max_retries=3, sleep=waits.append)
    err = info.value
    assert (err.kind, err.status, err.retryable, err.attempts) == ("auth", 401, False, 1)  # type: ignore[attr-defined]
    assert len(server.requests) == 1 and waits == []


def test_400_is_bad_request(api: tuple[str, FakeServer]) -> None:
    kind, server = api
    server.enqueue(Reply(status=400, body=error_body(400, "bad field", "INVALID_ARGUMENT")))
    with pytest.raises(BackendError) as info:
        make_backend(kind, server).generate([{"role": "user", "content": "hi"}])
    assert (info.value.kind, info.value.retryable) == ("bad_request", False)
    assert "bad field" in str(info.value)


@pytest.mark.parametrize("streaming", [False, True])
def test_stalled_server_times_out_quickly(api: tuple[str, FakeServer], streaming: bool) -> None:
    kind, server = api
    server.enqueue(Reply(text="too late", delay=10))
    backend = make_backend(kind, server, timeout_s=0.5)
    msgs = [{"role": "user", "content": "hi"}]
    start = time.monotonic()
    with pytest.raises(BackendError) as info:
        list(backend.stream(msgs)) if streaming else backend.generate(msgs)
    elapsed = time.monotonic() - start
    assert (info.value.kind, info.value.retryable) == ("timeout", True)
    assert 0.4 < elapsed < 3.0
    assert len(server.requests) == 1


def test_connection_refused_is_retryable(api: tuple[str, FakeServer]) -> None:
    kind, server = api
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server_url = f"http://127.0.0.1:{port}"
    if kind == "gemini":
        config = GeminiModelConfig(kind="gemini", model="g", base_url=server_url, timeout_s=2)
        backend: Backend = GeminiBackend("gemini", config, KEY)
    else:
        config2 = OpenAICompatModelConfig(kind="openai_compat", model="m", base_url=server_url + "/v1", timeout_s=2)
        backend = OpenAICompatBackend("deepseek_api", config2, KEY)
    with pytest.raises(BackendError) as info:
        backend.generate([{"role": "user", "content": "hi"}])
    assert (info.value.kind, info.value.retryable) == ("connection", True)


def test_missing_key_makes_backend_unavailable_without_calls(fake_gemini: FakeServer) -> None:
    backend = gemini_backend(fake_gemini, key=None)
    avail = backend.available()
    assert not avail.ok
    assert avail.reason == "GEMINI_API_KEY is not set (environment or .streamlit/secrets.toml)"
    with pytest.raises(BackendError) as info:
        backend.generate([{"role": "user", "content": "hi"}])
    assert info.value.kind == "auth" and fake_gemini.requests == []


def test_unknown_role_is_refused_before_sending(api: tuple[str, FakeServer]) -> None:
    kind, server = api
    with pytest.raises(BackendError) as info:
        make_backend(kind, server).generate([{"role": "tool", "content": "x"}])
    assert info.value.kind == "bad_request" and server.requests == []


# -- the key never leaks -----------------------------------------------------------------
CANARY = "CANARY-KEY-123456"
SDK_LOGGERS = ["openai", "httpx", "httpx2", "httpcore", "httpcore2", "google_genai", "google"]


def test_canary_key_appears_in_no_log_error_or_generation(
    fake_gemini: FakeServer, fake_openai: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    for name in SDK_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for server, backend in (
        (fake_gemini, gemini_backend(fake_gemini, key=CANARY)),
        (fake_openai, openai_backend(fake_openai, key=CANARY)),
    ):
        # Servers that echo the key back in their error bodies (a bad proxy) must not leak it either.
        server.enqueue(
            Reply(text="fine"),
            Reply(text="streamed fine"),
            Reply(status=401, body=error_body(401, f"API key not valid: {CANARY}", "UNAUTHENTICATED")),
            Reply(status=500, body=error_body(500, f"internal error for key={CANARY}", "INTERNAL")),
        )
        msgs = [{"role": "user", "content": "hi"}]
        seen.append(repr(backend.generate(msgs)))
        seen.append(repr(list(backend.stream(msgs))))
        for _ in range(2):
            with pytest.raises(BackendError) as info:
                call_with_retries(lambda: backend.generate(msgs), max_retries=0)
            err = info.value
            seen += [str(err), repr(err), repr(vars(err)), "".join(traceback.format_exception(err))]
        seen.append(repr(backend))
        # The key did travel to the server (the test would be vacuous otherwise).
        assert any(CANARY in str(r.headers) for r in server.requests)
    assert any(r.name.startswith(("openai", "httpx", "httpcore", "google")) for r in caplog.records), "no SDK logs captured"
    assert CANARY not in caplog.text
    assert all(CANARY not in str(r.__dict__) for r in caplog.records)
    for text in seen:
        assert CANARY not in text, text
    assert any("***" in text for text in seen)  # the echoed key was masked, not dropped silently


def test_redact_masks_registered_and_given_secrets() -> None:
    assert redact("key=abcd1234 and abcd1234", ["abcd1234"]) == "key=*** and ***"
    assert redact("nothing here", [None, "", "abc"]) == "nothing here"  # too short to be a key


# -- secrets ---------------------------------------------------------------------------
def test_resolve_api_key_env_wins_over_secrets_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('DMAC_TEST_KEY = "from-file"\nOTHER = "x"\n[section]\nDMAC_TEST_NESTED = "no"\n')
    monkeypatch.delenv("DMAC_TEST_KEY", raising=False)
    assert resolve_api_key("DMAC_TEST_KEY", secrets) == "from-file"
    monkeypatch.setenv("DMAC_TEST_KEY", "from-env")
    assert resolve_api_key("DMAC_TEST_KEY", secrets) == "from-env"
    monkeypatch.setenv("DMAC_TEST_KEY", "   ")  # blank counts as unset
    assert resolve_api_key("DMAC_TEST_KEY", secrets) == "from-file"
    assert resolve_api_key("DMAC_TEST_NESTED", secrets) is None  # top-level keys only
    assert resolve_api_key("DMAC_TEST_MISSING", secrets) is None
    assert resolve_api_key("DMAC_TEST_MISSING", tmp_path / "absent.toml") is None
    assert resolve_api_key(None, secrets) is None


def test_resolve_api_key_bad_toml_names_file_not_content(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('DMAC_TEST_KEY = "sekrit-value\n')
    monkeypatch.delenv("DMAC_TEST_KEY", raising=False)
    with pytest.raises(SecretsError) as info:
        resolve_api_key("DMAC_TEST_KEY", secrets)
    assert str(secrets) in str(info.value) and "sekrit" not in str(info.value)


def test_unavailable_reason_names_variable_not_value(tmp_path, monkeypatch, fake_openai) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    key = resolve_api_key("DEEPSEEK_API_KEY", tmp_path / "none.toml")
    backend = openai_backend(fake_openai, key=key)
    avail = backend.available()
    assert not avail.ok and "DEEPSEEK_API_KEY" in avail.reason
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-real-looking-value")
    ok = openai_backend(fake_openai, key=resolve_api_key("DEEPSEEK_API_KEY", tmp_path / "none.toml")).available()
    assert ok.ok and "sk-real" not in ok.reason and "sk-real" not in avail.reason


# -- retry policy ----------------------------------------------------------------------
def test_call_with_retries_policy() -> None:
    calls: list[int] = []

    def flaky(errors: list[BackendError]):  # type: ignore[no-untyped-def]
        def fn() -> str:
            calls.append(1)
            if errors:
                raise errors.pop(0)
            return "done"
        return fn

    waits: list[float] = []
    fails = [BackendError("x", retryable=True) for _ in range(5)]
    with pytest.raises(BackendError) as info:
        call_with_retries(flaky(fails), max_retries=4, max_wait_s=3, sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0, 3.0] and info.value.attempts == 5  # type: ignore[attr-defined]
    waits.clear()
    assert call_with_retries(flaky([BackendError("x", retryable=True, retry_after=99)]), max_retries=1,
                             max_wait_s=30, sleep=waits.append) == "done"
    assert waits == [30]
    calls.clear()
    with pytest.raises(BackendError):
        call_with_retries(flaky([BackendError("no", retryable=False)]), max_retries=5, sleep=waits.append)
    assert len(calls) == 1
    with pytest.raises(ValueError):
        call_with_retries(lambda: 1, max_retries=-1)


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after(None) is None
    when = datetime.now(timezone.utc) + timedelta(seconds=20)
    got = parse_retry_after({"Retry-After": format_datetime(when, usegmt=True)})
    assert got is not None and 15 < got <= 21
