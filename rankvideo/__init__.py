"""RankVideo: a video-native reranker for text-to-video retrieval.

``from rankvideo import VLMReranker`` is the Python API; modules: ``formats`` (every file
format), ``config`` (the config schema), ``synthetic`` (the synthetic benchmark), ``first_stage``
(BM25 / imported runs), ``video`` (decoding), ``prompts`` (every prompt), ``backends`` (hf, vllm),
``rerank`` (CLI), ``evaluate`` (pytrec_eval), ``metrics`` (tables, significance, plots).
"""

__version__ = "0.1.0"
__all__ = ["VLMReranker"]


def __getattr__(name):  # import torch and transformers only when the reranker is used
    if name == "VLMReranker":
        from rankvideo.scoring.reranker import VLMReranker

        return VLMReranker
    raise AttributeError(name)
