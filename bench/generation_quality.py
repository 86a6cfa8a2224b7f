"""How close each local generation path stays to the fp32 model.

For a fixed set of prompts, the fp32 HF model's greedy answer is the reference. Each path
(the torch fast loop, llama.cpp on the bundled GGUF and llama.cpp on GGUF exports of the
same model in several weight formats) is scored two ways:

* ROUGE-L F of its own greedy answer against the reference answer (the issue's check). A
  135M model often has near-ties between its top two tokens, so one flipped token can send
  a whole answer elsewhere: this number is noisy by nature.
* next-token agreement: the reference answer is fed token by token (teacher forcing) and we
  count how often the path's top token equals fp32's. This measures the weights and kernels
  without the snowball effect of free-running decoding.

    LLAMA_CPP_PATH=... .venv/bin/python bench/generation_quality.py [--tokens 48] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if os.environ.get("LLAMA_CPP_PATH"):
    sys.path.insert(0, os.environ["LLAMA_CPP_PATH"])

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dmac_core.learner.fast_decode import SERVING_WEIGHTS, FastGenerator, eos_token_ids  # noqa: E402

MODEL_DIR = ROOT / "data" / "base" / "SmolLM2-135M-Instruct"
PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "hi",
    "What is 12 + 7?",
    "Explain photosynthesis in one sentence.",
    "Give three tips for writing clear emails.",
    "What does a database index do?",
    "Summarise the water cycle for a child.",
    "Name two differences between a list and a tuple in Python.",
    "Why do we have seasons on Earth?",
    "Translate 'good morning' into Spanish.",
    "What should I check before sending a report to a client?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=48, help="new tokens per answer")
    ap.add_argument("--model", type=Path, default=MODEL_DIR)
    ap.add_argument("--formats", default="q8_0,f16,q4_1,f16/q8_0",
                    help="GGUF export formats to include; PROJ/EMBED (e.g. q8_0/f16) sets the embedding's too")
    args = ap.parse_args()
    torch.set_num_threads(2)

    from rouge_score import rouge_scorer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    eos = eos_token_ids(model, tok)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        for p in PROMPTS
    ]

    reference: list[list[int]] = []
    for ids in prompts:
        t = torch.tensor([ids])
        with torch.inference_mode():
            out = model.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=args.tokens,
                                 do_sample=False, temperature=None, top_p=None, top_k=None,
                                 pad_token_id=tok.pad_token_id)
        reference.append(out[0, len(ids):].tolist())
    # fp32 top-1 along each reference answer (teacher forcing), for the agreement rate
    scorer = rouge_scorer.RougeScorer(["rougeL"])

    def score(name: str, answers: list[list[int]], top1: list[list[int]]) -> dict[str, Any]:
        ref_text = [tok.decode(r, skip_special_tokens=True) for r in reference]
        got = [tok.decode(a, skip_special_tokens=True) for a in answers]
        rouge = [scorer.score(r, g)["rougeL"].fmeasure for r, g in zip(ref_text, got)]
        agree = [float(np.mean([a == b for a, b in zip(t, r)])) if r else 1.0 for t, r in zip(top1, reference)]
        row = {"path": name, "rouge_l": round(float(np.mean(rouge)), 3),
               "identical_answers": sum(g == r for g, r in zip(got, ref_text)),
               "next_token_agreement": round(float(np.mean(agree)), 4), "answers": [g[:70] for g in got]}
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    rows = []
    fast = FastGenerator(AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval(),
                         weights=SERVING_WEIGHTS, share_weights=True)
    answers = [list(fast.stream_tokens(torch.tensor(ids), args.tokens, 0.0, eos)) for ids in prompts]
    top1 = [_torch_top1(fast, ids, ref) for ids, ref in zip(prompts, reference)]
    rows.append(score(f"torch fast loop {SERVING_WEIGHTS} (shared)", answers, top1))

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama_cpp not importable: set LLAMA_CPP_PATH", file=sys.stderr)
    else:
        from dmac_core.learner.base_model import bundled_gguf_path
        from dmac_core.learner.gguf_export import write_gguf

        files = [("llama.cpp, bundled GGUF (Q4_1)", bundled_gguf_path())]
        tmp = Path(tempfile.mkdtemp(prefix="gguf-quality-"))
        for fmt in args.formats.split(","):
            proj, _, embed = fmt.partition("/")
            path = write_gguf(model, tmp / f"{proj}-{embed}.gguf", bundled_gguf_path(), proj, embedding_quant=embed or None)
            files.append((f"llama.cpp, export {fmt}", path))
        for name, path in files:
            answers, top1 = _llama_runs(path, prompts, reference, args.tokens, eos)
            rows.append(score(name, answers, top1))
    print(json.dumps({"tokens": args.tokens, "prompts": len(PROMPTS), "rows": rows}, indent=1))
    print("| path | ROUGE-L vs fp32 answers | identical answers | next-token agreement |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['path']} | {r['rouge_l']:.3f} | {r['identical_answers']}/{len(PROMPTS)} | "
              f"{100 * r['next_token_agreement']:.1f} % |")


def _torch_top1(fast: FastGenerator, ids: list[int], ref: list[int]) -> list[int]:
    """fast loop's argmax after the prompt and after each prefix of the reference answer."""
    out = []
    for k in range(len(ref)):
        prefix = torch.tensor(ids + ref[:k])
        out.append(next(iter(fast.stream_tokens(prefix, 1, 0.0, []))))
    return out


def _llama_runs(path: Path, prompts: list[list[int]], reference: list[list[int]], n: int,
                eos: list[int]) -> tuple[list[list[int]], list[list[int]]]:
    """Answers as served (LlamaCppGenerator), next-token agreement through llama_cpp.Llama
    (which can return the logits of every position)."""
    import llama_cpp

    from dmac_core.learner.llama_cpp_runtime import LlamaCppGenerator

    served = LlamaCppGenerator(path, n_threads=2, n_ctx=1024)
    answers = [list(served.stream_tokens(ids, n, 0.0, eos)) for ids in prompts]
    served.close()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=2, n_threads_batch=2,
                          logits_all=True, verbose=False)
    top1 = []
    for ids, ref in zip(prompts, reference):
        llm.reset()
        llm.eval(ids + ref)
        scores = np.asarray(llm.scores[len(ids) - 1: len(ids) - 1 + len(ref)])
        top1.append(scores.argmax(axis=1).tolist())
    llm.close()
    return answers, top1


if __name__ == "__main__":
    main()
