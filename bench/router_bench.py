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

And a restart: a NEW PROCESS builds the router and answers one request (instant backend), timed
from building the router to the answer, with the usage counter's checkpoint and, interleaved in
the same runs, without it (the baseline: the checkpoint file removed, so the new process
recounts the month's log). Before each run with the checkpoint, ``--tail`` more interactions
are appended after it, as traffic between the last checkpoint and a restart would.

    .venv/bin/python bench/router_bench.py [--records 1000000] [--requests 2000] [--runs 3] [--tail 1000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from instant_backend import InstantBackend  # noqa: E402  (bench/, next to this script)
from dmac_core.config import Config  # noqa: E402
from dmac_core.logs.store import LearningStore  # noqa: E402
from dmac_core.serving.router import ModelManager  # noqa: E402
from dmac_core.serving.usage import UsageCounter  # noqa: E402


def make_log(directory: Path, n: int) -> None:
    """``n`` interactions (~500 B each), all today: the worst case for counting today's usage.
    Appends when the file exists."""
    now = datetime.now(timezone.utc)
    out = directory / "interactions"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{now:%Y-%m}.jsonl", "ab") as handle:
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


def bench_config(data: Path) -> Config:
    return Config.model_validate({
        "data_dir": str(data),
        "models": {"deepseek": {"kind": "local", "enabled": False},
                   "gemini": {"kind": "gemini"}, "deepseek_api": {"kind": "openai_compat"}},
        "routing": {"order": ["gemini", "deepseek_api"],
                    "caps": {"gemini": {"requests_per_day": 10_000_000, "tokens_per_day": 10**12}}},
        "storage": {"fsync": False},
    })


def first_answer(data: Path) -> None:
    """In a fresh process: build the router over ``data`` and answer one request; print the
    seconds it took and the usage counted, as JSON."""
    store = LearningStore(data, fsync=False)
    started = time.perf_counter()
    manager = ModelManager(bench_config(data), store, {"gemini": InstantBackend("gemini"),
                                                       "deepseek_api": InstantBackend("deepseek_api")})
    result = manager.respond("what is the forecast")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "model": result.model,
                      "requests_today": manager.usage.usage("gemini").requests_today}))


def restart(data: Path, checkpoint: bool, tail: int) -> tuple[float, int]:
    """One restart in a new process: with the counter's checkpoint (after ``tail`` more
    interactions were appended), or without it (removed). Returns (seconds, gemini's count)."""
    saved = data / "usage" / "counter.json"
    if checkpoint:
        assert saved.is_file(), "the previous run left no checkpoint"
        make_log(data, tail)
    else:
        saved.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, __file__, "--first-answer", str(data)], check=True,
                          capture_output=True, text=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out["seconds"], out["requests_today"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="runs, each with a new router (default 3)")
    parser.add_argument("--tail", type=int, default=1000,
                        help="interactions appended after the checkpoint before each restart with it (default 1000)")
    parser.add_argument("--quick", action="store_true", help="100,000 records, 500 requests")
    parser.add_argument("--first-answer", metavar="DATA_DIR", help=argparse.SUPPRESS)  # the restarted process
    args = parser.parse_args()
    if args.first_answer:
        first_answer(Path(args.first_answer))
        return
    if args.quick:
        args.records, args.requests = 100_000, 500
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        started = time.perf_counter()
        make_log(data, args.records)
        print(f"log of {args.records:,} interactions written in {time.perf_counter() - started:.1f}s", flush=True)
        with_checkpoint, without = [], []
        for run in range(args.runs):  # interleaved: the baseline (which leaves a checkpoint), then with it
            seconds, counted_without = restart(data, checkpoint=False, tail=args.tail)
            without.append(seconds)
            seconds, counted_with = restart(data, checkpoint=True, tail=args.tail)
            with_checkpoint.append(seconds)
            # the restarted count is exact: the baseline's recount plus half the tail (gemini's share)
            assert counted_with == counted_without + args.tail // 2 + 1, (counted_with, counted_without)
            print(f"restart {run + 1}: first answer {without[-1]:.2f} s without the checkpoint, "
                  f"{with_checkpoint[-1]:.3f} s with it", flush=True)
        config = bench_config(data)
        store = LearningStore(data, fsync=False)
        decide_p50, decide_p99, respond_p50, respond_p99, rescans = [], [], [], [], []
        for run in range(args.runs):  # interleaved: each run measures the router, then the baseline
            manager = ModelManager(config, store, {"gemini": InstantBackend("gemini"),
                                                   "deepseek_api": InstantBackend("deepseek_api")})
            manager.candidates("auto")  # the first catches up with the log
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
    print(f"\n| restart: a new process's first routed answer (median of {args.runs}, min–max) | seconds |\n|---|---|")
    print(f"| with the usage counter's checkpoint ({args.tail:,} interactions appended after it) | "
          f"{spread(with_checkpoint, 3)} |")
    print(f"| baseline: without it (recounts the month's log) | {spread(without, 2)} |")
    print(f"\nrecords {args.records:,}; requests {args.requests} a run; {os.cpu_count()} CPUs; "
          f"load {os.getloadavg()[0]:.1f}; {datetime.now(timezone.utc):%Y-%m-%d}")

if __name__ == "__main__":
    main()
