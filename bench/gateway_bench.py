"""What the OpenAI-compatible gateway adds over calling the router in the same process.

Three measurements, each against its in-process baseline in the same run, interleaved:

- ``latency``: one whole non-streamed answer of a model that answers instantly (so only the
  workbench is measured: routing, capture of the interaction, and for the gateway the HTTP
  round trip, JSON and the worker thread). Client: one keep-alive ``httpx2`` connection, the
  HTTP library the ``openai`` SDK uses. Reported: p50 / p99 of each and the p50 difference.
- ``throughput``: requests per second with 1, 4 and 16 concurrent clients against the same
  instant model: through the gateway, each client a program of its own with its own connection
  (clients are other programs); in-process, each client a thread calling the router.
- ``ttft``: time to the first piece of text of the local learner (the bundled model, greedy,
  the runtime that serves chat), streamed through the gateway vs ``LearningSystem.chat_stream``.

Interactions are captured with fsync off (the disk is not what is measured). Figures are
medians over ``--runs`` runs, with the min–max spread.

    .venv/bin/python bench/gateway_bench.py [--runs 3] [--requests 400] [--seconds 4] [--ttft 8] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2 as httpx  # noqa: E402

from instant_backend import InstantBackend  # noqa: E402  (bench/, next to this script)
from dmac_core.config import BUNDLED_BASE_MODEL_NAME, PROJECT_ROOT, Config  # noqa: E402
from dmac_core.gateway.server import start_gateway  # noqa: E402
from dmac_core.system import LearningSystem  # noqa: E402

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(round(q * (len(data) - 1))))]


def build_system(data_dir: Path) -> LearningSystem:
    config = Config.model_validate({
        "data_dir": str(data_dir),
        "models": {
            "deepseek": {"kind": "local", "base_model": str(PROJECT_ROOT / "data" / "base" / BUNDLED_BASE_MODEL_NAME),
                         "max_new_tokens": 32},
            "fast": {"kind": "openai_compat", "base_url": "http://127.0.0.1:9/v1", "api_key_env": None,
                     "model": "instant", "max_retries": 0},
        },
        "routing": {"order": ["fast"], "strategy": "priority"},
        "storage": {"fsync": False},
    })
    system = LearningSystem(config)
    system.backends["fast"] = InstantBackend("fast", "Paris.")  # the router reads this very dict
    return system


def latency(system: LearningSystem, url: str, requests: int) -> dict[str, list[float]]:
    body = {"model": "fast", "messages": QUESTION}
    times: dict[str, list[float]] = {"gateway": [], "in-process": []}
    with httpx.Client(timeout=30) as client:
        for _ in range(20):  # warm both paths (connection, first capture)
            client.post(f"{url}/chat/completions", json=body).raise_for_status()
            system.model_manager.respond(QUESTION, model="fast")
        for block in range(requests // 20):
            for _ in range(10):
                started = time.perf_counter()
                client.post(f"{url}/chat/completions", json=body).raise_for_status()
                times["gateway"].append((time.perf_counter() - started) * 1000)
            for _ in range(10):
                started = time.perf_counter()
                system.model_manager.respond(QUESTION, model="fast")
                times["in-process"].append((time.perf_counter() - started) * 1000)
    return times


def _rate(worker: Callable[[], None], clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            worker()
            done[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


# One client as a program of its own (clients are other programs in real use: they must not share
# the server's interpreter lock): as many requests as fit between START and STOP; prints the count.
_CLIENT = """
import sys, time
import httpx2 as httpx
url, start, stop = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
body = {"model": "fast", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
done = 0
with httpx.Client(timeout=30) as client:
    client.post(url, json=body).raise_for_status()  # connected before the clock starts
    time.sleep(max(0.0, start - time.time()))
    while time.time() < stop:
        client.post(url, json=body).raise_for_status()
        done += 1
print(done)
"""


def throughput(system: LearningSystem, url: str, clients: int, seconds: float) -> dict[str, float]:
    start = time.time() + 2.0 + 0.1 * clients  # every client started and connected by then
    processes = [subprocess.Popen([sys.executable, "-c", _CLIENT, f"{url}/chat/completions", str(start),
                                   str(start + seconds)], stdout=subprocess.PIPE, text=True)
                 for _ in range(clients)]
    done = [int(process.communicate()[0].strip() or 0) for process in processes]
    return {"gateway": sum(done) / seconds,
            "in-process": _rate(lambda: system.model_manager.respond(QUESTION, model="fast"), clients, seconds)}


def ttft(system: LearningSystem, url: str, rounds: int) -> dict[str, list[float]]:
    body = {"model": "deepseek", "messages": QUESTION, "stream": True, "max_tokens": 32}
    times: dict[str, list[float]] = {"gateway": [], "in-process": []}

    def gateway_once(client: httpx.Client) -> float:
        started = time.perf_counter()
        first = None
        with client.stream("POST", f"{url}/chat/completions", json=body) as response:
            for line in response.iter_lines():  # read to the end: the answer is recorded either way
                if first is None and line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                    first = time.perf_counter() - started
        return (first or 0.0) * 1000

    def in_process_once() -> float:
        started = time.perf_counter()
        first = None
        for item in system.chat_stream(QUESTION, model="deepseek", max_new_tokens=32):
            if first is None and isinstance(item, str) and item:  # text, as the gateway's clock counts it
                first = time.perf_counter() - started
        return (first or 0.0) * 1000

    with httpx.Client(timeout=120) as client:
        gateway_once(client)  # load the model (and its llama.cpp copy) before timing
        in_process_once()
        for _ in range(rounds):
            times["gateway"].append(gateway_once(client))
            times["in-process"].append(in_process_once())
    return times


def spread(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400, help="requests per path per run (latency)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per throughput measurement")
    parser.add_argument("--ttft", type=int, default=8, help="streamed answers per path per run (ttft)")
    parser.add_argument("--quick", action="store_true", help="one short run (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.requests, args.seconds, args.ttft = 1, 100, 2.0, 3

    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            system = build_system(Path(tmp) / "data")
            server = start_gateway(system, "127.0.0.1", 0)
            try:
                lat = latency(system, server.url, args.requests)
                rates = {n: throughput(system, server.url, n, args.seconds) for n in (1, 4, 16)}
                first = ttft(system, server.url, args.ttft)
            finally:
                server.stop()
            row = {
                "gw_p50": percentile(lat["gateway"], 0.5), "gw_p99": percentile(lat["gateway"], 0.99),
                "ip_p50": percentile(lat["in-process"], 0.5), "ip_p99": percentile(lat["in-process"], 0.99),
                **{f"rps_gw_{n}": r["gateway"] for n, r in rates.items()},
                **{f"rps_ip_{n}": r["in-process"] for n, r in rates.items()},
                "ttft_gw": statistics.median(first["gateway"]), "ttft_ip": statistics.median(first["in-process"]),
                "runtime": system.learner_serving(),
            }
            row["added_p50"] = row["gw_p50"] - row["ip_p50"]
            row["ttft_ratio"] = row["ttft_gw"] / row["ttft_ip"]
            runs.append(row)
            print(f"run {run + 1}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in row.items()), flush=True)

    def col(key: str) -> list[float]:
        return [r[key] for r in runs]

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"local learner served by: {runs[-1]['runtime']}\n")
    print("| measurement (median of runs, min–max) | through the gateway | in-process (baseline) | gateway vs baseline |")
    print("|---|---:|---:|---:|")
    print(f"| one answer of an instant model, p50 | {spread(col('gw_p50'))} ms | {spread(col('ip_p50'))} ms | "
          f"+{spread(col('added_p50'))} ms |")
    print(f"| one answer of an instant model, p99 | {spread(col('gw_p99'))} ms | {spread(col('ip_p99'))} ms | |")
    for n in (1, 4, 16):
        gw, ip = col(f"rps_gw_{n}"), col(f"rps_ip_{n}")
        ratio = [g / i for g, i in zip(gw, ip)]
        print(f"| requests/s, {n} client{'s' if n > 1 else ''} | {spread(gw, 0)} | {spread(ip, 0)} | "
              f"{spread(ratio)}× |")
    print(f"| time to first token, local learner (streamed) | {spread(col('ttft_gw'), 0)} ms | "
          f"{spread(col('ttft_ip'), 0)} ms | {spread(col('ttft_ratio'))}× |")


if __name__ == "__main__":
    main()
