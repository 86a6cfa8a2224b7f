"""Router decision overhead with a large interaction log.

Measures, against a backend that answers instantly:
- ``decide``: choosing the model for a request (availability, cooldown, caps counted from
  the log) — what the router adds before a backend is called;
- ``respond``: a whole request through the router including capturing the interaction
  (fsync off, so the disk is not what is measured);
- baseline, same runs: the same count of today's usage (requests, tokens, last minute) by a
  usage counter that keeps no state between requests, so it rereads and parses the month's log
  from disk each time — what a cap check without the incremental counter costs.

Each run builds a new router over the same log; the figures are medians over ``--runs`` runs
(per run: p50 and p99 over its requests), with the min–max spread across runs.

    .venv/bin/python bench/router_bench.py [--records 1000000] [--requests 2000] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from dmac_core.backends.base import Availability, Generation  # noqa: E402
from dmac_core.config import Config  # noqa: E402
from dmac_core.logs.store import LearningStore  # noqa: E402
from dmac_core.serving.router import ModelManager  # noqa: E402
from dmac_core.serving.usage import UsageCounter  # noqa: E402


class InstantBackend:
    def __init__(self, name: str) -> None:
        self.name = name

    def available(self) -> Availability:
        return Availability(True)

    def generate(self, messages: list[dict[str, Any]], **options: Any) -> Generation:
        return Generation(text="ok", provider_model=self.name, tokens_in=1, tokens_out=1, latency_ms=0.0)

    def stream(self, messages: list[dict[str, Any]], **options: Any) -> Iterator[Any]:
        yield "ok"
        yield self.generate(messages)


def make_log(directory: Path, n: int) -> None:
    """``n`` interactions (~500 B each), all today: the worst case for counting today's usage."""
    now = datetime.now(timezone.utc)
    out = directory / "interactions"
    out.mkdir(parents=True)
    with open(out / f"{now:%Y-%m}.jsonl", "wb") as handle:
        for i in range(n):
            ts = now.replace(hour=0, minute=0, second=0, microsecond=0).isoformat(timespec="milliseconds")
            record = {"schema": 1, "id": uuid.uuid4().hex, "ts": ts.replace("+00:00", "Z"), "user": f"u{i % 50}",
                      "session_id": "s", "model": "gemini" if i % 2 else "deepseek_api", "provider_model": "p",
                      "model_version": None, "messages": [{"role": "user", "content": "what is the forecast"}],
                      "prompt": "what is the forecast", "response": "the forecast is up " * 10, "latency_ms": 100.0,
                      "tokens_in": 20, "tokens_out": 50, "route_reason": "auto", "error": None}
            handle.write(orjson.dumps(record) + b"\n")


def percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(round(q * (len(data) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="runs, each with a new router (default 3)")
    parser.add_argument("--quick", action="store_true", help="100,000 records, 500 requests")
    args = parser.parse_args()
    if args.quick:
        args.records, args.requests = 100_000, 500
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        started = time.perf_counter()
        make_log(data, args.records)
        print(f"log of {args.records:,} interactions written in {time.perf_counter() - started:.1f}s", flush=True)
        config = Config.model_validate({
            "data_dir": str(data),
            "models": {"deepseek": {"kind": "local", "enabled": False},
                       "gemini": {"kind": "gemini"}, "deepseek_api": {"kind": "openai_compat"}},
            "routing": {"order": ["gemini", "deepseek_api"],
                        "caps": {"gemini": {"requests_per_day": 10_000_000, "tokens_per_day": 10**12}}},
            "storage": {"fsync": False},
        })
        store = LearningStore(data, fsync=False)
        firsts, decide_p50, decide_p99, respond_p50, respond_p99, rescans = [], [], [], [], [], []
        for run in range(args.runs):  # interleaved: each run measures the router, then the baseline
            manager = ModelManager(config, store, {"gemini": InstantBackend("gemini"),
                                                   "deepseek_api": InstantBackend("deepseek_api")})
            started = time.perf_counter()
            manager.candidates("auto")
            firsts.append(time.perf_counter() - started)
            decide, respond = [], []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                manager.candidates("auto")
                decide.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                manager.respond("what is the forecast")
                respond.append((time.perf_counter() - t0) * 1000)
            decide_p50.append(statistics.median(decide))
            decide_p99.append(percentile(decide, .99))
            respond_p50.append(statistics.median(respond))
            respond_p99.append(percentile(respond, .99))
            for _ in range(2):  # the baseline: a stateless counter rereads the whole month per request
                t0 = time.perf_counter()
                counted = UsageCounter(store).usage("gemini")
                rescans.append((time.perf_counter() - t0) * 1000)
            assert counted.requests_today >= args.records // 2, counted
            print(f"run {run + 1}: decide p50 {decide_p50[-1]:.3f} ms, rescan {rescans[-1]:,.0f} ms", flush=True)

    def spread(values: list[float], digits: int) -> str:
        return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"

    print(f"\n| measurement (median of {args.runs} runs, min–max) | p50 | p99 |\n|---|---|---|")
    print(f"| decide (caps counted from the log) | {spread(decide_p50, 3)} ms | {spread(decide_p99, 3)} ms |")
    print(f"| respond incl. capture (fsync off) | {spread(respond_p50, 3)} ms | {spread(respond_p99, 3)} ms |")
    print(f"| baseline: the same count, rereading the log per request | {spread(rescans, 0)} ms | - |")
    print(f"| decide's speed-up over the baseline | {statistics.median(rescans) / statistics.median(decide_p50):,.0f}x | - |")
    print(f"\nfirst decision of a new router (reads the log once): {spread(firsts, 2)} s; records {args.records:,}; "
          f"requests {args.requests} a run; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}; "
          f"{datetime.now(timezone.utc):%Y-%m-%d}")

if __name__ == "__main__":
    main()
