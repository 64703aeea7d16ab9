"""The transformers backend: score per video against a shared prefix.

For video-first prompts (the default), one video costs one vision-encoder pass and one LLM pass over
``system + video`` followed by all of the video's query suffixes, packed without padding into the same
batch-1 sequence with a block mask (prefix causal; each suffix sees the prefix and itself) and the M-RoPE
positions each suffix has in its own full prompt. Queries beyond ``query_batch_size`` are scored in
further packed chunks against the prefix's KV cache (no copy of the cache). A single query is one full
forward. Several videos can share one such pass (:meth:`HFBackend.launch_many`, ``video_batch``). Only the
hidden state at each answer position is projected to the vocabulary (one row per query, never the whole
sequence). Query-first prompts (``query_first``, ``reference_inference``) and ``mode="per_pair"``
run one full forward per pair, the reference's way; all paths give the same scores
(tests/test_reranker.py). :class:`HFBackend`'s speed options are documented there.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import sys
import types
from dataclasses import dataclass, field, replace
from typing import Sequence

from rankvideo import models, prompts
from rankvideo.config import defaults
from rankvideo.backends import PendingScores, scores_of
from rankvideo.video import LoadedVideo

log = logging.getLogger(__name__)

VISION_END = "<|vision_end|>"

#: the most tokens (prefixes and suffixes) that videos batched into one pass may have together
#: (:meth:`HFBackend.fits`); about four videos of 32 frames at 128 tokens each and their queries
BATCH_TOKENS = 16384


def default_video_batch(device_type: str) -> int:
    """Videos scored in one pass by default (``HFBackend(video_batch=None)``): on a GPU several, which
    saves the host most of a video's kernel launches; on the CPU one."""
    return 4 if device_type == "cuda" else 1


@dataclass
class PreparedVideo:
    """One video's scoring inputs, made by :meth:`HFBackend.prepare` (host side) for :meth:`HFBackend.launch`.

    ``host`` is None for the modes that score in :meth:`HFBackend.launch` from ``video`` and ``queries``;
    else the tensors of the prefix and first chunk of suffixes (``chunks``: the further chunks'
    packing; in pinned memory once :meth:`HFBackend.adopt` has run; ``video.frames`` is None by then), with ``grid`` (video_grid_thw, on the CPU), ``prefix_len`` and ``next_position`` (the
    first M-RoPE position after the video)."""

    video: LoadedVideo
    queries: list
    description: str | None = None
    host: dict | None = None
    grid: object = None
    prefix_len: int = 0
    next_position: int = 0
    chunks: list = field(default_factory=list)


class HFBackend:
    """Qwen3-VL reranker on transformers.

    ``answer_tokens`` (``variants`` | ``single``): the yes/no ids whose log-probabilities a score
    sums (:data:`rankvideo.prompts.ANSWER_TOKENS`).

    Speed options (each can be switched off, e.g. to time against the stock code paths in
    ``benchmarks/score_per_video.py``; none changes a score beyond float rounding):

    - ``suffixes``: ``"merged"`` (default) runs the shared prefix and the first ``query_batch_size``
      query suffixes in ONE forward, with a block mask (prefix causal; each suffix sees the prefix and
      itself) and the M-RoPE positions each suffix has in its own full prompt; further chunks of
      suffixes run against the prefix's KV cache. ``"cached"``: prefill the prefix, then every chunk
      against the cache (a second, short and launch-bound LLM call per chunk).
    - ``vision_attention``: ``"batched"`` (default): one attention call over the equal-sized frame
      groups of a video in each vision layer; ``"transformers"``: transformers' own loop.
    - ``processor_device``: where the video processor turns uint8 frames into patches. Default: the
      model's device when it is a GPU (7 ms instead of 30 ms a video), except in :meth:`prepare`: there
      a video already resized is processed on the CPU (prepare runs in a rerank job's decode threads or
      processes), and one still to be resized is resized and processed on the GPU (``resize_on_device``,
      off when ``processor_device`` is ``"cpu"``).
    - ``cudnn_attention``: cuDNN's attention kernels (PyTorch's first choice on Hopper) build a new
      plan for every new shape/stride of a call, and a shared-prefix pass brings new ones with every
      video (60-100 ms per video lost, measured on an H200). Default (None): cuDNN only for single full
      prompts (one query, ``per_pair``), whose timings showed no such cost; scoring several queries
      against a shared prefix runs under ``sdpa_kernel([FLASH_ATTENTION, EFFICIENT_ATTENTION, MATH])``
      (on a GPU the lean paths' suffix rows take flash calls, see :func:`_use_split_attention`; the
      masked SDPA calls left are the KV-cache chunks'). True: PyTorch's own choice
      everywhere; False: no cuDNN attention at all.
    - ``compile``: ``torch.compile`` the vision blocks and the LLM decoder layers (the layers only for
      calls without a KV cache: full prompts and merged prefix+suffixes), which fuses their elementwise
      work (RMSNorm, rotary, SiLU*mul, residual adds). Default (None): on for CUDA, off on the CPU.
      The first videos of each new shape pay the compilation (tens of seconds); if compiling fails the
      backend warns once and runs eagerly.
    - ``video_batch``: videos scored in one pass at most (:meth:`launch_many`; default
      :func:`default_video_batch`: 4 on a GPU, 1 elsewhere); a rerank job hands the backend consecutive
      videos in groups that :meth:`fits` allows.
    - ``fp8`` (off by default): the linear layers of the LLM and the vision tower in float8 e4m3 with
      per-channel weight and per-token activation scales (:mod:`rankvideo.backends.fp8`); scores move
      by a little (see docs/reranking.md for the agreement measured against bf16).
    """

    name = "hf"

    def __init__(self, model: str, *, cache_dir: str | None = None, device: str | None = None,
                 dtype: str | None = None, prompt_variant: str = "default", mode: str = "shared_prefix",
                 query_batch_size: int | None = None, local_files_only: bool | None = None, trust_remote_code: bool = False,
                 allow_pickle_weights: bool = False, attn_implementation: str | None = None,
                 suffixes: str = "merged", vision_attention: str = "batched", processor_device: str | None = None,
                 compile: bool | None = None, cudnn_attention: bool | None = None, answer_tokens: str = "variants",
                 fp8: bool = False, video_batch: int | None = None):
        options = models.LoadOptions(cache_dir=cache_dir, local_files_only=local_files_only,
                                     trust_remote_code=trust_remote_code, use_safetensors=not allow_pickle_weights)
        vlm, processor = models.load_vlm(model, options, device=device, dtype=dtype,
                                         attn_implementation=attn_implementation)
        self._setup(vlm, processor, models.model_name(model), prompt_variant=prompt_variant, mode=mode,
                    query_batch_size=query_batch_size, suffixes=suffixes, vision_attention=vision_attention,
                    processor_device=processor_device, compile=compile, cudnn_attention=cudnn_attention,
                    answer_tokens=answer_tokens, fp8=fp8, video_batch=video_batch)

    @classmethod
    def from_model(cls, model, processor, model_name: str = "model", **options) -> "HFBackend":
        """A backend around an already loaded (model, processor); ``options`` as for the constructor."""
        self = cls.__new__(cls)
        self._setup(model, processor, model_name, **options)
        return self

    def _setup(self, model, processor, model_name: str, *, prompt_variant: str = "default",
               mode: str = "shared_prefix", query_batch_size: int | None = None, suffixes: str = "merged",
               vision_attention: str = "batched", processor_device: str | None = None,
               compile: bool | None = None, cudnn_attention: bool | None = None,
               answer_tokens: str = "variants", fp8: bool = False, video_batch: int | None = None) -> None:
        import torch

        if mode not in ("shared_prefix", "per_pair"):
            raise ValueError(f"unknown scoring mode {mode!r}; use shared_prefix or per_pair")
        if query_batch_size is None:  # the config schema's default, the one place it is set

            query_batch_size = defaults("rerank")["query_batch_size"]
        if suffixes not in ("merged", "cached"):
            raise ValueError(f"unknown suffixes {suffixes!r}; use merged or cached")
        if vision_attention not in ("batched", "transformers"):
            raise ValueError(f"unknown vision_attention {vision_attention!r}; use batched or transformers")
        if query_batch_size < 1:
            raise ValueError("query_batch_size must be at least 1")
        if video_batch is not None and video_batch < 1:
            raise ValueError("video_batch must be at least 1")
        self.model, self.processor = model, processor
        self.model_name = model_name
        self.device = self.model.device
        self.prompt = prompts.rerank_prompt(prompt_variant)
        self.mode = mode if self.prompt.video_first else "per_pair"
        self.query_batch_size = query_batch_size
        self.suffixes = suffixes
        self.vision_attention = vision_attention
        cuda = self.device.type == "cuda"
        self.processor_device = processor_device
        #: a rerank job hands this backend videos still to be resized (load_video(resize=False)), resized
        #: and processed on the GPU in :meth:`prepare` (resizing is most of a decode's CPU time)
        self.resize_on_device = cuda and processor_device != "cpu"
        self.compile = cuda if compile is None else bool(compile)
        #: videos scored in one pass at most (:meth:`launch_many`); default 4 on a GPU, 1 elsewhere
        self.video_batch = default_video_batch(self.device.type) if video_batch is None else int(video_batch)
        self.cudnn_attention = cudnn_attention
        tokenizer = self.processor.tokenizer
        yes, no = prompts.answer_token_ids(tokenizer, answer_tokens)
        self.yes_ids = torch.tensor(yes, device=self.device)
        self.no_ids = torch.tensor(no, device=self.device)
        self._cache_kw = _cache_keyword(self.model.model.language_model.forward)
        self._suffix_template: tuple[tuple[str, str | None], str, str] | None = None  # ((prefix, description), suffix, marker)
        if fp8:
            from rankvideo.backends.fp8 import quantize_linears

            log.info("fp8: %d linear layers quantised to float8 e4m3", quantize_linears(self.model))
        _batch_vision_attention(self.model)
        self._lean = _LeanInputs.for_model(self.model)
        self._pixel_dtype = self.model.model.visual.dtype  # what the pixels are cast to before they go up
        self._split_attention = _use_split_attention(self.model)
        if self.compile:
            _install_compiled(self.model)
        self._activate()

    def compile_stats(self) -> dict:
        """torch.compile's work in this process and the GPU's peak memory (:func:`compile_stats`)."""
        return compile_stats()

    def _kernels(self, masked: bool = False):
        """The attention kernels a call may use (see ``cudnn_attention``); ``masked``: packed suffixes."""
        import contextlib

        if self.device.type != "cuda" or self.cudnn_attention or (self.cudnn_attention is None and not masked):
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def _activate(self) -> None:
        """Apply this backend's switches to the model (several backends may share one model)."""
        self.model._rankvideo_batched_vision = self.vision_attention == "batched"
        state = getattr(self.model, "_rankvideo_compile", None)
        if state is not None:
            state.enabled = self.compile and not state.failed

    # ------------------------------------------------------------------ inputs

    def _processor_inputs(self, texts: list[str], video: LoadedVideo, to_device: bool = True, device: str | None = None,
                          padding: bool = True):
        """The processor's output on the model's device (``to_device=False``: the pixels on ``device``,
        default ``processor_device`` or else the model's device when it is a GPU, the text tensors as the
        processor left them)."""
        device = device or self.processor_device or (str(self.device) if self.device.type == "cuda" else "cpu")
        on_device = {"device": device} if device != "cpu" else {}
        inputs = self.processor(text=texts, videos=[video.frames] * len(texts), video_metadata=[video.metadata] * len(texts),
                                do_sample_frames=False, do_resize=False, padding=padding, return_tensors="pt", **on_device)
        return inputs.to(self.device) if to_device else inputs

    def _render(self, query: str, description: str | None = None) -> str:
        return prompts.render_rerank(self.processor, query, self.prompt.name, description)

    def _answer_logprobs(self, logits):
        """[n, 2] float32 (log P(yes), log P(no)) on the device, from [n, vocab] logits."""
        import torch

        logp = torch.log_softmax(logits.float(), dim=-1)
        return torch.stack([torch.logsumexp(logp[:, self.yes_ids], dim=-1), torch.logsumexp(logp[:, self.no_ids], dim=-1)], -1)

    def _scores_from_logits(self, logits) -> list[dict]:
        return scores_of(self._answer_logprobs(logits))

    # ------------------------------------------------------------------ scoring

    def score_video(self, video: LoadedVideo, queries: Sequence[str], description: str | None = None) -> list[dict]:
        return self.launch(self.prepare(video, queries, description)).result()

    def _score_video_now(self, video: LoadedVideo, queries: Sequence[str], description: str | None = None) -> list[dict]:
        """Scores of the modes without a lean path (see :meth:`prepare`), computed before returning."""
        if not queries:
            return []
        video = video.resized()
        self._activate()
        if self.mode == "per_pair" or len(queries) == 1:  # one query: one full forward is cheapest
            with self._kernels():
                return [score for query in queries for score in self._score_pair(video, query, description)]
        with self._kernels(masked=True):
            return self._score_shared_prefix(video, list(queries), description)

    def _score_pair(self, video: LoadedVideo, query: str, description: str | None = None) -> list[dict]:
        import torch

        inputs = self._processor_inputs([self._render(query, description)], video)
        with torch.inference_mode():
            out = self.model.model(**inputs, use_cache=False)
            hidden = out.last_hidden_state[:, -1]
            return self._scores_from_logits(self.model.lm_head(hidden))

    def split_prompt(self, query: str, description: str | None = None) -> tuple[str, str]:
        """(system + video prefix, query suffix) of a video-first prompt, split after the video (the
        description, when given, opens the suffix)."""
        text = self._render(query, description)
        cut = text.rindex(VISION_END) + len(VISION_END)
        return text[:cut], text[cut:]

    def split_prompts(self, queries: Sequence[str], description: str | None = None) -> tuple[str, list[str]]:
        """(shared prefix, suffixes) of several queries' prompts (one video, one description).

        The chat template is rendered once per (prefix, description) with a marker in place of the
        query and the suffixes are filled in from it; the first query is also rendered in full and must
        give the same text (else every query is rendered, as :meth:`split_prompt` does)."""
        prefix, first = self.split_prompt(queries[0], description)
        cached = self._suffix_template  # read once: decode threads call this too
        if cached is None or cached[0] != (prefix, description):
            marker = "\u2063RANKVIDEO-QUERY\u2063"
            marker_prefix, marker_suffix = self.split_prompt(marker, description)
            ok = marker_prefix == prefix and marker_suffix.count(marker) == 1
            cached = self._suffix_template = ((prefix, description), marker_suffix if ok else "", marker)
        _, template, marker = cached
        if template and template.replace(marker, queries[0]) == first:
            return prefix, [first] + [template.replace(marker, q) for q in queries[1:]]
        splits = [self.split_prompt(q, description) for q in queries]
        if any(p != prefix for p, _ in splits):
            raise AssertionError("video-first prompts must share their prefix")
        return prefix, [s for _, s in splits]

    def prefill(self, video: LoadedVideo, prefix: str):
        """Vision encoder + prefill of the shared prefix: (cache, next text position, prefix length).

        The next position is a 0-d tensor on the device (no host sync): ``rope_deltas + P``, the M-RoPE
        offset the model stored while computing the prefix's positions."""
        import torch

        inputs = self._processor_inputs([prefix], video)
        with torch.inference_mode():
            out = self.model.model(**inputs, use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values")
        prefix_len = int(inputs["input_ids"].shape[1])
        deltas = getattr(self.model.model, "rope_deltas", None)
        if deltas is not None:
            next_position = deltas.reshape(-1)[0] + prefix_len
        else:
            positions, _ = _rope_index(self.model.model, inputs)
            # text after the video continues from here in all three M-RoPE axes
            next_position = int(positions[:, 0, -1].max()) + 1
        return cache, next_position, prefix_len

    def _score_shared_prefix(self, video: LoadedVideo, queries: list[str], description: str | None = None) -> list[dict]:
        """``suffixes="cached"``: the video's prefix alone, then every chunk of packed suffixes against its
        cache (the merged way, prefix and first chunk in one forward, is :meth:`prepare` and :meth:`launch`).

        A chunk's suffixes are packed without padding into one batch-1 sequence: suffix j gets the
        positions ``next_position + 0..S_j-1`` (those of its own full prompt) and a boolean mask (the
        prefix plus its own suffix up to itself); the cache grows by the packed tokens during a call and
        is cut back to the prefix after it. Only the last position of each suffix goes through lm_head."""
        prefix, suffixes = self.split_prompts(queries, description)
        ids = self.processor.tokenizer(suffixes, add_special_tokens=False)["input_ids"]
        cache, next_position, prefix_len = self.prefill(video, prefix)
        scores: list[dict] = []
        for i in range(0, len(ids), self.query_batch_size):
            scores += self._score_chunk(ids[i:i + self.query_batch_size], cache, next_position, prefix_len)
            _truncate_cache(cache, prefix_len)
        return scores

    def _to_device(self, tensor):
        """A host tensor to the device without a host sync (pinned memory, non-blocking)."""
        if self.device.type != "cuda" or tensor.device.type != "cpu":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _packing(self, chunk: list[list[int]], offset: int):
        """Host-side layout of packed suffixes: ids, segment of each token, end index of each suffix
        (``offset`` added), position of each token within its suffix."""
        import torch

        lengths = torch.tensor([len(i) for i in chunk])
        segment = torch.repeat_interleave(torch.arange(len(chunk)), lengths)
        ends = torch.cumsum(lengths, 0)
        within = torch.arange(int(ends[-1])) - (ends - lengths)[segment]
        ids = torch.tensor([t for i in chunk for t in i])
        return ids, segment, ends - 1 + offset, within

    def _score_chunk(self, chunk: list[list[int]], cache, next_position, prefix_len: int) -> list[dict]:
        """Score one chunk of packed suffixes against the prefix's cache."""
        import torch

        with torch.inference_mode(), self._kernels(masked=True):
            return scores_of(self._chunk_logprobs(self._packing(chunk, 0), cache, next_position, prefix_len))

    def _chunk_logprobs(self, packed, cache, next_position, prefix_len: int):
        """(yes, no) log-probabilities of one chunk of packed suffixes (:meth:`_packing`) against the
        prefix's cache; the cache grows by the chunk (the caller cuts it back)."""
        import torch

        device = self.device
        ids, segment, rows, within = (self._to_device(t) for t in packed)
        total = int(ids.shape[0])
        index = torch.arange(total, device=device)
        own = (segment[:, None] == segment[None, :]) & (index[None, :] <= index[:, None])
        mask = torch.cat([torch.ones(total, prefix_len, dtype=torch.bool, device=device), own], dim=1)[None, None]
        position_ids = (next_position + within).view(1, 1, -1).expand(3, 1, -1)
        embeds = self.model.model.get_input_embeddings()(ids[None])
        out = self.model.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                              use_cache=True, **{self._cache_kw: cache})
        return self._answer_logprobs(self.model.lm_head(out.last_hidden_state[0, rows]))

    # ------------------------------------------------------------------ pipelined scoring

    def prepare(self, video: LoadedVideo, queries: Sequence[str], description: str | None = None) -> "PreparedVideo":
        """The host-side work of scoring one video, done ahead of :meth:`launch` (and safe to run in a
        decode thread while the GPU scores the previous video): :meth:`prepare_host`, then
        :meth:`adopt`. A video still to be resized (``LoadedVideo.resize_to``) is resized and processed
        on the GPU when ``resize_on_device``, else on the CPU."""
        defer = self.resize_on_device and video.resize_to is not None
        return self.adopt(self.prepare_host(video, queries, description, defer_pixels=defer))

    def prepare_host(self, video: LoadedVideo, queries: Sequence[str], description: str | None = None,
                     defer_pixels: bool = False) -> "PreparedVideo":
        """The CPU part of :meth:`prepare`, which needs no weights (:meth:`host_side` runs it in a decode
        process): renders and tokenises the prompts, runs the processor, computes the M-RoPE positions, the
        packing of the suffixes and what the vision tower would derive from ``video_grid_thw`` (attention
        lengths, rotary and interpolated position tables). ``defer_pixels`` (a video still to be resized):
        the text side only, from the frames' count and target size (:class:`_OutlineVideos`); the frames
        stay in ``video`` for :meth:`adopt` to resize and process on the device. Modes without a lean path
        (``per_pair``, query-first prompts, ``suffixes="cached"``, models without transformers'
        precomputed vision inputs) keep the arguments and score in :meth:`launch`."""
        import torch

        queries = list(queries)
        prepared = PreparedVideo(video=video, queries=queries, description=description)
        if not queries or self.mode == "per_pair" or self.suffixes != "merged" or self._lean is None:
            return prepared
        prefix, suffixes = self.split_prompts(queries, description)
        ids = self.processor.tokenizer(suffixes, add_special_tokens=False)["input_ids"]
        chunks = [ids[i:i + self.query_batch_size] for i in range(0, len(ids), self.query_batch_size)]
        if defer_pixels:
            inputs = _OutlineVideos.text_inputs(self.processor, prefix, video)
        else:
            video = video.resized()
            # one text, no padding: the fast tokenizer's padding state then never changes, so the decode threads
            # that call this at once never mutate it under each other ("Already borrowed")
            inputs = self._processor_inputs([prefix], video, to_device=False, padding=False, device="cpu")
        prefix_ids = inputs["input_ids"]
        prefix_len = int(prefix_ids.shape[1])
        positions, _ = _rope_index(self.model.model, inputs)
        next_position = int(positions[:, 0].max()) + 1
        ids0, segment, rows, within = self._packing(chunks[0], prefix_len)
        grid = inputs["video_grid_thw"]
        prepared.host = {
            "input_ids": torch.cat([prefix_ids, ids0.view(1, -1).to(prefix_ids.dtype)], 1),
            "position_ids": torch.cat([positions.to(torch.long),
                                       (next_position + within).view(1, 1, -1).expand(3, 1, -1)], -1).contiguous(),
            "token_segment": torch.cat([torch.full((prefix_len,), -1), segment]),
            "rows": rows,
            "video_index": (prefix_ids[0] == self.model.config.video_token_id).nonzero().view(-1),
            **self._lean.vision_inputs(grid),
        }
        if not defer_pixels:
            prepared.host["pixel_values"] = inputs["pixel_values_videos"].to(self._pixel_dtype)
            prepared.video = replace(video, frames=None)  # launch reads the tensors, not the frames
        prepared.grid = grid
        prepared.prefix_len, prepared.next_position = prefix_len, next_position
        prepared.chunks = [self._packing(chunk, 0) for chunk in chunks[1:]]
        return prepared

    def adopt(self, prepared: "PreparedVideo") -> "PreparedVideo":
        """The device side of :meth:`prepare`, in the process that launches: the frames of a video whose
        pixels :meth:`prepare_host` deferred go up from pinned memory without waiting and are resized and
        processed on the device (or the CPU); on a GPU every host tensor goes to pinned memory."""
        import torch

        if prepared.host is None:
            return prepared
        pin = self.device.type == "cuda"
        host = {k: (v.pin_memory() if pin else v) for k, v in prepared.host.items()}
        pixels = host.get("pixel_values")
        if pixels is None:
            video = prepared.video
            device = self.device if self.resize_on_device else torch.device("cpu")
            frames = video.frames.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else video.frames
            video = replace(video, frames=frames).resized()
            out = self.processor.video_processor(videos=[video.frames], video_metadata=[video.metadata],
                                                 do_sample_frames=False, do_resize=False, return_tensors="pt",
                                                 **({"device": str(device)} if device.type != "cpu" else {}))
            pixels = out["pixel_values_videos"]
            if pixels.shape[0] != int(prepared.grid.prod()):  # shapes only (no host sync)
                raise AssertionError(f"video {video.video_id}: {pixels.shape[0]} patches, the text expects "
                                     f"{int(prepared.grid.prod())}")
            host["pixel_values"] = pixels.to(self._pixel_dtype)
            prepared = replace(prepared, video=replace(video, frames=None))
        prepared = replace(prepared, host=host)
        if pin:
            prepared.chunks = [tuple(t.pin_memory() for t in packed) for packed in prepared.chunks]
        return prepared

    def host_side(self) -> "HostSide":
        """What :meth:`prepare_host` needs, without the weights (picklable: a rerank job's decode
        processes prepare their videos with it)."""
        return HostSide(processor=self.processor, model_class=type(self.model), config=self.model.config,
                        pixel_dtype=self._pixel_dtype,
                        options={"prompt_variant": self.prompt.name, "mode": self.mode,
                                 "query_batch_size": self.query_batch_size, "suffixes": self.suffixes})

    def launch(self, prepared: "PreparedVideo") -> "PendingScores":
        """Queue one prepared video's scoring on the device and return without waiting for it (no host
        synchronisation on the lean path: the inputs go up from pinned memory, the scores come down
        into pinned memory behind an event); :meth:`PendingScores.result` waits."""
        if prepared.host is None:
            return PendingScores(scores=self._score_video_now(prepared.video, prepared.queries, prepared.description))
        self._activate()
        with self._kernels(masked=len(prepared.queries) > 1):
            logp = self._launch_lean(prepared)
        return PendingScores.of(logp)

    def _launch_lean(self, prepared: "PreparedVideo"):
        import torch

        t = {k: self._to_device(v) for k, v in prepared.host.items()}
        prefix_len, total = prepared.prefix_len, int(t["input_ids"].shape[1])
        first_chunk = int(t["rows"].shape[0])
        # one suffix: plainly causal (the kernels' own causal path)
        mask = None if first_chunk == 1 else self._packed_mask(t["token_segment"], prefix_len)
        kwargs = {} if mask is None else self._split_layout([prepared])
        keep_cache = bool(prepared.chunks)
        with torch.inference_mode():
            out, logp = self._forward(t, prepared.grid, mask, use_cache=keep_cache, **kwargs)
            logps = [logp]
            if keep_cache:
                cache = getattr(out, "cache", None) or getattr(out, "past_key_values")
                _truncate_cache(cache, prefix_len)
                for packed in prepared.chunks:
                    logps.append(self._chunk_logprobs(packed, cache, prepared.next_position, prefix_len))
                    _truncate_cache(cache, prefix_len)
            return torch.cat(logps) if len(logps) > 1 else logps[0]

    def _packed_mask(self, segment, prefix_len: int, owner=None):
        """The attention mask of packed prefix(es) and suffixes: a key is visible to a query when it is not
        later, belongs to the same video (``owner``, the video of each token, when several are packed) and
        is in a prefix (``segment`` -1) or in the query's own suffix. With the split attention only the
        suffixes' rows (the first ``prefix_len`` rows are the prefixes' and run causally, see
        :func:`_use_split_attention`), as an additive bias; else every row, as a boolean mask."""
        import torch

        total = int(segment.shape[0])
        index = torch.arange(total, device=self.device)
        rows_from = prefix_len if self._split_attention else 0
        query = index[rows_from:, None]
        mask = (index[None, :] <= query) & ((segment[None, :] < 0) | (segment[None, :] == segment[rows_from:, None]))
        if owner is not None:
            mask &= owner[None, :] == owner[rows_from:, None]
        mask = mask[None, None]
        if not self._split_attention:
            return mask
        dtype = self.model.dtype  # rows 16-byte aligned (what SDPA's fused kernels need)
        # 8 columns more than the alignment needs: the row stride never equals the length, else a compiled
        # layer would keep one graph for lengths that are multiples of 8 and one for the rest
        bias = torch.full((1, 1, mask.shape[2], -(-total // 8) * 8 + 8), torch.finfo(dtype).min, dtype=dtype,
                          device=self.device)
        return bias[..., :total].masked_fill_(mask, 0)

    def _forward(self, t: dict, grid, mask, use_cache: bool = False, **kwargs):
        """Vision tower, then the LLM over the packed tokens ``t`` (on the device; keys as in
        :meth:`prepare_host`): (the LLM's output, [rows, 2] (yes, no) log-probabilities at ``t["rows"]``)."""
        model = self.model.model
        vision = model.visual(t["pixel_values"], grid_thw=grid, **self._lean.vision_kwargs(t, grid))
        embeds = model.get_input_embeddings()(t["input_ids"])
        embeds[0].index_copy_(0, t["video_index"], vision.pooler_output.to(embeds.dtype))
        out = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=t["position_ids"],
                                   use_cache=use_cache, visual_pos_masks=t["video_index"],
                                   deepstack_visual_embeds=list(vision.deepstack_features), **kwargs)
        return out, self._answer_logprobs(self.model.lm_head(out.last_hidden_state[0, t["rows"]]))

    # ------------------------------------------------------------------ several videos in one pass

    def batchable(self, prepared: "PreparedVideo") -> bool:
        """Whether a prepared video can share a pass with others (:meth:`launch_many`): a lean one whose
        queries fit in one chunk (no KV cache kept for further chunks)."""
        return prepared.host is not None and not prepared.chunks and self.video_batch > 1

    def fits(self, batch: Sequence["PreparedVideo"], prepared: "PreparedVideo") -> bool:
        """Whether ``prepared`` may join ``batch`` in one pass: at most ``video_batch`` videos and
        :data:`BATCH_TOKENS` tokens, all batchable."""
        if not batch:
            return True
        if len(batch) >= self.video_batch or not all(self.batchable(p) for p in (*batch, prepared)):
            return False
        return sum(int(p.host["input_ids"].shape[1]) for p in (*batch, prepared)) <= BATCH_TOKENS

    def launch_many(self, batch: Sequence["PreparedVideo"]) -> list["PendingScores"]:
        """Queue several prepared videos on the device (see :meth:`fits`) and return each one's pending
        scores: one vision pass over all their frames and one LLM pass over their prefixes and suffixes
        laid end to end, so that a video with few queries does not run the model at batch one and the
        host launches each layer once for all of them. Scores equal :meth:`launch`'s up to float rounding.
        A batchable video alone takes the same masked pass, so that a job's last video, or one with a
        single query, never compiles the unmasked call form."""
        batch = list(batch)
        if not all(self.batchable(p) for p in batch):
            return [self.launch(p) for p in batch]
        self._activate()
        with self._kernels(masked=True):
            logp = self._launch_batch(batch)
        return PendingScores.of(logp).split([len(p.queries) for p in batch])

    def _launch_batch(self, batch: list["PreparedVideo"]):
        """The packed pass of :meth:`launch_many`. Layout: every video's prefix, then every video's suffixes
        (the model sees order only through the M-RoPE positions, which are each video's own, and the mask)."""
        import torch

        ts = [{k: self._to_device(v) for k, v in p.host.items()} for p in batch]
        prefixes = [p.prefix_len for p in batch]
        suffixes = [int(t["input_ids"].shape[1]) - n for t, n in zip(ts, prefixes)]
        prefix_total = sum(prefixes)
        prefix_at = [sum(prefixes[:i]) for i in range(len(batch))]
        suffix_at = [prefix_total + sum(suffixes[:i]) for i in range(len(batch))]
        queries_at = [sum(len(p.queries) for p in batch[:i]) for i in range(len(batch))]

        def laid_out(name):
            return torch.cat([t[name][..., :n] for t, n in zip(ts, prefixes)]
                             + [t[name][..., n:] for t, n in zip(ts, prefixes)], -1)

        patches = [int(p.host["vision_cu_seqlens"][-1]) for p in batch]
        t = {"input_ids": laid_out("input_ids"), "position_ids": laid_out("position_ids"),
             "rows": torch.cat([t["rows"] + (at - n) for t, n, at in zip(ts, prefixes, suffix_at)]),
             "video_index": torch.cat([t["video_index"] + at for t, at in zip(ts, prefix_at)]),
             "vision_cu_seqlens": torch.cat([ts[0]["vision_cu_seqlens"][:1]] + [
                 t["vision_cu_seqlens"][1:] + sum(patches[:i]) for i, t in enumerate(ts)]),
             **{k: torch.cat([t[k] for t in ts]) for k in ("pixel_values", "vision_position_ids",
                                                           "vision_interp_indices", "vision_interp_weights")}}
        segment = laid_out("token_segment")
        offsets = torch.cat([torch.zeros(prefix_total, dtype=segment.dtype, device=self.device)]
                            + [torch.full((n,), q, dtype=segment.dtype, device=self.device)
                               for n, q in zip(suffixes, queries_at)])
        segment = torch.where(segment < 0, segment, segment + offsets)  # unique across the batch
        owner = torch.repeat_interleave(torch.arange(len(batch), device=self.device).repeat(2),
                                        self._to_device(torch.tensor(prefixes + suffixes)),
                                        output_size=prefix_total + sum(suffixes))
        grid = torch.cat([p.grid for p in batch])
        with torch.inference_mode():
            return self._forward(t, grid, self._packed_mask(segment, prefix_total, owner),
                                 **self._split_layout(batch))[1]

    def _split_layout(self, batch: Sequence["PreparedVideo"]) -> dict:
        """The split attention's keywords (:func:`_use_split_attention`) for a pass laid out as every video's
        prefix, then every video's first chunk of suffixes: the prefixes' cumulative lengths and the longest
        (``rankvideo_prefixes``); on a GPU also the suffixes' (``rankvideo_suffixes``), for the masked rows'
        flash calls. From the host tensors: no host sync."""
        import torch

        if not self._split_attention:
            return {}
        prefixes = [p.prefix_len for p in batch]
        kwargs = {"rankvideo_prefixes": (self._to_device(torch.tensor([0, *itertools.accumulate(prefixes)],
                                                                      dtype=torch.int32)), max(prefixes))}
        if self.device.type == "cuda":
            ends = [(p.host["rows"] + (1 - p.prefix_len)).tolist() for p in batch]  # each suffix's end in its block
            suffix_at = [0, *itertools.accumulate(e[-1] for e in ends)]  # where each video's suffixes start
            bounds = [0] + [at + end for at, video in zip(suffix_at, ends) for end in video]
            kwargs["rankvideo_suffixes"] = (
                self._to_device(torch.tensor(suffix_at, dtype=torch.int32)), max(e[-1] for e in ends),
                self._to_device(torch.tensor(bounds, dtype=torch.int32)), max(b - a for a, b in zip(bounds, bounds[1:])))
        return kwargs

    # ------------------------------------------------------------------ generation

    def generate(self, video: LoadedVideo | None, messages: list[dict], max_new_tokens: int) -> str:
        return self.generate_batch([(video, messages)], max_new_tokens)[0]

    def generate_batch(self, items: Sequence[tuple[LoadedVideo | None, list[dict]]], max_new_tokens: int) -> list[str]:
        """Greedy continuations of several chats in one left-padded batch (each with its video or none)."""
        import torch

        self._activate()
        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for _, m in items]
        videos = [v for v, _ in items if v is not None]
        kwargs = {}
        if videos:
            kwargs = {"videos": [v.frames for v in videos], "video_metadata": [v.metadata for v in videos],
                      "do_sample_frames": False, "do_resize": False}
        inputs = self.processor(text=texts, padding=True, padding_side="left", return_tensors="pt", **kwargs)
        inputs = inputs.to(self.device)
        with torch.inference_mode(), self._kernels():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class HFTextBackend:
    """A text LLM (the teacher): batched greedy generation and answer log-probabilities."""

    name = "hf"

    def __init__(self, model: str, *, cache_dir: str | None = None, device: str | None = None, dtype: str | None = None,
                 local_files_only: bool | None = None, trust_remote_code: bool = False, allow_pickle_weights: bool = False):
        import torch

        options = models.LoadOptions(cache_dir=cache_dir, local_files_only=local_files_only,
                                     trust_remote_code=trust_remote_code, use_safetensors=not allow_pickle_weights)
        self.model, self.tokenizer = models.load_causal_lm(model, options, device=device, dtype=dtype)
        self.model_name = models.model_name(model)
        self.device = self.model.device
        yes, no = prompts.answer_token_ids(self.tokenizer)
        self.yes_ids, self.no_ids = torch.tensor(yes, device=self.device), torch.tensor(no, device=self.device)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate_batch(self, prompts_text: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy continuations of rendered prompts (see :meth:`render`)."""
        import torch

        inputs = self.tokenizer(list(prompts_text), return_tensors="pt", padding=True, padding_side="left",
                                add_special_tokens=False).to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id)
        # keep <think>/<answer> markers: decode without dropping added (non-special) tokens
        return self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def answer_logprobs(self, texts: Sequence[str]) -> list[tuple[float, float]]:
        """(logprob_yes, logprob_no) of the token after each text (which ends with ``<answer>``)."""
        import torch

        if not texts:
            return []
        inputs = self.tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="left",
                                add_special_tokens=False).to(self.device)
        with torch.inference_mode():
            hidden = self.model.model(**inputs).last_hidden_state[:, -1]
            logp = torch.log_softmax(self.model.lm_head(hidden).float(), dim=-1)
        yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
        no = torch.logsumexp(logp[:, self.no_ids], dim=-1)
        return list(zip(yes.tolist(), no.tolist()))


def _truncate_cache(cache, length: int) -> None:
    """Cut every layer of a DynamicCache back to its first ``length`` positions."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        cache.crop(length)
        return
    for layer in layers:
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]


def _batch_vision_attention(model) -> None:
    """Qwen3-VL's vision attention, SDPA path: one attention call over the frame groups of a video.

    transformers (non-flash attention) splits q/k/v with ``cu_seqlens.tolist()`` (a host sync in
    each of the 27 layers) and runs one SDPA call per frame group. The groups of one video all have
    ``h * w`` patches, so they are one batch ``[groups, heads, h*w, head_dim]``. A pre-hook on the vision
    tower reads that size from ``grid_thw`` once per call and passes it down to the blocks as the keyword
    ``rankvideo_group`` (an int argument, so that a compiled block treats it as a symbol and a new video
    size is no recompilation; a module attribute would be a constant of the graph). Groups of several
    sizes (videos batched into one pass, :meth:`HFBackend.launch_many`) run as one variable-length flash
    attention call on a GPU (the hook passes the longest size, ``rankvideo_longest_group``); elsewhere, and
    for a model whose ``_rankvideo_batched_vision`` is False (``HFBackend(vision_attention="transformers")``),
    transformers' own path runs. The forward is set on this model's attention modules only: the
    transformers class is left as it is (other models in the process keep the stock code).
    Measured (H200, 32 frames): vision tower 42 -> 31 ms, and no longer host-bound."""
    import torch

    visual = getattr(getattr(model, "model", None), "visual", None)
    blocks = getattr(visual, "blocks", None)
    if blocks is None or not hasattr(blocks[0], "attn") or not hasattr(blocks[0].attn, "qkv"):
        return
    if getattr(visual, "_rankvideo_group_hook", False):
        return
    original = type(blocks[0].attn).forward
    module = inspect.getmodule(original)
    rotary = getattr(module, "apply_rotary_pos_emb_vision", None)
    if rotary is None:
        return

    def forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
        group = kwargs.pop("rankvideo_group", None)
        longest = kwargs.pop("rankvideo_longest_group", None)
        seq = hidden_states.shape[0]
        varlen = (not group and longest and hidden_states.is_cuda
                  and hidden_states.dtype in (torch.bfloat16, torch.float16))
        if not (group or varlen) or (group and seq % group) or "flash" in str(self.config._attn_implementation):
            return original(self, hidden_states, cu_seqlens, position_embeddings=position_embeddings,
                            max_seqlen=max_seqlen, **kwargs)
        q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = position_embeddings
        q, k = rotary(q, k, cos, sin)
        if varlen:  # frame groups of several sizes (videos batched into one pass): flash attention over them all
            cu = cu_seqlens.to(torch.int32)
            out = torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, longest, longest, 0.0, False, False,
                                                          scale=self.scaling)[0]
            return self.proj(out.reshape(seq, -1))
        q, k, v = (x.reshape(seq // group, group, self.num_heads, -1).transpose(1, 2) for x in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scaling)
        return self.proj(out.transpose(1, 2).reshape(seq, -1))

    for block in blocks:  # one function object for all: a compiled block's guards hold for every layer
        block.attn.forward = types.MethodType(forward, block.attn)

    def pre_hook(module, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        kwargs.pop("rankvideo_group", None)
        kwargs.pop("rankvideo_longest_group", None)
        if grid is not None and getattr(model, "_rankvideo_batched_vision", True):
            sizes = {int(h) * int(w) for _, h, w in grid.tolist()}
            if len(sizes) == 1:
                kwargs["rankvideo_group"] = sizes.pop()
            elif sizes:  # several videos of different sizes in one pass
                kwargs["rankvideo_longest_group"] = max(sizes)
        return args, kwargs

    visual.register_forward_pre_hook(pre_hook, with_kwargs=True)
    visual._rankvideo_group_hook = True


SPLIT_ATTENTION = "rankvideo_prefix_sdpa"


def _use_split_attention(model) -> bool:
    """Let the LLM's SDPA attention run a packed "prefix + suffixes" pass as two calls.

    Registers (once) an attention implementation that is transformers' SDPA, except when it gets a
    4-D mask with fewer rows than queries (only :meth:`HFBackend.launch` and :meth:`HFBackend.launch_many`
    pass one): then the first ``T - rows`` queries (the prefix) attend causally among themselves through
    the kernels' own causal path, and the remaining rows (the packed suffixes) attend to all keys through
    the mask. Several videos' prefixes laid end to end (the keyword ``rankvideo_prefixes``: their
    cumulative lengths and the longest) are each causal within itself: one variable-length flash
    attention call on a GPU, a call per prefix elsewhere. On a GPU the suffixes' rows need no mask either
    (the keyword ``rankvideo_suffixes``): two more variable-length flash calls, each suffix against its
    own video's prefix and causally within itself, merged by their log-sum-exps. A single masked call
    would make the kernel visit all T^2 (query, key) pairs; this visits about half of the prefix's, and
    each suffix only its own video's keys. Switched on for a model whose text attention is ``sdpa``; True
    when on."""
    import torch

    config = model.model.language_model.config
    if getattr(config, "_attn_implementation", None) == SPLIT_ATTENTION:
        return True
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
        sdpa_mask = ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]
    except (ImportError, KeyError, AttributeError):
        return False

    def prefixes_attention(module, query, key, value, prefixes, **kwargs):
        """Causal attention within each of several prefixes laid end to end (videos batched into one pass):
        ``prefixes`` is (cumulative lengths, int32 on the device; the longest)."""
        starts, longest = prefixes
        if query.is_cuda and query.dtype in (torch.bfloat16, torch.float16):  # one variable-length call
            q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [tokens, heads, head_dim]
            out = torch.ops.aten._flash_attention_forward(q, k, v, starts, starts, longest, longest, 0.0, True, False,
                                                          scale=kwargs.get("scaling"))[0]
            return out[None]
        bounds = starts.tolist()
        return torch.cat([sdpa(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, **kwargs)[0]
                          for a, b in zip(bounds, bounds[1:])], dim=1)

    def suffixes_attention(query, key, value, prefix, prefixes, suffixes, scale):
        """The suffixes' rows on a GPU without the mask: each suffix token attends to all of its video's
        prefix (one variable-length flash call, not causal: the prefix lies wholly before it) and causally
        within its own suffix (a second call, one sequence per suffix); the two partial softmaxes are merged
        by their log-sum-exps. A masked call would visit every (suffix token, key) pair of the pass, the
        other videos' prefixes included, in a slower kernel. ``suffixes``: (each
        video's suffix tokens, cumulative; the most; each suffix's length, cumulative; the longest), the
        cumulative counts int32 on the device."""
        starts, longest = prefixes
        rows_at, most_rows, suffix_at, longest_suffix = suffixes
        q = query[0, :, prefix:].transpose(0, 1)  # [rows, heads, head_dim]
        k, v = (x[0].transpose(0, 1) for x in (key, value))  # [tokens, kv heads, head_dim]
        flash = torch.ops.aten._flash_attention_forward
        out_p, lse_p = flash(q, k[:prefix], v[:prefix], rows_at, starts, most_rows, longest, 0.0, False, False,
                             scale=scale)[:2]
        out_s, lse_s = flash(q, k[prefix:], v[prefix:], suffix_at, suffix_at, longest_suffix, longest_suffix, 0.0,
                             True, False, scale=scale)[:2]
        lse_p, lse_s = (x.t().unsqueeze(-1) for x in (lse_p, lse_s))  # [heads, rows] -> [rows, heads, 1]
        both = torch.logaddexp(lse_p, lse_s)
        return (out_p.float() * (lse_p - both).exp() + out_s.float() * (lse_s - both).exp()).to(query.dtype)[None]

    def attention(module, query, key, value, attention_mask, **kwargs):
        prefixes = kwargs.pop("rankvideo_prefixes", None)
        suffixes = kwargs.pop("rankvideo_suffixes", None)
        rows, total = (attention_mask.shape[-2], query.shape[-2]) if attention_mask is not None else (0, 0)
        if attention_mask is None or attention_mask.dim() != 4 or rows >= total or key.shape[-2] != total:
            return sdpa(module, query, key, value, attention_mask, **kwargs)
        prefix = total - rows
        if prefixes is not None:
            head = prefixes_attention(module, query[:, :, :prefix], key[:, :, :prefix], value[:, :, :prefix], prefixes,
                                      **kwargs)
        else:
            head, _ = sdpa(module, query[:, :, :prefix], key[:, :, :prefix], value[:, :, :prefix], None, **kwargs)
        flash = query.is_cuda and query.dtype in (torch.bfloat16, torch.float16)
        if flash and prefixes is not None and suffixes is not None:
            tail = suffixes_attention(query, key, value, prefix, prefixes, suffixes, kwargs.get("scaling"))
        else:  # the CPU, float32: through the mask
            tail, _ = sdpa(module, query[:, :, prefix:], key, value, attention_mask, **kwargs)
        return torch.cat([head, tail], dim=1), None

    type(ALL_ATTENTION_FUNCTIONS).register(SPLIT_ATTENTION, attention)
    type(ALL_MASK_ATTENTION_FUNCTIONS).register(SPLIT_ATTENTION, sdpa_mask)
    config._attn_implementation = SPLIT_ATTENTION
    return config._attn_implementation == SPLIT_ATTENTION


class _CompileState:
    """Whether a model's compiled forwards are in use (``HFBackend(compile=...)``), and how they fared."""

    def __init__(self):
        self.enabled = True
        self.failed = False
        self.succeeded = False
        self.compiled: dict = {}


def _install_compiled(model) -> None:
    """Give each vision block and each LLM decoder layer a ``torch.compile``d forward.

    The compiled forward runs only when ``model._rankvideo_compile.enabled``, with autograd off, and,
    for the decoder layers, without a KV cache (full prompts, and prefix + suffixes in one forward):
    the cache's in-place growth is left to eager code. One graph serves all layers of a kind (module
    parameters are graph inputs). Each kind is compiled through its own entry function
    (:func:`_entry_function`): transformers wraps every layer class's forward in the same
    ``forward_with_checkpointing`` code object, and dynamo keeps its graphs, guards and dynamic-shape
    decisions per code object, so compiling the forwards themselves made vision blocks and decoder layers
    share (and invalidate) one cache. Both kinds compile for dynamic shapes from the first call (sequence
    lengths, frame-group size and frame count vary with every video and query count): after one graph
    per kind and call form, new videos and query counts recompile nothing. If the first compiled call
    fails (no C compiler, an unsupported op), a warning is logged and the model runs eagerly from then on."""
    import torch

    if getattr(model, "_rankvideo_compile", None) is not None:
        return
    state = _CompileState()
    model._rankvideo_compile = state
    dynamo_config = getattr(getattr(torch, "_dynamo", None), "config", None)
    for name in ("recompile_limit", "cache_size_limit"):  # per code object: masked/causal call forms
        if dynamo_config is not None and isinstance(getattr(dynamo_config, name, None), int):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))
    try:  # no "duck sizing": a length that happens to equal a fixed width (e.g. a head size) stays a symbol
        from torch.fx.experimental import _config as shape_config

        shape_config.use_duck_shape = False
    except (ImportError, AttributeError):
        pass
    visual = getattr(model.model, "visual", None)
    for block in getattr(visual, "blocks", None) or []:
        _compile_forward(block, state, cache_free=False, kind="vision_block")
    for layer in model.model.language_model.layers:
        _compile_forward(layer, state, cache_free=True, kind="decoder_layer")


def _call_layer(forward, module, *args, **kwargs):
    return forward(module, *args, **kwargs)


_ENTRIES: dict = {}


def _entry_function(kind: str):
    """A copy of :func:`_call_layer` with a code object of its own for each module kind (dynamo's
    cache is per code object; see :func:`_install_compiled`)."""
    if kind not in _ENTRIES:
        name = f"rankvideo_compiled_{kind}"
        code = _call_layer.__code__.replace(co_name=name)
        if hasattr(code, "co_qualname"):
            code = code.replace(co_qualname=name)
        _ENTRIES[kind] = types.FunctionType(code, _call_layer.__globals__, name)
    return _ENTRIES[kind]


def _compile_forward(module, state: _CompileState, cache_free: bool, kind: str) -> None:
    import torch

    eager = module.forward
    unbound = type(module).forward
    key = (kind, unbound)
    if key not in state.compiled:  # one compiled entry per kind and class, shared by the model's modules
        state.compiled[key] = torch.compile(_entry_function(kind), dynamic=True)
    compiled = state.compiled[key]

    def forward(*args, **kwargs):
        use = state.enabled and not torch.is_grad_enabled()
        if use and cache_free:
            use = kwargs.get("cache") is None and kwargs.get("past_key_values") is None
        if use:
            try:
                out = compiled(unbound, module, *args, **kwargs)
            except Exception as error:
                if state.succeeded:
                    raise
                state.failed, state.enabled = True, False
                log.warning("torch.compile failed (%s: %s); running eagerly", type(error).__name__, str(error)[:300])
            else:
                state.succeeded = True
                return out
        return eager(*args, **kwargs)

    module.forward = forward


def compile_stats() -> dict:
    """What torch.compile did in this process: frames compiled (first compilations and recompilations),
    seconds spent compiling, graphs; and the GPU's peak allocated memory. {} when torch is not loaded."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    stats: dict = {}
    try:
        from torch._dynamo.utils import compilation_time_metrics, counters

        times = [t for key, values in compilation_time_metrics.items() if key.endswith("compile_inner")
                 for t in values]
        stats.update(frames_compiled=len(times), compile_s=round(sum(times), 3),
                     unique_graphs=int(counters["stats"]["unique_graphs"]))
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list

        stats["graphs_per_kind"] = {kind: len(_debug_get_cache_entry_list(entry.__code__))
                                    for kind, entry in _ENTRIES.items()}
    except Exception:  # noqa: BLE001 - private API, best effort
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        stats["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return stats


def _cache_keyword(forward) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.2x); accept both."""
    parameters = inspect.signature(forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _rope_index(vl_model, inputs):
    """M-RoPE positions of a processed sequence (transformers 5.x signatures differ)."""
    kwargs = {"video_grid_thw": inputs.get("video_grid_thw"), "attention_mask": inputs.get("attention_mask")}
    if "mm_token_type_ids" in inspect.signature(vl_model.get_rope_index).parameters:
        kwargs["mm_token_type_ids"] = inputs["mm_token_type_ids"]
    return vl_model.get_rope_index(inputs["input_ids"], **kwargs)


class _LeanInputs:
    """What Qwen3-VL's vision tower derives from ``video_grid_thw`` (attention lengths, rotary position
    ids, the interpolation of its learned position table), computed on the CPU with transformers' own
    helpers (``transformers.vision_utils``) and passed to the tower as its precomputed keywords; and the
    LLM's DeepStack step fed an index of the video positions instead of a boolean mask.

    On the device these would cost host syncs in every video (``grid_thw.tolist()``, a boolean mask's
    ``nonzero``), each waiting for the GPU to finish the previous video. :meth:`for_model` is None for a
    model whose vision tower or LLM does not read them this way (the backend then scores each video
    before returning, the ``cached`` way)."""

    TABLES = ("cu_seqlens", "position_ids", "interp_indices", "interp_weights")

    def __init__(self, visual, vision_utils):
        self.visual, self.utils = visual, vision_utils

    @classmethod
    def for_model(cls, model) -> "_LeanInputs | None":
        import torch

        visual = getattr(model.model, "visual", None)
        language_model = getattr(model.model, "language_model", None)
        try:
            from transformers import vision_utils
        except ImportError:
            return None
        if visual is None or not hasattr(type(language_model), "_deepstack_process"):
            return None
        names = set(inspect.unwrap(type(visual).forward).__code__.co_names)
        helpers = {"get_vision_interpolation_indices_and_weights", "get_vision_position_ids", "get_vision_attention_seqlens"}
        attributes = ("num_grid_per_side", "interpolation_mode", "interpolation_align_corners", "spatial_merge_size")
        if not helpers <= names or not all(hasattr(visual, a) for a in attributes):
            return None
        original = type(language_model)._deepstack_process

        def deepstack(self, hidden_states, visual_pos_masks, visual_embeds):
            if visual_pos_masks.dtype == torch.bool:
                return original(self, hidden_states, visual_pos_masks, visual_embeds)
            hidden_states = hidden_states.clone()  # transformers' arithmetic, indexed by position
            hidden_states[:, visual_pos_masks] = hidden_states[:, visual_pos_masks] + visual_embeds.to(hidden_states.dtype)
            return hidden_states

        language_model._deepstack_process = types.MethodType(deepstack, language_model)
        return cls(visual, vision_utils)

    def vision_inputs(self, grid) -> dict:
        """The tables of one ``video_grid_thw`` (on the CPU), keyed ``vision_<name>``."""
        visual, utils = self.visual, self.utils
        indices, weights = utils.get_vision_interpolation_indices_and_weights(
            grid, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners, spatial_merge_size=visual.config.spatial_merge_size)
        cu_seqlens, _ = utils.get_vision_attention_seqlens(grid, visual.config)
        tables = {"cu_seqlens": cu_seqlens, "position_ids": utils.get_vision_position_ids(grid, visual.spatial_merge_size),
                  "interp_indices": indices, "interp_weights": weights}
        return {f"vision_{k}": v for k, v in tables.items()}

    def vision_kwargs(self, tensors: dict, grid) -> dict:
        """The vision tower's keywords from :meth:`vision_inputs`' tensors (on the device by now)."""
        kwargs = {k: tensors[f"vision_{k}"] for k in self.TABLES}
        if "flash" in str(getattr(self.visual.config, "_attn_implementation", "")):  # the longest frame group
            kwargs["max_seqlen"] = int((grid[:, 1] * grid[:, 2]).max())
        return kwargs


class _OutlineVideos:
    """Stands in for a processor's video processor where only the text side is wanted: the processor
    then expands the prompt's video placeholder (timestamps, tokens per frame) from this grid and
    metadata as it would from the pixels, without resizing or normalising any. The grid's time axis and
    the metadata come from the real video processor run on blank frames of one merged patch; its height and
    width from the target size (``LoadedVideo.resize_to``). tests/test_reranker.py checks the text
    inputs equal the processor's own on the resized frames."""

    def __init__(self, video_processor, size: tuple[int, int]):
        self.real, self.size = video_processor, size

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __call__(self, videos, **kwargs):
        unit = self.real.patch_size * self.real.merge_size
        out = self.real([v.new_zeros((v.shape[0], v.shape[1], unit, unit)) for v in videos], **kwargs)
        grid = out["video_grid_thw"].clone()
        grid[:, 1], grid[:, 2] = self.size[0] // self.real.patch_size, self.size[1] // self.real.patch_size
        out["video_grid_thw"] = grid
        del out["pixel_values_videos"]
        return out

    @classmethod
    def text_inputs(cls, processor, text: str, video: LoadedVideo) -> dict:
        """The processor's text inputs and ``video_grid_thw`` for ``text`` with ``video`` (frames not
        resized yet, or resized), without its pixels."""
        import copy

        size = video.resize_to or tuple(video.frames.shape[2:])
        outline = copy.copy(processor)
        outline.video_processor = cls(processor.video_processor, size)
        return outline(text=[text], videos=[video.frames], video_metadata=[video.metadata], do_sample_frames=False,
                       do_resize=False, padding=False, return_tensors="pt")


@dataclass
class HostSide:
    """What :meth:`HFBackend.prepare_host` needs of a backend, without its weights: the processor, the
    model's class and config (:meth:`backend` builds the model on the meta device, for the M-RoPE
    positions and the vision tables) and the options that shape the inputs. Picklable: a rerank job's
    decode processes get one."""

    processor: object
    model_class: type
    config: object
    pixel_dtype: object
    options: dict

    def backend(self) -> "HFBackend":
        """A weightless :class:`HFBackend` that can run :meth:`HFBackend.prepare_host` (built once)."""
        backend = self.__dict__.get("_backend")
        if backend is None:
            import copy

            import torch

            config = copy.deepcopy(self.config)  # attention kernels registered in the parent are not here; none run
            for part in (config, *(getattr(config, name, None) for name in getattr(config, "sub_configs", {}))):
                if part is not None:
                    part._attn_implementation = "sdpa"
            with torch.device("meta"):
                model = self.model_class(config)
            backend = HFBackend.from_model(model, self.processor, compile=False, **self.options)
            backend._pixel_dtype = self.pixel_dtype
            self.__dict__["_backend"] = backend
        return backend

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_backend"}
