"""Benchmark of the learning logs. Prints a markdown table.

    .venv/bin/python bench/store_bench.py            # 1,000,000 interactions (~0.5 GB)
    .venv/bin/python bench/store_bench.py --quick    # 100,000 interactions

Measures: durable append latency p50/p99 (one writer, fsync on), durable records/s with
4 writer processes, loading all interactions into a DataFrame by a fresh LearningStore (a
restarted process) — from the logs' Arrow snapshots, and as a cold parse of the JSON with
snapshots off (the files are in the page cache for every contender) — against
``pandas.read_json(lines=True)`` on the same files in the same run, and the refresh after
100 new appends. Each number is the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from dmac_core.store import SNAPSHOT_MIN_BYTES, LearningStore  # noqa: E402

WORDS = "the a model answer question data revenue quarter growth analyst report customer churn forecast region sales".split()


def make_store(directory: Path, n: int) -> None:
    """Write ``n`` realistic interaction lines (~500 B) over three UTC months, directly."""
    import random

    rnd = random.Random(0)
    out = directory / "interactions"
    out.mkdir(parents=True)
    handles: dict[str, object] = {}
    for i in range(n):
        day = 1 + (i * 89) // n
        month, dom = (1 + (day - 1) // 30), 1 + (day - 1) % 28
        ts = f"2026-{month:02d}-{dom:02d}T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.000Z"
        prompt = " ".join(rnd.choices(WORDS, k=6))
        response = " ".join(rnd.choices(WORDS, k=15))
        record = {"schema": 1, "id": uuid.UUID(int=rnd.getrandbits(128)).hex, "ts": ts, "user": f"user{i % 50}",
                  "session_id": f"{i // 20:012x}", "model": "gemini", "provider_model": "gemini-2.5-pro",
                  "model_version": None, "messages": [{"role": "user", "content": prompt}], "prompt": prompt,
                  "response": response, "latency_ms": 123.4, "tokens_in": 20, "tokens_out": 50,
                  "route_reason": "auto", "error": None}
        name = ts[:7]
        if name not in handles:
            handles[name] = open(out / f"{name}.jsonl", "wb")
        handles[name].write(orjson.dumps(record) + b"\n")  # type: ignore[attr-defined]
    for handle in handles.values():
        handle.close()  # type: ignore[attr-defined]


def append_latency(directory: Path, count: int) -> tuple[float, float]:
    store = LearningStore(directory, fsync=True)
    store.append_interaction(model="m", prompt="warm", response="up")
    times = []
    for i in range(count):
        t = time.perf_counter()
        store.append_interaction(model="gemini", prompt=f"question {i} " * 5, response="answer " * 40, user="bench")
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


def _writer(directory: str, seconds: float, start: float, queue: mp.Queue) -> None:
    store = LearningStore(directory, fsync=True)
    while time.time() < start:
        time.sleep(0.001)
    n = 0
    while time.time() < start + seconds:
        store.append_interaction(model="gemini", prompt=f"question {n}", response="answer " * 60, user="bench")
        n += 1
    queue.put(n)


def multi_writer_rate(directory: Path, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start = time.time() + 3  # let every process import first
    procs = [ctx.Process(target=_writer, args=(str(directory), seconds, start, queue)) for _ in range(4)]
    for proc in procs:
        proc.start()
    total = sum(queue.get() for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


def load_store(directory: Path, snapshots: bool) -> tuple[float, int]:
    """Seconds for a fresh store (a restarted process) to load every interaction; with
    ``snapshots`` off it parses the JSON, with them on it maps the logs' Arrow snapshots."""
    t = time.perf_counter()
    store = LearningStore(directory, snapshot_min_bytes=SNAPSHOT_MIN_BYTES if snapshots else 0)
    frame = store.interactions()
    seconds = time.perf_counter() - t
    store.wait_for_snapshots()  # a snapshot written in the background is not part of the load
    return seconds, len(frame)


def load_pandas(directory: Path) -> tuple[float, int]:
    import pandas as pd

    t = time.perf_counter()
    frame = pd.concat([pd.read_json(p, lines=True) for p in sorted((directory / "interactions").glob("*.jsonl"))])
    return time.perf_counter() - t, len(frame)


def refresh_after_appends(directory: Path) -> float:
    store = LearningStore(directory, fsync=True)
    store.interactions()
    for i in range(100):
        store.append_interaction(model="gemini", prompt=f"new {i}", response="fresh answer", ts="2026-03-20T00:00:00Z")
    t = time.perf_counter()
    store.interactions()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 interactions instead of 1,000,000")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median reported; default 3)")
    parser.add_argument("--dir", help="work directory (default: a temporary directory, removed afterwards)")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        p50s, p99s, rates = [], [], []
        for run in range(args.runs):
            p50, p99 = append_latency(root / f"lat{run}", 500)
            p50s.append(p50)
            p99s.append(p99)
            rates.append(multi_writer_rate(root / f"rate{run}", 3.0))
        print(f"generating {n:,} interactions ...", file=sys.stderr, flush=True)
        big = root / "big"
        make_store(big, n)
        size = sum(p.stat().st_size for p in (big / "interactions").glob("*.jsonl"))
        ours, theirs, snapped, refresh = [], [], [], []
        for run in range(args.runs):
            seconds, rows = load_store(big, snapshots=False)
            assert rows >= n
            ours.append(seconds)
            seconds, rows = load_pandas(big)
            theirs.append(seconds)
            print(f"run {run + 1}: store {ours[-1]:.2f} s, pandas {theirs[-1]:.2f} s", file=sys.stderr, flush=True)
        first, _ = load_store(big, snapshots=True)  # parses and writes the snapshots
        for run in range(args.runs):
            seconds, rows = load_store(big, snapshots=True)
            assert rows >= n
            snapped.append(seconds)
            print(f"run {run + 1}: store with snapshots {seconds:.2f} s", file=sys.stderr, flush=True)
        for _run in range(args.runs):
            refresh.append(refresh_after_appends(big))
    med = statistics.median
    load, base = med(ours), med(theirs)
    print(f"\n{n:,} interactions, {size / 1e6:.0f} MB in 3 month files; median of {args.runs} runs; "
          f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| measurement | result | target |")
    print("| --- | --- | --- |")
    print(f"| durable append latency p50 (1 writer) | {med(p50s):.2f} ms | <= 2 ms |")
    print(f"| durable append latency p99 (1 writer) | {med(p99s):.2f} ms | - |")
    print(f"| durable records/s, 4 writer processes | {med(rates):,.0f} /s | >= 2,000 /s |")
    print(f"| load {n:,} interactions into a DataFrame, restarted process (Arrow snapshots) | {med(snapped):.2f} s | <= 3 s |")
    print(f"| same, cold parse of the JSON (no snapshots) | {load:.2f} s | <= 3 s |")
    print(f"| first load after the snapshots' threshold (parse; snapshots written in the background) | {first:.2f} s | - |")
    print(f"| baseline pandas.read_json(lines=True), same files | {base:.2f} s | - |")
    print(f"| speed-up over the baseline: snapshots / cold parse | {base / med(snapped):.0f}x / {base / load:.1f}x | >= 3x |")
    print(f"| refresh after 100 new appends | {med(refresh) * 1e3:.0f} ms | <= 100 ms |")


if __name__ == "__main__":
    main()
