"""Tests of rankvideo.evaluation.metrics: the metrics table, paired t-test, combined per-query table, win/loss
table, bootstrap intervals, plots."""

from __future__ import annotations

import json

import numpy as np
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


def test_bootstrap_interval():
    rng = np.random.default_rng(7)
    values = rng.normal(0.3, 0.2, size=400)
    low, high = metrics.bootstrap_interval(values, seed=1)
    # close to the normal approximation of the mean's 95% interval
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.004) and high == pytest.approx(values.mean() + half, abs=0.004)
    assert metrics.bootstrap_interval(values, seed=1) == (low, high)  # seeded: the same interval again
    assert metrics.bootstrap_interval(values, seed=2) != (low, high)
    assert metrics.bootstrap_interval([0.5] * 10) == (0.5, 0.5)
    assert all(np.isnan(metrics.bootstrap_interval([])))


def test_win_loss_table_and_plot(systems, tmp_path):
    frames, per_query, summaries = systems
    out = tmp_path / "results"
    metrics.build_metrics_table(per_query, summaries, out / "metrics.tsv", out / "pq.tsv", out / "ndcg.png",
                                win_loss_tsv=out / "win_loss.tsv", win_loss_plot=out / "win_loss.png")
    rows = [line.split("\t") for line in (out / "win_loss.tsv").read_text().splitlines()]
    assert rows[0] == list(metrics.WIN_LOSS_COLUMNS)
    table = {row[0]: dict(zip(rows[0], row)) for row in rows[1:]}
    assert list(table) == ["better", "same", "partial"]  # the baseline is no row of its own
    # better - first_stage per query: +0.1, 0, +0.2, +0.05, +0.2
    better = table["better"]
    assert [better[c] for c in ("n_queries", "wins", "ties", "losses")] == ["5", "4", "1", "0"]
    assert better["win_rate"] == "0.8000" and better["loss_rate"] == "0.0000" and better["mean_delta"] == "0.1100"
    assert float(better["delta_low"]) <= 0.11 <= float(better["delta_high"]) and float(better["delta_low"]) > 0
    assert float(better["win_low"]) < 0.8 <= float(better["win_high"]) <= 1
    assert [table["same"][c] for c in ("wins", "ties", "losses", "delta_low", "delta_high")] == ["0", "5", "0", "0.0000", "0.0000"]
    # partial vs first_stage over q1..q3: +0.2, -0.1, +0.3
    assert [table["partial"][c] for c in ("n_queries", "wins", "ties", "losses")] == ["3", "2", "0", "1"]

    plot = (out / "win_loss.png").read_bytes()
    assert plot[:4] == b"\x89PNG"
    again = tmp_path / "again"
    metrics.build_metrics_table(per_query, summaries, again / "metrics.tsv", again / "pq.tsv", again / "ndcg.png",
                                win_loss_tsv=again / "win_loss.tsv", win_loss_plot=again / "win_loss.png")
    assert (again / "win_loss.png").read_bytes() == plot
    assert (again / "win_loss.tsv").read_bytes() == (out / "win_loss.tsv").read_bytes()
    assert (again / "ndcg.png").read_bytes() == (out / "ndcg.png").read_bytes()


def test_ndcg_plot_draws_intervals(systems, tmp_path):
    frames, _, _ = systems
    summary = pd.DataFrame([{"system": name, **frame.mean().to_dict()} for name, frame in frames.items()])
    metrics.plot_ndcg_at_k(tmp_path / "lines.png", summary)
    metrics.plot_ndcg_at_k(tmp_path / "bands.png", summary, frames)
    assert (tmp_path / "bands.png").read_bytes() != (tmp_path / "lines.png").read_bytes()


def test_loss_curves_on_a_log_axis(tmp_path):
    # a fall by two orders of magnitude in the first steps, then a slow drift (the tiny model's stage 1)
    steps = list(range(10, 3001, 10))
    loss = [6.9 * np.exp(-s / 36) if s < 80 else 0.06 + 0.04 * (3000 - s) / 3000 for s in steps]
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    (stage1 / "loss_history.json").write_text(json.dumps(
        [{"step": s, "loss": v} for s, v in zip(steps, loss)] + [{"step": 3000, "eval_loss": 0.065}]))
    stage2 = tmp_path / "stage2"
    stage2.mkdir()
    (stage2 / "loss_history.json").write_text(json.dumps([{"step": 1, "loss": 0.0}, {"step": 2, "loss": 0.5}]))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "loss_history.json").write_text(json.dumps([{"step": 2, "train_loss": 1.4}]))
    fig = metrics.plot_loss_curves([stage1, stage2, empty], tmp_path / "plots" / "loss.png")
    assert (tmp_path / "plots" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert [axis.get_yscale() for axis in fig.axes] == ["log", "symlog", "linear"]
    low, high = fig.axes[0].get_ylim()
    assert low < 0.06 and high > 5  # both the fall and the drift after step 100 in view
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["loss", "eval_loss"]
    assert fig.axes[2].texts[0].get_text() == "no loss logged"
