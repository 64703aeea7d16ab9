"""Speed of scoring per video: one full forward per pair (the reference way) against the shared prefix.

One run on one card (issue "Speed: score per video"):

1. builds a random-weight model of the exact Qwen3-VL-8B-Instruct shape from a config (no download),
   bf16, with a locally trained tokenizer (``rankvideo.make_tiny_model.build_tokenizer``; every id is
   far below the 151,936-row vocabulary) and a Qwen3-VL processor (patch 16, temporal patch 2,
   merge 2); the special-token ids of the config are the tokenizer's;
2. makes videos: 20 s mp4 files at 512x256, 24 fps, encoded with PyAV and decoded with
   :func:`rankvideo.video.load_video` (PyAV reader, ``VideoSettings.paper()``: 2 fps, 32 frames,
   128 visual tokens a frame, i.e. 2,048 visual tokens plus 16 timestamps) when PyAV and
   qwen-vl-utils are importable, else synthetic frames of the same shape;
3. measures pairs/s for Q queries per video: (a) ``HFBackend(mode="per_pair")`` with the
   ``reference_inference`` prompt (query before the video), (b) ``HFBackend(mode="shared_prefix")``
   with the default (video-first) prompt, as it is, and with candidate speed-ups applied from this
   script (see VARIANTS); every number is warmed up, synchronised, over several videos;
4. measures the bf16 matmul peak of the card and (b)'s achieved TFLOP/s against it, counting FLOPs
   analytically (:func:`flop_model`, described in the results file);
5. breaks (b)'s time per video into processor, vision encoder, prefix prefill and query suffixes
   (host clock, GPU sync at each boundary, from forward hooks; plus how long the host took to queue
   each phase), profiles the GPU kernels of one video by kind (torch.profiler), and checks that
   (a) and (b) agree: the same pairs scored one full forward each with the default prompt and
   scored against the shared prefix must give the same ``logit_delta`` within bf16 tolerance, and
   to ~1e-5 with the model upcast to float32. Peak memory is recorded per Q.

Usage::

    python benchmarks/score_per_video.py --out DIR [--queries 1,4,8,16,32,64] [--videos N]
    python benchmarks/score_per_video.py --out DIR --tiny       # CPU smoke test, random tiny shape
    python benchmarks/score_per_video.py --report DIR/score_per_video_<card>.json   # rewrite the .md

On the GPU machine PyAV and qwen-vl-utils come as wheels (``pip install --target``, see the device
notes); without them the videos are synthetic frames of the same shape.

Writes ``DIR/score_per_video_<card>.json`` and ``.md``. Nothing in ``rankvideo`` is modified: the
speed-ups are applied to the objects of this process only (monkeypatches), and the results file
says what change to ``rankvideo/backends/hf.py`` each one stands for.
"""

from __future__ import annotations

import argparse
import contextlib
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

from rankvideo import make_tiny_model  # noqa: E402
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
                            chat_template=make_tiny_model.CHAT_TEMPLATE)


def build_model(shape: dict, tokenizer, device: str, dtype, attn: str, seed: int = 0):
    """Random-weight Qwen3-VL of ``shape``, created directly on ``device`` in ``dtype``."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in make_tiny_model.SPECIAL_TOKENS}
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


@contextlib.contextmanager
def _loaded(model, processor):
    """Make HFBackend take an in-memory (model, processor) instead of loading from disk."""
    original = hf_backend.models.load_vlm
    hf_backend.models.load_vlm = lambda *args, **kwargs: (model, processor)
    try:
        yield
    finally:
        hf_backend.models.load_vlm = original


def make_backend(model, processor, variant: str, mode: str, query_batch_size: int = 16):
    with _loaded(model, processor):
        return hf_backend.HFBackend("qwen3-vl-8b-shape-random", prompt_variant=variant, mode=mode,
                                    query_batch_size=query_batch_size)


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


# ----------------------------------------------------------------------------- candidate speed-ups

_ORIGINAL_VISION_ATTN = None
_MQ = None  # transformers.models.qwen3_vl.modeling_qwen3_vl, once a patch is enabled


def _batched_vision_attention(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
    """Qwen3VLVisionAttention.forward with one SDPA call over equal-sized frame groups.

    transformers (non-flash path) splits q/k/v by ``cu_seqlens.tolist()`` (a device sync per layer)
    and runs one attention call per frame group; all groups of one video have the same size, so they
    are one batch ``[groups, heads, n, head_dim]``. ``self._spv_group`` (set by a pre-hook on the
    vision tower from ``grid_thw``) is the group size, or None when sizes differ."""
    n = getattr(self, "_spv_group", None)
    seq = hidden_states.shape[0]
    if not n or seq % n:
        return _ORIGINAL_VISION_ATTN(self, hidden_states, cu_seqlens, position_embeddings=position_embeddings,
                                     max_seqlen=max_seqlen, **kwargs)
    q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = _MQ.apply_rotary_pos_emb_vision(q, k, cos, sin)
    groups = seq // n
    q, k, v = (x.reshape(groups, n, self.num_heads, -1).transpose(1, 2) for x in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scaling)
    return self.proj(out.transpose(1, 2).reshape(seq, -1))


def enable_batched_vision_attention(model) -> callable:
    """Patch the vision attention class and mark each layer with its frame-group size; returns undo."""
    global _ORIGINAL_VISION_ATTN, _MQ
    from transformers.models.qwen3_vl import modeling_qwen3_vl as mq

    _MQ = mq
    if _ORIGINAL_VISION_ATTN is None:
        _ORIGINAL_VISION_ATTN = mq.Qwen3VLVisionAttention.forward
    mq.Qwen3VLVisionAttention.forward = _batched_vision_attention
    visual = model.model.visual
    attns = [block.attn for block in visual.blocks]

    def pre_hook(module, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        sizes = {int(h) * int(w) for _, h, w in grid.tolist()}
        group = sizes.pop() if len(sizes) == 1 else None
        for attn in attns:
            attn._spv_group = group

    handle = visual.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def undo():
        handle.remove()
        mq.Qwen3VLVisionAttention.forward = _ORIGINAL_VISION_ATTN
        for attn in attns:
            attn.__dict__.pop("_spv_group", None)

    return undo


def enable_compiled_vision(model) -> callable:
    """torch.compile each vision block (one graph shared by the 27 blocks); returns undo."""
    blocks = list(model.model.visual.blocks)
    for block in blocks:
        block.forward = torch.compile(block.forward, dynamic=False)

    def undo():
        for block in blocks:
            block.__dict__.pop("forward", None)

    return undo


def enable_gpu_processor(backend) -> callable:
    """Run the video processor (uint8 -> normalised patches) on the GPU: ``device=`` to the processor."""
    def _processor_inputs(texts, video):
        inputs = backend.processor(text=texts, videos=[video.frames] * len(texts),
                                   video_metadata=[video.metadata] * len(texts), do_sample_frames=False,
                                   do_resize=False, padding=True, return_tensors="pt", device=str(backend.device))
        return inputs.to(backend.device)

    backend._processor_inputs = _processor_inputs
    return lambda: backend.__dict__.pop("_processor_inputs", None)


def cpu_pinned_processor(backend):
    """The processor on the CPU with its tensors in pinned memory (for a prefetch thread)."""
    def processor_inputs(texts, video):
        inputs = backend.processor(text=texts, videos=[video.frames] * len(texts),
                                   video_metadata=[video.metadata] * len(texts), do_sample_frames=False,
                                   do_resize=False, padding=True, return_tensors="pt")
        return {k: (v.pin_memory() if torch.is_tensor(v) and torch.cuda.is_available() else v)
                for k, v in inputs.items()}

    return processor_inputs


def prepare_packed(backend, video: LoadedVideo, queries: list[str], processor_inputs=None) -> dict:
    """Host-side work of :func:`run_packed`: prompt text, processor, suffix token ids.

    One query: the whole default prompt (one full forward, no cache). Several: the shared prefix and
    the suffixes' token ids."""
    processor_inputs = processor_inputs or backend._processor_inputs
    if len(queries) == 1:
        return {"inputs": processor_inputs([backend._render(queries[0])], video), "ids": None}
    splits = [backend.split_prompt(q) for q in queries]
    prefix = splits[0][0]
    assert all(p == prefix for p, _ in splits), "video-first prompts must share their prefix"
    tokenizer = backend.processor.tokenizer
    ids = [tokenizer(suffix, add_special_tokens=False)["input_ids"] for _, suffix in splits]
    return {"inputs": processor_inputs([prefix], video), "ids": ids}


def run_packed(backend, prepared: dict, pack: int = 64) -> list[dict]:
    """Score prepared inputs: shared prefix, then the suffixes packed into ONE batch-1 sequence.

    - prefill: vision + system/video prefix (``model.model``), the cache kept; the next text position
      is ``rope_deltas + P`` (the M-RoPE offset the model stored while computing the prefix's
      positions: no second ``get_rope_index`` and no host sync);
    - suffixes: suffix j's tokens get positions ``next_position + 0..S_j-1`` (what the full sequence
      gives them) and a 4-D boolean mask allowing every prefix key plus the keys of their own suffix
      up to themselves; no padding, no copy of the KV cache (the cache grows by the packed tokens
      during the call and is cut back to the prefix afterwards); masks and positions built on the GPU;
    - only the last hidden state of each suffix goes through lm_head.
    One query: a single full forward (no cache, no second call)."""
    device = backend.device
    model = backend.model
    inputs = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in prepared["inputs"].items()}
    if prepared["ids"] is None:
        with torch.inference_mode():
            out = model.model(**inputs, use_cache=False)
            return backend._scores_from_logits(model.lm_head(out.last_hidden_state[:, -1]))
    with torch.inference_mode():
        out = model.model(**inputs, use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values")
    prefix_len = int(inputs["input_ids"].shape[1])
    deltas = getattr(model.model, "rope_deltas", None)
    if deltas is not None:
        next_position = deltas.reshape(-1)[0].to(device) + prefix_len
    else:  # a transformers without rope_deltas: the backend's own way (host sync)
        positions, _ = hf_backend._rope_index(model.model, inputs)
        next_position = int(positions[:, 0, -1].max()) + 1
    lm = model.model.language_model
    embed = model.model.get_input_embeddings()
    all_ids = prepared["ids"]
    scores: list[dict] = []
    for start in range(0, len(all_ids), pack):
        ids = all_ids[start:start + pack]
        host_lengths = [len(i) for i in ids]
        total = sum(host_lengths)
        lengths = torch.tensor(host_lengths, device=device)
        input_ids = torch.tensor([t for i in ids for t in i], device=device)[None]
        segment = torch.repeat_interleave(torch.arange(len(ids), device=device), lengths, output_size=total)
        ends = torch.cumsum(lengths, 0)
        index = torch.arange(total, device=device)
        offset = index - (ends - lengths)[segment]
        own = (segment[:, None] == segment[None, :]) & (index[None, :] <= index[:, None])
        mask = torch.cat([torch.ones(total, prefix_len, dtype=torch.bool, device=device), own], dim=1)[None, None]
        position_ids = (next_position + offset).view(1, 1, -1).expand(3, 1, -1)
        with torch.inference_mode():
            out = lm(inputs_embeds=embed(input_ids), attention_mask=mask, position_ids=position_ids, use_cache=True,
                     **{backend._cache_kw: cache})
            hidden = out.last_hidden_state[0, ends - 1]
            scores += backend._scores_from_logits(model.lm_head(hidden))
        hf_backend._truncate_cache(cache, prefix_len)
    return scores


def score_packed(backend, video: LoadedVideo, queries: list[str]) -> list[dict]:
    return run_packed(backend, prepare_packed(backend, video, queries))


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

        def timed(texts, video):
            self.mark("proc<")
            out = original(texts, video)
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
        if any(k in low for k in ("gemm", "nvjet", "cutlass", "cublas", "sm90_xmma", "splitk")):
            kind = "matmul"
        elif any(k in low for k in ("flash", "fmha", "attention", "sdpa", "efficient")):
            kind = "attention"
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


def timed_prefetch(prepare, run, videos, query_sets, cuda: bool) -> dict:
    """Like :func:`timed_scoring`, with the host-side work of video k+1 (processor, tokenising) done in a
    background thread while the GPU scores video k (what a data-loader thread gives a real job)."""
    from concurrent.futures import ThreadPoolExecutor

    sync()
    per_video = []
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(prepare, videos[0], query_sets[0])
        for i in range(len(videos)):
            t0 = time.perf_counter()
            prepared = future.result()
            if i + 1 < len(videos):
                future = pool.submit(prepare, videos[i + 1], query_sets[i + 1])
            run(prepared)
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

VARIANTS = {
    "stock": "HFBackend shared_prefix as it is (query_batch_size 16: deepcopy + repeat of the KV cache per chunk, "
             "padded suffixes)",
    "visattn": "stock + one batched SDPA call over the equal-sized frame groups in the vision tower (no host sync "
               "per layer)",
    "visattn+packed": "visattn + run_packed(): suffixes packed in one batch-1 sequence with a block mask (no KV "
                      "copies, no padding), positions from rope_deltas (no second rope index, no sync), masks built "
                      "on the GPU, Q = 1 as one full forward",
    "visattn+packed+gpuproc": "visattn+packed + the video processor on the GPU (device= to the processor)",
    "visattn+packed+gpuproc+compile": "visattn+packed+gpuproc + torch.compile of each vision block",
    "visattn+packed+prefetch": "visattn+packed, processor on the CPU in a background thread one video ahead",
    "visattn+packed+prefetch+compile": "visattn+packed+compile, processor on the CPU in a background thread one video "
                                       "ahead (pinned memory), overlapping the GPU work of the previous video",
}


PROFILED = ("stock", "visattn+packed+gpuproc", "visattn+packed+gpuproc+compile")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="output folder (required unless --report)")
    parser.add_argument("--report", help="only rewrite the .md next to this results .json")
    parser.add_argument("--queries", default=None, help="Q values, comma separated (default 1,4,8,16,32,64)")
    parser.add_argument("--videos", type=int, default=None, help="videos per measurement (default 6; tiny 2)")
    parser.add_argument("--tiny", action="store_true", help="random tiny shape (CPU smoke test)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--attn", default="sdpa", help="attn_implementation of the model")
    parser.add_argument("--variants", default=None, help="(b) variants to time (default: all but the prefetch "
                        "one without compile; on CPU: those that need no GPU)")
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
    variants = [v for v in (args.variants or ",".join(v for v in VARIANTS if v != "visattn+packed+prefetch")).split(",")
                if v]
    if not cuda:  # the CPU smoke test: what runs without a GPU
        variants = [v for v in variants if "gpuproc" not in v and "compile" not in v] + ["visattn+packed+prefetch"]
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
        "variants": {v: VARIANTS[v] for v in variants}, "errors": [], "skipped": [],
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
        try:
            import flash_attn  # noqa: F401

            result["flash_attn"] = flash_attn.__version__
        except ImportError:
            result["flash_attn"] = None
        result["sdpa_backends"] = {name: getattr(torch.backends.cuda, fn)() for name, fn in
                                   (("flash", "flash_sdp_enabled"), ("mem_efficient", "mem_efficient_sdp_enabled"),
                                    ("cudnn", "cudnn_sdp_enabled"), ("math", "math_sdp_enabled"))}

    log.info("matmul peak")
    result["peak"] = matmul_peak(device, args.peak_n if cuda else 256)
    log.info("peak %.1f TFLOP/s", result["peak"]["tflops"])
    save()

    t0 = time.perf_counter()
    tokenizer = make_tiny_model.build_tokenizer()
    processor = build_processor(tokenizer)
    model, _ = build_model(shape, tokenizer, device, dtype, args.attn)
    n_params = sum(p.numel() for p in model.parameters())
    result["model"] = {"params": n_params, "vision_params": sum(p.numel() for p in model.model.visual.parameters()),
                       "build_s": time.perf_counter() - t0, "tokenizer_len": len(tokenizer),
                       "weights_gib": n_params * (2 if cuda else 4) / 2 ** 30}
    log.info("model: %.2f B params (%.1f s)", n_params / 1e9, time.perf_counter() - t0)

    workdir = Path(tempfile.mkdtemp(prefix="spv-"))
    videos, video_info = make_videos(n_videos + 1, workdir, tiny)
    result["video"] = video_info
    warm_video, videos = videos[0], videos[1:]
    qmax = max(q_values)
    query_sets = [make_queries(tokenizer, qmax, seed=100 + i, target_tokens=args.query_tokens) for i in range(n_videos)]
    warm_queries = make_queries(tokenizer, qmax, seed=99, target_tokens=args.query_tokens)
    save()

    ref = make_backend(model, processor, "reference_inference", "per_pair")
    shared = make_backend(model, processor, "default", "shared_prefix", query_batch_size=16)
    same_prompt_pairs = make_backend(model, processor, "default", "per_pair")

    # token counts for the FLOP model (from the processor, exactly what the model sees)
    prefix_text, _ = shared.split_prompt(query_sets[0][0])
    prefix_inputs = shared._processor_inputs([prefix_text], videos[0])
    prefix_len = int(prefix_inputs["input_ids"].shape[1])
    grid = tuple(int(x) for x in prefix_inputs["video_grid_thw"][0].tolist())
    pair_len = int(ref._processor_inputs([ref._render(query_sets[0][0])], videos[0])["input_ids"].shape[1])
    suffix_lens = [[len(tokenizer(shared.split_prompt(q)[1], add_special_tokens=False)["input_ids"]) for q in qs]
                   for qs in query_sets]
    query_lens = [len(tokenizer(q, add_special_tokens=False)["input_ids"]) for q in query_sets[0]]
    result["tokens"] = {"prefix": prefix_len, "reference_pair": pair_len, "video_grid_thw": grid,
                        "suffix_mean": sum(map(sum, suffix_lens)) / sum(map(len, suffix_lens)),
                        "query_mean": sum(query_lens) / len(query_lens)}
    del prefix_inputs
    log.info("tokens: %s", result["tokens"])
    save()

    # the processor alone (median of 5, synchronised): CPU as HFBackend runs it, and on the GPU
    def median_ms(fn, reps=5):
        times = []
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(1e3 * (time.perf_counter() - t0))
        return sorted(times)[reps // 2]

    proc_ms = {"cpu_with_h2d": median_ms(lambda: shared._processor_inputs([prefix_text], videos[0])),
               "cpu_pinned_no_h2d": median_ms(lambda: cpu_pinned_processor(shared)([prefix_text], videos[0])),
               "text_only_tokenizer": median_ms(lambda: processor.tokenizer([prefix_text]))}
    if cuda:
        try:
            gpu_backend = make_backend(model, processor, "default", "shared_prefix")
            enable_gpu_processor(gpu_backend)
            proc_ms["gpu"] = median_ms(lambda: gpu_backend._processor_inputs([prefix_text], videos[0]))
        except Exception as error:
            proc_ms["gpu_error"] = f"{type(error).__name__}: {error}"[:300]
    result["processor_ms"] = proc_ms
    log.info("processor: %s", proc_ms)

    def flops_for(q: int) -> dict:
        per_video = [flop_model(shape, grid, prefix_len, lens[:q], pair_len) for lens in suffix_lens]
        return {k: sum(f[k] for f in per_video) / len(per_video) for k in
                ("vision", "prefix", "suffixes", "shared_total", "per_pair_each")}

    result["flops"] = {str(q): flops_for(q) for q in q_values}
    result["flop_detail"] = flop_model(shape, grid, prefix_len, suffix_lens[0][:1], pair_len)

    # ------------------------------------------------------------------ agreement (a) vs (b)
    log.info("agreement")
    check_q = min(8, qmax)
    check_queries = query_sets[0][:check_q]
    baseline = same_prompt_pairs.score_video(videos[0], check_queries)
    agreement = {"queries": check_q, "reference": "HFBackend per_pair, default prompt (one full forward per pair)",
                 "logit_delta_reference": [s["logit_delta"] for s in baseline]}

    def compare(name, scores):
        diffs = [abs(a["logit_delta"] - b["logit_delta"]) for a, b in zip(scores, baseline)]
        agreement[name] = {"max_abs_diff": max(diffs), "logit_delta": [s["logit_delta"] for s in scores]}
        log.info("agreement %s: max |d logit_delta| = %.4g", name, max(diffs))

    compare("stock", shared.score_video(videos[0], check_queries))
    result["agreement"] = agreement
    spread = [s["logit_delta"] for s in baseline]
    agreement["reference_spread"] = max(spread) - min(spread)
    save()

    # ------------------------------------------------------------------ (a) reference per pair
    # "stock": HFBackend per_pair as it is (processor on the CPU for every pair); "gpuproc": the same with
    # the video processor on the GPU (a fairer baseline: the per-pair processor cost is not the model's);
    # "gpuproc+visattn": also the batched vision attention (what (a) would cost with the vision fix).
    result["reference"] = {}
    result["reference_pooled"] = {}
    result["reference_breakdown_ms"] = {}
    ref_plans = [("stock", [q for q in q_values if q <= args.reference_max_q])]
    if cuda:
        ref_plans += [("gpuproc", [q for q in q_values if q <= args.reference_max_q]),
                      ("gpuproc+visattn", [min(8, qmax)])]
    for ref_variant, ref_qs in ref_plans:
        undo_ref = []
        try:
            if "gpuproc" in ref_variant:
                undo_ref.append(enable_gpu_processor(ref))
            if "visattn" in ref_variant:
                undo_ref.append(enable_batched_vision_attention(model))
            ref.score_video(warm_video, warm_queries[:2])
            rows = {}
            for q in ref_qs:
                if over_budget(f"reference {ref_variant} Q={q}"):
                    break
                reset_peak()
                timing = timed_scoring(ref.score_video, videos, [qs[:q] for qs in query_sets], cuda)
                timing["peak_gib"] = memory_peak_gib()
                rows[str(q)] = timing
                log.info("(a) %s Q=%d: %.2f pairs/s", ref_variant, q, timing["pairs_per_s"])
                result["reference"][ref_variant] = rows
                save()
            if rows:
                result["reference_pooled"][ref_variant] = (sum(v["pairs"] for v in rows.values())
                                                          / sum(v["seconds"] for v in rows.values()))
            timer = PhaseTimer(ref, cuda)
            try:
                timer.mark("start")
                ref.score_video(videos[0], query_sets[0][:1])
                timer.mark("end")
                result["reference_breakdown_ms"][ref_variant] = timer.phases()
            finally:
                timer.close()
        except Exception as error:
            result["errors"].append(f"reference {ref_variant}: {type(error).__name__}: {error}"[:2000])
            log.error("reference %s failed:\n%s", ref_variant, traceback.format_exc())
        finally:
            while undo_ref:
                undo_ref.pop()()
        save()
    pooled = result["reference_pooled"]
    # speed-ups are against the faster of the two full (a) baselines (stock or GPU processor)
    ref_rate = max((pooled[k] for k in ("stock", "gpuproc") if k in pooled), default=None)
    result["reference_pairs_per_s_pooled"] = ref_rate
    result["reference_pairs_per_s_stock"] = pooled.get("stock")

    # ------------------------------------------------------------------ (b) variants
    result["shared"] = {}
    result["breakdown"] = {}
    undo: list = []
    packed_backend = make_backend(model, processor, "default", "shared_prefix")
    gpuproc_ok = {"ok": "gpuproc" in pooled or not cuda}

    def apply(variant):
        """(backend, score(video, queries), prefetch (prepare, run) or None) with the variant's patches on."""
        while undo:
            undo.pop()()
        backend = shared if variant == "stock" else packed_backend
        parts = variant.split("+")
        if "gpuproc" in parts and not gpuproc_ok["ok"]:
            raise RuntimeError("the GPU processor failed in (a); variant not run")
        if "visattn" in parts:
            undo.append(enable_batched_vision_attention(model))
        if "gpuproc" in parts:
            undo.append(enable_gpu_processor(backend))
        if "compile" in parts:
            undo.append(enable_compiled_vision(model))
        if "packed" not in parts:
            return backend, backend.score_video, None
        prefetch = None
        if "prefetch" in parts:
            cpu_processor = cpu_pinned_processor(backend)
            prefetch = (lambda video, queries: prepare_packed(backend, video, queries, cpu_processor),
                        lambda prepared: run_packed(backend, prepared))
        return backend, (lambda video, queries: score_packed(backend, video, queries)), prefetch

    for variant in variants:
        if over_budget(f"variant {variant}"):
            continue
        try:
            backend, score, prefetch = apply(variant)
            t0 = time.perf_counter()
            score(warm_video, warm_queries[:q_values[0]])
            score(warm_video, warm_queries[:qmax])
            if prefetch:
                timed_prefetch(*prefetch, [warm_video] * 2, [warm_queries[:4]] * 2, cuda)
            warm_s = time.perf_counter() - t0
            if variant != "stock":
                compare(variant, score(videos[0], check_queries))
            rows = {}
            for q in q_values:
                if over_budget(f"variant {variant} Q={q}"):
                    break
                reset_peak()
                try:
                    if prefetch:
                        timing = timed_prefetch(*prefetch, videos, [qs[:q] for qs in query_sets], cuda)
                    else:
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
                if ref_rate:
                    timing["speedup_vs_a"] = timing["pairs_per_s"] / ref_rate
                if pooled.get("stock"):
                    timing["speedup_vs_a_stock"] = timing["pairs_per_s"] / pooled["stock"]
                rows[str(q)] = timing
                log.info("(b) %s Q=%d: %.1f pairs/s, %.0f ms/video, %.0f TFLOP/s (%.0f%%), peak %.1f GiB", variant, q,
                         timing["pairs_per_s"], timing["ms_per_video_mean"], timing["tflops"], timing["pct_peak"],
                         timing["peak_gib"] or 0)
                result["shared"][variant] = dict(rows, warmup_s=warm_s)
                save()
            # breakdown at Q = 8 and 16 (or the largest Q run); not for prefetch (its processor runs elsewhere)
            if prefetch:
                continue
            result["breakdown"][variant] = {}
            for q in sorted({min(8, qmax), min(16, qmax)}):
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
                mean = {k: sum(p[k] for p in phases) / len(phases) for k in phases[0]}
                result["breakdown"][variant][str(q)] = mean
            if cuda and variant in PROFILED:
                result.setdefault("profile", {})[variant] = {
                    str(q): kernel_profile(score, videos[0], query_sets[0][:q])
                    for q in sorted({min(4, qmax), min(16, qmax)})}
            save()
        except Exception as error:  # keep the other variants' numbers
            result["errors"].append(f"{variant}: {type(error).__name__}: {error}"[:2000])
            log.error("variant %s failed:\n%s", variant, traceback.format_exc())
            save()
    while undo:
        undo.pop()()

    # stock HFBackend at the largest Q with one chunk (memory of the KV repeats), if it fits
    if cuda and qmax > 16 and "stock" in variants and not over_budget("stock one-chunk"):
        try:
            shared.query_batch_size = qmax
            reset_peak()
            timing = timed_scoring(shared.score_video, videos[:2], [qs[:qmax] for qs in query_sets[:2]], cuda)
            timing["peak_gib"] = memory_peak_gib()
            result["stock_one_chunk"] = {str(qmax): timing}
        except torch.OutOfMemoryError as error:
            result["stock_one_chunk"] = {str(qmax): {"oom": str(error)[:200]}}
        finally:
            shared.query_batch_size = 16
            gc.collect()
            reset_peak()
    save()

    # agreement in float32: the same model (bf16 weights, exactly representable) upcast; differences here
    # are the algorithm's, not bf16 rounding
    if dtype != torch.float32 and not over_budget("fp32 agreement"):
        try:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            model.float()
            base32 = same_prompt_pairs.score_video(videos[0], check_queries)
            fp32 = {"queries": check_q, "logit_delta_reference": [x["logit_delta"] for x in base32]}

            def compare32(name, scores):
                fp32[name] = max(abs(a["logit_delta"] - b["logit_delta"]) for a, b in zip(scores, base32))
                log.info("fp32 agreement %s: %.3g", name, fp32[name])

            compare32("stock", shared.score_video(videos[0], check_queries))
            undo_vis = enable_batched_vision_attention(model)
            try:
                compare32("visattn+packed", score_packed(packed_backend, videos[0], check_queries))
            finally:
                undo_vis()
            result["agreement_fp32"] = fp32
        except Exception as error:
            result["errors"].append(f"fp32 agreement: {type(error).__name__}: {error}"[:2000])
            log.error("fp32 agreement failed:\n%s", traceback.format_exc())
        save()
    log.info("done in %.0f s: %s", time.perf_counter() - t_start, json_path)
    print(Path(out_dir / f"score_per_video_{card_slug}.md").read_text())
    return 0


# ----------------------------------------------------------------------------- report


def _fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def _targets(r: dict) -> list[str]:
    """The issue's targets, checked for every (b) variant."""
    shared, pooled = r.get("shared", {}), r.get("reference_pooled", {})
    if not shared or not pooled:
        return []
    a_fast = max(v for k, v in pooled.items() if k in ("stock", "gpuproc"))
    a_stock = pooled.get("stock")
    variants = list(shared)

    def rate(v, q):
        return shared.get(v, {}).get(str(q), {}).get("pairs_per_s")

    lines = ["## Targets of the issue", "",
             f"(b) / (a) against the faster (a) ({a_fast:.2f} pairs/s); in brackets against (a) stock "
             f"({_fmt(a_stock, '.2f')} pairs/s). A target is met when the first number reaches it.", "",
             "| target |" + "".join(f" `{v}` |" for v in variants), "|---|" + "---|" * len(variants)]
    for q, goal in ((1, 1.0), (8, 7.0), (16, 12.0)):
        cells = []
        for v in variants:
            x = rate(v, q)
            if not x:
                cells.append("-")
                continue
            mark = "**met**" if x / a_fast >= goal else "no"
            cells.append(f"{x / a_fast:.1f}x" + (f" [{x / a_stock:.1f}x]" if a_stock else "") + f" {mark}")
        lines.append(f"| >= {goal:g}x at Q = {q} | " + " | ".join(cells) + " |")
    cells = []
    for v in variants:
        pct = max((t["pct_peak"] for t in shared[v].values() if isinstance(t, dict) and "pct_peak" in t), default=None)
        cells.append("-" if pct is None else f"{pct:.0f}% {'**met**' if pct >= 50 else 'no'}")
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
             f"- produced by `benchmarks/score_per_video.py`; {r['videos_per_measurement']} videos per measurement "
             f"after a warm-up video; every call synchronised; pairs/s = pairs / wall time over the videos "
             f"(processor + model, video decoding excluded: it is done once per video in both ways)"]
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
                     f"{_fmt(v.get('decode_s_median') and 1e3 * v['decode_s_median'], '.0f')} ms (CPU, median)")
    if r.get("processor_ms"):
        lines.append("- processor alone for one prefix (median of 5, ms): " + ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in r["processor_ms"].items()))
    if "tokens" in r:
        t = r["tokens"]
        lines.append(f"- tokens: shared prefix (system + video + timestamps) {t['prefix']}; suffix mean "
                     f"{t['suffix_mean']:.1f} (query text {t['query_mean']:.1f}); one reference prompt "
                     f"(query first) {t['reference_pair']}")
    lines.append("")
    ref = r.get("reference", {})
    pooled = r.get("reference_pooled", {})
    shared = r.get("shared", {})
    variants = list(shared)
    lines += _targets(r)
    if ref or shared:
        lines += ["## Pairs per second", "",
                  "(a) = `HFBackend(mode=\"per_pair\")`, `reference_inference` prompt (query before the video): one "
                  "vision pass + one full forward per pair; `stock` runs the processor on the CPU for every pair, "
                  "`gpuproc` runs it on the GPU. (b) = shared prefix, default prompt (variants below). x(a) = (b) / "
                  "the faster (a), each (a) pooled over all its runs ("
                  + ", ".join(f"{k} {v:.2f}" for k, v in pooled.items()) + " pairs/s). TFLOP/s and % of peak "
                  "(next table) are (b)'s whole scoring (vision + prefill + suffixes) per video.", ""]
        ref_cols = [k for k in ("stock", "gpuproc") if k in ref]
        header = "| Q |" + "".join(f" (a) {k} |" for k in ref_cols) + "".join(f" (b) {v} | x(a) |" for v in variants)
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
                    row += f" {_fmt(t.get('pairs_per_s'))} | {_fmt(t.get('speedup_vs_a'))} |"
            lines.append(row)
        lines += ["", "(a) in parentheses: not timed at that Q; (a) costs the same per pair at every Q, so its pooled "
                  "rate stands in."]
        if "gpuproc+visattn" in pooled:
            lines.append(f"(a) with the GPU processor and the batched vision attention too: "
                         f"{pooled['gpuproc+visattn']:.2f} pairs/s.")
        lines.append("")
        lines += ["## Achieved TFLOP/s of (b) and peak memory", "",
                  "| variant | Q | ms/video (mean) | ms/video (median) | TFLOP/video | TFLOP/s | % of peak | peak GiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for v in variants:
            for q in r["queries"]:
                t = shared[v].get(str(q))
                if not t or "oom" in t:
                    continue
                fl = r["flops"][str(q)]["shared_total"] / 1e12
                lines.append(f"| {v} | {q} | {t['ms_per_video_mean']:.1f} | {t['ms_per_video_median']:.1f} | {fl:.1f} | "
                             f"{t['tflops']:.0f} | "
                             f"{t['pct_peak']:.0f}% | {_fmt(t.get('peak_gib'))} |")
        if ref:
            lines += ["", "| (a) variant | Q | ms/pair | TFLOP/s | peak GiB |", "|---|---|---|---|---|"]
            for k, rows in ref.items():
                for q, t in rows.items():
                    fl = r["flops"][q]["per_pair_each"]
                    lines.append(f"| {k} | {q} | {1e3 / t['pairs_per_s']:.1f} | {fl * t['pairs_per_s'] / 1e12:.0f} | "
                                 f"{_fmt(t.get('peak_gib'))} |")
        if r.get("stock_one_chunk"):
            for q, t in r["stock_one_chunk"].items():
                lines.append("")
                lines.append(f"stock HFBackend with query_batch_size={q} (one chunk, {q} copies of the KV cache): "
                             + ("OOM" if "oom" in t else f"{t['pairs_per_s']:.1f} pairs/s, peak {t['peak_gib']:.1f} GiB"))
        lines.append("")
    if r.get("breakdown"):
        lines += ["## Time per video of (b), by phase (ms, host clock with a GPU sync at each phase boundary, mean "
                  "over the videos)", "",
                  "processor = `_processor_inputs` (tokenise, video -> patches, host-to-device); vision = vision "
                  "tower; prefill = LLM over system + video; suffix LLM = the LLM calls on the query suffixes; other = "
                  "the rest (prompt rendering, rope index, KV-cache copies, masks, lm_head on Q rows, scores to host). "
                  "In brackets: host time until the phase's last kernel was queued; close to the phase time = the "
                  "phase waits on Python/launches, not on the GPU. The syncs make the total a little larger than "
                  "the unsynchronised time per video above.", "",
                  "| variant | Q | processor | vision [queued] | prefill [queued] | suffix LLM [queued] | other | total |",
                  "|---|---|---|---|---|---|---|---|"]
        for v, by_q in r["breakdown"].items():
            for q, b in by_q.items():
                lines.append(f"| {v} | {q} | {b['processor']:.1f} | {b['vision']:.1f} [{b.get('vision_launch', 0):.0f}] | "
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
                      f"{f['per_pair_each'] / 1e12:.2f} T."]
            for v, by_q in r["breakdown"].items():
                b = by_q[max(by_q, key=int)]
                vis = f["vision"] / (b["vision"] / 1e3) / 1e12 if b["vision"] else 0
                pre = f["prefix"] / (b["prefill"] / 1e3) / 1e12 if b["prefill"] else 0
                lines.append(f"- {v}: vision at {vis:.0f} TFLOP/s ({100 * vis / pk:.0f}% of peak), prefill at "
                             f"{pre:.0f} TFLOP/s ({100 * pre / pk:.0f}%)")
        lines.append("")
    if r.get("profile"):
        lines += ["## GPU kernel time of one video (torch.profiler, kernel durations)", "",
                  "| variant | Q | wall under profiler ms | kernel ms | kernels | matmul | attention | memcpy | other |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v, by_q in r["profile"].items():
            for q, p in by_q.items():
                k = list(p["by_kind_ms"].values())
                lines.append(f"| {v} | {q} | {p['wall_ms_under_profiler']:.0f} | {p['kernel_ms']:.1f} | {p['kernels']} | "
                             + " | ".join(f"{x:.1f}" for x in k) + " |")
        for v, by_q in r["profile"].items():
            q = max(by_q, key=int)
            lines += ["", f"Top kernels, {v}, Q = {q}:", "", "| kernel | kind | calls | ms |", "|---|---|---|---|"]
            lines += [f"| `{t['name']}` | {t['kind']} | {t['calls']} | {t['ms']:.1f} |" for t in by_q[q]["top"]]
        lines.append("")
    if "agreement" in r:
        a = r["agreement"]
        lines += ["## Agreement", "",
                  f"Same {a['queries']} pairs (video 1), logit_delta of each way against {a['reference']}; spread of "
                  f"the reference values {a['reference_spread']:.3f}:", ""]
        for k, v in a.items():
            if isinstance(v, dict) and "max_abs_diff" in v:
                lines.append(f"- {k}: max |delta logit_delta| = {v['max_abs_diff']:.4f}")
        if r.get("agreement_fp32"):
            f = r["agreement_fp32"]
            lines += ["", "The same check with the model upcast to float32 (TF32 off), where differences are the "
                      "algorithm's rather than bf16 rounding:", ""]
            lines += [f"- {k}: max |delta logit_delta| = {v:.2e}" for k, v in f.items() if isinstance(v, float)]
        lines.append("")
    lines += ["## How FLOPs are counted", "",
              "Analytic, per video, multiply-add = 2 FLOPs: linear layers 2 x weights x tokens through them (LLM: "
              "q/k/v/o + gate/up/down = %s FLOPs per token over all layers; vision: patch embedding + all blocks of "
              "qkv/proj/fc1/fc2, and the merger + 3 deepstack mergers on the merged tokens); attention 4 x (heads x "
              "head_dim) x layers per (query, key) pair the mask allows: causal prefix P(P+1)/2 pairs, each suffix of "
              "S tokens S*P + S(S+1)/2, vision: frame groups of n patches, n^2 pairs each; lm_head 2 x hidden x vocab per "
              "scored row only. Padding, masked-out pairs that a kernel computes anyway, norms, rotary, activations "
              "and softmax are not counted, so TFLOP/s is useful work." % _fmt(
                  r.get("flop_detail", {}).get("llm_linear_per_token"), ".3g"), ""]
    if r.get("variants"):
        lines += ["## Variants of (b)", ""] + [f"- `{k}`: {v}" for k, v in r["variants"].items()] + [""]
    if r.get("errors") or r.get("skipped"):
        lines += ["## Errors / skipped", ""] + [f"- {e}" for e in r.get("errors", []) + r.get("skipped", [])] + [""]
    lines.append(f"Run time of the script: {r.get('elapsed_s', 0):.0f} s.")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
