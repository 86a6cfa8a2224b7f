"""Load benchmark: N browser sessions chat and rate for a while against an instant
fake OpenAI-compatible backend; reports p50/p95 time from the "Save rating" click to the
page confirming the saved record, and checks no feedback was lost.

    .venv/bin/python bench/load_bench.py [--sessions 10] [--seconds 120] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmac_core.logs.store import LearningStore  # noqa: E402
from tests.e2e.conftest import start_app, stop_app  # noqa: E402
from tests.e2e.load_driver import run_load  # noqa: E402
from tests.e2e.test_load import load_config_dict  # noqa: E402
from tests.fake_servers import FakeServer  # noqa: E402


def one_run(sessions: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp, FakeServer("openai", default_text="An instant answer.") as fake:
        tmp_path = Path(tmp)
        process, url, data_dir = start_app(tmp_path, load_config_dict(tmp_path / "data", fake), with_user=False)
        try:
            result = asyncio.run(run_load(url, sessions=sessions, seconds=seconds))
        finally:
            stop_app(process)
        summary = result.summary()
        summary["records"] = len(LearningStore(data_dir).records("feedback"))
        summary["lost"] = summary["clicks"] - summary["records"]
        return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.sessions, args.seconds) for _ in range(args.runs)]
    for run in runs:
        print(run, flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in ("p50_ms", "p95_ms", "clicks", "lost", "errors")}
    print(
        f"\n| sessions | seconds | runs | clicks (median) | lost | errors | p50 click→saved | p95 click→saved |\n"
        f"|---|---|---|---|---|---|---|---|\n"
        f"| {args.sessions} | {args.seconds:.0f} | {args.runs} | {med['clicks']:.0f} | {med['lost']:.0f} | "
        f"{med['errors']:.0f} | {med['p50_ms']:.0f} ms | {med['p95_ms']:.0f} ms |"
    )
    print(f"\nmachine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"load {os.getloadavg()[0]:.1f}, {datetime.now(timezone.utc):%Y-%m-%d}")


if __name__ == "__main__":
    main()
