"""Chat latency while Insights scores per-token confidence, against chat alone.

Insights scores each learner answer with the version that wrote it, in that version's own fp32
copy, from a background thread that waits while the learner is answering. This measures what
an analyst chatting meanwhile feels: the latency of a chat answer (the shipped config, the
bundled model served by llama.cpp, 64 new tokens, a pause between questions as an analyst
reads and types) with nothing else running, and while the scorer works through a backlog of
logged answers in those pauses. Rounds alternate (alone, with scoring, alone, ...) in one
process on the same weights; medians and the ratio are printed.

    .venv/bin/python bench/insights_chat_latency.py [--rounds 3] [--chats 6] [--backlog 40] [--pause 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dmac_core.config import BUNDLED_BASE_MODEL_NAME  # noqa: E402
from dmac_core.insights.confidence import ConfidenceScorer  # noqa: E402
from dmac_core.system import LearningSystem  # noqa: E402
from tests.learning_quality_fixtures import shipped_config  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "How do I make a cup of tea?", "Write a haiku about autumn.",
    "Why is the sky blue?", "What is photosynthesis?", "How do I reverse a list in Python?",
    "Give me three tips for better sleep.", "What causes the seasons?",
]


def chat_latencies(system: LearningSystem, chats: int, offset: int, pause: float) -> list[float]:
    out = []
    for k in range(chats):
        time.sleep(pause)  # the analyst reads the last answer and types the next question
        question = QUESTIONS[(offset + k) % len(QUESTIONS)]
        started = time.perf_counter()
        system.model_manager.respond(question, model="deepseek", max_new_tokens=64)
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chats", type=int, default=6, help="chat answers timed per round and condition")
    parser.add_argument("--backlog", type=int, default=40, help="logged answers the scorer works through")
    parser.add_argument("--pause", type=float, default=4.0,
                        help="seconds between an answer and the next question (reading and typing)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="dmac-insights-") as tmp:
        config = shipped_config(Path(tmp) / "data", ROOT / "data" / "base" / BUNDLED_BASE_MODEL_NAME)
        system = LearningSystem(config)
        system.model_manager.respond("Hello!", model="deepseek", max_new_tokens=8)  # load and warm up
        # a backlog of logged learner answers, as after a day of chat
        backlog = []
        for k in range(args.backlog):
            question = f"{QUESTIONS[k % len(QUESTIONS)]} (asked {k})"
            answer = system.model_manager.respond(question, model="deepseek", max_new_tokens=48)
            backlog.append(system.store.get_interaction(answer.interaction_id))
        # The scorer's own copy of the model is loaded once, when Insights is first opened (timed
        # apart below); each round then scores the backlog afresh (a new cache file).
        copies: dict[str, object] = {}
        started = time.perf_counter()
        copies["base"] = system.local_backend.scoring_model("base")
        print(f"the scorer's fp32 copy loaded in {time.perf_counter() - started:.1f} s (once)", flush=True)
        alone: list[float] = []
        scored: list[float] = []
        for round_no in range(args.rounds):
            alone += chat_latencies(system, args.chats, round_no, args.pause)
            scorer = ConfidenceScorer(system.local_backend, system.store, Path(tmp) / f"confidence-{round_no}.jsonl",
                                      load_version=copies.__getitem__, system_prompt=config.routing.system_prompt)
            scorer.request(backlog)
            time.sleep(0.2)  # the scorer is working through the backlog
            scored += chat_latencies(system, args.chats, round_no, args.pause)
            left = scorer.pending()
            scorer.wait()
            print(f"round {round_no + 1}: alone {statistics.median(alone[-args.chats:]):.2f} s, while scoring "
                  f"{statistics.median(scored[-args.chats:]):.2f} s ({args.backlog - left} of {args.backlog} "
                  "answers scored during the chats)", flush=True)
        a, s = statistics.median(alone), statistics.median(scored)
        print(f"chat latency, median of {len(alone)}: alone {a:.2f} s (spread {min(alone):.2f}–{max(alone):.2f}), "
              f"while Insights scores {s:.2f} s (spread {min(scored):.2f}–{max(scored):.2f}); ratio {s / a:.2f}×")


if __name__ == "__main__":
    main()
