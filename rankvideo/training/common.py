"""What both training stages share: settings, model preparation (full / LoRA / QLoRA), video
caching, the Trainer arguments, resumption and the final, self-describing checkpoint folder."""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rankvideo import logs, models, provenance
from rankvideo.data import formats
from rankvideo.video import VideoSettings, load_video

log = logging.getLogger(__name__)

#: LoRA targets of the reference: attention and MLP projections of the language model, plus the
#: vision-language projector (Qwen3-VL's "merger") where present
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROJECTOR_MODULES = ["merger"]
RECORD = "rankvideo_training.json"


@dataclass
class TrainSettings:
    """Settings of one stage (the config's ``train_stage1`` / ``train_stage2`` sections)."""

    epochs: float = 2.0
    max_steps: int = -1
    lr: float = 1e-5
    batch_size: int = 1
    grad_accum: int = 16
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    finetune: str = "lora"  # full | lora | qlora
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = True
    freeze_vision: bool = False  # full fine-tuning: keep the vision encoder (not its mergers) fixed
    bf16: bool | None = None  # None: on GPU
    seed: int = 42
    fps: float = 2.0
    max_frames: int = 32
    tokens_per_frame: int = 128
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    dataloader_workers: int | None = None  # None: see dataloader_workers()
    torch_threads: int | None = None
    extra: dict = field(default_factory=dict)  # stage-specific settings

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known},
                   extra={k: v for k, v in values.items() if k not in known})

    @classmethod
    def from_config(cls, section: dict, seed: int) -> "TrainSettings":
        """A ``train_stage1`` / ``train_stage2`` config section (video settings nested)."""
        values = {k: v for k, v in section.items() if k != "video"}
        values.update(section.get("video", {}), seed=seed)
        return cls.from_dict(values)

    def video(self) -> VideoSettings:
        return VideoSettings.with_tokens(self.fps, self.max_frames, self.tokens_per_frame)


def device_kind() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_model(model_path: str, settings: TrainSettings, options: models.LoadOptions = models.LoadOptions()):
    """(model, processor) ready to train: full fine-tuning, LoRA or QLoRA (4-bit nf4, GPU only)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if settings.finetune not in ("full", "lora", "qlora"):
        raise ValueError(f"finetune must be full, lora or qlora, not {settings.finetune!r}")
    device = device_kind()
    if settings.finetune == "qlora" and device != "cuda":
        raise RuntimeError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); use finetune: lora or full on CPU")
    models.use_linear_patch_embed()
    path = models.resolve(model_path, options)
    bf16 = settings.bf16 if settings.bf16 is not None else device == "cuda"
    kwargs = dict(options.kwargs(), dtype=torch.bfloat16 if bf16 else torch.float32,
                  use_safetensors=options.use_safetensors)
    if settings.finetune == "qlora":
        from transformers import BitsAndBytesConfig

        # The projector (Qwen3-VL's visual "merger") stays out of 4-bit: LoRA trains it in full
        # (modules_to_save), and a 4-bit copy has uint8 weights that cannot require gradients
        # ("only Tensors of floating point dtype can require gradients" in get_peft_model). Keeping
        # it in bf16 (then fp32 via prepare_model_for_kbit_training) makes qlora train exactly what
        # lora trains, only over a 4-bit base; it is ~40 M parameters of the 8B (the reference trains
        # no projector at all: its names match nothing in Qwen3-VL). A name given here replaces
        # transformers' default skips, so lm_head is named too. The patterns match the projector and
        # its children (start-anchored regex, transformers 5.x), not the deepstack mergers.
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=["lm_head", *(rf"(?:.*\.)?{m}" for m in PROJECTOR_MODULES)])
        # one whole 4-bit model per process, on this process's GPU (torchrun sets LOCAL_RANK)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    processor = AutoProcessor.from_pretrained(path, **options.kwargs())
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    if settings.finetune in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if settings.finetune == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing)
        names = {name.split(".")[-1] for name, _ in model.named_modules()}
        config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                            target_modules=[t for t in LORA_TARGETS if t in names],
                            modules_to_save=[m for m in PROJECTOR_MODULES if m in names] or None, task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        model.print_trainable_parameters()
    elif settings.freeze_vision:
        frozen = freeze_vision_encoder(model)
        log.info("vision encoder frozen: %d parameters fixed, %d trained", frozen,
                 sum(p.numel() for p in model.parameters() if p.requires_grad))
    return model, processor


def freeze_vision_encoder(model) -> int:
    """Stop gradients into the vision encoder (patch embedding, position embedding, blocks); the
    mergers that project into the language model stay trainable, as LoRA's projector modules do.
    Returns the number of parameters frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if ".visual." in f".{name}" and not any(m in name for m in PROJECTOR_MODULES):
            param.requires_grad_(False)
            frozen += param.numel()
    if not frozen:
        raise ValueError("freeze_vision: the model has no parameters under a 'visual' module")
    return frozen


def dataloader_workers(settings: TrainSettings) -> int:
    """The configured number, else on a CUDA machine min(4, this process's CPUs - 1) (the CPUs the job
    gave it, shared among the node's DDP processes), else 0."""
    if settings.dataloader_workers is not None:
        return settings.dataloader_workers
    if device_kind() != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(0, min(4, cpus - 1))


def training_arguments(settings: TrainSettings, checkpoint_dir: Path, **overrides):
    from transformers import TrainingArguments

    bf16 = settings.bf16 if settings.bf16 is not None else device_kind() == "cuda"
    overrides.setdefault("eval_strategy", "no")
    if overrides["eval_strategy"] == "steps":  # evaluate when a checkpoint is saved
        overrides.setdefault("eval_steps", settings.save_steps)
    # transformers 5.2x folded warmup_ratio into warmup_steps (a float below 1 is a ratio)
    names = {f.name for f in fields(TrainingArguments)}
    overrides["warmup_ratio" if "warmup_ratio" in names else "warmup_steps"] = settings.warmup_ratio
    return TrainingArguments(
        output_dir=str(checkpoint_dir), num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        learning_rate=settings.lr, per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
        lr_scheduler_type=settings.scheduler, weight_decay=settings.weight_decay,
        bf16=bf16, gradient_checkpointing=settings.gradient_checkpointing, seed=settings.seed, data_seed=settings.seed,
        logging_steps=settings.logging_steps, save_steps=settings.save_steps, save_total_limit=settings.save_total_limit,
        save_strategy="steps", report_to=[], remove_unused_columns=False,
        dataloader_num_workers=dataloader_workers(settings), ddp_find_unused_parameters=False,
        disable_tqdm=not logs.interactive(),  # in a log file: a line per logging step, no bar frames
        use_cpu=device_kind() == "cpu",  # without it accelerate starts no process group on CPU (torchrun + gloo)
        **overrides)


def last_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder, to resume an interrupted run from."""
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(checkpoint_dir).is_dir():
        return None
    return get_last_checkpoint(str(checkpoint_dir))


class EncodedExamples:
    """Processor outputs of (text, video) examples, each computed once per process, batched by hand.

    Re-running the processor on every batch cost ~12% of a tiny-model training step; here a video
    is decoded and turned into pixel values once (kept for at most ``max_video_bytes`` of videos,
    least recently used out first; decoded frames are not kept), an example's tokens once, and a
    batch is padded the way the processor pads (pad id, attention mask 0, token type 0) on the
    side asked for, which gives the processor's own batch exactly (tested)."""

    def __init__(self, processor, settings: VideoSettings, max_video_bytes: int = 4 << 30):
        from collections import OrderedDict

        self.processor, self.settings, self.max_video_bytes = processor, settings, max_video_bytes
        self._videos: OrderedDict = OrderedDict()
        self._video_bytes = 0  # pixel values held in _videos
        self._texts: dict = {}

    def _video(self, path: str) -> tuple:
        if path in self._videos:
            self._videos.move_to_end(path)
            return self._videos[path]
        video = load_video(path, self.settings)
        out = self.processor.video_processor(videos=[video.frames], video_metadata=[video.metadata],
                                             do_sample_frames=False, do_resize=False, return_tensors="pt")
        entry = (video, out["pixel_values_videos"], out["video_grid_thw"])
        self._videos[path] = entry
        self._video_bytes += entry[1].nbytes
        while len(self._videos) > 1 and self._video_bytes > self.max_video_bytes:
            self._video_bytes -= self._videos.popitem(last=False)[1][1].nbytes
        return entry

    def _tokens(self, text: str, path: str) -> dict:
        key = (text, path)
        if key not in self._texts:
            video = self._video(path)[0]
            out = self.processor(text=[text], videos=[video.frames], video_metadata=[video.metadata],
                                 do_sample_frames=False, do_resize=False, return_tensors="pt")
            self._texts[key] = {k: v[0] for k, v in out.items() if k not in ("pixel_values_videos", "video_grid_thw")}
        return self._texts[key]

    def batch(self, texts: list[str], video_paths: list[str], padding_side: str) -> dict:
        import torch

        rows = [self._tokens(t, p) for t, p in zip(texts, video_paths)]
        videos = [self._video(p) for p in video_paths]
        width = max(len(r["input_ids"]) for r in rows)
        pads = {"input_ids": self.processor.tokenizer.pad_token_id, "attention_mask": 0, "mm_token_type_ids": 0}
        batch = {}
        for key in rows[0]:
            padded = []
            for row in rows:
                fill = torch.full((width - len(row[key]),), pads.get(key, 0), dtype=row[key].dtype)
                padded.append(torch.cat([fill, row[key]] if padding_side == "left" else [row[key], fill]))
            batch[key] = torch.stack(padded)
        batch["pixel_values_videos"] = torch.cat([v[1] for v in videos])
        batch["video_grid_thw"] = torch.cat([v[2] for v in videos])
        return batch


def merge_adapters(model, finetune: str):
    """The trained model as plain weights: LoRA adapters merged (a no-op for full fine-tuning).

    Under QLoRA, peft's own merge re-quantises each merged weight to 4-bit, which rounds the small
    LoRA update away and leaves a bitsandbytes folder that only a CUDA machine with bitsandbytes can
    load. Instead the adapters are taken off, the 4-bit base is dequantised to bf16 (the weights the
    adapters were trained against), and the adapters are merged into that: the saved bf16 model
    computes what the trained 4-bit model computed, and loads wherever a LoRA result loads."""
    if not hasattr(model, "merge_and_unload"):
        return model
    if finetune != "qlora":
        return model.merge_and_unload()
    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    config = copy.deepcopy(model.peft_config[model.active_adapter])
    state = get_peft_model_state_dict(model)  # LoRA factors and the trained projector (modules_to_save)
    base = model.unload().dequantize(dtype=torch.bfloat16)
    again = get_peft_model(base, config)
    set_peft_model_state_dict(again, state)
    return again.merge_and_unload().to(torch.bfloat16)


def finalize(model, processor, output_dir, stage: str, base_model: str, settings: TrainSettings, data_files: dict,
             history: list[dict], extra: dict | None = None, data_hashes: dict | None = None):
    """Save a folder that the rerank rule and VLMReranker load directly: LoRA adapters merged into
    the weights, processor beside them, and ``rankvideo_training.json`` recording config, data
    hashes (``data_hashes`` if the caller has them, {name: sha256}) and code version;
    ``loss_history.json`` holds the Trainer's log. Returns the saved (merged) model."""
    output_dir = Path(output_dir)
    model = merge_adapters(model, settings.finetune)
    model.save_pretrained(output_dir, safe_serialization=True)
    processor.save_pretrained(output_dir)
    record = {"stage": stage, "base_model": base_model, "settings": asdict(settings),
              "data": {name: {"path": str(p), "sha256": (data_hashes or {}).get(name) or provenance.file_sha256(p)}
                       for name, p in data_files.items() if p},
              "code_version": provenance.code_version(), "git_commit": provenance.git_commit(), "merged_adapters": settings.finetune != "full",
              **(extra or {})}
    formats.write_json(output_dir / RECORD, record)
    formats.write_json(output_dir / "loss_history.json", history)
    log.info("saved %s model to %s", stage, output_dir)
    return model


#: settings that change no weight: a run that differs only in these may resume
_COSMETIC = ("max_steps", "epochs", "logging_steps", "save_steps", "save_total_limit", "dataloader_workers",
             "torch_threads", "extra")


def run_fingerprint(stage: str, base_model: str, settings: TrainSettings, data_files: dict, extra: dict | None) -> dict:
    return {"stage": stage, **provenance.model_fingerprint(base_model),
            "data": {name: provenance.file_sha256(p) for name, p in data_files.items() if p},
            "settings": {k: v for k, v in asdict(settings).items() if k not in _COSMETIC}, "extra": extra or {}}


def resumable_checkpoint(checkpoints: Path, fingerprint: dict, max_steps: int, is_main: bool) -> str | None:
    """The newest checkpoint when it belongs to this run; else None, and the main process removes
    the stale ones. ``run.json`` beside the checkpoints records what run they belong to: the same
    starting model, data, losses and settings (the step budget may grow: a longer run continues)."""
    import shutil

    checkpoints = Path(checkpoints)
    resume, remove_stale = last_checkpoint(checkpoints), False
    record = checkpoints / "run.json"
    previous = json.loads(record.read_text()) if record.is_file() else None
    if resume:
        step = int(Path(resume).name.split("-")[-1])
        differs = _differences(previous or {}, fingerprint)
        if previous is None or differs or 0 < max_steps < step:
            reason = ("it has no run.json" if previous is None else f"it differs in {', '.join(differs)}" if differs
                      else f"step {step} is past max_steps {max_steps}")
            log.warning("%s holds checkpoints of another run (%s): starting from the beginning", checkpoints, reason)
            resume, remove_stale = None, True
        else:
            log.info("resuming from %s", resume)
    _barrier()  # every rank has read run.json and the checkpoints before the main process changes them
    if is_main:
        for stale in checkpoints.glob("checkpoint-*") if remove_stale else ():
            shutil.rmtree(stale)
        checkpoints.mkdir(parents=True, exist_ok=True)
        formats.write_json(record, fingerprint)
    return resume


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two fingerprints."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(prefix + key)
    return out


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def train_and_save(trainer, checkpoints: Path, processor, output_dir, stage: str, base_model: str,
                   settings: TrainSettings, data_files: dict, extra: dict | None = None) -> None:
    """Train (resuming from the newest checkpoint of the same run if an earlier one was
    interrupted, see :func:`resumable_checkpoint`); rank 0 then saves the final folder
    (:func:`finalize`) and the trainer's model becomes the saved one."""
    fingerprint = run_fingerprint(stage, base_model, settings, data_files, extra)
    resume = resumable_checkpoint(checkpoints, fingerprint, settings.max_steps, trainer.is_world_process_zero())
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        trainer.model = finalize(trainer.model, processor, output_dir, stage, base_model, settings, data_files,
                                 trainer.state.log_history, extra, data_hashes=fingerprint["data"])
    _end_process_group()


def _end_process_group() -> None:
    """Under torchrun: every rank waits until the main one has saved, then the group is torn down
    in order. A rank that left with its gloo threads still running was once aborted at exit
    ("terminate called without an active exception") while the main process was still saving."""
    import torch.distributed as dist

    _barrier()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_with(error: Exception) -> int:
    """A training command's end on bad input or an I/O error: one line naming the file, status 2."""
    print(f"error: {formats.io_error_sentence(error)}", file=sys.stderr)
    return 2


def read_records(path, required: tuple[str, ...] = (), allow_empty: bool = False, reader=None) -> list[dict[str, Any]]:
    """The examples of a JSONL file: ``reader(path)`` when given (e.g. :func:`rankvideo.data.formats.read_stage1_examples`),
    else its records, each with the fields ``required``."""
    records = reader(path) if reader is not None else formats.read_jsonl(path, required)
    if not records:
        if not allow_empty:
            raise formats.FormatError(path, None, "no training examples")
        log.warning("%s: no examples; evaluation skipped", path)
    return records


def set_threads(settings: TrainSettings) -> None:
    import torch

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)
