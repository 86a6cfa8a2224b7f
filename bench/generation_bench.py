"""Local generation speed: fp32 HF ``generate()`` vs the shipped path vs llama.cpp.

The shipped path is what ``LocalBackend`` serves with the shipped config: llama.cpp over a
GGUF export of the served version (``gguf_weights``: f16), through ``LlamaCppGenerator``.
Compared like for like: llama.cpp itself driven the plain llama-cpp-python way
(``Llama.generate``) on the very same GGUF file, and transformers ``generate()`` in the
precision of that file's weights (fp16), all greedy without repetition penalty; fp32
transformers and llama.cpp on the bundled Q4_1 file are extra rows. Also measured: the torch decode loop (the
fallback when llama-cpp-python is missing) and other export formats.

All variants run in ONE process, interleaved round by round (A B C A B C ...), so a busy
machine slows them alike and the ratios stay meaningful; medians of the rounds are
reported. Batch 1, 2 threads, greedy.

* tokens/s: 64 new tokens after a short chat prompt (EOS ignored), end to end.
* first token: a 40-token prompt, prefill + first token.
* RSS: a fresh subprocess per served variant: load, prepare, answer once, read VmRSS.

llama.cpp variants run when ``llama_cpp`` is importable (``make setup`` builds it into the
venv; LLAMA_CPP_PATH adds another directory holding it to the path).

    .venv/bin/python bench/generation_bench.py [--quick] [--rounds N] [--append-results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if os.environ.get("LLAMA_CPP_PATH"):
    sys.path.insert(0, os.environ["LLAMA_CPP_PATH"])

import torch  # noqa: E402

from dmac_core.config import LocalModelConfig  # noqa: E402
from dmac_core.learner.fast_decode import SERVING_WEIGHTS, FastGenerator  # noqa: E402

MODEL_DIR = ROOT / "data" / "base" / "SmolLM2-135M-Instruct"
NEW_TOKENS = 64
TTFT_PROMPT_TOKENS = 40
SHIPPED = SERVING_WEIGHTS  # the torch loop's weight format (the fallback runtime)
SHIPPED_GGUF = LocalModelConfig().gguf_weights  # the GGUF format LocalBackend serves by default


def load(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tok


def prompts(tok: Any) -> tuple[list[int], list[int]]:
    chat = [{"role": "user", "content": "Explain briefly why the sky is blue."}]
    short = tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    text = (
        "You are a careful analyst. Summarise the main risks of moving a small team's reporting "
        "from spreadsheets to a shared database, and say which one matters most and why, in detail please."
    )
    # drop words from the end of the user text until the whole chat prompt is <= 40 tokens
    words = text.split()
    while True:
        chat40 = [{"role": "user", "content": " ".join(words)}]
        ids = tok.apply_chat_template(chat40, add_generation_prompt=True, return_dict=True)["input_ids"]
        if len(ids) <= TTFT_PROMPT_TOKENS:
            break
        words.pop()
    return list(short), list(ids)


class Variant:
    """A named way to (a) generate N tokens and (b) produce the first token."""

    def __init__(self, name: str, run: Callable[[list[int], int], int]) -> None:
        self.name, self.run = name, run
        self.tps: list[float] = []
        self.ttft: list[float] = []


def hf_variant(model: Any, tok: Any, label: str = "fp32 HF generate (baseline)") -> Variant:
    def run(ids: list[int], n: int) -> int:
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = model.generate(
                input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
            )
        return out.shape[1] - len(ids)

    return Variant(label, run)


def fast_variant(model: Any, weights: str, shared: bool = False) -> tuple[Variant, float]:
    """The decode loop on ``model``: fused projections, or ``shared`` with the HF model's
    modules as LocalBackend serves it (that rewires ``model``, so give it its own copy)."""
    started = time.perf_counter()
    gen = FastGenerator(model, weights=weights, max_len=1024, share_weights=shared)
    prep = time.perf_counter() - started

    def run(ids: list[int], n: int) -> int:
        return sum(1 for _ in gen.stream_tokens(ids, n, 0.0, eos_ids=()))

    label = f"torch loop {weights}" + (" shared with the HF model (fallback runtime)" if shared else " fused")
    return Variant(label, run), prep


def llama_cpp_variant(path: Path | None = None, label: str = "") -> Variant | None:
    """llama.cpp used the plain llama-cpp-python way (``Llama.generate``, greedy, no repeat
    penalty — the sampling of every variant here) on ``path`` (default: the bundled Q4_1 GGUF)."""
    try:
        import llama_cpp
    except ImportError:
        return None
    from dmac_core.learner.base_model import bundled_gguf_path

    llm = llama_cpp.Llama(model_path=str(path or bundled_gguf_path()), n_ctx=1024, n_threads=2, n_threads_batch=2,
                          n_batch=512, verbose=False)

    def run(ids: list[int], n: int) -> int:
        llm.reset()  # no prefix reuse between rounds: every run prefills its prompt
        count = 0
        for _ in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            count += 1
            if count >= n:
                break
        return count

    return Variant(f"llama.cpp {llama_cpp.__version__} Llama.generate, {label or 'bundled GGUF (Q4_1)'}", run)


def export_variant(model: Any, weights: str, workdir: Path, shipped: bool) -> tuple[Variant, float] | None:
    """LocalBackend's llama.cpp path: the model exported to GGUF, decoded by LlamaCppGenerator."""
    from dmac_core.learner.base_model import bundled_gguf_path
    from dmac_core.learner.gguf_export import write_gguf
    from dmac_core.learner.llama_cpp_runtime import LlamaCppGenerator, llama_cpp_importable

    if not llama_cpp_importable():
        return None
    started = time.perf_counter()
    path = write_gguf(model, workdir / f"{weights}.gguf", bundled_gguf_path(), weights)
    gen = LlamaCppGenerator(path, n_threads=2, n_ctx=1024)
    prep = time.perf_counter() - started

    def run(ids: list[int], n: int) -> int:
        gen.reset()  # as the reference: no prefix reuse between rounds (chat turns do reuse it)
        return sum(1 for _ in gen.stream_tokens(ids, n, 0.0, eos_ids=()))

    label = f"ours: LlamaCppGenerator, {weights} GGUF export" + (" (shipped)" if shipped else "")
    variant = Variant(label, run)
    variant.path = path  # type: ignore[attr-defined] - the reference runs on these very bytes
    return variant, prep


def measure(variants: list[Variant], short: list[int], p40: list[int], rounds: int) -> None:
    for v in variants:  # warm-up: first-call allocations, lazy inits
        v.run(short, 4)
    for _ in range(rounds):
        for v in variants:
            t0 = time.perf_counter()
            n = v.run(short, NEW_TOKENS)
            v.tps.append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            v.run(p40, 1)
            v.ttft.append((time.perf_counter() - t0) * 1000)
            print(f"round {len(v.tps)}: {v.name}: {v.tps[-1]:.1f} tok/s, first token {v.ttft[-1]:.0f} ms "
                  f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)


RSS_CHILD = """
import os, sys, torch
sys.path.insert(0, {root!r})
if os.environ.get("LLAMA_CPP_PATH"):
    sys.path.insert(0, os.environ["LLAMA_CPP_PATH"])
torch.set_num_threads(2)
from pathlib import Path
def rss():
    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) / 1024
before = rss()
kind = {kind!r}
if kind == "hf":
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained({model!r}, dtype=torch.float32).eval()
    with torch.inference_mode():
        m.generate(input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=8, do_sample=False)
else:  # what LocalBackend serves: load the base version, answer a 500-token conversation
    from dmac_core.learner.loading import load_llama_cpp, load_model
    from dmac_core.learner.registry import ModelRegistry
    base = ModelRegistry(Path({workdir!r}) / "models").get("base")
    if kind == "torch":
        g = load_model(Path({model!r}), base, torch.float32, {weights!r}).fast
    else:
        g = load_llama_cpp(Path({model!r}), base, {gguf!r}, Path({workdir!r}) / "gguf", 2).fast
    list(g.stream_tokens(list(range(1, 300)), 200, 0.0, []))
print(rss(), rss() - before)
"""


def rss_mb(model_dir: Path, kind: str, workdir: Path) -> tuple[float, float]:
    """(process, model) resident MB after load + one answer, in a fresh process. ``kind``:
    "hf" (fp32 transformers), "torch" (the torch loop as served), "llama" (llama.cpp as served;
    run it twice: the first load exports the GGUF, the second is a restarted server)."""
    code = RSS_CHILD.format(root=str(ROOT), model=str(model_dir), kind=kind, weights=SHIPPED,
                            gguf=SHIPPED_GGUF, workdir=str(workdir))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    total, model = out.stdout.split()[-2:]
    return float(total), float(model)


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0) / 2**20
    cap = torch.backends.cpu.get_cpu_capability()
    return f"nproc {os.cpu_count()}, {cpu}, {mem:.0f} GiB RAM, torch CPU capability {cap}, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="3 rounds, no RSS subprocesses: fp32, shipped, torch fallback, llama.cpp reference")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", type=Path, default=MODEL_DIR)
    ap.add_argument("--formats", default="fp32,fp16,int8", help="torch-loop weight formats to include (fused)")
    ap.add_argument("--gguf", default="f16,q4_1", help="other GGUF export formats to include")
    ap.add_argument("--append-results", action="store_true", help="append a section to bench/RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rounds = 3 if args.quick else max(3, args.rounds)
    formats = [] if args.quick else args.formats.split(",")

    model, tok = load(args.model)
    short, p40 = prompts(tok)
    workdir = Path(tempfile.mkdtemp(prefix="generation-bench-"))
    variants = [hf_variant(model, tok)]
    prep: dict[str, float] = {}
    exports = [SHIPPED_GGUF] if args.quick else [SHIPPED_GGUF, *[f for f in args.gguf.split(",") if f != SHIPPED_GGUF]]
    for weights in exports:
        made = export_variant(model, weights, workdir, shipped=weights == SHIPPED_GGUF)
        if made is not None:
            variants.append(made[0])
            prep[f"export {weights}"] = made[1]
    v, prep[f"torch {SHIPPED} shared"] = fast_variant(load(args.model)[0], SHIPPED, shared=True)
    variants.append(v)
    for fmt in formats:
        v, prep[f"torch {fmt} fused"] = fast_variant(model, fmt)
        variants.append(v)
    # Like for like: llama.cpp's own generate() on the very file we serve, and transformers in
    # the precision of that file's weights (the f16 export: fp16).
    shipped_variant = next((v for v in variants if getattr(v, "path", None) and "(shipped)" in v.name), None)
    lcpp = llama_cpp_variant(shipped_variant.path, f"the same {SHIPPED_GGUF} file (reference)") \
        if shipped_variant is not None else None
    if lcpp is not None:
        variants.append(lcpp)
    bundled = llama_cpp_variant()
    if bundled is not None:
        variants.append(bundled)
    same_precision = None
    if SHIPPED_GGUF == "f16":
        import copy

        same_precision = hf_variant(copy.deepcopy(model).half(), tok, "fp16 HF generate (the f16 file's precision)")
        variants.insert(1, same_precision)
    load_start = os.getloadavg()
    measure(variants, short, p40, rounds)
    load_end = os.getloadavg()

    base_tps = statistics.median(variants[0].tps)
    ref_tps = statistics.median(lcpp.tps) if lcpp else None
    same_tps = statistics.median(same_precision.tps) if same_precision else None
    rows = []
    for v in variants:
        tps, ttft = statistics.median(v.tps), statistics.median(v.ttft)
        rows.append({
            "variant": v.name, "tok_s": round(tps, 1), "tok_s_spread": [round(min(v.tps), 1), round(max(v.tps), 1)],
            "x_fp32": round(tps / base_tps, 2),
            "x_same_precision": round(tps / same_tps, 2) if same_tps else None,
            "x_llama_cpp": round(tps / ref_tps, 2) if ref_tps else None, "ttft_ms": round(ttft, 1),
            "tok_s_runs": [round(x, 1) for x in v.tps], "ttft_runs": [round(x, 1) for x in v.ttft],
        })
    rss: dict[str, tuple[float, float]] = {}
    if not args.quick:
        rss["fp32 HF model"] = rss_mb(args.model, "hf", workdir)
        rss[f"torch loop {SHIPPED} (fallback)"] = rss_mb(args.model, "torch", workdir)
        if lcpp is not None:
            rss["llama.cpp, first load (exports the GGUF)"] = rss_mb(args.model, "llama", workdir)
            rss["llama.cpp, restarted (GGUF cached): shipped"] = rss_mb(args.model, "llama", workdir)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(), "rounds": rounds, "prompt_tokens": [len(short), len(p40)],
        "load_avg_start": [round(x, 2) for x in load_start], "load_avg_end": [round(x, 2) for x in load_end],
        "prepare_s": {k: round(x, 2) for k, x in prep.items()}, "rows": rows,
        "rss_mb": {k: {"process": round(a), "model": round(b)} for k, (a, b) in rss.items()},
        "llama_cpp": "measured" if lcpp else "not importable (make setup builds it; or set LLAMA_CPP_PATH)",
    }
    print(json.dumps(report, indent=1))
    print(table(report))
    if args.append_results:
        append_results(report)


def table(r: dict[str, Any]) -> str:
    lines = ["| variant | tokens/s (64 new; min–max) | × HF fp32 | × HF same precision | × llama.cpp, same file "
             "| first token, 40-token prompt |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in r["rows"]:
        lc = "–" if row["x_llama_cpp"] is None else f"{row['x_llama_cpp']:.2f}"
        sp = "–" if row.get("x_same_precision") is None else f"{row['x_same_precision']:.2f}"
        low, high = row.get("tok_s_spread") or (row["tok_s"], row["tok_s"])
        lines.append(f"| {row['variant']} | {row['tok_s']:.1f} ({low:.1f}–{high:.1f}) | {row['x_fp32']:.2f} | {sp} | "
                     f"{lc} | {row['ttft_ms']:.0f} ms |")
    return "\n".join(lines)


def append_results(r: dict[str, Any]) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    rss = "; ".join(f"{k}: process {v['process']} MB, model {v['model']} MB" for k, v in r["rss_mb"].items())
    text = (
        f"\n## Local generation speed\n\n"
        f"- command: `{r['command']}`\n- date: {r['date']}\n- machine: {r['machine']}\n"
        f"- load average (1/5/15 min) at start {r['load_avg_start']}, at end {r['load_avg_end']} "
        f"(variants interleaved round by round, medians of {r['rounds']} rounds)\n"
        f"- prompts: {r['prompt_tokens'][0]} tokens for tokens/s, {r['prompt_tokens'][1]} for first token; "
        f"batch 1, 2 threads, greedy\n- preparation time (export / packing): {r['prepare_s']} s\n"
        f"- RSS (resident MB after load + one answer): {rss or 'not measured (--quick)'}\n"
        f"- llama.cpp: {r['llama_cpp']}\n\n{table(r)}\n"
    )
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
