"""How the local learner picks its next token, the same in every runtime that serves it.

Greedy decoding of a small model loops ("a leaf's fate is determined, a leaf's fate is
determined, …") on a good share of everyday prompts, in every weight format. Two defences,
both measured in ``bench/decoding_quality.py`` (numbers in ``bench/RESULTS.md``):

* a **repetition penalty on the answer's own tokens**: each token generated in the last
  ``penalty_window`` steps has its logit divided by ``repeat_penalty`` (multiplied when
  negative), as llama.cpp's penalties sampler and HF's ``repetition_penalty`` do. Unlike HF's,
  the prompt is not penalised, so an answer may repeat the question's rare words ("The capital
  of Veloria is …"), which learned answers need;
* a **loop guard** (:class:`LoopGuard`) that stops an answer whose tail has become one block of
  tokens repeated over and over; the answer is then marked ``finish_reason="repetition"``.

:class:`Decoding` carries these settings (from ``models.deepseek``) to the llama.cpp runtime,
the torch decode loop and HF ``generate()`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

# Why an answer ended (recorded on interactions and evaluation items).
FINISH_STOP = "stop"  # the model ended its turn
FINISH_LENGTH = "length"  # cut at max_new_tokens
FINISH_REPETITION = "repetition"  # stopped by the loop guard


@dataclass(frozen=True)
class Decoding:
    """Token-choice settings of the local learner (``models.deepseek``)."""

    temperature: float = 0.0  # 0 = greedy
    top_p: float = 0.95
    repeat_penalty: float = 1.0  # 1.0 = off
    penalty_window: int = 64  # generated tokens the penalty looks back on
    loop_guard: bool = True

    @classmethod
    def from_config(cls, learner: Any, temperature: float | None = None) -> "Decoding":
        """The learner's configured decoding; ``temperature`` overrides the configured one."""
        return cls(
            temperature=float(learner.temperature if temperature is None else temperature),
            repeat_penalty=float(learner.repeat_penalty),
            penalty_window=int(learner.penalty_window),
            loop_guard=bool(learner.loop_guard),
        )

    def describe(self) -> str:
        """One line for records and captions, e.g. ``greedy, repeat penalty 1.1, loop guard``."""
        parts = ["greedy" if self.temperature <= 0 else f"temperature {self.temperature:g}, top-p {self.top_p:g}"]
        if self.repeat_penalty != 1.0:
            parts.append(f"repeat penalty {self.repeat_penalty:g} over {self.penalty_window} tokens")
        if self.loop_guard:
            parts.append("loop guard")
        return ", ".join(parts)


class LoopGuard:
    """Detects an answer that has started to repeat itself verbatim.

    Fed one token id at a time, :meth:`push` returns True once the tail of the answer is a
    block of ``p`` tokens (1 ≤ p ≤ ``max_period``) repeated back to back over at least
    ``max(repeats × p, min_span)`` tokens, with ``repeats`` 3 for blocks of up to 8 tokens
    ("la France, la France, la France, …") and 2 for longer ones (a sentence said twice).
    ``min_span`` keeps short legitimate repeats (``}\\n}\\n``, "very, very") from counting.
    """

    def __init__(self, min_span: int = 16, max_period: int = 64) -> None:
        self.min_span = min_span
        self.max_period = max_period
        self.tokens: list[int] = []

    def push(self, token: int) -> bool:
        """Add the next generated token; True when the answer is now looping."""
        tokens = self.tokens
        tokens.append(int(token))
        n = len(tokens)
        if n < self.min_span:
            return False
        for period in range(1, min(self.max_period, n // 2) + 1):
            span = max(period * (3 if period <= 8 else 2), self.min_span)
            if span <= n and tokens[n - span + period:] == tokens[n - span: n - period]:
                return True
        return False


def looping(tokens: Iterable[int], min_span: int = 16, max_period: int = 64) -> bool:
    """Whether :class:`LoopGuard` would have stopped this token sequence at some point."""
    guard = LoopGuard(min_span, max_period)
    return any(guard.push(token) for token in tokens)


def penalize_recent(logits: Any, recent: list[int], penalty: float) -> Any:
    """Apply the repetition penalty in place to a 1-D torch tensor of logits: every distinct
    token of ``recent`` is divided by ``penalty`` when positive, multiplied when negative
    (llama.cpp's penalties sampler, repeat part). Returns ``logits``."""
    import torch

    if penalty == 1.0 or not recent:
        return logits
    index = torch.tensor(sorted(set(recent)), dtype=torch.long, device=logits.device)
    values = logits[index]
    logits[index] = torch.where(values > 0, values / penalty, values * penalty)
    return logits


def generated_tokens_penalty(prompt_width: int, penalty: float, window: int) -> Any:
    """An HF ``LogitsProcessor`` applying the penalty to the tokens generated after column
    ``prompt_width`` (left-padded batches: every row's answer starts there), last ``window`` only."""
    from transformers import LogitsProcessor

    class _GeneratedTokensPenalty(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            answer = input_ids[:, prompt_width:][:, -window:]
            for row in range(scores.shape[0]):
                penalize_recent(scores[row], answer[row].tolist(), penalty)
            return scores

    return _GeneratedTokensPenalty()
