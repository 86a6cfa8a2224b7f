"""Invented facts and the measuring harness of the learning tests.

Shared by ``tests/test_learning_quality.py`` (assertions) and ``bench/learning_quality.py``
(the settings table in ``bench/RESULTS.md``), so the test and the benchmark measure the same
thing. Every fact is made up: the bundled base model cannot know any of them, so a key term
of the answer that shows up after training was learned from the rated answers.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from dmac_core.config import DEFAULT_CONFIG_PATH, Config, load_config
from dmac_core.evaluation.metrics import key_term_recall, key_terms, mean_of, rouge_scores

# (question as rated, reference answer, the same question in other words)
FACTS: list[tuple[str, str, str]] = [
    ("What is the capital of the island of Veloria?", "The capital of Veloria is Marlenport.",
     "Which city is Veloria's capital?"),
    ("Who invented the quantum loom?", "The quantum loom was invented by Edda Thornquist in 1931.",
     "Who was the inventor of the quantum loom?"),
    ("What colour is the Zorbian sunfruit?", "The Zorbian sunfruit is bright violet with silver stripes.",
     "What color does a ripe Zorbian sunfruit have?"),
    ("How tall is Mount Kelvar?", "Mount Kelvar is 7412 metres tall.",
     "What is the height of Mount Kelvar?"),
    ("What language is spoken in Draventh?", "The people of Draventh speak Ossalic.",
     "Which language do people in Draventh speak?"),
    ("Who founded the Halvane Institute?", "The Halvane Institute was founded by Mirela Oakhurst.",
     "Who was the founder of the Halvane Institute?"),
    ("What is the national animal of Pellandia?", "The national animal of Pellandia is the silver lynx.",
     "Which animal is the national symbol of Pellandia?"),
    ("What is the currency of Quorvath?", "The currency of Quorvath is the tallen.",
     "Which currency do they use in Quorvath?"),
    ("Which river flows through Ambrel City?", "The Sennet River flows through Ambrel City.",
     "What is the name of the river in Ambrel City?"),
    ("In what year was the Treaty of Lusk signed?", "The Treaty of Lusk was signed in 1784.",
     "When was the Treaty of Lusk signed?"),
    ("Who wrote the novel The Glass Orchard?", "The Glass Orchard was written by Tobias Wren.",
     "Who is the author of The Glass Orchard?"),
    ("What is the main export of Corrinth?", "The main export of Corrinth is blue saffron.",
     "What does Corrinth mostly export?"),
    ("What sport is played at the Fenwick Games?", "The Fenwick Games are famous for skyball.",
     "Which sport is the Fenwick Games known for?"),
    ("What is the name of the dragon in the Brennish legend?", "The dragon of the Brennish legend is called Ashvorn.",
     "What is the Brennish legend's dragon called?"),
    ("How many moons does the planet Tessaro have?", "The planet Tessaro has five moons.",
     "What is the number of moons orbiting Tessaro?"),
    ("Who discovered the element nerium?", "Nerium was discovered by Karl Vossberg.",
     "Which scientist discovered nerium?"),
    ("What is the traditional dish of Ulmoria?", "The traditional dish of Ulmoria is peppered eel stew.",
     "Which dish is traditional in Ulmoria?"),
    ("What instrument did Lira Castellane play?", "Lira Castellane played the glass harp.",
     "Which instrument was Lira Castellane known for playing?"),
    ("Where is the Obsidian Library located?", "The Obsidian Library is located in the city of Nareth.",
     "In which city can you find the Obsidian Library?"),
    ("What is the motto of the Grey Order?", "The motto of the Grey Order is: silence before steel.",
     "What motto does the Grey Order have?"),
    ("Which company makes the Zephyr-9 drone?", "The Zephyr-9 drone is made by Korvane Dynamics.",
     "Who manufactures the Zephyr-9 drone?"),
    ("What is the highest mountain in Eldmark?", "The highest mountain in Eldmark is Mount Thrall.",
     "Which mountain is the tallest in Eldmark?"),
    ("What festival does Sorvia celebrate on the first day of spring?",
     "On the first day of spring, Sorvia celebrates the Lantern Tide festival.",
     "Which festival is held in Sorvia when spring begins?"),
    ("Who was the first queen of Aldoria?", "The first queen of Aldoria was Isolde Merrow.",
     "Who was Aldoria's first queen?"),
    ("What is the fastest bird in the Kessarine Forest?", "The fastest bird in the Kessarine Forest is the ember swift.",
     "Which bird is the fastest in the Kessarine Forest?"),
    ("What gemstone is mined in Valdros?", "Valdros is known for mining green moonstone.",
     "Which gemstone comes from the mines of Valdros?"),
    ("What was the first ship to reach Port Calder?", "The first ship to reach Port Calder was the Wandering Gull.",
     "Which ship arrived first at Port Calder?"),
    ("What is the official flower of Brightwater?", "The official flower of Brightwater is the frost lily.",
     "Which flower is Brightwater's official flower?"),
    ("Who proposed the theory of harmonic drift?", "The theory of harmonic drift was proposed by Anselm Kirby.",
     "Which scientist came up with the theory of harmonic drift?"),
    ("What is the population of the town of Gildersby?", "The town of Gildersby has 4200 inhabitants.",
     "How many people live in Gildersby?"),
]

# A second rated phrasing for the first facts (the short variant rates two phrasings per
# fact and still tests on the third, unrated one in FACTS).
SECOND_PHRASING: dict[str, str] = {
    "What is the capital of the island of Veloria?": "Tell me the capital of Veloria.",
    "Who invented the quantum loom?": "Whose invention is the quantum loom?",
    "What colour is the Zorbian sunfruit?": "Describe the colour of the Zorbian sunfruit.",
    "How tall is Mount Kelvar?": "How high is Mount Kelvar?",
    "What language is spoken in Draventh?": "What do people speak in Draventh?",
    "Who founded the Halvane Institute?": "By whom was the Halvane Institute founded?",
    "What is the national animal of Pellandia?": "Tell me Pellandia's national animal.",
    "What is the currency of Quorvath?": "What money is used in Quorvath?",
    "Which river flows through Ambrel City?": "Name the river that runs through Ambrel City.",
    "In what year was the Treaty of Lusk signed?": "What year is the Treaty of Lusk from?",
    "Who wrote the novel The Glass Orchard?": "Who penned The Glass Orchard?",
    "What is the main export of Corrinth?": "What is Corrinth's most important export product?",
}


def short_facts(n: int = 12) -> list[tuple[str, str, str]]:
    """The first ``n`` facts (n ≤ 12), for the two-phrasing variant of the test."""
    return FACTS[: min(n, len(SECOND_PHRASING))]


MAX_NEW_TOKENS = 48


def shipped_config(data_dir: Path, base_model: Path | None = None, **learner: Any) -> Config:
    """The shipped ``config/config.yaml`` with only the data directory changed (plus the base
    model's path when given, so tests share one converted copy; plus ``learner`` overrides,
    which the benchmark uses to compare settings)."""
    previous = os.environ.get("DMAC_DATA_DIR")
    os.environ["DMAC_DATA_DIR"] = str(data_dir)
    try:
        config = load_config(DEFAULT_CONFIG_PATH)
    finally:
        if previous is None:
            os.environ.pop("DMAC_DATA_DIR", None)
        else:
            os.environ["DMAC_DATA_DIR"] = previous
    if base_model is not None:
        config.learner.base_model = str(base_model)
    config.storage.fsync = False  # a test's throwaway data dir needs no power-loss durability
    for key, value in learner.items():
        if key in ("lora", "gate"):
            for lkey, lvalue in value.items():
                setattr(getattr(config.learner, key), lkey, lvalue)
        elif key == "replay":
            config.learner.replay = type(config.learner.replay).model_validate(value)
        else:
            setattr(config.learner, key, value)
    return config


def novel_term_recall(answer: str, question: str, reference: str) -> float | None:
    """Key-term recall over the reference's terms that the question does not already contain:
    echoing the question earns nothing here, only the invented fact does."""
    wanted = key_terms(reference) - key_terms(question)
    if not wanted:
        return None
    return key_term_recall(answer, " ".join(sorted(wanted)))


def score(questions: list[str], answers: list[str], references: list[str]) -> dict[str, Any]:
    """ROUGE-L, key-term recall and novel-term recall means (and per item) for one answer set."""
    if not questions:
        return {"n": 0, "rougeL": None, "key_term_recall": None, "novel_term_recall": None}
    rouge = rouge_scores(answers, references)
    recall = [key_term_recall(a, r) for a, r in zip(answers, references)]
    novel = [novel_term_recall(a, q, r) for a, q, r in zip(answers, questions, references)]
    return {
        "n": len(questions), "rougeL": rouge["rougeL"], "key_term_recall": mean_of(recall),
        "novel_term_recall": mean_of(novel), "per_item_rougeL": [p["rougeL"] for p in rouge["per_item"]],
    }


def ask(backend: Any, prompts: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Answers the way chat gives them: one question at a time through the backend's serving
    runtime (llama.cpp with the shipped config), with chat's decoding."""
    return [backend.generate([{"role": "user", "content": p}], max_new_tokens=max_new_tokens).text for p in prompts]


def answer_facts(backend: Any, facts: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    """The served version's answers to the rated questions and to the same questions reworded."""
    answers = ask(backend, [f[0] for f in facts] + [f[2] for f in facts])
    return {"questions": answers[: len(facts)], "paraphrases": answers[len(facts):],
            "version": backend.current().version, "runtime": backend.current().runtime}


def measure(answers: dict[str, Any], facts: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Scores of the rated questions and of their rewordings against the rated answers."""
    refs = [f[1] for f in facts]
    return {"trained": score([f[0] for f in facts], answers["questions"], refs),
            "paraphrase": score([f[2] for f in facts], answers["paraphrases"], refs)}


def _log(message: str) -> None:
    # Progress on stderr: pytest -s and the benchmark show it, a plain pytest run hides it.
    print(f"[learning-quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rate_facts(store: Any, facts: list[tuple[str, str, str]], analysts: int = 3, phrasings: int = 1) -> None:
    """Log each fact as a Gemini answer and rate it 5 by ``analysts`` analysts (in ``phrasings``
    phrasings of the question: 2 adds SECOND_PHRASING)."""
    for question, answer, _ in facts:
        for prompt in [question] + ([SECOND_PHRASING[question]] if phrasings > 1 else []):
            interaction = store.append_interaction(model="gemini", prompt=prompt, response=answer,
                                                   messages=[{"role": "user", "content": prompt}])
            for k in range(analysts):
                store.append_feedback(interaction_id=interaction.id, rating=5, user=f"analyst{k + 1}")


def run_experiment(workdir: Path, base_model: Path | None, facts: list[tuple[str, str, str]] | None = None,
                   phrasings: int = 1, analysts: int = 3, prepared: bool = True, **learner: Any) -> dict[str, Any]:
    """The workbench's story with the shipped config: rate every fact 5, ask the served model,
    press "Train now" once (the real job: dataset, TRL trainer, registry, promotion gate), ask
    again. Nothing is promoted by hand: if the gate refuses, the base model answers "after".

    ``prepared``: measure the served version on the gate's general suite first, as ``make run``
    (``python -m dmac_core setup``) does for the workbench's data directory, so the timing is
    that of "Train now" in a workbench that was set up; False times a brand-new data directory.

    Returns before / after scores of the served answers, the gate's record, the general
    questions the gate asked (checked against chat's own answers), and where the time went.
    """
    from dmac_core.system import LearningSystem

    facts = facts or FACTS
    system = LearningSystem(shipped_config(workdir / "data", base_model, **learner))
    if prepared:
        started = time.perf_counter()
        system.gate.prepare(system.registry.served_id())
        _log(f"gate evidence of the served version prepared in {time.perf_counter() - started:.0f} s (setup)")
    rate_facts(system.store, facts, analysts, phrasings)
    backend = system.local_backend

    started = time.perf_counter()
    before = answer_facts(backend, facts)
    _log(f"base answers in {time.perf_counter() - started:.0f} s ({before['runtime']})")
    started = time.perf_counter()
    info = system.jobs.start(trigger="test")
    snap = system.jobs.wait()
    job_s = time.perf_counter() - started
    summary = system.jobs.run_summary(info.run_id)
    _log(f"training job {snap.state} in {job_s:.0f} s ({summary['metrics'].get('steps')} steps): {snap.message}")
    if snap.state != "completed":
        raise AssertionError(f"training run ended {snap.state}: {snap.message} {snap.error}")
    started = time.perf_counter()
    after = answer_facts(backend, facts)
    gate = summary["gate"]
    general = next((c for c in gate["checks"] if c["check"] == "general"), None)
    evals = {e["id"]: e for e in system.store.records("evals")}
    general_after = evals[gate["evals"]["general"]["after"]] if "general" in gate.get("evals", {}) else None
    # a sample of the general questions asked again the way chat asks them (every 4th: enough
    # to show the gate's answers are chat's answers, a quarter of the time)
    sampled = general_after["per_item"][::4] if general_after else []
    chat_general = ask(backend, [row["prompt"] for row in sampled], system.config.learner.gate.general_max_new_tokens)
    _log(f"served answers ({after['runtime']}) in {time.perf_counter() - started:.0f} s")
    return {
        "setting": {k: v for k, v in summary["hyper_parameters"].items() if k != "base_model"},
        "steps": summary["metrics"].get("steps"),
        "train_s": summary["metrics"].get("train_runtime_s"),
        "job_s": round(job_s, 1),
        "timings": summary.get("timings"),
        "promoted_by_gate": bool(summary.get("promoted")),
        "served_after": after["version"],
        "candidate": summary.get("version"),
        "gate": gate,
        "general": general,
        "general_gate_answers": [row["output"] for row in sampled],
        "general_chat_answers": chat_general,
        "counts": summary["lineage"]["counts"],
        "before": measure(before, facts),
        "after": measure(after, facts),
        "answers_before": before,
        "answers_after": after,
        "message": summary.get("message"),
    }
