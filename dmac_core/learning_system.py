"""``LearningSystem``: the facade that ties config, logs, models, training and evaluation.

One instance per process (the Streamlit app caches it; ``from dmac_core import
learning_system`` builds it lazily). It owns the shared services so that the pages, the CLI
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


class LearningSystem:
    """Shared services of the workbench; cheap to build (models load on first use)."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or load_config()
        self.store = LearningStore(self.config.data_path, fsync=self.config.storage.fsync)
        self.registry = ModelRegistry(self.config.data_path / "models")
        self.backends: dict[str, Backend] = build_backends(self.config, self.registry)
        self.jobs = TrainingJobManager(self.config, self.store, self.registry)
        self.model_manager = ModelManager(self.config, self.store, self.backends, jobs=self.jobs)

    @property
    def local_backend(self) -> Any:
        """The local learner's backend (``models.deepseek``)."""
        return self.backends["deepseek"]

    def evaluate(
        self,
        test_prompts: list[str],
        model: str = "deepseek",
        references: list[str | None] | None = None,
        suite: str = "adhoc",
    ) -> dict[str, Any]:
        """Generate answers for ``test_prompts`` and score them (see :mod:`dmac_core.evaluation`)."""
        from .evaluation import evaluate_model

        return evaluate_model(
            self.config, self.store, self.backends, test_prompts, model=model, references=references, suite=suite
        )

    async def evaluate_model(
        self,
        test_prompts: list[str],
        model: str = "deepseek",
        references: list[str | None] | None = None,
        suite: str = "adhoc",
    ) -> dict[str, Any]:
        """The seed's ``await learning_system.evaluate_model(test_prompts)``: per-prompt outputs
        and aggregate metrics (ROUGE-1/2/L, BLEU against references — the best-rated logged
        answer when none is given — plus loss and token accuracy on the references)."""
        return await asyncio.to_thread(self.evaluate, test_prompts, model, references, suite)
