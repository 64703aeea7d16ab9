"""RankVideo: a video-native reranker for text-to-video retrieval.

Modules: ``formats`` (every file format), ``config`` (the config schema), ``synthetic`` (the
synthetic benchmark), ``first_stage`` (BM25 / imported runs), ``evaluate`` (pytrec_eval),
``metrics`` (tables, significance, plots).
"""

__version__ = "0.1.0"
