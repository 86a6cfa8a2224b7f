"""Decoding defaults of the local learner: the repetition penalty on the answer's own tokens,
the loop guard, and why an answer ended — the same in llama.cpp, the torch loop and HF."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from dmac_core.backends.local import LocalBackend
from dmac_core.config import Config
from dmac_core.learner.base_model import bundled_gguf_path
from dmac_core.learner.decoding import Decoding, LoopGuard, generated_tokens_penalty, looping, penalize_recent
from dmac_core.learner.fast_decode import FastGenerator
from dmac_core.learner.gguf_export import write_gguf
from dmac_core.learner.llama_cpp_runtime import LlamaCppGenerator, llama_cpp_importable
from dmac_core.learner.registry import ModelRegistry
from dmac_core.system import LearningSystem
from tests.test_llama_cpp_serving import PROMPTS, _decisive_prefix, _hf_greedy_margins, _ids, tiny_hf  # noqa: F401

needs_llama_cpp = pytest.mark.skipif(
    not llama_cpp_importable() and os.environ.get("DMAC_REQUIRE_LLAMA_CPP") != "on",
    reason="llama-cpp-python is not installed (make setup builds it)",
)


def test_loop_guard_stops_verbatim_loops_and_lets_ordinary_repeats_pass() -> None:
    la_france = [11, 12, 13]  # "la France," as three tokens
    assert looping([1, 2, 3] + la_france * 6)  # 18 looping tokens: 3-token block repeated ≥ 16 tokens
    assert not looping([1, 2, 3] + la_france * 4)  # said four times: not yet a loop
    sentence = list(range(100, 112))  # a 12-token sentence said twice in a row
    assert looping([5, 6] + sentence * 2) and not looping([5, 6] + sentence + [7] + sentence)
    assert not looping([40, 41] * 3)  # "}\n}\n}\n": short legitimate repeats
    assert not looping(list(range(300)))  # no repeats at all
    guard = LoopGuard()
    fired = [k for k, token in enumerate([9] * 40) if guard.push(token)]
    assert fired[0] == 15  # one token repeated: stopped after the 16th


def test_penalty_divides_positive_and_multiplies_negative_logits_of_recent_tokens_once() -> None:
    logits = torch.tensor([2.0, -2.0, 1.0, 4.0])
    penalize_recent(logits, [0, 1, 1, 1], 2.0)
    assert logits.tolist() == [1.0, -4.0, 1.0, 4.0]  # each distinct token once, others untouched
    processor = generated_tokens_penalty(prompt_width=2, penalty=2.0, window=2)
    scores = processor(torch.tensor([[3, 0, 3, 1, 2]]), torch.tensor([[2.0, -2.0, 1.0, 4.0]]))
    assert scores.tolist() == [[2.0, -4.0, 0.5, 4.0]]  # prompt token 3 and the older 3 are not penalised


def test_torch_loop_with_the_penalty_equals_hf_generate_with_it(tiny_hf: tuple[Any, Any]) -> None:
    model, tok = tiny_hf
    fast = FastGenerator(model, weights="fp32")
    for prompt in PROMPTS:
        ids = _ids(tok, prompt)
        t = torch.tensor([ids])
        from transformers import LogitsProcessorList

        with torch.inference_mode():
            out = model.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=24, do_sample=False,
                                 temperature=None, top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                                 logits_processor=LogitsProcessorList([generated_tokens_penalty(len(ids), 1.3, 64)]))
        expected = out[0, len(ids):].tolist()
        plain = list(fast.stream_tokens(ids, 24))
        penalised = list(fast.stream_tokens(ids, 24, repeat_penalty=1.3))
        assert penalised == expected
        assert penalised[0] == plain[0]  # nothing generated yet: the prompt is never penalised
    assert any(list(fast.stream_tokens(_ids(tok, p), 24)) != list(fast.stream_tokens(_ids(tok, p), 24, repeat_penalty=1.3))
               for p in PROMPTS), "the penalty changed some answer"


@needs_llama_cpp
def test_llama_cpp_applies_the_same_penalty_to_the_answer_only(tiny_hf: tuple[Any, Any], tmp_path: Path) -> None:
    model, tok = tiny_hf
    generator = LlamaCppGenerator(write_gguf(model, tmp_path / "tiny.gguf", bundled_gguf_path(), "f16"), n_ctx=512)
    fast = FastGenerator(model, weights="fp32")
    try:
        compared = 0
        for prompt in PROMPTS:
            ids = _ids(tok, prompt)
            expected = list(fast.stream_tokens(ids, 16, repeat_penalty=1.3))
            _, margins = _hf_greedy_margins(model, tok, ids, 16)
            n = min(_decisive_prefix(margins), len(expected))
            got = list(generator.stream_tokens(ids, 16, 0.0, [], repeat_penalty=1.3))
            assert got[:n] == expected[:n]
            compared += n
        assert compared >= 8
    finally:
        generator.close()


def test_a_looping_answer_is_stopped_marked_and_recorded(make_config: Callable[..., Config]) -> None:
    # The tiny random model loops under plain greedy decoding ("drag drag drag …").
    config = make_config(repeat_penalty=1.0, max_new_tokens=96)
    system = LearningSystem(config)
    result = system.model_manager.respond("Tell me a story about a cat.", model="deepseek")
    assert result.finish_reason == "repetition" and result.tokens_out < 96
    [record] = system.store.records("interactions")
    assert record["finish_reason"] == "repetition" and record["tokens_out"] == result.tokens_out
    unguarded = LocalBackend("deepseek", make_config(repeat_penalty=1.0, loop_guard=False).learner,
                             config.base_model_path(), ModelRegistry(config.data_path / "models"))
    answer = unguarded.generate([{"role": "user", "content": "Tell me a story about a cat."}], max_new_tokens=96)
    assert answer.finish_reason == "length" and answer.tokens_out == 96
    assert answer.text.startswith(result.text[:20])  # the same answer, only not cut


def test_decoding_is_described_on_records_as_configured(make_config: Callable[..., Config]) -> None:
    assert Decoding.from_config(make_config().learner).describe() == "greedy, repeat penalty 1.15 over 64 tokens, loop guard"
    off = make_config(repeat_penalty=1.0, loop_guard=False, temperature=0.7).learner
    assert Decoding.from_config(off).describe() == "temperature 0.7, top-p 0.95"
