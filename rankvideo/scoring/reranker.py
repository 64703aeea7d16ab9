"""``VLMReranker``: the Python API (as the published code documents it) over a scoring backend.

    from rankvideo import VLMReranker
    reranker = VLMReranker(model_path="hltcoe/RankVideo", cache_dir=None, backend="hf")
    scores = reranker.score_batch(["a red circle", "a blue square"], ["v1.mp4", "v1.mp4"], fps=2.0, max_frames=32)
    scores[0]["logit_delta"], scores[0]["p_yes"]
    ranked = reranker.rank("a red circle", ["v1.mp4", "v2.mp4", "v3.mp4"], top_k=2)  # best first

A model trained with video descriptions (``descriptions.enabled``) needs them at scoring too:
``score_batch(..., descriptions=[...])`` (one per pair) or ``score_video(video, queries, description)``.

Pairs are grouped by video: each distinct video is decoded once per call and all of its queries
are scored together (sharing the video's prefix in the HF backend, the prefix cache in vLLM).
"""

from __future__ import annotations

from typing import Sequence

from rankvideo import backends, models, prompts
from rankvideo.scoring.rerank import needs_descriptions, resolve_answer_tokens, training_record
from rankvideo.video import LoadedVideo, VideoSettings, load_video


class VLMReranker:
    def __init__(self, model_path: str, cache_dir: str | None = None, backend: str = "hf", *,
                 prompt_variant: str = "default", fps: float = 2.0, max_frames: int = 32, tokens_per_frame: int = 128,
                 video_settings: VideoSettings | None = None, answer_tokens: str = "auto", **backend_options):
        record = training_record(model_path)
        self.needs_descriptions = needs_descriptions(model_path, record)
        self.backend = backends.create(backend, model_path, cache_dir=cache_dir, prompt_variant=prompt_variant,
                                       answer_tokens=resolve_answer_tokens(model_path, answer_tokens, record),
                                       **backend_options)
        self.video_settings = video_settings or VideoSettings.with_tokens(fps, max_frames, tokens_per_frame)
        models.warn_below_paper(model_path, self.video_settings)

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    def _settings(self, fps: float | None, max_frames: int | None) -> VideoSettings:
        settings = self.video_settings
        if fps is None and max_frames is None:
            return settings
        values = settings.to_dict()
        values["fps"] = fps if fps is not None else settings.fps
        if max_frames is not None:
            per_frame = settings.max_pixels or settings.min_pixels
            values["max_frames"] = max_frames
            if settings.total_pixels and per_frame:
                values["total_pixels"] = max_frames * per_frame
        return VideoSettings(**values)

    def _videos(self, video_paths: Sequence[str], settings: VideoSettings) -> dict[str, LoadedVideo]:
        return {path: load_video(path, settings) for path in dict.fromkeys(video_paths)}

    def _check_descriptions(self, descriptions: Sequence[str | None]) -> None:
        """A model trained with descriptions refuses a pair without one."""
        if self.needs_descriptions and any(d is None for d in descriptions):
            raise ValueError(f"{self.model_name} was trained with a description of each video before the query; "
                             "pass one for every pair (score_batch(..., descriptions=[...]) / score_video(..., description))")

    def score_video(self, video: LoadedVideo, queries: Sequence[str], description: str | None = None) -> list[dict]:
        """Scores of several queries for one decoded video (see :func:`rankvideo.video.load_video`),
        each shown with the video's ``description`` when given."""
        self._check_descriptions([description])
        return [_with_alias(s) for s in self.backend.score_video(video, queries, description)]

    def score_batch(self, queries: Sequence[str], video_paths: Sequence[str], fps: float | None = None,
                    max_frames: int | None = None, descriptions: Sequence[str] | None = None) -> list[dict]:
        """One dict per (query, video path) pair: logprob_yes, logprob_no, logit_delta, p_yes
        (and ``logit_delta_yes_minus_no``, the published model card's name for logit_delta).
        ``descriptions``: one per pair, its video's description (for a model trained with them)."""
        if len(queries) != len(video_paths):
            raise ValueError(f"{len(queries)} queries but {len(video_paths)} video paths")
        if descriptions is not None and len(descriptions) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(descriptions)} descriptions")
        descriptions = list(descriptions) if descriptions is not None else [None] * len(queries)
        self._check_descriptions(descriptions)
        videos = self._videos(video_paths, self._settings(fps, max_frames))
        groups: dict[tuple[str, str | None], list[int]] = {}  # one backend call per (video, description)
        for index, key in enumerate(zip(video_paths, descriptions)):
            groups.setdefault(key, []).append(index)
        results: list[dict | None] = [None] * len(queries)
        for (path, description), indices in groups.items():
            scores = self.backend.score_video(videos[path], [queries[i] for i in indices], description)
            for index, score in zip(indices, scores):
                results[index] = _with_alias(score)
        return results  # type: ignore[return-value]

    def rank(self, query: str, video_paths: Sequence[str], top_k: int | None = None, fps: float | None = None,
             max_frames: int | None = None, descriptions: Sequence[str] | None = None) -> list[dict]:
        """The videos ``video_paths`` ranked for ``query``, best first (by ``logit_delta``; equal scores
        keep the order given, e.g. the first stage's), cut to ``top_k`` when given. Each result is
        ``{"video_path", "rank" (1 = best), logprob_yes, logprob_no, logit_delta, p_yes}``.
        ``descriptions``: one per video (for a model trained with them)."""
        paths = [str(path) for path in video_paths]
        from collections import Counter

        repeated = sorted(path for path, n in Counter(paths).items() if n > 1)
        if repeated:
            raise ValueError(f"video path(s) listed twice: {', '.join(repeated[:3])}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1 (or None for all), not {top_k}")
        scores = self.score_batch([query] * len(paths), paths, fps=fps, max_frames=max_frames, descriptions=descriptions)
        order = sorted(range(len(paths)), key=lambda i: -scores[i]["logit_delta"])
        return [{"video_path": paths[i], "rank": rank, **scores[i]} for rank, i in enumerate(order[:top_k], start=1)]

    def generate_batch(self, prompts_text: Sequence[str], video_paths: Sequence[str | None], max_new_tokens: int = 256,
                       system: str | None = None, fps: float | None = None, max_frames: int | None = None) -> list[str]:
        """Greedy answers to user prompts about videos (video first, then the prompt text)."""
        if len(prompts_text) != len(video_paths):
            raise ValueError(f"{len(prompts_text)} prompts but {len(video_paths)} video paths")
        videos = self._videos([p for p in video_paths if p is not None], self._settings(fps, max_frames))
        answers = []
        for text, path in zip(prompts_text, video_paths):
            content = ([{"type": "video"}] if path is not None else []) + [{"type": "text", "text": text}]
            messages = [{"role": "system", "content": [{"type": "text", "text": system or prompts.SYSTEM_PREFIX}]},
                        {"role": "user", "content": content}]
            answers.append(self.backend.generate(videos.get(path) if path else None, messages, max_new_tokens))
        return answers


def _with_alias(score: dict) -> dict:
    return {**score, "logit_delta_yes_minus_no": score["logit_delta"]}
