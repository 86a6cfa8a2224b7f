"""Issue 5's learning test, on the real bundled model with the SHIPPED training defaults.

About 30 invented facts (tests/learning_quality_fixtures.py) are rated 5 in a fresh store and
one run goes through the real job path (dataset builder → TRL trainer → registry → gate).
Greedy answers (48 new tokens, batched) before and after must show that the facts were
learned, not only a style:

- key-term recall ≥ 0.5 on the trained facts (ROUGE-L alone flatters: answering in one short
  sentence that echoes the question gains ≈ +0.28 with no fact right — STACK-NOTES), and the
  recall of the terms that are *not* in the question (the invented fact itself) rises too;
- ROUGE-L rises by ≥ 0.2;
- the same questions asked in other words improve (ROUGE-L and key-term recall);
- unrelated questions the base model answers correctly keep their answers (the shipped
  ``replay`` trains the base model's own answers to *other* general questions along with the
  facts; without it one of the three drifted — bench/RESULTS.md).

The held-out facts (the stable 10 % validation split) cannot be learned; they are reported
(run with ``-s``), not asserted. For the same reason the promotion gate (held-out loss vs the
base model) may refuse the new version: the harness then promotes it by hand, because what
is measured here is what the trained version says (the gate decision is reported).

Two variants, one training run each shared by three tests (learned / paraphrases /
general knowledge), parametrized ``30_facts`` (the issue's full test) and ``12_facts`` (12
facts, each rated in two phrasings, tested on a third); both are ``slow`` on an fp32-only CPU:
run them with ``pytest -m slow tests/test_learning_quality.py``. Both use the shipped
``config/config.yaml`` unchanged except for the data directory and the base model path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.learning_quality_fixtures import FACTS, GENERAL, run_experiment, short_facts

pytestmark = pytest.mark.integration

def _report(name: str, result: dict[str, Any]) -> None:
    b, a = result["before"], result["after"]
    lines = [f"\n== {name}: {result['steps']} steps, train {result['train_s']} s, job {result['job_s']} s, "
             f"promoted by gate: {result['promoted_by_gate']}"]
    for part in ("trained", "trained_paraphrase", "heldout", "heldout_paraphrase"):
        if not a[part]["n"]:
            continue
        lines.append(
            f"{part:20s} n={a[part]['n']:2d} ROUGE-L {b[part]['rougeL']:.2f} → {a[part]['rougeL']:.2f}  "
            f"key terms {b[part]['key_term_recall']:.2f} → {a[part]['key_term_recall']:.2f}  "
            f"novel terms {b[part]['novel_term_recall'] or 0:.2f} → {a[part]['novel_term_recall'] or 0:.2f}"
        )
    lines.append(f"general: before {b['general_ok']} after {a['general_ok']}: {result['answers_after']['general']}")
    served = result["after_served"]
    lines.append(f"served ({result['answers_after_served']['runtime'][0]}): trained ROUGE-L "
                 f"{served['trained']['rougeL']:.2f}, key terms {served['trained']['key_term_recall']:.2f}, "
                 f"novel terms {served['trained']['novel_term_recall'] or 0:.2f}, general {served['general_ok']}")
    print("\n".join(lines))


def _check_learned(result: dict[str, Any], after: str = "after") -> None:
    b, a = result["before"], result[after]
    trained = a["trained"]
    assert trained["n"] >= 0.75 * (trained["n"] + a["heldout"]["n"])  # the split held out only a few
    # The facts came out, not only the style.
    assert trained["key_term_recall"] >= 0.5, trained
    assert trained["novel_term_recall"] >= 0.4 and b["trained"]["novel_term_recall"] <= 0.1, (b["trained"], trained)
    assert trained["rougeL"] - b["trained"]["rougeL"] >= 0.2, (b["trained"]["rougeL"], trained["rougeL"])


def _check_paraphrases(result: dict[str, Any]) -> None:
    before, after = result["before"]["trained_paraphrase"], result["after"]["trained_paraphrase"]
    assert after["rougeL"] - before["rougeL"] >= 0.1, (before, after)
    assert after["key_term_recall"] - before["key_term_recall"] >= 0.1, (before, after)


def _check_general(result: dict[str, Any], after: str = "after") -> None:
    b, a = result["before"], result[after]
    assert all(b["general_ok"]), ("the base model should answer these", result["answers_before"]["general"])
    assert all(a["general_ok"]), list(zip([g[0] for g in GENERAL], result[f"answers_{after}"]["general"]))


def _run(tmp_path: Path, real_model_dir: Path, name: str, facts: list, phrasings: int) -> dict[str, Any]:
    result = run_experiment(tmp_path, real_model_dir, facts, phrasings)
    (tmp_path / "learning-quality.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    _report(name, result)
    return result


# One training run per variant, shared by its three tests (module scope: the run is the cost).
# "30_facts" is the test (30 facts, one rated phrasing each); "12_facts" rates 12 facts
# in two phrasings each (24 examples) and tests them on a third. Both are slow (4–8 min of fp32
# training and generation here): the default run keeps the two-step real-model test in
# test_training_integration.py. Select one with ``-k 30_facts`` or ``-k 12_facts``.
VARIANTS = {
    "30_facts": ("30 facts × 1 phrasing", lambda: FACTS, 1),
    "12_facts": ("12 facts × 2 phrasings", lambda: short_facts(12), 2),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def learning_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 real_model_dir: Path) -> dict[str, Any]:
    name, facts, phrasings = VARIANTS[request.param]
    return _run(tmp_path_factory.mktemp(f"learn{request.param}"), real_model_dir, name, facts(), phrasings)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_facts_are_learned(learning_run: dict[str, Any]) -> None:
    _check_learned(learning_run)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_facts_asked_in_other_words_improve(learning_run: dict[str, Any]) -> None:
    _check_paraphrases(learning_run)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_facts_keep_general_knowledge(learning_run: dict[str, Any]) -> None:
    _check_general(learning_run)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_what_was_learned_comes_through_the_serving_runtime(learning_run: dict[str, Any]) -> None:
    """Chat answers come from the served GGUF (llama.cpp, 8-bit): the learned facts and the
    general knowledge must survive that, not only the fp32 model evaluation scores."""
    _check_learned(learning_run, after="after_served")
    _check_general(learning_run, after="after_served")
