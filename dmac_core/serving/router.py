"""``ModelManager``: picks a model per request, retries and falls back, captures everything.

Every answer from every model, and every failed attempt, becomes an interaction record with
``route_reason`` saying which model answered and why (e.g. "auto/priority: gemini:
1000/1000 requests today → deepseek_api"). The seed's async API
(``generate``, ``provide_feedback``, ``train_deepseek``) lives here too.

A call to a model with caps reserves its request and an estimate of its tokens before it starts
(:mod:`.reservations`: checked and reserved under one lock, across processes), so concurrent
sessions cannot pass a cap between them. The reservation ends when the call's record is
written; that record counts against the caps unless the call never reached the server (a
connection that could not be made, a request refused before it was sent): a request sent counts,
answered or not.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..backends.base import Backend, BackendError, Generation, Message, chat_messages
from ..backends.retry import call_with_retries
from ..config import LEARNER, Config
from ..insights.embeddings import get_embedder
from ..insights.routing import TopicRouter
from ..logs.store import LearningStore
from ..signals.leaderboard import recent, routing_strengths, vote_sides
from .attachments import image_support, message_images
from .errors import MID_ANSWER, OVER_CAP, UNAVAILABLE, UNKNOWN_MODEL, RoutingError
from .reservations import Reservation, ReservationBook
from .token_estimate import call_tokens
from .usage import Usage, UsageCounter, cap_exceeded, cap_wait

AUTO = "auto"
# "deepseek@v0003": the learner's version v0003, whichever version is served
VERSION_SEPARATOR = "@"


def split_model(model: str | None) -> tuple[str | None, str | None]:
    """``"deepseek@v0003"`` → ``("deepseek", "v0003")``; a plain name has no version."""
    if model and VERSION_SEPARATOR in model:
        name, version = model.split(VERSION_SEPARATOR, 1)
        return name, version
    return model, None


@dataclass(frozen=True)
class Skip:
    """Why a model is passed over for a request, and when trying again could help."""

    kind: str  # errors.UNAVAILABLE | errors.OVER_CAP | errors.UNKNOWN_MODEL
    reason: str
    retry_after: float | None = None


@dataclass
class ChatResult:
    """An answer with its provenance. ``str(result)`` is the answer text."""

    text: str
    model: str
    model_version: str | None
    route_reason: str
    interaction_id: str
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    finish_reason: str | None = None  # "stop" | "length" | "repetition" (see Generation)

    def __str__(self) -> str:
        return self.text


@dataclass
class ModelStatus:
    name: str
    display_name: str
    available: bool
    reason: str
    cooldown_s: float
    requests_today: int
    tokens_today: int
    caps: dict[str, int | None]
    # today's requests that were not chat, by purpose (evaluation, teacher); included above
    requests_by_purpose: dict[str, int] = field(default_factory=dict)
    # calls admitted and still waiting for their answer (not in the counts above)
    requests_in_flight: int = 0
    # What runs the model, for backends that say (the local learner: llama.cpp or torch, and why)
    runtime: str = ""
    # A setup step still under way that changes how the model runs (llama.cpp being compiled
    # while the torch loop answers): shown where a newcomer sees it without opening anything
    setup_note: str = ""


class ModelManager:
    """Routes chat requests across the configured backends and logs every interaction."""

    def __init__(
        self,
        config: Config,
        store: LearningStore,
        backends: dict[str, Backend],
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.backends = backends
        # The checkpoint spares a restarted process a recount of the month's log before it routes.
        self.usage = UsageCounter(store, checkpoint_path=store.data_dir / "usage" / "counter.json")
        self.reservations = ReservationBook(self.usage, store.data_dir / "usage")
        self._rng = rng or random.Random()
        self._cooldown_until: dict[str, float] = {}
        self._lock = threading.Lock()
        self.topic_router: Any = None  # insights.routing.TopicRouter, built on first topic-aware request

    # -- model selection ---------------------------------------------------------------
    def display_name(self, name: str) -> str:
        model = self.config.models.get(name)
        return model.display_name if model else name

    def in_cooldown(self, name: str) -> float:
        """Seconds of cooldown left for ``name`` (0 when healthy)."""
        return max(0.0, self._cooldown_until.get(name, 0.0) - time.monotonic())

    def _skip(self, name: str, images: bool = False, version: str | None = None) -> Skip | None:
        backend = self.backends.get(name)
        if backend is None:
            return Skip(UNKNOWN_MODEL, f"{name}: not configured")
        if version is not None:
            problem = self._version_problem(name, version)
            if problem is not None:
                return problem
        else:
            availability = backend.available()
            if not availability.ok:
                return Skip(UNAVAILABLE, f"{name}: {availability.reason}")
        if images and not (support := image_support(backend, self.display_name(name))).ok:
            return Skip(UNAVAILABLE, f"{name}: {support.reason}")
        left = self.in_cooldown(name)
        if left > 0:
            return Skip(UNAVAILABLE, f"{name}: cooling down for {left:.0f}s after errors", left)
        caps = self.config.routing.caps.get(name)
        if caps is None:
            return None
        usage = self.usage_now(name)
        reason = cap_exceeded(name, usage, caps)
        return Skip(OVER_CAP, reason, cap_wait(caps, usage)) if reason else None

    def _version_problem(self, name: str, version: str) -> Skip | None:
        """Why ``name@version`` cannot answer: only the learner has versions; an unknown one is
        unknown, an unloadable one unavailable. Refused before any call is made or logged."""
        backend = self.backends[name]
        if getattr(backend, "has_version", None) is None:
            return Skip(UNKNOWN_MODEL, f"{self.display_name(name)} is an API model: only the local learner has versions")
        if not version.strip():
            return Skip(UNKNOWN_MODEL, f"No version after '@' in {name + '@'!r}: name one, e.g. {name}@v0001")
        problem = backend.version_problem(version)
        if problem is None:
            return None
        kind = UNKNOWN_MODEL if not backend.has_version(version) else UNAVAILABLE
        return Skip(kind, f"version {version} cannot answer — {problem}")

    def why_not(self, model: str) -> str | None:
        """Why ``model`` (a name, or ``name@version``) cannot answer now (off, cooling down, at a
        cap, an unknown or unloadable version), or None when it can."""
        name, version = split_model(model)
        skip = self._skip(name or "", version=version)
        return skip.reason if skip else None

    def usage_now(self, name: str) -> Usage:
        """``name``'s usage today: the logged calls and those in flight (every process's)."""
        return self.reservations.usage(name)

    def _reserve(self, name: str, messages: list[Message], options: dict[str, Any]) -> Reservation | None | str:
        """Hold ``name``'s place under its caps for one call (None: the model has no caps), or
        say why the call is not admitted."""
        caps = self.config.routing.caps.get(name)
        if caps is None:
            return None
        return self.reservations.reserve(name, caps, call_tokens(messages, self.config.models[name], options))

    def candidates(
        self, model: str | None = None, prompt: str | None = None, images: bool = False,
        notes: list[str] | None = None,
    ) -> list[tuple[str, str | None]]:
        """Models in the order they would be tried, each with the reason it is skipped (or None).

        ``prompt`` lets topic-aware routing rank by the prompt's topic; ``images`` skips models
        that cannot take images; ``notes`` (if given) receives a note on how models were ranked.
        ``model`` may name a learner version (``"deepseek@v0003"``).
        """
        return [(name, skip.reason if skip else None) for name, skip in self._ranked(model, prompt, images, notes)]

    def _ranked(
        self, model: str | None, prompt: str | None, images: bool, notes: list[str] | None,
    ) -> list[tuple[str, Skip | None]]:
        if model and model != AUTO:
            name, version = split_model(model)
            if name not in self.backends:
                raise RoutingError(f"Unknown model {model!r}; configured: {', '.join(self.backends)}", UNKNOWN_MODEL)
            skip = self._skip(name, images, version)
            if skip:
                raise RoutingError(f"{self.display_name(name)} cannot answer now — {skip.reason}", skip.kind,
                                   skip.retry_after)
            return [(name, None)]
        order = self.config.routing_order()
        if self.config.routing.strategy == "best_rated":
            order = self._rank_by_rating(order, prompt, notes)
        return [(name, self._skip(name, images)) for name in order]

    def _topic_router(self) -> Any:
        if self.topic_router is None:

            self.topic_router = TopicRouter(
                self.store, lambda: get_embedder(self.config.data_path),
                window_days=self.config.routing.best_rated_window_days,
            )
        return self.topic_router

    def mean_ratings(self) -> dict[str, tuple[float, int]]:
        """Mean rating and count per model over the configured window (latest feedback only)."""
        feedback = self.store.feedback()
        interactions = self.store.interactions()
        if feedback.empty or interactions.empty:
            return {}
        window_start = time.time() - self.config.routing.best_rated_window_days * 86400
        linked = feedback.dropna(subset=["interaction_id"]).merge(
            interactions[["id", "model"]], left_on="interaction_id", right_on="id", how="inner"
        )
        linked = linked[linked["ts"].map(lambda t: t.timestamp() >= window_start)]
        grouped = linked.groupby("model")["rating"].agg(["mean", "count"])
        return {str(m): (float(r["mean"]), int(r["count"])) for m, r in grouped.iterrows()}

    def served_learner_version(self) -> str | None:
        """The learner version that answers now (None when the learner is off or absent)."""
        served = getattr(self.backends.get(LEARNER), "served_version", None)
        return served() if callable(served) else None

    def vote_strengths(self) -> dict[str, tuple[float, int]]:
        """Bradley–Terry strength and vote count per model over the configured window, from the
        blind votes; the learner is its served version's entry (see signals.leaderboard)."""
        votes = vote_sides(recent(self.store.votes(), self.config.routing.best_rated_window_days))
        return routing_strengths(votes, self.served_learner_version(), both_bad=self.config.leaderboard.both_bad)

    def _rank_by_rating(self, order: list[str], prompt: str | None = None, notes: list[str] | None = None) -> list[str]:
        by_votes = self.config.routing.rank_by == "votes"
        ratings = self.vote_strengths() if by_votes else self.mean_ratings()
        minimum = self.config.routing.best_rated_min_samples
        if self.config.routing.topic_aware and prompt:
            # Per-topic ratings: the learner gets a topic once it is rated there as well as the others.
            ranked, note = self._topic_router().rank(
                order, prompt, ratings, minimum, by=self.config.routing.rank_by,
                served_version=self.served_learner_version() if by_votes else None,
                both_bad=self.config.leaderboard.both_bad)
            if notes is not None:
                notes.append(note)
        else:
            rated = [n for n in order if ratings.get(n, (0, 0))[1] >= minimum]
            rated.sort(key=lambda n: -ratings[n][0])
            unrated = [n for n in order if n not in rated]
            ranked = rated + unrated
            if by_votes and notes is not None:
                shown = ", ".join(f"{n} {ratings[n][0]:+.2f} (n={ratings[n][1]})" for n in rated)
                notes.append(f"blind-vote strengths: {shown or f'fewer than {minimum} votes each'}")
        # A little exploration keeps collecting ratings for models that are not on top.
        if len(ranked) > 1 and self._rng.random() < self.config.routing.exploration:
            pick = self._rng.randrange(1, len(ranked))
            ranked.insert(0, ranked.pop(pick))
        return ranked

    # -- requests ----------------------------------------------------------------------
    def _messages(self, prompt_or_messages: str | list[Message]) -> list[Message]:
        messages = chat_messages(prompt_or_messages)
        if not messages or messages[-1].get("role") != "user" or not str(messages[-1].get("content", "")).strip():
            raise ValueError("The prompt is empty: type a question first.")
        size = sum(len(str(m.get("content", ""))) for m in messages)
        if size > self.config.routing.max_prompt_chars:
            raise ValueError(
                f"The conversation is {size:,} characters long; the limit is "
                f"{self.config.routing.max_prompt_chars:,} (routing.max_prompt_chars). Start a new chat or shorten it."
            )
        return chat_messages(messages, self.config.routing.system_prompt.strip())

    def _route_reason(self, requested: str | None, name: str, notes: list[str]) -> str:
        if requested and requested != AUTO:
            head = f"chosen by user: {requested}"  # with the version when one was asked for
        else:
            head = f"auto/{self.config.routing.strategy}: {name}"
        return head if not notes else f"{'; '.join(notes)} → {head}"

    def _max_retries(self, name: str) -> int:
        return int(getattr(self.config.models[name], "max_retries", 0))

    def _note_failure(self, name: str, error: BackendError) -> None:
        if error.retryable or error.kind in ("timeout", "rate_limit", "server", "connection"):
            with self._lock:
                self._cooldown_until[name] = time.monotonic() + self.config.routing.cooldown_s

    def _provider_model(self, name: str) -> str:
        return str(getattr(self.config.models[name], "model", name))

    def _capture(
        self,
        *,
        name: str,
        messages: list[Message],
        generation: Generation | None,
        route_reason: str,
        user: str,
        session_id: str,
        error: str | None = None,
        latency_ms: float | None = None,
        purpose: str = "chat",
        request_sent: bool = True,
        record_id: str | None = None,
    ) -> str:
        record = self.store.append_interaction(
            **({"id": record_id} if record_id else {}),
            purpose=purpose,
            user=user,
            session_id=session_id,
            model=name,
            provider_model=generation.provider_model if generation else self._provider_model(name),
            model_version=generation.model_version if generation else None,
            messages=messages,
            prompt=str(messages[-1]["content"]),
            response=generation.text if generation else "",
            # Images are linked by reference (content hash), never copied into the logs.
            **({"images": refs} if (refs := message_images(messages)) else {}),
            latency_ms=generation.latency_ms if generation and generation.latency_ms is not None else latency_ms,
            tokens_in=generation.tokens_in if generation else None,
            tokens_out=generation.tokens_out if generation else None,
            finish_reason=generation.finish_reason if generation else None,
            # a scoped learner version says which weights answered and why
            route_reason=f"{route_reason}; {generation.extra['route_note']}" if generation and
            generation.extra.get("route_note") else route_reason,
            **({"scope": generation.extra["scope"]} if generation and generation.extra.get("scope") else {}),
            # a thinking model's share of tokens_out that went into thinking (billed, not shown)
            **({"thoughts_tokens": generation.extra["thoughts_tokens"]}
               if generation and generation.extra.get("thoughts_tokens") else {}),
            error=error,
            # a failed call that never reached the server does not count against the caps
            **({} if request_sent else {"request_sent": False}),
        )
        return record.id

    def respond_stream(
        self,
        prompt_or_messages: str | list[Message],
        model: str | None = None,
        user: str = "anonymous",
        session_id: str = "",
        purpose: str = "chat",
        record_id: str | None = None,
        on_route: Callable[[str, str], None] | None = None,
        **options: Any,
    ) -> Iterator[str | ChatResult]:
        """Yield text deltas of the answer, then one :class:`ChatResult`.

        Fallback to the next model happens only before the first delta was shown; an error
        after that is raised (and logged) rather than silently mixing two models' answers.
        ``purpose`` marks the logged interaction ("chat", "evaluation", "teacher");
        ``record_id`` is the id its record gets (known to a caller before the answer starts);
        ``on_route(model, reason)`` hears of each model tried, before it is asked. A caller
        that stops reading mid-answer (a client gone) still leaves a complete record of what
        was said so far, with ``finish_reason`` "cut_off".
        """
        messages = self._messages(prompt_or_messages)
        # Notes on the models passed over so far, in routing order: skips and failures.
        notes: list[str] = []
        skips: list[Skip] = []
        # "deepseek@v0002": that learner version answers, whichever is served (the backend
        # takes it as an option); the record names the model and the version that answered.
        _, version = split_model(model)
        if version is not None:
            options["version"] = version
        ranked = self._ranked(model, str(messages[-1]["content"]), bool(message_images(messages)), notes)
        for name, skip in ranked:
            if skip:
                notes.append(skip.reason)
                skips.append(skip)
                continue
            backend = self.backends[name]
            reservation = self._reserve(name, messages, options)
            if isinstance(reservation, str):  # the cap was reached since the candidates were listed
                cap_skip = Skip(OVER_CAP, reservation, cap_wait(self.config.routing.caps[name], self.usage_now(name)))
                if model and model != AUTO:
                    raise RoutingError(f"{self.display_name(name)} cannot answer now — {reservation}", OVER_CAP,
                                       cap_skip.retry_after)
                notes.append(reservation)
                skips.append(cap_skip)
                continue
            started = time.perf_counter()
            reason = self._route_reason(model, name, notes)
            if on_route is not None:
                on_route(name, reason)
            pieces: list[str] = []
            answered = False
            stream: Iterator[Any] | None = None
            try:
                stream = call_with_retries(
                    lambda: _first_item(backend.stream(messages, **options)), max_retries=self._max_retries(name)
                )
                for item in stream:
                    if isinstance(item, Generation):
                        interaction_id = self._capture(
                            name=name, messages=messages, generation=item, route_reason=reason, user=user,
                            session_id=session_id, purpose=purpose, record_id=record_id,
                        )
                        answered = True
                        self.reservations.release(reservation)  # the record counts from now on
                        note = item.extra.get("route_note")
                        yield ChatResult(
                            text=item.text, model=name, model_version=item.model_version,
                            route_reason=f"{reason}; {note}" if note else reason,
                            interaction_id=interaction_id, latency_ms=item.latency_ms, tokens_in=item.tokens_in,
                            tokens_out=item.tokens_out, finish_reason=item.finish_reason,
                        )
                        return
                    pieces.append(item)
                    yield item
                raise BackendError(f"{name}: the stream ended without a final answer", kind="error")
            except BackendError as exc:
                self._note_failure(name, exc)
                self._capture(
                    name=name, messages=messages, generation=None, route_reason=reason, user=user,
                    session_id=session_id, error=str(exc)[:500], latency_ms=(time.perf_counter() - started) * 1000,
                    purpose=purpose, request_sent=bool(pieces) or request_sent(exc),
                    record_id=record_id if pieces else None,
                )
                self.reservations.release(reservation)
                if pieces:
                    raise RoutingError(f"{self.display_name(name)} failed mid-answer: {exc}", MID_ANSWER) from exc
                notes.append(f"{name} failed ({exc.kind}{f' {exc.status}' if exc.status else ''})")
                skips.append(Skip(UNAVAILABLE, notes[-1], exc.retry_after))
            except GeneratorExit:
                # the reader stopped mid-answer: stop the model, keep what it said as the record
                if stream is not None and hasattr(stream, "close"):
                    stream.close()
                if not answered:
                    self._capture(
                        name=name, messages=messages, route_reason=reason, user=user, session_id=session_id,
                        purpose=purpose, record_id=record_id,
                        generation=Generation(
                            text="".join(pieces), provider_model=self._provider_model(name),
                            model_version=version or (self.served_learner_version() if name == LEARNER else None),
                            latency_ms=(time.perf_counter() - started) * 1000, finish_reason=CUT_OFF),
                    )
                raise
            finally:
                # any other way out (an unexpected error) writes no record: the call stops holding
                # its place (a no-op when released above)
                self.reservations.release(reservation)
        if skips and all(skip.kind == OVER_CAP for skip in skips):
            waits = [skip.retry_after for skip in skips if skip.retry_after is not None]
            raise RoutingError("Every model is at a usage cap: " + "; ".join(notes), OVER_CAP,
                               min(waits) if waits else None)
        raise RoutingError("No model could answer: " + "; ".join(notes), UNAVAILABLE)

    def respond(self, prompt_or_messages: str | list[Message], model: str | None = None, **kwargs: Any) -> ChatResult:
        """Answer synchronously (see :meth:`respond_stream`)."""
        result: ChatResult | None = None
        for item in self.respond_stream(prompt_or_messages, model=model, **kwargs):
            if isinstance(item, ChatResult):
                result = item
        assert result is not None
        return result

    def status(self) -> list[ModelStatus]:
        """Availability, health and usage against caps for every configured model."""
        rows = []
        for name, model_config in self.config.models.items():
            backend = self.backends.get(name)
            availability = backend.available() if backend else None
            usage = self.usage_now(name)
            caps = self.config.routing.caps.get(name)
            rows.append(
                ModelStatus(
                    name=name,
                    display_name=model_config.display_name,
                    available=bool(availability and availability.ok),
                    reason=availability.reason if availability else "not configured",
                    cooldown_s=self.in_cooldown(name),
                    requests_today=usage.requests_today,
                    tokens_today=usage.tokens_today,
                    requests_by_purpose=usage.requests_by_purpose,
                    requests_in_flight=usage.requests_in_flight,
                    caps=caps.model_dump() if caps else {},
                    runtime=backend.runtime_status() if backend is not None and hasattr(backend, "runtime_status") else "",
                    setup_note=backend.setup_note() if backend is not None and hasattr(backend, "setup_note") else "",
                )
            )
        return rows


# finish_reason of an answer whose reader went away before it ended (the record keeps what was said)
CUT_OFF = "cut_off"


def request_sent(error: BackendError) -> bool:
    """Whether a failed call reached the server, so it counts against the caps. An HTTP status
    came from the server; a timeout or an empty answer means it was working on the request. A
    connection that could not be made, or a request refused before sending (no key, a message
    the API cannot take) sent nothing. The SDKs also call a connection dropped after sending a
    "connection" error, and that one is not counted either: they do not tell the two apart."""
    if error.status is not None:
        return True
    return error.kind not in ("connection", "auth", "bad_request")


def _first_item(iterator: Iterator[Any]) -> Iterator[Any]:
    """Pull the first item eagerly so connection errors surface inside the retry loop, then
    hand back an iterator over the whole stream."""
    first = next(iterator)

    def chained() -> Iterator[Any]:
        yield first
        yield from iterator

    return chained()
