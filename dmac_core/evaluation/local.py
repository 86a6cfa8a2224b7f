"""Batched computations on the local model for evaluation: teacher-forced loss on reference
answers and greedy generation with left padding.

Both take what :meth:`LocalBackend.current` returns (or its ``model``/``tokenizer``), sort
items by length so a batch wastes little compute on padding, and return results aligned with
the inputs. Re-exported by :mod:`dmac_core.evaluation.evaluator`.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:
    import torch

from ..backends.base import Message, chat_messages
from ..learner.decoding import (
    FINISH_LENGTH,
    FINISH_REPETITION,
    FINISH_STOP,
    Decoding,
    LoopGuard,
    generated_tokens_penalty,
)
from .metrics import check_aligned

Progress = Callable[[int], None]  # called with the number of items just finished


def _messages(prompt: str | list[Message], system_prompt: str = "") -> list[Message]:
    """A test item's messages: a conversation as it was given, a question with the system prompt."""
    return chat_messages(prompt, system_prompt if isinstance(prompt, str) else "")


def reference_loss(
    model: Any, tokenizer: Any, prompts: Sequence[str], references: Sequence[str], batch_size: int = 8,
    max_length: int | None = None, system_prompt: str = "",
) -> dict[str, Any]:
    """Teacher-forced loss, perplexity and next-token accuracy on the assistant tokens only.

    Each item is the chat template applied to prompt + reference; the prompt part is masked,
    so the numbers measure only how well the model predicts the reference answer (including
    its end-of-turn token). Aggregates are token-weighted; ``per_item`` is aligned with the
    inputs. The caller holds the model's lock.
    """
    import torch  # here, for start-up time: the workbench's services import this module

    check_aligned(prompts, references)
    items: list[tuple[list[int], int]] = []
    for prompt, reference in zip(prompts, references):
        messages = _messages(prompt, system_prompt)
        prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        answered = messages + [{"role": "assistant", "content": reference}]
        full_text = tokenizer.apply_chat_template(answered, tokenize=False)
        if not full_text.startswith(prompt_text):
            raise ValueError("chat template renders the prompt differently with an answer; cannot mask it")
        # Tokenised in two parts, as TRL's prompt/completion format does, so the boundary is exact.
        p_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
        ids = (p_ids + c_ids)[: max_length or None]
        items.append((ids, len(p_ids)))
    sums, counts, hits = [0.0] * len(items), [0] * len(items), [0] * len(items)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))  # similar lengths: less padding
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(items[i][0]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        target = torch.zeros_like(ids, dtype=torch.bool)  # True where the token is an assistant token
        for row, i in enumerate(chunk):
            seq, n_prompt = items[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
            target[row, max(n_prompt, 1) : len(seq)] = True
        ids, attention, target = ids.to(device), attention.to(device), target.to(device)
        with torch.inference_mode():
            rows, cols = target[:, 1:].nonzero(as_tuple=True)  # hidden state at t predicts token t+1
            logits = _logits_at(model, ids, attention, rows, cols).float()
            wanted = ids[rows, cols + 1]
            nll = torch.nn.functional.cross_entropy(logits, wanted, reduction="none")
            correct = (logits.argmax(-1) == wanted).long()
        for row, value, ok in zip(rows.tolist(), nll.tolist(), correct.tolist()):
            i = chunk[row]
            sums[i] += value
            counts[i] += 1
            hits[i] += ok
    per_item = [
        {"loss": s / c, "perplexity": _ppl(s / c), "token_accuracy": h / c, "tokens": c}
        if c else {"loss": None, "perplexity": None, "token_accuracy": None, "tokens": 0}
        for s, c, h in zip(sums, counts, hits)
    ]
    total = sum(counts)
    loss = sum(sums) / total if total else None
    return {
        "loss": loss,
        "perplexity": _ppl(loss) if loss is not None else None,
        "token_accuracy": sum(hits) / total if total else None,
        "tokens": total,
        "per_item": per_item,
    }


def _logits_at(
    model: Any, ids: torch.Tensor, attention: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    # Project only the needed hidden states: full logits of 8×512 tokens × 49k vocab would be ~800 MB.
    decoder, head = getattr(model, "get_decoder", lambda: None)(), model.get_output_embeddings()
    if decoder is not None and head is not None:
        hidden = decoder(input_ids=ids, attention_mask=attention).last_hidden_state
        return head(hidden[rows, cols])
    return model(input_ids=ids, attention_mask=attention).logits[rows, cols]


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # capped: JSON has no Infinity


def left_padded_batches(
    encoded: Sequence[Sequence[int]], batch_size: int, pad: int
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Token-id prompts in batches of similar length, LEFT-padded with ``pad`` so that every row's
    new tokens start in the same column: ``(indices into encoded, input_ids, attention_mask)``."""
    import torch  # here, for start-up time: the workbench's services import this module

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            ids[row, width - len(encoded[i]) :] = torch.tensor(list(encoded[i]))
            attention[row, width - len(encoded[i]) :] = 1
        yield chunk, ids, attention


def generate_batch_details(
    loaded: Any, prompts: Sequence[str | list[Message]], max_new_tokens: int, batch_size: int = 8,
    system_prompt: str = "", progress: Progress | None = None, decoding: Decoding | None = None,
) -> list[dict[str, Any]]:
    """Greedy answers from a :class:`~dmac_core.backends.local.LoadedModel`, batched with LEFT
    padding (every row's new tokens start in the same column), aligned with ``prompts``.

    Each result: ``text``, ``tokens_in``, ``tokens_out`` (including the end-of-turn token),
    ``latency_ms`` (the batch's wall time shared equally by its items), ``finish_reason``.
    Prompts are grouped by length to waste less compute on padding; results go back to their
    input positions. ``decoding`` applies chat's repetition penalty and loop guard (an answer
    the guard would have stopped is cut where it would have stopped); None = plain greedy.
    """
    import torch  # here, for start-up time: the workbench's services import this module

    tokenizer, model = loaded.tokenizer, loaded.model
    encoded = [
        list(tokenizer.apply_chat_template(
            _messages(p, system_prompt), add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"])
        for p in prompts
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = model.generation_config.eos_token_id
    stop = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    device = next(model.parameters()).device
    results: list[dict[str, Any]] = [{} for _ in encoded]
    for chunk, ids, attention in left_padded_batches(encoded, batch_size, pad):
        width = ids.shape[1]
        from transformers import LogitsProcessorList

        started = time.perf_counter()
        penalty = decoding.repeat_penalty if decoding is not None else 1.0
        processors = [generated_tokens_penalty(width, penalty, decoding.penalty_window)] if decoding and penalty != 1.0 else []
        with loaded.lock, torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=pad,
                logits_processor=LogitsProcessorList(processors),
            )
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        for row, i in enumerate(chunk):
            new = out[row, width:].tolist()
            n_out, reason = _answer_end(new, stop, max_new_tokens, decoding is not None and decoding.loop_guard)
            results[i] = {
                "text": tokenizer.decode(new[:n_out], skip_special_tokens=True).strip(),
                "tokens_in": len(encoded[i]),
                "tokens_out": n_out,
                "latency_ms": elapsed_ms / len(chunk),
                "finish_reason": reason,
            }
        if progress:
            progress(len(chunk))
    return results


def _answer_end(new: list[int], stop: set[int], max_new_tokens: int, guard: bool) -> tuple[int, str]:
    """How many of a row's generated tokens belong to the answer (its end-of-turn token
    included) and why it ended: at an EOS, where the loop guard fires, or at the limit."""
    loop = LoopGuard() if guard else None
    for k, token in enumerate(new):
        if token in stop:
            return k + 1, FINISH_STOP
        if loop is not None and loop.push(token):
            return k + 1, FINISH_REPETITION
    return len(new), FINISH_LENGTH if len(new) >= max_new_tokens else FINISH_STOP


def generate_batch(loaded: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 8,
                   decoding: Decoding | None = None) -> list[str]:
    """Greedy answers (text only) aligned with ``prompts``; see :func:`generate_batch_details`."""
    return [r["text"] for r in generate_batch_details(loaded, prompts, max_new_tokens, batch_size, decoding=decoding)]
