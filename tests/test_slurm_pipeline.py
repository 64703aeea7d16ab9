"""The whole pipeline (config/test.yaml) through `snakemake --profile slurm` on a real, single-node
Slurm (tests/slurm_cluster.py), compared with a local `--cores 2` run of the same config.

The repo's profile is used as typed from the repository root (`--profile slurm`); only what a
2-CPU test node needs is overridden on the command line: no GPUs, 1 CPU and a little memory per
job, the test cluster's partition, no account, the squeue status check (no accounting database
here) and a short first status check. Skips with the reason where no cluster can be started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import copy_repo  # noqa: E402
from slurm_cluster import SLURM_CONF, LocalSlurm, pid_alive, skip_without_local_slurm  # noqa: E402

TARGETS = ["results/metrics.tsv", "results/plots/loss_curves.png"]
CONFIG = ["--configfile", "config/test.yaml"]
# the rules that need a GPU on a real cluster (their resources in slurm/config.yaml)
GPU_RULES = ["captions", "teacher_labels", "train_stage1", "copy_pretrain", "describe", "train_stage2", "rerank_shard"]
# every rule not in the Snakefile's `localrules:` is a Slurm job: rule -> jobs of config/test.yaml
SLURM_JOBS = {"tiny_model": 2, "captions": 1, "teacher_labels": 1, "train_stage1": 1, "copy_pretrain": 1,
              "describe": 1, "train_stage2": 1, "rerank_shard": 6}
LOCAL_RULES = ["synthetic_benchmark", "first_stage", "training_data", "gather_rerank", "evaluate", "metrics",
               "loss_curves"]


def cpu_only_overrides(partition: str) -> list[str]:
    """Command-line options that fit the profile's jobs onto a 2-CPU node without GPUs.

    `--set-resources` / `--default-resources` given on the command line replace the profile's
    whole mapping, so every GPU rule is named again (gpu=0: no --gpus; cpus_per_task instead of
    the profile's cpus_per_gpu)."""
    resources = []
    for rule in GPU_RULES + ["tiny_model"]:
        resources += [f"{rule}:gpu=0", f"{rule}:cpus_per_task=1", f"{rule}:mem_mb=3000", f"{rule}:runtime=20"]
    return [
        "--jobs", "2",
        "--default-resources", f"slurm_partition={partition}", "mem_mb=2000", "runtime=20",
        "--set-resources", *resources,
        "--slurm-no-account",
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs",
        "--latency-wait", "5",
        "--retries", "0",
        "--nocolor",
    ]


def run_snakemake(workdir: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("SLURM_CONF", None)  # the plugin's job step strips it anyway: /etc/slurm/slurm.conf is used
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, text=True,
                          capture_output=True, timeout=timeout)


def slurm_logs_by_rule(workdir: Path) -> dict[str, int]:
    """rule -> number of Slurm job logs (.snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log)."""
    counts: dict[str, int] = {}
    for path in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"):
        rule = path.relative_to(workdir / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def compare_tree(a: Path, b: Path, pattern: str) -> tuple[list[str], list[str]]:
    """(identical, different) relative paths of the files matching ``pattern`` under both roots."""
    same, different = [], []
    for path in sorted(a.glob(pattern)):
        if path.is_file():
            rel = str(path.relative_to(a))
            (same if path.read_bytes() == (b / rel).read_bytes() else different).append(rel)
    return same, different


def max_prediction_diff(a: Path, b: Path) -> float:
    """Largest absolute difference of any score in the per-video prediction JSONs of two runs."""
    worst = 0.0
    for path in sorted(a.glob("results/rerank/*/predictions/*.json")):
        left = json.loads(path.read_text())
        right = json.loads((b / path.relative_to(a)).read_text())
        for video, queries in left.items():
            for qid, fields in queries.items():
                for name, value in fields.items():
                    worst = max(worst, abs(float(value) - float(right[video][qid][name])))
    return worst


@pytest.mark.slurm
def test_pipeline_through_slurm_matches_local_run(finished_run: Path, tmp_path: Path, capsys) -> None:
    skip_without_local_slurm()

    # the reference: the session's local `--cores 2` run of the same config (conftest.finished_run)
    local, repo = finished_run, copy_repo(tmp_path / "slurm")

    conf_before = SLURM_CONF.read_bytes() if SLURM_CONF.exists() else None
    cluster = LocalSlurm(partition="testq")
    started: dict[str, int] = {}
    try:
        t1 = time.monotonic()
        cluster.start()
        started = cluster.pids
        up_s = time.monotonic() - t1
        t2 = time.monotonic()
        proc = run_snakemake(repo, *TARGETS, *CONFIG, "--profile", "slurm", *cpu_only_overrides(cluster.partition),
                             timeout=900)
        slurm_s = time.monotonic() - t2
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            logs = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-3000:]}"
                             for p in sorted((repo / ".snakemake" / "slurm_logs").rglob("*.log")))
            pytest.fail(f"snakemake --profile slurm exited {proc.returncode}:\n{output[-8000:]}\n{logs}")
        jobs = list(cluster.squeue_jobs())
    finally:
        cluster.stop()

    # every daemon the test started is gone and /etc/slurm/slurm.conf is as it was
    assert not {n: p for n, p in started.items() if pid_alive(p)}, "Slurm daemons still alive"
    assert (SLURM_CONF.read_bytes() if SLURM_CONF.exists() else None) == conf_before

    # the heavy rules really went through Slurm, each job once; the light ones ran locally
    assert "Nothing to be done" not in output
    assert slurm_logs_by_rule(repo) == SLURM_JOBS, slurm_logs_by_rule(repo)
    completed = [jid for jid, _, state in jobs if state == "COMPLETED"]
    assert len(completed) == sum(SLURM_JOBS.values()) and len(jobs) == len(completed), jobs
    for rule in LOCAL_RULES:
        assert not (repo / ".snakemake" / "slurm_logs" / f"rule_{rule}").exists(), rule
    assert (repo / "results/logs/train_stage2.log").stat().st_size > 0
    assert (repo / "results/plots/loss_curves.png").read_bytes()[:4] == b"\x89PNG"

    # the same results as the local run: the metrics table byte for byte, the files behind it too
    # (model weights, scores, runs, per-query tables); logs, benchmarks, timings inside the rerank
    # summaries, caption and description metadata and training records (paths, times; a checkpoint
    # folder's run.json holds its starting model's file times) are allowed to differ
    assert (repo / "results/metrics.tsv").read_bytes() == (local / "results/metrics.tsv").read_bytes()
    same, different = compare_tree(repo, local, "results/**/*")
    diff = max_prediction_diff(repo, local)

    def without_meta(root: Path, name: str) -> list[dict]:  # captions and descriptions: meta holds timings
        return [{k: v for k, v in json.loads(line).items() if k != "meta"}
                for line in (root / "results" / name).read_text().splitlines()]

    with capsys.disabled():
        print(f"\nSlurm pipeline: Slurm up {up_s:.0f} s, snakemake --profile slurm "
              f"{slurm_s:.0f} s ({len(completed)} Slurm jobs); {len(same)} result files identical, "
              f"{len(different)} differ; max prediction score difference {diff:.3g}")
    for name in ("captions/captions.jsonl", "descriptions/descriptions.jsonl"):
        assert without_meta(repo, name) == without_meta(local, name), name
    must_match = [p for p in different if not p.startswith(("results/logs/", "results/benchmarks/"))
                  and not p.endswith(("run_info.json", "summary.json", "loss_history.json", "trainer_state.json",
                                      "rankvideo_training.json", "checkpoints/run.json",
                                      "captions/captions.jsonl", "descriptions/descriptions.jsonl"))]
    assert not must_match, must_match
    assert diff == 0.0
