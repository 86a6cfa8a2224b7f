"""The blind arena's core: contestants, a learner version asked by name, the vote verb."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from dmac_core.config import Config
from dmac_core.logs.records import RecordError
from dmac_core.security.directory import add_user
from dmac_core.security.roles import PermissionDenied, Role
from dmac_core.serving.arena import ArenaError, pick_pair
from dmac_core.serving.errors import RoutingError
from dmac_core.system import LearningSystem
from tests.arena_fixtures import register_random_adapter


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A models directory with v0001 and v0002 (served), random adapters on the tiny model."""
    work = tmp_path_factory.mktemp("arena-versions")
    for seed in (11, 12):
        register_random_adapter(tiny_model_dir, work / "models", work, seed)
    return work / "models"


@pytest.fixture
def system(tiny_config: Config, two_versions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LearningSystem:
    import shutil

    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "secrets.toml"))  # this test's own users, if it adds any
    shutil.copytree(two_versions, tiny_config.data_path / "models")
    return LearningSystem(tiny_config)


def test_contestants_are_the_served_and_previous_versions_or_every_version(system: LearningSystem) -> None:
    assert system.served_version() == "v0002" and system.registry.previous_id() == "v0001"
    assert system.arena_contestants() == ["deepseek@v0002", "deepseek@v0001"]
    assert system.arena_contestants(every_version=True) == ["deepseek@v0002", "deepseek@v0001", "deepseek@base"]
    assert system.arena_label("deepseek@v0002") == "DeepSeek-RL v0002 (served)"
    assert system.arena_label("deepseek@v0001") == "DeepSeek-RL v0001"
    system.arena_rng = random.Random(3)
    assert set(system.arena_pair()) == {"deepseek@v0002", "deepseek@v0001"}
    # both orders come up: which side is A is drawn too
    orders = {pick_pair(["x", "y"], random.Random(seed)) for seed in range(20)}
    assert orders == {("x", "y"), ("y", "x")}
    with pytest.raises(ArenaError, match="needs two models"):
        pick_pair(["deepseek@base"], random.Random(0))


def test_a_named_version_answers_and_both_answers_are_logged(system: LearningSystem) -> None:
    round_ = system.arena_answer("Name a colour.", ("deepseek@v0001", "deepseek@v0002"), user="local",
                                 session_id="s1")
    assert (round_.a.model, round_.a.model_version, round_.b.model_version) == ("deepseek", "v0001", "v0002")
    assert round_.a.route_reason == "chosen by user: deepseek@v0001"
    assert round_.a.text != round_.b.text  # two different adapters, two different answers
    rows = system.store.records("interactions")
    assert [(r["id"], r["model"], r["model_version"], r["prompt"], r["purpose"], r["session_id"]) for r in rows] == [
        (round_.a.interaction_id, "deepseek", "v0001", "Name a colour.", "chat", "s1"),
        (round_.b.interaction_id, "deepseek", "v0002", "Name a colour.", "chat", "s1"),
    ]
    # the served version is still the one plain chat gets
    assert system.model_manager.respond("Name a colour.").model_version == "v0002"
    assert system.model_manager.respond("Name a colour.", model="deepseek@v0001").text == round_.a.text


def test_a_version_that_cannot_answer_is_refused_before_any_call(system: LearningSystem) -> None:
    with pytest.raises(RoutingError, match="version v0009 cannot answer — No model version 'v0009'"):
        system.model_manager.respond("Hi?", model="deepseek@v0009")
    with pytest.raises(RoutingError, match="No version after '@'"):
        system.model_manager.respond("Hi?", model="deepseek@")
    with pytest.raises(ArenaError, match="two different contestants"):
        system.arena_answer("Hi?", ("deepseek@v0001", "deepseek@v0001"))
    assert system.store.records("interactions") == []


def test_the_vote_verb_writes_exactly_the_expected_record(system: LearningSystem) -> None:
    round_ = system.arena_answer("Name a colour.", ("deepseek@v0002", "deepseek@v0001"))
    vote = system.vote(round_.a.interaction_id, round_.b.interaction_id, "b", "B names one.", user="local")
    [row] = system.store.records("votes")
    assert {k: row[k] for k in ("id", "user", "prompt", "interaction_a", "interaction_b", "model_a", "model_b",
                                "version_a", "version_b", "choice", "note")} == {
        "id": vote.id, "user": "local", "prompt": "Name a colour.", "interaction_a": round_.a.interaction_id,
        "interaction_b": round_.b.interaction_id, "model_a": "deepseek", "model_b": "deepseek",
        "version_a": "v0002", "version_b": "v0001", "choice": "b", "note": "B names one."}
    assert len(system.votes()) == 1


def test_bad_votes_are_refused_and_write_nothing(system: LearningSystem) -> None:
    round_ = system.arena_answer("Name a colour.", ("deepseek@v0002", "deepseek@v0001"))
    a, b = round_.a.interaction_id, round_.b.interaction_id
    other = system.model_manager.respond("Name a fruit.").interaction_id
    failed = system.store.append_interaction(model="deepseek", prompt="Name a colour.", response="", error="boom").id
    cases = [
        ((a, b, "c"), "choice"),
        ((a, b, ""), "choice"),
        ((a, a, "a"), "the same"),
        ((a, "nope", "a"), "no interaction with id 'nope'"),
        (("", b, "a"), "no interaction with id ''"),
        ((a, other, "a"), "different prompts"),
        ((a, failed, "tie"), "has no answer to judge"),
    ]
    for (ia, ib, choice), message in cases:
        with pytest.raises(RecordError, match=message):
            system.vote(ia, ib, choice, user="local")
    assert system.store.records("votes") == []
    assert not (system.config.data_path / "votes").exists() or not any((system.config.data_path / "votes").glob("*.jsonl"))


def test_voting_needs_the_analyst_role(system: LearningSystem) -> None:
    secrets = Path(os.environ["DMAC_SECRETS"])
    add_user("ann", "password-ann-1", secrets)  # the first user: admin
    add_user("viv", "password-viv-1", secrets, Role.VIEWER)
    add_user("bo", "password-bo-12", secrets, Role.ANALYST)
    round_ = system.arena_answer("Name a colour.", ("deepseek@v0002", "deepseek@v0001"), user="bo")
    with pytest.raises(PermissionDenied, match="vote needs analyst or above"):
        system.vote(round_.a.interaction_id, round_.b.interaction_id, "a", user="viv")
    with pytest.raises(PermissionDenied):
        system.arena_answer("Name a colour.", ("deepseek@v0002", "deepseek@v0001"), user="viv")
    assert system.store.records("votes") == []
    system.vote(round_.a.interaction_id, round_.b.interaction_id, "tie", user="bo")
    assert [r["user"] for r in system.store.records("votes")] == ["bo"]


def test_an_api_model_is_a_contestant_and_its_answer_counts_against_its_cap(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dmac_core.config import load_config
    from tests.conftest import tiny_config_dict, write_config
    from tests.fake_servers import FakeServer, Reply

    monkeypatch.setenv("TEST_DEEPSEEK_KEY", "k")
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "absent.toml"))
    with FakeServer("openai") as server:
        server.enqueue(Reply(text="Blue.", tokens_in=9, tokens_out=2))
        data = tiny_config_dict(tmp_path / "data", tiny_model_dir)
        data["models"]["deepseek_api"] = {"kind": "openai_compat", "base_url": server.openai_base_url,
                                          "api_key_env": "TEST_DEEPSEEK_KEY", "max_retries": 0}
        data["routing"]["caps"] = {"deepseek_api": {"requests_per_day": 1}}
        system = LearningSystem(load_config(write_config(tmp_path / "config.yaml", data)))
        assert system.arena_contestants() == ["deepseek@base", "deepseek_api"]
        round_ = system.arena_answer("Name a colour.", ("deepseek_api", "deepseek@base"))
        assert (round_.a.text, round_.a.model, round_.b.model_version) == ("Blue.", "deepseek_api", "base")
        assert len(server.requests) == 1
        usage = {s.name: s.requests_today for s in system.model_status()}
        assert usage == {"deepseek": 1, "deepseek_api": 1}
        # the cap is spent: the API model is no contestant now, and asking it is refused
        assert system.arena_contestants() == ["deepseek@base"]
        with pytest.raises(RoutingError, match="1/1 requests today"):
            system.arena_answer("Name a colour.", ("deepseek_api", "deepseek@base"))
        vote = system.vote(round_.a.interaction_id, round_.b.interaction_id, "a")
        assert (vote.model_a, vote.version_a, vote.model_b, vote.version_b) == ("deepseek_api", None, "deepseek", "base")
