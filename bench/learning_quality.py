"""How much the local learner learns from ~30 rated answers, per training setting (issue 5).

Runs the harness of ``tests/learning_quality_fixtures.py`` (the same one the learning test
asserts on) once per setting and prints one JSON line per run plus a Markdown table row.

    .venv/bin/python bench/learning_quality.py                      # the shipped defaults
    .venv/bin/python bench/learning_quality.py --set epochs=10 --set batch_size=16
    .venv/bin/python bench/learning_quality.py --facts 12 --phrasings 2
    .venv/bin/python bench/learning_quality.py --no-replay                 # without replay (forgetting)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmac_core.config import BUNDLED_BASE_MODEL_NAME, PROJECT_ROOT  # noqa: E402
from tests.learning_quality_fixtures import FACTS, run_experiment, short_facts  # noqa: E402


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="learner override KEY=VALUE (JSON value)")
    parser.add_argument("--facts", type=int, default=len(FACTS), help="number of invented facts")
    parser.add_argument("--phrasings", type=int, default=1, help="rated phrasings per fact (1 or 2)")
    parser.add_argument("--no-replay", action="store_true",
                        help="switch off the shipped replay of the base model's own answers (models.deepseek.replay)")
    parser.add_argument("--out", type=Path, default=None, help="append the JSON result to this file")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = _value(value)
    if args.no_replay:
        overrides["replay"] = {"enabled": False}
    facts = FACTS[: args.facts] if args.phrasings == 1 else short_facts(args.facts)
    base = PROJECT_ROOT / "data" / "base" / BUNDLED_BASE_MODEL_NAME
    with tempfile.TemporaryDirectory(prefix="dmac-learn-") as tmp:
        result = run_experiment(Path(tmp), base, facts, args.phrasings, **overrides)
    result["overrides"] = overrides
    result["facts"], result["phrasings"] = args.facts, args.phrasings
    result["loadavg"] = os.getloadavg()
    line = json.dumps(result, default=str)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    b, a = result["before"], result["after"]
    print(
        f"| {overrides or 'shipped'} | {result['steps']} | {result['train_s']} | "
        f"{a['trained']['key_term_recall']:.2f} / {a['heldout']['key_term_recall'] or 0:.2f} / "
        f"{a['trained_paraphrase']['key_term_recall']:.2f} | "
        f"{b['trained']['rougeL']:.2f} → {a['trained']['rougeL']:.2f} | {a['general_ok']} |"
    )


if __name__ == "__main__":
    main()
