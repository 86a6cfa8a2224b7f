"""The OpenAI-compatible gateway with real clients: the official ``openai`` SDK (plain, streamed,
errors) and raw HTTP (malformed input), against the gateway served by uvicorn on 127.0.0.1
over a workbench with the tiny local learner and a fake OpenAI-compatible API model."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx2 as httpx
import openai
import pytest

from dmac_core.config import Config, load_config
from dmac_core.gateway.server import GatewayServer, start_gateway
from dmac_core.system import LearningSystem
from tests.conftest import tiny_config_dict, write_config
from tests.fake_servers import FakeServer, Reply, fake_openai  # noqa: F401
from tests.test_unloadable_version import served_version

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _system(tmp_path: Path, tiny_model_dir: Path, fake: FakeServer | None = None, **extra: Any) -> LearningSystem:
    data = tiny_config_dict(tmp_path / "data", tiny_model_dir)
    if fake is not None:
        data["models"]["deepseek_api"] = {"kind": "openai_compat", "base_url": fake.openai_base_url,
                                          "api_key_env": "TEST_GATEWAY_KEY", "timeout_s": 10.0, "max_retries": 0}
        data["routing"]["order"] = ["deepseek_api", "deepseek"]
    data.update(extra)
    return LearningSystem(load_config(write_config(tmp_path / "config.yaml", data)))


@pytest.fixture
def served(tmp_path: Path, tiny_model_dir: Path, fake_openai: FakeServer,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LearningSystem, GatewayServer, FakeServer]]:
    monkeypatch.setenv("TEST_GATEWAY_KEY", "upstream-secret")
    system = _system(tmp_path, tiny_model_dir, fake_openai)
    server = start_gateway(system, "127.0.0.1", 0)
    yield system, server, fake_openai
    server.stop()


def _client(server: GatewayServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=30)


def _interactions(system: LearningSystem) -> list[dict[str, Any]]:
    return [r for r in system.store.records("interactions")]


def test_plain_and_streamed_answers_are_logged_like_chat_answers(served: Any) -> None:
    system, server, fake = served
    fake.set_instant("Paris is the capital of France.")
    client = _client(server)

    plain = client.chat.completions.with_raw_response.create(model="auto", messages=QUESTION)
    completion = plain.parse()
    assert completion.choices[0].message.content == "Paris is the capital of France."
    assert completion.model == "deepseek_api" and completion.choices[0].finish_reason == "stop"
    extension = completion.model_extra["dmac"]
    assert plain.headers["x-dmac-interaction-id"] == extension["interaction_id"]
    assert completion.id == f"chatcmpl-{extension['interaction_id']}"
    assert plain.headers["x-dmac-route-reason"] == "auto/priority: deepseek_api" == extension["route_reason"]

    stream = client.chat.completions.create(model="deepseek", messages=QUESTION, stream=True, max_tokens=6,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    streamed_id = final.model_extra["dmac"]["interaction_id"]
    assert final.model == "deepseek@base" and chunks[-1].usage.completion_tokens == 6

    records = {r["id"]: r for r in _interactions(system)}
    assert set(records) == {extension["interaction_id"], streamed_id}  # each answer recorded once
    api_record, learner_record = records[extension["interaction_id"]], records[streamed_id]
    assert api_record["response"] == "Paris is the capital of France." and api_record["user"] == "local"
    assert api_record["session_id"] == "api" and api_record["purpose"] == "chat"
    assert learner_record["response"] == text.strip() and learner_record["model_version"] == "base"
    assert learner_record["tokens_out"] == 6 and learner_record["finish_reason"] == "length"
    assert learner_record["route_reason"] == "chosen by user: deepseek"
    # the upstream API's key never reaches a record
    assert "upstream-secret" not in json.dumps(list(records.values()))
    # the fake upstream got the system prompt and the question: the router's request, not a copy
    assert fake.requests[-1].body["messages"][-1] == QUESTION[0]


def test_models_lists_what_is_available_and_why_the_rest_are_off(
        tmp_path: Path, tiny_model_dir: Path, fake_openai: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_GATEWAY_KEY", raising=False)
    system = _system(tmp_path, tiny_model_dir, fake_openai, routing={"strategy": "priority", "order": ["deepseek_api"]})
    server = start_gateway(system, "127.0.0.1", 0)
    try:
        page = _client(server).models.list()
        assert [m.id for m in page.data] == ["auto", "deepseek"]
        off = page.model_extra["unavailable"]
        assert off == [{"id": "deepseek_api", "reason": "deepseek_api: TEST_GATEWAY_KEY is not set "
                                                        "(environment or .streamlit/secrets.toml)"}]
        with pytest.raises(openai.APIStatusError) as refused:
            _client(server).chat.completions.create(model="deepseek_api", messages=QUESTION)
        assert refused.value.status_code == 503 and "TEST_GATEWAY_KEY is not set" in refused.value.message
        with pytest.raises(openai.APIStatusError) as nothing:  # auto, and the only routed model is off
            _client(server).chat.completions.create(model="auto", messages=QUESTION)
        assert nothing.value.status_code == 503 and nothing.value.body["code"] == "no_model_available"
        assert "No model could answer: deepseek_api: TEST_GATEWAY_KEY is not set" in nothing.value.message
    finally:
        server.stop()


def test_errors_have_openai_shape_and_status(served: Any) -> None:
    system, server, fake = served
    client = _client(server)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-17", messages=QUESTION)
    assert unknown.value.body["code"] == "model_not_found" and unknown.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="deepseek@v0042", messages=QUESTION)
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "   "}])
    assert "empty" in empty.value.message
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(model="auto", messages=QUESTION,
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert tools.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as huge:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x" * 200_000}])
    assert "limit is" in huge.value.message
    assert _interactions(system) == []  # nothing refused was logged


def test_over_a_cap_is_429_with_retry_after_and_nothing_available_is_503(
        tmp_path: Path, tiny_model_dir: Path, fake_openai: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_GATEWAY_KEY", "upstream-secret")
    fake_openai.set_instant("fine")
    system = _system(tmp_path, tiny_model_dir, fake_openai,
                     routing={"strategy": "priority", "order": ["deepseek_api"],
                              "caps": {"deepseek_api": {"requests_per_day": 1}}})
    server = start_gateway(system, "127.0.0.1", 0)
    try:
        client = _client(server)
        client.chat.completions.create(model="deepseek_api", messages=QUESTION)
        with pytest.raises(openai.RateLimitError) as capped:
            client.chat.completions.create(model="deepseek_api", messages=QUESTION)
        retry_after = int(capped.value.response.headers["retry-after"])
        assert 0 < retry_after <= 86_400 and capped.value.body["code"] == "usage_cap_reached"
        assert "1/1 requests today" in capped.value.message
        with pytest.raises(openai.RateLimitError) as auto_capped:  # auto: the only routed model is capped
            client.chat.completions.create(model="auto", messages=QUESTION)
        assert "Every model is at a usage cap" in auto_capped.value.message
        assert len(fake_openai.requests) == 1  # the capped calls never reached the upstream API
    finally:
        server.stop()


def _raw(server: GatewayServer, body: bytes, path: str = "/chat/completions", **headers: str) -> httpx.Response:
    return httpx.post(server.url + path, content=body, headers={"content-type": "application/json", **headers},
                      timeout=30)


@pytest.mark.parametrize("body, param, words", [
    (b"{not json", None, "not valid JSON"),
    (b"", None, "empty"),
    (b"[1, 2]", None, "JSON object"),
    (b'{"model": "auto"}', "messages", "non-empty list"),
    (b'{"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role", "role"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": 42}]}', "messages[0].content", "string"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
     "messages[0].content", "only text parts"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}', "max_tokens", "integer"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature",
     "number"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "n": 3}', "n", "n = 1"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800 lone"}]}', None, "not valid JSON"),
    (b'\xff\xfe garbage', None, "not valid JSON"),
])
def test_malformed_requests_get_400_naming_the_field_and_write_nothing(served: Any, body: bytes, param: str | None,
                                                                       words: str) -> None:
    system, server, _ = served
    response = _raw(server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and words in error["message"]
    assert _interactions(system) == []


def test_a_body_over_the_limit_is_413_and_unknown_paths_404(served: Any) -> None:
    system, server, _ = served
    big = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "y" * 1_100_000}]}).encode()
    response = _raw(server, big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    # without a Content-Length (chunked), the limit holds while reading
    chunked = httpx.post(server.url + "/chat/completions", content=iter([big[:600_000], big[600_000:]]),
                         headers={"content-type": "application/json"}, timeout=30)
    assert chunked.status_code == 413
    missing = httpx.get(server.url + "/engines", timeout=30)
    assert missing.status_code == 404 and "POST /v1/chat/completions" in missing.json()["error"]["message"]
    assert _interactions(system) == []


def test_feedback_through_the_api_is_validated_like_the_pages(served: Any) -> None:
    system, server, fake = served
    fake.set_instant("Paris.")
    completion = _client(server).chat.completions.create(model="auto", messages=QUESTION)
    good = _raw(server, json.dumps({"interaction_id": completion.id, "rating": 5, "feedback": "right",
                                    "correction": "Paris is the capital of France."}).encode(), "/feedback")
    assert good.status_code == 200, good.text
    interaction_id = completion.model_extra["dmac"]["interaction_id"]
    assert good.json()["interaction_id"] == interaction_id
    seed_form = _raw(server, json.dumps({"prompt": QUESTION[0]["content"], "response": "Paris.",
                                         "rating": 4}).encode(), "/feedback")
    assert seed_form.status_code == 200 and seed_form.json()["interaction_id"] == interaction_id
    for body, status in (({"interaction_id": interaction_id, "rating": 6}, 400),
                         ({"interaction_id": interaction_id, "rating": "5"}, 400),
                         ({"interaction_id": interaction_id, "rating": True}, 400),
                         ({"interaction_id": "0" * 32, "rating": 3}, 404),
                         ({"rating": 3}, 400),
                         ({"interaction_id": interaction_id, "rating": 3, "feedback": ["x"]}, 400)):
        response = _raw(server, json.dumps(body).encode(), "/feedback")
        assert response.status_code == status, (body, response.text)
    feedback = system.store.records("feedback")
    assert [(f["rating"], f["feedback"], f["correction"], f["user"]) for f in feedback] == [
        (5, "right", "Paris is the capital of France.", "local"), (4, "", None, "local")]


def test_a_client_gone_mid_stream_leaves_a_complete_record_marked_cut_off(served: Any) -> None:
    system, server, fake = served
    words = " ".join(f"word{i}" for i in range(40))
    fake.enqueue(Reply(text=words, chunks=40, chunk_delay=0.05))
    with httpx.stream("POST", server.url + "/chat/completions", timeout=30,
                      json={"model": "deepseek_api", "stream": True, "messages": QUESTION}) as response:
        assert response.status_code == 200
        interaction_id = response.headers["x-dmac-interaction-id"]
        received = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
            if len(received) >= 4:
                break  # the client goes away after a few pieces
    deadline = time.monotonic() + 10
    while not _interactions(system) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    records = _interactions(system)
    assert len(records) == 1, records
    record = records[0]
    assert record["id"] == interaction_id and record["finish_reason"] == "cut_off" and record["error"] is None
    said = "".join(c["choices"][0]["delta"].get("content") or "" for c in received)
    assert record["response"].startswith(said) and said and len(record["response"]) < len(words)


def _with_users(system: LearningSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "secrets.toml"))
    security = system.security
    security.add_user("local", "ann", "password-ann-1")  # the first user: admin
    security.add_user("ann", "bob", "password-bob-1")  # analyst
    security.add_user("ann", "viv", "password-viv-1", security.role_of("ann").__class__.VIEWER)
    keys = {name: security.create_api_key("ann", name, label="test")[0] for name in ("bob", "viv")}
    keys["limited"] = security.create_api_key("ann", "bob", requests_per_minute=2)[0]
    return keys


def test_keys_are_required_once_users_exist_and_act_with_their_users_role(
        served: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system, server, fake = served
    fake.set_instant("Paris.")
    keys = _with_users(system, tmp_path, monkeypatch)
    missing = _raw(server, json.dumps({"model": "auto", "messages": QUESTION}).encode())
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError):
        _client(server, "sk-anything").chat.completions.create(model="auto", messages=QUESTION)
    with pytest.raises(openai.AuthenticationError):
        _client(server, keys["bob"][:-1] + "x").chat.completions.create(model="auto", messages=QUESTION)

    answer = _client(server, keys["bob"]).chat.completions.create(model="auto", messages=QUESTION)
    record = system.store.get_interaction(answer.model_extra["dmac"]["interaction_id"])
    key_id = keys["bob"].split("-")[1]
    assert record["user"] == "bob" and record["session_id"] == f"api:{key_id}"

    viewer = _client(server, keys["viv"])
    assert [m.id for m in viewer.models.list().data][:1] == ["auto"]  # a viewer may look
    with pytest.raises(openai.PermissionDeniedError) as denied:
        viewer.chat.completions.create(model="auto", messages=QUESTION)
    assert "analyst" in denied.value.message
    rated = _raw(server, json.dumps({"interaction_id": record["id"], "rating": 5}).encode(), "/feedback",
                 authorization=f"Bearer {keys['viv']}")
    assert rated.status_code == 403

    system.security.revoke_api_key("ann", key_id)
    with pytest.raises(openai.AuthenticationError):
        _client(server, keys["bob"]).chat.completions.create(model="auto", messages=QUESTION)
    assert len(_interactions(system)) == 1
    # the secrets never reach the key file
    stored = (system.config.data_path / "security" / "api-keys.json").read_text()
    assert all(key not in stored for key in keys.values())


def test_a_key_over_its_limit_gets_429_with_retry_after(served: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    system, server, fake = served
    keys = _with_users(system, tmp_path, monkeypatch)
    client = _client(server, keys["limited"])
    assert len(client.models.list().data) >= 2
    assert len(client.models.list().data) >= 2
    with pytest.raises(openai.RateLimitError) as limited:
        client.models.list()
    assert limited.value.body["code"] == "key_rate_limit"
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    assert len(_client(server, keys["bob"]).models.list().data) >= 2  # other keys are not affected


def test_a_learner_version_is_asked_by_name_and_a_promotion_reaches_api_clients(
        make_config: Callable[..., Config]) -> None:
    system = served_version(make_config(scope={"enabled": False}))  # v0001 trained and served, for every question
    assert system.roll_back() == "base"
    server = start_gateway(system, "127.0.0.1", 0)
    try:
        client = _client(server)
        assert "deepseek@v0001" in [m.id for m in client.models.list().data]
        asked = client.chat.completions.create(model="deepseek@v0001", messages=QUESTION, max_tokens=4)
        assert asked.model == "deepseek@v0001"
        assert client.chat.completions.create(model="deepseek", messages=QUESTION, max_tokens=4).model == "deepseek@base"
        system.promote("v0001", user="local", reason="test")
        after = client.chat.completions.create(model="deepseek", messages=QUESTION, max_tokens=4)
        assert after.model == "deepseek@v0001"  # the next request, no restart
        versions = [r["model_version"] for r in _interactions(system) if r["session_id"] == "api"]
        assert versions == ["v0001", "base", "v0001"]
    finally:
        server.stop()


def test_the_gateway_refuses_a_taken_port(tmp_path: Path, tiny_model_dir: Path) -> None:
    system = _system(tmp_path, tiny_model_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        from dmac_core.gateway.server import GatewayError

        with pytest.raises(GatewayError, match="in use"):
            start_gateway(system, "127.0.0.1", port)


def test_whole_answers_of_many_clients_wait_on_their_model_together(served: Any) -> None:
    """Twelve clients asking a slow API model at once are all in flight at once: none waits for
    a free thread behind the others (the event loop's own pool has only a handful)."""
    import threading

    system, server, fake = served
    fake.enqueue(*[Reply(text="slow answer", delay=3.0)] * 12)
    client = _client(server)
    threads = [threading.Thread(target=client.chat.completions.create,
                                kwargs={"model": "deepseek_api", "messages": QUESTION}) for _ in range(12)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 2.5
    while len(fake.requests) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    in_flight = len(fake.requests)
    for thread in threads:
        thread.join(30)
    assert in_flight == 12
    records = _interactions(system)
    assert len(records) == 12 and {r["response"] for r in records} == {"slow answer"}
