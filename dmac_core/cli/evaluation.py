"""``python -m dmac_core evaluate --suite FILE --models a,b,c``: run a test set through models.

Prints a summary table (one row per model), and with several models the bootstrap test of
each against the first; every result is persisted to ``<data_dir>/evals/``. ``--suite rated``,
``general`` or ``held-out`` use the items the promotion gate compares versions on instead of a
file. The local learner answers through the runtime that serves chat unless ``--runtime fp32``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import LEARNER, Config
from ..evaluation.metrics import MIN_PAIRED_ITEMS
from .common import authorize, run_subcommands

SUMMARY_COLUMNS = ["model", "model_version", "rouge1", "rouge2", "rougeL", "bleu", "key_term_recall", "loss",
                   "token_accuracy", "latency_ms_mean", "tokens_out_mean", "errors"]


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "evaluate",
        help="run a test set through one or more models and compare them",
        description="Answer every prompt of a test set with each model, score the answers against the "
        "references (ROUGE-1/2/L, BLEU, key-term recall; loss and token accuracy for the local learner), "
        "save the results to the eval logs and print a table. Items without a reference use the "
        "best-rated logged answer, or get generation-only results.",
    )
    p.add_argument("--suite", required=True,
                   help="test set: a .yaml/.yml or .jsonl file; or 'rated' (the newest rated answers), 'general' "
                        "(the general-knowledge suite) or 'held-out' (prompts held out by validation_fraction)")
    p.add_argument("--runtime", choices=["served", "fp32"], default=None,
                   help="what answers for the local learner: 'served' (the runtime, weights and decoding chat uses) or "
                        "'fp32' (the transformers model in fp32); default: models.deepseek.evaluate_with")
    p.add_argument("--models", default=LEARNER,
                   help="comma-separated model names from config; 'deepseek@v0002' picks a version (default: deepseek)")
    p.add_argument("--name", help="suite name stored with the results (default: the file name)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="answer length limit (default: each model's config)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size of --runtime fp32 and of losses (default 8)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the significance test (default 1000)")
    p.add_argument("--csv", type=Path, help="also write the side-by-side per-item table to this CSV file")
    p.add_argument("--items", action="store_true", help="print the per-item outputs too")
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace, config: Config) -> int:
    """Handler of ``evaluate``; returns the process exit code."""
    import pandas as pd
    from tqdm import tqdm

    # Imported here, not at the top, for start-up time: torch and the models load only when a
    # command runs, so `python -m dmac_core --help` answers at once.
    from ..evaluation.evaluator import SuiteError, load_suite
    from ..system import LearningSystem

    authorize(args, config, "evaluate")
    system = LearningSystem(config)
    try:
        if args.suite in ("rated", "general", "held-out", "heldout"):
            suite = "held-out" if args.suite == "heldout" else args.suite
            items, name = system.review_suites().get(suite, []), args.name or suite
            if not items:
                print(f"The {suite} suite is empty: rate some answers 4 or 5 first"
                      f"{' (and set validation_fraction above 0)' if suite == 'held-out' else ''}.", file=sys.stderr)
                return 2
        else:
            items, name = load_suite(args.suite), args.name or Path(args.suite).stem
    except SuiteError as exc:
        print(exc, file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    backends = system.backends
    unknown = [m for m in models if m.partition("@")[0] not in backends]
    if not models or unknown:
        print(f"Unknown model(s) {unknown or '(none given)'}; configured: {', '.join(backends)}", file=sys.stderr)
        return 2
    with tqdm(total=len(items) * len(models), unit="item", desc=f"evaluate {name}", file=sys.stderr) as bar:
        evaluator = system.evaluator(progress=bar.update, runtime=args.runtime)
        evaluator.batch_size = args.batch_size
        try:
            comparison = evaluator.compare_models(items, models, suite=name, max_new_tokens=args.max_new_tokens,
                                                  n_boot=args.bootstrap)
        except Exception as exc:  # a model that cannot run: say which and why, no traceback
            bar.close()
            print(f"Evaluation failed: {exc}", file=sys.stderr)
            return 1
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60):
        with_ref = comparison.results[0]["metrics"]["n_with_reference"]
        print(f"\nSuite {name!r}: {len(items)} items, {with_ref} with a reference")
        local = next((r for r in comparison.results if r.get("decoding")), None)
        if local is not None:
            print(f"Local answers from {local['runtime']} ({local['decoding']}); loss and token accuracy from transformers")
        print(comparison.summary[SUMMARY_COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if len(models) > 1:
            print(f"\nDifferences vs {comparison.summary['model'][0]} (paired bootstrap, 95 % CI; "
                  f"at least {MIN_PAIRED_ITEMS} items to call a difference):")
            print(comparison.significance.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if args.items:
            print()
            print(comparison.table.to_string(index=False))
    if args.csv:
        comparison.table.to_csv(args.csv, index=False)
        print(f"\nPer-item table written to {args.csv}")
    print(f"Saved to {config.data_path / 'evals'} (comparison {comparison.comparison_id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m dmac_core.cli.evaluation [--config FILE] <command> ...``."""

    return run_subcommands("python -m dmac_core.cli.evaluation", [register], argv)


if __name__ == "__main__":
    sys.exit(main())
