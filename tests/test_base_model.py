"""The learner's base model in a new data directory: prepared on first use, once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dmac_core.backends.local import LocalBackend
from dmac_core.config import load_config
from dmac_core.learner import base_model
from dmac_core.learner.base_model import BaseModelError, ensure_base_model, is_model_dir, prepare_base
from dmac_core.learner.registry import ModelRegistry
from tests.conftest import tiny_config_dict, write_config


def test_concurrent_first_uses_convert_the_bundled_model_once(tmp_path: Path, tiny_model_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A chat answer and a training run may both be first: one converts, the other waits for it."""
    target = tmp_path / "data" / "base" / "SmolLM2-135M-Instruct"
    conversions: list[str] = []

    def slow_copy(path: Path, progress) -> Path:  # stands in for the 15 s GGUF conversion
        conversions.append(threading.current_thread().name)
        time.sleep(0.5)
        path.mkdir(parents=True)
        for name in ("model.safetensors", "config.json", "tokenizer_config.json"):
            (path / name).write_bytes((tiny_model_dir / name).read_bytes())
        return path

    monkeypatch.setattr(base_model, "_convert_bundled", slow_copy)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_base_model(target, print)), name=f"user{i}")
               for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(conversions) == 1 and results == [target] * 3 and is_model_dir(target)


def test_a_configured_base_that_is_missing_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="models.deepseek.base_model"):
        prepare_base(tmp_path / "nowhere", bundled=False)


def test_the_learner_in_a_new_data_directory_is_available_and_prepares_its_base(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write_config(tmp_path / "config.yaml", tiny_config_dict(tmp_path / "data", tiny_model_dir)))
    target = tmp_path / "data" / "base" / "SmolLM2-135M-Instruct"
    notes: list[str] = []

    def copy_tiny(path: Path, progress) -> Path:
        progress("Converting the bundled model (test)")
        notes.append(backend.runtime_status())  # the status panel says what is being prepared
        path.mkdir(parents=True)
        for item in tiny_model_dir.iterdir():
            (path / item.name).write_bytes(item.read_bytes())
        return path

    monkeypatch.setattr(base_model, "_convert_bundled", copy_tiny)
    backend = LocalBackend("deepseek", config.learner, target, ModelRegistry(config.data_path / "models"),
                           bundled_base=True)
    assert backend.available().ok  # nothing converted yet, but it can be
    answer = backend.generate([{"role": "user", "content": "Hi"}], max_new_tokens=2)
    assert answer.model_version == "base" and is_model_dir(target)
    assert notes == ["preparing: Converting the bundled model (test)"]
    other = LocalBackend("x", config.learner, tmp_path / "elsewhere", ModelRegistry(tmp_path / "m"))
    assert not other.available().ok and "models.deepseek.base_model" in other.available().reason
