"""Process-level settings that change speed and peak memory on a CPU: the heap allocator's policy.

On Linux with glibc, every tensor larger than the mmap threshold gets fresh pages from the kernel and gives
them back when freed, so each training step pays page faults for its activations again (~20% of the
update time for SmolLM2-135M). 'fast' keeps freed memory in the heap and reuses it (faster, higher peak
RSS); 'lean' returns large blocks at once (lowest peak, slower); 'system' leaves glibc's defaults.
Measured numbers are in bench/NOTES.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

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
