"""How much one "Train now" teaches the local learner, measured on what chat serves.

Runs the harness of ``tests/learning_quality_fixtures.py`` (the same one the learning tests
assert on): invented facts rated 5 in a fresh data directory with the shipped config, one run
through the real job and promotion gate (nothing promoted by hand), answers before / after
through the serving runtime. Prints one JSON line per run plus a Markdown table row for
``bench/RESULTS.md``.

    .venv/bin/python bench/learning_quality.py                           # 12 facts × 3 analysts, shipped config
    .venv/bin/python bench/learning_quality.py --facts 30 --analysts 1   # the 30-fact variant
    .venv/bin/python bench/learning_quality.py --set precision='"fp32"'  # as on a CPU without native bf16
    .venv/bin/python bench/learning_quality.py --new-data-dir            # a brand-new data directory, no setup
    .venv/bin/python bench/learning_quality.py --set scope='{"enabled": false}'   # the adapter alone
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
from tests.learning_quality_fixtures import FACTS, run_experiment  # noqa: E402


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="learner override KEY=VALUE (JSON value)")
    parser.add_argument("--facts", type=int, default=12, help="number of invented facts (up to 30)")
    parser.add_argument("--analysts", type=int, default=3, help="analysts rating each fact 5")
    parser.add_argument("--new-data-dir", action="store_true",
                        help="a brand-new data directory: the bundled base model is converted on first use and "
                             "nothing was measured by setup beforehand")
    parser.add_argument("--out", type=Path, default=None, help="append the JSON result to this file")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = _value(value)
    base = None if args.new_data_dir else PROJECT_ROOT / "data" / "base" / BUNDLED_BASE_MODEL_NAME
    with tempfile.TemporaryDirectory(prefix="dmac-learn-") as tmp:
        result = run_experiment(Path(tmp), base, FACTS[: args.facts], analysts=args.analysts,
                                prepared=not args.new_data_dir, **overrides)
    result["overrides"] = overrides
    result["facts"], result["analysts"] = args.facts, args.analysts
    result["loadavg"] = os.getloadavg()
    line = json.dumps(result, default=str)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    b, a, general, t = result["before"], result["after"], result["general"] or {}, result["timings"] or {}
    print(
        f"| {overrides or 'shipped'} | {args.facts}×{args.analysts} | {result['steps']} | "
        f"{b['trained']['key_term_recall']:.2f} → {a['trained']['key_term_recall']:.2f} | "
        f"{b['trained']['novel_term_recall']:.2f} → {a['trained']['novel_term_recall']:.2f} | "
        f"{b['paraphrase']['key_term_recall']:.2f} → {a['paraphrase']['key_term_recall']:.2f} | "
        f"{general.get('kept')}/{general.get('known_before')} ({len(general.get('lost', []))} lost) | "
        f"{'yes' if result['promoted_by_gate'] else 'no'} | {result['job_s']:.0f} s (prepare {t.get('prepare_s')}, "
        f"train {t.get('train_s')}, gate {t.get('gate_s')}, serve {t.get('serve_s')}) |"
    )


if __name__ == "__main__":
    main()
