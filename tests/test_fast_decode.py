"""The fast decode loop: same tokens as ``generate()`` in fp32, EOS and length
limits honoured, sampling well-formed, and — on the real model — quantised answers that
still say the same things as the fp32 answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dmac_core.learner.fast_decode import SERVING_WEIGHTS, FastGenerator, eos_token_ids, supports

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "hi",
]


def _load(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, tok


def _prompt_ids(tok: Any, text: str) -> torch.Tensor:
    chat = [{"role": "user", "content": text}]
    return tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)[
        "input_ids"
    ]


def _hf_greedy(model: Any, tok: Any, ids: torch.Tensor, n: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
            temperature=None, top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
        )
    return out[0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    return _load(tiny_model_dir)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_fp32_greedy_matches_hf_generate_token_for_token(tiny: tuple[Any, Any], prompt: str) -> None:
    model, tok = tiny
    ids = _prompt_ids(tok, prompt)
    expected = _hf_greedy(model, tok, ids, 30)
    fast = FastGenerator(model, weights="fp32", max_len=256)
    got = list(fast.stream_tokens(ids[0], 30, 0.0, eos_token_ids(model, tok)))
    assert got == expected
    # the generator is reusable: the static cache is overwritten, not appended to
    assert list(fast.stream_tokens(ids[0], 30, 0.0, eos_token_ids(model, tok))) == expected


def test_stops_at_eos_and_yields_it(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    ids = _prompt_ids(tok, PROMPTS[1])[0]
    fast = FastGenerator(model, weights="fp32", max_len=256)
    free = list(fast.stream_tokens(ids, 12, 0.0, eos_ids=()))
    assert len(free) == 12
    # declare the third greedy token an EOS: decoding must stop right after emitting it
    eos = free[2]
    first = free.index(eos)
    assert list(fast.stream_tokens(ids, 12, 0.0, eos_ids=[eos])) == free[: first + 1]


@pytest.mark.parametrize("n", [0, 1, 7])
def test_respects_max_new_tokens(tiny: tuple[Any, Any], n: int) -> None:
    model, tok = tiny
    fast = FastGenerator(model, weights="fp32", max_len=256)
    assert len(list(fast.stream_tokens(_prompt_ids(tok, "hi")[0], n, 0.0, eos_ids=()))) == n


def test_cache_limit_caps_the_answer_and_rejects_too_long_prompts(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    ids = _prompt_ids(tok, "hi")[0]
    fast = FastGenerator(model, weights="fp32", max_len=ids.numel() + 3)
    assert len(list(fast.stream_tokens(ids, 50, 0.0, eos_ids=()))) == 3
    with pytest.raises(ValueError):
        list(FastGenerator(model, weights="fp32", max_len=4).stream_tokens(ids, 5, 0.0))


@pytest.mark.parametrize("weights", ["int8", "fp16"])
def test_quantised_formats_run_and_stay_close_to_fp32(tiny: tuple[Any, Any], weights: str) -> None:
    model, tok = tiny
    ids = _prompt_ids(tok, PROMPTS[0])[0]
    fast = FastGenerator(model, weights=weights, max_len=256)
    with torch.inference_mode():
        exact = FastGenerator(model, weights="fp32", max_len=256)._forward(ids, 0)
        approx = fast._forward(ids, 0)
    # weight-only quantisation perturbs logits a little, never wildly
    assert torch.allclose(approx, exact, atol=0.05 * float(exact.abs().max()))
    assert int(approx.argmax()) == int(exact.argmax())


def test_sampling_is_seeded_and_top_p_near_zero_is_greedy(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    ids = _prompt_ids(tok, PROMPTS[1])[0]
    fast = FastGenerator(model, weights="fp32", max_len=256)
    greedy = list(fast.stream_tokens(ids, 10, 0.0))

    def sample(seed: int, top_p: float) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return list(fast.stream_tokens(ids, 10, 1.5, top_p=top_p, generator=gen))

    assert sample(1, 1.0) == sample(1, 1.0)
    assert all(0 <= t < model.config.vocab_size for t in sample(2, 0.95))
    assert sample(3, 1e-9) == greedy  # the nucleus then holds only the most likely token
    # at a high temperature over a ~50k vocabulary, five seeds all giving greedy is implausible
    assert any(sample(seed, 1.0) != greedy for seed in range(5))


def test_rejects_unsupported_models_and_formats(tiny: tuple[Any, Any]) -> None:
    model, _ = tiny
    assert supports(model)
    assert not supports(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError):
        FastGenerator(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError):
        FastGenerator(model, weights="int3")


# Fixed prompt set for the quality check of the torch loop as served (the fallback runtime when
# llama.cpp is not installed; fp16 weights) on the real model.
REAL_PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What is 12 plus 7?",
    "Explain in one sentence what a database index is.",
    "Give one tip for writing clear emails.",
    "What does CPU stand for?",
    "Translate 'good morning' into Spanish.",
    "Why do we sleep?",
]
ROUGE_L_MIN = 0.8  # measured: see bench/RESULTS.md


@pytest.mark.parametrize("weights", ["fp32", "fp16"])
def test_shared_weights_serve_the_hf_model_too_and_free_the_fp32_copies(tiny_model_dir: Path, weights: str) -> None:
    reference, tok = _load(tiny_model_dir)
    model, _ = _load(tiny_model_dir)
    ids = _prompt_ids(tok, PROMPTS[0])
    with torch.inference_mode():
        expected = reference(ids).logits
    separate = FastGenerator(reference, weights=weights)
    fast = FastGenerator(model, weights=weights, share_weights=True)

    # Every projection of the HF model is now a view of the generator's packed weights.
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert model.model.layers[0].self_attn.q_proj.linear is fast.layers[0][1].parts[0]
    assert model.lm_head.linear is fast.lm_head
    embedding = model.model.embed_tokens.weight.numel()
    assert sum(p.numel() for p in model.parameters()) < embedding * 1.01  # only embedding and norms left
    with torch.inference_mode():
        logits = model(ids).logits
    if weights == "fp32":
        assert torch.equal(logits, expected)  # the same weights, the same arithmetic
    else:
        assert torch.allclose(logits, expected, atol=5e-3)
    # The decode loop answers as the unshared (fused) one does.
    assert list(fast.stream_tokens(ids[0], 12, 0.0)) == list(separate.stream_tokens(ids[0], 12, 0.0))


@pytest.mark.integration
def test_torch_serving_path_answers_like_fp32_on_the_real_model(real_model_dir: Path) -> None:
    from dmac_core.evaluation.metrics import rouge_scores

    torch.set_num_threads(2)
    model, tok = _load(real_model_dir)
    fast = FastGenerator(model, weights=SERVING_WEIGHTS, max_len=512)
    eos = eos_token_ids(model, tok)
    reference, answers = [], []
    for prompt in REAL_PROMPTS:
        ids = _prompt_ids(tok, prompt)
        reference.append(tok.decode(_hf_greedy(model, tok, ids, 48), skip_special_tokens=True))
        answers.append(tok.decode(list(fast.stream_tokens(ids[0], 48, 0.0, eos)), skip_special_tokens=True))
    scores = rouge_scores(answers, reference)
    assert "Paris" in answers[0], answers[0]
    assert scores["rougeL"] >= ROUGE_L_MIN, list(zip(reference, answers, scores["per_item"]))
