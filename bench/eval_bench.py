"""Batched evaluation vs one prompt at a time on the bundled model.

Both modes run the same code (``dmac_core.evaluation.local.generate_batch_details``), the
same 64 prompts, the same greedy decoding and ``max_new_tokens``, in the same process; only
the batch size differs (1 vs ``--batch-size``). Runs alternate (sequential, batched, ...) so
that a change in machine load hits both; the median of the runs is reported. Results are
printed and written to ``bench/RESULTS.md`` under ``## Batched evaluation`` (only
that section is replaced; other sections are left as they are).

    .venv/bin/python bench/eval_bench.py            # 3 runs, 32 new tokens
    .venv/bin/python bench/eval_bench.py --quick    # 1 run, 16 new tokens
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HEADING = "## Batched evaluation"

_TOPICS = ["the water cycle", "photosynthesis", "a binary search", "compound interest", "the French Revolution",
           "how vaccines work", "plate tectonics", "a hash table", "inflation", "the speed of light",
           "supply and demand", "the immune system", "how a bill becomes law", "black holes", "recycling", "DNA"]
_FORMS = [
    "What is {t}?",
    "Explain {t} to a ten-year-old in two sentences.",
    "Give one surprising fact about {t}.",
    "I am preparing a short internal training session for new analysts and want to open with an everyday "
    "example. Describe {t} in plain words, mention one common misconception, and keep it under fifty words.",
]


def bench_prompts(n: int = 64) -> list[str]:
    """``n`` prompts mixing short questions and long instructions (as real suites do)."""
    prompts = [form.format(t=topic) for topic in _TOPICS for form in _FORMS]
    return prompts[:n]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_section(path: Path, body: str) -> None:
    """Replace this benchmark's section in ``path`` (or append it); other sections untouched."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    section = f"{HEADING}\n\n{body.strip()}\n"
    start = text.find(HEADING)
    if start < 0:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section
    else:
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[nxt:] if nxt >= 0 else "")
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run, 16 new tokens (a smoke check, not the result)")
    parser.add_argument("--runs", type=int, default=None, help="runs per mode (default 3, or 1 with --quick)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 32, or 16 with --quick")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "out" / "eval_bench.md",
                        help="where the section is written (default bench/out/eval_bench.md)")
    parser.add_argument("--write-results", action="store_true",
                        help="replace this benchmark's section of bench/RESULTS.md instead")
    parser.add_argument("--no-write", action="store_true", help="print only; write nothing")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    max_new = args.max_new_tokens or (16 if args.quick else 32)

    import torch

    from dmac_core.backends.local import LocalBackend
    from dmac_core.config import load_config
    from dmac_core.evaluation.local import generate_batch_details
    from dmac_core.learner.registry import BASE_VERSION, ModelRegistry

    config = load_config()
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), ModelRegistry(config.data_path / "models"))
    if not backend.available().ok:
        print(backend.available().reason, file=sys.stderr)
        return 2
    from dmac_core.learner.loading import load_model

    loaded = load_model(backend.base_path, backend.registry.get(BASE_VERSION), backend.dtype)  # the bundled model itself
    prompts = bench_prompts(args.prompts)
    load_before = os.getloadavg()
    print(f"{len(prompts)} prompts, {max_new} new tokens, batch {args.batch_size}, {runs} run(s), dtype {backend.dtype}, "
          f"torch threads {torch.get_num_threads()}, load {load_before[0]:.2f}", flush=True)
    generate_batch_details(loaded, prompts[:2], 4, batch_size=2)  # warm-up: first call pays one-off costs

    times: dict[str, list[float]] = {"sequential": [], "batched": []}
    outputs: dict[str, list[dict]] = {}
    for run in range(runs):
        for mode, size in (("sequential", 1), ("batched", args.batch_size)):
            started = time.perf_counter()
            outputs[mode] = generate_batch_details(loaded, prompts, max_new, batch_size=size)
            times[mode].append(time.perf_counter() - started)
            print(f"run {run + 1}/{runs} {mode:10s} {times[mode][-1]:7.1f} s", flush=True)
    load_after = os.getloadavg()
    seq, bat = statistics.median(times["sequential"]), statistics.median(times["batched"])
    tokens = {mode: sum(r["tokens_out"] for r in outs) for mode, outs in outputs.items()}
    same = sum(a["text"] == b["text"] for a, b in zip(outputs["sequential"], outputs["batched"]))
    speedup = seq / bat
    verdict = "meets" if speedup >= 3 else "MISSES"
    body = f"""
Batched greedy generation for evaluation (`generate_batch_details`, left padding, prompts grouped by
length) against the same function one prompt at a time, same process, runs alternating.

| | one at a time | batched (batch {args.batch_size}) |
|---|---|---|
| median wall time, {len(prompts)} prompts | {seq:.1f} s | {bat:.1f} s |
| all runs (s) | {", ".join(f"{t:.1f}" for t in times["sequential"])} | {", ".join(f"{t:.1f}" for t in times["batched"])} |
| new tokens (last run) | {tokens["sequential"]} | {tokens["batched"]} |
| generated tokens / s | {tokens["sequential"] / seq:.1f} | {tokens["batched"] / bat:.1f} |

**Speed-up: {speedup:.1f}×** ({verdict} the ≥ 3× target). Identical answers batched vs one at a time:
{same}/{len(prompts)} (fp32 batched matmuls may flip near-tie tokens; alignment is by construction).

- Model: bundled SmolLM2-135M-Instruct (base), dtype {str(backend.dtype).replace("torch.", "")}, greedy,
  max_new_tokens {max_new}, {runs} run(s) per mode{" (--quick)" if args.quick else ""}.
- Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads;
  load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (other work was {"running" if max(load_before[0], load_after[0]) > 1.5 else "mostly idle"}).
- Date: {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}.
- Command: `.venv/bin/python bench/eval_bench.py{" --quick" if args.quick else ""}` (`--batch-size`, `--runs`, `--max-new-tokens` to vary).
"""
    print(body)
    if not args.no_write:
        target = ROOT / "bench" / "RESULTS.md" if args.write_results else args.results
        target.parent.mkdir(parents=True, exist_ok=True)
        write_section(target, body)
        print(f"Written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
