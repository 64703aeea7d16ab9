"""Run one training stage from the pipeline: in this process, or as ``N`` DDP processes under torchrun.

The train rules call :func:`train` with a *spec* (the stage, its model, data, output folder and
config section). With one process the stage trains here; with more, the spec is written beside the
output folder and ``torchrun --nproc_per_node N -m rankvideo.launch SPEC`` starts one rank per
GPU (gloo ranks on CPU, one thread each), its output streamed into the rule's log. The number of
processes comes from :func:`rankvideo.pipeline.train_processes` (the config's ``processes``, or
the job's ``gpu`` resource).

    python -m torch.distributed.run --nproc_per_node 2 -m rankvideo.launch results/models/stage2.launch.json
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from . import formats, logs

log = logging.getLogger(__name__)


def run_in_process(spec: dict):
    """Train the stage the spec names in this process (one rank of a DDP run, or the only one)."""
    from . import pipeline, train_perception, train_reranker
    from .training.common import TrainSettings
    from .training.losses import LossWeights

    settings = TrainSettings.from_config(spec["settings"], spec["seed"])
    options = pipeline.load_options(spec["models"])
    if spec["stage"] == "stage1":
        return train_perception.train(spec["model"], spec["train"], spec["eval"], spec["output"], settings,
                                      options=options)
    if spec["stage"] == "stage2":
        return train_reranker.train(spec["model"], spec["train"], spec["eval"], spec["output"], settings,
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
    spec_path = Path(str(spec["output"]) + ".launch.json")
    formats.write_json(spec_path, spec)
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    import torch

    if not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = str(max(1, threads // processes))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "rankvideo.launch", str(spec_path)]
    log.info("launching %d training processes: %s", processes, " ".join(cmd))
    sys.stderr.flush()
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            sys.stderr.write(line)
    if proc.returncode:
        raise RuntimeError(f"{spec['stage']} training under torchrun ({processes} processes) exited with status "
                           f"{proc.returncode}; the ranks' output is above in this log")


def train_rule(job, stage: str, model: str) -> None:
    """The train rules' script body: Snakemake's job object (inputs ``train``/``eval``, the config
    section as ``params.settings``, ``params.seed``, ``params.models``, resources, threads) in."""
    from .pipeline import train_processes

    settings = job.params.settings
    spec = {"stage": stage, "model": model, "train": job.input.train, "eval": job.input.eval,
            "output": job.output[0], "settings": settings, "seed": job.params.seed, "models": job.params.models}
    if stage == "stage2":
        spec["prompt_variant"] = job.params.prompt_variant  # trained with the prompt the rerank rule scores with
        spec["descriptions"] = getattr(job.input, "descriptions", None)  # descriptions.enabled: the describe rule's
    train(spec, train_processes(settings, job.resources), job.threads)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rankvideo.launch SPEC.json (under torchrun)", file=sys.stderr)
        return 2
    logs.setup()
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    log.info("rank %s of %s: %s", os.environ.get("RANK", 0), os.environ.get("WORLD_SIZE", 1), spec["stage"])
    run_in_process(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
