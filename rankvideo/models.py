"""Loading models and processors: a local folder or a hub id, ``cache_dir``, offline mode.

Nothing is downloaded when ``HF_HUB_OFFLINE=1`` (or ``local_files_only=True``); a name that is
neither a local folder nor in the cache then fails with one sentence. ``trust_remote_code`` is off
and only safetensors weights load unless the caller turns them on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rankvideo.video import VideoSettings

log = logging.getLogger(__name__)


class ModelNotFoundError(OSError):
    """A model name that is neither a local folder nor available from the hub or its cache."""


@dataclass(frozen=True)
class LoadOptions:
    cache_dir: str | None = None
    local_files_only: bool | None = None  # None: follow HF_HUB_OFFLINE
    trust_remote_code: bool = False
    use_safetensors: bool = True
    revision: str | None = None

    def offline(self) -> bool:
        if self.local_files_only is not None:
            return self.local_files_only
        return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")

    def kwargs(self) -> dict:
        return {"cache_dir": self.cache_dir, "local_files_only": self.offline(),
                "trust_remote_code": self.trust_remote_code, "revision": self.revision}


def apply_offline(models: dict) -> None:
    """The config's models section: ``offline`` (default true) = never contact the hub from this process."""
    if models.get("offline", True):
        os.environ["HF_HUB_OFFLINE"] = "1"


def load_options(models: dict) -> LoadOptions:
    """The config's models section → :class:`LoadOptions` (offline mode applied)."""
    apply_offline(models)
    return LoadOptions(cache_dir=models.get("cache_dir"), trust_remote_code=models.get("trust_remote_code", False),
                       use_safetensors=not models.get("allow_pickle_weights", False))


def generator_options(settings: dict, models: dict) -> dict:
    """Constructor options of a captioning / teacher backend from its config section and the models section."""
    apply_offline(models)
    options = {"cache_dir": models.get("cache_dir"), "trust_remote_code": models.get("trust_remote_code", False)}
    if models.get("allow_pickle_weights"):
        options["allow_pickle_weights"] = True
    if settings["backend"] == "vllm":
        options["tensor_parallel_size"] = settings.get("tensor_parallel") or 1
    return options


def resolve(name_or_path: str | os.PathLike, options: LoadOptions = LoadOptions()) -> str:
    """A local folder as is; a hub id checked against the cache (offline) or left to the hub."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model folder {path} has no config.json")
        if options.use_safetensors and not any(path.glob("*.safetensors")):
            raise ModelNotFoundError(f"model folder {path} has no *.safetensors weights (other weight formats are "
                                     "not loaded unless allowed: allow_pickle_weights)")
        return str(path)
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model path {path} is not a folder")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, cache_dir=options.cache_dir, revision=options.revision,
                                 local_files_only=options.offline())
    except Exception as error:  # the hub raises many kinds; the user needs one sentence
        where = f"the Hugging Face cache ({options.cache_dir or 'default location'})"
        mode = "offline mode is on (HF_HUB_OFFLINE=1)" if options.offline() else f"the hub could not provide it ({type(error).__name__})"
        raise ModelNotFoundError(f"model {name!r} is neither a local folder nor in {where}, and {mode}") from None


def prefetch_weights(name_or_path, options: LoadOptions = LoadOptions()):
    """Read a model's weight files once in a background thread, so that they come from the page cache
    when the model loads: reading overlaps the imports that come before the load (a shared file system
    reads an 8B model's 17.5 GB slower than a process imports torch and transformers; the reads release
    the GIL). A local folder, or a hub id in offline mode (its cached snapshot); anything else is left
    alone. ``posix_fadvise(WILLNEED)`` would cost no copying but was seen to read nothing ahead. Returns
    the thread, or None."""
    import threading

    path = Path(name_or_path).expanduser()
    if not (path.is_dir() or options.offline()):
        return None

    def read_ahead():
        try:
            folder = Path(resolve(name_or_path, options))
        except Exception:  # noqa: BLE001 - the load that follows reports it
            return
        try:
            files = sorted(folder.glob("*.safetensors"))
            # not when the weights would not fit in half the free memory (they would evict each other)
            if sum(f.stat().st_size for f in files) > os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2:
                return
            buffer = bytearray(1 << 24)
            for weights in files:
                with open(weights, "rb", buffering=0) as handle:
                    while handle.readinto(buffer):
                        pass
        except (OSError, ValueError, AttributeError):  # AttributeError: no os.sysconf
            return

    thread = threading.Thread(target=read_ahead, name="rankvideo-prefetch", daemon=True)
    thread.start()
    return thread


#: a language model at least this wide is a real one (the tiny models built here are 128 wide)
REAL_MODEL_HIDDEN_SIZE = 1024


def is_real_model(name_or_path) -> bool:
    """False for a local folder whose config says the language model is narrower than
    :data:`REAL_MODEL_HIDDEN_SIZE` (the tiny models this project builds), True otherwise (hub ids
    and real checkpoints)."""
    import json

    config_path = Path(name_or_path).expanduser() / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    hidden = (config.get("text_config") or {}).get("hidden_size", config.get("hidden_size"))
    return not isinstance(hidden, int) or hidden >= REAL_MODEL_HIDDEN_SIZE


def warn_below_paper(name_or_path, settings) -> str | None:
    """Log (and return) a warning when a real model is fed fewer visual tokens than the paper's
    video setting (2 fps, 32 frames of 128 tokens): its scores are then not the paper's."""

    paper = VideoSettings.paper()
    if not is_real_model(name_or_path):
        return None
    short = [f"{name} {getattr(settings, name)} < {getattr(paper, name)}"
             for name in ("max_frames", "max_pixels", "total_pixels")
             if getattr(settings, name) is not None and getattr(settings, name) < getattr(paper, name)]
    if not short:
        return None
    message = (f"{name_or_path} is scored with fewer visual tokens than the paper (32 frames of 128 tokens at 2 fps): "
               f"{', '.join(short)}; set the video settings (config rerank.video / --max-frames, --tokens-per-frame) "
               "to the paper's to reproduce its numbers")
    log.warning(message)
    return message


def torch_dtype(name: str | None, device: str):
    import torch

    if name in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use float32, bfloat16 or float16") from None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def use_linear_patch_embed() -> None:
    """Run Qwen3-VL's patch embedding as one matrix product.

    The embedding is a Conv3d whose kernel equals its stride, so it is the linear map of each
    flattened (channel, time, row, column) patch; as a convolution its backward dominated a
    training step on CPU (~60 ms of ~200 for the tiny model). Same weights, same outputs (up to
    summation order); applied to the class, once, by every loader in this package."""
    import torch.nn.functional as F
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    embed = modeling_qwen3_vl.Qwen3VLVisionPatchEmbed
    if getattr(embed, "rankvideo_linear", False):
        return

    def forward(self, hidden_states):
        weight = self.proj.weight
        patches = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
        return F.linear(patches, weight.reshape(weight.shape[0], -1), self.proj.bias)

    embed.forward, embed.rankvideo_linear = forward, True


def model_type(path, options: LoadOptions = LoadOptions()) -> str:
    """The ``model_type`` of a resolved model folder's config.json."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, **options.kwargs()).model_type


def load_vlm(name_or_path, options: LoadOptions = LoadOptions(), device: str | None = None, dtype: str | None = None,
             attn_implementation: str | None = None):
    """(model, processor) of a video-language model, in eval mode on ``device``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    use_linear_patch_embed()
    path = resolve(name_or_path, options)
    device = device or default_device()
    log.info("loading %s on %s", name_or_path, device)
    kwargs = options.kwargs()
    processor = AutoProcessor.from_pretrained(path, **kwargs)
    omni = model_type(path, options) == "qwen3_omni_moe"  # Qwen3-Omni: not an image-text-to-text auto class
    if omni:
        from transformers import Qwen3OmniMoeForConditionalGeneration as model_class
    else:
        model_class = AutoModelForImageTextToText
    model = model_class.from_pretrained(
        path, dtype=torch_dtype(dtype, device), use_safetensors=options.use_safetensors,
        **({"attn_implementation": attn_implementation} if attn_implementation else {}), **kwargs)
    if omni:  # text output only: its thinker (video/audio/text in, text out), without the speech talker
        generation_config, model = model.generation_config, model.thinker
        model.generation_config = generation_config
    model.to(device).eval()
    log.info("loaded %s (%s, %s) on %s", name_or_path, type(model).__name__, model.dtype, device)
    return model, processor


def load_causal_lm(name_or_path, options: LoadOptions = LoadOptions(), device: str | None = None,
                   dtype: str | None = None):
    """(model, tokenizer) of a text LLM (the teacher), in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name_or_path, options)
    device = device or default_device()
    kwargs = options.kwargs()
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype, device),
                                                 use_safetensors=options.use_safetensors, **kwargs)
    model.to(device).eval()
    return model, tokenizer


def model_name(name_or_path) -> str:
    """A short name for output files: the folder's or hub id's last part."""
    return Path(str(name_or_path).rstrip("/")).name or "model"
