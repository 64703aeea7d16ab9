"""The transformers backend: score per video against a shared prefix.

For video-first prompts (the default), one video costs one vision-encoder pass and one prefill of
``system + video``; every query of that video is then scored as a short suffix against the shared KV
cache, all suffixes packed into one batch-1 sequence with a block mask (no padding, no copy of the
cache), with the M-RoPE positions the full sequence would have. A single query is one full forward.
Only the hidden state at the answer position is projected to the vocabulary (one row per query,
never the whole sequence). Query-first prompts (``reference_inference``) and ``mode="per_pair"`` run one full
forward per pair, the reference's way; both paths give the same scores (tests/test_reranker.py).
"""

from __future__ import annotations

import inspect
import logging
from typing import Sequence

from .. import models, prompts
from ..video import LoadedVideo
from . import pair_scores

log = logging.getLogger(__name__)

VISION_END = "<|vision_end|>"


class HFBackend:
    name = "hf"

    def __init__(self, model: str, *, cache_dir: str | None = None, device: str | None = None,
                 dtype: str | None = None, prompt_variant: str = "default", mode: str = "shared_prefix",
                 query_batch_size: int = 16, local_files_only: bool | None = None, trust_remote_code: bool = False,
                 allow_pickle_weights: bool = False, attn_implementation: str | None = None):
        import torch

        if mode not in ("shared_prefix", "per_pair"):
            raise ValueError(f"unknown scoring mode {mode!r}; use shared_prefix or per_pair")
        options = models.LoadOptions(cache_dir=cache_dir, local_files_only=local_files_only,
                                     trust_remote_code=trust_remote_code, use_safetensors=not allow_pickle_weights)
        self.model, self.processor = models.load_vlm(model, options, device=device, dtype=dtype,
                                                     attn_implementation=attn_implementation)
        self.model_name = models.model_name(model)
        self.device = self.model.device
        self.prompt = prompts.rerank_prompt(prompt_variant)
        self.mode = mode if self.prompt.video_first else "per_pair"
        self.query_batch_size = query_batch_size
        tokenizer = self.processor.tokenizer
        yes, no = prompts.answer_token_ids(tokenizer)
        self.yes_ids = torch.tensor(yes, device=self.device)
        self.no_ids = torch.tensor(no, device=self.device)
        self._cache_kw = _cache_keyword(self.model.model.language_model.forward)
        _batch_vision_attention(self.model)

    # ------------------------------------------------------------------ inputs

    def _processor_inputs(self, texts: list[str], video: LoadedVideo):
        # on a GPU the video processor (uint8 -> normalised patches) runs there: 7 ms instead of 30 ms a video
        on_gpu = {"device": str(self.device)} if self.device.type == "cuda" else {}
        inputs = self.processor(text=texts, videos=[video.frames] * len(texts), video_metadata=[video.metadata] * len(texts),
                                do_sample_frames=False, do_resize=False, padding=True, return_tensors="pt", **on_gpu)
        return inputs.to(self.device)

    def _render(self, query: str) -> str:
        return prompts.render_rerank(self.processor, query, self.prompt.name)

    def _scores_from_logits(self, logits) -> list[dict]:
        import torch

        logp = torch.log_softmax(logits.float(), dim=-1)
        yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
        no = torch.logsumexp(logp[:, self.no_ids], dim=-1)
        return [pair_scores(float(y), float(n)) for y, n in zip(yes.tolist(), no.tolist())]

    # ------------------------------------------------------------------ scoring

    def score_video(self, video: LoadedVideo, queries: Sequence[str]) -> list[dict]:
        if not queries:
            return []
        if self.mode == "per_pair" or len(queries) == 1:  # one query: one full forward is cheapest
            return [score for query in queries for score in self._score_pair(video, query)]
        return self._score_shared_prefix(video, list(queries))

    def _score_pair(self, video: LoadedVideo, query: str) -> list[dict]:
        import torch

        inputs = self._processor_inputs([self._render(query)], video)
        with torch.inference_mode():
            out = self.model.model(**inputs, use_cache=False)
            hidden = out.last_hidden_state[:, -1]
            return self._scores_from_logits(self.model.lm_head(hidden))

    def split_prompt(self, query: str) -> tuple[str, str]:
        """(system + video prefix, query suffix) of a video-first prompt, split after the video."""
        text = self._render(query)
        cut = text.rindex(VISION_END) + len(VISION_END)
        return text[:cut], text[cut:]

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

    def _score_shared_prefix(self, video: LoadedVideo, queries: list[str]) -> list[dict]:
        """All suffixes of a chunk packed into ONE batch-1 sequence against the shared cache.

        Suffix j gets the positions ``next_position + 0..S_j-1`` and a 4-D boolean mask: every prefix
        key plus its own suffix up to itself. No padding and no copy of the KV cache: the cache grows
        by the packed tokens during the call and is cut back to the prefix after each chunk."""
        import torch

        splits = [self.split_prompt(q) for q in queries]
        prefix = splits[0][0]
        if any(p != prefix for p, _ in splits):
            raise AssertionError("video-first prompts must share their prefix")
        cache, next_position, prefix_len = self.prefill(video, prefix)
        tokenizer = self.processor.tokenizer
        device = self.device
        scores: list[dict] = []
        for start in range(0, len(queries), self.query_batch_size):
            ids = [tokenizer(s, add_special_tokens=False)["input_ids"] for _, s in splits[start:start + self.query_batch_size]]
            host_lengths = [len(i) for i in ids]
            total = sum(host_lengths)
            lengths = torch.tensor(host_lengths, device=device)
            input_ids = torch.tensor([t for i in ids for t in i], device=device)[None]
            segment = torch.repeat_interleave(torch.arange(len(ids), device=device), lengths, output_size=total)
            ends = torch.cumsum(lengths, 0)
            index = torch.arange(total, device=device)
            own = (segment[:, None] == segment[None, :]) & (index[None, :] <= index[:, None])
            mask = torch.cat([torch.ones(total, prefix_len, dtype=torch.bool, device=device), own], dim=1)[None, None]
            position_ids = (next_position + index - (ends - lengths)[segment]).view(1, 1, -1).expand(3, 1, -1)
            with torch.inference_mode():
                embeds = self.model.model.get_input_embeddings()(input_ids)
                out = self.model.model.language_model(inputs_embeds=embeds, attention_mask=mask,
                                                      position_ids=position_ids, use_cache=True,
                                                      **{self._cache_kw: cache})
                hidden = out.last_hidden_state[0, ends - 1]
                scores += self._scores_from_logits(self.model.lm_head(hidden))
            _truncate_cache(cache, prefix_len)
        return scores

    # ------------------------------------------------------------------ generation

    def generate(self, video: LoadedVideo | None, messages: list[dict], max_new_tokens: int) -> str:
        return self.generate_batch([(video, messages)], max_new_tokens)[0]

    def generate_batch(self, items: Sequence[tuple[LoadedVideo | None, list[dict]]], max_new_tokens: int) -> list[str]:
        """Greedy continuations of several chats in one left-padded batch (each with its video or none)."""
        import torch

        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for _, m in items]
        videos = [v for v, _ in items if v is not None]
        kwargs = {}
        if videos:
            kwargs = {"videos": [v.frames for v in videos], "video_metadata": [v.metadata for v in videos],
                      "do_sample_frames": False, "do_resize": False}
        inputs = self.processor(text=texts, padding=True, padding_side="left", return_tensors="pt", **kwargs)
        inputs = inputs.to(self.device)
        with torch.inference_mode():
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
    tower reads that size from ``grid_thw`` once per call; mixed sizes keep transformers' own path.
    Measured (H200, 32 frames): vision tower 42 -> 31 ms, and no longer host-bound."""
    import torch

    visual = getattr(getattr(model, "model", None), "visual", None)
    blocks = getattr(visual, "blocks", None)
    if blocks is None or not hasattr(blocks[0], "attn") or not hasattr(blocks[0].attn, "qkv"):
        return
    attn_cls = type(blocks[0].attn)
    if getattr(attn_cls, "_rankvideo_batched", False):
        original = attn_cls._rankvideo_original_forward
    else:
        original = attn_cls.forward
    module = inspect.getmodule(original)
    rotary = getattr(module, "apply_rotary_pos_emb_vision", None)
    if rotary is None:
        return

    def forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
        group = getattr(self, "_rankvideo_group", None)
        seq = hidden_states.shape[0]
        if not group or seq % group or "flash" in str(self.config._attn_implementation):
            return original(self, hidden_states, cu_seqlens, position_embeddings=position_embeddings,
                            max_seqlen=max_seqlen, **kwargs)
        q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = position_embeddings
        q, k = rotary(q, k, cos, sin)
        q, k, v = (x.reshape(seq // group, group, self.num_heads, -1).transpose(1, 2) for x in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scaling)
        return self.proj(out.transpose(1, 2).reshape(seq, -1))

    attn_cls._rankvideo_original_forward = original
    attn_cls._rankvideo_batched = True
    attn_cls.forward = forward
    attns = [block.attn for block in blocks]

    def pre_hook(module, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        sizes = {int(h) * int(w) for _, h, w in grid.tolist()} if grid is not None else set()
        group = sizes.pop() if len(sizes) == 1 else None
        for attn in attns:
            attn._rankvideo_group = group

    if not getattr(visual, "_rankvideo_group_hook", False):
        visual.register_forward_pre_hook(pre_hook, with_kwargs=True)
        visual._rankvideo_group_hook = True


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
