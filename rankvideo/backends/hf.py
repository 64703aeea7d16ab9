"""The transformers backend: score per video against a shared prefix.

For video-first prompts (the default), one video costs one vision-encoder pass and one prefill of
``system + video``; every query of that video is then scored as a batch of short suffixes against
the shared KV cache, with the M-RoPE positions the full sequence would have. Only the hidden
state at the answer position is projected to the vocabulary (one row per query, never the whole
sequence). Query-first prompts (``reference_inference``) and ``mode="per_pair"`` run one full
forward per pair, the reference's way; both paths give the same scores (tests/test_hf_backend.py).
"""

from __future__ import annotations

import copy
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

    # ------------------------------------------------------------------ inputs

    def _processor_inputs(self, texts: list[str], video: LoadedVideo):
        inputs = self.processor(text=texts, videos=[video.frames] * len(texts), video_metadata=[video.metadata] * len(texts),
                                do_sample_frames=False, do_resize=False, padding=True, return_tensors="pt")
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
        if self.mode == "per_pair":
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
        """Vision encoder + prefill of the shared prefix: (cache, next text position)."""
        import torch

        inputs = self._processor_inputs([prefix], video)
        with torch.inference_mode():
            out = self.model.model(**inputs, use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values")
        positions, _ = _rope_index(self.model.model, inputs)
        # text after the video continues from here in all three M-RoPE axes
        next_position = int(positions[:, 0, -1].max()) + 1
        return cache, next_position, inputs["input_ids"].shape[1]

    def _score_shared_prefix(self, video: LoadedVideo, queries: list[str]) -> list[dict]:
        import torch

        splits = [self.split_prompt(q) for q in queries]
        prefix = splits[0][0]
        if any(p != prefix for p, _ in splits):
            raise AssertionError("video-first prompts must share their prefix")
        cache, next_position, prefix_len = self.prefill(video, prefix)
        tokenizer = self.processor.tokenizer
        scores: list[dict] = []
        for start in range(0, len(queries), self.query_batch_size):
            chunk = [suffix for _, suffix in splits[start:start + self.query_batch_size]]
            ids = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in chunk]
            lengths = torch.tensor([len(i) for i in ids], device=self.device)
            width = int(lengths.max())
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            input_ids = torch.tensor([i + [pad] * (width - len(i)) for i in ids], device=self.device)
            batch = len(chunk)
            suffix_mask = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).long()
            attention_mask = torch.cat([torch.ones(batch, prefix_len, dtype=torch.long, device=self.device),
                                        suffix_mask], dim=1)
            position_ids = (next_position + torch.arange(width, device=self.device)).view(1, 1, -1).expand(3, batch, -1)
            chunk_cache = copy.deepcopy(cache)
            chunk_cache.batch_repeat_interleave(batch)
            with torch.inference_mode():
                embeds = self.model.model.get_input_embeddings()(input_ids)
                out = self.model.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                                      position_ids=position_ids, use_cache=True,
                                                      **{self._cache_kw: chunk_cache})
                hidden = out.last_hidden_state[torch.arange(batch, device=self.device), lengths - 1]
                scores += self._scores_from_logits(self.model.lm_head(hidden))
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
