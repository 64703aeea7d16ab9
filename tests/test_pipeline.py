"""Snakemake really runs the DAG: the default config to results/metrics.tsv, lint, dry runs of the
MultiVENT config on a placeholder tree, config errors that name the key."""

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from rankvideo.data import formats
from rankvideo.evaluation.evaluate import evaluate_run

from conftest import PIPELINE_TARGETS, TEST_CONFIG, copy_repo, snakemake


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


REPORTED = {"metrics.tsv": "paired two-sided t-test", "per_query/ndcg_cut_10.tsv": "of every test query",
            "per_query/win_loss_ndcg_cut_10.tsv": "The numbers behind the win/loss plot",
            "plots/ndcg_at_k.png": "the bands are 95% bootstrap intervals",
            "plots/win_loss.png": "Per test query, each system against the first stage on ndcg_cut_10",
            "plots/loss_curves.png": "logarithmic loss axis", "training_data/report.md": "What the training data holds"}


def check_report(repo):
    """``snakemake --report`` on a finished run: an HTML file that embeds each reported output
    (its bytes, base64, as the report's data URI) with its caption."""
    snakemake(repo, "--report", "results/report.html", *TEST_CONFIG)
    html = (repo / "results/report.html").read_text()
    embedded = re.findall(r"base64,([A-Za-z0-9+/=]+)", html)
    for name, caption in REPORTED.items():
        assert base64.b64encode((repo / "results" / name).read_bytes()).decode() in embedded, name
        assert caption in html, name
    for category in ("Metrics", "Per query", "Plots", "Training data"):
        assert f'"{category}"' in html, category
    assert "stage on ndcg_cut_10" in html  # the caption's template filled in from the rule's params


def test_pipeline_end_to_end(finished_run):
    """The whole DAG on config/test.yaml (the default config's DAG, shrunk to a few minutes): the
    session's one finished run (conftest.finished_run)."""
    repo = finished_run
    table = pd.read_csv(repo / "results/metrics.tsv", sep="\t")
    systems = ["first_stage", "base", "stage1", "stage2", "stage2+fusion"]
    assert list(table["system"]) == systems
    assert list(table.columns[:4]) == ["system", "n_queries", "coverage", "ndcg_cut_5"]
    assert "recall_50" in table.columns and table.columns[-1] == "p_value"
    n_test = len(formats.read_queries(repo / "results/benchmark/queries_test.tsv"))
    assert (table["n_queries"] == n_test).all() and (table["coverage"] == 1.0).all()
    assert table["p_value"].isna().tolist() == [True, False, False, False, False]
    # the table agrees with pytrec_eval on the TREC runs the pipeline wrote
    test_ids = set(formats.read_queries(repo / "results/benchmark/queries_test.tsv"))
    qrels = {q: r for q, r in formats.read_qrels(repo / "results/benchmark/qrels.txt").items() if q in test_ids}
    for system, run_file in [("first_stage", "first_stage/test.trec"), ("stage2", "rerank/stage2/run.trec")]:
        run = formats.read_trec_run(repo / "results" / run_file)
        ndcg = np.mean([m["ndcg_cut_10"] for m in evaluate_run(run, qrels, ks=(10,)).values()])
        assert table.set_index("system").loc[system, "ndcg_cut_10"] == pytest.approx(ndcg, abs=5e-5)
    # one log per rule, benchmark files on heavy rules, per-query table and plots
    for log in ["synthetic_benchmark.log", "first_stage/test.log", "evaluate/first_stage.log", "metrics.log",
                "tiny_model/vlm.log", "rerank/base/0.log", "rerank/stage2/1.log", "gather_rerank/base.log",
                "captions.log", "teacher_labels.log", "training_data.log", "train_stage1.log", "copy_pretrain.log",
                "describe.log", "train_stage2.log"]:
        assert (repo / "results/logs" / log).stat().st_size > 0, log
    for bench in ["synthetic_benchmark.tsv", "rerank/base/0.tsv", "train_stage2.tsv", "captions.tsv", "describe.tsv",
                  "copy_pretrain.tsv"]:
        assert (repo / "results/benchmarks" / bench).exists()
    assert len(pd.read_csv(repo / "results/per_query/ndcg_cut_10.tsv", sep="\t")) == n_test
    for plot in ["ndcg_at_k.png", "loss_curves.png", "win_loss.png"]:
        assert (repo / "results/plots" / plot).read_bytes()[:4] == b"\x89PNG"
    wins = pd.read_csv(repo / "results/per_query/win_loss_ndcg_cut_10.tsv", sep="\t")
    assert list(wins["system"]) == systems[1:] and (wins["wins"] + wins["ties"] + wins["losses"] == n_test).all()
    assert (wins["delta_low"] <= wins["mean_delta"]).all() and (wins["mean_delta"] <= wins["delta_high"]).all()
    # logs: one line per event, no progress-bar frames, no per-video lines from qwen_vl_utils
    for log in (repo / "results/logs").rglob("*.log"):
        text = log.read_text()
        assert "\r" not in text and " INFO qwen_vl_utils" not in text, log
    assert "rerank stage2: " in (repo / "results/logs/rerank/stage2/0.log").read_text()
    for log in (repo / "results/logs/rerank").rglob("*.log"):  # an hf shard's process ends at once (logs.exit_now)
        assert "pairs scored" in log.read_text().splitlines()[-1], log  # after its summary reached the log
    # every candidate pair scored once per system, gathered into one folder and a TREC run
    v2q = formats.read_video2queries(repo / "results/first_stage/video2queries_test.json")
    for system in ("base", "stage1", "stage2"):
        predictions = formats.read_prediction_dir(repo / f"results/rerank/{system}/predictions")
        assert sum(map(len, predictions.values())) == sum(map(len, v2q.values()))
    # data synthesis and training outputs
    report = json.loads((repo / "results/training_data/report.json").read_text())
    n_train = len(formats.read_queries(repo / "results/benchmark/queries_train.tsv"))
    assert report["splits"]["train"]["queries"] + report["splits"]["eval"]["queries"] == n_train
    captions = formats.read_id_text_jsonl(repo / "results/captions/captions.jsonl")
    assert set(captions) == set(formats.read_video2queries(repo / "results/first_stage/video2queries_train.json"))
    # copy pretraining, then stage 2 with the stage-1 model's description of every video it meets
    copied = json.loads((repo / "results/models/stage1-copy/copy_pretrain.json").read_text())
    assert copied["model"] == "results/models/stage1" and len(copied["loss"]) == 3 and "red" in copied["words"]
    record = json.loads((repo / "results/models/stage2/rankvideo_training.json").read_text())
    assert record["stage"] == "stage2" and record["base_model"] == "results/models/stage1-copy"
    assert record["descriptions"] == "before_query"  # rankvideo.prompts.DESCRIPTION_LAYOUT
    # two candidates (seeds 42, 43) trained at once; the lower final training loss kept
    losses = record["candidates"]["final_training_loss"]
    assert sorted(losses) == ["42", "43"] and record["settings"]["seed"] == record["candidates"]["chosen_seed"]
    assert losses[str(record["settings"]["seed"])] == min(losses.values())
    assert "training 2 candidates at once" in (repo / "results/logs/train_stage2.log").read_text()
    descriptions = formats.read_id_text_jsonl(repo / "results/descriptions/descriptions.jsonl")
    met = {r["doc_id"] for split in ("train", "eval") for r in formats.read_jsonl(repo / f"results/training_data/{split}.jsonl")}
    assert set(descriptions) == met | set(v2q)
    assert formats.read_json(repo / "results/rerank/stage2/shards/0/run_info.json")["descriptions"]["sha256"]
    assert formats.read_json(repo / "results/rerank/stage1/shards/0/run_info.json")["descriptions"] is None
    # nothing left to do after it
    result = snakemake(repo, *PIPELINE_TARGETS, *TEST_CONFIG, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr
    check_report(repo)


@pytest.mark.slow
def test_a_second_run_gives_the_same_bytes(finished_run, tmp_path):
    """A second run of config/test.yaml in a fresh copy: the same bytes as the session's run."""
    repo, other = finished_run, copy_repo(tmp_path / "b")
    snakemake(other, *PIPELINE_TARGETS, *TEST_CONFIG, "--cores", "2")
    for name in ["metrics.tsv", "first_stage/test.trec", "benchmark/qrels.txt", "benchmark/videos/v0007.mp4",
                 "rerank/base/run.trec", "models/tiny-vlm/model.safetensors", "training_data/train.jsonl",
                 "per_query/win_loss_ndcg_cut_10.tsv", "plots/win_loss.png", "plots/ndcg_at_k.png"]:
        assert (repo / "results" / name).read_bytes() == (other / "results" / name).read_bytes(), name


def test_default_config_plans_the_full_dag(repo_copy):
    result = snakemake(repo_copy, "-n", "--cores", "2")
    rules = planned_rules(result.stdout + result.stderr)
    assert rules == {"synthetic_benchmark": 1, "tiny_model": 2, "first_stage": 2, "captions": 1, "teacher_labels": 1,
                     "training_data": 1, "train_stage1": 1, "copy_pretrain": 1, "describe": 1, "train_stage2": 1,
                     "rerank_shard": 6, "gather_rerank": 3,
                     "evaluate": 5, "metrics": 1, "loss_curves": 1, "all": 1}, rules


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
    assert rules == {"first_stage": 2, "captions": 1, "teacher_labels": 1, "training_data": 1, "train_stage1": 1,
                     "train_stage2": 1, "rerank_shard": 48, "gather_rerank": 3, "evaluate": 5, "metrics": 1}, rules
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
