"""Record types written to the JSONL learning logs (fields listed in the README, *Data*).

Every record carries ``schema`` (the format version), ``id`` (uuid4 hex) and ``ts``
(ISO-8601 UTC). Validation happens here, before anything touches disk, so a refused record
leaves no trace in the logs.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, ValidationInfo, field_validator

SCHEMA_VERSION = 1

RecordKind = Literal["interactions", "feedback", "evals", "votes", "judgments"]


class RecordError(ValueError):
    """A record was refused; the message says which field and why. Nothing was written."""


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_ts(ts: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix and millisecond precision."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(value: str) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


class Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    id: str = Field(default_factory=new_id, min_length=1)
    ts: str = Field(default_factory=lambda: format_ts(utc_now()))

    @field_validator("ts")
    @classmethod
    def _ts_is_iso(cls, value: str) -> str:
        try:
            return format_ts(parse_ts(value))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"ts must be an ISO-8601 timestamp, got {value!r}") from exc

    @classmethod
    def columns(cls) -> list[str]:
        """Field names as written to disk (``schema`` rather than ``schema_``)."""
        return [info.alias or name for name, info in cls.model_fields.items()]

    def month(self) -> str:
        """The UTC month (``YYYY-MM``) whose file holds this record."""
        return self.ts[:7]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class Interaction(Record):
    user: str = "anonymous"
    session_id: str = ""
    model: str = Field(min_length=1)
    provider_model: str = ""
    model_version: str | None = None
    messages: list[dict[str, Any]] = Field(default_factory=list)
    prompt: str
    response: str
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    route_reason: str = ""
    error: str | None = None
    # "stop" | "length" (cut at the token limit) | "repetition" (stopped looping); None: unknown
    finish_reason: str | None = None
    # why the call was made: "chat" (an analyst asked) | "evaluation" | "teacher" (a rewrite of
    # a commented answer before training) | "judge" (the LLM judge labelling answers). Every kind
    # counts against caps; only rated answers (and qualified judge labels of chat answers) are
    # ever training material. Records written before this field existed are chat.
    purpose: str = "chat"


class Feedback(Record):
    user: str = "anonymous"
    interaction_id: str | None = None
    prompt: str
    response: str
    rating: StrictInt = Field(ge=1, le=5)
    feedback: str = ""
    # An analyst's corrected answer: a preferred training target (optional).
    correction: str | None = None

    @field_validator("response")
    @classmethod
    def _response_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("response must not be empty: there is nothing to rate")
        return value


class EvalResult(Record):
    model: str
    model_version: str | None = None
    suite: str
    n: int = Field(ge=0)
    metrics: dict[str, Any] = Field(default_factory=dict)
    per_item: list[dict[str, Any]] = Field(default_factory=list)
    # What answered: for the local learner the serving runtime and weights, e.g. "llama.cpp
    # (f16 GGUF)", or "transformers fp32 (batched generate)"; "API" for API models.
    runtime: str | None = None
    decoding: str | None = None  # the local learner's decoding, e.g. "greedy, repeat penalty 1.1 ..."
    loss_model: str | None = None  # what computed loss and token accuracy, e.g. "transformers fp32"
    eval_key: str | None = None  # hash of everything the result depends on (reused while unchanged)


VOTE_CHOICES = ("a", "b", "tie", "both_bad")


class Vote(Record):
    """A blind side-by-side verdict: two answers to the same prompt, shown as A and B.

    ``choice`` is ``"a"`` or ``"b"`` (that side is better), ``"tie"`` (equally good) or
    ``"both_bad"`` (neither is acceptable). Each side links the interaction that answered and
    names its model (and, for the learner, its version) so a leaderboard can be built from the
    votes alone, even after the interactions are rotated away.
    """

    user: str = "anonymous"
    prompt: str
    interaction_a: str = Field(min_length=1)
    interaction_b: str = Field(min_length=1)
    model_a: str = Field(min_length=1)
    model_b: str = Field(min_length=1)
    version_a: str | None = None
    version_b: str | None = None
    choice: Literal["a", "b", "tie", "both_bad"]
    note: str = ""

    @field_validator("interaction_b")
    @classmethod
    def _two_answers(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("interaction_a"):
            raise ValueError("a vote compares two different answers; interaction_a and interaction_b are the same")
        return value


JUDGMENT_KINDS = ("score", "pair")


class Judgment(Record):
    """An LLM judge's label: a 1–5 score of one answer by a rubric (``kind`` "score") or a
    verdict on two answers to one prompt (``kind`` "pair": ``choice`` a / b / tie).

    ``parsed`` is False when the judge's reply held no readable score or verdict; ``score`` and
    ``choice`` are then None (an unreadable reply is recorded, never guessed into a number).
    ``rubric_id`` (a hash of the rubric text) keys the judge's agreement with analysts: a
    changed rubric is a new judge to be checked. ``judge_interaction_id`` links the judge's
    own logged call (purpose "judge"), ``reply`` is what it said.
    """

    user: str = "anonymous"  # who asked for the judgment
    judge: str = Field(min_length=1)
    judge_version: str | None = None
    rubric_id: str = Field(min_length=1)
    rubric: str = ""
    kind: Literal["score", "pair"]
    interaction_id: str | None = None
    interaction_a: str | None = None
    interaction_b: str | None = None
    score: StrictInt | None = Field(None, ge=1, le=5)
    choice: Literal["a", "b", "tie"] | None = None
    parsed: bool
    reply: str = ""
    judge_interaction_id: str | None = None

    @field_validator("parsed")
    @classmethod
    def _label_matches_kind(cls, parsed: bool, info: ValidationInfo) -> bool:
        kind = info.data.get("kind")
        label = info.data.get("score") if kind == "score" else info.data.get("choice")
        if kind == "score" and not info.data.get("interaction_id"):
            raise ValueError("a score judgment names the interaction it scores (interaction_id)")
        if kind == "pair" and not (info.data.get("interaction_a") and info.data.get("interaction_b")):
            raise ValueError("a pair judgment names both interactions (interaction_a, interaction_b)")
        if parsed != (label is not None):
            raise ValueError("parsed is true exactly when the judgment carries its label (score or choice)")
        return parsed


RECORD_TYPES: dict[str, type[Record]] = {
    "interactions": Interaction, "feedback": Feedback, "evals": EvalResult, "votes": Vote,
    "judgments": Judgment,
}


def validate_record(kind: str, data: dict[str, Any]) -> Record:
    """Build a record of ``kind`` from ``data``; raise :class:`RecordError` naming the bad fields."""
    try:
        return RECORD_TYPES[kind].model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or kind}: {e['msg']} (got {e.get('input')!r:.80})" for e in exc.errors()
        )
        raise RecordError(f"Refused {kind} record, nothing written: {problems}") from None
