"""The shipped serving defaults give answers worth reading — on the real bundled model.

With the shipped config (llama.cpp over the f16 GGUF copy, greedy with the repetition penalty
on the answer's own tokens, loop guard on), chat answers the everyday prompts of
``bench/everyday_prompts.yaml`` (facts, how-to, writing, reasoning) without looping — plain
greedy decoding loops on ten of the sixty, in fp32 too (bench/RESULTS.md) — and answers the
capital of France as the fp32 model does. The default run asks those ten; ``-m slow`` asks all
sixty. How the defaults were chosen: ``bench/decoding_quality.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from dmac_core.backends.local import LocalBackend
from dmac_core.learner.decoding import looping
from dmac_core.learner.llama_cpp_runtime import llama_cpp_importable
from dmac_core.learner.registry import ModelRegistry
from tests.learning_quality_fixtures import shipped_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from decoding_quality import load_prompts  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not llama_cpp_importable() and os.environ.get("DMAC_REQUIRE_LLAMA_CPP") != "on",
                       reason="llama-cpp-python is not installed (make setup builds it)"),
]


# The ten everyday prompts on which plain greedy decoding loops, in fp32 and in the served f16
# file alike (bench/decoding_quality.py, bench/RESULTS.md): the default run checks these and the
# capital of France; the slow run checks all sixty.
GREEDY_LOOPS = [
    "How can I improve my sleep?", "How do I boil an egg?", "How do I prepare for a job interview?",
    "Write a haiku about autumn.", "Write a short poem about the sea.",
    "Write a thank-you note to a colleague who helped me.", "Write a limerick about a cat.",
    "Write a short story about a robot who learns to paint.", "Write a birthday message for my grandmother.",
    "What would happen if the Moon disappeared?",
]


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("which", ["greedy_loops", pytest.param("all_sixty", marks=pytest.mark.slow)])
def test_shipped_defaults_loop_on_none_of_the_everyday_prompts(tmp_path: Path, real_model_dir: Path, which: str) -> None:
    config = shipped_config(tmp_path / "data", real_model_dir)
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), ModelRegistry(config.data_path / "models"))
    everyday = [prompt for _, prompt in load_prompts()]
    assert len(everyday) >= 50 and {c for c, _ in load_prompts()} == {"facts", "how-to", "writing", "reasoning"}
    assert set(GREEDY_LOOPS) < set(everyday) and "What is the capital of France?" in everyday
    prompts = everyday if which == "all_sixty" else GREEDY_LOOPS + ["What is the capital of France?"]
    answers = {prompt: backend.generate([{"role": "user", "content": prompt}]) for prompt in prompts}
    assert backend.current().runtime == "llama.cpp (f16 GGUF)"
    stopped = [p for p, a in answers.items() if a.finish_reason == "repetition"]
    assert stopped == [], "answers the loop guard had to stop"
    tokenizer = backend.current().tokenizer
    loops = [p for p, a in answers.items() if looping(tokenizer(a.text, add_special_tokens=False)["input_ids"])]
    assert loops == []
    assert all(a.text for a in answers.values())

    # "What is the capital of France?" as the fp32 transformers model answers it (greedy)
    france = answers["What is the capital of France?"].text
    loaded = backend.current()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = loaded.model.generate(**ids, max_new_tokens=32, do_sample=False, temperature=None, top_p=None,
                                    top_k=None, pad_token_id=tokenizer.pad_token_id)
    fp32 = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert france == fp32 == "The capital of France is Paris."
