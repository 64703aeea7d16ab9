"""Tests of rankvideo.evaluation.metrics: the metrics table, paired t-test, combined per-query table, plot."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from rankvideo.evaluation import evaluate as ev
from rankvideo.evaluation import metrics

KS = (5, 10)
MEASURES = ev.measure_names(KS)
BASE = [0.1, 0.2, 0.3, 0.4, 0.5]
BETTER = [0.2, 0.2, 0.5, 0.45, 0.7]
QIDS = ["q1", "q2", "q3", "q10", "q11"]


def table(ndcg10, qids=QIDS):
    frame = pd.DataFrame({m: [v / (2 if m.startswith("recall") else 1) for v in ndcg10] for m in MEASURES}, dtype=float)
    frame.index = pd.Index(qids, name="query_id", dtype=object)
    return frame


def write_system(tmp_path, name, frame, coverage=1.0):
    summary = pd.DataFrame([[name, len(frame), coverage, *[frame[m].mean() for m in MEASURES]]], columns=["system", "n_queries", "coverage", *MEASURES])
    ev.write_summary_tsv(tmp_path / f"{name}.summary.tsv", summary)
    ev.write_per_query_tsv(tmp_path / f"{name}.pq.tsv", {name: frame})
    return tmp_path / f"{name}.pq.tsv", tmp_path / f"{name}.summary.tsv"


@pytest.fixture
def systems(tmp_path):
    frames = {
        "first_stage": table(BASE),
        "better": table(BETTER),
        "same": table(BASE),
        # evaluated on a subset of the queries: paired over q1, q2, q3 only
        "partial": table([0.3, 0.1, 0.6], qids=["q1", "q2", "q3"]),
    }
    paths = {name: write_system(tmp_path, name, frame, coverage=0.75) for name, frame in frames.items()}
    return frames, {n: p[0] for n, p in paths.items()}, {n: p[1] for n, p in paths.items()}


def test_metrics_table(systems, tmp_path):
    frames, per_query, summaries = systems
    out, pq, plot = tmp_path / "results" / "metrics.tsv", tmp_path / "results" / "per_query" / "ndcg_cut_10.tsv", tmp_path / "results" / "plots" / "ndcg.png"
    result = metrics.build_metrics_table(per_query, summaries, out, pq, plot)

    assert list(result["system"]) == ["first_stage", "better", "same", "partial"]
    assert result.loc[1, "p_value"] == pytest.approx(stats.ttest_rel(BETTER, BASE).pvalue, rel=1e-12)
    assert result.loc[2, "p_value"] == 1.0
    assert result.loc[3, "p_value"] == pytest.approx(stats.ttest_rel([0.3, 0.1, 0.6], BASE[:3]).pvalue, rel=1e-12)
    assert pd.isna(result.loc[0, "p_value"])

    lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert lines[0] == ["system", "n_queries", "coverage", *MEASURES, "p_value"]
    assert lines[1][0] == "first_stage" and lines[1][-1] == ""
    assert lines[1][1:4] == ["5", "0.7500", f"{sum(BASE) / 5:.4f}"]
    assert lines[2][-1] == f"{stats.ttest_rel(BETTER, BASE).pvalue:.4g}"
    assert lines[3][-1] == "1"
    assert lines[4][1] == "3"

    combined = [line.split("\t") for line in pq.read_text().splitlines()]
    assert combined[0] == ["query_id", "first_stage", "better", "same", "partial"]
    assert [row[0] for row in combined[1:]] == ["q1", "q2", "q3", "q10", "q11"]  # natural order
    assert combined[4] == ["q10", "0.4000", "0.4500", "0.4000", ""]

    data = plot.read_bytes()
    assert data.startswith(b"\x89PNG")
    metrics.build_metrics_table(per_query, summaries, out, pq, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == data


def test_metrics_from_cli_outputs_and_errors(systems, tmp_path):
    frames, per_query, summaries = systems
    # one file can hold several systems (as the evaluate CLI writes it)
    both = tmp_path / "both.pq.tsv"
    ev.write_per_query_tsv(both, {"first_stage": frames["first_stage"], "better": frames["better"]})
    result = metrics.build_metrics_table(
        {"first_stage": both, "better": both}, {"first_stage": summaries["first_stage"], "better": summaries["better"]},
        tmp_path / "m.tsv", tmp_path / "pq.tsv", tmp_path / "p.png",
    )
    assert result.loc[1, "p_value"] == pytest.approx(stats.ttest_rel(BETTER, BASE).pvalue)

    with pytest.raises(ev.EvaluationError, match="baseline"):
        metrics.build_metrics_table({"better": per_query["better"]}, {"better": summaries["better"]}, tmp_path / "m.tsv", tmp_path / "pq.tsv", tmp_path / "p.png")
    with pytest.raises(ev.EvaluationError, match="no row for system"):
        metrics.build_metrics_table(
            {"first_stage": per_query["first_stage"], "better": per_query["better"]},
            {"first_stage": summaries["first_stage"], "better": summaries["first_stage"]},
            tmp_path / "m.tsv", tmp_path / "pq.tsv", tmp_path / "p.png",
        )


def test_paired_p_value_edge_cases():
    a = pd.Series([0.5], index=["q1"])
    assert pd.isna(metrics.paired_p_value(a, a)[0])
    b = pd.Series([0.1, 0.2], index=["q1", "q2"])
    assert metrics.paired_p_value(b, b) == (1.0, 2)
