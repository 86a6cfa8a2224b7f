"""Benchmark of the learning logs. Prints a markdown table.

    .venv/bin/python bench/store_bench.py            # 1,000,000 interactions (~0.5 GB)
    .venv/bin/python bench/store_bench.py --quick    # 100,000 interactions

Measures: durable append latency p50/p99 (one writer, fsync on), durable records/s with
4 writer processes, and loading all interactions into a DataFrame after a restart: each load
runs in a new Python process (``subprocess``), from the logs' Arrow snapshots and as a cold parse
of the JSON with snapshots off, against ``pandas.read_json(lines=True)`` on the same files in a new
process too. The contenders are interleaved within each run and the files are in the page cache
for all of them. Reported per contender: the load itself (timed inside the child) and the whole
restart (process start, imports and load, timed by the parent). Also the refresh after 100 new
appends. Each number is the median of ``--runs`` runs, with the min–max spread.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from dmac_core.logs.store import SNAPSHOT_MIN_BYTES, LearningStore  # noqa: E402

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


LOADERS = ("snapshots", "parse", "pandas")


def _child_load(directory: Path, loader: str) -> None:
    """In a new process: load every interaction with ``loader`` and print the seconds and rows
    as JSON. ``snapshots`` maps the logs' Arrow snapshots, ``parse`` parses the JSON with
    snapshots off, ``pandas`` is the baseline."""
    t = time.perf_counter()
    if loader == "pandas":
        import pandas as pd

        frame = pd.concat([pd.read_json(p, lines=True) for p in sorted((directory / "interactions").glob("*.jsonl"))])
        rows = len(frame)
    else:
        store = LearningStore(directory, snapshot_min_bytes=SNAPSHOT_MIN_BYTES if loader == "snapshots" else 0)
        rows = len(store.interactions())
    seconds = time.perf_counter() - t
    print(json.dumps({"load_s": seconds, "rows": rows}))
    if loader != "pandas":
        store.wait_for_snapshots()  # a snapshot written in the background is not part of the load


def restart_load(directory: Path, loader: str) -> tuple[float, float, int]:
    """(load seconds, whole-restart seconds, rows) of loading in a brand-new process."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child-load", loader, str(directory)],
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["load_s"], wall, result["rows"]


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
    parser.add_argument("--child-load", nargs=2, metavar=("LOADER", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_load:
        _child_load(Path(args.child_load[1]), args.child_load[0])
        return
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
        # The first load past the snapshots' threshold parses and writes the snapshots.
        first, _wall, _rows = restart_load(big, "snapshots")
        loads: dict[str, list[float]] = {name: [] for name in LOADERS}
        walls: dict[str, list[float]] = {name: [] for name in LOADERS}
        refresh: list[float] = []
        for run in range(args.runs):
            for loader in LOADERS:  # interleaved, each in a new process
                seconds, wall, rows = restart_load(big, loader)
                assert rows >= n, (loader, rows)
                loads[loader].append(seconds)
                walls[loader].append(wall)
            print(f"run {run + 1}: " + ", ".join(f"{name} {loads[name][-1]:.2f} s (restart {walls[name][-1]:.2f} s)"
                                                 for name in LOADERS), file=sys.stderr, flush=True)
        for _run in range(args.runs):
            refresh.append(refresh_after_appends(big))
    med = statistics.median

    def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
        return f"{med(values) * scale:.{digits}f} ({min(values) * scale:.{digits}f}–{max(values) * scale:.{digits}f})"

    base, base_wall = med(loads["pandas"]), med(walls["pandas"])
    print(f"\n{n:,} interactions, {size / 1e6:.0f} MB in 3 month files; median of {args.runs} runs (min–max); "
          f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| measurement | result | target |")
    print("| --- | --- | --- |")
    print(f"| durable append latency p50 (1 writer) | {spread(p50s)} ms | <= 2 ms |")
    print(f"| durable append latency p99 (1 writer) | {spread(p99s)} ms | - |")
    print(f"| durable records/s, 4 writer processes | {med(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) /s | >= 2,000 /s |")
    print("| **load into a DataFrame in a new process** | load s (restart s: start + imports + load) | |")
    print(f"| from the Arrow snapshots | {spread(loads['snapshots'])} s ({spread(walls['snapshots'])} s) | <= 3 s |")
    print(f"| cold parse of the JSON (snapshots off) | {spread(loads['parse'])} s ({spread(walls['parse'])} s) | <= 3 s |")
    print(f"| baseline pandas.read_json(lines=True), same files | {spread(loads['pandas'])} s ({spread(walls['pandas'])} s) | - |")
    print(f"| speed-up over the baseline, load: snapshots / cold parse | "
          f"{base / med(loads['snapshots']):.0f}x / {base / med(loads['parse']):.1f}x | >= 3x |")
    print(f"| speed-up over the baseline, whole restart: snapshots / cold parse | "
          f"{base_wall / med(walls['snapshots']):.1f}x / {base_wall / med(walls['parse']):.1f}x | - |")
    print(f"| first load past the snapshots' threshold (parse; snapshots written in the background) | {first:.2f} s | - |")
    print(f"| refresh after 100 new appends | {spread(refresh, 1e3, 0)} ms | <= 100 ms |")


if __name__ == "__main__":
    main()
