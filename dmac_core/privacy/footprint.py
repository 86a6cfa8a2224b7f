"""What one user left in the logs, and how to recognise it elsewhere in the data directory.

A :class:`Footprint` holds two kinds of knowledge:

- ids (interactions, feedback, votes, machine-made interactions that quote them) — these are also
  written to the deletion journal, so a re-run after a crash still knows them once the
  records themselves are gone;
- the user's texts (prompts, answers, comments, corrections), in memory only, read from the
  logs at the start of every run. The places that can only be recognised by text are cleaned
  before the logs are rewritten, so the texts are still there to read on a re-run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

from ..evaluation.splits import normalize_prompt

# Texts shorter than this are not looked for in raw bytes (torn lines, temp files): "hi" or
# "ok" would match other people's lines. Ids and the user field still match those lines.
MIN_RAW_TEXT = 12
# A torn fragment may hold only the start of a long text: its first bytes are looked for too.
RAW_PREFIX = 24
# Interactions logged by the workbench itself, whose prompt quotes an analyst's question:
# a teacher's rewrite request (see training.teacher.rewrite_prompt), an evaluation call, and
# an LLM judge's call (see signals.judge: "Question:\n<prompt>\n\nAnswer…").
MACHINE_PURPOSES = ("teacher", "evaluation", "judge")


@dataclass
class Footprint:
    """The user's records (ids) and texts; see the module docstring for which are persisted."""

    user: str
    interaction_ids: set[str] = field(default_factory=set)
    feedback_ids: set[str] = field(default_factory=set)
    machine_ids: set[str] = field(default_factory=set)  # teacher/evaluation interactions quoting them
    vote_ids: set[str] = field(default_factory=set)  # their votes, and anyone's votes on their answers
    prompts: set[str] = field(default_factory=set)  # normalised
    texts: set[str] = field(default_factory=set)  # as written
    notes: set[str] = field(default_factory=set)  # their comments on answers (stripped)
    answers: set[str] = field(default_factory=set)  # answers to their prompts, their corrections (stripped)
    images: set[str] = field(default_factory=set)  # image refs their records (and machine ones) hold
    kept_images: set[str] = field(default_factory=set)  # image refs other records hold

    # -- building it from the logs -------------------------------------------------------
    def add_texts(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, str) and value.strip():
                self.texts.add(value)

    def add_interaction(self, row: dict[str, Any]) -> None:
        """Record one of the user's interactions: its id, texts and images."""
        self.interaction_ids.add(str(row.get("id")))
        self.prompts.add(normalize_prompt(row.get("prompt") or ""))
        self.add_texts(row.get("prompt"), row.get("response"))
        if isinstance(row.get("response"), str) and row["response"].strip():
            self.answers.add(row["response"].strip())
        for message in row.get("messages") or []:
            if isinstance(message, dict):
                self.add_texts(message.get("content"))
                if message.get("role") == "user" and isinstance(message.get("content"), str):
                    self.prompts.add(normalize_prompt(message["content"]))
        self.images.update(image_refs(row))

    def add_feedback(self, row: dict[str, Any], prompt_is_theirs: bool) -> None:
        """Record a feedback record that goes: theirs, or another's on their interaction.

        Its prompt and answer are theirs when it rates one of their interactions or stands alone
        with a question nobody else asked (``prompt_is_theirs``); their comment and correction
        on someone else's answer are theirs, that answer and its question are not.
        """
        self.feedback_ids.add(str(row.get("id")))
        if prompt_is_theirs:
            self.prompts.add(normalize_prompt(row.get("prompt") or ""))
            self.add_texts(row.get("prompt"), row.get("response"))
        if row.get("user") == self.user:
            self.add_texts(row.get("feedback"), row.get("correction"))
            if isinstance(row.get("feedback"), str) and row["feedback"].strip():
                self.notes.add(row["feedback"].strip())
            if isinstance(row.get("correction"), str) and row["correction"].strip():
                self.answers.add(row["correction"].strip())

    def add_vote(self, row: dict[str, Any]) -> None:
        """Record a vote that goes: theirs, or anyone's on one of their answers. Its note is
        theirs when they voted; the question is theirs when it was asked in their interaction."""
        self.vote_ids.add(str(row.get("id")))
        if row.get("user") == self.user:
            self.add_texts(row.get("note"))
            if isinstance(row.get("note"), str) and row["note"].strip():
                self.notes.add(row["note"].strip())

    def removes_vote(self, row: dict[str, Any]) -> bool:
        return (row.get("user") == self.user or str(row.get("id")) in self.vote_ids
                or bool({str(row.get("interaction_a")), str(row.get("interaction_b"))} & self.all_interaction_ids))

    def quotes_them(self, row: dict[str, Any]) -> bool:
        """Whether a machine-made interaction (teacher rewrite, evaluation call) carries their text."""
        if row.get("purpose") not in MACHINE_PURPOSES:
            return False
        prompt = str(row.get("prompt") or "")
        if row.get("purpose") == "evaluation":
            return normalize_prompt(prompt) in self.prompts
        if row.get("purpose") == "judge":
            question = prompt.partition("Question:\n")[2].partition("\n\nAnswer")[0]
            return normalize_prompt(question) in self.prompts
        # a rewrite request: "Question:\n<prompt>\n\nAnswer:\n<answer>\n\nReviewer's feedback:\n<comment>"
        question = prompt.partition("Question:\n")[2].partition("\n\nAnswer:\n")[0]
        comment = prompt.rpartition("Reviewer's feedback:\n")[2].strip()
        return normalize_prompt(question) in self.prompts or comment in self.notes

    # -- recognising them ----------------------------------------------------------------
    @property
    def all_interaction_ids(self) -> set[str]:
        return self.interaction_ids | self.machine_ids

    def removes_interaction(self, row: dict[str, Any]) -> bool:
        return row.get("user") == self.user or str(row.get("id")) in self.all_interaction_ids

    def removes_feedback(self, row: dict[str, Any]) -> bool:
        return (row.get("user") == self.user or str(row.get("id")) in self.feedback_ids
                or row.get("interaction_id") in self.all_interaction_ids)

    def is_theirs(self, item: dict[str, Any]) -> bool:
        """Whether a derived item (eval row, training example, gate item, export row) is theirs:
        it names one of their records, or its question is one of their prompts."""
        if item.get("user") == self.user or item.get("interaction_id") in self.all_interaction_ids:
            return True
        if item.get("interaction_a") in self.all_interaction_ids or item.get("interaction_b") in self.all_interaction_ids:
            return True
        if item.get("id") in self.all_interaction_ids or item.get("id") in self.feedback_ids:
            return True
        record_ids = item.get("record_ids")
        if isinstance(record_ids, list) and (self.feedback_ids | self.vote_ids).intersection(map(str, record_ids)):
            return True
        if any(normalize_prompt(p) in self.prompts for p in _questions(item.get("prompt"))):
            return True
        # a reference or training target that is their answer or correction (to anyone's question)
        return any(text.strip() in self.answers for key in ("reference", "completion", "chosen", "rejected")
                   for text in _texts(item.get(key)))

    def scrub(self, value: Any) -> int:
        """Remove their items from every list of dicts inside ``value`` (in place); return how many."""
        removed = 0
        if isinstance(value, dict):
            for child in value.values():
                removed += self.scrub(child)
        elif isinstance(value, list):
            kept = [item for item in value if not (isinstance(item, dict) and self.is_theirs(item))]
            removed += len(value) - len(kept)
            value[:] = kept
            for child in kept:
                removed += self.scrub(child)
        return removed

    def needles(self) -> list[bytes]:
        """Byte strings that mark a raw line or file as theirs: the user field, their ids, their
        texts as JSON writes them (and the start of long ones, for torn fragments)."""
        name = orjson.dumps(self.user)
        found = {b'"user":' + name, b'"user": ' + name}
        found.update(i.encode() for i in self.all_interaction_ids | self.feedback_ids | self.vote_ids if len(i) >= 8)
        for text in self.texts:
            if len(text) < MIN_RAW_TEXT:
                continue
            for escaped in (orjson.dumps(text)[1:-1], _ascii_json(text)):
                found.add(escaped)
                found.add(escaped[:RAW_PREFIX])
        return sorted(found)

    def raw_match(self, raw: bytes, needles: Iterable[bytes] | None = None) -> bool:
        """Whether raw bytes (an unreadable line, a temp file) hold any of their needles."""
        squeezed = raw.replace(b'": ', b'":')
        return any(n in raw or n in squeezed for n in (self.needles() if needles is None else needles))


def image_refs(row: dict[str, Any]) -> set[str]:
    """The image references an interaction record holds (its own list and its messages')."""
    refs = {str(r) for r in row.get("images") or []}
    for message in row.get("messages") or []:
        if isinstance(message, dict):
            refs.update(str(r) for r in message.get("images") or [])
    return refs


def _questions(prompt: Any) -> list[str]:
    """The user turns of a prompt: a string, or a conversation as training data holds it."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list):
        return [str(m.get("content")) for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return []


def _texts(value: Any) -> list[str]:
    """A text field of an item: a string, or the contents of a list of messages."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(m.get("content")) for m in value if isinstance(m, dict)]
    return []


def _ascii_json(text: str) -> bytes:
    """``text`` as the standard library's JSON writes it by default (non-ASCII escaped)."""
    return json.dumps(text)[1:-1].encode()
