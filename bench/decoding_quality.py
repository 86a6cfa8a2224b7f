"""Which served weight format and decoding defaults give answers worth reading?

On the sixty everyday prompts of ``bench/everyday_prompts.yaml`` (facts, how-to, writing,
reasoning), every combination of GGUF weight format (served by llama.cpp, as chat serves) and
repetition penalty is asked for a full chat answer (``--max-new-tokens``, the chat default 256),
with the loop guard *off* so that loops are counted rather than cut. Per combination:

* **loops**: answers whose tail became one block of tokens repeated back to back (what
  ``dmac_core.learner.decoding.LoopGuard`` stops and marks in chat);
* **runaway**: answers that hit the token limit without ending their turn;
* **same as fp32**: answers identical to the fp32 transformers model's with the same penalty
  (greedy, batched ``generate()``), and the mean ROUGE-L F against them;
* "What is the capital of France?" answered with Paris, and tokens per second.

The fp32 rows are the reference model itself (identical by definition); they show how often
fp32 loops. Results go to stdout as a table and, with ``--out``, as JSON.

    .venv/bin/python bench/decoding_quality.py [--formats f16,q8_0] [--penalties 1.0,1.1,1.2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from dmac_core.evaluation.local import left_padded_batches  # noqa: E402
from dmac_core.learner.decoding import generated_tokens_penalty, looping  # noqa: E402
from dmac_core.learner.fast_decode import eos_token_ids  # noqa: E402

MODEL_DIR = ROOT / "data" / "base" / "SmolLM2-135M-Instruct"
PROMPTS_FILE = ROOT / "bench" / "everyday_prompts.yaml"


def load_prompts(path: Path = PROMPTS_FILE) -> list[tuple[str, str]]:
    """(category, prompt) pairs of the everyday prompt set, in file order."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [(category, prompt) for category, prompts in data.items() for prompt in prompts]


def fp32_answers(model: Any, eos: list[int], prompts: list[list[int]], max_new: int, penalty: float,
                 window: int, batch: int = 8) -> list[list[int]]:
    """Greedy fp32 answers (token ids, EOS excluded), batched with left padding."""
    out: list[list[int]] = [[] for _ in prompts]
    pad = eos[0]
    for chunk, ids, mask in left_padded_batches(prompts, batch, pad):
        width = ids.shape[1]
        processors = [generated_tokens_penalty(width, penalty, window)] if penalty != 1.0 else []
        from transformers import LogitsProcessorList

        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                 temperature=None, top_p=None, top_k=None, pad_token_id=pad,
                                 logits_processor=LogitsProcessorList(processors))
        for row, i in enumerate(chunk):
            new = gen[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in eos), len(new))
            out[i] = new[:cut]
    return out


def llama_answers(generator: Any, eos: list[int], prompts: list[list[int]], max_new: int, penalty: float,
                  window: int) -> tuple[list[list[int]], float]:
    """Greedy answers through llama.cpp, each prefilled from scratch; returns (ids, tokens/s)."""
    answers, tokens, seconds = [], 0, 0.0
    for ids in prompts:
        generator.reset()
        started = time.perf_counter()
        new = list(generator.stream_tokens(ids, max_new, 0.0, eos, repeat_penalty=penalty, penalty_window=window))
        seconds += time.perf_counter() - started
        tokens += len(new)
        answers.append(new)
    return answers, tokens / max(seconds, 1e-9)


def summarize(name: str, penalty: float, answers: list[list[int]], reference: list[list[int]], tok: Any,
              prompts: list[tuple[str, str]], max_new: int, tps: float | None) -> dict[str, Any]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    texts = [tok.decode(a, skip_special_tokens=True).strip() for a in answers]
    refs = [tok.decode(a, skip_special_tokens=True).strip() for a in reference]
    loops = [prompts[i][1] for i, a in enumerate(answers) if looping(a)]
    runaway = [prompts[i][1] for i, a in enumerate(answers) if len(a) >= max_new]
    france = next(texts[i] for i, (_, p) in enumerate(prompts) if p == "What is the capital of France?")
    return {
        "path": name, "penalty": penalty, "n": len(answers), "loops": len(loops), "loop_prompts": loops,
        "runaway": len(runaway), "runaway_prompts": runaway,
        "same_as_fp32": sum(a == r for a, r in zip(answers, reference)),
        "rougeL_vs_fp32": statistics.mean(scorer.score(r, t)["rougeL"].fmeasure for r, t in zip(refs, texts)),
        "france": france[:120], "france_paris": "paris" in france.lower(),
        "mean_tokens": statistics.mean(len(a) for a in answers), "tokens_per_s": tps,
        "answers": texts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="f16,q8_0", help="GGUF weight formats served by llama.cpp")
    ap.add_argument("--penalties", default="1.0,1.1,1.15,1.2,1.3", help="repetition penalties to compare")
    ap.add_argument("--window", type=int, default=64, help="generated tokens the penalty looks back on")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--model", type=Path, default=MODEL_DIR)
    ap.add_argument("--out", type=Path, help="write every answer and number as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(2)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dmac_core.learner.base_model import bundled_gguf_path
    from dmac_core.learner.gguf_export import write_gguf
    from dmac_core.learner.llama_cpp_runtime import LlamaCppGenerator

    prompts = load_prompts()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    eos = eos_token_ids(model, tok)
    encoded = [list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                            return_dict=True)["input_ids"]) for _, p in prompts]
    penalties = [float(p) for p in args.penalties.split(",")]
    rows: list[dict[str, Any]] = []
    references: dict[float, list[list[int]]] = {}
    for penalty in penalties:
        started = time.perf_counter()
        references[penalty] = fp32_answers(model, eos, encoded, args.max_new_tokens, penalty, args.window)
        print(f"fp32 penalty {penalty}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        rows.append(summarize("fp32 transformers (reference)", penalty, references[penalty], references[penalty],
                              tok, prompts, args.max_new_tokens, None))
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            path = write_gguf(model, Path(tmp) / f"m.{fmt}.gguf", bundled_gguf_path(), quant=fmt)
            generator = LlamaCppGenerator(path)
            for penalty in penalties:
                answers, tps = llama_answers(generator, eos, encoded, args.max_new_tokens, penalty, args.window)
                rows.append(summarize(f"llama.cpp {fmt}", penalty, answers, references[penalty], tok, prompts,
                                      args.max_new_tokens, tps))
                print(f"{fmt} penalty {penalty}: {tps:.1f} tok/s", file=sys.stderr, flush=True)
            generator.close()

    print(f"\n{len(prompts)} prompts, {args.max_new_tokens} new tokens, greedy, penalty window {args.window}\n")
    print("| path | repeat penalty | loops | runaway | same as fp32 (same penalty) | ROUGE-L vs fp32 | France → Paris | mean tokens | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        tps = f"{r['tokens_per_s']:.1f}" if r["tokens_per_s"] else "-"
        print(f"| {r['path']} | {r['penalty']:g} | {r['loops']}/{r['n']} | {r['runaway']}/{r['n']} | "
              f"{r['same_as_fp32']}/{r['n']} | {r['rougeL_vs_fp32']:.3f} | {'yes' if r['france_paris'] else 'no'} | "
              f"{r['mean_tokens']:.0f} | {tps} |")
    for r in rows:
        if r["loops"]:
            print(f"- {r['path']} {r['penalty']:g} loops on: {'; '.join(r['loop_prompts'])}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
