"""Where a training run starts: transfer learning between versions and base models.

``models.deepseek.start_from`` (or ``train --from`` / the Training page) names the starting
point of a run:

- ``"base"`` (default): a fresh LoRA adapter on the configured base model;
- ``"served"``: whatever version is served now (resolved to its id when the run is created,
  so a resume continues from the same one even if another version was promoted meanwhile);
- a registered version id (``"v0003"``): a LoRA version's adapter is trained further (its
  LoRA shape wins over ``lora:`` in the config), a fully fine-tuned version's weights become
  the base the new adapter sits on;
- a path to another model directory (safetensors + config + tokenizer): that model is the base.

The resolved start is written into the run's config (``start_from`` becomes the concrete
id or path, ``base_model`` the weights the run loads), so the registry records for every
version the base it applies to and the parent it came from, and serving loads each version
on its own base even after the configured base model changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..learner.base_model import is_model_dir
from ..learner.registry import BASE_VERSION, ModelRegistry, RegistryError, version_base

SERVED = "served"


class StartError(ValueError):
    """``start_from`` names nothing a run can start from."""


@dataclass(frozen=True)
class StartPoint:
    """The resolved starting point of one run."""

    spec: str  # "base", a version id, or a model path: stable across resumes
    base_model: str  # directory of the full weights the run loads
    adapter: str | None = None  # LoRA adapter trained further; None = a fresh adapter
    parent_version: str | None = None  # registered version the run continues from
    parent_lora: dict[str, Any] | None = None  # that adapter's LoRA shape (r, alpha, targets)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the UI and the CLI."""
        if self.parent_version and self.adapter:
            return f"continues {self.parent_version}'s LoRA adapter (on {Path(self.base_model).name})"
        if self.parent_version:
            return f"a new adapter on {self.parent_version}'s fully fine-tuned weights"
        if self.spec == BASE_VERSION:
            return f"a fresh adapter on the base model {Path(self.base_model).name}"
        return f"a fresh adapter on the model at {self.base_model}"


def resolve_start(spec: str | None, config: Config, registry: ModelRegistry) -> StartPoint:
    """Resolve ``spec`` (see the module docstring) against the registry; raise :class:`StartError`."""
    spec = (spec or BASE_VERSION).strip()
    default_base = config.base_model_path()
    if spec == SERVED:
        spec = registry.served_id()
    if spec == BASE_VERSION:
        return StartPoint(spec=BASE_VERSION, base_model=str(default_base))
    try:
        version = registry.get(spec)
    except RegistryError:
        version = None
    if version is not None:
        if version.adapter_path is not None:
            lora = json.loads((version.adapter_path / "adapter_config.json").read_text(encoding="utf-8"))
            shape = {"r": lora.get("r"), "alpha": lora.get("lora_alpha"), "target_modules": lora.get("target_modules")}
            return StartPoint(spec=version.id, base_model=str(version_base(version, default_base)),
                              adapter=str(version.adapter_path), parent_version=version.id, parent_lora=shape)
        if version.path is not None and is_model_dir(version.path):
            return StartPoint(spec=version.id, base_model=str(version.path), parent_version=version.id)
        raise StartError(f"Version {version.id} has neither a LoRA adapter nor model weights in {version.path}.")
    path = config.resolve_path(spec)
    if is_model_dir(path):
        return StartPoint(spec=str(path), base_model=str(path))
    known = ", ".join([BASE_VERSION, SERVED] + [v.id for v in registry.versions() if not v.is_base])
    raise StartError(
        f"Cannot start training from {spec!r}: it is not a registered version ({known}) "
        f"nor a model directory (config.json + safetensors + tokenizer) at {path}."
    )


def start_choices(config: Config, registry: ModelRegistry) -> list[tuple[str, str]]:
    """(value, label) pairs for a "start from" picker: base, served, each version, and the
    configured ``start_from`` when it is a model path."""
    served = registry.served_id()
    choices = [(BASE_VERSION, "Base model — a fresh adapter"), (SERVED, f"Served version ({served}) — continue it")]
    for version in reversed(registry.versions()):
        if not version.is_base:
            kind = "LoRA" if version.adapter_path is not None else "full weights"
            choices.append((version.id, f"{version.id} ({kind}, {version.metadata.get('method') or '?'}) — continue it"))
    configured = config.learner.start_from
    if configured not in {value for value, _ in choices}:
        choices.append((configured, f"{configured} (from config)"))
    return choices


def apply_start(config: Config, start: StartPoint) -> None:
    """Pin the run's config to ``start`` (so resumes and the registry see the concrete start)."""
    config.learner.start_from = start.spec
    config.learner.base_model = start.base_model


def load_base(config: Config) -> tuple[Any, Any]:
    """The run's base model in fp32 (the optimizer needs fp32 weights; bf16 is only autocast)
    and its tokenizer, with a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = config.base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tokenizer


def load_start_model(config: Config, finetune: str) -> tuple[Any, Any, bool]:
    """Model and tokenizer a run trains, and whether the model already carries a trainable
    adapter (then the trainer must not add a fresh one).

    The config must have been pinned by :func:`apply_start`.
    """
    model, tokenizer = load_base(config)
    spec = config.learner.start_from
    if spec in (None, BASE_VERSION):
        return model, tokenizer, False
    registry = ModelRegistry(config.data_path / "models")
    try:
        version = registry.get(spec)
    except RegistryError:
        return model, tokenizer, False  # another base model by path: already loaded as the base
    if version.adapter_path is None:
        return model, tokenizer, False  # a full version: it is the base
    from peft import PeftModel

    if finetune == "full":  # train every weight of base + adapter
        return PeftModel.from_pretrained(model, str(version.adapter_path)).merge_and_unload(), tokenizer, False
    return PeftModel.from_pretrained(model, str(version.adapter_path), is_trainable=True), tokenizer, True


def load_reference_model(config: Config) -> Any | None:
    """The frozen model a preference run (DPO / KTO) measures its policy against when it continues
    a LoRA version: the base with that version's adapter merged, so the run's KL anchor and reward
    margins describe the version it starts from. ``None`` when the run starts from a base model or
    a fully fine-tuned version: TRL's own reference (the adapter switched off, or the weights at
    the start path) is then that very model.

    The config must have been pinned by :func:`apply_start`.
    """
    spec = config.learner.start_from
    if spec in (None, BASE_VERSION):
        return None
    try:
        version = ModelRegistry(config.data_path / "models").get(spec)
    except RegistryError:
        return None
    if version.adapter_path is None:
        return None
    import torch

    # here, for start-up time: the model runtimes load only when a preference run needs them
    from ..learner.loading import load_merged

    reference, _ = load_merged(config.base_model_path(), version, torch.float32)
    for weight in reference.parameters():
        weight.requires_grad_(False)
    return reference


def transfer_metadata(start: dict[str, Any] | None) -> dict[str, Any]:
    """The lineage fields a registered version carries about where its run started."""
    if not start:
        return {"start_from": BASE_VERSION, "parent_version": None}
    point = StartPoint(**start)
    meta: dict[str, Any] = {"start_from": point.spec, "parent_version": point.parent_version,
                            "start_description": point.describe()}
    if point.parent_lora:
        meta["lora_from_parent"] = point.parent_lora  # the parent's adapter shape, not ``lora:`` in config
    return meta
