"""Rerank a first-stage run with model scores and evaluate both with trec_eval semantics.

The measures come from pytrec_eval (``ndcg_cut_k`` and ``recall_k``), so every number here is
what trec_eval reports for the same run and qrels: documents ordered by score descending, then
document id descending; graded relevance is the gain (rel <= 0 counts as non-relevant); the mean
is over the queries present in both the qrels and the run.

Command line::

    python -m rankvideo.evaluate --first-stage run.json --qrels qrels.txt --pred-dir preds/ \\
        [--rerank-depth 100] [--output-depth N] [--ks 5,10,20,50,100] \\
        [--score-field logit_delta|p_yes] [--queries test.tsv] [--only-scored-queries] \\
        [--output summary.tsv] [--per-query-output per_query.tsv] [--run-output reranked.trec]

Files written (tab-separated, UTF-8, ``\\n`` line ends, written atomically):

- summary TSV (``--output``): header ``system n_queries coverage <measures>`` and one row per
  system (``first_stage``, ``reranked``). Measures are ordered ``ndcg_cut`` at each k, then
  ``recall`` at each k.
- per-query TSV (``--per-query-output``), wide: header ``system query_id <measures>``, one row
  per (system, query), queries in natural id order.

Both are intermediate files that :mod:`rankvideo.evaluation.metrics` reads back, so floats are written
with ``repr`` (shortest text that round-trips exactly): no precision is lost between steps and
the same input always gives the same bytes. Human-facing tables round later.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd
import pytrec_eval

from rankvideo.data.formats import (
    FormatError,
    PathLike,
    atomic_open,
    ranked,
    read_prediction_dir,
    read_qrels,
    read_queries,
    read_run,
    write_trec_run,
)

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50, 100)
MEASURE_FAMILIES: tuple[str, ...] = ("ndcg_cut", "recall")
SCORE_FIELDS: tuple[str, ...] = ("logit_delta", "p_yes")
FIRST_STAGE = "first_stage"
RERANKED = "reranked"
SUMMARY_COLUMNS: tuple[str, ...] = ("system", "n_queries", "coverage")
PER_QUERY_COLUMNS: tuple[str, ...] = ("system", "query_id")
#: how many ids a note lists before it says "..."
_NOTE_IDS = 10


class EvaluationError(ValueError):
    """The inputs cannot be evaluated together (e.g. no query left to evaluate)."""


# ----------------------------------------------------------------------------- helpers


def measure_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """Measure names as pytrec_eval prints them: ``ndcg_cut_k`` for each k, then ``recall_k``."""
    return [f"{family}_{k}" for family in MEASURE_FAMILIES for k in ks]


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
        raise EvaluationError(f"cutoffs must be distinct positive integers, got {list(ks)}")
    return ks


def natural_key(value: str) -> tuple:
    """Sort key that orders ``q2`` before ``q10`` (digit runs compared as numbers)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", value) if part)


def _format_float(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def _id_list(ids: Iterable[str]) -> str:
    ids = sorted(ids, key=natural_key)
    shown = ", ".join(ids[:_NOTE_IDS])
    return shown + (f", ... ({len(ids) - _NOTE_IDS} more)" if len(ids) > _NOTE_IDS else "")


# ----------------------------------------------------------------------------- reranking


def rerank_run(
    first_stage: Mapping[str, Mapping[str, float]],
    scores: Mapping[str, Mapping[str, float]],
    rerank_depth: int,
    output_depth: int | None = None,
) -> Run:
    """Rerank the top ``rerank_depth`` candidates of each first-stage query by model score.

    For each query of ``first_stage``, candidates are taken in first-stage order
    (:func:`rankvideo.data.formats.ranked`: score descending, then document id descending, i.e.
    trec_eval's order). The top ``rerank_depth`` candidates that have a model score in
    ``scores[qid][doc]`` come first, by model score descending, ties by first-stage rank; the
    candidates within the depth that have no model score follow in first-stage order; then every
    candidate below the depth, in first-stage order. The list is truncated to ``output_depth``
    when given. Model scores of documents that are not candidates within the depth are ignored.

    The returned scores are ``n - position`` (n = length of the returned list, position from 0):
    strictly decreasing, so trec_eval reproduces exactly this order.
    """
    if rerank_depth < 0:
        raise ValueError(f"rerank_depth must be >= 0, got {rerank_depth}")
    if output_depth is not None and output_depth < 1:
        raise ValueError(f"output_depth must be >= 1, got {output_depth}")
    reranked: Run = {}
    for qid, docs in first_stage.items():
        order = ranked(docs)
        model = scores.get(qid, {})
        head, tail = order[:rerank_depth], order[rerank_depth:]
        scored = []
        for position, doc in enumerate(head):
            if doc in model:
                value = float(model[doc])
                if math.isnan(value):
                    raise ValueError(f"model score of (query {qid!r}, document {doc!r}) is NaN")
                scored.append((-value, position, doc))
        scored.sort()
        scored_docs = {doc for _, _, doc in scored}
        final = [doc for _, _, doc in scored] + [doc for doc in head if doc not in scored_docs] + tail
        if output_depth is not None:
            final = final[:output_depth]
        n = len(final)
        reranked[qid] = {doc: float(n - position) for position, doc in enumerate(final)}
    return reranked


#: a system named "<system>+fusion" is <system>'s scores fused with the first stage's (see fuse)
FUSED_SUFFIX = "+fusion"


def fuse(first_stage: Run, scores: Run, rerank_depth: int, method: str = "zscore", weight: float = 0.5,
         rrf_k: float = 60.0) -> Run:
    """Fuse model scores with first-stage scores over each query's top ``rerank_depth`` candidates.

    ``zscore``: ``(1 - weight) * z(model) + weight * z(first stage)``, z-scores taken per query over
    the scored candidates (a constant list gets z = 0). ``rrf``: ``(1 - weight) / (k + rank_model) +
    weight / (k + rank_first_stage)``. Candidates without a model score are left out (they follow
    the scored ones, as in :func:`rerank_run`).
    """
    import numpy as np

    fused: Run = {}
    for qid, docs in first_stage.items():
        head = [d for d in ranked(docs)[:rerank_depth] if d in scores.get(qid, {})]
        if not head:
            continue
        model = np.array([scores[qid][d] for d in head], dtype=float)
        first = np.array([docs[d] for d in head], dtype=float)
        if method == "zscore":
            def z(x):
                return (x - x.mean()) / x.std() if x.std() > 0 else np.zeros_like(x)

            values = (1 - weight) * z(model) + weight * z(first)
        elif method == "rrf":
            model_rank = {d: r for r, d in enumerate(ranked(dict(zip(head, model))), start=1)}
            first_rank = {d: r for r, d in enumerate(head, start=1)}
            values = np.array([(1 - weight) / (rrf_k + model_rank[d]) + weight / (rrf_k + first_rank[d]) for d in head])
        else:
            raise EvaluationError(f"unknown fusion method {method!r}; use zscore or rrf")
        fused[qid] = {d: float(v) for d, v in zip(head, values)}
    return fused


def coverage(
    first_stage: Mapping[str, Mapping[str, float]],
    scores: Mapping[str, Mapping[str, float]],
    rerank_depth: int,
    qids: Iterable[str],
) -> tuple[int, int]:
    """(scored_pairs, asked_pairs) over ``qids``.

    ``asked_pairs`` counts the (query, candidate) pairs within the top ``rerank_depth`` of the
    first stage for each query of ``qids`` (queries absent from the first stage ask nothing);
    ``scored_pairs`` counts those that have a model score.
    """
    scored = asked = 0
    for qid in qids:
        model = scores.get(qid, {})
        head = ranked(first_stage.get(qid, {}))[:rerank_depth]
        asked += len(head)
        scored += sum(1 for doc in head if doc in model)
    return scored, asked


# ----------------------------------------------------------------------------- evaluation


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """Per-query ``ndcg_cut_k`` and ``recall_k`` of ``run`` with pytrec_eval.

    Only queries that are in both ``qrels`` and ``run`` are returned. A query whose run entry is
    empty is treated as absent, as it would be in a TREC run file. Relevance is graded (gain =
    rel); rel <= 0 is non-relevant.
    """
    ks = _check_ks(ks)
    cut = ",".join(str(k) for k in ks)
    qrels_ = {str(q): {str(d): int(r) for d, r in judged.items()} for q, judged in qrels.items() if judged}
    run_ = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items() if docs and q in qrels_}
    if not run_:
        return {}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels_, {f"ndcg_cut.{cut}", f"recall.{cut}"})
    names = measure_names(ks)
    return {qid: {name: float(values[name]) for name in names} for qid, values in evaluator.evaluate(run_).items()}


def per_query_frame(results: Mapping[str, Mapping[str, float]], ks: Sequence[int] = DEFAULT_KS) -> pd.DataFrame:
    """Per-query results as a DataFrame indexed by ``query_id`` (natural order), one column per measure."""
    names = measure_names(ks)
    qids = sorted(results, key=natural_key)
    frame = pd.DataFrame([[results[q][n] for n in names] for q in qids], columns=names, dtype=float)
    frame.index = pd.Index(qids, name="query_id", dtype=object)
    return frame


@dataclass
class SystemEvaluation:
    """What :func:`evaluate_system` found for one first stage (and its reranking).

    ``first_stage`` and ``reranked`` are per-query tables (index ``query_id``, one column per
    measure) over the same queries; ``reranked`` is None when no predictions were given.
    ``coverage`` = ``scored_pairs / asked_pairs`` (1.0 without predictions or when nothing was
    asked). ``notes`` says, in words, what was not used and why.
    """

    ks: tuple[int, ...]
    first_stage: pd.DataFrame
    reranked: pd.DataFrame | None
    n_queries: int
    scored_pairs: int
    asked_pairs: int
    rerank_depth: int
    notes: list[str] = field(default_factory=list)
    #: the reranked run over the evaluated queries (None without predictions)
    reranked_run: Run | None = None

    @property
    def coverage(self) -> float:
        return self.scored_pairs / self.asked_pairs if self.asked_pairs else 1.0

    @property
    def measures(self) -> list[str]:
        return measure_names(self.ks)

    def tables(self) -> dict[str, pd.DataFrame]:
        """{"first_stage": table, "reranked": table (if any)}."""
        tables = {FIRST_STAGE: self.first_stage}
        if self.reranked is not None:
            tables[RERANKED] = self.reranked
        return tables

    def table(self, which: str) -> pd.DataFrame:
        try:
            return self.tables()[which]
        except KeyError:
            raise KeyError(f"no {which!r} results (have {list(self.tables())})") from None

    def summary(self, names: Mapping[str, str] | None = None) -> pd.DataFrame:
        """One row per system: ``system, n_queries, coverage, <measure means>``.

        ``names`` renames rows (e.g. ``{"reranked": "rankvideo"}``); the first stage's coverage
        is 1.0 (it needs no predictions).
        """
        names = dict(names or {})
        rows = []
        for which, table in self.tables().items():
            cov = 1.0 if which == FIRST_STAGE else self.coverage
            means = [float(table[m].mean()) for m in self.measures]
            rows.append([names.get(which, which), self.n_queries, cov, *means])
        return pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, *self.measures])

    def relative_change(self) -> dict[str, float]:
        """Reranked vs first stage, in % of the first stage's mean, per measure (NaN if 0 or no reranking)."""
        if self.reranked is None:
            return {m: math.nan for m in self.measures}
        change = {}
        for m in self.measures:
            base, new = float(self.first_stage[m].mean()), float(self.reranked[m].mean())
            change[m] = (new - base) / base * 100.0 if base else math.nan
        return change

    def report(self) -> str:
        """A human-readable report: means, relative change, n queries, coverage, notes."""
        lines = [
            f"queries evaluated: {self.n_queries}",
            f"coverage: {self.coverage:.4f} ({self.scored_pairs}/{self.asked_pairs} pairs within rerank depth {self.rerank_depth} scored)"
            if self.reranked is not None
            else "coverage: 1.0000 (first stage only, no predictions)",
            "",
        ]
        width = max(len(m) for m in self.measures)
        header = f"{'measure':<{width}}  {'first_stage':>11}"
        if self.reranked is not None:
            header += f"  {'reranked':>11}  {'change':>9}"
        lines.append(header)
        change = self.relative_change()
        for m in self.measures:
            line = f"{m:<{width}}  {self.first_stage[m].mean():>11.4f}"
            if self.reranked is not None:
                pct = "n/a" if math.isnan(change[m]) else f"{change[m]:+.2f}%"
                line += f"  {self.reranked[m].mean():>11.4f}  {pct:>9}"
            lines.append(line)
        if self.notes:
            lines += ["", "notes:"] + [f"  - {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def evaluate_system(
    first_stage: PathLike,
    qrels: PathLike,
    pred_dir: PathLike | None = None,
    *,
    rerank_depth: int = 100,
    output_depth: int | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    score_field: str = "logit_delta",
    only_scored_queries: bool = False,
    queries: PathLike | None = None,
    fusion: Mapping | None = None,
) -> SystemEvaluation:
    """Evaluate one first stage and, given ``pred_dir``, its reranking by the model's scores.

    ``first_stage`` is a JSON (``{qid: {docid: score}}``) or TREC run; ``qrels`` TREC qrels;
    ``pred_dir`` a folder of per-video score JSONs (``score_field`` is the score used);
    ``queries`` an optional queries TSV whose ids restrict the evaluation (e.g. test queries).

    The evaluated queries are qrels ∩ first stage (∩ the subset); with ``only_scored_queries``
    the queries where no candidate within ``rerank_depth`` has a prediction are dropped too.
    First stage and reranked run are evaluated on the same queries; both are cut at
    ``output_depth`` when it is given, so the comparison stays fair. Everything left out is
    described in ``notes`` (also logged at INFO).
    """
    ks = _check_ks(ks)
    if score_field not in SCORE_FIELDS:
        raise EvaluationError(f"score field must be one of {', '.join(SCORE_FIELDS)}, got {score_field!r}")
    if rerank_depth < 0:
        raise EvaluationError(f"rerank depth must be >= 0, got {rerank_depth}")
    if output_depth is not None and output_depth < 1:
        raise EvaluationError(f"output depth must be >= 1, got {output_depth}")

    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        logger.info("%s", text)

    run = read_run(first_stage)
    judgements = read_qrels(qrels)

    empty = {q for q, docs in run.items() if not docs}
    if empty:
        note(f"{len(empty)} queries have no candidate in the first stage and count as absent from it: {_id_list(empty)}")
    in_run = set(run) - empty
    in_qrels = set(judgements)
    if queries is not None:
        # the query set (e.g. the test split) decides what is evaluated; say what lies outside it
        subset = set(read_queries(queries))
        if (in_qrels | in_run) - subset:
            note(f"{len(in_qrels - subset)} queries of the qrels and {len(in_run - subset)} of the first stage are "
                 f"not in {queries}; not evaluated")
        in_run &= subset
        in_qrels &= subset
        never = subset - in_run - in_qrels
        if never:
            note(f"{len(never)} queries of {queries} are in neither qrels nor first stage; not evaluated: {_id_list(never)}")
    if in_qrels - in_run:
        note(f"{len(in_qrels - in_run)} queries are in the qrels but not in the first stage; not evaluated: {_id_list(in_qrels - in_run)}")
    if in_run - in_qrels:
        note(f"{len(in_run - in_qrels)} queries are in the first stage but not in the qrels; not evaluated: {_id_list(in_run - in_qrels)}")
    selected = in_run & in_qrels

    scores: Run = {}
    if pred_dir is not None:
        scores = read_prediction_dir(pred_dir, score_field)
        if fusion:  # {"method", "weight", "rrf_k"}: the model's scores fused with the first stage's
            scores = fuse(run, scores, rerank_depth, fusion.get("method", "zscore"), fusion.get("weight", 0.5),
                          fusion.get("rrf_k", 60.0))
            note(f"scores fused with the first stage: {dict(fusion)}")
        for qid, docs in scores.items():
            for doc, value in docs.items():
                if math.isnan(value):
                    raise EvaluationError(f"{pred_dir}: {score_field} of (query {qid!r}, video {doc!r}) is NaN")
        # predictions that can never be used: not a first-stage candidate within the depth
        outside_depth = absent_query = unevaluated = 0
        for qid, docs in scores.items():
            if qid not in in_run:
                absent_query += len(docs)
                continue
            head = set(ranked(run[qid])[:rerank_depth])
            not_candidates = sum(1 for doc in docs if doc not in head)
            outside_depth += not_candidates
            if qid not in selected:
                unevaluated += len(docs) - not_candidates
        if outside_depth or absent_query:
            note(
                f"{outside_depth + absent_query} predicted pairs are not first-stage candidates within rerank depth "
                f"{rerank_depth} ({absent_query} of them for queries absent from the first stage); ignored"
            )
        if unevaluated:
            note(f"{unevaluated} predicted candidate pairs belong to queries that are not evaluated; ignored")

        if only_scored_queries:
            unscored = {q for q in selected if coverage(run, scores, rerank_depth, [q])[0] == 0}
            if unscored:
                note(
                    f"{len(unscored)} queries dropped (--only-scored-queries): no candidate within rerank depth "
                    f"{rerank_depth} has a prediction: {_id_list(unscored)}"
                )
            selected -= unscored

    if not selected:
        raise EvaluationError(
            f"no query left to evaluate (first stage {first_stage}, qrels {qrels}"
            + (f", queries {queries}" if queries is not None else "")
            + ")" + ("; " + "; ".join(notes) if notes else "")
        )

    no_relevant = {q for q in selected if not any(rel > 0 for rel in judgements[q].values())}
    if no_relevant:
        note(f"{len(no_relevant)} evaluated queries have no relevant document in the qrels; they count as 0 in every measure: {_id_list(no_relevant)}")

    first = {q: run[q] for q in selected}
    qrels_sel = {q: judgements[q] for q in selected}
    if output_depth is not None:
        first_eval = {q: {d: docs[d] for d in ranked(docs)[:output_depth]} for q, docs in first.items()}
    else:
        first_eval = first
    first_table = per_query_frame(evaluate_run(first_eval, qrels_sel, ks), ks)

    reranked_table = None
    reranked = None
    scored_pairs, asked_pairs = 0, 0
    if pred_dir is not None:
        scored_pairs, asked_pairs = coverage(run, scores, rerank_depth, selected)
        if scored_pairs < asked_pairs:
            note(
                f"{asked_pairs - scored_pairs} of {asked_pairs} (query, candidate) pairs within rerank depth {rerank_depth} "
                "have no prediction; they follow the scored ones in first-stage order"
            )
        reranked = rerank_run(first, scores, rerank_depth, output_depth)
        reranked_table = per_query_frame(evaluate_run(reranked, qrels_sel, ks), ks)
        assert list(reranked_table.index) == list(first_table.index)

    return SystemEvaluation(
        ks=ks,
        first_stage=first_table,
        reranked=reranked_table,
        n_queries=len(first_table),
        scored_pairs=scored_pairs,
        asked_pairs=asked_pairs,
        rerank_depth=rerank_depth,
        notes=notes,
        reranked_run=reranked,
    )


# ----------------------------------------------------------------------------- TSV files


def write_summary_tsv(path: PathLike, summary: pd.DataFrame) -> None:
    """Write a summary table (columns ``system n_queries coverage <measures>``) as TSV."""
    columns = list(summary.columns)
    if columns[: len(SUMMARY_COLUMNS)] != list(SUMMARY_COLUMNS):
        raise ValueError(f"summary columns must start with {SUMMARY_COLUMNS}, got {columns}")
    with atomic_open(path) as handle:
        handle.write("\t".join(columns) + "\n")
        for row in summary.itertuples(index=False):
            system, n, cov, *values = row
            handle.write("\t".join([str(system), str(int(n)), _format_float(cov), *map(_format_float, values)]) + "\n")


def write_per_query_tsv(path: PathLike, tables: Mapping[str, pd.DataFrame]) -> None:
    """Write per-query tables ``{system: table indexed by query_id}`` as one wide TSV.

    Header ``system query_id <measures>``; systems in the given order, queries in table order.
    Every table must have the same measure columns.
    """
    measures: list[str] | None = None
    with atomic_open(path) as handle:
        for system, table in tables.items():
            if measures is None:
                measures = list(table.columns)
                handle.write("\t".join([*PER_QUERY_COLUMNS, *measures]) + "\n")
            elif list(table.columns) != measures:
                raise ValueError(f"system {system!r}: measures {list(table.columns)} differ from {measures}")
            for qid, values in zip(table.index, table.itertuples(index=False)):
                handle.write("\t".join([system, str(qid), *map(_format_float, values)]) + "\n")


def write_system_results(
    result: SystemEvaluation,
    system: str,
    summary_tsv: PathLike | None = None,
    per_query_tsv: PathLike | None = None,
    which: str | None = None,
) -> None:
    """Write one system's one-row summary TSV and per-query TSV, rows named ``system``.

    ``which`` is ``"first_stage"`` or ``"reranked"``; by default the reranked results when there
    are any, else the first stage. This is what a pipeline rule per system writes.
    """
    which = which or (RERANKED if result.reranked is not None else FIRST_STAGE)
    table = result.table(which)
    if summary_tsv is not None:
        summary = result.summary({which: system})
        write_summary_tsv(summary_tsv, summary[summary["system"] == system].reset_index(drop=True))
    if per_query_tsv is not None:
        write_per_query_tsv(per_query_tsv, {system: table})


def _read_tsv(path: PathLike, leading: Sequence[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows of a TSV whose header starts with ``leading``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [(n, line.rstrip("\r\n").split("\t")) for n, line in enumerate(handle, start=1) if line.strip()]
    if not rows:
        raise FormatError(path, None, "empty file (expected a header line)")
    header = rows[0][1]
    if header[: len(leading)] != list(leading) or len(header) == len(leading):
        raise FormatError(path, 1, f"header must be {' '.join(leading)} followed by measures, found {' '.join(header)}")
    if len(set(header)) != len(header):
        raise FormatError(path, 1, "a column name appears twice")
    for number, fields in rows[1:]:
        if len(fields) != len(header):
            raise FormatError(path, number, f"expected {len(header)} tab-separated fields, found {len(fields)}")
    return header, rows[1:]


def _float_field(path: PathLike, number: int, value: str, what: str) -> float:
    if value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise FormatError(path, number, f"{what} {value!r} is not a number") from None


def read_summary_tsv(path: PathLike) -> pd.DataFrame:
    """Read a summary TSV written by :func:`write_summary_tsv` (one row per system)."""
    header, rows = _read_tsv(path, SUMMARY_COLUMNS)
    records, seen = [], set()
    for number, (system, n, cov, *values) in rows:
        if system in seen:
            raise FormatError(path, number, f"system {system!r} appears twice")
        seen.add(system)
        try:
            n_value = int(n)
        except ValueError:
            raise FormatError(path, number, f"n_queries {n!r} is not an integer") from None
        measures = [_float_field(path, number, v, name) for v, name in zip(values, header[3:])]
        records.append([system, n_value, _float_field(path, number, cov, "coverage"), *measures])
    return pd.DataFrame(records, columns=header)


def read_per_query_tsv(path: PathLike) -> dict[str, pd.DataFrame]:
    """Read a wide per-query TSV → {system: table indexed by query_id}, systems in file order."""
    header, rows = _read_tsv(path, PER_QUERY_COLUMNS)
    measures = header[2:]
    by_system: dict[str, dict[str, list[float]]] = {}
    for number, (system, qid, *values) in rows:
        queries = by_system.setdefault(system, {})
        if qid in queries:
            raise FormatError(path, number, f"query {qid!r} appears twice for system {system!r}")
        queries[qid] = [_float_field(path, number, v, name) for v, name in zip(values, measures)]
    tables = {}
    for system, queries in by_system.items():
        table = pd.DataFrame(list(queries.values()), columns=measures, dtype=float)
        table.index = pd.Index(list(queries), name="query_id", dtype=object)
        tables[system] = table
    return tables


# ----------------------------------------------------------------------------- command line


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        return _check_ks(int(part) for part in text.split(",") if part.strip())
    except (ValueError, EvaluationError) as err:
        raise argparse.ArgumentTypeError(f"invalid cutoffs {text!r}: {err}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rankvideo.evaluate",
        description="Evaluate a first-stage run and its reranking by model scores (pytrec_eval: nDCG@k, Recall@k).",
    )
    parser.add_argument("--pred-dir", help="folder of per-video score JSONs; without it only the first stage is evaluated")
    parser.add_argument("--first-stage", required=True, help="first-stage run: JSON {qid: {docid: score}} or TREC run")
    parser.add_argument("--qrels", required=True, help="TREC qrels (qid 0 docid rel)")
    parser.add_argument("--rerank-depth", type=_positive_int, default=100, help="candidates reranked per query (default 100)")
    parser.add_argument("--output-depth", type=_positive_int, default=None, help="cut both runs at this depth")
    parser.add_argument("--ks", type=_parse_ks, default=DEFAULT_KS, help="cutoffs, comma-separated (default 5,10,20,50,100)")
    parser.add_argument("--score-field", choices=SCORE_FIELDS, default="logit_delta", help="model score used for ranking")
    parser.add_argument("--queries", help="queries TSV: only these query ids are evaluated")
    parser.add_argument("--only-scored-queries", action="store_true", help="drop queries where no candidate has a prediction")
    parser.add_argument("--output", help="summary TSV: system n_queries coverage <measures>")
    parser.add_argument("--per-query-output", help="per-query TSV: system query_id <measures>")
    parser.add_argument("--run-output", help="reranked run as a TREC run file")
    parser.add_argument("--run-tag", default="rankvideo", help="tag of the TREC run (default rankvideo)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the notes on stderr as they are found")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run_output and not args.pred_dir:
        parser.error("--run-output needs --pred-dir (there is no reranked run without predictions)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr, format="%(levelname)s: %(message)s")
    try:
        result = evaluate_system(
            args.first_stage,
            args.qrels,
            args.pred_dir,
            rerank_depth=args.rerank_depth,
            output_depth=args.output_depth,
            ks=args.ks,
            score_field=args.score_field,
            only_scored_queries=args.only_scored_queries,
            queries=args.queries,
        )
        sys.stdout.write(result.report())
        if args.output:
            write_summary_tsv(args.output, result.summary())
        if args.per_query_output:
            write_per_query_tsv(args.per_query_output, result.tables())
        if args.run_output:
            write_trec_run(args.run_output, result.reranked_run, args.run_tag)
    except (FormatError, EvaluationError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
