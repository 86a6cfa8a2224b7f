"""Write a Llama-family transformers model as a GGUF file that llama.cpp can serve.

The local learner's served version (the base with its LoRA adapter merged in) is decoded
fastest by llama.cpp, which reads 4.5 bits per weight where the torch path reads 16
(bench/RESULTS.md, "Local generation speed"). This module is the bridge: it maps the HF
tensors to llama.cpp's names, undoes transformers' rotary permutation of the q/k
projections (the inverse of what transformers applies when it loads a GGUF), quantizes with
``gguf``'s reference quantizers and copies the tokenizer and chat template from the bundled
GGUF the base model came from, so llama.cpp sees exactly the vocabulary the HF tokenizer uses.

The file is written next to its destination and renamed into place: a crash never leaves a
half-written GGUF under the final name.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..fsio import commit

# Formats of the 2-D projection weights. Embeddings stay Q8_0 and norms F32, as in the bundled
# file (the embedding is also the tied output head). q4_0 is left out on purpose: re-quantizing
# this model to it cut next-token agreement with fp32 to 72 % (bench/RESULTS.md).
QUANT_TYPES = ("q8_0", "f16", "q4_1")

_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.(.+)")
# Keys describing the network's shape: written from the model's config, never copied.
_SHAPE_KEY = re.compile(r"^(general\.architecture|general\.file_type|general\.name|llama\.)")


class GGUFExportError(RuntimeError):
    """The model cannot be written as a llama.cpp GGUF; the message says why."""


def _qtype(name: str) -> Any:
    """The GGML tensor type of a format name ("q8_0" -> GGMLQuantizationType.Q8_0)."""
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType[name.upper()]


def _file_type(name: str) -> int:
    """The ``general.file_type`` of a file whose projections are in format ``name``."""
    from gguf import LlamaFileType

    return int(LlamaFileType[f"MOSTLY_{name.upper()}"])


# GGUF value types (gguf.GGUFValueType) -> struct format of a scalar; 8 = string, 9 = array.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_metadata(path: str | os.PathLike[str]) -> list[tuple[str, int, int | None, Any]]:
    """The key/value section of a GGUF file as (key, value type, array item type, value).

    gguf's ``GGUFReader`` builds a numpy view per token string and needs ~7 s for the bundled
    file's 49,152 tokens and 48,900 merges; this reads the same section in well under a second.
    """
    import struct

    with open(path, "rb") as handle:
        data = handle.read(64 << 20)  # the metadata sits at the start; tokenizers are < 10 MB
    if data[:4] != b"GGUF":
        raise GGUFExportError(f"{path} is not a GGUF file")
    version, _tensors, count = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise GGUFExportError(f"{path}: GGUF version {version} is not supported")
    offset = 24

    def string() -> str:
        nonlocal offset
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 8 + length
        return data[offset - length: offset].decode("utf-8", errors="surrogateescape")

    def value(kind: int) -> Any:
        nonlocal offset
        if kind == 8:
            return string()
        fmt = _SCALAR[kind]
        (item,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return item

    fields = []
    for _ in range(count):
        key = string()
        (kind,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if kind == 9:
            sub, n = struct.unpack_from("<IQ", data, offset)
            offset += 12
            if sub == 8:
                items: Any = [string() for _ in range(n)]
            else:
                fmt = _SCALAR[sub]
                size = struct.calcsize(fmt)
                items = list(struct.unpack_from(f"<{n}{fmt[1]}", data, offset))
                offset += n * size
            fields.append((key, kind, sub, items))
        else:
            fields.append((key, kind, None, value(kind)))
    return fields


def permute_for_llama_cpp(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder a q/k projection's rows from HF's rotary layout (halves) to llama.cpp's
    (interleaved pairs), as llama.cpp's own converter does."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def check_exportable(model: Any, template_vocab: int, quant: str = "f16", embedding_quant: str = "f16") -> None:
    """Raise :class:`GGUFExportError` unless llama.cpp can run ``model`` with the template's
    tokenizer: a Llama architecture without biases, the template's vocabulary size, and rows
    that split into the 32-value blocks of the quantized formats."""
    config = model.config
    for fmt, width in ((quant, config.hidden_size), (quant, config.intermediate_size),
                       (embedding_quant, config.hidden_size)):
        if fmt != "f16" and int(width) % 32:
            raise GGUFExportError(f"{fmt} needs rows of a multiple of 32 values; this model has {width} (use f16)")
    if getattr(config, "model_type", None) != "llama":
        raise GGUFExportError(f"only Llama models are exported to GGUF, not {config.model_type!r}")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise GGUFExportError("projection biases are not supported by this exporter")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if isinstance(rope, dict) and rope.get("rope_type", "default") != "default":
        raise GGUFExportError(f"rope scaling {rope.get('rope_type')!r} is not supported by this exporter")
    if int(config.vocab_size) != template_vocab:
        raise GGUFExportError(
            f"the model's vocabulary ({config.vocab_size}) is not the bundled tokenizer's ({template_vocab})"
        )


def _tensors(model: Any) -> list[tuple[str, np.ndarray, str]]:
    """(GGUF name, fp32 array, kind) for every tensor; kind is "norm", "embed" or "proj"."""
    import torch  # not at module level: the GGUF cache checks stay cheap to import
    config = model.config
    n_head, n_kv = int(config.num_attention_heads), int(config.num_key_value_heads)
    state = model.state_dict()
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out: list[tuple[str, np.ndarray, str]] = []
    for name, tensor in state.items():
        array = tensor.detach().to(dtype=torch.float32).cpu().numpy()
        if name == "model.embed_tokens.weight":
            out.append(("token_embd.weight", array, "embed"))
        elif name == "model.norm.weight":
            out.append(("output_norm.weight", array, "norm"))
        elif name == "lm_head.weight":
            if not tied:
                out.append(("output.weight", array, "embed"))
        elif match := _LAYER_NAME.fullmatch(name):
            layer, rest = match.groups()
            if rest not in _LAYER_TENSORS:
                raise GGUFExportError(f"unexpected tensor {name}; cannot map it to llama.cpp")
            if rest == "self_attn.q_proj.weight":
                array = permute_for_llama_cpp(array, n_head)
            elif rest == "self_attn.k_proj.weight":
                array = permute_for_llama_cpp(array, n_kv)
            kind = "norm" if rest.endswith("layernorm.weight") else "proj"
            out.append((f"blk.{layer}.{_LAYER_TENSORS[rest]}", array, kind))
        else:
            raise GGUFExportError(f"unexpected tensor {name}; cannot map it to llama.cpp")
    return out


def write_gguf(
    model: Any,
    out_path: str | os.PathLike[str],
    template_gguf: str | os.PathLike[str],
    quant: str = "q8_0",
    name: str = "dmac-learner",
    embedding_quant: str | None = None,
) -> Path:
    """Write ``model`` (a transformers Llama) to ``out_path`` as GGUF for llama.cpp.

    ``template_gguf`` supplies the tokenizer, chat template and special tokens (the bundled
    GGUF: the model's vocabulary must be its vocabulary). ``quant`` is one of
    :data:`QUANT_TYPES` for the projection weights; ``embedding_quant`` for the token
    embedding (also the tied output head), by default q8_0 as in the bundled file (f16 when
    ``quant`` is f16). Returns the path written.
    """
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter
    from gguf.quants import quantize

    embedding_quant = embedding_quant or ("f16" if quant == "f16" else "q8_0")
    for value in (quant, embedding_quant):
        if value not in QUANT_TYPES:
            raise GGUFExportError(f"quant must be one of {', '.join(QUANT_TYPES)}, got {value!r}")
    template = read_metadata(template_gguf)
    tokens = next((value for key, _, _, value in template if key == "tokenizer.ggml.tokens"), None)
    if tokens is None:
        raise GGUFExportError(f"{template_gguf} has no tokenizer")
    check_exportable(model, len(tokens), quant, embedding_quant)

    config = model.config
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = GGUFWriter(tmp, "llama")
        writer.add_name(name)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        writer.add_block_count(int(config.num_hidden_layers))
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_feed_forward_length(int(config.intermediate_size))
        writer.add_head_count(int(config.num_attention_heads))
        writer.add_head_count_kv(int(config.num_key_value_heads))
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_vocab_size(int(config.vocab_size))
        writer.add_rope_dimension_count(head_dim)
        writer.add_file_type(int(_file_type(quant)))
        for key, kind, sub, value in template:
            if not _SHAPE_KEY.match(key):
                writer.add_key_value(key, value, GGUFValueType(kind),
                                     sub_type=None if sub is None else GGUFValueType(sub))

        for tensor_name, array, kind in _tensors(model):
            if kind == "norm":
                writer.add_tensor(tensor_name, array.astype(np.float32))
                continue
            qtype = _qtype(embedding_quant if kind == "embed" else quant)
            if qtype == GGMLQuantizationType.F16:
                writer.add_tensor(tensor_name, array.astype(np.float16))
            else:
                writer.add_tensor(tensor_name, quantize(array, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        commit(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _rope_theta(config: Any) -> float:
    """transformers 5 keeps rope_theta inside ``rope_parameters``; older configs at the top."""
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    theta = theta if theta is not None else getattr(config, "rope_theta", None)
    if theta is None:
        raise GGUFExportError("the model config has no rope_theta")
    return float(theta)
