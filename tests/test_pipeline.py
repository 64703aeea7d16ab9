"""Snakemake really runs the DAG: the default config to results/metrics.tsv, lint, dry runs of the
MultiVENT config on a placeholder tree, config errors that name the key."""

import json

import numpy as np
import pandas as pd
import pytest

from rankvideo import formats
from rankvideo.evaluate import evaluate_run

from conftest import copy_repo, snakemake


def planned_rules(output: str) -> dict[str, int]:
    """Rule -> job count from the table Snakemake prints for a dry run."""
    counts, in_table = {}, False
    for line in output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
        elif in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


def test_lint_is_clean(repo_copy):
    result = snakemake(repo_copy, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_pipeline_end_to_end(tmp_path):
    repo = copy_repo(tmp_path / "a")
    snakemake(repo, "--cores", "2", "results/metrics.tsv", "results/training_data/report.json")
    table = pd.read_csv(repo / "results/metrics.tsv", sep="\t")
    assert list(table["system"]) == ["first_stage", "base"]
    assert table.loc[1, "coverage"] == 1.0 and 0 <= table.loc[1, "p_value"] <= 1
    assert list(table.columns[:4]) == ["system", "n_queries", "coverage", "ndcg_cut_5"]
    assert "recall_50" in table.columns and table.columns[-1] == "p_value"
    assert table.loc[0, "n_queries"] == 24
    # the table agrees with pytrec_eval on the first-stage TREC run the pipeline wrote
    run = formats.read_trec_run(repo / "results/first_stage/test.trec")
    test_ids = set(formats.read_queries(repo / "results/benchmark/queries_test.tsv"))
    qrels = {q: r for q, r in formats.read_qrels(repo / "results/benchmark/qrels.txt").items() if q in test_ids}
    ndcg = np.mean([m["ndcg_cut_10"] for m in evaluate_run(run, qrels, ks=(10,)).values()])
    assert table.loc[0, "ndcg_cut_10"] == pytest.approx(ndcg, abs=5e-5)
    # one log per rule, benchmark files on heavy rules, per-query table and plot
    for log in ["synthetic_benchmark.log", "first_stage/test.log", "evaluate/first_stage.log", "metrics.log",
                "tiny_model/vlm.log", "rerank/base/0.log", "rerank/base/1.log", "gather_rerank/base.log"]:
        assert (repo / "results/logs" / log).stat().st_size > 0, log
    for bench in ["synthetic_benchmark.tsv", "rerank/base/0.tsv"]:
        assert (repo / "results/benchmarks" / bench).exists()
    # the base system: every candidate pair scored once, gathered into one folder and a TREC run
    predictions = formats.read_prediction_dir(repo / "results/rerank/base/predictions")
    assert sum(map(len, predictions.values())) == 24 * 50
    reranked = formats.read_trec_run(repo / "results/rerank/base/run.trec")
    assert set(reranked) == set(run) and all(len(docs) == 50 for docs in reranked.values())
    per_query = pd.read_csv(repo / "results/per_query/ndcg_cut_10.tsv", sep="\t")
    assert len(per_query) == 24
    assert (repo / "results/plots/ndcg_at_k.png").read_bytes()[:4] == b"\x89PNG"
    v2q = formats.read_video2queries(repo / "results/first_stage/video2queries_test.json")
    assert sum(map(len, v2q.values())) == 24 * 50
    # data synthesis: captions of the training candidates, teacher labels, training JSONL and report
    report = json.loads((repo / "results/training_data/report.json").read_text())
    assert report["splits"]["train"]["examples"] + report["splits"]["eval"]["examples"] == 160 * 20
    teacher = formats.read_jsonl(repo / "results/teacher/teacher_labels.jsonl")
    assert len(teacher) == 160 * 3
    captions = formats.read_id_text_jsonl(repo / "results/captions/captions.jsonl")
    assert set(captions) == set(formats.read_video2queries(repo / "results/first_stage/video2queries_train.json"))
    # nothing left to do on a second run; a second copy gives the same bytes
    assert "Nothing to be done" in snakemake(repo, "--cores", "2", "results/metrics.tsv",
                                             "results/training_data/report.json").stderr
    other = copy_repo(tmp_path / "b")
    snakemake(other, "--cores", "2", "results/metrics.tsv")
    for name in ["metrics.tsv", "first_stage/test.trec", "benchmark/qrels.txt", "benchmark/videos/v0007.mp4",
                 "rerank/base/run.trec", "models/tiny-vlm/model.safetensors"]:
        assert (repo / "results" / name).read_bytes() == (other / "results" / name).read_bytes(), name


def make_multivent_placeholders(repo):
    data = repo / "data/multivent2"
    (data / "videos/000001").mkdir(parents=True)
    for vid in ("5", "17"):
        (data / "videos/000001" / f"{vid}.mp4").write_bytes(b"")
    for split in ("train", "test"):
        (data / f"queries_{split}.tsv").write_text(f"{split}1\tan earthquake\n")
        (data / f"qrels_{split}.txt").write_text(f"{split}1 0 5 1\n")
        (data / f"first_stage_{split}.json").write_text(json.dumps({f"{split}1": {"5": 1.0, "17": 0.5}}))
    (data / "asr.jsonl").write_text('{"doc_id": "5", "text": "words"}\n')


def test_multivent_config_plans_the_full_dag(repo_copy):
    make_multivent_placeholders(repo_copy)
    result = snakemake(repo_copy, "results/metrics.tsv", "-n", "--configfile", "config/multivent.yaml")
    rules = planned_rules(result.stdout + result.stderr)
    assert rules == {"first_stage": 1, "rerank_shard": 16, "gather_rerank": 1, "evaluate": 2, "metrics": 1}, rules
    assert "synthetic_benchmark" not in result.stdout
    result = snakemake(repo_copy, "results/training_data/report.json", "-n", "--configfile", "config/multivent.yaml")
    rules = planned_rules(result.stdout + result.stderr)
    assert rules == {"first_stage": 1, "captions": 1, "teacher_labels": 1, "training_data": 1}, rules


def test_multivent_config_names_a_missing_file(repo_copy):
    result = snakemake(repo_copy, "results/metrics.tsv", "-n", "--configfile", "config/multivent.yaml", check=False)
    assert result.returncode != 0
    assert "data/multivent2/first_stage_test.json" in result.stdout + result.stderr


@pytest.mark.parametrize("text, expected", [
    ("first_stage: {dpeth: 5}\n", "unknown config key(s) dpeth under first_stage"),
    ("evaluation: {rerank_depth: many}\n", "evaluation.rerank_depth"),
    ("colour: red\n", "unknown config key(s) colour under (top level)"),
    ("dataset: {kind: files}\n", "dataset.queries.test"),
])
def test_config_errors_name_the_key(repo_copy, text, expected):
    (repo_copy / "bad.yaml").write_text(text)
    result = snakemake(repo_copy, "results/metrics.tsv", "-n", "--configfile", "bad.yaml", check=False)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
