"""``python -m dmac_core evaluate --suite FILE --models a,b,c``: run a test set through models.

Prints a summary table (one row per model), and with several models the bootstrap test of
each against the first; every result is persisted to ``<data_dir>/evals/``. ``--suite
heldout`` uses the stable held-out split of the logs instead of a file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .config import Config

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
                   help="test set: a .yaml/.yml or .jsonl file, or 'heldout' for the logs' held-out split")
    p.add_argument("--models", default="deepseek",
                   help="comma-separated model names from config; 'deepseek@v0002' picks a version (default: deepseek)")
    p.add_argument("--name", help="suite name stored with the results (default: the file name)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="answer length limit (default: each model's config)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size for the local model (default 8)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the significance test (default 1000)")
    p.add_argument("--csv", type=Path, help="also write the side-by-side per-item table to this CSV file")
    p.add_argument("--items", action="store_true", help="print the per-item outputs too")
    p.set_defaults(handler=run_evaluate)


def build_backends_for(config: Config) -> dict[str, Any]:
    """Backends by config name (the same builder the app uses)."""
    from .backends import build_backends
    from .training.registry import ModelRegistry

    return build_backends(config, ModelRegistry(config.data_path / "models"))


def run_evaluate(args: argparse.Namespace, config: Config) -> int:
    """Handler of ``evaluate``; returns the process exit code."""
    import pandas as pd
    from tqdm import tqdm

    from .evaluation import Evaluator, SuiteError, heldout_suite, load_suite
    from .store import LearningStore

    store = LearningStore(config.data_path, fsync=config.storage.fsync)
    try:
        if args.suite == "heldout":
            items, name = heldout_suite(store, config), args.name or "heldout"
            if not items:
                print("The held-out split is empty: rate some answers 4 or 5 first.", file=sys.stderr)
                return 2
        else:
            items, name = load_suite(args.suite), args.name or Path(args.suite).stem
    except SuiteError as exc:
        print(exc, file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    backends = build_backends_for(config)
    unknown = [m for m in models if m.partition("@")[0] not in backends]
    if not models or unknown:
        print(f"Unknown model(s) {unknown or '(none given)'}; configured: {', '.join(backends)}", file=sys.stderr)
        return 2
    with tqdm(total=len(items) * len(models), unit="item", desc=f"evaluate {name}", file=sys.stderr) as bar:
        evaluator = Evaluator(config, store, backends, batch_size=args.batch_size, progress=bar.update)
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
        print(comparison.summary[SUMMARY_COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if len(models) > 1:
            print(f"\nDifferences vs {comparison.summary['model'][0]} (paired bootstrap, 95 % CI):")
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
    """Stand-alone entry: ``python -m dmac_core.evaluation_cli [--config FILE] <command> ...``."""
    from .cli_common import run_subcommands

    return run_subcommands("python -m dmac_core.evaluation_cli", [register], argv)


if __name__ == "__main__":
    sys.exit(main())
