"""Invented facts and the measuring harness for the learning test of issue 5.

Shared by ``tests/test_learning_quality.py`` (assertions) and ``bench/learning_quality.py``
(the settings table in ``bench/RESULTS.md``), so the test and the benchmark measure the same
thing. Every fact is made up: the bundled base model cannot know any of them, so a key term
of the answer that shows up after training was learned from the rated answers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from dmac_core.config import DEFAULT_CONFIG_PATH, Config, load_config
from dmac_core.metrics import key_term_recall, key_terms, mean_of, rouge_scores

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


# Unrelated questions the base model answers correctly (checked on the base model first; it
# answers "the largest planet" with Neptune, so that one is not here):
# (question, words of which at least one must appear, case-insensitive).
GENERAL: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
]

MAX_NEW_TOKENS = 48

def shipped_config(data_dir: Path, base_model: Path, **learner: Any) -> Config:
    """The shipped ``config/config.yaml`` with only the data directory and base model path
    changed (plus ``learner`` overrides, which the benchmark uses to compare settings)."""
    previous = os.environ.get("DMAC_DATA_DIR")
    os.environ["DMAC_DATA_DIR"] = str(data_dir)
    try:
        config = load_config(DEFAULT_CONFIG_PATH)
    finally:
        if previous is None:
            os.environ.pop("DMAC_DATA_DIR", None)
        else:
            os.environ["DMAC_DATA_DIR"] = previous
    config.learner.base_model = str(base_model)
    config.storage.fsync = False  # a test's throwaway data dir needs no power-loss durability
    for key, value in learner.items():
        if key == "lora":
            for lkey, lvalue in value.items():
                setattr(config.learner.lora, lkey, lvalue)
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


def general_ok(answers: list[str]) -> list[bool]:
    """Per GENERAL question: does the answer still contain the right word?"""
    return [any(w in a.lower() for w in words) for a, (_, words) in zip(answers, GENERAL)]


def answer_all(backend: Any, facts: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    """Greedy, batched answers of the backend's served version to the questions, their
    paraphrases and the general-knowledge questions."""
    from dmac_core.evaluation_local import generate_batch

    loaded = backend.current()
    prompts = [f[0] for f in facts] + [f[2] for f in facts] + [g[0] for g in GENERAL]
    answers = generate_batch(loaded, prompts, MAX_NEW_TOKENS, batch_size=16)
    n = len(facts)
    return {"questions": answers[:n], "paraphrases": answers[n : 2 * n], "general": answers[2 * n :],
            "version": [loaded.version]}


def answer_served(backend: Any, facts: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    """The same questions answered the way chat answers them: one at a time through the
    backend's serving runtime (llama.cpp with the shipped config), greedy."""
    prompts = [f[0] for f in facts] + [f[2] for f in facts] + [g[0] for g in GENERAL]
    answers = [backend.generate([{"role": "user", "content": p}], max_new_tokens=MAX_NEW_TOKENS).text
               for p in prompts]
    n = len(facts)
    return {"questions": answers[:n], "paraphrases": answers[n : 2 * n], "general": answers[2 * n :],
            "version": [backend.current().version], "runtime": [backend.current().runtime]}


def measure(answers: dict[str, list[str]], facts: list[tuple[str, str, str]], held_out: set[str]) -> dict[str, Any]:
    """Scores split into trained / held-out facts (``held_out``: the questions the run's
    dataset put in its validation split)."""
    held = [q in held_out for q, _, _ in facts]
    out: dict[str, Any] = {"general_ok": general_ok(answers["general"])}
    for part, wanted in (("trained", False), ("heldout", True)):
        idx = [i for i, h in enumerate(held) if h == wanted]
        refs = [facts[i][1] for i in idx]
        out[part] = score([facts[i][0] for i in idx], [answers["questions"][i] for i in idx], refs)
        out[part + "_paraphrase"] = score([facts[i][2] for i in idx], [answers["paraphrases"][i] for i in idx], refs)
    return out


def _log(message: str) -> None:
    # Progress on stderr: pytest -s and the benchmark show it, a plain pytest run hides it.
    print(f"[learning-quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_experiment(workdir: Path, base_model: Path, facts: list[tuple[str, str, str]] | None = None,
                   phrasings: int = 1, **learner: Any) -> dict[str, Any]:
    """Rate every fact 5 in a fresh store, answer with the base model, run one training job
    (the real job path: dataset builder, TRL trainer, registry, gate), answer again with the
    new version; return before/after scores, timings and the answers."""
    from dmac_core.backends.local import LocalBackend
    from dmac_core.store import LearningStore
    from dmac_core.training.job import TrainingJobManager
    from dmac_core.training.registry import ModelRegistry

    facts = facts or FACTS
    config = shipped_config(workdir / "data", base_model, **learner)
    store = LearningStore(config.data_path, fsync=False)
    for question, answer, _ in facts:
        rated = [question] + ([SECOND_PHRASING[question]] if phrasings > 1 else [])
        for prompt in rated:
            messages = [{"role": "user", "content": prompt}]
            interaction = store.append_interaction(model="gemini", prompt=prompt, response=answer, messages=messages)
            store.append_feedback(interaction_id=interaction.id, rating=5)
    registry = ModelRegistry(config.data_path / "models")
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), registry)

    started = time.perf_counter()
    before = answer_all(backend, facts)
    generate_s = time.perf_counter() - started
    _log(f"base answers in {generate_s:.0f} s")
    jobs = TrainingJobManager(config, store, registry)
    started = time.perf_counter()
    info = jobs.start(trigger="test")
    snap = jobs.wait()
    job_s = time.perf_counter() - started
    summary = jobs.run_summary(info.run_id)
    _log(f"training job {snap.state} in {job_s:.0f} s ({summary['metrics'].get('steps')} steps)")
    if snap.state != "completed":
        raise AssertionError(f"training run ended {snap.state}: {snap.message} {snap.error}")
    if registry.served_id() != snap.version:
        # Not promoted by the gate: measure the new version anyway (that is what we test here).
        registry.promote(snap.version, reason="learning test: measure the trained version")
    after = answer_all(backend, facts)
    started = time.perf_counter()
    served = answer_served(backend, facts)
    _log(f"served answers ({served['runtime'][0]}) in {time.perf_counter() - started:.0f} s")
    data = json.loads((jobs.runs_dir / info.run_id / "data.json").read_text(encoding="utf-8"))
    held_out = {ex["prompt"][-1]["content"] for ex in data["sft_eval"]}
    return {
        "setting": {k: v for k, v in summary["hyper_parameters"].items() if k != "base_model"},
        "steps": summary["metrics"].get("steps"),
        "train_s": summary["metrics"].get("train_runtime_s"),
        "job_s": round(job_s, 1),
        "generate_s": round(generate_s, 1),
        "promoted_by_gate": bool(summary.get("promoted")),
        "gate": summary.get("gate"),
        "counts": summary["lineage"]["counts"],
        "held_out": sorted(held_out),
        "before": measure(before, facts, held_out),
        "after": measure(after, facts, held_out),
        "after_served": measure(served, facts, held_out),
        "answers_before": before,
        "answers_after": after,
        "answers_after_served": served,
    }
