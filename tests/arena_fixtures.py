"""Learner versions for arena tests: random LoRA adapters on the tiny model, registered and served.

Two versions whose weights differ answer the same question differently, so a blind comparison
of the served version and the one before it has two distinct answers to vote on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dmac_core.learner.registry import ModelRegistry


def register_random_adapter(base: Path, models_dir: Path, work_dir: Path, seed: int, promote: bool = True) -> str:
    """Register (and by default serve) a LoRA adapter with random non-zero weights; its id."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.5)  # LoRA B starts at zero: without this the adapter changes nothing
    adapter = work_dir / f"adapter-{seed}"
    peft_model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    registry = ModelRegistry(models_dir)
    version = registry.register(adapter, {"base_model": str(base), "method": "sft", "run_id": f"test-{seed}"})
    if promote:
        registry.promote(version.id, reason="arena test")
    return version.id
