"""Export a version of the local learner as one self-contained model directory.

The result is what vLLM, TGI, llama.cpp's converter or Ollama's ``FROM`` import expect from a
Hugging Face model: ``config.json``, ``generation_config.json``, ``model.safetensors`` (the
base with the version's LoRA adapter merged in, so no PEFT is needed to serve it), the
tokenizer with its chat template, a ``README.md`` model card with the version's lineage, and
``export.json`` (the same facts, machine-readable). With a GGUF it also writes an Ollama
``Modelfile`` next to it (:mod:`dmac_core.learner.ollama_modelfile`), so
``ollama create NAME -f Modelfile`` takes the export as it is.

The model is loaded exactly as the workbench serves it (:func:`~dmac_core.backends.local.load_model`,
which merges the adapter with ``merge_and_unload``), so the exported model answers exactly
like the served version. It is written to a temporary directory next to ``out_dir`` and
renamed into place: a crash never leaves a half-written export under the requested name.

CLI: ``python -m dmac_core export-model VERSION --out DIR`` (see :func:`register`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..cli.common import config_parser, dispatch
from ..config import LocalModelConfig
from ..fsio import fsync_path
from ..learner.base_model import bundled_gguf_path
from ..learner.decoding import Decoding
from ..learner.gguf_export import QUANT_TYPES, GGUFExportError, write_gguf
from ..learner.ollama_modelfile import ModelfileError, modelfile_text
from ..learner.registry import ModelRegistry, ModelVersion, RegistryError
from ..logs.records import format_ts, utc_now

_DTYPES = ("float32", "bfloat16", "float16")


class ExportError(RuntimeError):
    """The export was refused (target exists, unknown version...); the message says why."""


def export_version(
    registry: ModelRegistry,
    version_id: str,
    base_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    dtype: str = "float32",
    overwrite: bool = False,
    gguf: str | None = None,
    learner: LocalModelConfig | None = None,
    system_prompt: str = "",
) -> Path:
    """Write ``version_id`` (``"base"``, ``"v0003"``...) as merged safetensors to ``out_dir``.

    ``dtype`` is the dtype of the saved weights (fp32 by default: merging in fp32 and saving
    it loses nothing; ``bfloat16`` halves the size for GPU servers). ``gguf`` ("q8_0", "f16",
    "q4_1") also writes ``model.<gguf>.gguf`` for llama.cpp / Ollama (the workbench itself serves
    the ``gguf_weights`` format, f16 by default) and an Ollama ``Modelfile`` for it with the
    decoding of ``learner`` (the learner's config, ``models.deepseek``; its defaults when None)
    and ``system_prompt`` (``routing.system_prompt``). An existing non-empty ``out_dir`` is
    refused unless ``overwrite``. Returns ``out_dir``. Raises :class:`ExportError` (also for a
    chat template an Ollama template cannot express) or the registry's ``RegistryError`` for an
    unknown version.
    """
    # here, for start-up time: `python -m dmac_core --help` registers this command without torch
    import torch

    from ..learner.loading import load_model

    if dtype not in _DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if gguf is not None and gguf not in QUANT_TYPES:
        raise ExportError(f"gguf must be one of {', '.join(QUANT_TYPES)}, got {gguf!r}")
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} is not empty; choose another directory or pass overwrite")
    version = registry.get(version_id)
    loaded = load_model(Path(base_path), version, getattr(torch, dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        loaded.model.save_pretrained(staging, safe_serialization=True)
        loaded.tokenizer.save_pretrained(staging)
        if gguf is not None:
            try:
                write_gguf(loaded.model, staging / f"model.{gguf}.gguf", bundled_gguf_path(), gguf,
                           name=f"dmac-learner {version.id}")
            except GGUFExportError as exc:
                raise ExportError(f"no GGUF: {exc}") from exc
            _write_modelfile(staging, f"model.{gguf}.gguf", loaded, learner or LocalModelConfig(), system_prompt)
        info = _export_info(version, Path(base_path), dtype)
        info["gguf"] = f"model.{gguf}.gguf" if gguf else None
        info["modelfile"] = "Modelfile" if gguf else None
        (staging / "export.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
        (staging / "README.md").write_text(model_card(info), encoding="utf-8")
        _fsync_tree(staging)
        if out.exists():
            # Move the old export aside first so the name always points at a complete model.
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "x")
            os.rename(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write_modelfile(directory: Path, gguf_name: str, loaded: Any, learner: LocalModelConfig,
                     system_prompt: str) -> None:
    """The Ollama ``Modelfile`` next to the GGUF: the chat template, stop tokens, decoding and
    system prompt the workbench serves the learner with."""
    try:
        text = modelfile_text(gguf_name, loaded.tokenizer, loaded.eos_ids, Decoding.from_config(learner),
                              learner.max_new_tokens, system_prompt)
    except ModelfileError as exc:
        raise ExportError(f"no Ollama Modelfile: {exc}") from exc
    (directory / "Modelfile").write_text(text, encoding="utf-8")


def _export_info(version: ModelVersion, base_path: Path, dtype: str) -> dict[str, Any]:
    meta = version.metadata
    lineage = meta.get("lineage") or {}
    return {
        "version": version.id,
        "exported": format_ts(utc_now()),
        "dtype": dtype,
        "base_model": meta.get("base_model") or str(base_path),
        "merged_adapter": version.adapter_path is not None,
        "method": meta.get("method"),
        "run_id": meta.get("run_id"),
        "created": meta.get("created"),
        "hyper_parameters": meta.get("hyper_parameters"),
        "metrics": meta.get("metrics"),
        "gate": meta.get("gate"),
        "lineage": {
            "counts": lineage.get("counts"),
            "months": lineage.get("months"),
            "feedback_ids": lineage.get("feedback_ids"),
            "interaction_ids": lineage.get("interaction_ids"),
        },
    }


def model_card(info: dict[str, Any]) -> str:
    """A Hugging Face style model card (YAML front matter + Markdown) from the export info."""
    lineage = info.get("lineage") or {}
    counts = lineage.get("counts") or {}
    hp = info.get("hyper_parameters") or {}
    metrics = info.get("metrics") or {}
    gate = info.get("gate") or {}
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"base_model: {json.dumps(str(info.get('base_model')))}",
        "tags: [dmac-learning-workbench, lora-merged]",
        "---",
        "",
        f"# DeepSeek-RL {info['version']} (DMac Learning Workbench)",
        "",
        f"Exported {info['exported']} as merged {info['dtype']} safetensors; loads with "
        "`AutoModelForCausalLM.from_pretrained(<this dir>)` and needs no PEFT.",
        *([f"`{info['gguf']}` is the same model for llama.cpp; `Modelfile` (`FROM ./{info['gguf']}`, the chat "
           "template, stop tokens, decoding and system prompt the workbench serves it with) imports it into "
           "Ollama as it is: `ollama create NAME -f Modelfile` in this directory."]
          if info.get("gguf") else []),
        "",
        "## Lineage",
        "",
        f"- Base model: `{info.get('base_model')}`",
        f"- Version: {info['version']}" + (f", created {info['created']}" if info.get("created") else ""),
        f"- Training run: {info.get('run_id') or '—'}; method: {info.get('method') or '—'}",
        f"- LoRA adapter merged: {'yes' if info.get('merged_adapter') else 'no (full weights or base)'}",
        f"- Learning-log months: {', '.join(lineage.get('months') or []) or '—'}",
        f"- Feedback records used: {len(lineage.get('feedback_ids') or [])}; "
        f"interactions: {len(lineage.get('interaction_ids') or [])}",
    ]
    if counts:
        lines.append("- Examples: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if hp:
        lora = hp.get("lora") or {}
        lines += [
            "",
            "## Hyper-parameters",
            "",
            f"learning rate {hp.get('learning_rate')}, batch size {hp.get('batch_size')}, epochs {hp.get('epochs')}, "
            f"max length {hp.get('max_length')}, seed {hp.get('seed')}, precision {hp.get('precision')}; "
            f"LoRA r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}, "
            f"modules {', '.join(lora.get('target_modules') or [])}",
        ]
    if metrics or gate:
        lines += ["", "## Metrics", ""]
        for key in ("train_loss", "eval_loss", "eval_token_accuracy", "steps", "train_runtime_s"):
            if metrics.get(key) is not None:
                lines.append(f"- {key}: {metrics[key]}")
        if gate.get("reason"):
            lines.append(f"- promotion gate: {'passed' if gate.get('passed') else 'not passed'} ({gate['reason']})")
    lines += ["", "Full details: `export.json`.", ""]
    return "\n".join(lines)


def _fsync_tree(root: Path) -> None:
    # The rename must not land before the files' contents: fsync each file, then the directory.
    for path in root.rglob("*"):
        if path.is_file():
            fsync_path(path)
    fsync_path(root)


# -- CLI -------------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add the ``export-model`` sub-command to an argparse sub-parser group."""
    parser = subparsers.add_parser(
        "export-model", help="write a model version as merged safetensors (for vLLM, Ollama, TGI...)"
    )
    _add_arguments(parser)
    parser.set_defaults(handler=export_command)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", help="version id (e.g. v0003), 'served' or 'base'")
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    parser.add_argument("--dtype", choices=_DTYPES, default="float32", help="dtype of the saved weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    parser.add_argument("--gguf", choices=QUANT_TYPES, default=None,
                        help="also write model.<format>.gguf for llama.cpp and an Ollama Modelfile for it (f16 answers like the fp32 model: what the workbench serves by default)")


def export_command(args: argparse.Namespace, config: Any) -> int:
    """Run the export; print where it went; return the process exit code."""
    from ..system import LearningSystem  # lazily, for start-up time: `--help` builds no services

    system = LearningSystem(config)
    system.security.require(args.acting_user, "export")
    registry = system.registry  # the workbench's own registry
    version = registry.served_id() if args.version == "served" else args.version
    try:
        out = export_version(registry, version, config.base_model_path(), args.out, dtype=args.dtype,
                             overwrite=args.overwrite, gguf=args.gguf, learner=config.learner,
                             system_prompt=config.routing.system_prompt)
    except (ExportError, RegistryError) as exc:
        print(f"Not exported: {exc}", file=sys.stderr)
        return 2
    print(f"Exported {version} to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dmac_core.training.export VERSION --out DIR`` on its own."""

    parser = config_parser("python -m dmac_core.training.export")
    _add_arguments(parser)
    parser.set_defaults(handler=export_command)
    return dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
