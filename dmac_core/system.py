"""``LearningSystem``: the facade that ties config, logs, models, training and evaluation.

One instance per process (the Streamlit app caches it; ``from dmac_core import
learning_system`` builds it lazily). The module is called ``system`` rather than
``learning_system`` on purpose: a submodule of that name would shadow the seed's
``dmac_core.learning_system`` instance. It owns the shared services so that the pages, the CLI
and the seed's async API all see the same store, registry, router and training job.
"""

from __future__ import annotations

import asyncio
from functools import cached_property
from typing import Any

from .backends import Backend, build_backends
from .config import Config, load_config
from .insights.confidence import ConfidenceScorer
from .serving.router import ModelManager
from .logs.store import LearningStore
from .training.gate import SUITE_GENERAL, SUITE_HELD_OUT, SUITE_RATED, PromotionGate
from .training.job import TrainingJobManager
from .learner.registry import ModelRegistry
from .training.scheduler import TrainingScheduler
from .training.teacher import make_router_teacher


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
        self.model_manager = ModelManager(self.config, self.store, self.backends, jobs=self.jobs)
        self.scheduler = TrainingScheduler(self.jobs, self.store, self.config)

    @property
    def local_backend(self) -> Any:
        """The local learner's backend (``models.deepseek``)."""
        return self.backends["deepseek"]

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
        from .evaluation.evaluator import Evaluator

        return Evaluator(self.config, self.store, self.backends, progress=progress, runtime=runtime,
                         router=self.model_manager)

    def _gate_evaluate(self, items: list[dict[str, Any]], model: str, suite: str, reuse: bool) -> dict[str, Any]:
        return self.evaluator().evaluate_model(items, model=model, suite=suite, reuse=reuse)

    def evaluate(
        self,
        test_prompts: list[Any],
        model: str = "deepseek",
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
        model: str = "deepseek",
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
        from .evaluation.evaluator import heldout_suite, is_heldout, reference_index

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
            summary = evaluator.evaluate_model(items, model="deepseek", suite=name, max_new_tokens=max_new_tokens)
        return summary

    def _after_version(self, version_id: str, previous_id: str) -> None:
        """Load the served version now, in the job thread: when a run was promoted its GGUF copy
        is ready (the gate made it), and loading it here spares the first analyst the wait.
        A failure is raised, so the run records it (the next chat answer reports it too)."""
        self.local_backend.current()
