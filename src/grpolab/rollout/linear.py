"""The linear layers the fast engine decodes with: fp32 (the live parameters), or int8 / fp16 packed copies.

fp16 goes through grpolab's own kernels (rollout/kernels.py) where they build, else fbgemm's; int8 through
fbgemm's dynamic-quantised linear. LoRA adapters run as low-rank side paths on top of any of them.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F


def _quantize(weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """int8 per-output-channel symmetric weights, prepacked for fbgemm's dynamic-quantised linear.

    The rounding is done with plain tensor ops (vectorised, multi-threaded), which is ~2x faster than
    torch.quantize_per_channel; prepacking releases the GIL, so layers can be packed in parallel threads.
    """
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8)
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    with warnings.catch_warnings():  # quantized tensors are marked deprecated; fbgemm still ships
        warnings.simplefilter("ignore")
        qt = torch._make_per_channel_quantized_tensor(q, scales.double(), torch.zeros(len(scales), dtype=torch.long), 0)
    return torch.ops.quantized.linear_prepack(qt, None if bias is None else bias.detach().float())


def _pack_fp16(weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """fp16 weights prepacked for fbgemm; activations stay fp32 (no activation rounding)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ops.quantized.linear_prepack_fp16(weight.detach().float().contiguous(),
                                                       None if bias is None else bias.detach().float())


def _pack_bf16(weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """bf16 weights (and bias) for torch's own bf16 matmul (oneDNN: AMX / AVX512-BF16 on CPUs that have them);
    activations are rounded to bf16 at each product, outputs come back as fp32."""
    return weight.detach().to(torch.bfloat16).contiguous(), None if bias is None else bias.detach().to(torch.bfloat16)


PACKERS = {"int8": _quantize, "fp16": _pack_fp16, "bf16": _pack_bf16}


def _native_fp16() -> bool:
    """fp16 sampling through grpolab's own kernels (rollout/kernels.py) rather than fbgemm's, where they build."""
    from grpolab.rollout.kernels import native_reason

    return native_reason() is None


class SamplerLinear:
    """y = x W^T + b (+ LoRA side paths), reading the live parameters of one or more Linear / peft LoraLayers.

    fp32: W is the parameter itself, so optimizer updates are seen without any copy. int8: the weights of all
    `modules` are stacked into one quantised matrix (q/k/v or gate/up: one call, one input quantisation);
    `stale` says which packed copies may be out of date (trainable weights, or a frozen one whose tensor
    version moved) so only those are re-quantised, and a frozen LoRA base is quantised once.
    """

    def __init__(self, modules: list[Any], quant: str) -> None:
        self.quant = quant
        self.bases = [m.base_layer if hasattr(m, "base_layer") else m for m in modules]
        self.adapters: list[list[tuple[torch.Tensor, torch.Tensor, float]]] = []
        self.merged = [m for m in modules if any(getattr(m, "use_dora", {}).values())]  # DoRA: merge instead
        self.modules = modules
        for m in modules:
            side = []
            if hasattr(m, "base_layer") and not getattr(m, "merged", False) and not getattr(m, "disable_adapters", False):
                for name in m.active_adapters:
                    if name in m.lora_A and not getattr(m, "use_dora", {}).get(name, False):
                        side.append((m.lora_A[name].weight, m.lora_B[name].weight, float(m.scaling[name])))
            self.adapters.append(side)
        self.sizes = [b.weight.shape[0] for b in self.bases]
        self.packed: Any = None
        self.native = quant == "fp16" and _native_fp16()  # packed in place, no fbgemm
        self.versions: tuple[int, ...] = ()

    def _weight(self, i: int) -> torch.Tensor:
        w = self.bases[i].weight.detach()
        m = self.modules[i]
        if m in self.merged:
            for name in m.active_adapters:
                w = w + m.get_delta_weight(name).detach()
        return w

    def _bias(self) -> torch.Tensor | None:
        if all(b.bias is None for b in self.bases):
            return None
        return torch.cat([b.bias.detach() if b.bias is not None else torch.zeros(b.weight.shape[0])
                          for b in self.bases])

    def stale(self) -> bool:
        """Whether the packed copy may be out of date. A trainable weight always is: the fused AdamW step
        updates parameters without moving their version counters, so versions only catch other writes (a
        checkpoint loaded into a frozen LoRA base, for example)."""
        if self.quant not in PACKERS:
            return False
        versions = tuple(b.weight._version for b in self.bases)
        return versions != self.versions or bool(self.merged) or any(b.weight.requires_grad for b in self.bases)

    def requantize(self) -> None:
        if self.native:
            from grpolab.rollout.kernels import F16Linear

            if self.packed is None:
                self.packed = F16Linear(sum(self.sizes), self.bases[0].weight.shape[1])
            self.packed.pack([self._weight(i) for i in range(len(self.bases))], self._bias())
            self.versions = tuple(b.weight._version for b in self.bases)
            return
        w = self._weight(0) if len(self.bases) == 1 else torch.cat([self._weight(i) for i in range(len(self.bases))])
        if self.quant == "bf16" and self.packed is not None and self.packed[0].shape == w.shape:
            # in place: the same storage every step (no 270 MB of fresh bf16 copies per update for SmolLM2)
            self.packed[0].copy_(w)
            if self.packed[1] is not None:
                self.packed[1].copy_(self._bias())
        else:
            self.packed = PACKERS[self.quant](w, self._bias())
        self.versions = tuple(b.weight._version for b in self.bases)

    def __call__(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """One output per module (a list when several modules are stacked)."""
        if self.quant in PACKERS:
            if self.native:
                y = self.packed(x)
            elif self.quant == "int8":
                y = torch.ops.quantized.linear_dynamic(x, self.packed, True)
            elif self.quant == "bf16":
                y = F.linear(x.to(torch.bfloat16), *self.packed).float()
            else:
                y = torch.ops.quantized.linear_dynamic_fp16(x, self.packed)
            outs = list(y.split(self.sizes, dim=-1)) if len(self.sizes) > 1 else [y]
        else:
            outs = []
            for i, b in enumerate(self.bases):
                w = self._weight(i) if self.modules[i] in self.merged else b.weight.detach()
                outs.append(F.linear(x, w, None if b.bias is None else b.bias.detach()))
        for i, side in enumerate(self.adapters):
            for a, b, scale in side:
                outs[i] = outs[i] + scale * F.linear(F.linear(x, a.detach()), b.detach())
        return outs if len(outs) > 1 else outs[0]
