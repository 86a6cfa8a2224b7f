"""The promotion gate's checks and decision, and the shipped general-knowledge suite.

The checks are pure functions of two versions' evaluation results, tested here on hand-made
results; the whole gate on real answers of the real model is in tests/test_gate_real_model.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from dmac_core.config import DEFAULT_CONFIG_PATH, DEFAULT_REPLAY_PROMPTS, Config, load_config
from dmac_core.evaluation.metrics import key_term_recall
from dmac_core.evaluation.splits import normalize_prompt
from dmac_core.training.dataset import TrainingData
from dmac_core.training.gate import (
    FAILED,
    NO_EVIDENCE,
    OFF,
    PASSED,
    PromotionGate,
    SuiteFileError,
    answer_is_right,
    check_general,
    check_overfitting,
    check_rated,
    decide,
    load_general_suite,
    rated_items,
)


def result(outputs: list[str], references: list[str], loss: float | None = 1.0) -> dict[str, Any]:
    """An evaluate_model-shaped result for hand-written answers."""
    rows = [{"prompt": f"q{k}", "reference": ref, "output": out, "key_term_recall": key_term_recall(out, ref),
             "rougeL": 1.0 if out == ref else 0.0} for k, (out, ref) in enumerate(zip(outputs, references))]
    return {"n": len(rows), "per_item": rows, "eval_id": "e",
            "metrics": {"rougeL": sum(r["rougeL"] for r in rows) / max(len(rows), 1), "loss": loss,
                        "n_with_reference": len(rows)}}


def test_the_shipped_general_suite_is_broad_right_and_disjoint_from_replay() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    suite = load_general_suite(config.general_suite_path())
    assert len(suite) >= 30
    prompts = [normalize_prompt(i["prompt"]) for i in suite]
    assert len(set(prompts)) == len(prompts), "a question twice"
    replay = {normalize_prompt(p) for p in config.learner.replay.prompts} | {normalize_prompt(p) for p in DEFAULT_REPLAY_PROMPTS}
    assert not replay & set(prompts), "retention must be measured outside what replay trains"
    for item in suite:  # each reference is itself a right answer by its own accepted words
        assert answer_is_right(item["reference"], item["accept"]), item


@pytest.mark.parametrize(("text", "error"), [
    ("- prompt: Q?\n  reference: A.\n", "question 1: 'accept' must list"),
    ("- prompt: ''\n  accept: [x]\n  reference: x\n", "question 1: 'prompt' must be a non-empty string"),
    ("- prompt: Q?\n  accept: [x]\n  reference: x\n- prompt: R?\n  accept: [y]\n  answer: y\n", "question 2"),
    ("prompt: Q?\n", "expected a list of questions"),
    ("- [unclosed\n", "not valid YAML"),
    ("[]\n", "has no questions"),
])
def test_a_broken_suite_file_is_refused_with_where_and_what(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteFileError, match=error) as caught:
        load_general_suite(path)
    assert str(path) in str(caught.value)


def test_a_missing_suite_file_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(SuiteFileError, match="gate.general_suite"):
        load_general_suite(tmp_path / "absent.yaml")


def test_answers_are_right_by_whole_words_case_insensitive() -> None:
    assert answer_is_right("The capital of France is Paris.", ["paris"])
    assert answer_is_right("Its symbol is Au.", ["au"]) and not answer_is_right("It is in Australia.", ["au"])
    assert answer_is_right("It is CO2, carbon dioxide", ["carbon dioxide", "co2"])
    assert answer_is_right("It has 8 legs", ["eight", "8"]) and not answer_is_right("It has 18 legs", ["eight", "8"])
    assert not answer_is_right("", ["paris"])


def test_rated_check_needs_a_better_match_and_says_how_many_items_moved() -> None:
    refs = ["The capital of Veloria is Marlenport.", "Mount Kelvar is 7412 metres tall."]
    before = result(["I do not know.", "Mount Kelvar is tall."], refs)
    after = result(["The capital of Veloria is Marlenport.", "Mount Kelvar is tall."], refs)
    check = check_rated(before, after)
    assert check["status"] == PASSED and check["better"] == 1 and check["worse"] == 0
    assert check["after"] > check["before"] and "2 rated answers: 1 better, 0 worse" in check["summary"]
    assert check["items"][0]["after"] == refs[0] and check["items"][0]["before"] == "I do not know."
    same = check_rated(before, before)
    assert same["status"] == FAILED and same["summary"].startswith("not improved")
    worse = check_rated(after, before)
    assert worse["status"] == FAILED and worse["worse"] == 1
    assert check_rated(None, None)["status"] == NO_EVIDENCE


def test_general_check_allows_max_forgotten_and_names_each_lost_answer() -> None:
    items = [{"prompt": p, "accept": [a], "reference": f"It is {a}."} for p, a in
             [("Capital of France?", "paris"), ("Capital of Japan?", "tokyo"), ("Who wrote Hamlet?", "shakespeare"),
              ("Largest ocean?", "pacific")]]
    refs = [i["reference"] for i in items]
    before = result(["Paris.", "Tokyo.", "Shakespeare.", "The Atlantic."], refs)  # knows 3 of 4
    one_lost = result(["Paris.", "Kyoto.", "Shakespeare.", "The Pacific."], refs)
    check = check_general(items, before, one_lost, max_forgotten=1)
    assert check["status"] == PASSED and check["known_before"] == 3 and check["kept"] == 2
    assert [x["prompt"] for x in check["lost"]] == ["Capital of Japan?"] and check["lost"][0]["after"] == "Kyoto."
    assert [x["prompt"] for x in check["gained"]] == ["Largest ocean?"]
    two_lost = result(["Lyon.", "Kyoto.", "Shakespeare.", "The Atlantic."], refs)
    refused = check_general(items, before, two_lost, max_forgotten=1)
    assert refused["status"] == FAILED and len(refused["lost"]) == 2 and "2 lost, at most 1 allowed" in refused["summary"]
    knows_nothing = result(["?"] * 4, refs)
    assert check_general(items, knows_nothing, one_lost, 1)["status"] == NO_EVIDENCE


def test_overfitting_check_compares_losses_on_held_out_references() -> None:
    refs = ["a b c"]
    assert check_overfitting(result(["x"], refs, 2.0), result(["x"], refs, 2.2), 0.15)["status"] == PASSED
    above = check_overfitting(result(["x"], refs, 2.0), result(["x"], refs, 2.5), 0.15)
    assert above["status"] == FAILED and above["limit"] == pytest.approx(2.3) and "above the limit" in above["summary"]
    assert check_overfitting(result(["x"], refs, None), result(["x"], refs, 1.0), 0.15)["status"] == NO_EVIDENCE


def test_decision_needs_every_deciding_check_to_pass() -> None:
    passed = {"title": "A", "status": PASSED, "summary": "fine"}
    assert decide([passed, {"title": "B", "status": OFF, "summary": "off"}]) == (True, "A: fine")
    ok, reason = decide([passed, {"title": "B", "status": NO_EVIDENCE, "summary": "nothing to measure"}])
    assert not ok and "B: no evidence — nothing to measure" in reason
    assert decide([{"title": "B", "status": OFF, "summary": "off"}])[0] is False  # nothing measured: no promotion


def test_gate_asks_champion_then_candidate_on_the_rated_items_and_the_suite(
        make_config: Callable[..., Config], tmp_path: Path) -> None:
    suite = tmp_path / "general.yaml"
    suite.write_text("- prompt: What is the capital of France?\n  accept: [paris]\n"
                     "  reference: The capital of France is Paris.\n", encoding="utf-8")
    config = make_config(gate={"general_suite": str(suite), "max_rated_items": 2})
    asked: list[tuple[str, str, bool, int]] = []
    answers = {"v0001": "The capital of France is Paris. Marlenport. Kelvar 7412.", "base": "Paris, I think."}

    def evaluate(items: list[dict[str, Any]], model: str, suite_name: str, reuse: bool) -> dict[str, Any]:
        version = model.partition("@")[2]
        asked.append((version, suite_name, reuse, len(items)))
        return result([answers[version]] * len(items), [i["reference"] for i in items],
                      loss=2.0 if version == "base" else 1.9)

    data = TrainingData(sft_train=[
        {"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
        for q, a in [("Old?", "Old answer."), ("Veloria?", "Marlenport."), ("Kelvar?", "Kelvar is 7412.")]
    ] + [{"prompt": [{"role": "user", "content": "Who wrote Hamlet?"}],
          "completion": [{"role": "assistant", "content": "Shakespeare."}], "replay": True}])
    gate = PromotionGate(config, evaluate).run("v0001", "base", data)
    # the served version's evidence may be reused, the candidate's never; the newest 2 rated items, no replay
    assert asked == [("base", "rated", True, 2), ("v0001", "rated", False, 2),
                     ("base", "general", True, 1), ("v0001", "general", False, 1)]
    assert gate["passed"] and [c["status"] for c in gate["checks"]] == [PASSED, PASSED, PASSED]
    assert [i["prompt"] for i in rated_items(data, 2, 256)] == ["Veloria?", "Kelvar?"]


def test_gate_with_the_suite_switched_off_says_so(make_config: Callable[..., Config]) -> None:
    config = make_config()  # tests' default: gate.general_suite null
    gate = PromotionGate(config, lambda *a: pytest.fail("nothing to measure")).run("v0001", "base", TrainingData())
    assert not gate["passed"]
    assert [c["status"] for c in gate["checks"]] == [NO_EVIDENCE, OFF, OFF]
    assert "switched off (models.deepseek.gate.general_suite: null)" in gate["checks"][1]["summary"]
    assert "no rated answers" in gate["reason"]
