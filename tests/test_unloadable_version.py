"""A served version whose files are missing or corrupt: never answered for by other weights,
reported as unloadable wherever it is named, and not served again by hand."""

from __future__ import annotations

import re
from typing import Callable

import pytest
from streamlit.testing.v1 import AppTest

import dmac_core
from dmac_core.backends.base import BackendError
from dmac_core.config import PROJECT_ROOT, Config
from dmac_core.learner.registry import RegistryError
from dmac_core.serving.router import RoutingError
from dmac_core.system import LearningSystem
from dmac_core.views.review import versions_table

from .gate_doubles import scripted_gate
from .test_training import seed_ratings


def served_version(config: Config) -> LearningSystem:
    """A workbench serving v0001, a LoRA version trained on the tiny model."""
    system = LearningSystem(config)
    system.jobs.gate = scripted_gate(config, system.registry)  # mechanics: the tiny model learns nothing visible
    seed_ratings(system.store)
    system.jobs.start()
    assert system.jobs.wait(120).state == "completed" and system.registry.served_id() == "v0001"
    return system


def test_a_served_version_with_missing_weights_is_off_with_the_reason(make_config: Callable[..., Config]) -> None:
    system = served_version(make_config(epochs=1))
    (system.registry.get("v0001").path / "adapter_model.safetensors").unlink()
    fresh = LearningSystem(system.config)  # a restarted workbench
    reason = "adapter weights (adapter_model.safetensors) missing"
    assert fresh.registry.problem("v0001") == reason
    availability = fresh.local_backend.available()
    assert not availability.ok
    assert availability.reason.startswith(f"the served version v0001 cannot be loaded ({reason})")
    # no answer in v0001's name from the base weights: the learner is off and says why
    with pytest.raises(RoutingError, match="v0001 cannot be loaded"):
        fresh.model_manager.respond("What is the capital of France?", model="deepseek")
    table = versions_table(fresh.registry, fresh.local_backend.version_problem).set_index("version")
    assert table.loc["v0001", "loads"] == f"no: {reason}" and table.loc["base", "loads"] == "yes"
    with pytest.raises(RegistryError, match=re.escape(f"Version v0001 cannot be served: {reason}")):
        fresh.registry.promote("v0001")
    # rolling back serves the base again, which answers as itself
    fresh.registry.rollback()
    assert fresh.local_backend.available().ok
    answer = fresh.model_manager.respond("What is the capital of France?", model="deepseek")
    assert answer.model_version == "base"


def test_corrupt_weights_fail_once_and_are_reported_until_the_files_change(make_config: Callable[..., Config]) -> None:
    system = served_version(make_config(epochs=1))
    weights = system.registry.get("v0001").path / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"not a safetensors file")
    fresh = LearningSystem(system.config)
    assert fresh.registry.problem("v0001") is None  # the files are all there
    assert fresh.local_backend.available().ok  # nothing known against it yet
    with pytest.raises(BackendError, match="Version v0001 of deepseek cannot be loaded: "):
        fresh.local_backend.current()
    problem = fresh.local_backend.version_problem("v0001")
    assert problem and "v0001" not in problem  # the loader's own error, e.g. SafetensorError: ...
    assert not fresh.local_backend.available().ok  # not retried on every answer
    weights.write_bytes(good)  # repaired: tried again
    assert fresh.local_backend.version_problem("v0001") is None
    assert fresh.local_backend.current().version == "v0001"


def test_the_sidebar_says_the_served_version_cannot_be_loaded(app_env: Config) -> None:
    system = served_version(app_env)
    (system.registry.get("v0001").path / "adapter_model.safetensors").unlink()
    dmac_core.reset_learning_system()
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.sidebar.error]
    assert errors == ["Version v0001 cannot be loaded (adapter weights (adapter_model.safetensors) missing): "
                      "DeepSeek-RL is off until it is rolled back or another version is served (Training page)."]
    at.switch_page("pages/training.py").run()
    versions = next(d.value for d in at.dataframe if "loads" in d.value.columns)
    assert versions.set_index("version").loc["v0001", "loads"].startswith("no: adapter weights")
