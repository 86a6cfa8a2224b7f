"""``LearningSystem``: the facade that ties config, logs, models, training and evaluation.

One instance per process (the Streamlit app caches it; ``from dmac_core import
learning_system`` builds it lazily). The module is called ``system`` rather than
``learning_system`` on purpose: a submodule of that name would shadow the seed's
``dmac_core.learning_system`` instance. It owns the shared services so that the pages, the CLI
and the seed's async API all see the same store, registry, router and training job.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .backends import Backend, build_backends
from .config import Config, load_config
from .router import ModelManager
from .store import LearningStore
from .training.job import TrainingJobManager
from .training.registry import ModelRegistry
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
        self.jobs = TrainingJobManager(
            self.config, self.store, self.registry, after_version=self.evaluate_after_training, teacher=teacher
        )
        self.model_manager = ModelManager(self.config, self.store, self.backends, jobs=self.jobs)
        self.scheduler = TrainingScheduler(self.jobs, self.store, self.config)

    @property
    def local_backend(self) -> Any:
        """The local learner's backend (``models.deepseek``)."""
        return self.backends["deepseek"]

    def evaluator(self, progress: Any = None) -> Any:
        from .evaluation import Evaluator

        return Evaluator(self.config, self.store, self.backends, progress=progress)

    def evaluate(
        self,
        test_prompts: list[Any],
        model: str = "deepseek",
        references: list[str | None] | None = None,
        suite: str = "adhoc",
        max_new_tokens: int | None = None,
    ) -> dict[str, Any]:
        """Generate answers for ``test_prompts`` and score them (see :mod:`dmac_core.evaluation`)."""
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

    def review_suites(self, max_trained: int = 16) -> dict[str, list[dict[str, Any]]]:
        """The items versions are compared on: the stable held-out split, and (so that a small
        first dataset still shows movement) up to ``max_trained`` of the rated training prompts."""
        from .evaluation import heldout_suite, is_heldout, reference_index

        fraction = self.config.learner.validation_fraction
        index = reference_index(self.store, self.config.learner.min_rating_for_sft)
        trained = [dict(item) for item in index.values() if not is_heldout(item["prompt"], fraction)]
        suites = {"heldout": heldout_suite(self.store, self.config), "trained": trained[-max_trained:]}
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

    def evaluate_after_training(self, version_id: str, previous_id: str, max_new_tokens: int = 64) -> list[dict[str, Any]]:
        """After a run: score the new version and the one it replaces on the same items, so the
        Metrics page shows ROUGE / BLEU of both side by side."""
        evaluator = self.evaluator()
        results = []
        for name, items in self.review_suites().items():
            for version in dict.fromkeys([previous_id, version_id]):
                results.append(
                    evaluator.evaluate_model(
                        items, model=f"deepseek@{version}", suite=name, max_new_tokens=max_new_tokens
                    )
                )
        self._warm_served_learner()
        return results

    def _warm_served_learner(self) -> None:
        """Load the served version now, in the job thread: when a run was promoted, its GGUF
        copy is exported here (seconds), not while the first analyst waits for an answer."""
        try:
            self.local_backend.current()
        except Exception:  # not fatal to the run; the next chat answer reports the problem
            pass
