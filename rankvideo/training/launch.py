"""Run one training stage from the pipeline: in this process, or as ``N`` DDP processes under torchrun.

The train rules call :func:`train` with a *spec* (the stage, its model, data, output folder and
config section). With one process the stage trains here; with more, the spec is written beside the
output folder and ``torchrun --nproc_per_node N -m rankvideo.training.launch SPEC`` starts one rank per
GPU (gloo ranks on CPU, one thread each), its output streamed into the rule's log. The number of
processes comes from :func:`rankvideo.pipeline.train_processes` (the config's ``processes``, or
the job's ``gpu`` resource).

    python -m torch.distributed.run --nproc_per_node 2 -m rankvideo.training.launch results/models/stage2.launch.json

Stage 2 may train several *candidates* (``train_stage2.candidates``): the same run with the seeds
``seed, seed+1, ...``, each into ``<output>.candidates/seed-S``, and keep the one whose training loss
over its last tenth of steps is lowest (:func:`train_candidates`). On CPU with one process each they
train at the same time, the job's threads shared between them; otherwise one after another.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

from rankvideo import logs, models, provenance
from rankvideo.data import formats
from rankvideo.training import stage1, stage2
from rankvideo.training.common import RECORD, TrainSettings
from rankvideo.training.losses import LossWeights

log = logging.getLogger(__name__)


def run_in_process(spec: dict):
    """Train the stage the spec names in this process (one rank of a DDP run, or the only one)."""
    settings = TrainSettings.from_config(spec["settings"], spec["seed"])
    options = models.load_options(spec["models"])
    if spec["stage"] == "stage1":
        return stage1.train(spec["model"], spec["train"], spec["eval"], spec["output"], settings,
                            options=options)
    if spec["stage"] == "stage2":
        return stage2.train(spec["model"], spec["train"], spec["eval"], spec["output"], settings,
                            LossWeights.from_config(spec["settings"]), num_negs=spec["settings"]["num_negs"],
                            prompt_variant=spec.get("prompt_variant", "default"), options=options,
                            descriptions=spec.get("descriptions"))
    raise ValueError(f"unknown stage {spec['stage']!r} (stage1 or stage2)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train(spec: dict, processes: int, threads: int = 1) -> None:
    """Train in this process (``processes == 1``) or under torchrun with ``processes`` ranks.

    Output of every rank goes to this process's stderr (the rule's log); a failed rank fails the
    call with its exit status."""
    if processes <= 1:
        run_in_process(spec)
        return
    spec_path = write_spec(spec)
    env = logs.package_env()
    import torch

    if not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = str(max(1, threads // processes))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "rankvideo.training.launch", str(spec_path)]
    log.info("launching %d training processes: %s", processes, " ".join(cmd))
    status = logs.run_streamed(cmd, env)
    if status:
        raise RuntimeError(f"{spec['stage']} training under torchrun ({processes} processes) exited with status "
                           f"{status}; the ranks' output is above in this log")


def write_spec(spec: dict) -> Path:
    path = Path(str(spec["output"]) + ".launch.json")
    formats.write_json(path, spec)
    return path


def final_loss(history: list[dict], path="") -> float:
    """Mean training loss logged over the last tenth of a run's steps (the Trainer's log)."""
    losses = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry and "step" in entry]
    if not losses:
        raise ValueError(f"{path}: no training loss was logged (logging_steps larger than the run?)")
    last = losses[-1][0]
    tail = [loss for step, loss in losses if step >= 0.9 * last]
    return sum(tail) / len(tail)


def train_candidates(spec: dict, candidates: int, processes: int, threads: int = 1) -> dict[int, float]:
    """Train ``candidates`` runs of the spec with the seeds ``seed .. seed+candidates-1`` and move
    the one with the lowest :func:`final_loss` to the spec's output; returns {seed: final loss}.

    Only training data decide: the tiny models' stage 2 escapes its chance-level plateau late or
    not at all in some seeds, and such a run keeps a high training loss (research/demo_findings.md, "Two
    candidates"). After an interruption a finished candidate of the same run
    (:func:`prepare_candidates`) is not trained again and an unfinished one resumes from its
    checkpoints. The chosen folder's record lists every candidate's loss."""
    if candidates <= 1:
        train(spec, processes, threads)
        return {}

    folder, specs = prepare_candidates(spec, candidates)
    todo = [s for s in specs if not (Path(s["output"]) / RECORD).is_file()]
    import torch

    if processes <= 1 and not torch.cuda.is_available() and len(todo) > 1:
        each = max(1, int(spec["settings"].get("torch_threads") or threads) // len(todo))
        run_concurrently([dict(s, settings=dict(s["settings"], torch_threads=each)) for s in todo], each)
    else:
        for s in todo:
            log.info("stage-2 candidate with seed %d", s["seed"])
            train(s, processes, threads)
    losses = {s["seed"]: final_loss(formats.read_json(Path(s["output"]) / "loss_history.json"), s["output"])
              for s in specs}
    chosen = min(specs, key=lambda s: (losses[s["seed"]], s["seed"]))
    log.info("candidates' final training losses %s: keeping seed %d",
             ", ".join(f"seed {seed} {loss:.4f}" for seed, loss in losses.items()), chosen["seed"])
    record_path = Path(chosen["output"]) / RECORD
    record = formats.read_json(record_path)
    record["candidates"] = {"chosen_seed": chosen["seed"], "selected_by": "final_training_loss",
                            "final_training_loss": {str(seed): loss for seed, loss in losses.items()}}
    formats.write_json(record_path, record)
    formats.replace_dir(chosen["output"], spec["output"])
    shutil.rmtree(folder)
    return losses


def prepare_candidates(spec: dict, candidates: int) -> tuple[Path, list[dict]]:
    """The candidates' folder ``<output>.candidates`` and their specs. The folder keeps finished
    candidates across an interruption only for the same run: ``candidates.json`` in it records the
    spec, the starting model's identity and the data hashes; if they differ (or it is missing) the
    folder is emptied first, so a changed setting or input never reuses an old candidate."""

    output = Path(spec["output"])
    folder = output.with_name(output.name + ".candidates")
    identity = json.loads(json.dumps({
        "spec": {k: v for k, v in spec.items() if k != "output"}, "candidates": candidates,
        "model": provenance.model_fingerprint(spec["model"]),
        "data": {k: provenance.file_sha256(spec[k]) for k in ("train", "eval", "descriptions") if spec.get(k)}}))
    marker = folder / "candidates.json"
    if folder.exists() and (not marker.is_file() or formats.read_json(marker) != identity):
        log.info("%s holds candidates of another run; starting over", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    formats.write_json(marker, identity)
    return folder, [dict(spec, seed=spec["seed"] + k, output=str(folder / f"seed-{spec['seed'] + k}"))
                    for k in range(candidates)]


def run_concurrently(specs: list[dict], threads: int) -> None:
    """One ``python -m rankvideo.training.launch SPEC`` process per spec at once (``threads`` torch threads
    each, no progress bars), their output lines prefixed with the seed in this process's stderr."""
    procs = []
    for spec in specs:
        cmd = [sys.executable, "-m", "rankvideo.training.launch", str(write_spec(spec))]
        proc = subprocess.Popen(cmd, env=logs.package_env(OMP_NUM_THREADS=str(threads), TQDM_DISABLE="1"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        pump = threading.Thread(target=_prefix_lines, args=(proc.stdout, f"[seed {spec['seed']}] "), daemon=True)
        pump.start()
        procs.append((spec, proc, pump))
    log.info("training %d candidates at once, %d thread(s) each", len(specs), threads)
    try:
        for _, proc, pump in procs:
            proc.wait()
            pump.join()
    except BaseException:  # interrupted: no candidate keeps training on its own
        for _, proc, _ in procs:
            proc.kill()
        raise
    failed = [f"seed {spec['seed']} (status {proc.returncode})" for spec, proc, _ in procs if proc.returncode]
    if failed:
        raise RuntimeError(f"{specs[0]['stage']} candidates failed: {', '.join(failed)}; their output is above in this log")


def _prefix_lines(stream, prefix: str) -> None:
    for line in stream:
        sys.stderr.write(prefix + line)
    sys.stderr.flush()


def train_stage(stage: str, model: str, train: str, eval: str | None, output: str, settings: dict, seed: int,
                models: dict, processes: int, threads: int, prompt_variant: str | None = None,
                descriptions: str | None = None) -> None:
    """A train rule's work (rules train_stage1 / train_stage2): the config section ``settings``,
    ``processes`` DDP ranks (:func:`rankvideo.pipeline.train_processes`) sharing ``threads`` CPU
    threads; stage 2 also takes the prompt variant the rerank rule scores with and, with
    descriptions enabled, the describe rule's output."""
    spec = {"stage": stage, "model": model, "train": train, "eval": eval, "output": output, "settings": settings,
            "seed": seed, "models": models}
    if stage == "stage2":
        spec.update(prompt_variant=prompt_variant, descriptions=descriptions)
    train_candidates(spec, int(settings.get("candidates") or 1), processes, threads)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rankvideo.training.launch SPEC.json (under torchrun)", file=sys.stderr)
        return 2
    logs.setup()
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    log.info("rank %s of %s: %s", os.environ.get("RANK", 0), os.environ.get("WORLD_SIZE", 1), spec["stage"])
    run_in_process(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
