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


BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # either makes bf16 GEMMs faster than fp32 (oneDNN); without, ~100x slower


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


def check_autocast(kind: str, device: Any) -> None:
    """Refuse `--autocast bf16` where it would make the update far slower: a CPU without native bf16."""
    if kind == "off" or getattr(device, "type", str(device)) != "cpu":
        return
    if not set(BF16_FLAGS) & cpu_flags():
        cpu = _cpuinfo("model name") or platform.machine()
        raise UserError(f"--autocast {kind} needs a CPU with AMX or AVX512-BF16 ({' or '.join(BF16_FLAGS)} in "
                        f"/proc/cpuinfo); this one ({cpu}) has neither, and multiplies bf16 ~100x slower than fp32. "
                        "Fix: --autocast off")


def autocast(kind: str, device: Any) -> ContextManager:
    """The context the update's forward runs in: torch.autocast to bfloat16, or nothing for 'off'."""
    if kind == "off":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=getattr(device, "type", str(device)), dtype=torch.bfloat16)
