"""The router through the real SDKs against fake servers on 127.0.0.1: retries honour
Retry-After and are never multiplied, failures fall back, caps hold, keys never leak."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from dmac_core.config import Config, load_config
from dmac_core.system import LearningSystem
from tests.conftest import write_config
from tests.fake_servers import FakeServer, Reply, error_body, fake_gemini, fake_openai  # noqa: F401

CANARY = "CANARY-KEY-987654"


def http_config(tmp_path: Path, gemini: FakeServer, openai: FakeServer, **routing: Any) -> Config:
    data = {
        "data_dir": str(tmp_path / "data"),
        "models": {
            "deepseek": {"kind": "local", "base_model": str(tmp_path / "no-model")},
            "gemini": {"kind": "gemini", "base_url": gemini.url, "api_key_env": "TEST_GEMINI_KEY",
                       "timeout_s": 1.0, "max_retries": 2},
            "deepseek_api": {"kind": "openai_compat", "base_url": openai.openai_base_url,
                             "api_key_env": "TEST_DEEPSEEK_KEY", "timeout_s": 1.0, "max_retries": 2},
        },
        "routing": {"order": ["gemini", "deepseek_api", "deepseek"], **routing},
        "storage": {"fsync": False},
    }
    return load_config(write_config(tmp_path / "config.yaml", data))


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEST_GEMINI_KEY", CANARY)
    monkeypatch.setenv("TEST_DEEPSEEK_KEY", CANARY)
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "absent.toml"))


def test_retry_after_is_honoured_then_success(keys: None, tmp_path: Path, fake_gemini: FakeServer,
                                              fake_openai: FakeServer) -> None:
    fake_gemini.enqueue(
        Reply(status=429, body=error_body(429, "slow down", "RESOURCE_EXHAUSTED"), headers={"Retry-After": "0.2"}),
        Reply(status=429, body=error_body(429, "slow down", "RESOURCE_EXHAUSTED"), headers={"Retry-After": "0.2"}),
        Reply(text="Gemini says hi."),
    )
    system = LearningSystem(http_config(tmp_path, fake_gemini, fake_openai))
    started = time.monotonic()
    result = system.model_manager.respond("hello")
    assert result.text == "Gemini says hi." and result.model == "gemini"
    assert len(fake_gemini.requests) == 3  # never multiplied by SDK retries
    assert time.monotonic() - started >= 0.4
    assert fake_openai.requests == []


def test_server_errors_retry_then_fall_back_and_401_does_not_retry(keys: None, tmp_path: Path,
                                                                   fake_gemini: FakeServer,
                                                                   fake_openai: FakeServer) -> None:
    fake_gemini.enqueue(*[Reply(status=500, body=error_body(500, "oops", "INTERNAL"))] * 3)
    fake_openai.set_instant("DeepSeek answers.")
    system = LearningSystem(http_config(tmp_path, fake_gemini, fake_openai))
    result = system.model_manager.respond("hello")
    assert result.model == "deepseek_api" and result.text == "DeepSeek answers."
    assert len(fake_gemini.requests) == 3  # 1 + max_retries
    assert result.route_reason == "gemini failed (server 500) → auto/priority: deepseek_api"
    errors = [r for r in system.store.records("interactions") if r["error"]]
    assert len(errors) == 1 and errors[0]["model"] == "gemini"

    (tmp_path / "b").mkdir()
    other = LearningSystem(http_config(tmp_path / "b", fake_gemini, fake_openai))
    fake_gemini.requests.clear()
    fake_gemini.enqueue(Reply(status=401, body=error_body(401, "API key not valid", "UNAUTHENTICATED")))
    result = other.model_manager.respond("hello")
    assert len(fake_gemini.requests) == 1
    assert result.route_reason == "gemini failed (auth 401) → auto/priority: deepseek_api"


def test_stalled_server_is_abandoned_within_the_timeout(keys: None, tmp_path: Path, fake_gemini: FakeServer,
                                                        fake_openai: FakeServer) -> None:
    config = http_config(tmp_path, fake_gemini, fake_openai)
    config.models["gemini"].max_retries = 0  # type: ignore[union-attr]
    fake_gemini.enqueue(Reply(text="too late", delay=5.0))
    fake_openai.set_instant("Fallback answer.")
    system = LearningSystem(config)
    started = time.monotonic()
    result = system.model_manager.respond("hello")
    assert time.monotonic() - started < 3.0
    assert result.model == "deepseek_api" and "gemini failed (timeout" in result.route_reason


def test_cap_reached_moves_to_next_model_and_survives_restart(keys: None, tmp_path: Path,
                                                              fake_gemini: FakeServer,
                                                              fake_openai: FakeServer) -> None:
    fake_gemini.set_instant("G")
    fake_openai.set_instant("D")
    config = http_config(tmp_path, fake_gemini, fake_openai, caps={"gemini": {"requests_per_day": 2}})
    system = LearningSystem(config)
    assert [system.model_manager.respond("q").model for _ in range(3)] == ["gemini", "gemini", "deepseek_api"]
    restarted = LearningSystem(config)
    result = restarted.model_manager.respond("q")
    assert result.model == "deepseek_api"
    assert result.route_reason.startswith("gemini: 2/2 requests today")


def test_missing_key_makes_the_model_unavailable_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               fake_gemini: FakeServer,
                                                               fake_openai: FakeServer) -> None:
    monkeypatch.delenv("TEST_GEMINI_KEY", raising=False)
    monkeypatch.setenv("TEST_DEEPSEEK_KEY", "k")
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "absent.toml"))
    fake_openai.set_instant("D")
    system = LearningSystem(http_config(tmp_path, fake_gemini, fake_openai))
    status = {s.name: s for s in system.model_manager.status()}
    assert not status["gemini"].available and "TEST_GEMINI_KEY" in status["gemini"].reason
    assert system.model_manager.respond("q").route_reason.startswith("gemini: ")
    assert fake_gemini.requests == []


def test_canary_key_never_appears_in_logs_or_records(keys: None, tmp_path: Path, fake_gemini: FakeServer,
                                                     fake_openai: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpcore", "httpx2", "httpcore2", "google_genai", "google"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    fake_gemini.enqueue(Reply(status=401, body=error_body(401, f"bad key {CANARY}", "UNAUTHENTICATED")))
    fake_openai.enqueue(Reply(status=500, body=error_body(500, "oops")), Reply(text="ok"))
    system = LearningSystem(http_config(tmp_path, fake_gemini, fake_openai))
    system.model_manager.respond("hello")
    system.model_manager.respond("again")
    assert CANARY not in caplog.text
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
    assert CANARY not in repr(system.model_manager.status())


def test_thinking_tokens_count_against_the_token_cap_and_an_empty_answer_falls_back(
    keys: None, tmp_path: Path, fake_gemini: FakeServer, fake_openai: FakeServer
) -> None:
    # 10 visible answer tokens, 900 spent thinking. Each call reserves up to 2048 answer + 1024
    # thinking + ~8 prompt tokens, so a cap of 3,200 admits the next call only if the thinking is not counted
    fake_gemini.enqueue(Reply(text="Gemini says hi.", tokens_in=20, tokens_out=10, thoughts_tokens=900))
    fake_openai.set_instant("DeepSeek answers.")
    config = http_config(tmp_path, fake_gemini, fake_openai, caps={"gemini": {"tokens_per_day": 3200}})
    system = LearningSystem(config)
    first = system.model_manager.respond("hello")
    assert first.model == "gemini" and first.tokens_out == 910
    [record] = system.store.records("interactions")
    assert (record["tokens_out"], record["thoughts_tokens"]) == (910, 900)
    # 930 used, 930 + 3,080 > 3,200: the next request goes elsewhere (counting the answer alone, 30 + 3,080 fit)
    second = system.model_manager.respond("hello again")
    assert second.model == "deepseek_api" and "gemini" in second.route_reason
    assert len(fake_gemini.requests) == 1

    # a thinking model that spends the whole budget thinking returns no answer: an error, not ""
    (tmp_path / "b").mkdir()
    fake_gemini.enqueue(Reply(text="", tokens_out=0, thoughts_tokens=1088, finish="MAX_TOKENS"))
    other = LearningSystem(http_config(tmp_path / "b", fake_gemini, fake_openai))
    result = other.model_manager.respond("hello")
    assert result.model == "deepseek_api" and result.route_reason.startswith("gemini failed (empty)")
    failed = [r for r in other.store.records("interactions") if r["model"] == "gemini"]
    assert len(failed) == 1 and "returned no answer after 1088 thinking tokens" in failed[0]["error"]
