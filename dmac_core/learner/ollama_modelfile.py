"""An Ollama ``Modelfile`` for an exported GGUF, so ``ollama create NAME -f Modelfile`` serves the
export with the workbench's prompt format, stop tokens, system prompt and decoding.

Ollama formats a conversation with a Go ``text/template`` (``TEMPLATE``), while a Hugging Face
tokenizer carries a Jinja chat template. Translating Jinja in general is not practical, so the
translation is *derived and proven* instead of hard-coded:

1. The tokenizer's template is rendered for probe conversations whose contents are unique
   markers; cutting the output at the markers gives the pieces a per-message template is made of
   (the text before a message's role, after its role, after its content; a preamble; a default
   system turn the template adds when a conversation has none; the generation prompt).
2. Those pieces become a Go template over ``.Messages`` (:func:`go_template`).
3. The Go template is rendered (:func:`render_go_template`, an interpreter of exactly the
   constructs emitted) for several conversations and compared with the tokenizer's own output;
   any difference, or a template whose output does not cut into those pieces, is refused with
   :class:`ModelfileError` rather than written wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .decoding import Decoding

_ROLES = ("system", "user", "assistant")
# What the probes and the proof render: with and without a system turn, one and several turns,
# contents with newlines, braces, quotes and surrounding spaces (which the template must carry
# through untouched).
_PROOF_CONVERSATIONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("user", "What is the capital of France?"),),
    (("system", "Answer briefly."), ("user", "Name a colour.")),
    (("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a {{ story }}.\nTwo lines.")),
    (("system", "You are terse."), ("user", "a"), ("assistant", 'b "quoted"'), ("user", "c")),
    (("user", "  spaces and a newline around it \n"),),  # a template that trims would differ
)


class ModelfileError(ValueError):
    """The tokenizer's chat template (or a setting) cannot be written as an Ollama Modelfile."""


@dataclass(frozen=True)
class ChatShape:
    """A chat template that wraps every message the same way: ``preamble``, then (when the
    first message is not a system one) ``default_system``, then per message
    ``before_role + role + after_role + content + end_of_turn``, then ``generation_prompt``."""

    preamble: str
    default_system: str
    before_role: str
    after_role: str
    end_of_turn: str
    generation_prompt: str


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # a template may raise on any probe (Jinja's raise_exception)
        raise ModelfileError(f"the chat template refused a probe conversation: {exc}") from exc
    if not isinstance(text, str):
        raise ModelfileError("the tokenizer's chat template did not render to text")
    return text


def _cut(text: str, markers: list[str]) -> list[str]:
    """``text`` split at each marker in order (len(markers) + 1 pieces), or a refusal."""
    pieces = []
    for marker in markers:
        if text.count(marker) != 1:
            raise ModelfileError("the chat template does not show each message's content exactly once")
        head, text = text.split(marker)
        pieces.append(head)
    return pieces + [text]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise ModelfileError(f"the chat template does not end every turn the same way ({what})")
    return text[len(prefix):]


def chat_shape(tokenizer: Any) -> ChatShape:
    """The pieces of the tokenizer's chat template (see :class:`ChatShape`), derived by rendering
    probe conversations; raises :class:`ModelfileError` when the template has no such shape."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelfileError("the tokenizer has no chat template")
    markers = [f"@@dmac-probe-{i}@@" for i in range(4)]
    full = [{"role": role, "content": m} for role, m in zip(("system", "user", "assistant", "user"), markers)]
    text = _render(tokenizer, full, False)
    head, after_system, after_user, after_assistant, end_of_turn = _cut(text, markers)
    user_prefix = _strip_prefix(after_system, end_of_turn, "after a system turn")
    assistant_prefix = _strip_prefix(after_user, end_of_turn, "after a user turn")
    if _strip_prefix(after_assistant, end_of_turn, "after an assistant turn") != user_prefix:
        raise ModelfileError("the chat template formats the same role differently in different turns")
    if user_prefix.count("user") != 1:
        raise ModelfileError("the chat template does not write the role name once before each message")
    before_role, after_role = user_prefix.split("user")
    if assistant_prefix != f"{before_role}assistant{after_role}" or not head.endswith(
            f"{before_role}system{after_role}"):
        raise ModelfileError("the chat template writes some roles in a way of their own")
    preamble = head[: len(head) - len(f"{before_role}system{after_role}")]

    # Without a system turn: what the template adds in its place (SmolLM2's default system prompt).
    only_user = _render(tokenizer, [{"role": "user", "content": markers[1]}], False)
    start, rest = _cut(only_user, [markers[1]])
    if rest != end_of_turn or not start.startswith(preamble) or not start.endswith(user_prefix):
        raise ModelfileError("the chat template formats a conversation without a system turn differently")
    default_system = start[len(preamble): len(start) - len(user_prefix)]

    with_prompt = _render(tokenizer, full, True)
    if not with_prompt.startswith(text):
        raise ModelfileError("the chat template's generation prompt is not appended at the end")
    return ChatShape(preamble, default_system, before_role, after_role, end_of_turn, with_prompt[len(text):])


def go_template(shape: ChatShape) -> str:
    """The Go template (Ollama's ``TEMPLATE``) of ``shape``: no whitespace trimming, so every
    newline of the chat template is kept exactly."""
    pieces = [shape.preamble, shape.default_system, shape.before_role, shape.after_role, shape.end_of_turn,
              shape.generation_prompt]
    if any("{{" in piece for piece in pieces):
        raise ModelfileError("the chat template's text contains '{{', which a Go template would read as an action")
    default = (f'{{{{ if and (eq $i 0) (ne $m.Role "system") }}}}{shape.default_system}{{{{ end }}}}'
               if shape.default_system else "")
    return (f"{shape.preamble}{{{{ range $i, $m := .Messages }}}}{default}{shape.before_role}{{{{ $m.Role }}}}"
            f"{shape.after_role}{{{{ $m.Content }}}}{shape.end_of_turn}{{{{ end }}}}{shape.generation_prompt}")


# -- an interpreter of the Go template subset go_template emits ---------------------------
_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_RANGE = re.compile(r"range \$(\w+), \$(\w+) := \.Messages")
_IF_FIRST_NOT = re.compile(r'if and \(eq \$(\w+) 0\) \(ne \$(\w+)\.(Role) "(\w+)"\)')
_FIELD = re.compile(r"\$(\w+)\.(Role|Content)")


def render_go_template(template: str, messages: list[dict[str, str]]) -> str:
    """Render ``template`` for ``messages`` as Ollama would, for the constructs
    :func:`go_template` writes (text, ``range $i, $m := .Messages``, ``if and (eq $i 0) (ne
    $m.Role "…")``, ``$m.Role``, ``$m.Content``, ``end``); anything else raises ``ValueError``."""
    tokens: list[tuple[str, str]] = []
    position = 0
    for match in _ACTION.finditer(template):
        tokens.append(("text", template[position: match.start()]))
        tokens.append(("action", match.group(1).strip()))
        position = match.end()
    tokens.append(("text", template[position:]))

    def run(index: int, scope: dict[str, Any], out: list[str], live: bool) -> int:
        """Render (when ``live``; else only skip) from ``tokens[index]`` up to its ``end``;
        return the index after that ``end`` (or the end of the template)."""
        while index < len(tokens):
            kind, value = tokens[index]
            index += 1
            if kind == "text":
                if live:
                    out.append(value)
            elif value == "end":
                return index
            elif match := _RANGE.fullmatch(value):
                after = run(index, scope, out, False)  # where the body ends, rendering nothing
                for i, message in enumerate(messages if live else []):
                    run(index, {**scope, match.group(1): i, match.group(2): message}, out, True)
                index = after
            elif match := _IF_FIRST_NOT.fullmatch(value):
                taken = live and scope[match.group(1)] == 0 and scope[match.group(2)]["role"] != match.group(4)
                index = run(index, scope, out, taken)
            elif match := _FIELD.fullmatch(value):
                if live:
                    out.append(str(scope[match.group(1)][match.group(2).lower()]))
            else:
                raise ValueError(f"not a construct of the emitted subset: {{{{ {value} }}}}")
        return index

    out: list[str] = []
    run(0, {}, out, True)
    return "".join(out)


def verified_template(tokenizer: Any) -> tuple[ChatShape, str]:
    """The chat shape and its Go template, proven to render every proof conversation exactly as
    the tokenizer's chat template does (with the generation prompt); else :class:`ModelfileError`."""
    shape = chat_shape(tokenizer)
    template = go_template(shape)
    for conversation in _PROOF_CONVERSATIONS:
        messages = [{"role": role, "content": content} for role, content in conversation]
        if render_go_template(template, messages) != _render(tokenizer, messages, True):
            raise ModelfileError("the chat template cannot be expressed as an Ollama template: the translation "
                                 f"formats {[m['role'] for m in messages]} differently")
    return shape, template


def stop_tokens(tokenizer: Any, shape: ChatShape, eos_ids: list[int]) -> list[str]:
    """The texts Ollama stops at: the served end-of-sequence tokens, the tokenizer's EOS, and the
    special tokens that end a turn in the template."""
    found = [tokenizer.convert_ids_to_tokens(i) for i in eos_ids]
    if tokenizer.eos_token:
        found.append(tokenizer.eos_token)
    found += [token for token in tokenizer.all_special_tokens if token and token in shape.end_of_turn]
    return list(dict.fromkeys(found))  # in order, once each


def _quoted(value: str) -> str:
    if '"' in value or "\n" in value:
        raise ModelfileError(f"cannot write {value!r} as a Modelfile parameter")
    return f'"{value}"'


def _triple_quoted(value: str, what: str) -> str:
    if '"""' in value:
        raise ModelfileError(f'the {what} contains """, which ends a Modelfile block')
    return f'"""{value}"""'


def modelfile_text(gguf_name: str, tokenizer: Any, eos_ids: list[int], decoding: Decoding,
                   max_new_tokens: int, system_prompt: str = "") -> str:
    """The Modelfile for the GGUF file ``gguf_name`` next to it: the verified ``TEMPLATE``, a
    ``PARAMETER stop`` per stop token, the decoding the workbench serves with, and ``SYSTEM``
    when the workbench adds a system prompt. Raises :class:`ModelfileError` when any of it
    cannot be expressed."""
    shape, template = verified_template(tokenizer)
    lines = [
        "# Ollama Modelfile written by the DMac Learning Workbench: ollama create NAME -f Modelfile",
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_triple_quoted(template, 'chat template')}",
    ]
    lines += [f"PARAMETER stop {_quoted(token)}" for token in stop_tokens(tokenizer, shape, eos_ids)]
    lines += [
        "# The workbench's decoding (models.deepseek): temperature 0 is greedy, top-p without top-k, and a",
        "# repetition penalty over the answer's last penalty_window tokens (Ollama's window counts the prompt too).",
        f"PARAMETER temperature {decoding.temperature:g}",
        f"PARAMETER top_p {decoding.top_p:g}",
        "PARAMETER top_k 0",
        f"PARAMETER repeat_penalty {decoding.repeat_penalty:g}",
        f"PARAMETER repeat_last_n {decoding.penalty_window}",
        f"PARAMETER num_predict {max_new_tokens}",
    ]
    if decoding.loop_guard:
        lines.append("# Not carried over: the workbench's loop guard, which stops an answer that repeats itself.")
    if system_prompt.strip():
        lines.append(f"SYSTEM {_triple_quoted(system_prompt.strip(), 'system prompt')}")
    return "\n".join(lines) + "\n"


__all__ = ["ChatShape", "ModelfileError", "chat_shape", "go_template", "modelfile_text", "render_go_template",
           "stop_tokens", "verified_template"]
