"""End-to-end check of the Slurm path on a real single-node Slurm started for the test.

Starts LocalSlurm (tests/slurm_cluster.py), runs an `sbatch --wrap`, then a tiny two-rule
workflow through snakemake-executor-plugin-slurm with the repo's profile (slurm/config.yaml,
CPU-only resources overridden on the command line), and checks that every daemon it started is
gone afterwards. Skips with the reason where no cluster can be started (not root, no apt, ...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import SLURM_CONF, LocalSlurm, pid_alive, skip_without_local_slurm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "slurm"

TINY_SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "results/second.txt"

    rule first:
        output: "results/first.txt"
        log: "logs/first.log"
        shell: "(hostname; echo first) > {output} 2> {log}"

    rule second:
        input: "results/first.txt"
        output: "results/second.txt"
        log: "logs/second.log"
        shell: "(cat {input}; echo second) > {output} 2> {log}"
    """
)


def _snakemake_cmd() -> list[str]:
    exe = shutil.which("snakemake")
    if exe:
        return [exe]
    return [sys.executable, "-m", "snakemake"]


@pytest.mark.slurm
def test_local_slurm_runs_sbatch_and_snakemake(tmp_path: Path) -> None:
    skip_without_local_slurm()

    conf_before = SLURM_CONF.read_bytes() if SLURM_CONF.exists() else None
    t0 = time.monotonic()
    cluster = LocalSlurm(partition="testq")
    started_pids: dict[str, int] = {}
    try:
        cluster.start()
        started_pids = cluster.pids
        assert {"slurmctld", "slurmd"} <= started_pids.keys()
        t_up = time.monotonic()

        # 1. A plain batch job.
        out = tmp_path / "hostname.out"
        job_id = cluster.sbatch_wrap("hostname", "-o", str(out), "-J", "harness-hostname")
        info = cluster.wait_job(job_id, timeout=60)
        assert info.get("JobState") == "COMPLETED", info
        assert out.read_text().strip(), "sbatch job wrote nothing"
        t_sbatch = time.monotonic()

        # 2. A two-rule workflow through the executor plugin and the repo's profile.
        wf = tmp_path / "wf"
        wf.mkdir()
        (wf / "Snakefile").write_text(TINY_SNAKEFILE)
        cmd = [
            *_snakemake_cmd(),
            "--profile", str(PROFILE),
            "--executor", "slurm",
            "--jobs", "2",
            # Replaces the profile's default-resources: CPU-only, small, this cluster's partition.
            "--default-resources", f"slurm_partition={cluster.partition}", "mem_mb=200", "runtime=10",
            "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "2",
            "--slurm-no-account",
            "--slurm-keep-successful-logs",
            "--latency-wait", "5",
            "--retries", "0",
            "--nocolor",
        ]
        env = dict(os.environ)
        env.pop("SLURM_CONF", None)  # the plugin's job step strips it anyway: use /etc/slurm
        proc = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True, timeout=180)
        sm_log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            slurm_logs = "\n".join(
                f"--- {p}:\n{p.read_text(errors='replace')[-3000:]}"
                for p in sorted((wf / ".snakemake" / "slurm_logs").rglob("*.log"))
            )
            pytest.fail(f"snakemake exited {proc.returncode}:\n{sm_log[-6000:]}\n{slurm_logs}")
        assert (wf / "results" / "first.txt").read_text().splitlines()[-1] == "first"
        assert (wf / "results" / "second.txt").read_text().splitlines()[-2:] == ["first", "second"]
        assert (wf / "logs" / "first.log").exists() and (wf / "logs" / "second.log").exists()
        # Both rules really went through Slurm (the plugin names jobs after the run's UUID).
        jobs = list(cluster.squeue_jobs())
        assert sum(state == "COMPLETED" for _, _, state in jobs) >= 3, jobs
        assert list((wf / ".snakemake" / "slurm_logs").rglob("*.log")), "no Slurm job logs"
        t_sm = time.monotonic()
    finally:
        cluster.stop()

    alive = {name: pid for name, pid in started_pids.items() if pid_alive(pid)}
    assert not alive, f"daemons still alive after stop: {alive}"
    conf_after = SLURM_CONF.read_bytes() if SLURM_CONF.exists() else None
    assert conf_after == conf_before, f"{SLURM_CONF} not restored"
    t_end = time.monotonic()
    print(
        f"\nLocalSlurm timings: up {t_up - t0:.1f} s, sbatch {t_sbatch - t_up:.1f} s, "
        f"snakemake {t_sm - t_sbatch:.1f} s, stop {t_end - t_sm:.1f} s, total {t_end - t0:.1f} s"
    )
