"""An upper-bound guess of the tokens one call may use, reserved against token caps before it starts.

The real counts come back with the answer; until then a call holds this estimate, so calls in
flight cannot pass a token cap between them. It errs high: the prompt at one token per three
UTF-8 bytes (English runs near four characters a token; other scripts take more bytes per
character, so bytes keep the guess high for them too), plus the most the call may generate.
Images are not counted (their token cost depends on the provider and the size).
"""

from __future__ import annotations

from typing import Any

from ..backends.base import Message

BYTES_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4  # role markers and separators each message costs in a chat template


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def prompt_tokens(messages: list[Message]) -> int:
    """An upper-bound guess of the prompt's tokens."""
    size = sum(len(_text_of(m.get("content")).encode("utf-8")) for m in messages)
    return -(-size // BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)


def answer_budget(model_config: Any, options: dict[str, Any]) -> int:
    """The most tokens the call may generate: the request's ``max_new_tokens``, else the model's
    configured limit (``max_output_tokens`` of an API model, ``max_new_tokens`` of the learner),
    plus a thinking model's thinking budget (billed as output on top of the answer)."""
    budget = options.get("max_new_tokens") or getattr(model_config, "max_output_tokens", None) \
        or getattr(model_config, "max_new_tokens", None) or 0
    return int(budget) + int(getattr(model_config, "thinking_budget", None) or 0)


def call_tokens(messages: list[Message], model_config: Any, options: dict[str, Any]) -> int:
    """Tokens a call may use in all: :func:`prompt_tokens` plus :func:`answer_budget`."""
    return prompt_tokens(messages) + answer_budget(model_config, options)
