"""Scoring backends behind one small interface.

A backend scores every query of one decoded video (:meth:`Backend.score_video`) and generates
text for (video, prompt) requests (:meth:`Backend.generate`). Scores follow REFERENCE.md: for
each pair ``logprob_yes``/``logprob_no`` are the logsumexp of the log-probabilities of every
vocabulary token that decodes to yes / no at the answer position, ``logit_delta`` their
difference and ``p_yes = sigmoid(logit_delta)``.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

from rankvideo.video import LoadedVideo

BACKENDS = ("hf", "vllm")


class Backend(Protocol):
    name: str
    model_name: str

    def score_video(self, video: LoadedVideo, queries: Sequence[str], description: str | None = None) -> list[dict]:
        """One score dict per query, in order; each prompt shows the video's ``description`` when given
        (:func:`rankvideo.prompts.render_rerank`)."""

    def generate(self, video: LoadedVideo | None, messages: list[dict], max_new_tokens: int) -> str:
        """Greedy continuation of a chat (its video item, if any, is ``video``)."""


class PipelinedBackend(Backend, Protocol):
    """A backend whose scoring comes in two steps, so that a job keeps the device busy:
    ``launch(prepare(video, queries, description)).result() == score_video(video, queries, description)``.
    ``prepare`` is host work (prompts, tokens, pixels, positions) that may run in a decode thread while
    the previous video is on the device; ``launch`` queues the device work and returns at once. A backend
    may also score several prepared videos in one pass: ``fits(batch, prepared)``, ``batchable(prepared)``,
    ``video_batch`` and ``launch_many(batch) -> [PendingScores]`` (:class:`rankvideo.backends.hf.HFBackend`)."""

    def prepare(self, video: LoadedVideo, queries: Sequence[str], description: str | None = None): ...

    def launch(self, prepared) -> "PendingScores": ...


def is_pipelined(backend) -> bool:
    return callable(getattr(backend, "prepare", None)) and callable(getattr(backend, "launch", None))


class PendingScores:
    """One video's scores on their way from the device; :meth:`result` waits for them."""

    def __init__(self, scores: list[dict] | None = None, host=None, event=None, part_of=None):
        self._scores, self._host, self._event = scores, host, event
        self._part_of = part_of  # (the pending scores of a batch of videos, first row, end row)

    @classmethod
    def of(cls, logprobs) -> "PendingScores":
        """From a [n, 2] (log P(yes), log P(no)) tensor: on CUDA copied into pinned memory behind an
        event (nothing waits here), elsewhere read at once."""
        import torch

        if logprobs.device.type != "cuda":
            return cls(scores=scores_of(logprobs))
        host = torch.empty(logprobs.shape, dtype=logprobs.dtype, pin_memory=True)
        host.copy_(logprobs, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return cls(host=host, event=event)

    def split(self, counts: list[int]) -> list["PendingScores"]:
        """The pending scores of consecutive parts of ``counts`` rows each (videos scored in one pass)."""
        starts = [sum(counts[:i]) for i in range(len(counts))]
        return [PendingScores(part_of=(self, a, a + n)) for a, n in zip(starts, counts)]

    def result(self) -> list[dict]:
        if self._scores is None and self._part_of is not None:
            whole, start, end = self._part_of
            self._scores, self._part_of = whole.result()[start:end], None
        if self._scores is None:
            self._event.synchronize()
            self._scores = scores_of(self._host)
            self._host = self._event = None
        return self._scores


def scores_of(logprobs) -> list[dict]:
    """Score dicts of a [n, 2] (log P(yes), log P(no)) tensor on the host."""
    return [pair_scores(y, n) for y, n in logprobs.tolist()]


def pair_scores(logprob_yes: float, logprob_no: float) -> dict:
    """The four fields of one scored pair (plus the published model card's alias)."""
    delta = logprob_yes - logprob_no
    p_yes = 1.0 / (1.0 + math.exp(-delta)) if delta > -700 else 0.0
    return {"logprob_yes": logprob_yes, "logprob_no": logprob_no, "logit_delta": delta, "p_yes": p_yes}


def require_vllm() -> None:
    """A clear error where vLLM is not installed (it lives in its own environment)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ModuleNotFoundError("the vllm backend needs vLLM, which is not installed in this environment: use "
                                  "backend hf, or run from vLLM's environment (GPU: pip install vllm; CPU: "
                                  "tools/setup_vllm_cpu.sh)")


def create(name: str, model: str, **options) -> Backend:
    """A backend by name: ``hf`` (transformers) or ``vllm``."""
    if name == "hf":
        from rankvideo.backends.hf import HFBackend

        return HFBackend(model, **options)
    if name == "vllm":
        require_vllm()
        from rankvideo.backends.vllm import VLLMBackend

        return VLLMBackend(model, **options)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
