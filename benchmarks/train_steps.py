"""Training steps of both stages on a random-weight Qwen3-VL-8B-shape model: LoRA and QLoRA,
step time, tokens/s, peak memory and MFU, and an estimate of the paper's training time.

One run on one card (issue 24, "QLoRA runs" and "Stage-2 training throughput"):

1. builds a random-weight model of the exact Qwen3-VL-8B-Instruct shape, bf16, with the helpers of
   ``benchmarks/score_per_video.py`` (local BPE tokenizer, Qwen3-VL processor) and saves it with
   ``save_pretrained`` (on /dev/shm when it has room), so that the training entry points load it as
   any model folder;
2. encodes a few mp4 clips (PyAV, 512x256, 24 fps, 16 s) and copies them to a distinct path per
   training example, so that every example of the timed steps is decoded by
   ``rankvideo.video.load_video`` as in a real run (the encoded-example cache never hits);
3. runs stage 1 (``rankvideo.training.stage1.train``: caption SFT, 32 frames) and stage 2
   (``rankvideo.training.stage2.train``: one query group of 1 positive + 1 negative per batch, 24
   frames, the default loss) with ``finetune: lora`` and ``qlora``, gradient checkpointing, bf16,
   ``--steps`` optimizer steps of ``--grad-accum`` batches each, through the real ``train()``
   functions (model preparation, Trainer, final merge and save included); a TrainerCallback,
   registered from here, synchronises the GPU at each optimizer step's start and end and counts the
   tokens that reach the model (a forward pre-hook); the first step is warm-up and left out;
4. FLOPs per sequence come from ``score_per_video.flop_model`` (forward: 2 x weights per token of
   every linear layer, causal attention, the vision tower over the sequence's video, lm_head where
   logits are taken: the answer position in stage 2, every position in stage 1), then per training
   step (:func:`step_flops`): model FLOPs = 2 x the decoder layers' and lm_head's forward (forward +
   activation gradients: their weights are frozen, so no weight gradients; LoRA's and the merger's
   weight gradients, <1%, are left out) + 1 x the vision tower (no gradient reaches it: nothing
   before the merger trains); hardware FLOPs add the decoder layers' recomputation under gradient
   checkpointing (3 x in all). MFU / HFU = those / (step time x the bf16 matmul peak measured on the
   card, 8192^3 products);
5. estimates the paper's 2 epochs over MultiVENT-sized data on 1, 4 and 8 GPUs from the one-GPU time per
   batch, assuming linear DDP scaling (see ``ESTIMATE``; it is an estimate, not a measurement).

Usage::

    python benchmarks/train_steps.py --out DIR [--runs stage2:lora,stage2:qlora,stage1:lora,stage1:qlora,stage2:lora:w4]
        [--steps 6 --grad-accum 4] [--budget-s 450]      # ...:wN = N dataloader workers (default 0)
    python benchmarks/train_steps.py --out DIR --tiny          # CPU smoke test (qlora: its clear error)
    python benchmarks/train_steps.py --report DIR/train_steps_<card>.json   # rewrite the .md

On the GPU machine PyAV, qwen-vl-utils and bitsandbytes come as wheels (see the device notes).
Writes ``DIR/train_steps_<card>.json`` and ``.md`` after every run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import logging
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import score_per_video as spv  # noqa: E402
from rankvideo.data import formats
from rankvideo.demo import tiny_model# noqa: E402

log = logging.getLogger("train_steps")

#: the paper's data, MultiVENT-sized (assumptions of the estimate, not measured here):
#: 3,906 MultiVENT 2.0 queries, of which about 2,549 are the judged test queries (REFERENCE.md), so
#: ~1,357 training queries; stage 2 takes one query group per query and epoch (the reference's sampler;
#: an upper bound: queries without both labels are left out); stage 1 one example per video among the
#: top-20 training candidates (training_data depth 20; an upper bound: videos shared by queries count once)
ESTIMATE = {"train_queries": 3906 - 2549, "depth": 20, "epochs": 2, "gpus": [1, 4, 8],
            "grad_accum": {"stage1": 16, "stage2": 8}}
STAGE_FRAMES = {"stage1": 32, "stage2": 24}
DDP_NOTE = ("benchmarks/results/ddp_stage2_nvidia-h200-x2.md: 2 ranks x 1 group per step ran 6 steps in "
            "1.81 s against 1.87 s for 1 process x 2 groups (tiny model): no measurable DDP overhead at 2 GPUs")


# ----------------------------------------------------------------------------- inputs


def build_model_folder(folder: Path, shape: dict, device: str, dtype) -> tuple[dict, object]:
    """Random-weight model of ``shape`` + processor saved to ``folder`` (score_per_video's helpers)."""
    t0 = time.perf_counter()
    tokenizer = tiny_model.build_tokenizer()
    processor = spv.build_processor(tokenizer)
    model, _ = spv.build_model(shape, tokenizer, device, dtype, attn="sdpa")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tiny_model.SPECIAL_TOKENS}
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    built = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    saved = time.perf_counter() - t0 - built
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"params": params, "vision_params": vision, "build_s": built, "save_s": saved, "folder": str(folder),
            "tokenizer_size": len(tokenizer)}, tokenizer


def make_clips(workdir: Path, count: int, tiny: bool) -> list[Path]:
    """``count`` distinct mp4 clips (16 s: 32 frames at 2 fps; score_per_video.make_mp4)."""
    width, height = (256, 128) if tiny else (512, 256)
    seconds = 6.0 if tiny else 16.0
    clips = []
    for i in range(count):
        path = workdir / f"clip{i}.mp4"
        spv.make_mp4(path, seconds=seconds, fps=24, width=width, height=height, seed=i)
        clips.append(path)
    return clips


def example_videos(clips: list[Path], folder: Path, n: int) -> list[str]:
    """``n`` distinct paths (copies of the clips in turn): each example's video is decoded anew."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"v{i:04d}.mp4"
        shutil.copyfile(clips[i % len(clips)], path)
        paths.append(str(path))
    return paths


def write_data(root: Path, tokenizer, clips: list[Path], n_stage1: int, n_groups: int, seed: int = 0) -> dict:
    """stage1.jsonl (one caption per video) and stage2.jsonl (``n_groups`` queries, each 1 positive and
    2 negatives, so that the reference sampler draws one group per query and epoch)."""
    rng = random.Random(seed)
    videos1 = example_videos(clips, root / "videos1", n_stage1)
    captions = spv.make_queries(tokenizer, n_stage1, seed=seed, target_tokens=120)  # ~3-6 sentences
    formats.write_jsonl(root / "stage1.jsonl", [{"doc_id": f"d{i}", "videos": [v], "caption": c}
                                                for i, (v, c) in enumerate(zip(videos1, captions))])
    videos2 = example_videos(clips, root / "videos2", 3 * n_groups)
    queries = spv.make_queries(tokenizer, n_groups, seed=seed + 1, target_tokens=20)
    rows = []
    for q, query in enumerate(queries):
        for k in range(3):
            rows.append({"query_id": f"q{q}", "query": query, "doc_id": f"q{q}d{k}", "videos": [videos2[3 * q + k]],
                         "true_label": 1 if k == 0 else 0, "teacher_p_yes": round(rng.random(), 3)})
    formats.write_jsonl(root / "stage2.jsonl", rows)
    return {"stage1": root / "stage1.jsonl", "stage2": root / "stage2.jsonl"}


# ----------------------------------------------------------------------------- measuring


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Optimizer-step times (GPU synchronised), tokens per step and memory of the current run."""

        def __init__(self):
            self.reset()

        def reset(self):
            self.record: dict = {"steps": []}
            self._hook, self._sequences, self._t0 = None, [], None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            sync()
            self.record["train_begin"] = time.perf_counter()
            if torch.cuda.is_available():
                self.record["weights_gib"] = torch.cuda.memory_allocated() / 2 ** 30
                torch.cuda.reset_peak_memory_stats()
            self.record["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.record["param_dtypes"] = sorted({str(p.dtype) for p in model.parameters()})

            def count(module, call_args, call_kwargs):
                mask, grid = call_kwargs.get("attention_mask"), call_kwargs.get("video_grid_thw")
                if mask is None:
                    return
                lengths = mask.sum(dim=1).tolist()
                grids = [tuple(int(x) for x in g) for g in grid.tolist()] if grid is not None else [None] * len(lengths)
                self._sequences += [(int(n), g) for n, g in zip(lengths, grids)]

            self._hook = model.register_forward_pre_hook(count, with_kwargs=True)
            self._last_end = time.perf_counter()

        # Trainer fetches a step's grad-accum batches (decoding their videos) before on_step_begin:
        # begin -> end is the step's compute; end -> end, the whole step with its data loading
        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self._t0, self._sequences = time.perf_counter(), []

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            now = time.perf_counter()
            self.record["steps"].append({"seconds": now - self._last_end, "compute_seconds": now - self._t0,
                                         "sequences": list(self._sequences)})
            self._last_end = now

        def on_train_end(self, args, state, control, **kwargs):
            sync()
            self.record["train_end"] = time.perf_counter()
            if torch.cuda.is_available():
                self.record["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
                self.record["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2 ** 30
            if self._hook is not None:
                self._hook.remove()
            self.record["losses"] = [e["loss"] for e in state.log_history if "loss" in e]

    return StepTimer()


def step_flops(shape: dict, sequences: list, stage: str) -> tuple[float, float]:
    """(model, hardware) FLOPs of one training step of LoRA / QLoRA with gradient checkpointing.

    Per sequence, from the analytic forward (``flop_model``): decoder layers (linear + attention) 2x
    forward for the model FLOPs (forward + activation gradients), 3x for the hardware FLOPs (+ their
    recomputation); lm_head 2x (not checkpointed), at one position in stage 2 and at every position
    in stage 1 (the causal-LM loss); vision tower 1x (no gradient reaches it)."""
    model = hardware = 0.0
    lm_head = 2 * shape["text"]["hidden_size"] * shape["text"]["vocab_size"]
    for length, grid in sequences:
        f = spv.flop_model(shape, grid or (0, 0, 0), 0, [], length)
        vision = f["vision"] if grid else 0.0
        layers = f["per_pair_each"] - f["vision"] - lm_head
        logits = lm_head * (length if stage == "stage1" else 1)
        model += 2 * layers + 2 * logits + vision
        hardware += 3 * layers + 2 * logits + vision
    return model, hardware


def summarise(record: dict, shape: dict, stage: str, grad_accum: int, peak_tflops: float | None) -> dict:
    timed = record["steps"][1:] or record["steps"]  # the first step is warm-up
    seconds = [s["seconds"] for s in timed]
    compute = [s.get("compute_seconds", s["seconds"]) for s in timed]
    tokens = [sum(n for n, _ in s["sequences"]) for s in timed]
    flops = [step_flops(shape, s["sequences"], stage) for s in timed]
    model_flops, hardware_flops = [f[0] for f in flops], [f[1] for f in flops]
    step_s = statistics.median(seconds)
    out = {"timed_steps": len(timed), "step_s": step_s, "step_s_all": [round(s, 3) for s in seconds],
           "compute_s": statistics.median(compute), "compute_s_all": [round(s, 3) for s in compute],
           "batch_s": step_s / grad_accum, "sequences_per_step": statistics.median(len(s["sequences"]) for s in timed),
           "tokens_per_step": statistics.median(tokens), "tokens_per_s": sum(tokens) / sum(seconds),
           "tflop_per_step": statistics.median(model_flops) / 1e12,
           "achieved_tflops": sum(model_flops) / sum(seconds) / 1e12,
           "hardware_tflop_per_step": statistics.median(hardware_flops) / 1e12,
           "hardware_tflops": sum(hardware_flops) / sum(seconds) / 1e12,
           "visual_tokens_per_sequence": (lambda g: g[0] * g[1] * g[2] // 4 if g else 0)(timed[0]["sequences"][0][1])}
    if peak_tflops:
        out["mfu"] = out["achieved_tflops"] / peak_tflops
        out["hfu"] = out["hardware_tflops"] / peak_tflops
        out["mfu_compute"] = sum(model_flops) / sum(compute) / 1e12 / peak_tflops
    return out


def estimate(results: list[dict], gpus: list[int]) -> list[dict]:
    """2 epochs over MultiVENT-sized data from the one-GPU time per batch, linear in GPUs."""
    rows = []
    for r in results:
        if "summary" not in r:
            continue
        stage = r["stage"]
        q = ESTIMATE["train_queries"]
        batches = ESTIMATE["epochs"] * (q if stage == "stage2" else q * ESTIMATE["depth"])
        hours = batches * r["summary"]["batch_s"] / 3600
        rows.append({"stage": stage, "finetune": r["finetune"], "workers": r.get("workers", 0), "batches": batches,
                     "batch_s": r["summary"]["batch_s"], "hours": {n: hours / n for n in gpus}})
    return rows


# ----------------------------------------------------------------------------- main


def run_one(stage: str, finetune: str, workers: int, data: dict, model_dir: Path, outputs: Path, args, timer,
            shape) -> dict:
    from rankvideo.training import stage1 as train_perception, stage2 as train_reranker
    from rankvideo.training.common import TrainSettings
    from rankvideo.training.losses import LossWeights

    frames = 8 if args.tiny else STAGE_FRAMES[stage]
    settings = TrainSettings(finetune=finetune, max_steps=args.steps, grad_accum=args.grad_accum, batch_size=1,
                             lr=1e-5, warmup_ratio=0.0, logging_steps=1, save_steps=10 ** 6, gradient_checkpointing=True,
                             fps=2.0, max_frames=frames, tokens_per_frame=8 if args.tiny else 128, seed=42,
                             dataloader_workers=workers,
                             extra={"groups_per_batch": 1, "grouping": "reference"} if stage == "stage2" else {})
    out_dir = outputs / f"{stage}_{finetune}_w{workers}"
    result: dict = {"stage": stage, "finetune": finetune, "workers": workers, "frames": frames,
                    "grad_accum": args.grad_accum,
                    "steps": args.steps, "batch": "1 query group (1 positive + 1 negative)" if stage == "stage2"
                    else "1 video + caption"}
    timer.reset()
    start = time.perf_counter()
    try:
        if stage == "stage1":
            train_perception.train(str(model_dir), data["stage1"], None, out_dir, settings)
        else:
            train_reranker.train(str(model_dir), data["stage2"], None, out_dir, settings, LossWeights(), num_negs=1)
    except Exception as error:  # recorded: the other runs go on
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc()[-4000:]
        log.error("%s %s failed:\n%s", stage, finetune, result["traceback"])
    end = time.perf_counter()
    record = timer.record
    if "train_begin" in record:
        result["load_s"] = record["train_begin"] - start
    if "train_end" in record:
        result["train_s"] = record["train_end"] - record["train_begin"]
        result["save_s"] = end - record["train_end"]
    for key in ("weights_gib", "peak_gib", "peak_reserved_gib", "trainable_params", "param_dtypes", "losses"):
        if key in record:
            result[key] = record[key]
    if record["steps"]:
        result["summary"] = summarise(record, shape, stage, args.grad_accum, args.peak_tflops)
        result["step_sequences"] = [[[n, list(g) if g else None] for n, g in s["sequences"]] for s in record["steps"]]
    if out_dir.is_dir():
        result["saved_gib"] = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) / 2 ** 30
        config = json.loads((out_dir / "config.json").read_text()) if (out_dir / "config.json").is_file() else {}
        result["saved_quantization"] = (config.get("quantization_config") or {}).get("quant_method")
        shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(out_dir.with_name(out_dir.name + ".checkpoints"), ignore_errors=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, help="model folder, videos, outputs (default: /dev/shm if roomy)")
    parser.add_argument("--runs", default="stage2:lora,stage2:qlora,stage1:lora,stage1:qlora,stage2:lora:w4,"
                                          "stage1:lora:w4", help="stage:finetune[:wN] (N dataloader workers), ...")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is warm-up)")
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--budget-s", type=float, default=450.0, help="start no run after this many seconds")
    parser.add_argument("--tiny", action="store_true", help="tiny shape on CPU (smoke test)")
    parser.add_argument("--report", type=Path, help="rewrite the markdown of this JSON result and stop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.report:
        result = json.loads(args.report.read_text())
        write_markdown(result, args.report.with_suffix(".md"))
        return 0
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.tiny
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    shape = spv.TINY if args.tiny else spv.QWEN3_VL_8B
    card = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    slug = ("tiny-" if args.tiny else "") + "".join(c if c.isalnum() else "-" for c in card.lower()).strip("-")
    out = args.out or Path("benchmarks-out")
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"train_steps_{slug}.json"
    if args.work:
        work = args.work
    elif cuda and Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 45 * 2 ** 30:
        work = Path("/dev/shm/train_steps")
    else:
        work = Path(tempfile.mkdtemp(prefix="train_steps_"))
    work.mkdir(parents=True, exist_ok=True)
    import transformers
    import peft

    versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
                "peft": peft.__version__, "python": platform.python_version()}
    try:
        import bitsandbytes

        versions["bitsandbytes"] = bitsandbytes.__version__
    except Exception as error:  # noqa: BLE001 (recorded)
        versions["bitsandbytes"] = f"not importable ({type(error).__name__})"
    result: dict = {"card": card, "device": device, "shape": "tiny" if args.tiny else "Qwen3-VL-8B",
                    "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "versions": versions,
                    "work": str(work), "steps": args.steps, "grad_accum": args.grad_accum, "runs": [],
                    "estimate_assumptions": ESTIMATE, "ddp_note": DDP_NOTE}

    def save():
        result["estimate"] = estimate(result["runs"], ESTIMATE["gpus"])
        json_path.write_text(json.dumps(result, indent=1, default=str))
        write_markdown(result, json_path.with_suffix(".md"))

    if cuda:
        result["matmul_peak"] = spv.matmul_peak("cuda", 8192)
        args.peak_tflops = result["matmul_peak"]["tflops"]
        log.info("bf16 matmul peak %.0f TFLOP/s", args.peak_tflops)
    else:
        args.peak_tflops = None
        torch.set_num_threads(1)
    model_dir = work / "vlm"
    result["model"], tokenizer = build_model_folder(model_dir, shape, device, dtype)
    log.info("model folder: %s", result["model"])
    n = args.steps * args.grad_accum
    t0 = time.perf_counter()
    clips = make_clips(work, 4, args.tiny)
    data = write_data(work, tokenizer, clips, n_stage1=n, n_groups=n)
    result["videos_s"] = time.perf_counter() - t0
    save()
    import transformers.trainer as hf_trainer

    timer = make_step_timer()
    hf_trainer.DEFAULT_CALLBACKS.append(timer)  # every Trainer built from here on reports to it
    for spec in [s for s in args.runs.split(",") if s]:
        stage, finetune, *rest = spec.split(":")
        workers = int(rest[0].lstrip("w")) if rest else 0
        if time.perf_counter() - t_start > args.budget_s:
            result["runs"].append({"stage": stage, "finetune": finetune, "workers": workers,
                                   "error": "not run: time budget spent"})
            continue
        log.info("run %s %s, %d dataloader workers", stage, finetune, workers)
        result["runs"].append(run_one(stage, finetune, workers, data, model_dir, work / "outputs", args, timer, shape))
        save()
    result["total_s"] = time.perf_counter() - t_start
    save()
    if str(work).startswith("/dev/shm") or not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(json_path.with_suffix(".md").read_text())
    return 0


# ----------------------------------------------------------------------------- report


def _f(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def write_markdown(r: dict, path: Path) -> None:
    v = r["versions"]
    m = r.get("model", {})
    peak = (r.get("matmul_peak") or {}).get("tflops")
    lines = [f"# Training steps: {r['shape']} shape, random weights, on {r['card']}", "",
             f"- date: {r['date']}; torch {v['torch']} (CUDA {v['cuda']}), transformers {v['transformers']}, "
             f"peft {v['peft']}, bitsandbytes {v['bitsandbytes']}, Python {v['python']}",
             "- produced by `benchmarks/train_steps.py`, which calls the committed training entry points "
             "(`rankvideo.training.stage1.train`, `rankvideo.training.stage2.train`: model preparation, Trainer, "
             "final merge and save) and patches nothing; a TrainerCallback synchronises the GPU at each optimizer "
             "step and counts the tokens (attention mask) reaching the model",
             f"- model: {m.get('params', 0) / 1e9:.3f} B parameters ({m.get('vision_params', 0) / 1e6:.0f} M vision), "
             f"bf16, saved with save_pretrained to {r['work']} ({_f(m.get('save_s'), '.0f')} s)",
             f"- each run: {r['steps']} optimizer steps of grad-accum {r['grad_accum']} batches, the first step left out "
             "as warm-up (median of the others); bf16, gradient checkpointing, lr 1e-5, LoRA r 16 / alpha 32 / "
             "dropout 0.05 on q/k/v/o/gate/up/down + the visual merger trained in full (modules_to_save); qlora: "
             "nf4 + double quant, bf16 compute, merger and lm_head kept out of 4-bit",
             "- videos: mp4 512x256, 24 fps, 16 s (PyAV, libx264), a distinct file per example, decoded in the "
             "training loop by `rankvideo.video.load_video` (PyAV reader), in the training process (workers 0, "
             "the default `dataloader_workers`) or in N dataloader worker processes (workers N): stage 1 "
             "32 frames, stage 2 24 frames, 128 visual tokens per 2 frames",
             "- stage 2: one query group per batch = 1 positive + 1 negative (num_negs 1), the default loss "
             "(rank + 5 distill + 1 point); stage 1: one video + its caption (~120 tokens) per batch",
             "- FLOPs, analytic (`score_per_video.flop_model`: linear layers 2 x weights per token, causal "
             "attention, vision tower, lm_head where logits are taken), per step: model FLOPs = 2 x (decoder "
             "layers + lm_head) forward (forward + activation gradients; frozen weights take no weight gradients; "
             "LoRA's and the merger's weight gradients, <1%, not counted) + 1 x vision tower (no gradient reaches "
             "it); hardware FLOPs add the recomputation of the decoder layers (gradient checkpointing): 3 x layers. "
             "MFU / HFU = model / hardware FLOPs per step / step time / the card's bf16 matmul peak measured in "
             f"the same run ({_f(peak, '.0f')} TFLOP/s, 8192^3 products; the datasheet's dense bf16 is ~989)",
             "- step = one optimizer step, wall time from the end of the previous one (the Trainer fetches and "
             "collates the step's grad-accum batches, decoding their videos, then computes; logging included); "
             "compute = the part after the batches are fetched (on_step_begin to on_step_end); per batch = step / "
             "grad-accum; tokens/s, MFU and HFU over the whole step (MFU over compute alone in the list below); "
             "tokens = text + visual tokens of every sequence (attention mask); "
             "weights GiB = allocated when training starts; peak GiB = torch.cuda.max_memory_allocated over the "
             "training steps; load s = from the train() call to the first step (model load, 4-bit quantisation, "
             "PEFT, Trainer); save s = merge + save_pretrained of the final folder",
             "", "| stage | finetune | workers | step (s) | compute (s) | per batch (s) | seqs/step | tokens/step | "
             "tokens/s | model TFLOP/step | TFLOP/s | MFU | HFU | weights GiB | peak GiB | trainable | load s | save s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        s = run.get("summary")
        if not s:
            lines.append(f"| {run['stage']} | {run['finetune']} | {run.get('workers', 0)} | failed: "
                         f"{run.get('error', '?')[:200]} |" + " |" * 14)
            continue
        lines.append(
            f"| {run['stage']} | {run['finetune']} | {run.get('workers', 0)} | {s['step_s']:.2f} | "
            f"{_f(s.get('compute_s'))} | {s['batch_s']:.2f} | "
            f"{s['sequences_per_step']:.0f} | {s['tokens_per_step']:.0f} | {s['tokens_per_s']:.0f} | "
            f"{s['tflop_per_step']:.1f} | {s['achieved_tflops']:.0f} | {_f(s.get('mfu') and 100 * s['mfu'], '.0f')}% | "
            f"{_f(s.get('hfu') and 100 * s['hfu'], '.0f')}% | "
            f"{_f(run.get('weights_gib'), '.1f')} | {_f(run.get('peak_gib'), '.1f')} | "
            f"{run.get('trainable_params', 0) / 1e6:.1f} M | {_f(run.get('load_s'), '.0f')} | {_f(run.get('save_s'), '.0f')} |")
    lines += ["", "Per run: all step times (s), logged losses, what the final save wrote:", ""]
    for run in r["runs"]:
        s = run.get("summary") or {}
        lines.append(f"- {run['stage']} {run['finetune']} workers {run.get('workers', 0)}: steps {s.get('step_s_all')} s, "
                     f"compute {s.get('compute_s_all')} s, MFU over compute {_f(s.get('mfu_compute') and 100 * s['mfu_compute'], '.0f')}%; losses "
                     f"{[round(x, 3) for x in run.get('losses', [])]}; parameter dtypes {run.get('param_dtypes')}; "
                     f"saved {_f(run.get('saved_gib'), '.1f')} GiB"
                     + (f" ({run['saved_quantization']} weights)" if run.get("saved_quantization") else "")
                     + (f"; error: {run['error']}" if run.get("error") else ""))
    rows = r.get("estimate") or []
    if rows:
        a = r["estimate_assumptions"]
        gpus = a["gpus"]
        trainable = max((run.get("trainable_params", 0) for run in r["runs"] if run["finetune"] == "lora"), default=0)
        lines += ["", "## Estimate: the paper's 2 epochs over MultiVENT-sized data", "",
                  "An estimate, not a measurement: batches x the one-GPU time per batch measured above / GPUs. "
                  f"Data: ~{a['train_queries']:,} training queries (3,906 MultiVENT 2.0 queries less ~2,549 judged test "
                  "queries); stage 2: one query group per query and epoch (the reference's sampler; fewer where a "
                  f"query lacks a positive or a negative); stage 1: one example per video of the top-{a['depth']} "
                  "training candidates (fewer where queries share videos). Grad-accum changes the number of optimizer "
                  "steps, not the batches (optimizer time is negligible for LoRA). Linear scaling in GPUs: "
                  f"{r['ddp_note']}; the trainable parameters' gradients ({trainable / 1e6:.0f} M values with LoRA) are "
                  "all-reduced once per optimizer step (no_sync while accumulating), tens of milliseconds over NVLink "
                  "against seconds per step. Not counted: model "
                  "loading, evaluation, checkpoint saves, real videos longer to decode than these clips.", "",
                  "| stage | finetune | workers | batches (2 epochs) | s per batch (1 GPU) | "
                  + " | ".join(f"{n} GPU{'s' if n > 1 else ''} (h)" for n in gpus) + " |",
                  "|---|---|---|---|---|" + "---|" * len(gpus)]
        for e in rows:
            lines.append(f"| {e['stage']} | {e['finetune']} | {e.get('workers', 0)} | {e['batches']:,} | {e['batch_s']:.2f} | "
                         + " | ".join(f"{e['hours'][n] if n in e['hours'] else e['hours'][str(n)]:.2f}" for n in gpus) + " |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
