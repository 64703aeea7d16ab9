"""FP8 linear layers (rankvideo/backends/fp8.py) against bf16 nn.Linear on an H200: speed and error.

Standalone, torch only (no test framework, no other package of the project): loads
``rankvideo/backends/fp8.py`` by its file path. For the linear shapes of Qwen3-VL-8B's language
model (hidden 4096, MLP 12288, bf16, no bias: 4096->12288 up/gate, 12288->4096 down, 4096->4096
q/o) and M = 512, 2048, 8192 tokens it times, with CUDA events (``--warmup`` calls, then
``--iters`` calls between two events, their mean):

- ``bf16``: ``nn.Linear`` in bf16 (cuBLAS);
- ``fp8``: ``Fp8Linear`` eager (per-token activation quantisation in separate kernels + ``_scaled_mm``);
- ``fp8_compiled``: ``torch.compile(Fp8Linear)`` (dynamic=False), which fuses the quantisation;
- ``fp8_mm_only``: the ``_scaled_mm`` call alone on pre-quantised activations (the kernel's ceiling);

and prints TFLOP/s (2*M*K*N / time), the speed-up over bf16 and the relative RMS error of the FP8
output against the bf16 layer's, then one JSON object (also written to ``--json`` when given).

Usage::

    python benchmarks/fp8_check_gpu.py [--m 512,2048,8192] [--iters 20] [--warmup 5] [--json OUT.json]
    python benchmarks/fp8_check_gpu.py --smoke      # CPU, tiny shapes, wall-clock timing: checks the script
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

FP8_PY = Path(__file__).resolve().parents[1] / "rankvideo" / "backends" / "fp8.py"
SHAPES = [("up/gate 4096->12288", 4096, 12288), ("down 12288->4096", 12288, 4096), ("q/o 4096->4096", 4096, 4096)]
SMOKE_SHAPES = [("smoke 64->128", 64, 128), ("smoke 128->64", 128, 64)]


def load_fp8():
    spec = importlib.util.spec_from_file_location("rankvideo_fp8", FP8_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def allow_recompiles(n: int = 256) -> None:
    """One compiled graph per (layer, M): more than dynamo's default recompile limit of 8."""
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(n, getattr(torch._dynamo.config, name)))


def time_ms(fn, warmup: int, iters: int, cuda: bool) -> float:
    """Mean milliseconds of one ``fn()`` call over ``iters`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def rel_rms(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.float(), ref.float()
    return float((y - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", default="512,2048,8192", help="token counts, comma-separated")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="leave out fp8_compiled")
    parser.add_argument("--json", help="also write the JSON result here")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes (checks the script, times nothing useful)")
    args = parser.parse_args(argv)

    fp8 = load_fp8()
    cuda = not args.smoke
    if cuda and not torch.cuda.is_available():
        sys.exit("no CUDA device (use --smoke for a CPU check of the script)")
    device = torch.device("cuda" if cuda else "cpu")
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    ms = [16, 48] if args.smoke else [int(m) for m in args.m.split(",")]
    allow_recompiles()
    torch.manual_seed(0)

    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
            "scaled_mm_usable": fp8._scaled_mm_works(device), "iters": args.iters, "warmup": args.warmup}
    print(json.dumps(info))
    if not info["scaled_mm_usable"]:
        print("WARNING: torch._scaled_mm with row-wise scales is not usable here: Fp8Linear runs its dequantised "
              "fallback, so its times say nothing about FP8 speed", flush=True)

    rows = []
    header = f"{'layer':<22}{'M':>6} {'variant':<14}{'ms':>9}{'TFLOP/s':>9}{'x bf16':>8}{'rel err':>9}"
    print(header)
    print("-" * len(header))
    for label, k, n in shapes:
        linear = nn.Linear(k, n, bias=False, device=device, dtype=torch.bfloat16)
        layer = fp8.Fp8Linear.from_linear(linear)
        compiled = None if args.no_compile else torch.compile(layer, dynamic=False)
        for m in ms:
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            x_q, scale_a = fp8.quantize_rowwise(x)
            scale_b = layer.weight_scale.reshape(1, -1)
            out_dtype = torch.bfloat16
            variants = {
                "bf16": lambda: linear(x),
                "fp8": lambda: layer(x),
                "fp8_mm_only": lambda: torch._scaled_mm(x_q, layer.weight.t(), scale_a=scale_a, scale_b=scale_b,
                                                        out_dtype=out_dtype),
            }
            if compiled is not None:
                variants["fp8_compiled"] = lambda: compiled(x)
            with torch.inference_mode():
                ref = linear(x)
                errors = {"fp8": rel_rms(layer(x), ref)}
                if compiled is not None:
                    t0 = time.perf_counter()
                    errors["fp8_compiled"] = rel_rms(compiled(x), ref)
                    compile_s = time.perf_counter() - t0
                times = {}
                for name, fn in variants.items():
                    if name == "fp8_mm_only" and not info["scaled_mm_usable"]:
                        continue
                    times[name] = time_ms(fn, args.warmup, args.iters, cuda)
            flop = 2.0 * m * k * n
            for name, t in times.items():
                row = {"layer": label, "in": k, "out": n, "M": m, "variant": name, "ms": round(t, 4),
                       "tflops": round(flop / (t * 1e-3) / 1e12, 1), "speedup_vs_bf16": round(times["bf16"] / t, 3),
                       "rel_err_vs_bf16": round(errors[name], 5) if name in errors else None}
                if name == "fp8_compiled":
                    row["first_call_s"] = round(compile_s, 1)
                rows.append(row)
                err = "" if row["rel_err_vs_bf16"] is None else f"{row['rel_err_vs_bf16']:.4f}"
                print(f"{label:<22}{m:>6} {name:<14}{t:>9.3f}{row['tflops']:>9.1f}{row['speedup_vs_bf16']:>8.2f}{err:>9}",
                      flush=True)

    result = {**info, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
