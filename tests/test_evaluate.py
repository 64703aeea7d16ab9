"""Tests of rankvideo.evaluation.evaluate: trec_eval measures, reranking, coverage, notes and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rankvideo.evaluation import evaluate as ev
from rankvideo.data.formats import ranked, read_trec_run, write_video_scores

REPO = Path(__file__).resolve().parents[1]


def dcg(gains):
    """trec_eval's DCG: gain = rel (negative counts as 0), discount log2(rank + 1), rank from 1."""
    return sum(max(g, 0) / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def ndcg(gains, ideal, k):
    return dcg(gains[:k]) / dcg(sorted(ideal, reverse=True)[:k])


# ----------------------------------------------------------------------------- measures


QRELS = {
    # d6 is relevant but never retrieved; d8 has a negative grade (non-relevant)
    "q1": {"d1": 1, "d2": 0, "d3": 1, "d4": 2, "d5": 2, "d6": 2, "d8": -1},
    "q2": {"x": 0, "y": 0},  # no relevant document
    "q4": {"d1": 1},  # judged but not in the run
}
RUN = {
    # d2, d3, d4 tie at 2.0: trec_eval orders them by doc id descending: d4, d3, d2
    "q1": {"d1": 3.0, "d2": 2.0, "d3": 2.0, "d4": 2.0, "d5": 1.0, "d8": 0.5},
    "q2": {"x": 1.0, "z": 0.5},
    "q3": {"d1": 1.0},  # not judged
}


def test_ndcg_and_recall_by_hand_with_grades_and_ties():
    ks = (1, 2, 3, 5, 10)
    results = ev.evaluate_run(RUN, QRELS, ks)
    assert set(results) == {"q1", "q2"}  # only queries both judged and run
    assert list(results["q1"]) == ev.measure_names(ks)

    # order d1, d4, d3, d2, d5, d8 -> gains 1, 2, 1, 0, 2, -1 ; ideal from every judged doc
    gains = [1, 2, 1, 0, 2, -1]
    ideal = [1, 0, 1, 2, 2, 2, 0]
    n_relevant = 5  # d1 d3 d4 d5 d6
    relevant_at = {1: 1, 2: 2, 3: 3, 5: 4, 10: 4}
    for k in ks:
        assert results["q1"][f"ndcg_cut_{k}"] == pytest.approx(ndcg(gains, ideal, k), abs=1e-12)
        assert results["q1"][f"recall_{k}"] == pytest.approx(relevant_at[k] / n_relevant, abs=1e-12)
    # the tie-break matters: ascending ids (d2, d3, d4) would give a different nDCG@2
    assert results["q1"]["ndcg_cut_2"] != pytest.approx(ndcg([1, 0, 1, 2, 2, -1], ideal, 2))
    # explicit: nDCG@2 = (1 + 2/log2 3) / (2 + 2/log2 3)
    assert results["q1"]["ndcg_cut_2"] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 2 / math.log2(3)))
    # a query without relevant document counts as 0
    assert all(value == 0.0 for value in results["q2"].values())


def test_evaluate_run_ignores_empty_run_entries():
    results = ev.evaluate_run({"q1": {}, "q2": {"x": 1.0}}, QRELS, (5,))
    assert set(results) == {"q2"}


def test_measure_names_order():
    assert ev.measure_names((5, 10)) == ["ndcg_cut_5", "ndcg_cut_10", "recall_5", "recall_10"]


# ----------------------------------------------------------------------------- reranking


FIRST = {
    # first-stage order: a, b, d, c, e, f  (c and d tie; d first by id descending)
    "q": {"a": 10.0, "b": 9.0, "c": 8.0, "d": 8.0, "e": 5.0, "f": 4.0},
    "none": {"u": 2.0, "v": 1.0, "w": 3.0},
}
SCORES = {
    "q": {"a": 1.0, "b": 3.0, "d": 1.0, "e": 99.0, "zzz": 50.0},  # e below depth 4, zzz not a candidate
}


def test_rerank_orders_by_model_score_ties_by_first_stage_rank():
    out = ev.rerank_run(FIRST, SCORES, rerank_depth=4)
    # scored within depth: b (3), a (1), d (1; after a by first-stage rank); unscored c; then e, f
    assert ranked(out["q"]) == ["b", "a", "d", "c", "e", "f"]
    assert ranked(out["none"]) == ["w", "u", "v"]  # no score: first-stage order
    values = [out["q"][d] for d in ranked(out["q"])]
    assert all(x > y for x, y in zip(values, values[1:]))
    assert "zzz" not in out["q"]


def test_rerank_tie_uses_first_stage_id_tie_break():
    out = ev.rerank_run(FIRST, {"q": {"c": 0.5, "d": 0.5}}, rerank_depth=6)
    # c, d tie in model score; first stage had d before c
    assert ranked(out["q"]) == ["d", "c", "a", "b", "e", "f"]


def test_rerank_output_depth_and_depth_zero():
    out = ev.rerank_run(FIRST, SCORES, rerank_depth=4, output_depth=3)
    assert ranked(out["q"]) == ["b", "a", "d"]
    assert ranked(out["none"]) == ["w", "u", "v"]
    assert ranked(ev.rerank_run(FIRST, SCORES, rerank_depth=0)["q"]) == ranked(FIRST["q"])
    with pytest.raises(ValueError):
        ev.rerank_run(FIRST, SCORES, rerank_depth=-1)
    with pytest.raises(ValueError):
        ev.rerank_run(FIRST, {"q": {"a": float("nan")}}, rerank_depth=4)


def test_coverage_counts_pairs_within_depth():
    assert ev.coverage(FIRST, SCORES, 4, ["q"]) == (3, 4)
    assert ev.coverage(FIRST, SCORES, 4, ["q", "none", "absent"]) == (3, 7)
    assert ev.coverage(FIRST, SCORES, 6, ["q"]) == (4, 6)


# ----------------------------------------------------------------------------- evaluate_system


@pytest.fixture
def bench(tmp_path):
    """Small files: q1 scored, q2 unscored, q3 judged only, q4 run only, q5 without relevant doc."""
    first = {
        "q1": {"v1": 3.0, "v2": 2.0, "v3": 1.0, "v4": 0.5},
        "q2": {"v1": 2.0, "v5": 1.0},
        "q4": {"v1": 1.0},
        "q5": {"v2": 1.0, "v3": 0.5},
    }
    qrels = "q1 0 v1 0\nq1 0 v3 2\nq1 0 v4 1\nq2 0 v5 1\nq3 0 v1 1\nq5 0 v2 0\n"
    (tmp_path / "first.json").write_text(json.dumps(first))
    (tmp_path / "qrels.txt").write_text(qrels)
    preds = tmp_path / "preds"
    preds.mkdir()

    def pair(delta):
        return {"logprob_yes": 0.0, "logprob_no": -delta, "logit_delta": delta, "p_yes": 1 / (1 + math.exp(-delta))}

    # q1: v3 best, v4 second, v1 worst; v2 unscored. Extra: (q1, v9) not a candidate, (q9, v1) unknown query
    write_video_scores(preds / "v1.json", "v1", {"q1": pair(-2.0), "q9": pair(1.0)})
    write_video_scores(preds / "v3.json", "v3", {"q1": pair(3.0)})
    write_video_scores(preds / "v4.json", "v4", {"q1": pair(1.0)})
    write_video_scores(preds / "v9.json", "v9", {"q1": pair(5.0)})
    (tmp_path / "test_queries.tsv").write_text("q1\tfirst query\nq5\tfifth query\nq7\tunknown\n")
    return tmp_path


def test_evaluate_system_default(bench, caplog):
    caplog.set_level("INFO", logger="rankvideo.evaluation.evaluate")
    res = ev.evaluate_system(bench / "first.json", bench / "qrels.txt", bench / "preds", rerank_depth=3, ks=(1, 3))
    assert list(res.first_stage.index) == ["q1", "q2", "q5"]
    assert list(res.reranked.index) == ["q1", "q2", "q5"]
    assert res.n_queries == 3
    # asked: q1 top 3 (v1 v2 v3), q2 (v1 v5), q5 (v2 v3) = 7 ; scored: q1 v1, v3 = 2
    assert (res.scored_pairs, res.asked_pairs) == (2, 7)
    assert res.coverage == pytest.approx(2 / 7)
    # reranked q1: v3 (3), v1 (-2) scored; v2 unscored; v4 below depth -> v3 v1 v2 v4
    assert ranked(res.reranked_run["q1"]) == ["v3", "v1", "v2", "v4"]
    assert res.reranked.loc["q1", "ndcg_cut_1"] == 1.0
    assert res.first_stage.loc["q1", "ndcg_cut_1"] == 0.0
    assert res.first_stage.loc["q5", "recall_3"] == 0.0
    notes = "\n".join(res.notes)
    assert "1 queries are in the qrels but not in the first stage" in notes and "q3" in notes
    assert "1 queries are in the first stage but not in the qrels" in notes and "q4" in notes
    assert "no relevant document" in notes and "q5" in notes
    # (q1, v4) below depth 3, (q1, v9) not a candidate, (q9, v1) absent query
    assert "3 predicted pairs are not first-stage candidates within rerank depth 3 (1 of them for queries absent" in notes
    assert "5 of 7 (query, candidate) pairs" in notes
    assert caplog.messages == res.notes
    summary = res.summary({"reranked": "rv"})
    assert list(summary["system"]) == ["first_stage", "rv"]
    assert list(summary.columns) == ["system", "n_queries", "coverage", "ndcg_cut_1", "ndcg_cut_3", "recall_1", "recall_3"]
    assert summary.loc[0, "coverage"] == 1.0
    assert summary.loc[1, "ndcg_cut_1"] == pytest.approx(res.reranked["ndcg_cut_1"].mean())
    assert res.relative_change()["ndcg_cut_3"] == pytest.approx(
        (res.reranked["ndcg_cut_3"].mean() / res.first_stage["ndcg_cut_3"].mean() - 1) * 100
    )


def test_evaluate_system_only_scored_and_subset(bench):
    res = ev.evaluate_system(bench / "first.json", bench / "qrels.txt", bench / "preds", rerank_depth=3, ks=(1, 3), only_scored_queries=True)
    assert list(res.first_stage.index) == ["q1"]
    assert (res.scored_pairs, res.asked_pairs) == (2, 3)
    assert any("dropped (--only-scored-queries)" in n and "q2" in n and "q5" in n for n in res.notes)

    res = ev.evaluate_system(bench / "first.json", bench / "qrels.txt", bench / "preds", rerank_depth=3, ks=(1, 3), queries=bench / "test_queries.tsv")
    assert list(res.first_stage.index) == ["q1", "q5"]
    assert (res.scored_pairs, res.asked_pairs) == (2, 5)
    notes = "\n".join(res.notes)
    assert "2 queries of the qrels and 2 of the first stage are not in" in notes
    assert "in neither qrels nor first stage" in notes and "q7" in notes


def test_evaluate_system_first_stage_only_and_output_depth(bench):
    res = ev.evaluate_system(bench / "first.json", bench / "qrels.txt", ks=(1, 3))
    assert res.reranked is None and res.coverage == 1.0
    assert list(res.summary()["system"]) == ["first_stage"]
    # cutting at depth 2 drops v3 (rel 2, rank 3) of q1 from the first stage
    cut = ev.evaluate_system(bench / "first.json", bench / "qrels.txt", ks=(3,), output_depth=2)
    assert cut.first_stage.loc["q1", "recall_3"] == 0.0
    assert res.first_stage.loc["q1", "recall_3"] == 0.5


def test_evaluate_system_nothing_to_evaluate(bench):
    (bench / "other.tsv").write_text("zz\tnothing\n")
    with pytest.raises(ev.EvaluationError, match="no query left"):
        ev.evaluate_system(bench / "first.json", bench / "qrels.txt", queries=bench / "other.tsv")


def test_tsv_round_trip(bench, tmp_path):
    res = ev.evaluate_system(bench / "first.json", bench / "qrels.txt", bench / "preds", rerank_depth=3, ks=(1, 3))
    ev.write_system_results(res, "rv", tmp_path / "s.tsv", tmp_path / "pq.tsv")
    summary = ev.read_summary_tsv(tmp_path / "s.tsv")
    assert list(summary["system"]) == ["rv"]
    assert summary.loc[0, "coverage"] == res.coverage  # repr round-trips exactly
    tables = ev.read_per_query_tsv(tmp_path / "pq.tsv")
    assert list(tables) == ["rv"]
    assert tables["rv"].equals(res.reranked)


# ----------------------------------------------------------------------------- command line


def test_cli_end_to_end(bench, tmp_path, capsys):
    out, pq, trec = tmp_path / "out" / "summary.tsv", tmp_path / "pq.tsv", tmp_path / "rr.trec"
    rc = ev.main([
        "--pred-dir", str(bench / "preds"), "--first-stage", str(bench / "first.json"), "--qrels", str(bench / "qrels.txt"),
        "--rerank-depth", "3", "--output", str(out), "--per-query-output", str(pq), "--run-output", str(trec),
    ])
    assert rc == 0
    report = capsys.readouterr().out
    assert "queries evaluated: 3" in report and "coverage: 0.2857" in report and "notes:" in report
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == ["system", "n_queries", "coverage"] + [
        f"ndcg_cut_{k}" for k in (5, 10, 20, 50, 100)] + [f"recall_{k}" for k in (5, 10, 20, 50, 100)]
    assert [line.split("\t")[:3] for line in lines[1:]] == [["first_stage", "3", "1.0"], ["reranked", "3", repr(2 / 7)]]
    per_query = pq.read_text().splitlines()
    assert per_query[0].startswith("system\tquery_id\tndcg_cut_5")
    assert len(per_query) == 1 + 2 * 3
    run = read_trec_run(trec)
    assert ranked(run["q1"]) == ["v3", "v1", "v2", "v4"]
    assert set(run) == {"q1", "q2", "q5"}


def test_cli_first_stage_only(bench, tmp_path, capsys):
    out = tmp_path / "fs.tsv"
    assert ev.main(["--first-stage", str(bench / "first.json"), "--qrels", str(bench / "qrels.txt"), "--ks", "1,3", "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "system\tn_queries\tcoverage\tndcg_cut_1\tndcg_cut_3\trecall_1\trecall_3"
    assert len(lines) == 2 and lines[1].startswith("first_stage\t3\t1.0\t")


def test_cli_bad_qrels_exit_2(bench, capsys):
    bad = bench / "bad_qrels.txt"
    bad.write_text("q1 0 v1 1\nq1 0 v3 2\nq1 0 v4 high\n")
    rc = ev.main(["--first-stage", str(bench / "first.json"), "--qrels", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}:3" in err and "Traceback" not in err
    assert ev.main(["--first-stage", str(bench / "missing.json"), "--qrels", str(bench / "qrels.txt")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_cli_module_exit_code_without_traceback(bench):
    bad = bench / "bad_qrels.txt"
    bad.write_text("q1 0 v1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rankvideo.evaluate", "--first-stage", str(bench / "first.json"), "--qrels", str(bad)],
        capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert f"{bad}:1" in proc.stderr and "Traceback" not in proc.stderr
