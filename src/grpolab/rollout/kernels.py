"""Native fp16-weight linear layers for the CPU sampler (`--rollout-quant fp16`), built on first use.

`f16_kernels.c` is compiled once per source version with the system C compiler into grpolab's cache directory
and loaded with ctypes; no build step at install time and no dependency beyond a C compiler. Where it cannot be
used (not x86-64 with AVX2/FMA/F16C, no compiler, the build fails, or `GRPOLAB_NATIVE=0`), `native_reason()`
says why and the engine keeps fbgemm's fp16 kernel: same numbers up to float rounding, slower to re-pack.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from grpolab.runtime import cpu_flags

SOURCE = Path(__file__).with_name("f16_kernels.c")
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC"]
ABI = 1

_lib: ctypes.CDLL | None = None
_reason: str | None = None
_tried = False


def _build() -> ctypes.CDLL:
    from grpolab.models import cache_dir

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"f16_kernels-{digest}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # build aside, then rename: never half a file
            out = Path(tmp) / target.name
            proc = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", str(out)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[-400:]}")
            os.replace(out, target)
    lib = ctypes.CDLL(str(target))
    if lib.gl_f16_abi_version() != ABI:
        raise RuntimeError(f"{target} is not ABI version {ABI}")
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.gl_linear_f16.argtypes = [p, p, p, p, i, i, i]
    lib.gl_linear_f16.restype = None
    lib.gl_pack_f16.argtypes = [p, p, i, i, i]
    lib.gl_pack_f16.restype = None
    return lib


def native_reason() -> str | None:
    """None when the native fp16 kernels are usable here, else why not (built and loaded on the first call)."""
    global _lib, _reason, _tried
    if not _tried:
        _tried = True
        if os.environ.get("GRPOLAB_NATIVE", "1") == "0":
            _reason = "disabled by GRPOLAB_NATIVE=0"
        elif platform.machine().lower() not in ("x86_64", "amd64"):
            _reason = f"CPU architecture {platform.machine()} (the kernels are x86-64 AVX2)"
        elif not {"avx2", "fma", "f16c"} <= cpu_flags():
            _reason = "the CPU lacks one of AVX2, FMA, F16C"
        else:
            try:
                _lib = _build()
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                _reason = f"could not build the native kernels: {e}"
    return _reason


def reset() -> None:
    """Forget the outcome of `native_reason()` (tests switch GRPOLAB_NATIVE)."""
    global _tried, _reason
    _tried, _reason = False, None


class F16Linear:
    """A linear layer's weights as fp16 panels (see f16_kernels.c), filled in place from fp32 weights.

    Several weights reading the same input (q/k/v, gate/up) can share one matrix: `pack` writes each at its row
    offset. Re-packing reuses the buffer, so refreshing the sampler after an update allocates nothing.
    """

    def __init__(self, n: int, k: int, bias: torch.Tensor | None = None) -> None:
        if native_reason() is not None:
            raise RuntimeError(f"native fp16 kernels unavailable: {native_reason()}")
        self.n, self.k = n, k
        self.panels = torch.zeros(((n + 7) // 8) * 8 * k, dtype=torch.int16)  # padding rows stay zero
        self.bias = None if bias is None else bias.detach().float().contiguous().clone()

    def pack(self, weights: Sequence[torch.Tensor], bias: torch.Tensor | None = None) -> None:
        """Write the fp32 weights (stacked along the output dimension, n rows in all) into the panels."""
        row = 0
        for w in weights:
            w = w.detach()
            if w.dtype != torch.float32 or not w.is_contiguous():
                w = w.float().contiguous()
            if w.shape[1] != self.k:
                raise ValueError(f"weight has {w.shape[1]} inputs, this layer {self.k}")
            assert _lib is not None
            _lib.gl_pack_f16(w.data_ptr(), self.panels.data_ptr(), w.shape[0], self.k, row)
            row += w.shape[0]
        if row != self.n:
            raise ValueError(f"weights give {row} output rows, this layer has {self.n}")
        if bias is not None:
            self.bias = bias.detach().float().contiguous().clone()

    def weight(self) -> torch.Tensor:
        """The packed weights back as an (n, k) fp32 matrix (what the kernel multiplies by)."""
        panels = self.panels.view(torch.float16).view(-1, self.k, 8)
        return panels.transpose(1, 2).reshape(-1, self.k)[: self.n].float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.k)
        if x2.dtype != torch.float32 or not x2.is_contiguous():
            x2 = x2.float().contiguous()
        m = x2.shape[0]
        y = torch.empty((m, self.n), dtype=torch.float32)
        if m:
            assert _lib is not None
            _lib.gl_linear_f16(x2.data_ptr(), self.panels.data_ptr(),
                               None if self.bias is None else self.bias.data_ptr(), y.data_ptr(), m, self.n, self.k)
        return y.view(*lead, self.n)
