"""Speed of scoring per video: one full forward per pair (the reference way) against the shared prefix.

One run on one card (issue "Speed: score per video"):

1. builds a random-weight model of the exact Qwen3-VL-8B-Instruct shape from a config (no download),
   bf16, with a locally trained tokenizer (``rankvideo.demo.tiny_model.build_tokenizer``; every id is
   far below the 151,936-row vocabulary) and a Qwen3-VL processor (patch 16, temporal patch 2,
   merge 2); the special-token ids of the config are the tokenizer's;
2. makes videos: 20 s mp4 files at 512x256, 24 fps, encoded with PyAV and decoded with
   :func:`rankvideo.video.load_video` (PyAV reader, ``VideoSettings.paper()``: 2 fps, 32 frames,
   128 visual tokens a frame, i.e. 2,048 visual tokens plus 16 timestamps) when PyAV and
   qwen-vl-utils are importable, else synthetic frames of the same shape;
3. measures pairs/s for Q queries per video: (a) ``HFBackend(mode="per_pair")`` with the
   ``reference_inference`` prompt (query before the video), stock and with our kernels, (b)
   ``HFBackend(mode="shared_prefix")`` with the default (video-first) prompt, its speed options
   switched on one by one (VARIANTS; the last is HFBackend's default on a GPU). Everything timed is
   the committed ``rankvideo/backends/hf.py``: this script patches nothing. Every number is warmed
   up (compilation), synchronised, over several videos;
4. measures the bf16 matmul peak of the card and (b)'s achieved TFLOP/s against it, counting FLOPs
   analytically (:func:`flop_model`, described in the results file);
5. breaks (b)'s time per video into processor, vision encoder, LLM passes (host clock, GPU sync at each
   boundary, from forward hooks; plus how long the host took to queue each phase), times decoding
   inside the loop with the rerank job's background decoding (:func:`rankvideo.scoring.rerank.prefetched`),
   profiles the GPU kernels of one video by kind (torch.profiler), and checks agreement: the same
   pairs scored one full forward each with the default prompt and scored against the shared prefix
   must give the same ``logit_delta`` within bf16 tolerance, and to ~1e-5 with the model upcast to
   float32; the split attention alone is checked against a dense float64 reference. Peak memory is
   recorded per Q.

Usage::

    python benchmarks/score_per_video.py --out DIR [--queries 1,4,8,16,32,64] [--videos N]
    python benchmarks/score_per_video.py --out DIR --tiny       # CPU smoke test, random tiny shape
    python benchmarks/score_per_video.py --report DIR/score_per_video_<card>.json   # rewrite the .md

On the GPU machine PyAV and qwen-vl-utils come as wheels (``pip install --target``, see the device
notes); without them the videos are synthetic frames of the same shape.

Writes ``DIR/score_per_video_<card>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import logging
import math
import platform
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rankvideo import models
from rankvideo.demo import tiny_model# noqa: E402
from rankvideo.backends import hf as hf_backend  # noqa: E402
from rankvideo.video import LoadedVideo, VideoSettings  # noqa: E402

log = logging.getLogger("score_per_video")

# ----------------------------------------------------------------------------- shapes

QWEN3_VL_8B = {
    "text": dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                 num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                 rms_norm_eps=1e-6, hidden_act="silu", attention_bias=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                                  "mrope_section": [24, 20, 20], "mrope_interleaved": True}),
    "vision": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                   temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=4096, in_channels=3,
                   num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24],
                   hidden_act="gelu_pytorch_tanh"),
}
TINY = {
    "text": dict(vocab_size=151936, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=32768,
                 rms_norm_eps=1e-6, hidden_act="silu", attention_bias=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                                  "mrope_section": [6, 5, 5], "mrope_interleaved": True}),
    "vision": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16,
                   temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=128, in_channels=3,
                   num_position_embeddings=256, deepstack_visual_indexes=[0, 1], hidden_act="gelu_pytorch_tanh"),
}


def build_processor(tokenizer):
    """Qwen3-VL processor around ``tokenizer`` (as ``make_tiny_model`` builds it; same pixel values)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.models.qwen3_vl import Qwen3VLVideoProcessor

    common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 65536, "longest_edge": 16777216}, **common)
    video_processor = Qwen3VLVideoProcessor(size={"shortest_edge": 4096, "longest_edge": 25165824},
                                            cap_pixels_per_frame=True, **common)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=tiny_model.CHAT_TEMPLATE)


def build_model(shape: dict, tokenizer, device: str, dtype, attn: str, seed: int = 0):
    """Random-weight Qwen3-VL of ``shape``, created directly on ``device`` in ``dtype``."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tiny_model.SPECIAL_TOKENS}
    text = dict(shape["text"], pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"])
    assert max(ids.values()) < text["vocab_size"] and len(tokenizer) <= text["vocab_size"]
    config = Qwen3VLConfig(text_config=text, vision_config=dict(shape["vision"]),
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                           tie_word_embeddings=False)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation=attn)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype).eval(), config


def make_backend(model, processor, **options):
    """An HFBackend around the in-memory model, with ``options`` as HFBackend takes them."""
    return hf_backend.HFBackend.from_model(model, processor, "qwen3-vl-8b-shape-random", **options)


# ----------------------------------------------------------------------------- inputs


def make_mp4(path: Path, seconds: float, fps: int, width: int, height: int, seed: int) -> None:
    """A 20-s clip of moving coloured boxes on a textured background (libx264, yuv420p)."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = ((np.sin(xx / (7 + seed)) + np.cos(yy / 11)) * 40 + 120).astype(np.uint8)
    background = np.stack([background, np.roll(background, 13, 1), np.roll(background, 29, 0)], -1)
    boxes = [(rng.integers(0, width), rng.integers(0, height), rng.integers(-6, 7), rng.integers(-4, 5),
              rng.integers(0, 255, 3)) for _ in range(4)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(int(seconds * fps)):
            frame = background.copy()
            for x, y, dx, dy, colour in boxes:
                cx, cy = int(x + dx * i) % width, int(y + dy * i) % height
                frame[max(0, cy - 20):cy + 20, max(0, cx - 30):cx + 30] = colour
            noise = rng.integers(0, 12, (height, width, 1), dtype=np.uint8)
            frame = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def synthetic_video(frames: int, height: int, width: int, seed: int, source_fps: float = 24.0) -> LoadedVideo:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=g)
    step = source_fps / 2.0
    indices = [int(round(i * step)) for i in range(frames)]
    total = indices[-1] + 1
    metadata = dict(fps=source_fps, frames_indices=indices, total_num_frames=total, duration=total / source_fps,
                    video_backend="synthetic")
    return LoadedVideo(frames=pixels, metadata=metadata, sample_fps=2.0, reader="synthetic")


def make_videos(count: int, workdir: Path, tiny: bool) -> tuple[list[LoadedVideo], dict]:
    """``count`` decoded videos (mp4 + PyAV + load_video if possible) and how they were made.

    Full size: 20-s 512x256 clips at 24 fps under ``VideoSettings.paper()`` (32 frames of 128 tokens).
    Tiny: 4-s 256x128 clips, 2 fps, 8 frames of 8 tokens (so the CPU smoke test stays short)."""
    if tiny:
        settings, seconds, width, height, frames, fh, fw = (VideoSettings.with_tokens(2.0, 8, 8), 4.0, 256, 128,
                                                            8, 64, 128)
    else:
        settings, seconds, width, height, frames, fh, fw = VideoSettings.paper(), 20.0, 512, 256, 32, 256, 512
    info: dict = {"settings": settings.to_dict()}
    try:
        import av  # noqa: F401
        import qwen_vl_utils  # noqa: F401
        from rankvideo.video import load_video
    except ImportError as error:
        info.update(source="synthetic frames (no PyAV/qwen-vl-utils here: %s)" % error, decode_s=None,
                    frames=frames, visual_tokens=(frames // 2) * (fh // 32) * (fw // 32))
        return [synthetic_video(frames, fh, fw, seed=i) for i in range(count)], info
    videos, encode_s, decode_s = [], [], []
    for i in range(count):
        path = workdir / f"video{i}.mp4"
        start = time.perf_counter()
        make_mp4(path, seconds=seconds, fps=24, width=width, height=height, seed=i)
        encode_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        videos.append(load_video(path, settings, readers=("pyav",)))
        decode_s.append(time.perf_counter() - start)
        info.setdefault("paths", []).append(str(path))
    v = videos[0]
    info.update(source=f"mp4 {width}x{height}, 24 fps, {seconds:.0f} s, libx264 (PyAV); decoded by "
                       "rankvideo.video.load_video (pyav reader)",
                frames=v.num_frames, frame_hw=list(v.frames.shape[2:]), visual_tokens=v.visual_tokens,
                encode_s=encode_s, decode_s=decode_s, decode_s_median=sorted(decode_s)[len(decode_s) // 2])
    return videos, info


_WORDS = ("people crowd city street protest police fire smoke building news report interview election "
          "president government festival parade music dance speech storm flood rain snow river beach "
          "mountain road car bus train plane boat match team player stadium market church school").split()


def make_queries(tokenizer, n: int, seed: int, target_tokens: int) -> list[str]:
    """``n`` distinct news-like queries of about ``target_tokens`` tokens each."""
    rng = random.Random(seed)
    queries = []
    for _ in range(n):
        words: list[str] = []
        while len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) < target_tokens:
            words.append(rng.choice(_WORDS))
        queries.append(" ".join(words))
    return queries


# ----------------------------------------------------------------------------- FLOPs


def flop_model(shape: dict, grid_thw: tuple[int, int, int], prefix_len: int, suffix_lens: list[int],
               pair_len: int) -> dict:
    """Analytic FLOPs (multiply-add = 2) of one video.

    - linear layers: 2 * (weights of the layer) per token that passes through it;
    - attention: 4 * (query heads * head_dim) per (query, key) pair attended (QK^T and AV), counting only
      the pairs the mask allows (causal prefix: P(P+1)/2 pairs; a suffix of S tokens: S*P + S(S+1)/2;
      vision: every patch attends to the n patches of its frame group);
    - lm_head: 2 * hidden * vocab per scored position only; embeddings, norms, rotary, activations,
      softmax: not counted (no matmul).
    """
    t, v = shape["text"], shape["vision"]
    h, inter, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    qd, kvd = t["num_attention_heads"] * t["head_dim"], t["num_key_value_heads"] * t["head_dim"]
    llm_params_per_layer = h * qd + 2 * h * kvd + qd * h + 3 * h * inter
    llm_linear_per_token = 2 * layers * llm_params_per_layer
    attn_per_pair = 4 * qd * layers
    lm_head = 2 * h * t["vocab_size"]

    gt, gh, gw = grid_thw
    patches = gt * gh * gw
    group = gh * gw
    d, vi, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
    merge = v["spatial_merge_size"] ** 2
    patch_in = v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2
    vision_linear = 2 * patches * (patch_in * d + depth * (3 * d * d + d * d + 2 * d * vi))
    merged = patches // merge
    merger = 2 * merged * ((d * merge) ** 2 + d * merge * v["out_hidden_size"])
    vision_merger = merger * (1 + len(v["deepstack_visual_indexes"]))
    vision_attn = 4 * d * depth * group * patches
    vision = vision_linear + vision_merger + vision_attn

    p = prefix_len
    prefix = llm_linear_per_token * p + attn_per_pair * p * (p + 1) // 2
    suffix = sum(llm_linear_per_token * s + attn_per_pair * (s * p + s * (s + 1) // 2) + lm_head for s in suffix_lens)
    pair = vision + llm_linear_per_token * pair_len + attn_per_pair * pair_len * (pair_len + 1) // 2 + lm_head
    return {"vision": vision, "vision_linear": vision_linear, "vision_merger": vision_merger,
            "vision_attention": vision_attn, "prefix": prefix, "suffixes": suffix,
            "shared_total": vision + prefix + suffix, "per_pair_each": pair,
            "llm_linear_per_token": llm_linear_per_token, "patches": patches, "prefix_len": p,
            "suffix_lens": list(suffix_lens), "pair_len": pair_len}


# ----------------------------------------------------------------------------- timing


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class PhaseTimer:
    """Host-clock phases of one scoring call, from hooks on the model's parts.

    Each mark synchronises the GPU first, so phases add up to the wall time and nothing of one phase
    runs under another (this removes the small CPU/GPU overlap between phases). Each mark also keeps
    the host time *before* that sync: for a phase, ``launch`` = host time until its last kernel was
    queued; ``launch`` close to the phase's time means the phase is bound by the host (Python and
    kernel launches), not by the GPU."""

    def __init__(self, backend, cuda: bool):
        self.cuda, self.marks, self.handles = cuda, [], []
        model = backend.model
        for name, module in (("vision", model.model.visual), ("llm", model.model.language_model)):
            self.handles.append(module.register_forward_pre_hook(lambda m, a, n=name: self.mark(n + "<")))
            self.handles.append(module.register_forward_hook(lambda m, a, o, n=name: self.mark(n + ">")))
        self._override = backend.__dict__.get("_processor_inputs")
        original = backend._processor_inputs

        def timed(texts, video, **kwargs):
            self.mark("proc<")
            out = original(texts, video, **kwargs)
            self.mark("proc>")
            return out

        backend._processor_inputs = timed
        self.backend = backend

    def mark(self, name):
        before = time.perf_counter()
        sync()
        self.marks.append((name, before, time.perf_counter()))

    def close(self):
        for handle in self.handles:
            handle.remove()
        if self._override is None:
            self.backend.__dict__.pop("_processor_inputs", None)
        else:
            self.backend._processor_inputs = self._override

    def phases(self) -> dict:
        """ms per phase: processor, vision, prefill (first LLM call), suffix LLM calls, other (the rest);
        ``*_launch``: host ms until the phase's work was queued."""
        marks = self.marks
        total = 1e3 * (marks[-1][2] - marks[0][2])
        out = {"processor": 0.0, "vision": 0.0, "prefill": 0.0, "suffix_llm": 0.0}
        launch = {k + "_launch": 0.0 for k in ("vision", "prefill", "suffix_llm")}
        llm_calls = 0
        for i, (name, _, start) in enumerate(marks):
            if name.endswith("<"):
                key = name[:-1]
                j = next(k for k in range(i + 1, len(marks)) if marks[k][0] == key + ">")
                span, queued = 1e3 * (marks[j][2] - start), 1e3 * (marks[j][1] - start)
                if key == "proc":
                    out["processor"] += span
                    continue
                if key == "vision":
                    phase = "vision"
                else:
                    phase = "prefill" if llm_calls == 0 else "suffix_llm"
                    llm_calls += 1
                out[phase] += span
                launch[phase + "_launch"] += queued
        # the LLM's prefill call contains the vision call (Qwen3VLModel.forward runs the vision tower
        # first, then the language model): the vision hooks fire before the LLM pre-hook, no overlap
        out["other"] = total - sum(out.values())
        out["total"] = total
        out.update(launch)
        return out


def kernel_profile(score, video, queries) -> dict:
    """GPU kernel time of one scoring call by kind (torch.profiler; kernel durations only)."""
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        score(video, queries)
        sync()
        wall = time.perf_counter() - start
    kinds = {"matmul": 0.0, "attention": 0.0, "memcpy/memset": 0.0, "other (elementwise, norms, ...)": 0.0}
    by_name: dict = {}
    count = 0
    for event in prof.events():
        if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        us = event.time_range.elapsed_us()
        name = event.name
        low = name.lower()
        count += 1
        if any(k in low for k in ("flash", "fmha", "attention", "sdpa", "efficient")):
            kind = "attention"
        elif any(k in low for k in ("gemm", "nvjet", "cutlass", "cublas", "sm90_xmma", "splitk")):
            kind = "matmul"
        elif "memcpy" in low or "memset" in low:
            kind = "memcpy/memset"
        else:
            kind = "other (elementwise, norms, ...)"
        kinds[kind] += us / 1e3
        entry = by_name.setdefault(name[:90], [0.0, 0, kind])
        entry[0] += us / 1e3
        entry[1] += 1
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:12]
    busy = sum(kinds.values())
    return {"wall_ms_under_profiler": 1e3 * wall, "kernel_ms": busy, "kernels": count, "by_kind_ms": kinds,
            "top": [{"name": n, "ms": v[0], "calls": v[1], "kind": v[2]} for n, v in top]}


def timed_scoring(score, videos, query_sets, cuda: bool) -> dict:
    """Score every video's queries; wall time over all videos (each call returns host floats)."""
    sync()
    per_video = []
    start = time.perf_counter()
    for video, queries in zip(videos, query_sets):
        t0 = time.perf_counter()
        score(video, queries)
        sync()
        per_video.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    pairs = sum(len(q) for q in query_sets)
    return {"seconds": seconds, "pairs": pairs, "pairs_per_s": pairs / seconds,
            "ms_per_video": [1e3 * s for s in per_video], "ms_per_video_mean": 1e3 * seconds / len(videos),
            "ms_per_video_median": 1e3 * sorted(per_video)[len(per_video) // 2]}


def matmul_peak(device: str, n: int, trials: int = 5, reps: int = 10) -> dict:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    best = math.inf
    for _ in range(trials):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                a @ b
            end.record()
            sync()
            seconds = start.elapsed_time(end) / 1e3 / reps
        else:
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            seconds = (time.perf_counter() - t0) / reps
        best = min(best, seconds)
    del a, b
    return {"n": n, "dtype": str(dtype), "seconds": best, "tflops": 2 * n ** 3 / best / 1e12}


def memory_peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else None


def reset_peak():
    """Reset the peak-memory counter (no empty_cache: re-allocating after it would be timed too)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


# ----------------------------------------------------------------------------- main

#: (b) variants: HFBackend options, i.e. the committed code paths switched on one by one. The last one
#: is what HFBackend does by default on a GPU.
VARIANTS = {
    "cached": ({"suffixes": "cached", "vision_attention": "transformers", "processor_device": "cpu", "compile": False,
                "cudnn_attention": True},
               "the sharing alone: prefix (vision + system + video) prefilled once, the query suffixes packed into "
               "one sequence against its KV cache (block mask, no padding, no cache copy); transformers' own vision "
               "attention, PyTorch's own choice of attention kernels (cuDNN), processor on the CPU, eager"),
    "cached+visattn+gpuproc": ({"suffixes": "cached", "vision_attention": "batched", "processor_device": None,
                                "compile": False},
                               "cached + one batched attention call per vision layer, the video processor on the GPU, "
                               "no cuDNN attention in shared-prefix scoring (HFBackend's default cudnn_attention=None)"),
    "merged+visattn+gpuproc": ({"suffixes": "merged", "vision_attention": "batched", "processor_device": None,
                                "compile": False},
                               "prefix and all suffixes of the chunk in ONE LLM pass (block mask, no KV cache), "
                               "batched vision attention, GPU processor, eager"),
    "merged+visattn+gpuproc+compile": ({"suffixes": "merged", "vision_attention": "batched", "processor_device": None,
                                        "compile": True},
                                       "merged+visattn+gpuproc + torch.compile of the vision blocks and the LLM decoder "
                                       "layers: HFBackend's default on a GPU"),
}
DEFAULT_VARIANT = "merged+visattn+gpuproc+compile"
#: (a): one full forward per pair with the reference's prompt (query before the video)
REFERENCES = {
    "stock": ({"vision_attention": "transformers", "processor_device": "cpu", "compile": False,
               "cudnn_attention": True},
              "the reference's way: transformers' and PyTorch's own code paths and kernels, processor on the CPU, eager"),
    "ours": ({"vision_attention": "batched", "processor_device": None, "compile": True},
             "the same per-pair forwards with (b)'s kernels: batched vision attention, GPU processor, compile"),
}
PROFILED = ("cached", "merged+visattn+gpuproc", DEFAULT_VARIANT)


def _median_ms(fn, reps=5):
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - t0))
    return sorted(times)[reps // 2]


def split_attention_check(device: str, dtype) -> dict:
    """hf.py's split attention (prefix rows causal; packed suffix rows through an additive mask, on a GPU
    through the memory-efficient kernel) against one dense float32 SDPA call with the whole block mask,
    on random inputs of the LLM's head shape (32 heads, 8 KV heads, 128 dims): ||out - ref|| / ||ref||."""
    from types import SimpleNamespace

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    attention = ALL_ATTENTION_FUNCTIONS[hf_backend.SPLIT_ATTENTION]
    g = torch.Generator().manual_seed(0)
    prefix, lens, heads, kv_heads, dim = 701, [37, 61, 5, 44], 32, 8, 128
    total = prefix + sum(lens)
    q, k, v = (torch.randn(1, h, total, dim, generator=g).to(device, dtype) for h in (heads, kv_heads, kv_heads))
    seg = torch.cat([torch.full((prefix,), -1), torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))])
    seg = seg.to(device)
    index = torch.arange(total, device=device)
    full = (index[None] <= index[:, None]) & ((seg[None] < 0) | (seg[None] == seg[:, None]))
    bias = torch.full((1, 1, total - prefix, -(-total // 8) * 8), torch.finfo(dtype).min, dtype=dtype, device=device)
    bias = bias[..., :total].masked_fill_(full[prefix:][None, None], 0)
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    out, _ = attention(module, q, k, v, bias, dropout=0.0, scaling=dim ** -0.5)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.double(), k.double().repeat_interleave(4, 1), v.double().repeat_interleave(4, 1), attn_mask=full,
        scale=dim ** -0.5).transpose(1, 2)
    rel = float((out.double() - ref).norm() / ref.norm())
    return {"rel_error": rel, "dtype": str(dtype), "prefix": prefix, "suffix_lengths": lens, "finite": bool(out.isfinite().all())}


def _dynamo_graphs() -> int | None:
    """Graphs torch.compile has captured so far in this process (a rise during timing = a recompile)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:
        return None


def timed_with_decode(score, paths, query_sets, settings, ahead: int) -> dict:
    """Decode each mp4 (rankvideo.video.load_video) and score it, as a rerank job does, through
    :func:`rankvideo.scoring.rerank.prefetched`: the next ``ahead`` videos decode in background threads while
    the GPU scores this one (0: one after the other). Wall time includes decoding."""
    from rankvideo.scoring.rerank import prefetched
    from rankvideo.video import load_video

    sync()
    start = time.perf_counter()
    decode_s, wait_s, pairs = [], 0.0, 0
    items = list(zip(paths, query_sets))
    stream = prefetched(items, lambda item: load_video(item[0], settings, readers=("pyav",)), ahead=ahead)
    for (path, queries), video, error, seconds, waited in stream:
        if error is not None:
            raise error
        decode_s.append(seconds)
        wait_s += waited
        score(video, queries)
        sync()
        pairs += len(queries)
    wall = time.perf_counter() - start
    return {"ahead": ahead, "videos": len(items), "pairs": pairs, "seconds": wall, "pairs_per_s": pairs / wall,
            "ms_per_video": 1e3 * wall / len(items), "decode_ms_per_video": 1e3 * sum(decode_s) / len(items),
            "waited_for_decode_ms_per_video": 1e3 * wait_s / len(items)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="output folder (required unless --report)")
    parser.add_argument("--report", help="only rewrite the .md next to this results .json")
    parser.add_argument("--queries", default=None, help="Q values, comma separated (default 1,4,8,16,32,64)")
    parser.add_argument("--videos", type=int, default=None, help="videos per measurement (default 6; tiny 2)")
    parser.add_argument("--tiny", action="store_true", help="random tiny shape (CPU smoke test)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--attn", default="sdpa", help="attn_implementation of the model")
    parser.add_argument("--variants", default=None, help="(b) variants to time, comma separated (default: all; on "
                        "the CPU all but the compiled one)")
    parser.add_argument("--query-batch-size", type=int, default=64, help="HFBackend query_batch_size of (b)")
    parser.add_argument("--reference-max-q", type=int, default=16,
                        help="largest Q at which (a) is timed; above it (a)'s measured pairs/s is reused")
    parser.add_argument("--query-tokens", type=int, default=40)
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip remaining sections after this")
    parser.add_argument("--peak-n", type=int, default=8192)
    args = parser.parse_args(argv)

    if args.report:
        path = Path(args.report)
        write_markdown(json.loads(path.read_text()), path.with_suffix(".md"))
        return 0
    if not args.out:
        parser.error("--out is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    t_start = time.perf_counter()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    tiny = args.tiny
    shape = TINY if tiny else QWEN3_VL_8B
    q_values = [int(q) for q in (args.queries or ("1,4" if tiny else "1,4,8,16,32,64")).split(",")]
    n_videos = args.videos or (2 if tiny else 6)
    # the default first (it matters most if the time budget runs out), then the others
    variants = [v for v in (args.variants or ",".join([DEFAULT_VARIANT] + [v for v in VARIANTS if v != DEFAULT_VARIANT]))
                .split(",") if v]
    if not cuda:  # the CPU smoke test: compiling on a small CPU takes minutes
        variants = [v for v in variants if not VARIANTS[v][0]["compile"]]
    dtype = torch.bfloat16 if cuda else torch.float32
    if not cuda:
        # one intra-op thread: OpenMP barriers on a small, shared CPU made timings swing 10x
        torch.set_num_threads(1)
    card = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    card_slug = ("tiny-" if tiny else "") + "".join(c if c.isalnum() else "-" for c in card.lower()).strip("-")
    import transformers

    result: dict = {
        "card": card, "device": device, "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda, "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "shape": "tiny" if tiny else "Qwen3-VL-8B",
        "dtype": str(dtype), "attn_implementation": args.attn, "queries": q_values, "videos_per_measurement": n_videos,
        "query_batch_size": args.query_batch_size, "default_variant": DEFAULT_VARIANT,
        "variants": {v: {"options": VARIANTS[v][0], "text": VARIANTS[v][1]} for v in variants},
        "references": {k: {"options": o, "text": t} for k, (o, t) in REFERENCES.items()}, "errors": [], "skipped": [],
    }
    json_path = out_dir / f"score_per_video_{card_slug}.json"

    def save():
        result["elapsed_s"] = time.perf_counter() - t_start
        json_path.write_text(json.dumps(result, indent=1, default=str))
        write_markdown(result, out_dir / f"score_per_video_{card_slug}.md")

    def over_budget(what: str) -> bool:
        if time.perf_counter() - t_start > args.budget_s:
            result["skipped"].append(what)
            log.warning("budget: skipping %s", what)
            return True
        return False

    if cuda:
        torch._logging.set_logs(recompiles=True)  # a recompile inside the timing shows in the log
        try:
            import flash_attn  # noqa: F401

            result["flash_attn"] = flash_attn.__version__
        except ImportError:
            result["flash_attn"] = None

    log.info("matmul peak")
    result["peak"] = matmul_peak(device, args.peak_n if cuda else 256)
    log.info("peak %.1f TFLOP/s", result["peak"]["tflops"])
    save()

    t0 = time.perf_counter()
    tokenizer = tiny_model.build_tokenizer()
    processor = build_processor(tokenizer)
    model, _ = build_model(shape, tokenizer, device, dtype, args.attn)
    n_params = sum(p.numel() for p in model.parameters())
    result["model"] = {"params": n_params, "vision_params": sum(p.numel() for p in model.model.visual.parameters()),
                       "build_s": time.perf_counter() - t0, "tokenizer_len": len(tokenizer)}
    log.info("model: %.2f B params (%.1f s)", n_params / 1e9, time.perf_counter() - t0)

    workdir = Path(tempfile.mkdtemp(prefix="spv-"))
    videos, video_info = make_videos(n_videos + 1, workdir, tiny)
    result["video"] = video_info
    warm_video, videos = videos[0], videos[1:]
    paths = (video_info.get("paths") or [None])[1:]
    qmax = max(q_values)
    query_sets = [make_queries(tokenizer, qmax, seed=100 + i, target_tokens=args.query_tokens) for i in range(n_videos)]
    warm_queries = make_queries(tokenizer, qmax, seed=99, target_tokens=args.query_tokens)
    save()

    def backend_b(variant):
        return make_backend(model, processor, prompt_variant="default", mode="shared_prefix",
                            query_batch_size=args.query_batch_size, **VARIANTS[variant][0])

    per_pair_default = make_backend(model, processor, prompt_variant="default", mode="per_pair", compile=False)
    stock_ref = make_backend(model, processor, prompt_variant="reference_inference", mode="per_pair",
                             **REFERENCES["stock"][0])

    # token counts for the FLOP model (from the processor, exactly what the model sees)
    prefix_text, _ = per_pair_default.split_prompt(query_sets[0][0])
    prefix_inputs = per_pair_default._processor_inputs([prefix_text], videos[0])
    prefix_len = int(prefix_inputs["input_ids"].shape[1])
    grid = tuple(int(x) for x in prefix_inputs["video_grid_thw"][0].tolist())
    pair_len = int(stock_ref._processor_inputs([stock_ref._render(query_sets[0][0])], videos[0])["input_ids"].shape[1])
    suffix_lens = [[len(tokenizer(per_pair_default.split_prompt(q)[1], add_special_tokens=False)["input_ids"]) for q in qs]
                   for qs in query_sets]
    query_lens = [len(tokenizer(q, add_special_tokens=False)["input_ids"]) for q in query_sets[0]]
    result["tokens"] = {"prefix": prefix_len, "reference_pair": pair_len, "video_grid_thw": grid,
                        "suffix_mean": sum(map(sum, suffix_lens)) / sum(map(len, suffix_lens)),
                        "query_mean": sum(query_lens) / len(query_lens)}
    del prefix_inputs
    log.info("tokens: %s", result["tokens"])

    # the processor alone (median of 5, synchronised), on the CPU and where HFBackend runs it on a GPU
    proc_ms = {"cpu": _median_ms(lambda: stock_ref._processor_inputs([prefix_text], videos[0])),
               "tokenizer_only": _median_ms(lambda: processor.tokenizer([prefix_text]))}
    if cuda:
        proc_ms["gpu"] = _median_ms(lambda: per_pair_default._processor_inputs([prefix_text], videos[0]))
    result["processor_ms"] = proc_ms
    log.info("processor: %s", proc_ms)

    def flops_for(q: int) -> dict:
        per_video = [flop_model(shape, grid, prefix_len, lens[:q], pair_len) for lens in suffix_lens]
        return {k: sum(f[k] for f in per_video) / len(per_video) for k in
                ("vision", "prefix", "suffixes", "shared_total", "per_pair_each")}

    result["flops"] = {str(q): flops_for(q) for q in q_values}
    result["flop_detail"] = flop_model(shape, grid, prefix_len, suffix_lens[0][:1], pair_len)
    save()

    try:
        result["split_attention_check"] = split_attention_check(device, dtype)
        log.info("split attention vs dense reference: %s", result["split_attention_check"])
    except Exception as error:
        result["errors"].append(f"split attention check: {type(error).__name__}: {error}"[:2000])
        log.error("split attention check failed:\n%s", traceback.format_exc())

    # ------------------------------------------------------------------ agreement: per pair, default prompt
    check_q = min(8, qmax)
    check_queries = query_sets[0][:check_q]
    baseline = per_pair_default.score_video(videos[0], check_queries)
    spread = [s["logit_delta"] for s in baseline]
    agreement = {"queries": check_q, "reference": "HFBackend per_pair, default prompt (one full forward per pair)",
                 "logit_delta_reference": spread, "reference_spread": max(spread) - min(spread)}
    result["agreement"] = agreement

    def compare(name, scores):
        diffs = [abs(a["logit_delta"] - b["logit_delta"]) for a, b in zip(scores, baseline)]
        agreement[name] = {"max_abs_diff": max(diffs), "logit_delta": [s["logit_delta"] for s in scores]}
        log.info("agreement %s: max |d logit_delta| = %.4g", name, max(diffs))

    # ------------------------------------------------------------------ (a) one full forward per pair
    result["reference"], result["reference_pooled"], result["reference_breakdown_ms"] = {}, {}, {}
    ref_qs = [q for q in q_values if q <= args.reference_max_q]

    def time_reference(ref_name, ref_qs_here):
        if not ref_qs_here or over_budget(f"reference {ref_name}"):
            return
        try:
            ref = stock_ref if ref_name == "stock" else make_backend(
                model, processor, prompt_variant="reference_inference", mode="per_pair", **REFERENCES[ref_name][0])
            t0 = time.perf_counter()
            ref.score_video(warm_video, warm_queries[:2] + ["a short query"])
            ref.score_video(videos[-1], warm_queries[2:3])
            rows = {"warmup_s": time.perf_counter() - t0}
            for q in ref_qs_here:
                if over_budget(f"reference {ref_name} Q={q}"):
                    break
                # (a) costs the same per pair at every Q: fewer videos at the larger Q
                n = n_videos if q <= 4 else max(2, n_videos // 3)
                reset_peak()
                timing = timed_scoring(ref.score_video, videos[:n], [qs[:q] for qs in query_sets[:n]], cuda)
                timing["peak_gib"] = memory_peak_gib()
                rows[str(q)] = timing
                log.info("(a) %s Q=%d: %.2f pairs/s", ref_name, q, timing["pairs_per_s"])
                result["reference"][ref_name] = rows
                save()
            timed_rows = [v for k, v in rows.items() if k != "warmup_s"]
            result["reference_pooled"][ref_name] = sum(v["pairs"] for v in timed_rows) / sum(v["seconds"] for v in timed_rows)
            timer = PhaseTimer(ref, cuda)
            try:
                timer.mark("start")
                ref.score_video(videos[0], query_sets[0][:1])
                timer.mark("end")
                result["reference_breakdown_ms"][ref_name] = timer.phases()
            finally:
                timer.close()
        except Exception as error:
            result["errors"].append(f"reference {ref_name}: {type(error).__name__}: {error}"[:2000])
            log.error("reference %s failed:\n%s", ref_name, traceback.format_exc())
        save()
    time_reference("stock", ref_qs)
    pooled = result["reference_pooled"]
    # what HFBackend(...) users get: rankvideo.models.load_vlm runs the vision patch embedding as one matrix
    # product (a class-wide switch, so from here on: every (b) variant and (a) ours; (a) stock had the Conv3d)
    if hasattr(models, "use_linear_patch_embed"):
        models.use_linear_patch_embed()
        result["linear_patch_embed"] = "after (a) stock"

    # ------------------------------------------------------------------ (b) per video, shared prefix
    result["shared"], result["breakdown"] = {}, {}
    backends = {}
    for variant in variants:
        if over_budget(f"variant {variant}"):
            continue
        try:
            backend = backends[variant] = backend_b(variant)
            score = backend.score_video
            t0 = time.perf_counter()
            # every kind of call twice with other lengths (compiles: static, then dynamic; the allocator)
            for extra in ([], ["a short query"], ["a short query", "another"]):
                for q in sorted(set(q_values) | {2, 3}):
                    score(warm_video, (extra + warm_queries)[:q])
            score(videos[-1], warm_queries[:min(8, qmax)])
            warm_s = time.perf_counter() - t0
            log.info("(b) %s warm-up %.1f s", variant, warm_s)
            graphs_after_warmup = _dynamo_graphs()
            compare(variant, score(videos[0], check_queries))
            rows = {"warmup_s": warm_s}
            for q in q_values:
                if over_budget(f"variant {variant} Q={q}"):
                    break
                reset_peak()
                try:
                    timing = timed_scoring(score, videos, [qs[:q] for qs in query_sets], cuda)
                except torch.OutOfMemoryError as error:
                    rows[str(q)] = {"oom": str(error)[:200]}
                    log.warning("(b) %s Q=%d: OOM", variant, q)
                    gc.collect()
                    continue
                timing["peak_gib"] = memory_peak_gib()
                flops = result["flops"][str(q)]["shared_total"]
                timing["tflops"] = flops / (timing["ms_per_video_mean"] / 1e3) / 1e12
                timing["pct_peak"] = 100 * timing["tflops"] / result["peak"]["tflops"]
                rows[str(q)] = timing
                log.info("(b) %s Q=%d: %.1f pairs/s, %.0f ms/video, %.0f TFLOP/s (%.0f%%), peak %.1f GiB", variant, q,
                         timing["pairs_per_s"], timing["ms_per_video_mean"], timing["tflops"], timing["pct_peak"],
                         timing["peak_gib"] or 0)
                result["shared"][variant] = rows
                save()
            rows["compiled_graphs"] = {"after_warmup": graphs_after_warmup, "after_timing": _dynamo_graphs()}
            result["breakdown"][variant] = {}
            for q in sorted({1, min(8, qmax), min(16, qmax)}):
                phases = []
                for video, qs in zip(videos, query_sets):
                    timer = PhaseTimer(backend, cuda)
                    try:
                        timer.mark("start")
                        score(video, qs[:q])
                        timer.mark("end")
                        phases.append(timer.phases())
                    finally:
                        timer.close()
                result["breakdown"][variant][str(q)] = {k: sum(p[k] for p in phases) / len(phases) for k in phases[0]}
            if cuda and variant in PROFILED and not over_budget(f"profile {variant}"):
                result.setdefault("profile", {})[variant] = {
                    str(q): kernel_profile(score, videos[0], query_sets[0][:q]) for q in sorted({min(16, qmax)})}
            save()
        except Exception as error:  # keep the other variants' numbers
            result["errors"].append(f"{variant}: {type(error).__name__}: {error}"[:2000])
            log.error("variant %s failed:\n%s", variant, traceback.format_exc())
            save()

    # (a) with (b)'s kernels, after (b) (its compiled graphs are warm by then); then the x columns
    if cuda:
        time_reference("ours", [min(8, qmax)])
    for rows in result["shared"].values():
        for timing in rows.values():
            if isinstance(timing, dict) and "pairs_per_s" in timing:
                timing.update({f"x_{k}": timing["pairs_per_s"] / rate for k, rate in pooled.items()})
    save()

    # ------------------------------------------------------------------ decoding inside the timing
    best = DEFAULT_VARIANT if DEFAULT_VARIANT in backends else (list(backends) or [None])[-1]
    if best and paths and paths[0] and not over_budget("decode overlap"):
        try:
            settings = VideoSettings.from_dict(video_info["settings"])
            result["decode_overlap"] = {"variant": best, "rows": []}
            for q in sorted({1, min(8, qmax), min(16, qmax)}):
                for ahead in (0, 1, 2):
                    row = timed_with_decode(backends[best].score_video, paths, [qs[:q] for qs in query_sets], settings,
                                            ahead)
                    row["q"] = q
                    result["decode_overlap"]["rows"].append(row)
                    log.info("decode+score %s Q=%d ahead=%d: %.1f pairs/s (decode %.0f ms/video, waited %.0f)", best,
                             q, ahead, row["pairs_per_s"], row["decode_ms_per_video"],
                             row["waited_for_decode_ms_per_video"])
        except Exception as error:
            result["errors"].append(f"decode overlap: {type(error).__name__}: {error}"[:2000])
            log.error("decode overlap failed:\n%s", traceback.format_exc())
        save()

    # ------------------------------------------------------------------ float32 agreement
    # the same model (bf16 weights, exactly representable) upcast: differences are the algorithm's, not
    # bf16 rounding; the eager variants (compiling again for float32 would only cost time)
    if dtype != torch.float32 and not over_budget("fp32 agreement"):
        try:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            model.float()
            base32 = per_pair_default.score_video(videos[0], check_queries)
            fp32 = {"queries": check_q}
            for variant in ("cached", "merged+visattn+gpuproc"):
                if variant in backends:
                    scores = backends[variant].score_video(videos[0], check_queries)
                    fp32[variant] = max(abs(a["logit_delta"] - b["logit_delta"]) for a, b in zip(scores, base32))
                    log.info("fp32 agreement %s: %.3g", variant, fp32[variant])
            result["agreement_fp32"] = fp32
        except Exception as error:
            result["errors"].append(f"fp32 agreement: {type(error).__name__}: {error}"[:2000])
            log.error("fp32 agreement failed:\n%s", traceback.format_exc())
        save()
    save()
    log.info("done in %.0f s: %s", time.perf_counter() - t_start, json_path)
    print(Path(out_dir / f"score_per_video_{card_slug}.md").read_text())
    return 0

# ----------------------------------------------------------------------------- report


def _fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def _ordered(shared: dict) -> list[str]:
    return [v for v in VARIANTS if v in shared] + [v for v in shared if v not in VARIANTS]


def _rate(r, v, q):
    t = r.get("shared", {}).get(v, {}).get(str(q), {})
    return t.get("pairs_per_s")


def _targets(r: dict) -> list[str]:
    """The issue's targets, checked for every (b) variant against (a) stock and (a) with our kernels."""
    shared, pooled = r.get("shared", {}), r.get("reference_pooled", {})
    if not shared or "stock" not in pooled:
        return []
    a_stock, a_ours = pooled["stock"], pooled.get("ours")
    variants = _ordered(shared)
    lines = ["## Targets of the issue", "",
             f"x = (b) / (a). First number: against (a) stock, the reference's way ({a_stock:.2f} pairs/s), which is "
             f"what the target is judged on; in brackets: against (a) with the same kernels as (b) "
             f"({_fmt(a_ours, '.2f')} pairs/s), i.e. what the sharing alone is worth.", "",
             "| target |" + "".join(f" `{v}` |" for v in variants), "|---|" + "---|" * len(variants)]
    for q, goal in ((1, 1.0), (8, 7.0), (16, 12.0)):
        cells = []
        for v in variants:
            x = _rate(r, v, q)
            if not x:
                cells.append("-")
                continue
            mark = "**met**" if x / a_stock >= goal else "no"
            cells.append(f"{x / a_stock:.1f}x" + (f" [{x / a_ours:.1f}x]" if a_ours else "") + f" {mark}")
        lines.append(f"| >= {goal:g}x at Q = {q} | " + " | ".join(cells) + " |")
    cells = []
    for v in variants:
        best = max(((t["pct_peak"], q) for q, t in shared[v].items() if isinstance(t, dict) and "pct_peak" in t),
                   default=None)
        cells.append("-" if best is None else f"{best[0]:.0f}% at Q = {best[1]} {'**met**' if best[0] >= 50 else 'no'}")
    lines.append("| whole scoring >= 50% of peak (best Q) | " + " | ".join(cells) + " |")
    cells = []
    for v in variants:
        t = shared[v].get("64", {})
        cells.append("not run" if not t else "OOM" if "oom" in t else f"no OOM, {t['peak_gib']:.1f} GiB")
    lines.append("| Q = 64 without OOM (peak memory) | " + " | ".join(cells) + " |")
    return lines + [""]


def write_markdown(r: dict, path: Path) -> None:
    lines = [f"# Score per video: {r['shape']} shape, random weights, on {r['card']}", "",
             f"- date: {r['date']}; torch {r['torch']} (CUDA {r['cuda']}), transformers {r['transformers']}, "
             f"Python {r['python']}; dtype {r['dtype']}; attn_implementation `{r['attn_implementation']}`"
             + (f"; flash_attn: {r.get('flash_attn') or 'not installed'}" if r["device"] == "cuda" else ""),
             f"- produced by `benchmarks/score_per_video.py`, which times the committed `rankvideo/backends/hf.py` "
             f"(`HFBackend` with its speed options switched on one by one; nothing patched from the script); "
             f"{r['videos_per_measurement']} videos per measurement after warm-up calls at every Q; every call "
             f"synchronised; pairs/s = pairs / wall time over the videos (processor + model; video decoding is "
             f"timed separately below); (b)'s `query_batch_size` {r.get('query_batch_size')}"
             + ("; the vision patch embedding runs as one matrix product (`rankvideo.models.use_linear_patch_embed`, "
                "as `load_vlm` applies it) in every (b) variant and (a) ours, as a Conv3d in (a) stock"
                if r.get("linear_patch_embed") else "")]
    if "peak" in r:
        p = r["peak"]
        lines.append(f"- matmul peak: {p['n']}^3 {p['dtype']} best of 5x10 products: **{p['tflops']:.0f} TFLOP/s**")
    if "model" in r:
        m = r["model"]
        lines.append(f"- model: {m['params'] / 1e9:.3f} B parameters ({m['vision_params'] / 1e6:.0f} M vision), "
                     f"built on the device in {m['build_s']:.0f} s; tokenizer of {m['tokenizer_len']} ids (local BPE)")
    if "video" in r:
        v = r["video"]
        lines.append(f"- video: {v.get('source')}; {v.get('frames', 32)} frames, "
                     f"{v.get('visual_tokens', 2048)} visual tokens; decode+resize per video "
                     f"{_fmt(v.get('decode_s_median') and 1e3 * v['decode_s_median'], '.0f')} ms (one CPU thread, median)")
    if r.get("processor_ms"):
        lines.append("- processor alone for one prefix (median of 5, ms): " + ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in r["processor_ms"].items()))
    if "tokens" in r:
        t = r["tokens"]
        lines.append(f"- tokens: shared prefix (system + video + timestamps) {t['prefix']}; suffix mean "
                     f"{t['suffix_mean']:.1f} (query text {t['query_mean']:.1f}); one reference prompt "
                     f"(query first) {t['reference_pair']}")
    lines.append("")
    ref, pooled, shared = r.get("reference", {}), r.get("reference_pooled", {}), r.get("shared", {})
    variants = _ordered(shared)
    lines += _targets(r)
    if ref or shared:
        lines += ["## Pairs per second", "",
                  "(a) = `HFBackend(mode=\"per_pair\", prompt_variant=\"reference_inference\")`: query before the video, "
                  "one vision pass + one full forward per pair. (b) = `HFBackend(mode=\"shared_prefix\")`, default "
                  "(video-first) prompt, one variant per column (options below). x = (b) / (a) stock (pooled: "
                  + ", ".join(f"(a) {k} {v:.2f}" for k, v in pooled.items()) + " pairs/s).", ""]
        ref_cols = [k for k in ("stock", "ours") if k in ref]
        header = "| Q |" + "".join(f" (a) {k} |" for k in ref_cols) + "".join(f" (b) `{v}` | x |" for v in variants)
        lines += [header, "|" + "---|" * (1 + len(ref_cols) + 2 * len(variants))]
        for q in r["queries"]:
            row = f"| {q} |"
            for k in ref_cols:
                t = ref[k].get(str(q))
                row += f" {t['pairs_per_s']:.2f} |" if t else f" ({pooled.get(k, 0):.2f}) |"
            for v in variants:
                t = shared[v].get(str(q), {})
                if "oom" in t:
                    row += " OOM | - |"
                else:
                    row += f" {_fmt(t.get('pairs_per_s'))} | {_fmt(t.get('x_stock'))} |"
            lines.append(row)
        lines += ["", "(a) in parentheses: not timed at that Q; (a) costs the same per pair at every Q, so its pooled "
                  "rate stands in. (a) is timed on fewer videos at Q >= 8.", ""]
        lines += ["## Achieved TFLOP/s of (b) and peak memory", "",
                  "| variant | Q | ms/video (mean) | ms/video (median) | TFLOP/video | TFLOP/s | % of peak | peak GiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for v in variants:
            for q in r["queries"]:
                t = shared[v].get(str(q))
                if not t or "oom" in t:
                    continue
                fl = r["flops"][str(q)]["shared_total"] / 1e12
                lines.append(f"| `{v}` | {q} | {t['ms_per_video_mean']:.1f} | {t['ms_per_video_median']:.1f} | {fl:.1f} | "
                             f"{t['tflops']:.0f} | {t['pct_peak']:.0f}% | {_fmt(t.get('peak_gib'))} |")
        if ref:
            lines += ["", "| (a) | Q | ms/pair | TFLOP/s | % of peak | peak GiB |", "|---|---|---|---|---|---|"]
            for k, rows in ref.items():
                for q, t in rows.items():
                    if not isinstance(t, dict):
                        continue
                    tf = r["flops"][q]["per_pair_each"] * t["pairs_per_s"] / 1e12
                    lines.append(f"| {k} | {q} | {1e3 / t['pairs_per_s']:.1f} | {tf:.0f} | "
                                 f"{100 * tf / r['peak']['tflops']:.0f}% | {_fmt(t.get('peak_gib'))} |")
        warm = {v: shared[v].get("warmup_s") for v in variants}
        warm.update({f"(a) {k}": ref[k].get("warmup_s") for k in ref})
        lines += ["", "Warm-up (first calls at every Q, compilation included), s: " + ", ".join(
            f"`{k}` {v:.0f}" for k, v in warm.items() if v is not None) + "."]
        graphs = {v: shared[v].get("compiled_graphs") for v in variants if shared[v].get("compiled_graphs")}
        if any(g.get("after_warmup") for g in graphs.values()):
            lines.append("Graphs torch.compile had captured in this process after each variant's warm-up -> after its "
                         "timed runs (equal: no recompilation inside the timing): " + ", ".join(
                             f"`{v}` {g['after_warmup']} -> {g['after_timing']}" for v, g in graphs.items()) + ".")
        lines.append("")
    if r.get("breakdown"):
        lines += ["## Time per video of (b), by phase (ms, host clock with a GPU sync at each phase boundary, mean "
                  "over the videos)", "",
                  "processor = the video processor + tokenizer (frames -> patches; on the GPU where the variant says "
                  "so); vision = vision tower; LLM pass 1 = the first language-model call: the prefix alone (`cached`) "
                  "or the prefix with the suffixes of the first chunk (`merged`); LLM on cache = the calls that score "
                  "suffix chunks against the prefix's KV cache; other = the rest (prompt rendering, tokenising the "
                  "suffixes, rope index, masks, lm_head on Q rows, scores to host). In brackets: host time until the "
                  "phase's last kernel was queued (close to the phase's time = bound by Python and launches, not by "
                  "the GPU). The syncs make the total a little larger than the unsynchronised time per video above. "
                  "Decoding is not in these rows (next section).", "",
                  "| variant | Q | processor | vision [queued] | LLM pass 1 [queued] | LLM on cache [queued] | other | total |",
                  "|---|---|---|---|---|---|---|---|"]
        for v, by_q in r["breakdown"].items():
            for q, b in by_q.items():
                lines.append(f"| `{v}` | {q} | {b['processor']:.1f} | {b['vision']:.1f} [{b.get('vision_launch', 0):.0f}] | "
                             f"{b['prefill']:.1f} [{b.get('prefill_launch', 0):.0f}] | {b['suffix_llm']:.1f} "
                             f"[{b.get('suffix_llm_launch', 0):.0f}] | {b['other']:.1f} | {b['total']:.1f} |")
        for k, b in r.get("reference_breakdown_ms", {}).items():
            lines.append(f"| (a) {k}, one pair | 1 | {b['processor']:.1f} | {b['vision']:.1f} | {b['prefill']:.1f} "
                         f"(whole prompt) | - | {b['other']:.1f} | {b['total']:.1f} |")
        if "flop_detail" in r and "peak" in r:
            f, pk = r["flop_detail"], r["peak"]["tflops"]
            lines += ["", f"FLOPs per video: vision {f['vision'] / 1e12:.2f} T (linear {f['vision_linear'] / 1e12:.2f}, "
                      f"mergers {f['vision_merger'] / 1e12:.2f}, attention {f['vision_attention'] / 1e12:.2f}), prefix "
                      f"prefill {f['prefix'] / 1e12:.2f} T, one suffix {f['suffixes'] / 1e12:.3f} T; one (a) pair "
                      f"{f['per_pair_each'] / 1e12:.2f} T. Per phase (at the largest Q of the breakdown):"]
            for v, by_q in r["breakdown"].items():
                q = max(by_q, key=int)
                b = by_q[q]
                fl = r["flops"].get(q) or {}
                vis = f["vision"] / (b["vision"] / 1e3) / 1e12 if b["vision"] else 0
                llm_flops = f["prefix"] + (fl.get("suffixes", 0) if b["suffix_llm"] < 1 else 0)
                pre = llm_flops / (b["prefill"] / 1e3) / 1e12 if b["prefill"] else 0
                lines.append(f"- `{v}`: vision at {vis:.0f} TFLOP/s ({100 * vis / pk:.0f}% of peak), LLM pass 1 at "
                             f"{pre:.0f} TFLOP/s ({100 * pre / pk:.0f}%)")
        lines.append("")
    if r.get("decode_overlap"):
        d = r["decode_overlap"]
        lines += ["## Decoding inside the loop (what a rerank job does)", "",
                  f"`{d['variant']}`; each video decoded from its mp4 by `rankvideo.video.load_video` (PyAV) and "
                  "scored through `rankvideo.scoring.rerank.prefetched`, the rerank loop's helper: `ahead` = videos decoding in "
                  "background threads while the GPU scores one (0: decode, then score; the rerank CLI's default "
                  "`--decode-ahead` is 2). decode ms = time in `load_video` (one thread each); CPU share = decode "
                  "time / wall time of the loop (above 100%: more than one core busy decoding).", "",
                  "| Q | ahead | pairs/s | ms/video | decode ms/video (CPU) | waited for decode ms/video | CPU share of decode |",
                  "|---|---|---|---|---|---|---|"]
        for row in d["rows"]:
            lines.append(f"| {row['q']} | {row.get('ahead', int(row.get('prefetch', 0)))} | {row['pairs_per_s']:.1f} | "
                         f"{row['ms_per_video']:.1f} | {row['decode_ms_per_video']:.1f} | "
                         f"{row['waited_for_decode_ms_per_video']:.1f} | "
                         f"{100 * row['decode_ms_per_video'] / row['ms_per_video']:.0f}% |")
        lines.append("")
    if r.get("profile"):
        lines += ["## GPU kernel time of one video (torch.profiler, kernel durations)", "",
                  "| variant | Q | wall under profiler ms | kernel ms | kernels | matmul | attention | memcpy | other |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v, by_q in r["profile"].items():
            for q, p in by_q.items():
                k = list(p["by_kind_ms"].values())
                lines.append(f"| `{v}` | {q} | {p['wall_ms_under_profiler']:.0f} | {p['kernel_ms']:.1f} | {p['kernels']} | "
                             + " | ".join(f"{x:.1f}" for x in k) + " |")
        for v, by_q in r["profile"].items():
            q = max(by_q, key=int)
            lines += ["", f"Top kernels, `{v}`, Q = {q}:", "", "| kernel | kind | calls | ms |", "|---|---|---|---|"]
            lines += [f"| `{t['name']}` | {t['kind']} | {t['calls']} | {t['ms']:.1f} |" for t in by_q[q]["top"]]
        lines.append("")
    if "agreement" in r:
        a = r["agreement"]
        lines += ["## Agreement", "",
                  f"Same {a['queries']} pairs (video 1), logit_delta of each (b) variant against {a['reference']}; "
                  f"spread of the reference values {a['reference_spread']:.3f}:", ""]
        for k, v in a.items():
            if isinstance(v, dict) and "max_abs_diff" in v:
                lines.append(f"- `{k}`: max |delta logit_delta| = {v['max_abs_diff']:.4f}")
        if r.get("split_attention_check"):
            c = r["split_attention_check"]
            lines += ["", f"Split attention alone (`rankvideo.backends.hf`, prefix {c['prefix']} tokens + packed suffixes "
                      f"of {c['suffix_lengths']} tokens, 32 heads / 8 KV heads, {c['dtype']}) against one dense float64 "
                      f"SDPA call with the whole block mask: relative error {c['rel_error']:.1e}."]
        if r.get("agreement_fp32"):
            f = r["agreement_fp32"]
            lines += ["", "The same check with the model upcast to float32 (TF32 off), where differences are the "
                      "algorithm's rather than bf16 rounding:", ""]
            lines += [f"- `{k}`: max |delta logit_delta| = {v:.2e}" for k, v in f.items() if isinstance(v, float)]
        lines.append("")
    lines += ["## How FLOPs are counted", "",
              "Analytic, per video, multiply-add = 2 FLOPs: linear layers 2 x weights x tokens through them (LLM: "
              "q/k/v/o + gate/up/down = %s FLOPs per token over all layers; vision: patch embedding + all blocks of "
              "qkv/proj/fc1/fc2, and the merger + 3 deepstack mergers on the merged tokens); attention 4 x (heads x "
              "head_dim) x layers per (query, key) pair the mask allows: causal prefix P(P+1)/2 pairs, each suffix of "
              "S tokens S*P + S(S+1)/2, vision: frame groups of n patches, n^2 pairs each; lm_head 2 x hidden x vocab "
              "per scored row only. Padding, pairs a kernel computes and masks out (the merged pass's block mask "
              "makes the attention kernel visit all T^2 pairs of its T tokens), norms, rotary, activations and "
              "softmax are not counted, so TFLOP/s is useful work." % _fmt(
                  r.get("flop_detail", {}).get("llm_linear_per_token"), ".3g"), ""]
    if r.get("variants"):
        lines += ["## Variants", ""]
        lines += [f"- (b) `{k}`: {v['text']} — `HFBackend(..., {', '.join(f'{o}={x!r}' for o, x in v['options'].items())})`"
                  for k, v in r["variants"].items()]
        lines += [f"- (a) `{k}`: {v['text']} — `HFBackend(..., {', '.join(f'{o}={x!r}' for o, x in v['options'].items())})`"
                  for k, v in r.get("references", {}).items()]
        lines.append("")
    if r.get("notes"):
        lines += ["## Notes (written after the run, from the numbers above)", ""] + [f"- {n}" for n in r["notes"]] + [""]
    if r.get("errors") or r.get("skipped"):
        lines += ["## Errors / skipped", ""] + [f"- {e}" for e in r.get("errors", []) + r.get("skipped", [])] + [""]
    lines.append(f"Run time of the script: {r.get('elapsed_s', 0):.0f} s.")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
