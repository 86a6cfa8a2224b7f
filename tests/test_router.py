"""ModelManager: routing by availability, caps, health and ratings; every attempt captured.

The backends here are small implementations of the Backend protocol (not patches of any
SDK); the SDK-level behaviour is tested against fake HTTP servers in test_backends_api.py
and test_router_http.py.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any, Iterator

import pytest

from dmac_core.backends.base import Availability, BackendError, Generation
from dmac_core.config import Config, load_config
from dmac_core.logs.store import LearningStore
from dmac_core.serving.router import ModelManager, RoutingError
from dmac_core.system import SeedModelManager
from tests.conftest import write_config


class ScriptedBackend:
    """Answers from a script: a text, or a BackendError to raise."""

    def __init__(self, name: str, script: list[Any] | None = None, ok: bool = True, reason: str = "") -> None:
        self.name = name
        self.script = list(script or [])
        self.ok, self.reason = ok, reason
        self.calls: list[list[dict[str, Any]]] = []

    def available(self) -> Availability:
        return Availability(self.ok, self.reason)

    def _next(self) -> Any:
        return self.script.pop(0) if self.script else f"answer from {self.name}"

    def generate(self, messages: list[dict[str, Any]], **options: Any) -> Generation:
        return [i for i in self.stream(messages, **options) if isinstance(i, Generation)][0]

    def stream(self, messages: list[dict[str, Any]], **options: Any) -> Iterator[Any]:
        self.calls.append(messages)
        step = self._next()
        if isinstance(step, BackendError):
            raise step
        yield step
        yield Generation(text=step, provider_model=f"{self.name}-model", tokens_in=3, tokens_out=2, latency_ms=1.0)


def api_config(tmp_path: Path, **routing: Any) -> Config:
    data = {
        "data_dir": str(tmp_path / "data"),
        "models": {
            "deepseek": {"kind": "local", "base_model": str(tmp_path / "unused")},
            "premium": {"kind": "openai_compat", "display_name": "Premium", "base_url": "http://127.0.0.1:9/v1",
                        "max_retries": 0},
            "cheap": {"kind": "openai_compat", "display_name": "Cheap", "base_url": "http://127.0.0.1:9/v1",
                      "max_retries": 0},
        },
        "routing": {"order": ["premium", "cheap", "deepseek"], **routing},
        "storage": {"fsync": False},
    }
    return load_config(write_config(tmp_path / "config.yaml", data))


def manager_for(config: Config, **backends: ScriptedBackend) -> ModelManager:
    store = LearningStore(config.data_path, fsync=False)
    full = {"deepseek": ScriptedBackend("deepseek", ok=False, reason="no base model")} | backends
    return ModelManager(config, store, full, rng=random.Random(0))


def test_priority_routes_to_first_available_and_captures_exact_record(tmp_path: Path) -> None:
    config = api_config(tmp_path)
    manager = manager_for(config, premium=ScriptedBackend("premium"), cheap=ScriptedBackend("cheap"))
    result = manager.respond("What is ROUGE?", user="ana", session_id="s1")
    assert (result.text, result.model) == ("answer from premium", "premium")
    rows = manager.store.records("interactions")
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == result.interaction_id and row["schema"] == 1
    assert row["model"] == "premium" and row["provider_model"] == "premium-model"
    assert row["prompt"] == "What is ROUGE?" and row["response"] == "answer from premium"
    assert row["messages"] == [{"role": "user", "content": "What is ROUGE?"}]
    assert (row["user"], row["session_id"], row["tokens_in"], row["tokens_out"]) == ("ana", "s1", 3, 2)
    assert row["route_reason"] == "auto/priority: premium" and row["error"] is None
    assert Path(config.data_path / "interactions" / f"{row['ts'][:7]}.jsonl").is_file()


def test_unavailable_model_is_skipped_with_its_reason(tmp_path: Path) -> None:
    manager = manager_for(
        api_config(tmp_path),
        premium=ScriptedBackend("premium", ok=False, reason="GEMINI_API_KEY is not set"),
        cheap=ScriptedBackend("cheap"),
    )
    result = manager.respond("hi")
    assert result.model == "cheap"
    assert result.route_reason == "premium: GEMINI_API_KEY is not set → auto/priority: cheap"


def test_explicit_choice_and_unknown_or_unavailable_model(tmp_path: Path) -> None:
    manager = manager_for(api_config(tmp_path), premium=ScriptedBackend("premium"), cheap=ScriptedBackend("cheap"))
    assert manager.respond("hi", model="cheap").route_reason == "chosen by user: cheap"
    with pytest.raises(RoutingError, match="Unknown model 'nope'"):
        manager.respond("hi", model="nope")
    with pytest.raises(RoutingError, match="no base model"):
        manager.respond("hi", model="deepseek")


def test_a_version_is_only_asked_of_the_learner(tmp_path: Path) -> None:
    premium = ScriptedBackend("premium")
    manager = manager_for(api_config(tmp_path), premium=premium, cheap=ScriptedBackend("cheap"))
    with pytest.raises(RoutingError, match="Premium is an API model: only the local learner has versions"):
        manager.respond("hi", model="premium@v0001")
    assert premium.calls == [] and manager.store.records("interactions") == []


def test_daily_request_cap_moves_traffic_and_holds_after_restart(tmp_path: Path) -> None:
    config = api_config(tmp_path, caps={"premium": {"requests_per_day": 2}})
    manager = manager_for(config, premium=ScriptedBackend("premium"), cheap=ScriptedBackend("cheap"))
    assert [manager.respond("q").model for _ in range(2)] == ["premium", "premium"]
    third = manager.respond("q")
    assert third.model == "cheap"
    assert third.route_reason == "premium: 2/2 requests today → auto/priority: cheap"
    restarted = manager_for(config, premium=ScriptedBackend("premium"), cheap=ScriptedBackend("cheap"))
    assert restarted.respond("q").model == "cheap"  # counted from the logs, not from memory


def test_token_cap_counts_tokens_in_and_out_and_the_next_calls_estimate(tmp_path: Path) -> None:
    config = api_config(tmp_path, caps={"premium": {"tokens_per_day": 20}})
    config.models["premium"].max_output_tokens = 1  # a call may use 1 + "q" (1) + one message (4) = 6 tokens
    manager = manager_for(config, premium=ScriptedBackend("premium"), cheap=ScriptedBackend("cheap"))
    results = [manager.respond("q") for _ in range(4)]
    # 5 tokens per answer (3 in, 2 out): after three, 15 + 6 would pass 20 (counting tokens out alone, 6 + 6 would not)
    assert [r.model for r in results] == ["premium", "premium", "premium", "cheap"]
    assert results[3].route_reason == "premium: 15/20 tokens today, this call may use up to 6 → auto/priority: cheap"


def test_failure_falls_back_logs_the_error_and_cools_down(tmp_path: Path) -> None:
    premium = ScriptedBackend("premium", [BackendError("HTTP 500", retryable=True, status=500, kind="server")])
    manager = manager_for(api_config(tmp_path), premium=premium, cheap=ScriptedBackend("cheap"))
    result = manager.respond("q")
    assert result.model == "cheap"
    assert result.route_reason == "premium failed (server 500) → auto/priority: cheap"
    rows = manager.store.records("interactions")
    assert [(r["model"], r["error"]) for r in rows] == [("premium", "HTTP 500"), ("cheap", None)]
    assert manager.in_cooldown("premium") > 0
    assert manager.respond("q").route_reason.startswith("premium: cooling down")
    assert len(premium.calls) == 1


def test_auth_error_falls_back_without_cooldown(tmp_path: Path) -> None:
    premium = ScriptedBackend("premium", [BackendError("HTTP 401 invalid key", status=401, kind="auth")])
    manager = manager_for(api_config(tmp_path), premium=premium, cheap=ScriptedBackend("cheap"))
    assert manager.respond("q").route_reason == "premium failed (auth 401) → auto/priority: cheap"
    assert manager.in_cooldown("premium") == 0


def test_every_model_failing_is_a_clear_error(tmp_path: Path) -> None:
    manager = manager_for(
        api_config(tmp_path),
        premium=ScriptedBackend("premium", [BackendError("boom", kind="error")]),
        cheap=ScriptedBackend("cheap", ok=False, reason="no key"),
    )
    with pytest.raises(RoutingError, match=r"No model could answer: premium failed \(error\); cheap: no key; deepseek: no base model"):
        manager.respond("q")


@pytest.mark.parametrize("prompt, message", [("   ", "empty"), ("x" * 40_000, "limit is 32,000")])
def test_bad_prompts_are_refused_and_nothing_is_logged(tmp_path: Path, prompt: str, message: str) -> None:
    manager = manager_for(api_config(tmp_path), premium=ScriptedBackend("premium"))
    with pytest.raises(ValueError, match=message):
        manager.respond(prompt)
    assert manager.store.records("interactions") == []


def test_system_prompt_and_multi_turn_reach_the_backend(tmp_path: Path) -> None:
    premium = ScriptedBackend("premium")
    manager = manager_for(api_config(tmp_path, system_prompt="Be brief."), premium=premium)
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    manager.respond(turns)
    assert premium.calls[0] == [{"role": "system", "content": "Be brief."}] + turns


def test_best_rated_prefers_the_higher_rated_model(tmp_path: Path) -> None:
    config = api_config(tmp_path, strategy="best_rated", best_rated_min_samples=2, exploration=0.0)
    manager = manager_for(config, premium=ScriptedBackend("premium"), cheap=ScriptedBackend("cheap"))
    for model, rating in [("premium", 2), ("premium", 3), ("cheap", 5), ("cheap", 4)]:
        result = manager.respond(f"q-{rating}", model=model)
        manager.store.append_feedback(interaction_id=result.interaction_id, rating=rating)
    assert manager.respond("next").model == "cheap"


def test_seed_async_api_generate_and_provide_feedback(tmp_path: Path) -> None:
    manager = manager_for(api_config(tmp_path), premium=ScriptedBackend("premium"))
    seed = SeedModelManager(manager, manager.store)  # what `from dmac_core import model_manager` gives

    async def scenario() -> None:
        answer = await seed.generate("What is the future of AI?")
        assert str(answer) == "answer from premium"
        await seed.provide_feedback(
            prompt="What is the future of AI?", response=str(answer), feedback="more examples", rating=4
        )
        deltas = [d async for d in seed.generate_stream("again")]
        assert deltas[0] == "answer from premium" and deltas[-1].model == "premium"

    asyncio.run(scenario())
    feedback = manager.store.records("feedback")
    assert len(feedback) == 1 and feedback[0]["rating"] == 4
    assert feedback[0]["interaction_id"] == manager.store.records("interactions")[0]["id"]
    assert json.dumps(feedback[0])  # serialisable as stored


def test_usage_counter_tails_the_log_and_survives_torn_lines_and_rewrites(tmp_path: Path) -> None:
    from dmac_core.serving.usage import UsageCounter

    store = LearningStore(tmp_path, fsync=False)
    counter = UsageCounter(store)
    store.append_interaction(model="gemini", prompt="p", response="r", tokens_in=3, tokens_out=4)
    assert counter.usage("gemini").requests_today == 1 and counter.usage("gemini").tokens_today == 7
    [path] = store.month_files("interactions")
    with open(path, "ab") as handle:
        handle.write(b'{"model": "gemini", "ts": "torn')  # a killed writer's fragment
    assert counter.usage("gemini").requests_today == 1
    store.append_interaction(model="gemini", prompt="p2", response="r2")
    assert counter.usage("gemini").requests_today == 2  # the fragment line is skipped, the record counted
    path.write_bytes(path.read_bytes().split(b"\n", 1)[1])  # rewritten (e.g. a deletion): recount
    assert counter.usage("gemini").requests_today == 1
