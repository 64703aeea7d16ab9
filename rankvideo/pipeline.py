"""Small adapters from config sections to the package's objects, shared by the pipeline scripts,
and the model steps the rules run (:data:`STEPS`), here or in the vLLM environment.

A step with ``backend: vllm`` runs as ``python -m rankvideo.pipeline SPEC.json``: a main module, so
vLLM may spawn its engine and tensor-parallel workers (which Snakemake ``script:`` files, without a
``__main__`` guard, do not allow). The interpreter is this one when it imports vLLM (a conda
environment under ``--sdm conda``, or vLLM installed beside the package), else the vLLM
environment's that ``environments.vllm_python`` (or ``$RANKVIDEO_VLLM_PYTHON``) names.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from rankvideo import logs
from rankvideo.data import formats
from rankvideo.models import generator_options
from rankvideo.video import VideoResolver, VideoSettings

log = logging.getLogger(__name__)


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
    (1 without); a number must fit in them when the job names its GPUs on a CUDA machine. Without
    CUDA (vLLM on CPU) it is 1: tensor parallelism splits a model over GPUs."""
    gpus = job_gpus(resources)
    size = settings.get("tensor_parallel") or max(1, gpus)
    if settings.get("backend") == "vllm" and size > 1 and not _cuda_available():
        log.info("%s: no CUDA device, so vLLM runs on the CPU with tensor_parallel 1 (config: %d)", rule, size)
        return dict(settings, tensor_parallel=1)
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


# ----------------------------------------------------------------------------- model steps


def captions_step(model: str, ids, videos: dict, output: str, failures: str, settings: dict, video: dict,
                  models: dict, stage1_prompt: bool = False) -> dict:
    """Caption videos (rule captions; rule describe with ``stage1_prompt``). ``ids``: a list of video
    ids or the path of a video2queries JSON whose keys are they."""
    from rankvideo.generation import captions as generate_captions

    if isinstance(ids, str):
        ids = generate_captions.read_ids(ids)
    counts = generate_captions.run(model, ids, VideoResolver.from_config(videos), output, failures, VideoSettings.from_config(video),
                                   settings["max_new_tokens"], settings["batch_size"], settings["backend"],
                                   options=generator_options(settings, models), stage1_prompt=stage1_prompt)
    Path(failures).touch()
    return counts


def teacher_step(model: str, queries: str, candidates: str, captions: str, asr: str | None, output: str,
                 settings: dict, models: dict) -> dict:
    """Teacher labels of the training candidates (rule teacher_labels)."""
    from rankvideo.generation import teacher_labels as generate_reasoning

    return generate_reasoning.run(model, queries, candidates, captions, asr, output, settings["topk"],
                                  settings["batch_size"], settings["reasoning_maxlen"], settings["backend"],
                                  options=generator_options(settings, models))


def rerank_step(**kwargs) -> dict:
    """One rerank shard (rule rerank_shard): :func:`rankvideo.scoring.rerank.run_shard`."""
    from dataclasses import asdict

    from rankvideo.scoring.rerank import run_shard

    return asdict(run_shard(**kwargs))


#: the steps a rule may run in another environment, by name (a spec names one of these, nothing else)
STEPS = {"captions": captions_step, "teacher": teacher_step, "rerank": rerank_step}


def vllm_python(environments: dict | None) -> str | None:
    """The vLLM environment's interpreter: ``environments.vllm_python``, else ``$RANKVIDEO_VLLM_PYTHON``."""
    return (environments or {}).get("vllm_python") or os.environ.get("RANKVIDEO_VLLM_PYTHON") or None


def run_step(name: str, kwargs: dict, backend: str, environments: dict | None, spec_path) -> dict:
    """Run step ``name`` with ``kwargs`` (JSON values): here, or with the vLLM backend in a child
    interpreter (module docstring), its output streamed into this process's log. A failure there
    fails here with its exit status."""
    if backend != "vllm":
        return STEPS[name](**kwargs)
    python = sys.executable if importlib.util.find_spec("vllm") is not None else vllm_python(environments)
    if python is None:  # no vLLM anywhere: the backend says so in one sentence
        return STEPS[name](**kwargs)
    if not Path(python).is_file():
        raise FileNotFoundError(f"environments.vllm_python / RANKVIDEO_VLLM_PYTHON names {python}, which is not a "
                                "file: point it at the python of an environment with vLLM (tools/setup_vllm_cpu.sh "
                                "builds one for CPUs)")

    spec_path = Path(spec_path)
    formats.write_json(spec_path, {"step": name, "kwargs": kwargs})
    cmd = [python, "-m", "rankvideo.pipeline", str(spec_path)]
    log.info("running step %s with vLLM as a main module: %s", name, " ".join(cmd))
    status = logs.run_streamed(cmd, logs.package_env())
    if status:
        raise RuntimeError(f"step {name} in {python} exited with status {status}; its output is above")
    result = formats.read_json(spec_path.with_suffix(".result.json"))
    spec_path.unlink()
    spec_path.with_suffix(".result.json").unlink()
    return result


def main(argv=None) -> int:

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rankvideo.pipeline SPEC.json", file=sys.stderr)
        return 2
    logs.setup()
    spec = formats.read_json(argv[0])
    if spec.get("step") not in STEPS:
        print(f"error: {argv[0]}: unknown step {spec.get('step')!r} (one of {', '.join(STEPS)})", file=sys.stderr)
        return 2
    result = STEPS[spec["step"]](**spec["kwargs"])
    formats.write_json(Path(argv[0]).with_suffix(".result.json"), json.loads(json.dumps(result, default=str)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
