"""Textual feedback applied: Gemini (a fake server on 127.0.0.1, real SDK) rewrites commented
answers through the router; rewrites become chosen answers and SFT targets, cached by feedback id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmac_core.config import load_config
from dmac_core.system import LearningSystem
from dmac_core.training.job import TrainingJobManager
from dmac_core.training.teacher import apply_teacher, make_router_teacher
from tests.conftest import tiny_config_dict, write_config
from tests.fake_servers import FakeServer, Reply, fake_gemini  # noqa: F401

from .test_training import seed_ratings

WEAK_PROMPT = "What colour is the Zorblat?"
WEAK_ANSWER = "It has a colour."
COMMENT = "Too vague: say which colour exactly."
REWRITE = "The Zorblat is teal, a bright blue-green."


def system_with_teacher(tmp_path: Path, tiny_model_dir: Path, gemini: FakeServer, monkeypatch: pytest.MonkeyPatch,
                        caps: dict | None = None, **learner) -> tuple[LearningSystem, TrainingJobManager]:
    data = tiny_config_dict(tmp_path / "data", tiny_model_dir, **learner)
    data["models"]["gemini"] = {"kind": "gemini", "base_url": gemini.url, "api_key_env": "TEST_GEMINI_KEY",
                                "timeout_s": 5, "max_retries": 0}
    data["routing"]["order"] = ["deepseek", "gemini"]
    if caps:
        data["routing"]["caps"] = {"gemini": caps}
    monkeypatch.setenv("TEST_GEMINI_KEY", "test-key")
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "absent.toml"))
    system = LearningSystem(load_config(write_config(tmp_path / "config.yaml", data)))
    # What LearningSystem is meant to wire: the teacher goes through the system's router.
    jobs = TrainingJobManager(system.config, system.store, system.registry,
                              teacher=make_router_teacher(lambda: system.model_manager, "gemini"))
    return system, jobs


def rate_with_comments(system: LearningSystem) -> str:
    store = system.store
    seed_ratings(store)
    weak = store.append_interaction(model="deepseek", prompt=WEAK_PROMPT, response=WEAK_ANSWER,
                                    messages=[{"role": "user", "content": WEAK_PROMPT}])
    commented = store.append_feedback(interaction_id=weak.id, rating=2, feedback=COMMENT)
    # not sent to the teacher: praise on a 5, and a comment that came with the analyst's own correction
    store.append_feedback(prompt="Who founded Quenmoor?", response="Quenmoor was founded by Ada Pell.", rating=5,
                          feedback="Perfect.", user="bob")
    store.append_feedback(prompt="Where is Vell?", response="Nowhere.", rating=1, feedback="Wrong",
                          correction="Vell is in the north.")
    return commented.id


def test_teacher_rewrite_becomes_chosen_answer_and_is_cached(
    tmp_path: Path, tiny_model_dir: Path, fake_gemini: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, jobs = system_with_teacher(tmp_path, tiny_model_dir, fake_gemini, monkeypatch, epochs=1,
                                       validation_fraction=0.0)
    feedback_id = rate_with_comments(system)
    fake_gemini.enqueue(Reply(text=REWRITE))
    before = system.model_manager.usage.usage("gemini").requests_today  # the seeded answers were Gemini's
    info = jobs.start()
    snap = jobs.wait(timeout=300)
    assert snap.state == "completed", (snap.message, snap.error)

    # exactly one request reached Gemini, carrying the question, the answer and the comment
    calls = [r for r in fake_gemini.requests if "enerateContent" in r.path]
    assert len(calls) == 1
    sent = json.dumps(calls[0].body)
    assert WEAK_PROMPT in sent and WEAK_ANSWER in sent and COMMENT in sent
    # through the router: logged as an interaction by the teacher, so Gemini's caps count it
    teacher_rows = [r for r in system.store.records("interactions") if r["user"] == "teacher"]
    assert len(teacher_rows) == 1 and teacher_rows[0]["model"] == "gemini" and teacher_rows[0]["response"] == REWRITE
    assert teacher_rows[0]["purpose"] == "teacher"
    assert system.model_manager.usage.usage("gemini").requests_today == before + 1

    # the rewrite is the chosen answer against the original, an SFT target, marked in the lineage
    data = json.loads((info.run_dir / "data.json").read_text())
    pairs = [p for p in data["dpo"] if p["teacher_revised"]]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [(REWRITE, WEAK_ANSWER)]
    revised = [e for e in data["sft_train"] if e["teacher_revised"]]
    assert len(revised) == 1 and revised[0]["completion"][0]["content"] == REWRITE
    assert revised[0]["feedback"] == COMMENT and feedback_id in revised[0]["record_ids"]
    run = jobs.run_summary(info.run_id)
    assert run["lineage"]["teacher_revised_feedback_ids"] == [feedback_id]
    assert run["lineage"]["counts"]["teacher_revised"] == 1
    assert run["teacher"] == {"teacher": "gemini", "pending": 1, "rewritten": 1, "stopped": None}
    assert [e for e in jobs.run_events(info.run_id) if e["event"] == "teacher"][0]["rewritten"] == 1

    # cached by feedback id: asking again sends nothing
    rows = [json.loads(line) for line in (system.config.data_path / "teacher/rewrites.jsonl").read_text().splitlines() if line]
    assert [(r["feedback_id"], r["rewrite"]) for r in rows] == [(feedback_id, REWRITE)]
    again = apply_teacher(system.store, jobs.rewrites, jobs.teacher, "gemini")
    assert again["pending"] == 0 and len([r for r in fake_gemini.requests if "enerateContent" in r.path]) == 1
    # an edited comment is a new feedback record: it gets its own rewrite
    system.store.append_feedback(prompt=WEAK_PROMPT, response=WEAK_ANSWER, rating=2, feedback="Name the colour.")
    fake_gemini.enqueue(Reply(text="Bright teal."))
    assert apply_teacher(system.store, jobs.rewrites, jobs.teacher, "gemini")["rewritten"] == 1


def test_teacher_over_its_cap_sends_nothing_and_the_comment_stays(
    tmp_path: Path, tiny_model_dir: Path, fake_gemini: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, jobs = system_with_teacher(tmp_path, tiny_model_dir, fake_gemini, monkeypatch,
                                       caps={"requests_per_day": 0}, validation_fraction=0.0)
    rate_with_comments(system)
    outcome = apply_teacher(system.store, jobs.rewrites, jobs.teacher, "gemini")
    assert outcome["pending"] == 1 and outcome["rewritten"] == 0 and "cap" in outcome["stopped"]
    assert fake_gemini.requests == []
    assert not (system.config.data_path / "teacher/rewrites.jsonl").exists()  # asked again next run
    # without a teacher (teacher: null) nothing is asked either, and the text stays with the example
    from dmac_core.training.dataset import build_dataset

    data = build_dataset(system.store, system.config.learner, method="kto")
    weak = [x for x in data.kto if x["completion"][0]["content"] == WEAK_ANSWER]
    assert weak and not weak[0]["label"] and weak[0]["feedback"] == COMMENT and not any(x["teacher_revised"] for x in data.kto)
    no_teacher = TrainingJobManager(system.config.model_copy(deep=True), system.store, system.registry,
                                    teacher=jobs.teacher)
    no_teacher.config.learner.teacher = None
    assert not no_teacher._teacher_enabled(no_teacher.config)


def test_cancelling_a_run_stops_its_teacher_calls(
    tmp_path: Path, tiny_model_dir: Path, fake_gemini: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, jobs = system_with_teacher(tmp_path, tiny_model_dir, fake_gemini, monkeypatch, validation_fraction=0.0)
    rate_with_comments(system)
    for k in range(3):  # three more commented answers waiting for the teacher
        weak = system.store.append_interaction(model="deepseek", prompt=f"Where is Vell {k}?", response="Somewhere.")
        system.store.append_feedback(interaction_id=weak.id, rating=2, feedback="Say where.")
    cancel = {"now": False}

    def teacher(prompt: str, answer: str, feedback: str) -> str:
        cancel["now"] = True  # the analyst presses Cancel while the first rewrite is on its way
        return jobs.teacher(prompt, answer, feedback)

    fake_gemini.set_instant("A rewrite.")
    outcome = apply_teacher(system.store, jobs.rewrites, teacher, "gemini", cancelled=lambda: cancel["now"])
    assert outcome == {"teacher": "gemini", "pending": 4, "rewritten": 1, "stopped": "the run was cancelled"}
    assert len([r for r in fake_gemini.requests if "enerateContent" in r.path]) == 1  # no paid call after the cancel
