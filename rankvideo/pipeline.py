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
        options["tensor_parallel_size"] = settings.get("tensor_parallel") or 1
    return options


def job_gpus(resources) -> int:
    """GPUs a Snakemake job asked for: its ``gpu`` resource, or the count in ``gres`` ("gpu:a100:2");
    0 when it names none."""
    gpu = resources.get("gpu") if resources is not None else None
    if gpu:
        return int(gpu)
    gres = str(resources.get("gres") or "") if resources is not None else ""
    for item in filter(None, gres.split(",")):
        parts = item.split(":")
        if parts[0] == "gpu":
            return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return 0


def with_tensor_parallel(settings: dict, resources, rule: str) -> dict:
    """A captions / teacher / rerank section whose ``tensor_parallel`` is set: null takes the job's GPUs
    (1 without); a number must fit in them when the job names its GPUs on a CUDA machine."""
    gpus = job_gpus(resources)
    size = settings.get("tensor_parallel") or max(1, gpus)
    if settings.get("backend") == "vllm" and gpus and size > gpus and _cuda_available():
        raise ValueError(f"{rule}: tensor_parallel is {size} but the job has {gpus} GPU(s) (resources gpu/gres); "
                         f"give the rule {size} GPUs (slurm/config.yaml set-resources) or set tensor_parallel: null")
    return dict(settings, tensor_parallel=size)


def train_processes(settings: dict, resources) -> int:
    """Training processes of a train rule: the config's ``processes``, else one per GPU of the job
    (``gpu`` resource) on a CUDA machine, else 1."""
    if not _cuda_available():
        return int(settings.get("processes") or 1)
    import torch

    processes = int(settings.get("processes") or job_gpus(resources) or 1)
    if processes > torch.cuda.device_count():
        raise ValueError(f"{processes} training processes (processes / resources gpu) but only "
                         f"{torch.cuda.device_count()} GPU(s) are visible to the job")
    return processes


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
