"""Small adapters from config sections to the package's objects, shared by the pipeline scripts."""

from __future__ import annotations

import os

from .video import VideoResolver, VideoSettings


def resolver(videos: dict) -> VideoResolver:
    """``{"dir", "layout", "index"}`` (dataset.videos, or the synthetic benchmark's folder)."""
    return VideoResolver(videos.get("dir"), videos.get("layout", "flat"), videos.get("index"))


def video_settings(video: dict) -> VideoSettings:
    """``{"fps", "max_frames", "tokens_per_frame"}`` → sampling and resizing settings."""
    return VideoSettings.with_tokens(video["fps"], video["max_frames"], video["tokens_per_frame"])


def apply_offline(models: dict) -> None:
    """models.offline: never contact the hub from this process."""
    if models.get("offline", True):
        os.environ["HF_HUB_OFFLINE"] = "1"


def load_options(models: dict):
    """models section → :class:`rankvideo.models.LoadOptions` (and offline mode applied)."""
    from .models import LoadOptions

    apply_offline(models)
    return LoadOptions(cache_dir=models.get("cache_dir"), trust_remote_code=models.get("trust_remote_code", False),
                       use_safetensors=not models.get("allow_pickle_weights", False))


def generator_options(settings: dict, models: dict) -> dict:
    """Constructor options of a captioning / teacher backend from its config section and models."""
    apply_offline(models)
    options = {"cache_dir": models.get("cache_dir"), "trust_remote_code": models.get("trust_remote_code", False)}
    if models.get("allow_pickle_weights"):
        options["allow_pickle_weights"] = True
    if settings["backend"] == "vllm":
        options["tensor_parallel_size"] = settings.get("tensor_parallel", 1)
    return options
