"""README, "Rerunning one step": what Snakemake plans after a change, on a copy of the session's
finished run of config/test.yaml (conftest.finished_run). Dry runs (`-n`) only, except the last two
tests: one runs the plan, one trains stage 2 again under torchrun. Slow tier: some thirty Snakemake
invocations (the copy of the finished run itself takes seconds).

- a changed parameter reruns its rule and what depends on it, nothing else (params trigger);
- `-R <rule>` / `-R <file>` force a rule / one job and what depends on it;
- a changed script (`scripts/<rule>.py`) reruns its rule and what depends on it: for `script:`
  rules Snakemake's code trigger compares the script's mtime with the outputs' (not its content);
- a changed package module (`rankvideo/*.py`) triggers nothing: force the rule with `-R`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import copy_finished_run, snakemake
from test_pipeline import planned_rules

TARGETS = ["results/metrics.tsv", "results/plots/loss_curves.png"]
CONFIG = ["--configfile", "config/test.yaml"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def done(finished_run, tmp_path_factory) -> Path:
    """A copy of the repo after a complete local run of config/test.yaml (the tests here change it)."""
    return copy_finished_run(finished_run, tmp_path_factory.mktemp("rerun") / "repo")


def plan(repo: Path, *args: str, configfiles: tuple[str, ...] = ("config/test.yaml",)) -> tuple[dict, list]:
    """(rule -> job count, [(rule, wildcards)]) of `snakemake -n` for the test targets."""
    result = snakemake(repo, *TARGETS, "--configfile", *configfiles, "-n", *args)
    output = result.stdout + result.stderr
    jobs = []
    for line in output.splitlines():
        match = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if match:
            jobs.append((match.group(1), {}))
        elif line.startswith("    wildcards: ") and jobs:
            jobs[-1][1].update(item.split("=", 1) for item in line.split(": ", 1)[1].split(", "))
    counts = planned_rules(output)
    assert sum(counts.values()) == len(jobs), output
    return counts, jobs


def systems(jobs: list, rule: str) -> set[str]:
    return {wildcards["system"] for name, wildcards in jobs if name == rule}


def test_nothing_to_do_after_a_complete_run(done):
    assert plan(done) == ({}, [])


# a changed parameter of one config section -> the jobs Snakemake plans (params trigger)
PARAMETER_CHANGES = {
    # stage 2 only: its training, its reranking, the evaluation of stage2 and its fusion, the table
    "train_stage2:\n  lr: 1.0e-4\n": (
        {"train_stage2": 1, "rerank_shard": 2, "gather_rerank": 1, "evaluate": 2, "metrics": 1, "loss_curves": 1},
        {"stage2"}, {"stage2", "stage2+fusion"}),
    # stage 1 and, since stage 2 starts from it (copied first) and reads its descriptions, stage 2
    "train_stage1:\n  lr: 2.0e-3\n": (
        {"train_stage1": 1, "copy_pretrain": 1, "describe": 1, "train_stage2": 1, "rerank_shard": 4, "gather_rerank": 2, "evaluate": 3, "metrics": 1,
         "loss_curves": 1},
        {"stage1", "stage2"}, {"stage1", "stage2", "stage2+fusion"}),
    # copy pretraining or the descriptions: stage 2 and what follows it, not stage 1
    "copy_pretrain:\n  lr: 2.0e-3\n": (
        {"copy_pretrain": 1, "train_stage2": 1, "rerank_shard": 2, "gather_rerank": 1, "evaluate": 2, "metrics": 1,
         "loss_curves": 1},
        {"stage2"}, {"stage2", "stage2+fusion"}),
    "descriptions:\n  max_new_tokens: 8\n": (
        {"describe": 1, "train_stage2": 1, "rerank_shard": 2, "gather_rerank": 1, "evaluate": 2, "metrics": 1,
         "loss_curves": 1},
        {"stage2"}, {"stage2", "stage2+fusion"}),
    # the prompt: stage 2 is trained with the prompt every system is scored with
    "rerank:\n  prompt_variant: query_first\n": (
        {"train_stage2": 1, "rerank_shard": 6, "gather_rerank": 3, "evaluate": 4, "metrics": 1, "loss_curves": 1},
        {"base", "stage1", "stage2"}, {"base", "stage1", "stage2", "stage2+fusion"}),
    # reranking settings: every reranked system, no training
    "rerank:\n  query_batch_size: 4\n": (
        {"rerank_shard": 6, "gather_rerank": 3, "evaluate": 4, "metrics": 1},
        {"base", "stage1", "stage2"}, {"base", "stage1", "stage2", "stage2+fusion"}),
    # fusion: only the fused system's evaluation
    "fusion:\n  weight: 0.3\n": ({"evaluate": 1, "metrics": 1}, set(), {"stage2+fusion"}),
}


@pytest.mark.parametrize("change", PARAMETER_CHANGES, ids=lambda text: text.split(":")[0] + "." + text.split()[1])
def test_a_changed_parameter_reruns_its_rule_and_downstream(done, change):
    expected, reranked, evaluated = PARAMETER_CHANGES[change]
    (done / "change.yaml").write_text(change)
    counts, jobs = plan(done, configfiles=("config/test.yaml", "change.yaml"))
    assert counts == expected
    assert systems(jobs, "rerank_shard") == reranked
    assert systems(jobs, "evaluate") == evaluated


# `-R` (--forcerun) takes rule names or output files; give the targets before it (it takes every
# word that follows)
FORCED = {
    "rerank_shard": {"rerank_shard": 6, "gather_rerank": 3, "evaluate": 4, "metrics": 1},
    "gather_rerank": {"gather_rerank": 3, "evaluate": 4, "metrics": 1},
    "results/rerank/stage2/shards/0/summary.json results/rerank/stage2/shards/1/summary.json":
        {"rerank_shard": 2, "gather_rerank": 1, "evaluate": 2, "metrics": 1},
    "train_stage2": {"train_stage2": 1, "rerank_shard": 2, "gather_rerank": 1, "evaluate": 2, "metrics": 1,
                     "loss_curves": 1},
    # the README's first example: everything after the data and the tiny models
    "first_stage": {"first_stage": 2, "captions": 1, "teacher_labels": 1, "training_data": 1, "train_stage1": 1,
                    "copy_pretrain": 1, "describe": 1, "train_stage2": 1, "rerank_shard": 6, "gather_rerank": 3, "evaluate": 5, "metrics": 1,
                    "loss_curves": 1},
}


@pytest.mark.parametrize("forced", FORCED, ids=lambda text: text.split()[0])
def test_forcerun_reruns_the_rule_and_downstream(done, forced):
    counts, jobs = plan(done, "-R", *forced.split())
    assert counts == FORCED[forced]
    if forced.startswith("results/rerank/stage2"):
        assert systems(jobs, "rerank_shard") == {"stage2"}


@pytest.mark.parametrize("script, expected", [
    ("metrics", {"metrics": 1}),
    ("first_stage", FORCED["first_stage"]),
    ("train_stage2", FORCED["train_stage2"]),
])
def test_a_changed_script_reruns_its_rule_and_downstream(done, script, expected, tmp_path):
    path = done / "scripts" / f"{script}.py"
    backup = tmp_path / path.name
    shutil.copy2(path, backup)
    try:
        with path.open("a") as handle:
            handle.write("# a changed line\n")
        assert plan(done)[0] == expected
    finally:
        shutil.copy2(backup, path)  # content and mtime: the code trigger of script rules is the mtime
    assert plan(done) == ({}, [])


def test_a_changed_package_module_triggers_nothing(done, tmp_path):
    path = done / "rankvideo" / "evaluation" / "metrics.py"
    backup = tmp_path / path.name
    shutil.copy2(path, backup)
    try:
        with path.open("a") as handle:
            handle.write("# a changed line\n")
        assert plan(done) == ({}, [])
    finally:
        shutil.copy2(backup, path)


def test_the_plan_is_what_runs(done):
    """Touching a script reruns exactly the planned job; its output is the same bytes; then nothing is left."""
    before = (done / "results/metrics.tsv").read_bytes()
    (done / "scripts/metrics.py").touch()
    assert plan(done)[0] == {"metrics": 1}
    result = snakemake(done, *TARGETS, *CONFIG, "--cores", "2")
    assert planned_rules(result.stdout + result.stderr) == {"metrics": 1}
    assert "1 of 1 steps (100%) done" in result.stderr
    assert (done / "results/metrics.tsv").read_bytes() == before
    assert plan(done) == ({}, [])


def test_train_rule_runs_ddp_ranks_under_torchrun(done):
    """`processes: 2` (on a GPU cluster: the job's GPUs) makes the stage-2 rule start 2 gloo ranks
    through torchrun; only rank 0 writes the model folder. The test config's two candidates then
    train one after another, each under torchrun. (Last: it leaves stage 2 changed.)"""
    (done / "ddp.yaml").write_text("train_stage2: {processes: 2}\n")
    result = snakemake(done, "results/models/stage2", *CONFIG, "ddp.yaml", "--cores", "2")
    assert planned_rules(result.stdout + result.stderr) == {"train_stage2": 1}
    log = (done / "results/logs/train_stage2.log").read_text()
    assert log.count("launching 2 training processes") == 2 and "candidates at once" not in log
    assert "stage-2 candidate with seed 42" in log and "stage-2 candidate with seed 43" in log
    assert "rank 0 of 2: stage2" in log and "rank 1 of 2: stage2" in log
    assert log.count("saved stage2 model") == 2  # rank 0 of each candidate
    record = json.loads((done / "results/models/stage2/rankvideo_training.json").read_text())
    assert record["settings"]["extra"]["processes"] == 2
    assert sorted(record["candidates"]["final_training_loss"]) == ["42", "43"]
