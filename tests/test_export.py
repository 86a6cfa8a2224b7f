"""Export of a model version as merged safetensors, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors.torch import load_file

from dmac_core.backends.local import LocalBackend
from dmac_core.config import Config
from dmac_core.evaluation.local import generate_batch
from dmac_core.learner.registry import ModelRegistry, RegistryError
from dmac_core.training.export import ExportError, export_version, main

PROMPTS = ["What is the capital of France?", "Name a colour.", "Tell me a story about a cat and a very long road."]


def _register_adapter(config: Config, tmp_path: Path) -> tuple[ModelRegistry, str]:
    """A LoRA adapter with non-zero weights (so merging changes the output), registered as v0001."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = config.base_model_path()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  task_type="CAUSAL_LM"))
    torch.manual_seed(7)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.5)  # LoRA B starts at zero: without this the merge would be a no-op
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    registry = ModelRegistry(config.data_path / "models")
    metadata = {"base_model": str(base), "method": "sft", "run_id": "20260101-000000-abcd",
                "hyper_parameters": {"learning_rate": 0.01, "batch_size": 2, "epochs": 2,
                                     "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
                "lineage": {"feedback_ids": ["f1", "f2"], "interaction_ids": ["i1"], "months": ["2026-01"],
                            "counts": {"sft_train": 2, "sft_eval": 0}},
                "metrics": {"train_loss": 1.5, "steps": 2}}
    version = registry.register(adapter, metadata)
    return registry, version.id


def _greedy_ids(model: Any, tokenizer: Any) -> list[list[int]]:
    out = []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            gen = model.generate(**ids, max_new_tokens=12, do_sample=False, temperature=None, top_p=None, top_k=None,
                                 pad_token_id=tokenizer.pad_token_id)
        out.append(gen[0, ids["input_ids"].shape[1]:].tolist())
    return out


def test_export_is_merged_loadable_and_answers_like_the_served_version(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = make_config()
    registry, vid = _register_adapter(config, tmp_path)
    registry.promote(vid)
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), registry)
    served = backend.current()
    assert served.version == vid
    base_answers = generate_batch(LocalBackend("deepseek", config.learner, config.base_model_path(),
                                               ModelRegistry(tmp_path / "no-models")).current(), PROMPTS, 12)
    served_answers = generate_batch(served, PROMPTS, 12)
    assert served_answers != base_answers  # the adapter matters, so equality below means it was merged

    out = export_version(registry, vid, config.base_model_path(), tmp_path / "exports" / "learner")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "export.json", "tokenizer.json"} <= files
    assert not any(name.startswith("adapter_") for name in files)  # merged: no PEFT needed to serve it
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no staging dir left behind
    assert not any("lora" in key for key in load_file(str(out / "model.safetensors")))

    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert _greedy_ids(exported, tokenizer) == _greedy_ids(served.model, served.tokenizer)
    loaded = type(served)(version="exported", model=exported, tokenizer=tokenizer)
    assert generate_batch(loaded, PROMPTS, 12) == served_answers

    card = (out / "README.md").read_text(encoding="utf-8")
    assert "base_model:" in card and vid in card and "2026-01" in card and "20260101-000000-abcd" in card
    info = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert info["version"] == vid and info["merged_adapter"] is True
    assert info["lineage"]["feedback_ids"] == ["f1", "f2"]


def test_export_refuses_a_non_empty_target_and_unknown_versions(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config()
    registry, vid = _register_adapter(config, tmp_path)
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("analyst's file", encoding="utf-8")
    with pytest.raises(ExportError, match="not empty"):
        export_version(registry, vid, config.base_model_path(), target)
    assert (target / "keep.txt").read_text(encoding="utf-8") == "analyst's file"
    with pytest.raises(RegistryError):
        export_version(registry, "v0099", config.base_model_path(), tmp_path / "new")
    assert not (tmp_path / "new").exists()
    # overwrite replaces the directory as a whole
    out = export_version(registry, vid, config.base_model_path(), target, overwrite=True)
    assert (out / "model.safetensors").is_file() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_cli_writes_the_served_version(make_config: Callable[..., Config], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config()
    registry, vid = _register_adapter(config, tmp_path)
    registry.promote(vid)
    out = tmp_path / "cli-export"
    assert main(["--config", config.source, "served", "--out", str(out), "--dtype", "bfloat16"]) == 0
    assert f"Exported {vid}" in capsys.readouterr().out
    assert json.loads((out / "export.json").read_text(encoding="utf-8"))["dtype"] == "bfloat16"
    tensors = load_file(str(out / "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert main(["--config", config.source, "v0042", "--out", str(tmp_path / "x")]) == 2
    assert "Not exported" in capsys.readouterr().err


def test_export_writes_the_gguf_llama_cpp_serves(make_config: Callable[..., Config], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from gguf import GGUFReader

    config = make_config()
    registry, vid = _register_adapter(config, tmp_path)
    out = tmp_path / "with-gguf"
    assert main(["--config", config.source, vid, "--out", str(out), "--gguf", "f16"]) == 0
    reader = GGUFReader(str(out / "model.f16.gguf"))
    merged = load_file(str(out / "model.safetensors"))
    # the merged weights, under llama.cpp's names (v_proj is not permuted: compare it directly)
    v_proj = {t.name: t for t in reader.tensors}["blk.0.attn_v.weight"]
    assert torch.allclose(torch.from_numpy(v_proj.data.astype("float32")),
                          merged["model.layers.0.self_attn.v_proj.weight"].float(), atol=1e-3)
    assert json.loads((out / "export.json").read_text(encoding="utf-8"))["gguf"] == "model.f16.gguf"
    assert "FROM ./model.f16.gguf" in (out / "README.md").read_text(encoding="utf-8")
    # the Ollama Modelfile next to it, with the config's decoding (the test config's defaults)
    modelfile = (out / "Modelfile").read_text(encoding="utf-8").splitlines()
    assert modelfile[1] == "FROM ./model.f16.gguf" and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert f"PARAMETER repeat_penalty {config.learner.repeat_penalty:g}" in modelfile
    assert f"PARAMETER num_predict {config.learner.max_new_tokens}" in modelfile
    assert json.loads((out / "export.json").read_text(encoding="utf-8"))["modelfile"] == "Modelfile"
    # the tiny model's rows (16 values) cannot be q8_0 blocks: refused, nothing left behind
    assert main(["--config", config.source, vid, "--out", str(tmp_path / "q8"), "--gguf", "q8_0"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "q8").exists()
