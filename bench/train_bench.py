"""Training throughput on the bundled model: useful (non-padding) tokens per second.

Compares, on the same 200 synthetic rated Q&A pairs of varied length, in the same process:

- ``ours``         the shipped trainer (``dmac_core.training.trainer.build_trainer``) with the
                   shipped defaults (LoRA r=16 on all linear layers, batch 8, padding-free batches);
- ``ours-padded``  the same with ``padding_free: false`` (why padding-free is shipped);
- ``trl-lora``     TRL's ``SFTTrainer`` with the same LoRA config, data, batch and max_length
                   (TRL's defaults otherwise): the like-for-like baseline of the headline ratio;
- ``trl-defaults`` (extra row) TRL's ``SFTTrainer`` as a user would call it: ``SFTConfig()`` defaults
                   (full fine-tuning, gradient checkpointing, max_length 1024, batch 8) except
                   ``output_dir``, ``report_to``, ``max_steps`` and ``bf16=False`` (no native
                   bf16 on this CPU).

Each configuration trains ``warmup + steps`` optimizer steps, ``--repeats`` times (default 3)
interleaved with the others; the first ``warmup`` steps are dropped, the median of the remaining
per-step rates is a run's rate, and the median of the runs is reported with their spread (tokens counted from the batches the
collator built: attention-mask sum when padded, row length when padding-free). The machine's
fp32 (and bf16) matmul rate is measured in the same run (``torch.mm`` loop, 2 threads), and
the model FLOP utilisation is estimated as tokens/s × FLOPs per token / matmul rate, with
6·N FLOPs per token for full fine-tuning and 4·N for LoRA (no weight gradients for frozen
weights), N = parameters in matmuls (tied embeddings count once, as the LM head).

    .venv/bin/python bench/train_bench.py            # 2 warm-up + 5 timed steps per config
    .venv/bin/python bench/train_bench.py --quick    # 1 warm-up + 3 timed steps
    .venv/bin/python bench/train_bench.py --no-write # print only

Results go to ``bench/out/train_bench.md`` (``--write-results`` appends them to ``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HEADING = "## Training throughput"

_SUBJECTS = ["the Q3 churn report", "our data retention policy", "the Nordic sales pipeline", "a VLOOKUP error",
             "the onboarding checklist", "supplier risk scores", "the pricing experiment", "GDPR subject requests",
             "the weekly KPI deck", "warehouse stock levels", "the cohort analysis", "invoice matching"]
_OPENERS = ["Summarise", "Explain", "What changed in", "Give me three risks in", "How do I fix", "Draft an email about"]
_WORDS = ("the team reviewed figures for each region and found that most of the change came from a small number "
          "of large accounts while smaller customers stayed stable over the period which suggests focusing follow "
          "up work on renewal timing pricing tiers and support response times before the next planning cycle").split()


def synthetic_pairs(n: int = 200, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` rated Q&A pairs with realistic spread: short questions, 10- to 220-word answers."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        question = f"{rng.choice(_OPENERS)} {rng.choice(_SUBJECTS)}?"
        if rng.random() < 0.3:
            question += " " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(10, 40)))
        length = int(min(220, max(10, rng.lognormvariate(3.9, 0.7))))  # median ≈ 50 words, long tail
        answer = " ".join(rng.choice(_WORDS) for _ in range(length)).capitalize() + "."
        pairs.append((question, answer))
    return pairs


def matmul_gflops(dtype: Any, seconds: float = 3.0, n: int = 1024) -> float:
    import torch

    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    rates = []
    for _ in range(3):
        iters, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            torch.mm(a, b)
            iters += 1
        rates.append(2 * n**3 * iters / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


class _Meter:
    """Counts useful tokens per collated batch and times optimizer steps."""

    def __init__(self, trainer: Any) -> None:
        from transformers import TrainerCallback

        self.tokens: list[int] = []
        self.times: list[float] = []
        collate = trainer.data_collator
        meter = self

        def counting(rows: list[dict[str, Any]]) -> dict[str, Any]:
            batch = collate(rows)
            mask = batch.get("attention_mask")
            meter.tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
            return batch

        trainer.data_collator = counting

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
                meter._t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                meter.times.append(time.perf_counter() - meter._t0)

        trainer.add_callback(Timer())


def _run(trainer: Any, warmup: int, steps: int) -> dict[str, Any]:
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    meter = _Meter(trainer)
    trainer.args.max_steps = warmup + steps
    trainer.train()
    rates = [tok / t for tok, t in zip(meter.tokens[warmup:], meter.times[warmup:])]
    return {"tokens_per_s": statistics.median(rates), "rates": rates,
            "tokens_per_step": statistics.mean(meter.tokens[warmup:]), "step_s": statistics.median(meter.times[warmup:])}


def build_ours(model_dir: Path, pairs: list[tuple[str, str]], out: Path, padding_free: bool) -> Any:
    from dmac_core.config import Config
    from dmac_core.training.dataset import TrainingData
    from dmac_core.training.trainer import build_trainer

    config = Config.model_validate({"data_dir": str(out), "models": {"deepseek": {
        "kind": "local", "base_model": str(model_dir), "precision": "fp32", "padding_free": padding_free,
        "validation_fraction": 0.0}}})
    examples = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}],
                 "weight": 1.0, "record_ids": []} for q, a in pairs]
    return build_trainer(config, out, TrainingData(sft_train=examples), "sft", [])


def build_trl_defaults(model_dir: Path, pairs: list[tuple[str, str]], out: Path) -> Any:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
            for q, a in pairs]
    args = SFTConfig(output_dir=str(out), report_to=[], max_steps=1, bf16=False, save_strategy="no",
                     disable_tqdm=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      processing_class=AutoTokenizer.from_pretrained(model_dir))


def build_trl_lora(model_dir: Path, pairs: list[tuple[str, str]], out: Path) -> Any:
    """TRL's ``SFTTrainer`` with the shipped LoRA config, data, batch and max_length; TRL's
    defaults for everything else (a user adding LoRA to TRL's own example)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from dmac_core.config import LocalModelConfig

    shipped = LocalModelConfig()
    rows = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
            for q, a in pairs]
    args = SFTConfig(output_dir=str(out), report_to=[], max_steps=1, bf16=False, save_strategy="no",
                     disable_tqdm=True, per_device_train_batch_size=shipped.batch_size, max_length=shipped.max_length)
    lora = LoraConfig(r=shipped.lora.r, lora_alpha=shipped.lora.alpha, lora_dropout=shipped.lora.dropout,
                      target_modules=list(shipped.lora.target_modules), task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      processing_class=AutoTokenizer.from_pretrained(model_dir), peft_config=lora)


def count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_dir / "model.safetensors"), "pt") as handle:
        for key in handle.keys():
            if key.endswith("weight") and "norm" not in key:
                total += handle.get_slice(key).get_shape()[0] * handle.get_slice(key).get_shape()[-1]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 warm-up + 3 timed steps per configuration")
    parser.add_argument("--no-write", action="store_true", help="print only; write nothing")
    parser.add_argument("--write-results", action="store_true",
                        help="append the section to bench/RESULTS.md (default: bench/out/train_bench.md)")
    parser.add_argument("--only", nargs="*", default=None, help="configurations to run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each configuration, interleaved (A B C A B C ...); medians and spread")
    args = parser.parse_args()

    import logging

    import torch
    from datasets.utils.logging import disable_progress_bar

    from dmac_core.config import BUNDLED_BASE_MODEL_NAME, PROJECT_ROOT
    from dmac_core.learner.precision import cpu_supports_bf16

    disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(2)
    warmup, steps = (1, 3) if args.quick else (2, 5)
    model_dir = PROJECT_ROOT / "data" / "base" / BUNDLED_BASE_MODEL_NAME
    pairs = synthetic_pairs()
    started = time.perf_counter()

    results: dict[str, dict[str, Any]] = {}
    builders = {
        "ours": lambda out: build_ours(model_dir, pairs, out, padding_free=True),
        "trl-lora": lambda out: build_trl_lora(model_dir, pairs, out),
        "ours-padded": lambda out: build_ours(model_dir, pairs, out, padding_free=False),
        "trl-defaults": lambda out: build_trl_defaults(model_dir, pairs, out),
    }
    fp32 = matmul_gflops(torch.float32)
    runs: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(max(1, args.repeats)):  # interleaved, so a busy spell slows every configuration
        for name, build in builders.items():
            if args.only and name not in args.only:
                continue
            with tempfile.TemporaryDirectory(prefix="dmac-trainbench-") as tmp:
                trainer = build(Path(tmp))
                runs.setdefault(name, []).append(_run(trainer, warmup, steps))
                del trainer
            last = runs[name][-1]
            print(f"run {repeat + 1}: {name:13s} {last['tokens_per_s']:7.1f} useful tok/s  "
                  f"({last['tokens_per_step']:.0f} tok/step, {last['step_s']:.2f} s/step)", flush=True)
    for name, done in runs.items():
        rates = [r["tokens_per_s"] for r in done]
        results[name] = {"tokens_per_s": statistics.median(rates), "spread": (min(rates), max(rates)),
                         "rates": rates, "tokens_per_step": statistics.mean(r["tokens_per_step"] for r in done),
                         "step_s": statistics.median(r["step_s"] for r in done)}
    fp32_after = matmul_gflops(torch.float32)
    bf16 = matmul_gflops(torch.bfloat16)
    fp32_rate = statistics.mean([fp32, fp32_after])

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    # apply_chat_template(tokenize=True) returns a BatchEncoding in transformers 5: render, then tokenise.
    lengths = [len(tok(tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                               tokenize=False), add_special_tokens=False)["input_ids"]) for q, a in pairs]
    mean_tokens = statistics.mean(lengths)
    n_params = count_params(model_dir)
    flops_per_token = {"ours": 4 * n_params, "ours-padded": 4 * n_params, "trl-lora": 4 * n_params,
                       "trl-defaults": 6 * n_params}
    lines = [
        f"Matmul (torch.mm 1024², 2 threads): fp32 {fp32_rate:.0f} GFLOP/s (before {fp32:.0f}, after {fp32_after:.0f}); "
        f"bf16 {bf16:.0f} GFLOP/s ({'native' if cpu_supports_bf16() else 'emulated: no avx512_bf16, so training runs in fp32'}).",
        f"Data: {len(pairs)} synthetic rated Q&A pairs, {mean_tokens:.0f} tokens each on average "
        f"(min {min(lengths)}, max {max(lengths)}); {warmup} warm-up + {steps} timed steps per configuration, median.",
        "",
        f"Each configuration run {args.repeats}× interleaved; useful tok/s is the median of the runs (min–max).",
        "",
        "| configuration | useful tok/s (min–max) | × TRL, same LoRA config | tokens/step | s/step | MFU vs fp32 matmul |",
        "|---|---|---|---|---|---|",
    ]
    base = results.get("trl-lora", {}).get("tokens_per_s")
    for name, r in results.items():
        mfu = r["tokens_per_s"] * flops_per_token[name] / (fp32_rate * 1e9)
        ratio = f"{r['tokens_per_s'] / base:.2f}" if base else "n/a"
        low, high = r["spread"]
        lines.append(f"| {name} | {r['tokens_per_s']:.0f} ({low:.0f}–{high:.0f}) | {ratio} | {r['tokens_per_step']:.0f} "
                     f"| {r['step_s']:.2f} | {mfu:.0%} |")
    if "ours" in results:
        epoch_s = 1000 * mean_tokens / results["ours"]["tokens_per_s"]
        lines += ["", f"One epoch over 1,000 rated interactions of this length mix with the shipped trainer: "
                      f"≈ {1000 * mean_tokens:,.0f} tokens / {results['ours']['tokens_per_s']:.0f} tok/s ≈ {epoch_s / 60:.1f} min."]
    lines.append("Per-step rates: " + "; ".join(f"{n}: {', '.join(f'{x:.0f}' for x in r['rates'])}" for n, r in results.items()))
    body = "\n".join(lines)
    print(body)
    print(f"(bench took {time.perf_counter() - started:.0f} s)")
    if not args.no_write:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        section = (f"\n{HEADING}\n\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__}; {stamp}; command: `.venv/bin/python bench/train_bench.py"
                   f"{' --quick' if args.quick else ''}`.\n\n{body}\n")
        target = ROOT / "bench" / ("RESULTS.md" if args.write_results else "out/train_bench.md")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(section)
        print(f"Written to {target}")


if __name__ == "__main__":
    main()
