"""rankvideo.backends.fp8 on the CPU: FP8 numerics of one layer, the layer swap on a tiny Qwen3-VL,
and torch.compile. The CPU runs the same quantisation as the GPU path (torch._scaled_mm with
row-wise scales where this torch has it on the CPU, else the dequantised product), so the errors
measured here are the GPU path's."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from rankvideo.backends.fp8 import FP8_DTYPE, Fp8Linear, quantize_linears


def rel_rms(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.detach().float(), ref.detach().float()
    return float((y - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())


@pytest.mark.parametrize("bias", [False, True])
def test_fp8_linear_close_to_bf16(bias):
    torch.manual_seed(0)
    linear = nn.Linear(256, 384, bias=bias).to(torch.bfloat16)
    if bias:
        nn.init.normal_(linear.bias, std=0.5)  # larger than the product's rounding, so a lost bias shows
    fp8 = Fp8Linear.from_linear(linear)
    assert fp8.weight.dtype == FP8_DTYPE and fp8.weight_scale.dtype == torch.float32
    assert fp8.weight_scale.shape == (384,) and bool((fp8.weight_scale > 0).all())
    if bias:
        assert fp8.bias.dtype == torch.bfloat16

    x = torch.randn(2, 3, 29, 256, dtype=torch.bfloat16)  # any leading shape; M = 174 is no multiple of 16
    x[0, 0, 0] = 0  # an all-zero token: its clamped scale must give zeros, not NaN
    ref, out = linear(x), fp8(x)
    assert out.shape == ref.shape and out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    err = rel_rms(out, ref)
    assert 0.005 < err < 0.08, err  # it really quantises, and stays close

    # the fast path (CPU torch._scaled_mm, where usable) and the dequantised fallback agree
    fp8.use_scaled_mm = not fp8.use_scaled_mm
    other = fp8(x)
    torch.testing.assert_close(other.float(), out.float(), rtol=1e-2, atol=1e-2)


def test_fp8_linear_keeps_dtypes_when_the_model_is_cast():
    fp8 = Fp8Linear.from_linear(nn.Linear(32, 16, bias=True))
    fp8.to(torch.bfloat16)
    assert fp8.weight.dtype == FP8_DTYPE and fp8.weight_scale.dtype == torch.float32
    assert fp8.bias.dtype == torch.bfloat16
    x = torch.randn(4, 32)
    assert fp8(x).dtype == torch.float32  # the output has the input's dtype


def test_quantize_linears_include_skip_and_multiples_of_16():
    model = nn.ModuleDict({
        "language_model": nn.ModuleDict({"embed_tokens": nn.Embedding(10, 32), "q": nn.Linear(32, 32),
                                         "odd": nn.Linear(32, 24), "embed_proj": nn.Linear(32, 32)}),
        "visual": nn.Sequential(nn.Linear(32, 64, bias=False)),
        "other": nn.Linear(32, 32),
        "lm_head": nn.Linear(32, 16),
    })
    assert quantize_linears(model) == 2
    assert isinstance(model["language_model"]["q"], Fp8Linear) and isinstance(model["visual"][0], Fp8Linear)
    assert type(model["language_model"]["odd"]) is nn.Linear  # 24 output features: not a multiple of 16
    assert type(model["language_model"]["embed_proj"]) is nn.Linear  # skipped ("embed")
    assert type(model["other"]) is nn.Linear and type(model["lm_head"]) is nn.Linear
    assert quantize_linears(model) == 0  # nothing left to replace


def _tiny_inputs(processor):
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>a red circle moving left<|im_end|>\n"
    return processor(text=[text], images=[image], return_tensors="pt")


def test_quantize_linears_on_tiny_qwen3vl(tiny_models):
    from rankvideo import models

    model, processor = models.load_vlm(str(tiny_models.vlm(seed=0)), device="cpu", dtype="bfloat16")
    inputs = _tiny_inputs(processor)
    assert inputs["pixel_values"].numel() > 0
    with torch.no_grad():
        ref = model(**inputs).logits.float()

    names = {name for name, m in model.named_modules() if type(m) is nn.Linear}
    expected = {n for n in names if (".language_model." in f".{n}." or ".visual." in f".{n}.")
                and "lm_head" not in n and "embed" not in n}
    assert any(".visual." in f".{n}." for n in expected) and any(".language_model." in f".{n}." for n in expected)
    quantized = copy.deepcopy(model)
    assert quantize_linears(quantized) == len(expected)
    after = dict(quantized.named_modules())
    assert all(isinstance(after[n], Fp8Linear) for n in expected)
    assert type(quantized.lm_head) is nn.Linear  # untouched
    assert type(quantized.get_input_embeddings()) is nn.Embedding
    assert not any(type(m) is nn.Linear for n, m in quantized.named_modules() if n in expected)

    with torch.no_grad():
        out = quantized(**inputs).logits.float()
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert 0 < rel_rms(out, ref) < 0.15, rel_rms(out, ref)  # 0.06 measured: the layers' errors add up


def test_fp8_linear_under_torch_compile():
    torch.manual_seed(0)
    fp8 = Fp8Linear.from_linear(nn.Linear(64, 128, bias=True).to(torch.bfloat16))
    compiled = torch.compile(fp8, fullgraph=False)
    for shape in [(7, 64), (2, 5, 64)]:
        x = torch.randn(*shape, dtype=torch.bfloat16)
        torch.testing.assert_close(compiled(x), fp8(x), rtol=1e-2, atol=1e-2)
