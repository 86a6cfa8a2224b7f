"""DMac Learning Workbench core: everything that is not UI (no streamlit import here).

The seed's API works as written::

    from dmac_core import model_manager, learning_system
    await model_manager.provide_feedback(prompt=..., response=..., feedback=..., rating=4)
    await model_manager.train_deepseek()
    await learning_system.evaluate_model(test_prompts)

Both names are built lazily on first use from ``config/config.yaml`` (or ``$DMAC_CONFIG``)
and the data directory (``$DMAC_DATA_DIR`` overrides it).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .system import LearningSystem

_lock = threading.Lock()
_system: "LearningSystem | None" = None


def get_learning_system() -> "LearningSystem":
    """The process-wide :class:`LearningSystem`, built on first use."""
    global _system
    with _lock:
        if _system is None:
            # here, for start-up time: `import dmac_core` stays cheap until the seed's API is used
            from .system import LearningSystem

            _system = LearningSystem()
        return _system


def reset_learning_system() -> None:
    """Forget the process-wide instance (tests, or after the config file changed)."""
    global _system
    with _lock:
        _system = None


def __getattr__(name: str) -> Any:
    if name == "learning_system":
        return get_learning_system()
    if name == "model_manager":
        return get_learning_system().seed
    raise AttributeError(f"module 'dmac_core' has no attribute {name!r}")
