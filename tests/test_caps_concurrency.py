"""Caps hold when sessions ask at once: a call reserves its place before it starts, in this
process and across processes sharing the data directory. The backend is the real OpenAI SDK
against a fake server on 127.0.0.1 that answers slowly, so the calls overlap."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dmac_core.config import PROJECT_ROOT, Config, load_config
from dmac_core.serving.errors import RoutingError
from dmac_core.serving.usage import day_budget_shortfall
from dmac_core.system import LearningSystem
from tests.conftest import write_config
from tests.fake_servers import FakeServer, Reply, error_body, fake_openai  # noqa: F401

SLOW = 0.2  # seconds the server takes per answer: long enough for every session to be waiting at once


def capped_config(tmp_path: Path, server_url: str, max_output_tokens: int = 64, **caps: int) -> Config:
    data = {
        "data_dir": str(tmp_path / "data"),
        "models": {
            "deepseek": {"kind": "local", "base_model": str(tmp_path / "no-model")},
            "deepseek_api": {"kind": "openai_compat", "base_url": server_url, "api_key_env": "TEST_DEEPSEEK_KEY",
                             "timeout_s": 5.0, "max_retries": 0, "max_output_tokens": max_output_tokens},
        },
        "routing": {"order": ["deepseek_api", "deepseek"], "caps": {"deepseek_api": caps}, "cooldown_s": 0},
        "storage": {"fsync": False},
    }
    return load_config(write_config(tmp_path / "config.yaml", data))


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEST_DEEPSEEK_KEY", "k")
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "absent.toml"))


def chat(system: LearningSystem, question: str) -> str:
    """One session's question through the Chat page's path: the answer, or the error it shows."""
    try:
        items = list(system.chat_stream([{"role": "user", "content": question}], model="deepseek_api", session_id="s"))
    except RoutingError as exc:
        return f"refused: {exc}"
    return items[-1].text


def sessions_at_once(system: LearningSystem, n: int) -> list[str]:
    barrier = threading.Barrier(n)
    outcomes: list[str] = [""] * n

    def session(i: int) -> None:
        barrier.wait()
        outcomes[i] = chat(system, f"question {i}")

    threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_twenty_sessions_at_once_get_exactly_the_ten_requests_a_cap_allows(tmp_path: Path,
                                                                           fake_openai: FakeServer) -> None:
    fake_openai.enqueue(*[Reply(text="answer", delay=SLOW) for _ in range(20)])
    system = LearningSystem(capped_config(tmp_path, fake_openai.openai_base_url, requests_per_day=10))
    started = time.monotonic()
    outcomes = sessions_at_once(system, 20)
    assert len(fake_openai.requests) == 10
    assert outcomes.count("answer") == 10
    refused = [o for o in outcomes if o.startswith("refused")]
    assert len(refused) == 10
    assert all("DeepSeek cannot answer now — deepseek_api: 10/10 requests today" in o for o in refused), refused
    records = system.store.records("interactions")
    assert len(records) == 10 and all(r["error"] is None for r in records)
    assert time.monotonic() - started < 10 * SLOW  # the admitted calls ran side by side, not one by one
    status = {s.name: s for s in system.model_manager.status()}["deepseek_api"]
    assert (status.requests_today, status.requests_in_flight) == (10, 0)  # every reservation was released


def test_a_failed_call_that_reached_the_server_counts_and_releases_its_reservation(
        tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.enqueue(Reply(status=500, body=error_body(500, "oops")), Reply(text="second"), Reply(text="third"))
    system = LearningSystem(capped_config(tmp_path, fake_openai.openai_base_url, requests_per_day=2))
    assert "deepseek_api failed (server 500)" in chat(system, "q1")
    assert chat(system, "q2") == "second"  # admitted: the failed call holds no reservation any more
    assert "2/2 requests today" in chat(system, "q3")  # a request sent counts, answered or not
    assert len(fake_openai.requests) == 2


def test_a_call_that_never_reached_the_server_does_not_count(tmp_path: Path, fake_openai: FakeServer) -> None:
    closed = FakeServer("openai")
    closed_url = closed.openai_base_url
    closed.close()  # nothing listens there any more: the connection is refused
    fake_openai.set_instant("answer")
    system = LearningSystem(capped_config(tmp_path, closed_url, requests_per_day=1))
    assert "deepseek_api failed (connection)" in chat(system, "q1")
    [failed] = system.store.records("interactions")
    assert failed["request_sent"] is False and failed["error"]
    usage = system.model_manager.usage_now("deepseek_api")
    assert (usage.requests_today, usage.requests_in_flight) == (0, 0)
    backend = system.model_manager.backends["deepseek_api"]
    backend.config.base_url = fake_openai.openai_base_url  # the server is back (a new client on the next call)
    backend.close()
    assert chat(system, "q2") == "answer"
    assert "1/1 requests today" in chat(system, "q3")


def test_a_stream_given_up_by_its_reader_releases_its_reservation(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.set_instant("a streamed answer")
    system = LearningSystem(capped_config(tmp_path, fake_openai.openai_base_url, requests_per_day=1))
    stream = system.chat_stream([{"role": "user", "content": "q"}], model="deepseek_api", session_id="s")
    assert isinstance(next(stream), str)
    assert system.model_manager.usage_now("deepseek_api").requests_in_flight == 1
    stream.close()  # the page was left mid-answer: no record is written
    assert system.model_manager.usage_now("deepseek_api").requests_in_flight == 0


def test_the_token_estimate_in_flight_blocks_a_call_that_would_pass_the_token_cap(
        tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.set_instant("answer")  # 7 tokens in, 5 out
    # each call may use up to 1,000 answer tokens + 1 for "q1" + 4 for its one message = 1,005
    system = LearningSystem(capped_config(tmp_path, fake_openai.openai_base_url, max_output_tokens=1000,
                                          tokens_per_day=1500))
    first = system.chat_stream([{"role": "user", "content": "q1"}], model="deepseek_api", session_id="s")
    assert isinstance(next(first), str)  # under way, not logged yet: it holds 1,005 tokens
    assert chat(system, "q2") == ("refused: DeepSeek cannot answer now — deepseek_api: 1005/1500 tokens today "
                                  "(1 in flight), this call may use up to 1005")
    assert {s.name: s for s in system.model_manager.status()}["deepseek_api"].requests_in_flight == 1
    # a batch checked while it is in flight counts it too
    caps = system.config.routing.caps["deepseek_api"]
    shortfall = day_budget_shortfall("deepseek_api", system.model_manager.usage_now("deepseek_api"), caps, 1, 600)
    assert shortfall and "up to 1,005 in flight" in shortfall
    assert list(first)[-1].tokens_out == 5  # done: its record (12 tokens) replaces the estimate
    assert chat(system, "q3") == "answer"  # 12 + 1,005 fit
    assert len(fake_openai.requests) == 2


def test_a_per_minute_cap_holds_for_sessions_at_once(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.enqueue(*[Reply(text="answer", delay=SLOW) for _ in range(6)])
    system = LearningSystem(capped_config(tmp_path, fake_openai.openai_base_url, requests_per_minute=3))
    outcomes = sessions_at_once(system, 6)
    assert len(fake_openai.requests) == 3 and outcomes.count("answer") == 3
    assert sum("3/3 requests this minute" in o for o in outcomes) == 3


SESSIONS_IN_A_PROCESS = """
import json, sys, threading, time
from pathlib import Path
from dmac_core.config import load_config
from dmac_core.system import LearningSystem
from tests.test_caps_concurrency import sessions_at_once

system = LearningSystem(load_config(sys.argv[1]))
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()  # ready
while not go.exists():  # both processes start their sessions at the same moment
    time.sleep(0.005)
print(json.dumps(sessions_at_once(system, 10)))
"""


def test_two_processes_sharing_a_data_dir_share_the_cap(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.enqueue(*[Reply(text="answer", delay=SLOW) for _ in range(20)])
    config = capped_config(tmp_path, fake_openai.openai_base_url, requests_per_day=10)
    go = tmp_path / "go"
    env = {"TEST_DEEPSEEK_KEY": "k", "DMAC_SECRETS": str(tmp_path / "absent.toml"), "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", SESSIONS_IN_A_PROCESS, config.source, str(go), str(flag)],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for flag in ready]
    deadline = time.monotonic() + 60
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outcomes: list[Any] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outcomes += json.loads(out.strip().splitlines()[-1])
    assert len(fake_openai.requests) == 10
    assert outcomes.count("answer") == 10
    assert sum("10/10 requests today" in o for o in outcomes) == 10
    system = LearningSystem(config)
    assert len(system.store.records("interactions")) == 10
    assert system.model_manager.usage_now("deepseek_api").requests_in_flight == 0


def test_a_reservation_left_by_a_killed_process_is_dropped(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.set_instant("answer")
    system = LearningSystem(capped_config(tmp_path, fake_openai.openai_base_url, requests_per_day=1))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    book = system.model_manager.reservations
    book.directory.mkdir(parents=True, exist_ok=True)
    book.path.write_text(json.dumps([{"id": "x", "model": "deepseek_api", "tokens": 10, "ts": time.time(),
                                      "pid": int(gone.stdout), "owner": "another process"}]))
    assert chat(system, "q") == "answer"  # the dead process's call does not hold the only request
