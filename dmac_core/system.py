"""``LearningSystem``: the facade that ties config, logs, models, training and evaluation.

It is the one composition root: pages, every CLI command, ``torchrun`` runs and the seed's API
get their services from it, and pages call its verbs (rate, start or cancel training, promote,
roll back, compare, explain) instead of reaching into the services.

One instance per process (the Streamlit app caches it; ``from dmac_core import
learning_system`` builds it lazily). The module is called ``system`` rather than
``learning_system`` on purpose: a submodule of that name would shadow the seed's
``dmac_core.learning_system`` instance. It owns the shared services so that the pages, the CLI
and the seed's async API all see the same store, registry, router and training job.
"""

from __future__ import annotations

import asyncio
import random
from functools import cached_property
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import pandas as pd

from .backends import Backend, build_backends
from .backends.base import BackendError
from .config import LEARNER, Config, load_config
from .evaluation.evaluator import Evaluator, SuiteError, heldout_suite, is_heldout, parse_suite, reference_index
from .evaluation.metrics import MIN_PAIRED_ITEMS
from .insights.active import QueueItem, WorkError, build_queue, learner_entropy_fn, premium_model, work_item
from .insights.confidence import ConfidenceScorer
from .insights.embeddings import get_embedder
from .insights.explain import TokenScore, nearest_training_examples
from .insights.topics import fit_topics, topic_table
from .learner.registry import ModelRegistry, RegistryError
from .logs.records import Feedback, RecordError, Vote
from .logs.store import FileHealth, LearningStore
from .privacy.deletion import DeletionRefused, DeletionReport, delete_user_data
from .security.directory import LOCAL_USER, roles_table
from .security.roles import PermissionDenied, Role
from .security.api_keys import ApiKeyError
from .security.service import SecurityService
from .serving.arena import ArenaError, ArenaRound, answer_both, contestant_label, contestants, pick_pair, record_vote
from .serving.attachments import ImageError, image_path, store_image
from .serving.errors import RoutingError
from .serving.router import AUTO, ChatResult, ModelManager, ModelStatus
from .signals import second_opinion
from .signals.agreement import AnalystAgreement, analyst_agreement, ratings_by_analyst
from .signals.judge import JudgeRun, answers_to_judge, judge_answers, judge_pairs, pairs_to_judge
from .signals.judge_agreement import judge_agreement
from .signals.leaderboard import Leaderboard, build_leaderboard, leaderboards_by_topic, vote_sides
from .training.dataset import NotEnoughData
from .training.gate import SUITE_GENERAL, SUITE_HELD_OUT, SUITE_RATED, PromotionGate
from .training.job import JobAlreadyRunning, JobSnapshot, TrainingJobManager
from .training.scheduler import TrainingScheduler
from .training.teacher import make_router_teacher
from .training.transfer import start_choices
from .views.review import apply_review_edits, bulk_rate, ratings_by_version, review_table, versions_table

# What pages name or catch, from the one module they import (with dmac_core.views).
__all__ = [
    "AUTO", "LEARNER", "LOCAL_USER", "MIN_PAIRED_ITEMS", "TRAINING_METHODS", "ApiKeyError", "ArenaError",
    "ArenaRound", "BackendError", "ChatResult", "DeletionRefused", "ImageError", "JobAlreadyRunning", "JudgeRun",
    "Leaderboard", "LearningSystem", "NotEnoughData", "PermissionDenied", "RecordError", "RegistryError", "Role",
    "RoutingError", "SeedModelManager", "SuiteError", "WorkError",
]


# What "Train now" may run instead of the configured method (models.deepseek.method).
TRAINING_METHODS = ("sft", "dpo", "kto", "auto")


class LearningSystem:
    """Shared services of the workbench; cheap to build (models load on first use)."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or load_config()
        self.store = LearningStore(self.config.data_path, fsync=self.config.storage.fsync)
        self.registry = ModelRegistry(self.config.data_path / "models")
        self.backends: dict[str, Backend] = build_backends(self.config, self.registry)
        # The teacher rewrites commented answers through the router (caps counted, logged);
        # a lambda because the router is built after the job manager it serves.
        teacher_name = self.config.learner.teacher
        teacher = make_router_teacher(lambda: self.model_manager, teacher_name) if teacher_name else None
        # The gate measures versions through the evaluator, i.e. through the runtime that serves
        # chat; each piece of its evidence is an eval record (Metrics page).
        self.gate = PromotionGate(self.config, self._gate_evaluate)
        self.jobs = TrainingJobManager(
            self.config, self.store, self.registry, gate=self.gate, after_version=self._after_version, teacher=teacher
        )
        self.model_manager = ModelManager(self.config, self.store, self.backends)
        # the seed's ``from dmac_core import model_manager``: the router plus feedback and training
        self.seed = SeedModelManager(self.model_manager, self.store, self.jobs)
        # roles, users, sign-in and the audit log; every verb below that changes something
        # checks the caller's role through it first
        self.security = SecurityService(self.config)
        # which two contestants a blind comparison draws (tests give a seeded one)
        self.arena_rng = random.Random()
        self.scheduler = TrainingScheduler(
            self.jobs, self.store, self.config,
            on_started=lambda reason: self.security.audit.record("scheduler", "train", via="schedule", reason=reason))

    @property
    def local_backend(self) -> Any:
        """The local learner's backend (``models.deepseek``)."""
        return self.backends[LEARNER]

    def learner_serving(self) -> str:
        """What serves the learner's answers, in words (runtime and decoding), or why it is off."""
        backend = self.local_backend
        if not hasattr(backend, "runtime_status"):
            return f"the learner is off ({backend.available().reason})"
        return f"{backend.runtime_status()}, {backend.decoding.describe()}"

    def version_problem(self, version_id: str) -> str | None:
        """Why a learner version cannot be loaded (see ``LocalBackend.version_problem``), judged
        from its files alone when the learner is switched off."""
        judge = getattr(self.local_backend, "version_problem", None)
        return judge(version_id) if judge is not None else self.registry.problem(version_id)

    @cached_property
    def confidence(self) -> ConfidenceScorer:
        """Insights' per-token confidence of learner answers: by the version that wrote each
        answer, in its own fp32 copy, scored in the background between chat answers."""
        return ConfidenceScorer(
            self.local_backend, self.store, self.config.data_path / "insights" / "confidence.jsonl",
            load_version=self.local_backend.scoring_model, system_prompt=self.config.routing.system_prompt)

    def evaluator(self, progress: Any = None, runtime: str | None = None) -> Any:
        """An :class:`~dmac_core.evaluation.evaluator.Evaluator` over this system's models; ``runtime``
        ("served" | "fp32") overrides ``models.deepseek.evaluate_with``."""
        return Evaluator(self.config, self.store, self.backends, progress=progress, runtime=runtime,
                         router=self.model_manager)

    def _gate_evaluate(self, items: list[dict[str, Any]], model: str, suite: str, reuse: bool) -> dict[str, Any]:
        return self.evaluator().evaluate_model(items, model=model, suite=suite, reuse=reuse)

    def evaluate(
        self,
        test_prompts: list[Any],
        model: str = LEARNER,
        references: list[str | None] | None = None,
        suite: str = "adhoc",
        max_new_tokens: int | None = None,
    ) -> dict[str, Any]:
        """Generate answers for ``test_prompts`` and score them (see :mod:`dmac_core.evaluation.evaluator`)."""
        return self.evaluator().evaluate_model(
            test_prompts, model=model, references=references, suite=suite, max_new_tokens=max_new_tokens
        )

    async def evaluate_model(
        self,
        test_prompts: list[Any],
        model: str = LEARNER,
        references: list[str | None] | None = None,
        suite: str = "adhoc",
    ) -> dict[str, Any]:
        """The seed's ``await learning_system.evaluate_model(test_prompts)``: per-prompt outputs
        and aggregate metrics (ROUGE-1/2/L, BLEU against references — the best-rated logged
        answer when none is given — plus loss and token accuracy on the references)."""
        return await asyncio.to_thread(self.evaluate, test_prompts, model, references, suite)

    def review_suites(self, max_rated: int | None = None) -> dict[str, list[dict[str, Any]]]:
        """The items versions are compared on, as the promotion gate uses them: the newest rated
        answers (trained on), the general-knowledge suite (never trained), and the analysts'
        held-out prompts when ``validation_fraction`` holds some out. Empty suites are left out."""
        learner = self.config.learner
        index = reference_index(self.store, learner.min_rating_for_sft)
        rated = [dict(item) for item in index.values() if not is_heldout(item["prompt"], learner.validation_fraction)]
        general = self.gate.general_items() or []
        suites = {
            SUITE_RATED: rated[-(max_rated or learner.gate.max_rated_items):],
            SUITE_GENERAL: [{"prompt": i["prompt"], "reference": i["reference"]} for i in general],
            SUITE_HELD_OUT: heldout_suite(self.store, self.config),
        }
        return {name: items for name, items in suites.items() if items}

    def evaluate_served(self, max_new_tokens: int = 64) -> dict[str, Any]:
        """Evaluate the served local version on the review suites; returns the last summary."""
        suites = self.review_suites()
        if not suites:
            raise ValueError("Nothing to evaluate on yet: rate some answers 4 or 5 first.")
        evaluator = self.evaluator()
        summary: dict[str, Any] = {}
        for name, items in suites.items():
            summary = evaluator.evaluate_model(items, model=LEARNER, suite=name, max_new_tokens=max_new_tokens)
        return summary

    def _after_version(self, version_id: str, previous_id: str) -> None:
        """Load the served version now, in the job thread: when a run was promoted its GGUF copy
        is ready (the gate made it), and loading it here spares the first analyst the wait.
        A failure is raised, so the run records it (the next chat answer reports it too)."""
        if self.registry.served_id() == version_id:
            self.security.audit.record("gate", "promote", via="training", version=version_id, previous=previous_id)
        self.local_backend.current()

    # -- what the pages do: each page reads like a short script over these verbs --------------
    def start_schedule(self) -> None:
        """Start periodic training when ``models.deepseek.schedule.enabled`` (checked every 5 minutes)."""
        if self.config.learner.schedule.enabled:
            self.scheduler.start_background(interval_s=300)

    def log_health(self) -> list[FileHealth]:
        """Per log file: lines that could not be read and were skipped (shown as a notice)."""
        return self.store.health()

    # chat
    def model_status(self) -> list[ModelStatus]:
        """Availability, what runs each model, usage against caps: the chat sidebar's panel."""
        return self.model_manager.status()

    def display_name(self, model: str) -> str:
        return self.model_manager.display_name(model)

    def chat_stream(self, conversation: list[dict[str, Any]], model: str = AUTO, user: str = LOCAL_USER,
                    session_id: str | None = None, **options: Any) -> Iterator[Any]:
        """Answer the last question of ``conversation`` through the router: text pieces as they
        come, then one :class:`ChatResult` (the interaction is logged by then). Raises
        :class:`PermissionDenied` at once when ``user`` may not chat. ``model`` is ``auto``, a
        configured model or a learner version (``deepseek@v0003``); ``options`` go to the router
        (``max_new_tokens``, ``temperature``, ``record_id``, ``on_route``)."""
        self.security.require(user, "chat")
        return self.model_manager.respond_stream(conversation, model=model, user=user, session_id=session_id or "",
                                                 **options)

    def chat(self, conversation: list[dict[str, Any]], model: str = AUTO, user: str = LOCAL_USER,
             session_id: str | None = None, **options: Any) -> ChatResult:
        """The whole answer of :meth:`chat_stream` (logged by the time it returns)."""
        self.security.require(user, "chat")
        return self.model_manager.respond(conversation, model=model, user=user, session_id=session_id or "",
                                          **options)

    def rate(self, interaction_id: str | None, rating: int, note: str = "", user: str = LOCAL_USER,
             correction: str | None = None, prompt: str | None = None, response: str | None = None) -> Feedback:
        """Record an analyst's 1–5 rating (note, corrected answer) of a logged answer — by its id,
        or by ``prompt`` + ``response`` as the seed's API does; raises :class:`RecordError` (or
        :class:`PermissionDenied`)."""
        self.security.require(user, "rate")
        return self.store.append_feedback(interaction_id=interaction_id, rating=rating, feedback=note, user=user,
                                          correction=correction, prompt=prompt, response=response)

    def model_catalog(self) -> list[tuple[str, str | None]]:
        """Every model a request can name — ``auto``, each configured model, each registered
        learner version (``deepseek@v0003``) — with why it cannot answer now (None: it can)."""
        router = self.model_manager
        named = [(name, router.why_not(name)) for name in self.config.models]
        versions = [(f"{LEARNER}@{v}", router.why_not(f"{LEARNER}@{v}")) for v in self.version_ids()]
        any_up = any(reason is None for _, reason in named)
        auto_reason = None if any_up else "no configured model can answer now"
        return [(AUTO, auto_reason), *named, *versions]

    # blind comparison (Chat's Compare mode)
    def arena_contestants(self, every_version: bool = False) -> list[str]:
        """Who can answer a blind comparison now: available API models and the learner as its
        served and previous versions (``every_version``: every loadable version and the base)."""
        return contestants(self.model_manager, self.registry, LEARNER, self.version_problem, every_version)

    def arena_pair(self, among: list[str] | None = None) -> tuple[str, str]:
        """Two contestants drawn at random from ``among`` (default: :meth:`arena_contestants`),
        in random order, so which is A stays blind even when the analyst chose the two. Raises
        :class:`ArenaError` when fewer than two different contestants are given."""
        return pick_pair(self.arena_contestants() if among is None else among, self.arena_rng)

    def arena_label(self, contestant: str) -> str:
        """A contestant's name as revealed after the vote, e.g. "DeepSeek-RL v0002 (served)"."""
        return contestant_label(self.model_manager, contestant, self.registry.served_id())

    def arena_answer(self, prompt: str, pair: tuple[str, str], user: str = LOCAL_USER,
                     session_id: str | None = None) -> ArenaRound:
        """Both contestants answer ``prompt`` through the router (two logged chat interactions).
        Raises :class:`PermissionDenied`, :class:`ArenaError`, :class:`RoutingError` or a
        ``ValueError`` (an empty or too long question)."""
        self.security.require(user, "chat")
        return answer_both(self.model_manager, prompt, pair, user=user, session_id=session_id or "")

    def vote(self, interaction_a: str, interaction_b: str, choice: str, note: str = "",
             user: str = LOCAL_USER) -> Vote:
        """Record an analyst's verdict on two answers shown blind as A and B: ``choice`` is
        "a", "b", "tie" or "both_bad". Raises :class:`RecordError` (nothing written) or
        :class:`PermissionDenied`."""
        self.security.require(user, "vote")
        return record_vote(self.store, interaction_a, interaction_b, choice, note, user=user, learner=LEARNER)

    def votes(self) -> pd.DataFrame:
        """Every blind-comparison vote, oldest first."""
        return self.store.votes()

    def attach_image(self, data: bytes, user: str = LOCAL_USER) -> str:
        """Store a chat image by content hash; its reference. Raises :class:`ImageError`."""
        self.security.require(user, "chat")
        return store_image(self.config.data_path, data)

    def image_file(self, ref: str) -> Path:
        return image_path(self.config.data_path, ref)

    # feedback review
    def review_table(self) -> pd.DataFrame:
        """Every logged answer with its latest rating, note and correction."""
        return review_table(self.store)

    def save_review_edits(self, before: pd.DataFrame, after: pd.DataFrame, user: str) -> int:
        """Append a feedback record for every changed rating, note or correction; how many."""
        self.security.require(user, "review")
        return apply_review_edits(self.store, before, after, user)

    def rate_all(self, rows: pd.DataFrame, rating: int, user: str) -> int:
        self.security.require(user, "review")
        return bulk_rate(self.store, rows, rating, user)

    def feedback(self) -> pd.DataFrame:
        return self.store.feedback()

    def ratings_by_version(self) -> pd.DataFrame:
        return ratings_by_version(self.store)

    # training and versions
    def start_choices(self) -> list[tuple[str, str]]:
        """(value, label) of what a run can start from: the base, the served version, any version."""
        return start_choices(self.config, self.registry)

    def start_training(self, user: str, start_from: str | None = None, trigger: str = "manual",
                       via: str = "web", method: str | None = None) -> Any:
        """"Train now": raises :class:`JobAlreadyRunning`, :class:`NotEnoughData` or a ``ValueError``
        saying why nothing was started (:class:`PermissionDenied` for a role below trainer).
        ``method`` ("sft", "dpo", "kto", "auto") overrides ``models.deepseek.method`` for this run:
        "dpo" trains on preference pairs, the blind-comparison votes among them."""
        self.security.require(user, "train")
        if method is not None and method not in TRAINING_METHODS:
            raise ValueError(f"Unknown training method {method!r}; use one of {', '.join(TRAINING_METHODS)}")
        info = self.jobs.start(trigger=trigger, user=user, start_from=start_from,
                               **({"method": method} if method is not None else {}))
        self.security.audit.record(user, "train", via=via, run=info.run_id, start_from=start_from or "config",
                                   **({"method": method} if method is not None else {}))
        return info

    def cancel_training(self, user: str = LOCAL_USER, via: str = "web") -> None:
        self.security.require(user, "cancel")
        self.jobs.cancel()
        self.security.audit.record(user, "cancel_training", via=via)

    def training_status(self) -> JobSnapshot | None:
        return self.jobs.status()

    def runs(self) -> list[dict[str, Any]]:
        """Every training run's record, newest first."""
        return self.jobs.runs()

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        return self.jobs.run_events(run_id)

    def versions_table(self) -> pd.DataFrame:
        return versions_table(self.registry, self.version_problem)

    def version_ids(self) -> list[str]:
        """Registered versions, oldest first (the base model is not one)."""
        return [v.id for v in self.registry.versions()]

    def served_version(self) -> str:
        return self.registry.served_id()

    def gate_record(self, version_id: str) -> dict[str, Any] | None:
        """The promotion gate's evidence for a version, if it went through the gate."""
        return self.registry.get(version_id).metadata.get("gate")

    def promote(self, version_id: str, user: str, via: str = "web", reason: str | None = None) -> None:
        """Serve ``version_id`` by an admin's decision; raises :class:`RegistryError` (a version
        whose files cannot be loaded is refused) or :class:`PermissionDenied`."""
        self.security.require(user, "promote")
        previous = self.registry.served_id()
        self.registry.promote(version_id, reason=reason or f"promoted by hand by {user}")
        self.security.audit.record(user, "promote", via=via, version=version_id, previous=previous)

    def roll_back(self, user: str = LOCAL_USER, via: str = "web") -> str:
        """Serve the version that was served before (its id); raises :class:`RegistryError` or
        :class:`PermissionDenied`."""
        self.security.require(user, "rollback")
        previous = self.registry.served_id()
        self.registry.rollback()
        served = self.registry.served_id()
        self.security.audit.record(user, "rollback", via=via, version=served, previous=previous)
        return served

    def delete_user_data(self, user: str, target: str, via: str = "web",
                         progress: Callable[[int, int], None] | None = None) -> DeletionReport:
        """Remove ``target``'s text from every place under the data directory (admin only; see
        :mod:`dmac_core.privacy.deletion`); raises :class:`DeletionRefused` while a run trains."""
        self.security.require(user, "delete_user_data")
        report = delete_user_data(self.store, target, progress=progress)
        self.security.audit.record(user, "delete_user_data", via=via, target=target, items=report.total,
                                   versions=report.versions)
        return report

    # metrics and comparisons
    def evaluations(self) -> pd.DataFrame:
        return self.store.evals()

    def comparison_choices(self) -> tuple[list[str], dict[str, str]]:
        """Models and learner versions a comparison can pick, and why a version cannot be loaded."""
        versions = self.version_ids()
        others = [s.name for s in self.model_status() if s.available and s.name != LEARNER]
        choices = [LEARNER] + [f"{LEARNER}@{v}" for v in versions] + [f"{LEARNER}@base"] + others
        unloadable = {f"{LEARNER}@{v}": problem for v in versions if (problem := self.version_problem(v))}
        return choices, unloadable

    def parse_test_set(self, text: str, name: str) -> list[dict[str, Any]]:
        """A test set uploaded as YAML or JSONL; raises :class:`SuiteError` saying what is wrong."""
        return parse_suite(text, name)

    def compare(self, items: list[dict[str, Any]], models: list[str], suite: str,
                progress: Callable[[int], None] | None = None, max_new_tokens: int = 64,
                user: str = LOCAL_USER) -> Any:
        """The same items through several models and versions, with paired-bootstrap intervals."""
        self.security.require(user, "evaluate")
        return self.evaluator(progress=progress).compare_models(items, models, suite=suite,
                                                                max_new_tokens=max_new_tokens)

    # insights
    def has_prompts(self) -> bool:
        return not (self.store.interactions().empty and self.store.feedback().empty)

    @cached_property
    def embedder(self) -> Any:
        return get_embedder(self.config.data_path)

    def topics(self) -> pd.DataFrame:
        """Prompts grouped into topics, with the learner's gap to the best model on each."""
        return topic_table(self.store, self.embedder, learner=LEARNER)

    def learning_queue(self, score_uncertainty: bool) -> tuple[list[QueueItem], int]:
        """The active-learning queue, and how many answers' uncertainty is still being scored
        (in the background) when ``score_uncertainty`` asks for it and the learner is on."""
        entropy_fn = None
        if score_uncertainty and self.local_backend.available().ok:
            entropy_fn = learner_entropy_fn(self.confidence, self.store)
        learner = self.config.learner
        items = build_queue(self.store, self.embedder, learner=LEARNER, entropy_fn=entropy_fn,
                            min_rating_for_sft=learner.min_rating_for_sft,
                            max_rating_for_negative=learner.max_rating_for_negative)
        return items, (self.confidence.pending() if entropy_fn is not None else 0)

    def premium_model(self) -> str | None:
        """The model the queue's "ask" button uses: the first enabled API model, Gemini first."""
        return premium_model(self.config)

    def work_on(self, item: QueueItem, action: str, user: str, **details: Any) -> Feedback:
        """One action on a queue item ("answer", "rate" or "teacher"; see
        :func:`~dmac_core.insights.active.work_item`); the teacher is asked through the router."""
        self.security.require(user, "review")
        return work_item(self.store, item, action, user=user, manager=self.model_manager, **details)

    def learner_answers(self, limit: int = 50) -> list[dict[str, Any]]:
        """The learner's latest answers that did not fail, newest first."""
        interactions = self.store.interactions()
        if interactions.empty:
            return []
        local = interactions[(interactions["model"] == LEARNER) & interactions["error"].isna()].tail(limit)
        return local.iloc[::-1].to_dict("records")

    def confidence_of(self, answer: dict[str, Any]) -> tuple[list[TokenScore] | None, str | None]:
        """Per-token confidence of a learner answer by the version that wrote it: (scores, None),
        (None, why it cannot be computed), or (None, None) while it is computed in the background."""
        scores = self.confidence.scores(answer)
        return scores, (self.confidence.failure(answer) if scores is None else None)

    def nearest_examples(self, version_id: str, prompt: str) -> pd.DataFrame:
        """The training examples of ``version_id`` nearest to ``prompt`` (empty for the base)."""
        return nearest_training_examples(self.store, self.registry, version_id, prompt, self.embedder)

    # signals: blind-vote leaderboard, the LLM judge, agreement between analysts
    def vote_leaderboard(self) -> Leaderboard:
        """Bradley–Terry strengths of every model and learner version from the blind votes."""
        return build_leaderboard(vote_sides(self.store.votes()), self.config.leaderboard)

    def vote_leaderboards_by_topic(self) -> dict[str, Leaderboard]:
        """One leaderboard per Insights topic of the voted prompts (empty without votes)."""
        sided = vote_sides(self.store.votes())
        if sided.empty:
            return {}
        model = fit_topics(self.store, self.embedder)
        if model is None:
            return {}
        return leaderboards_by_topic(sided, lambda prompts: model.assign(self.embedder.embed(prompts)), model.label,
                                     self.config.leaderboard)

    def judge_agreement(self) -> pd.DataFrame:
        """Per judge and rubric: agreement with analysts and whether its labels may be trained on."""
        return judge_agreement(self.store, self.config.judge)

    def run_judge(self, user: str, what: str = "unrated", limit: int | None = None, via: str = "web") -> JudgeRun:
        """Ask the configured judge (through the router) to score answers — ``what`` "unrated"
        (labels) or "rated" (to measure its agreement) — or to compare voted pairs ("pairs").
        Raises ``ValueError`` when no judge is configured, :class:`PermissionDenied` below trainer."""
        self.security.require(user, "judge")
        judge, rubric = self.config.judge.model, self.config.judge.rubric
        if judge is None:
            raise ValueError("No judge is configured: set judge.model to one of the models in config/config.yaml.")
        if what not in ("unrated", "rated", "pairs"):
            raise ValueError(f"what to judge: 'unrated', 'rated' or 'pairs', got {what!r}")
        limit = limit or self.config.judge.max_items
        errors = (RoutingError, BackendError)
        if what == "pairs":
            items = pairs_to_judge(self.store, judge, rubric, limit)
            run = judge_pairs(self.store, self.model_manager.respond, judge, rubric, items, user, errors)
        else:
            items = answers_to_judge(self.store, judge, rubric, rated=what == "rated", limit=limit)
            run = judge_answers(self.store, self.model_manager.respond, judge, rubric, items, user, errors)
        self.security.audit.record(user, "judge", via=via, judge=judge, what=what, labels=len(run.judgments))
        return run

    def analyst_agreement(self) -> AnalystAgreement:
        """Krippendorff's α between analysts, overall and per analyst, on answers rated by two or more."""
        return analyst_agreement(ratings_by_analyst(self.store))

    def assign_second_opinions(self, user: str, assignee: str, n: int) -> int:
        """Send ``n`` answers rated by one other analyst to ``assignee`` for a blind second rating;
        how many were assigned. Raises ``ValueError`` when ``assignee`` may not rate."""
        self.security.require(user, "assign_reviews")
        if not self.security.can(assignee, "rate"):
            raise ValueError(f"{assignee!r} cannot rate answers (no analyst role), so cannot give a second opinion.")
        rows = second_opinion.assign(self.store, assignee, user, n)
        self.security.audit.record(user, "assign_second_opinions", assignee=assignee, items=len(rows))
        return len(rows)

    def second_opinions_for(self, user: str) -> list[dict[str, Any]]:
        """Answers waiting for ``user``'s second opinion (prompt and answer, no earlier rating)."""
        return second_opinion.waiting_for(self.store, user)

    def second_opinion_summary(self) -> pd.DataFrame:
        return second_opinion.queue_summary(self.store)

    def raters(self) -> list[str]:
        """Who a second opinion can go to: the configured users, those who rated anything, and
        the local user without sign-in — each only while their role allows rating."""
        names = set(ratings_by_analyst(self.store)["user"])
        names |= {row["user"] for row in roles_table(self.security.secrets)}
        if not self.security.sign_in_required():
            names.add(LOCAL_USER)
        return sorted(name for name in names if self.security.can(name, "rate"))


class SeedModelManager:
    """The seed's ``model_manager`` (``from dmac_core import model_manager``)::

        answer = await model_manager.generate("What is the future of AI?")   # routed, logged
        await model_manager.provide_feedback(prompt=..., response=..., feedback=..., rating=4)
        summary = await model_manager.train_deepseek()

    Everything else is the router's (``respond``, ``status``, …): this object hands it over."""

    def __init__(self, router: ModelManager, store: LearningStore, jobs: TrainingJobManager | None = None) -> None:
        self._router = router
        self._store = store
        self._jobs = jobs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router, name)

    async def generate(self, prompt: str | list[dict[str, Any]], model: str | None = None, **kwargs: Any) -> ChatResult:
        """``await model_manager.generate("...")``: answer and capture the interaction."""
        return await asyncio.to_thread(self._router.respond, prompt, model, **kwargs)

    async def generate_stream(
        self, prompt: str | list[dict[str, Any]], model: str | None = None, **kwargs: Any
    ) -> AsyncIterator[str | ChatResult]:
        """``async for delta in model_manager.generate_stream("...")``: text deltas, then the result."""
        iterator = self._router.respond_stream(prompt, model, **kwargs)
        sentinel = object()
        while True:
            item = await asyncio.to_thread(next, iterator, sentinel)
            if item is sentinel:
                return
            yield item  # type: ignore[misc]

    async def provide_feedback(
        self,
        prompt: str | None = None,
        response: str | None = None,
        feedback: str = "",
        rating: Any = None,
        interaction_id: str | None = None,
        user: str = "anonymous",
        correction: str | None = None,
    ) -> Feedback:
        """The seed's ``await model_manager.provide_feedback(prompt=..., response=..., feedback=..., rating=4)``."""
        if rating is None:
            raise RecordError("Refused feedback, nothing written: a rating from 1 to 5 is required")
        return await asyncio.to_thread(
            self._store.append_feedback, prompt=prompt, response=response, rating=rating, feedback=feedback,
            interaction_id=interaction_id, user=user, correction=correction,
        )

    async def train_deepseek(self, **kwargs: Any) -> dict[str, Any]:
        """The seed's ``await model_manager.train_deepseek()``: train the local learner now and
        return the run's summary (state, metrics, version created, the gate's evidence).

        When no run can start (too few rated answers, learning switched off, a run already
        going) the summary says so instead of raising: ``{"state": "not started", "message": …}``."""
        if self._jobs is None:
            raise RuntimeError("Training is not configured for this model_manager")
        return await asyncio.to_thread(self._jobs.train_blocking, explain_refusal=True, **kwargs)
