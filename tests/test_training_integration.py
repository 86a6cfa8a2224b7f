"""The closed loop on the real bundled model: chat, rate the model's own answers, train two LoRA
steps; the version is registered and the gate, finding nothing gained, keeps the base served.
(Teaching new facts and serving the new version is tests/test_learning_quality.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dmac_core.backends.local import LocalBackend
from dmac_core.config import LoraConfig, load_config
from dmac_core.learner.registry import ModelRegistry
from dmac_core.logs.store import LearningStore
from dmac_core.system import LearningSystem
from tests.conftest import tiny_config_dict, write_config

pytestmark = pytest.mark.integration


def test_chat_rate_own_answers_train_and_the_gate_finds_nothing_gained(tmp_path: Path, real_model_dir: Path) -> None:
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

    system = LearningSystem(config)
    jobs = system.jobs
    info = jobs.start()
    snap = jobs.wait(timeout=300)
    assert snap.state == "completed", (snap.message, snap.error)
    steps = [e for e in jobs.run_events(info.run_id) if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    assert all(e["train_loss"] is not None and e["train_loss"] > 0 for e in steps)  # the loss was logged
    assert snap.version == "v0001"

    tensors = load_file(str(registry.get("v0001").path / "adapter_model.safetensors"))
    b = [t for name, t in tensors.items() if "lora_B" in name]
    assert len(b) == 30 * 7  # every linear layer of the 30 blocks
    assert any(not torch.equal(t, torch.zeros_like(t)) for t in b)  # LoRA B starts at zero: weights changed

    # The rated answers were the base model's own: asked again, v0001 answers them no better,
    # so there is nothing to gain by serving it — the gate says so and the base stays served.
    rated = registry.get("v0001").metadata["gate"]["checks"][0]
    assert rated["check"] == "rated" and rated["status"] == "failed" and rated["n"] == 3
    assert rated["before"] == rated["after"] == 1.0  # the base already says exactly what was rated
    assert not snap.promoted and registry.served_id() == "base" and "not improved" in snap.message
    after = backend.generate([{"role": "user", "content": "What is the capital of France?"}])
    assert after.model_version == "base" and after.text
