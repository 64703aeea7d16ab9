"""FP8 (e4m3) weights and activations for the linear layers of a Qwen3-VL model.

What is quantised: every ``torch.nn.Linear`` of the language model and of the vision encoder
(:func:`quantize_linears`; not ``lm_head``, not the embeddings, not layers whose in/out features
are not multiples of 16, which the FP8 matrix product needs). Each is replaced in place by an
:class:`Fp8Linear`:

- weight: ``torch.float8_e4m3fn`` with one float32 scale per output channel
  (``amax(|w[n, :]|) / 448``, clamped away from zero), quantised once when the layer is built;
- activations: quantised on the fly, one float32 scale per token (``amax(|x[m, :]|) / 448`` over the
  last dimension, clamped away from zero);
- the product accumulates in float32 and is rescaled by ``scale_a[m] * scale_w[n]``; the bias, if
  any, stays in its original dtype (bf16) and is added after the product.

Where it runs: ``torch._scaled_mm`` with row-wise scales (``scale_a`` [M, 1], ``scale_b`` [1, N])
on CUDA devices of compute capability 8.9 or newer (Ada, Hopper: the H200). On this torch (2.14.1)
``torch._scaled_mm`` also runs on the CPU with float8 inputs and row-wise scales (checked: it
equals the dequantised product exactly in float32), so the CPU uses it too. Whether a device can
run it is decided once per device, by a tiny probe product, when a layer is built or moved
(``.to()``/``.cuda()``), never inside ``forward``; where it cannot (an older GPU, another torch),
``forward`` falls back to computing the same thing by dequantising,
``(x_q.float() * scale_a) @ (w_q.float() * scale_w).t()``, which has exactly the quantisation
error of the fast path: the CPU tests check the numerics of the GPU path.

``forward`` has no data-dependent Python branches and no ``.item()``: it runs under
``torch.compile`` (the kernel choice is a plain attribute that dynamo guards on).

Expected use: ``HFBackend(..., fp8=True)`` once plumbed, i.e. after loading the bf16 model on the
GPU, ``quantize_linears(model)``; ``benchmarks/fp8_check_gpu.py`` times it against bf16 on an H200.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["FP8_DTYPE", "FP8_MAX", "Fp8Linear", "quantize_linears", "quantize_rowwise"]

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn
_MIN_SCALE = 1e-12  # scales are clamped to at least this (an all-zero row quantises to zeros)


def quantize_rowwise(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t_fp8, scale)`` of a 2-D tensor, one float32 scale per row: ``t ~= t_fp8.float() * scale``
    with ``scale`` of shape [rows, 1] and ``t_fp8`` row-major contiguous."""
    t = t.float()
    scale = (t.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=_MIN_SCALE)
    q = (t / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q.contiguous(), scale


@functools.cache
def _scaled_mm_works(device: torch.device) -> bool:
    """Whether ``torch._scaled_mm`` with float8 inputs and row-wise float32 scales runs on ``device``
    (and agrees with the dequantised product). Called outside ``forward``, once per device."""
    if not hasattr(torch, "_scaled_mm") or device.type not in ("cpu", "cuda"):
        return False
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        return False  # row-wise scaled FP8 products need SM 8.9+ (Ada, Hopper)
    try:
        gen = torch.Generator().manual_seed(0)
        x_q, sa = quantize_rowwise(torch.randn(16, 32, generator=gen))
        w_q, sw = quantize_rowwise(torch.randn(16, 32, generator=gen))
        x_q, sa, w_q, sw = (t.to(device) for t in (x_q, sa, w_q, sw))
        out = torch._scaled_mm(x_q, w_q.t(), scale_a=sa, scale_b=sw.reshape(1, -1), out_dtype=torch.bfloat16)
        ref = (x_q.float() * sa) @ (w_q.float() * sw).t()
        return bool(torch.allclose(out.float(), ref, rtol=2e-2, atol=2e-2))
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return False


class Fp8Linear(nn.Module):
    """A linear layer with an FP8 weight (per-output-channel scale) and per-token FP8 activations.

    Built from an ``nn.Linear`` (:meth:`from_linear`) whose in/out features are multiples of 16.
    Moving it (``.to(device)``) moves the FP8 weight and its scale but never changes their dtypes
    (a ``model.to(torch.bfloat16)`` casts only the bias)."""

    def __init__(self, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        out_features, in_features = weight_fp8.shape
        if in_features % 16 or out_features % 16:
            raise ValueError("FP8 linear needs in/out features that are multiples of 16, "
                             f"not {in_features}/{out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", weight_fp8.contiguous())  # [N, K] float8_e4m3fn, row-major
        self.register_buffer("weight_scale", weight_scale.reshape(-1).float().contiguous())  # [N] float32
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.use_scaled_mm = _scaled_mm_works(self.weight.device)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Fp8Linear:
        w_q, scale = quantize_rowwise(linear.weight.detach())
        return cls(w_q, scale, linear.bias)

    def _apply(self, fn, recurse=True):
        kept = {name: self._buffers[name] for name in ("weight", "weight_scale")}
        super()._apply(fn, recurse)
        for name, old in kept.items():  # take the device a cast gave, keep the FP8 / float32 dtype
            new = self._buffers[name]
            if new.dtype != old.dtype:
                self._buffers[name] = old.to(new.device)
        self.use_scaled_mm = _scaled_mm_works(self.weight.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x_q, scale_a = quantize_rowwise(x.reshape(-1, self.in_features))  # [M, K] fp8, [M, 1] fp32
        if self.use_scaled_mm:
            # CUDA's row-wise kernel writes bf16 only; the CPU's writes any float dtype
            out_dtype = torch.bfloat16 if x.device.type == "cuda" else x.dtype
            y = torch._scaled_mm(x_q, self.weight.t(), scale_a=scale_a,
                                 scale_b=self.weight_scale.reshape(1, -1), out_dtype=out_dtype).to(x.dtype)
        else:
            w = self.weight.float() * self.weight_scale.reshape(-1, 1)
            y = ((x_q.float() * scale_a) @ w.t()).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weight=float8_e4m3fn (per-channel scale), scaled_mm={self.use_scaled_mm}")


def _matches(name: str, part: str) -> bool:
    """Whether the dotted ``part`` (e.g. ``visual`` or ``model.visual``) is a run of whole components of ``name``."""
    return f".{part}." in f".{name}."


def quantize_linears(model: nn.Module, *, include=("language_model", "visual"), skip=("lm_head", "embed")) -> int:
    """Replace, in place, every ``nn.Linear`` of ``model`` that lies under one of ``include`` (whole
    dotted components of its qualified name, e.g. ``model.language_model.layers.0.mlp.up_proj``) and
    none of whose name components contains one of ``skip`` (``lm_head``, ``embed_tokens``,
    ``patch_embed``...) with an :class:`Fp8Linear`. Layers whose in/out features are not multiples
    of 16 stay as they are. Returns the number of layers replaced."""
    chosen = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
            continue  # (the latter is MultiheadAttention's out_proj, whose weight it reads directly)
        if not any(_matches(name, part) for part in include):
            continue
        if any(s in component for component in name.split(".") for s in skip):
            continue
        if module.in_features % 16 or module.out_features % 16:
            continue
        chosen.append(name)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Fp8Linear.from_linear(getattr(parent, child)))
    return len(chosen)
