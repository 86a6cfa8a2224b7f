""""Train now" teaches what analysts rated — on the real bundled model, with the SHIPPED config.

Invented facts (tests/learning_quality_fixtures.py: the base model cannot know any of them)
are rated 5 in a fresh data directory; one run goes through the real job (dataset builder →
TRL trainer → registry → promotion gate). Nothing is promoted by hand: if the gate refuses the
version, the base model is what answers afterwards and the assertions fail.

What is asserted is what an analyst sees in chat — answers through the serving runtime
(llama.cpp over the served GGUF copy, chat's decoding), one question at a time:

- the gate promoted the new version, and it is what chat serves;
- the rated questions are answered with their facts: key-term recall ≥ 0.9 (ROUGE-L alone
  flatters: answering in one short sentence that echoes the question gains ≈ +0.28 with no
  fact right), and the terms that are *not* in the question (the invented fact) came out;
- the same questions asked in other words: key-term recall ≥ 0.75;
- general knowledge kept: of the general-knowledge suite's questions the base model answered
  right, at most one is lost (the gate's own evidence, which names each one) — and the gate's
  answers are exactly the answers chat gives, so its verdict is about what is served.

``12_facts`` is the workbench's story (a dozen facts, each rated by three analysts) and runs
in the default ``make test``; ``30_facts`` (30 facts, one rating each) is ``slow``:
``pytest -m slow tests/test_learning_quality.py``. Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import with_base_evidence
from tests.learning_quality_fixtures import FACTS, run_experiment

pytestmark = pytest.mark.integration


def _report(name: str, result: dict[str, Any]) -> None:
    b, a = result["before"], result["after"]
    lines = [f"\n== {name}: {result['steps']} steps, job {result['job_s']} s {result['timings']}, "
             f"promoted by the gate: {result['promoted_by_gate']} — {result['message']}"]
    for part in ("trained", "paraphrase"):
        lines.append(
            f"{part:10s} n={a[part]['n']:2d} ROUGE-L {b[part]['rougeL']:.2f} → {a[part]['rougeL']:.2f}  "
            f"key terms {b[part]['key_term_recall']:.2f} → {a[part]['key_term_recall']:.2f}  "
            f"novel terms {b[part]['novel_term_recall'] or 0:.2f} → {a[part]['novel_term_recall'] or 0:.2f}"
        )
    general = result["general"] or {}
    lines.append(f"general: {general.get('summary')}; lost: {[x['prompt'] for x in general.get('lost', [])]}")
    print("\n".join(lines))


def _learning_run(tmp_path: Path, real_model_dir: Path, evidence: Path, name: str, facts: list,
                  analysts: int) -> dict[str, Any]:
    with_base_evidence(evidence, tmp_path / "data")  # the workbench's setup measured the base already
    result = run_experiment(tmp_path, real_model_dir, facts, analysts=analysts)
    (tmp_path / "learning-quality.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    _report(name, result)
    return result


# One run per variant, shared by its tests (module scope: the run is the cost).
VARIANTS = {
    "12_facts": ("12 facts, each rated 5 by three analysts", lambda: FACTS[:12], 3),
    "30_facts": ("30 facts, each rated 5 once", lambda: FACTS, 1),
}


@pytest.fixture(scope="module", params=[pytest.param("12_facts"), pytest.param("30_facts", marks=pytest.mark.slow)])
def learning_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 real_model_dir: Path, served_base_evidence: Path) -> dict[str, Any]:
    name, facts, analysts = VARIANTS[request.param]
    return _learning_run(tmp_path_factory.mktemp(f"learn{request.param}"), real_model_dir, served_base_evidence,
                         name, facts(), analysts)


@pytest.mark.timeout(1800)
def test_the_gate_promotes_the_version_that_learned_and_chat_serves_it(learning_run: dict[str, Any]) -> None:
    assert learning_run["promoted_by_gate"], learning_run["message"]
    assert learning_run["served_after"] == learning_run["candidate"]
    assert [c["status"] for c in learning_run["gate"]["checks"]] == ["passed", "passed", "passed"]


@pytest.mark.timeout(1800)
def test_chat_answers_the_rated_questions_with_their_facts(learning_run: dict[str, Any]) -> None:
    before, after = learning_run["before"]["trained"], learning_run["after"]["trained"]
    assert after["key_term_recall"] >= 0.9, (after, learning_run["answers_after"]["questions"])
    assert before["novel_term_recall"] <= 0.1 and after["novel_term_recall"] >= 0.8, (before, after)


@pytest.mark.timeout(1800)
def test_chat_answers_the_same_questions_reworded(learning_run: dict[str, Any]) -> None:
    after = learning_run["after"]["paraphrase"]
    assert after["key_term_recall"] >= 0.75, (after, learning_run["answers_after"]["paraphrases"])


@pytest.mark.timeout(1800)
def test_general_knowledge_is_kept_and_measured_on_what_chat_serves(learning_run: dict[str, Any]) -> None:
    general = learning_run["general"]
    assert general is not None and general["known_before"] >= 30, general
    assert len(general["lost"]) <= 1, general["lost"]
    # the gate asked through the serving runtime: its answers are chat's answers, word for word
    assert learning_run["general_gate_answers"] == learning_run["general_chat_answers"]
