"""Which precision the machine computes fastest in (bf16 only where the CPU has it natively)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are only fast on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere
    torch emulates them and fp32 is faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(precision: str) -> torch.dtype:
    """The dtype to compute in for ``precision`` ("auto" | "bf16" | "fp32"; "auto" is bf16 where
    the CPU has it natively)."""
    import torch  # here, for start-up time: modules that only ask about precision stay light

    if precision == "bf16" or (precision == "auto" and cpu_supports_bf16()):
        return torch.bfloat16
    return torch.float32
