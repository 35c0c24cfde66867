"""Process-level settings that change speed and peak memory on a CPU: the heap allocator's policy, and
whether this CPU multiplies bfloat16 natively (the update's `--autocast bf16`).

On Linux with glibc, every tensor larger than the mmap threshold gets fresh pages from the kernel and gives
them back when freed, so each training step pays page faults for its activations again (~20% of the
update time for SmolLM2-135M). 'fast' keeps freed memory in the heap and reuses it (faster, higher peak
RSS); 'lean' returns large blocks at once (lowest peak, slower); 'system' leaves glibc's defaults.
Measured numbers are in bench/NOTES.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import sys
import warnings
from pathlib import Path
from typing import Any, ContextManager

from grpolab.errors import UserError

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
POLICIES = {
    "fast": {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: (1 << 31) - 1, M_TOP_PAD: 256 << 20},
    "lean": {M_MMAP_THRESHOLD: 128 << 10, M_TRIM_THRESHOLD: 128 << 10, M_TOP_PAD: 0},
}


def set_allocator(policy: str) -> bool:
    """Apply the heap policy to this process; False when it does not apply (not glibc, or 'system')."""
    if policy == "system" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    return all(mallopt(option, value) == 1 for option, value in POLICIES[policy].items())


BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # native bf16 products (oneDNN); without either, ~100x slower than fp32
# bf16 products faster than fp32: AMX. With AVX512-BF16 alone they measured ~0.6x fp32 (a 2-core Xeon without
# AMX: 150 against 240-270 GFLOP/s, bench/NOTES.md 16)
FAST_BF16_FLAGS = ("amx_bf16",)


def _cpuinfo(field: str) -> str:
    """The first value of `field` in /proc/cpuinfo ('' where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return set(_cpuinfo("flags").split())


def native_bf16(device: Any, fast: bool = False) -> bool:
    """Whether this device multiplies bfloat16 natively: a CPU with AMX or AVX512-BF16, a CUDA GPU that
    supports bf16 (Ampere and later), or another accelerator (left to its own backend). `fast`: and faster
    than fp32 (on a CPU, only with AMX)."""
    kind = getattr(device, "type", str(device))
    if kind == "cpu":
        return bool(set(FAST_BF16_FLAGS if fast else BF16_FLAGS) & cpu_flags())
    if kind == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    return True


def check_autocast(kind: str, device: Any, resumed: bool = False, option: str = "--autocast",
                   off: str = "off") -> None:
    """Refuse a bf16 setting (`--autocast bf16`, `--rollout-quant bf16`) where it would make the run far slower:
    a device without native bf16. `off` is the option's value that avoids bf16."""
    if kind != "bf16" or native_bf16(device, fast=True):
        return
    if native_bf16(device):
        warnings.warn(f"{option} {kind}: this CPU multiplies bf16 natively (AVX512-BF16) but has no AMX, and there "
                      f"bf16 products measured ~0.6x the speed of fp32 ones: {option} {off} is likely faster",
                      stacklevel=2)
        return
    where = getattr(device, "type", str(device))
    what = (f"a CPU with AMX or AVX512-BF16 ({' or '.join(BF16_FLAGS)} in /proc/cpuinfo); this one "
            f"({_cpuinfo('model name') or platform.machine()}) has neither" if where == "cpu" else
            f"a device with native bf16; this {where} device has none")
    fix = (f"resume it on a machine that has, or start a new run with {option} {off}" if resumed else
           f"{option} {off}")
    raise UserError(f"{'this run was started with ' if resumed else ''}{option} {kind}, which needs {what}, and "
                    f"multiplies bf16 far slower than fp32 (~1.3 against ~180 GFLOP/s on a 2-core AMD EPYC). "
                    f"Fix: {fix}")


def autocast(kind: str, device: Any) -> ContextManager:
    """The context the update's forward runs in: torch.autocast to bfloat16, or nothing for 'off'."""
    if kind == "off":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=getattr(device, "type", str(device)), dtype=torch.bfloat16)
