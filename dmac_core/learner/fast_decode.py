"""A fast greedy/sampling decode loop for the local Llama learner.

Why not ``model.generate()``: for a 135M model on two cores most of the time per token is
not arithmetic but (a) bytes of weights read from memory and (b) Python/dispatch overhead
of HF's generic forward and generation utilities. This module therefore

* re-packs the (LoRA-merged) weights once: q/k/v fused into one matrix, gate/up fused into
  one matrix (fewer, larger matmuls = fewer dispatches), optionally stored as fp16 or int8
  (fewer bytes read per token: decoding here is memory-bandwidth bound);
* keeps a pre-allocated KV cache (no per-token cache growth or concatenation);
* runs a hand-written forward of exactly the Llama architecture, with HF's own rotary
  embedding tables, so ``weights="fp32"`` reproduces ``generate()`` greedy output.

Only ``LlamaForCausalLM``-shaped models are supported (``supports()`` tells); anything else
should be served with ``generate()``.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F

from .decoding import penalize_recent

WEIGHT_FORMATS = ("fp32", "fp16", "int8")
SERVING_WEIGHTS = "fp16"  # the torch runtime's format, chosen by bench/generation_bench.py (bench/RESULTS.md)


class _Linear:
    """y = x @ W.T in one of the supported weight formats (no bias: Llama has none).

    fp16/int8 use fbgemm's packed kernels (``torch.ops.quantized``), which are vectorised for
    AVX2. (ATen's weight-only ``_weight_int8pack_mm``/``_weight_int4pack_mm_for_cpu`` were
    measured 15-80x slower than fp32 on this AVX2-only CPU: their fast paths need AVX512.)
    """

    def __init__(self, weight: torch.Tensor, fmt: str) -> None:
        weight = weight.detach().float().contiguous()
        self.kind = fmt
        if fmt == "fp32":
            self.weight = weight
            return
        with warnings.catch_warnings():  # quantized-tensor constructors warn about a future removal
            warnings.simplefilter("ignore")
            if fmt == "fp16":  # weights stored fp16, activations and accumulation stay fp32
                self.packed = torch.ops.quantized.linear_prepack_fp16(weight, None)
            else:  # int8 weights per output channel, activations quantised per call
                scale = (weight.abs().amax(1) / 127).clamp(min=1e-10).double()
                zero = torch.zeros(weight.shape[0], dtype=torch.long)
                qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
                self.packed = torch.ops.quantized.linear_prepack(qweight, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "fp32":
            return F.linear(x, self.weight)
        if self.kind == "fp16":
            return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)
        # reduce_range=True: AVX2's u8*s8 multiply-add saturates int16 with full 8-bit
        # activations (measured: ~17x larger error without it)
        return torch.ops.quantized.linear_dynamic(x, self.packed, True)


class PackedLinear(torch.nn.Module):
    """Stand-in for an ``nn.Linear`` of the HF model that runs a packed :class:`_Linear`, so
    the HF forward (evaluation, explanations) and the decode loop share one copy of the
    weights instead of keeping the fp32 originals next to the packed ones."""

    def __init__(self, linear: _Linear, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x.reshape(-1, x.shape[-1]).float())  # packed kernels take 2-D fp32
        return y.reshape(*x.shape[:-1], y.shape[-1]).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weights={self.linear.kind}"


def _share_linears(model: Any, weights: str) -> None:
    """Replace every projection of the HF Llama (and its output head) by a PackedLinear."""
    targets = [(layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")) for layer in model.model.layers]
    targets += [(layer.mlp, ("gate_proj", "up_proj", "down_proj")) for layer in model.model.layers]
    targets.append((model, ("lm_head",)))
    for parent, names in targets:
        for name in names:
            source = getattr(parent, name)
            setattr(parent, name, PackedLinear(_Linear(source.weight, weights), source.in_features, source.out_features))


class _Fused:
    """Projections of the same input (q|k|v, or gate|up): one fused packed matrix whose output
    is split, or — with ``share_weights`` — the HF modules' separate matrices, one per part."""

    def __init__(self, parts: list[_Linear]) -> None:
        self.parts = parts

    def __call__(self, x: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        if len(self.parts) == 1:
            return self.parts[0](x).split(sizes, dim=-1)
        return tuple(part(x) for part in self.parts)


def supports(model: Any) -> bool:
    """True for models this loop can run (Llama architecture, default attention)."""
    return type(model).__name__ == "LlamaForCausalLM" and not getattr(model.config, "attention_bias", False)


class FastGenerator:
    """Pre-packed weights + static KV cache for one model; not thread-safe (hold a lock).

    ``weights``: "fp32" (exact, only overhead removed), "fp16" or "int8" (see ``_Linear``).
    ``max_len``: longest prompt + answer served (capped by the model's context length).
    ``share_weights``: replace the HF model's linear layers by :class:`PackedLinear` views of
    the packed weights (the fp32 originals are freed: about 0.4 GB less for the bundled model
    in fp16). The HF model then computes with the served weights; used by ``LocalBackend``.
    """

    def __init__(self, model: Any, weights: str = SERVING_WEIGHTS, max_len: int = 8192,
                 share_weights: bool = False) -> None:
        if weights not in WEIGHT_FORMATS:
            raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, not {weights!r}")
        if not supports(model):
            raise ValueError(f"FastGenerator supports LlamaForCausalLM only, not {type(model).__name__}")
        cfg = model.config
        self.weights = weights
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = float(cfg.rms_norm_eps)
        self.intermediate = int(cfg.intermediate_size)
        self.max_len = int(min(max_len, cfg.max_position_embeddings))
        inner = model.model
        with torch.no_grad():
            if share_weights:
                _share_linears(model, weights)
                # Off the safetensors memory map: while any tensor still views the file, all
                # of it that packing read stays resident (≈ 0.6 GB of clean file pages).
                for tensor in itertools.chain(model.parameters(), model.buffers()):
                    tensor.data = tensor.data.clone()
            self.embed = inner.embed_tokens.weight.detach().float()
            self.layers = []
            for layer in inner.layers:
                att, mlp = layer.self_attn, layer.mlp
                if share_weights:  # the HF modules' packed matrices, one per projection
                    qkv = _Fused([att.q_proj.linear, att.k_proj.linear, att.v_proj.linear])
                    o, down = att.o_proj.linear, mlp.down_proj.linear
                    gate_up = _Fused([mlp.gate_proj.linear, mlp.up_proj.linear])
                else:  # fused: fewer, larger matmuls
                    qkv = _Fused([_Linear(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]), weights)])
                    o = _Linear(att.o_proj.weight, weights)
                    gate_up = _Fused([_Linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), weights)])
                    down = _Linear(mlp.down_proj.weight, weights)
                self.layers.append(
                    (
                        layer.input_layernorm.weight.detach().float(),
                        qkv, o,
                        layer.post_attention_layernorm.weight.detach().float(),
                        gate_up, down,
                    )
                )
            self.norm = inner.norm.weight.detach().float()
            # The output head (tied to the embedding here) is the single largest matrix.
            self.lm_head = model.lm_head.linear if share_weights else _Linear(model.lm_head.weight, weights)
            # HF's own rotary module gives the exact cos/sin tables (incl. any rope scaling).
            positions = torch.arange(self.max_len).unsqueeze(0)
            cos, sin = inner.rotary_emb(self.embed[:1].unsqueeze(0), positions)
            self.cos, self.sin = cos[0].float(), sin[0].float()  # [max_len, head_dim]
        self.k_cache = self.v_cache = torch.zeros(0)
        self._ensure_cache(min(256, self.max_len))

    def _ensure_cache(self, length: int) -> None:
        """Grow the KV cache to hold ``length`` positions. It is allocated once per size
        (doubling), not per token: a long conversation costs memory only when it happens."""
        have = self.k_cache.shape[2] if self.k_cache.dim() == 4 else 0
        if length <= have:
            return
        size = min(self.max_len, max(length, 2 * have))
        shape = (len(self.layers), self.n_kv, size, self.head_dim)
        self.k_cache, self.v_cache = torch.zeros(shape), torch.zeros(shape)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _forward(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Logits of the last position for ``ids`` [T] placed at positions start..start+T-1."""
        t = ids.shape[0]
        end = start + t
        hq, hk, d = self.n_heads, self.n_kv, self.head_dim
        cos, sin = self.cos[start:end].unsqueeze(0), self.sin[start:end].unsqueeze(0)
        x = self.embed[ids]  # [T, hidden]
        for i, (ln1, qkv_proj, o_proj, ln2, gate_up, down) in enumerate(self.layers):
            h = F.rms_norm(x, (x.shape[-1],), ln1, self.eps)
            q, k, v = qkv_proj(h, (hq * d, hk * d, hk * d))
            q = self._rope(q.view(t, hq, d).transpose(0, 1), cos, sin)  # [H, T, D]
            k = self._rope(k.view(t, hk, d).transpose(0, 1), cos, sin)
            self.k_cache[i, :, start:end] = k
            self.v_cache[i, :, start:end] = v.view(t, hk, d).transpose(0, 1)
            attn = F.scaled_dot_product_attention(
                q.unsqueeze(0),
                self.k_cache[i, :, :end].unsqueeze(0),
                self.v_cache[i, :, :end].unsqueeze(0),
                # a prompt starting at 0 is plain causal; one new token sees everything before it
                is_causal=t > 1,
                enable_gqa=hq != hk,
            )
            x = x + o_proj(attn[0].transpose(0, 1).reshape(t, hq * d))
            h = F.rms_norm(x, (x.shape[-1],), ln2, self.eps)
            g, u = gate_up(h, (self.intermediate, self.intermediate))
            x = x + down(F.silu(g) * u)
        x = F.rms_norm(x[-1:], (x.shape[-1],), self.norm, self.eps)
        return self.lm_head(x)[0]

    @torch.inference_mode()
    def stream_tokens(
        self,
        input_ids: torch.Tensor | Iterable[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        eos_ids: Iterable[int] = (),
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        repeat_penalty: float = 1.0,
        penalty_window: int = 64,
    ) -> Iterator[int]:
        """Yield new token ids one by one: greedy when ``temperature`` <= 0, else sampled
        with ``temperature`` and nucleus ``top_p``, after the repetition penalty on the last
        ``penalty_window`` generated tokens (1.0 = off; see :mod:`.decoding`). Stops after an
        EOS id (which is yielded, as ``generate()`` returns it) or after ``max_new_tokens``."""
        ids = torch.as_tensor(list(input_ids) if not isinstance(input_ids, torch.Tensor) else input_ids)
        ids = ids.reshape(-1).long()
        if ids.numel() == 0:
            raise ValueError("empty prompt")
        budget = min(int(max_new_tokens), self.max_len - ids.numel())
        if budget < 0:
            raise ValueError(f"prompt of {ids.numel()} tokens exceeds max_len={self.max_len}")
        eos = set(int(e) for e in eos_ids)
        self._ensure_cache(ids.numel() + budget)
        pos = 0
        produced: list[int] = []
        for _ in range(budget):
            logits = self._forward(ids, pos)
            pos += ids.numel()
            if repeat_penalty != 1.0:
                logits = penalize_recent(logits.clone(), produced[-penalty_window:], repeat_penalty)
            if temperature and temperature > 0:
                token = _sample(logits, float(temperature), float(top_p), generator)
            else:
                token = int(torch.argmax(logits))
            yield token
            if token in eos:
                return
            produced.append(token)
            ids = torch.tensor([token])


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """Temperature + nucleus sampling, as HF's TemperatureLogitsWarper + TopPLogitsWarper."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids as ``generate()`` uses them: the generation config's, else the tokenizer's."""
    return eos_ids_from(getattr(model, "generation_config", None), tokenizer)


def eos_ids_from(generation_config: Any, tokenizer: Any) -> list[int]:
    """EOS ids from a ``GenerationConfig`` (or None), else the tokenizer's."""
    found = getattr(generation_config, "eos_token_id", None)
    if found is None:
        found = tokenizer.eos_token_id
    if found is None:
        return []
    return [int(e) for e in (found if isinstance(found, (list, tuple)) else [found])]
