"""The Ollama Modelfile of an export: its template, derived from the tokenizer's chat template,
formats conversations exactly as the tokenizer does; stop tokens, decoding and system prompt
come from the tokenizer and the config; templates it cannot express are refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from transformers import AutoTokenizer

from dmac_core.config import LocalModelConfig
from dmac_core.learner.decoding import Decoding
from dmac_core.learner.ollama_modelfile import (
    ModelfileError,
    modelfile_text,
    render_go_template,
    verified_template,
)
from tests.conftest import REAL_BASE_MODEL

SMOLLM_TEMPLATE = (
    '{{ range $i, $m := .Messages }}{{ if and (eq $i 0) (ne $m.Role "system") }}<|im_start|>system\n'
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "{{ end }}<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(REAL_BASE_MODEL)


def _modelfile(tokenizer: Any, learner: LocalModelConfig | None = None, system_prompt: str = "") -> str:
    learner = learner or LocalModelConfig()
    return modelfile_text("model.f16.gguf", tokenizer, [tokenizer.eos_token_id], Decoding.from_config(learner),
                          learner.max_new_tokens, system_prompt)


def test_the_bundled_models_modelfile_has_exactly_the_expected_lines(tokenizer: Any) -> None:
    text = _modelfile(tokenizer)
    lines = text.splitlines()
    assert lines[1] == "FROM ./model.f16.gguf"
    assert text.split('TEMPLATE """', 1)[1].split('"""', 1)[0] == SMOLLM_TEMPLATE
    assert [line for line in lines if line.startswith("PARAMETER stop")] == ['PARAMETER stop "<|im_end|>"']
    assert not any(line.startswith("SYSTEM") for line in lines)  # no system prompt configured


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Colour of the sky?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Summarise:\n- a {{ b }} c\n- \"quoted\" <tags>"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "empty system"},
     {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"},
     {"role": "assistant", "content": "sure"}, {"role": "user", "content": "ünïcödé ✓"}],
])
def test_the_template_renders_the_prompt_the_tokenizer_does(tokenizer: Any, messages: list[dict[str, str]]) -> None:
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render_go_template(SMOLLM_TEMPLATE, messages) == expected
    _, derived = verified_template(tokenizer)
    assert render_go_template(derived, messages) == expected


def test_decoding_and_system_prompt_come_from_the_config(tokenizer: Any) -> None:
    learner = LocalModelConfig(temperature=0.3, repeat_penalty=1.3, penalty_window=32, max_new_tokens=99)
    lines = _modelfile(tokenizer, learner, system_prompt="  You answer for DMac analysts.\nBe brief.  ").splitlines()
    parameters = [line for line in lines if line.startswith("PARAMETER") and "stop" not in line]
    assert parameters == ["PARAMETER temperature 0.3", "PARAMETER top_p 0.95", "PARAMETER top_k 0",
                          "PARAMETER repeat_penalty 1.3", "PARAMETER repeat_last_n 32", "PARAMETER num_predict 99"]
    text = "\n".join(lines)
    assert text.endswith('SYSTEM """You answer for DMac analysts.\nBe brief."""')
    with pytest.raises(ModelfileError, match='system prompt contains """'):
        _modelfile(tokenizer, system_prompt='say """hi"""')


@pytest.mark.parametrize("template, why", [
    # Llama-3 style: the role sits between its own markers, but the assistant's turn differs
    ("{% for m in messages %}{% if m['role'] == 'assistant' %}<A>{{ m['content'] }}</A>{% else %}"
     "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}{% if add_generation_prompt %}<A>{% endif %}",
     "end every turn the same way"),
    # the role name changed (upper case): not the role Ollama passes
    ("{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n{% endfor %}"
     "{% if add_generation_prompt %}[ASSISTANT] {% endif %}", "role name once"),
    # content altered (trimmed): the Go template would not trim
    ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | trim }}<|end|>{% endfor %}"
     "{% if add_generation_prompt %}<|assistant|>{% endif %}", "formats"),
    # turns numbered: every turn is formatted differently
    ("{% for m in messages %}<|{{ m['role'] }}|>{{ loop.index }}. {{ m['content'] }}<|end|>{% endfor %}"
     "{% if add_generation_prompt %}<|assistant|>{% endif %}", "differently|same way"),
])
def test_a_template_it_cannot_express_is_refused(tokenizer: Any, template: str, why: str) -> None:
    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    with pytest.raises(ModelfileError, match=why):
        _modelfile(other)


def test_a_tokenizer_without_a_chat_template_is_refused(tokenizer: Any) -> None:
    other = copy.deepcopy(tokenizer)
    other.chat_template = None
    with pytest.raises(ModelfileError, match="no chat template"):
        _modelfile(other)


def test_the_renderer_refuses_what_it_does_not_interpret() -> None:
    with pytest.raises(ValueError, match="not a construct"):
        render_go_template("{{ .Prompt }}", [{"role": "user", "content": "x"}])
