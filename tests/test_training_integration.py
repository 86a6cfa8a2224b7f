"""The closed loop on the real bundled model: chat, rate, train two LoRA steps, serve the new version."""

from __future__ import annotations

from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file

from dmac_core.backends.local import LocalBackend
from dmac_core.config import LoraConfig, load_config
from dmac_core.store import LearningStore
from dmac_core.training.job import TrainingJobManager
from dmac_core.training.registry import ModelRegistry
from tests.conftest import tiny_config_dict, write_config

pytestmark = pytest.mark.integration


def test_chat_rate_train_and_serve_new_version(tmp_path: Path, real_model_dir: Path) -> None:
    data = tiny_config_dict(
        tmp_path / "data", real_model_dir, learning_rate=0.001, batch_size=2, epochs=1, min_examples=3,
        validation_fraction=0.0, max_length=64, max_new_tokens=12, lora=LoraConfig().model_dump(),
    )
    config = load_config(write_config(tmp_path / "config.yaml", data))
    store = LearningStore(config.data_path, fsync=False)
    registry = ModelRegistry(config.data_path / "models")
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), registry)

    # chat: three answers from the bundled model, logged and rated 5
    for prompt in ("What is the capital of France?", "Name a primary colour.", "What is 2 + 2?"):
        messages = [{"role": "user", "content": prompt}]
        answer = backend.generate(messages)
        assert answer.model_version == "base" and answer.text
        interaction = store.append_interaction(model="deepseek", prompt=prompt, response=answer.text,
                                               messages=messages, model_version=answer.model_version)
        store.append_feedback(interaction_id=interaction.id, rating=5, feedback="good")

    jobs = TrainingJobManager(config, store, registry)
    info = jobs.start()
    snap = jobs.wait(timeout=300)
    assert snap.state == "completed", (snap.message, snap.error)
    steps = [e for e in jobs.run_events(info.run_id) if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    assert all(e["train_loss"] is not None and e["train_loss"] > 0 for e in steps)  # the loss was logged
    assert snap.version == "v0001" and snap.promoted and registry.served_id() == "v0001"

    tensors = load_file(str(registry.get("v0001").path / "adapter_model.safetensors"))
    b = [t for name, t in tensors.items() if "lora_B" in name]
    assert len(b) == 30 * 7  # every linear layer of the 30 blocks
    assert any(not torch.equal(t, torch.zeros_like(t)) for t in b)  # LoRA B starts at zero: weights changed

    after = backend.generate([{"role": "user", "content": "What is the capital of France?"}])
    assert after.model_version == "v0001" and after.text
