"""Shared fixtures: a tiny random Llama with the real tokenizer, and per-test configs.

Every test gets its own data directory; nothing here touches ``data/`` except reading the
converted bundled base model (``make test`` converts it before pytest starts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from dmac_core.config import BUNDLED_BASE_MODEL_NAME, PROJECT_ROOT, Config, load_config

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REAL_BASE_MODEL = PROJECT_ROOT / "data" / "base" / BUNDLED_BASE_MODEL_NAME



@pytest.fixture(autouse=True)
def _no_developer_secrets(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's .streamlit/secrets.toml (its users and roles would change
    who may do what); a test that needs sign-in writes its own file."""
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path_factory.getbasetemp() / "no-secrets.toml"))


def build_tiny_model(target: Path, hidden_size: int = 16, intermediate_size: int = 32) -> Path:
    """A randomly initialised ~1M-parameter Llama that shares the bundled model's tokenizer
    and chat template, so every code path runs exactly as with the real model, only fast.
    Other sizes give a second, differently shaped base model (transfer-learning tests)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (target / "model.safetensors").is_file():
        return target
    if not (REAL_BASE_MODEL / "tokenizer_config.json").is_file():
        from dmac_core.learner.base_model import ensure_base_model

        ensure_base_model(REAL_BASE_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(REAL_BASE_MODEL)
    torch.manual_seed(2)  # seed 2: greedy output is visible words, not blank lines
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    if not (REAL_BASE_MODEL / "model.safetensors").is_file():
        pytest.fail(f"The bundled base model is not converted at {REAL_BASE_MODEL}: run `make setup`.")
    return REAL_BASE_MODEL


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def tiny_config_dict(data_dir: Path, base_model: Path, **learner: Any) -> dict[str, Any]:
    """A complete config for tests: local learner only, tiny model, fast training."""
    deepseek = {
        "kind": "local",
        "base_model": str(base_model),
        "learning_enabled": True,
        "learning_rate": 0.01,
        "batch_size": 2,
        "epochs": 2,
        "evaluation_interval": 2,
        "min_examples": 4,
        "max_length": 128,
        "max_new_tokens": 8,
        "validation_fraction": 0.25,
        "precision": "fp32",
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        # Off so step counts stay those of the rated data; tests/test_replay.py turns it on.
        "replay": {"enabled": False},
        # A random tiny model knows no general facts, so the gate's general-knowledge checks
        # would have no evidence; tests of those checks use the real model (or set a suite).
        "gate": {"general_suite": None},
    }
    deepseek.update(learner)
    return {
        "data_dir": str(data_dir),
        "models": {"deepseek": deepseek},
        "routing": {"strategy": "priority", "order": ["deepseek"]},
        "storage": {"fsync": False},
    }


@pytest.fixture
def make_config(tmp_path: Path, tiny_model_dir: Path) -> Callable[..., Config]:
    """``make_config(**learner_overrides)`` → a loaded Config on the tiny model in ``tmp_path``."""

    def factory(**learner: Any) -> Config:
        data = tiny_config_dict(tmp_path / "data", tiny_model_dir, **learner)
        return load_config(write_config(tmp_path / "config.yaml", data))

    return factory


@pytest.fixture
def tiny_config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
def app_env(tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Config]:
    """The Streamlit app on the tiny config: env vars set, process-wide services reset before
    and after (``st.cache_resource`` survives across AppTest instances), any job stopped."""
    import streamlit as st

    import dmac_core

    monkeypatch.setenv("DMAC_CONFIG", tiny_config.source)
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "no-secrets.toml"))
    dmac_core.reset_learning_system()
    st.cache_resource.clear()
    yield tiny_config
    if dmac_core._system is not None:  # a page built the services: stop a run it may have started
        dmac_core._system.jobs.cancel()
        dmac_core._system.jobs.wait(60)
    dmac_core.reset_learning_system()
    st.cache_resource.clear()


@pytest.fixture(scope="session")
def served_base_evidence(tmp_path_factory: pytest.TempPathFactory, real_model_dir: Path) -> Path:
    """The real base model's answers to the gate's general-knowledge suite, measured once per
    test session the way ``make run``'s setup measures them for the workbench's data directory.
    Real-model tests copy the eval log into their fresh data directory, so each run's gate
    reuses it (the reuse is keyed by the weight files) instead of asking 46 questions again."""
    from dmac_core.system import LearningSystem
    from tests.learning_quality_fixtures import shipped_config

    data = tmp_path_factory.mktemp("base-evidence") / "data"
    system = LearningSystem(shipped_config(data, real_model_dir))
    assert system.gate.prepare("base")
    return data / "evals"


def with_base_evidence(evidence: Path, data_dir: Path) -> Path:
    """Copy the session's base-model evidence into a test's data directory (see above)."""
    import shutil

    shutil.copytree(evidence, data_dir / "evals", dirs_exist_ok=True)
    return data_dir
