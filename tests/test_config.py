"""Config loading: the shipped file, the seed's snippet, and errors that say where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmac_core.config import DEFAULT_CONFIG_PATH, ConfigError, LocalModelConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_loads_with_the_seed_keys() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    learner = config.learner
    assert learner.learning_enabled is True
    assert learner.learning_rate == 0.002  # the seed's key; the value that teaches a dozen facts (README)
    assert (learner.batch_size, learner.epochs, learner.evaluation_interval) == (8, 8, 100)
    # served as measured: f16 weights, the repetition penalty and loop guard, scope on, the gate's suite
    assert (learner.gguf_weights, learner.repeat_penalty, learner.loop_guard) == ("f16", 1.15, True)
    assert learner.scope.enabled and learner.validation_fraction == 0.0 and not learner.replay.enabled
    assert config.general_suite_path() == DEFAULT_CONFIG_PATH.parent / "general_knowledge.yaml"
    assert set(config.models) == {"deepseek", "gemini", "deepseek_api"}
    assert config.routing_order() == ["gemini", "deepseek_api", "deepseek"]


def test_the_seeds_own_snippet_is_a_valid_config(tmp_path: Path) -> None:
    seed = """
models:
  deepseek:
    learning_enabled: true
    learning_rate: 0.001
    batch_size: 16
    epochs: 5
    evaluation_interval: 100
"""
    config = load_config(write(tmp_path, seed))
    assert isinstance(config.learner, LocalModelConfig)
    assert (config.learner.batch_size, config.learner.epochs) == (16, 5)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found: .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_key_names_file_and_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  deepseek:\n    learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "models.deepseek.local.learning_rat" in message or "models.deepseek.learning_rat" in message
    assert "unknown key" in message


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  deepseek:\n    batch_size: lots\n")
    with pytest.raises(ConfigError, match=r"batch_size: .*integer.*'lots'"):
        load_config(path)


def test_out_of_range_and_bad_reference(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(write(tmp_path, "models:\n  deepseek:\n    learning_rate: -1\n"))
    with pytest.raises(ConfigError, match="routing.order names 'gemini'"):
        load_config(write(tmp_path, "routing:\n  order: [gemini]\n"))


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "models: [unclosed\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "data_dir: somewhere\n")
    monkeypatch.setenv("DMAC_CONFIG", str(path))
    monkeypatch.setenv("DMAC_DATA_DIR", str(tmp_path / "elsewhere"))
    config = load_config()
    assert config.source == str(path)
    assert config.data_path == tmp_path / "elsewhere"
