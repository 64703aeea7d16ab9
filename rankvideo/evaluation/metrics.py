"""Gather every system's evaluation into one table, a paired significance test and a plot.

Input, per system (written by :func:`rankvideo.evaluation.evaluate.write_system_results` or the
``rankvideo.evaluation.evaluate`` command line):

- a summary TSV ``system n_queries coverage <measures>`` that has a row for the system;
- a per-query TSV ``system query_id <measures>`` that has the system's rows.

One file may serve several systems (the command line's ``--output`` holds both ``first_stage``
and ``reranked``); rows are picked by the system name.

Output (tab-separated, UTF-8, ``\\n`` line ends, written atomically, deterministic):

- metrics TSV: ``system n_queries coverage <measures...> p_value``, one row per system in the
  given order. ``coverage`` and measures are written with 4 decimals (``%.4f``); ``p_value``
  with 4 significant digits (``%.4g``, so small p-values stay readable) and is empty for the
  baseline row and wherever it is undefined (fewer than 2 shared queries). The p-value is a
  paired two-sided t-test (``scipy.stats.ttest_rel``) of the system against the baseline on one
  measure over the queries both evaluated; 1.0 when every difference is zero.
- combined per-query TSV: ``query_id <system...>`` with that measure per query (4 decimals,
  empty where a system did not evaluate the query), queries in natural id order.
- PNG plot: nDCG@k against k, one line per system (Agg, no pyplot state, no software/date
  metadata, so the same input gives the same bytes with the same matplotlib).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from rankvideo.evaluation.evaluate import (
    SUMMARY_COLUMNS,
    EvaluationError,
    natural_key,
    read_per_query_tsv,
    read_summary_tsv,
)
from rankvideo.data.formats import PathLike, atomic_open, read_json

#: fixed float formats of the written tables
MEASURE_FORMAT = "{:.4f}"
P_VALUE_FORMAT = "{:.4g}"

logger = logging.getLogger(__name__)


def paired_p_value(system: pd.Series, baseline: pd.Series) -> tuple[float, int]:
    """Two-sided paired t-test p-value of ``system`` vs ``baseline`` (Series indexed by query id)
    over the queries both have, and the number of such queries.

    1.0 when every difference is zero; NaN with fewer than 2 shared queries.
    """
    common = sorted(set(system.dropna().index) & set(baseline.dropna().index), key=natural_key)
    if len(common) < 2:
        return math.nan, len(common)
    a = system.loc[common].to_numpy(dtype=float)
    b = baseline.loc[common].to_numpy(dtype=float)
    if np.all(a == b):
        return 1.0, len(common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(a, b).pvalue), len(common)


def _format(value: float, fmt: str) -> str:
    return "" if value is None or math.isnan(value) else fmt.format(value)


def _load(
    per_query: Mapping[str, PathLike], summaries: Mapping[str, PathLike]
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Summary rows (in per_query's order) and per-query tables of every system."""
    systems = list(per_query)
    if not systems:
        raise EvaluationError("no system to tabulate")
    if set(summaries) != set(systems):
        raise EvaluationError(f"systems with a per-query file {sorted(systems)} differ from those with a summary {sorted(summaries)}")
    summary_cache: dict[str, pd.DataFrame] = {}
    per_query_cache: dict[str, dict[str, pd.DataFrame]] = {}
    rows, tables, measures = [], {}, None
    for system in systems:
        path = str(summaries[system])
        if path not in summary_cache:
            summary_cache[path] = read_summary_tsv(path)
        summary = summary_cache[path]
        row = summary[summary["system"] == system]
        if row.empty:
            raise EvaluationError(f"{path}: no row for system {system!r} (found {', '.join(summary['system'])})")
        if measures is None:
            measures = list(summary.columns[len(SUMMARY_COLUMNS):])
        elif list(summary.columns[len(SUMMARY_COLUMNS):]) != measures:
            raise EvaluationError(f"{path}: measures {list(summary.columns[3:])} differ from the other systems' {measures}")
        rows.append(row.iloc[0])

        path = str(per_query[system])
        if path not in per_query_cache:
            per_query_cache[path] = read_per_query_tsv(path)
        if system not in per_query_cache[path]:
            raise EvaluationError(f"{path}: no rows for system {system!r} (found {', '.join(per_query_cache[path])})")
        table = per_query_cache[path][system]
        if list(table.columns) != measures:
            raise EvaluationError(f"{path}: measures {list(table.columns)} differ from the summary's {measures}")
        if len(table) != int(rows[-1]["n_queries"]):
            raise EvaluationError(f"{path}: {len(table)} queries for system {system!r}, its summary says {int(rows[-1]['n_queries'])}")
        tables[system] = table
    return pd.DataFrame(rows).reset_index(drop=True).infer_objects(), tables


def build_metrics_table(
    per_query: Mapping[str, PathLike],
    summaries: Mapping[str, PathLike],
    output_tsv: PathLike,
    per_query_tsv: PathLike,
    plot_path: PathLike,
    baseline: str = "first_stage",
    measure: str = "ndcg_cut_10",
) -> pd.DataFrame:
    """Write the metrics table, the combined per-query table of ``measure`` and the nDCG@k plot.

    ``per_query`` and ``summaries`` map each system name to its per-query and summary TSV;
    ``per_query``'s order is the row order. ``baseline`` must be one of the systems. Returns the
    metrics table (unrounded; columns ``system n_queries coverage <measures> p_value``).
    """
    summary, tables = _load(per_query, summaries)
    if baseline not in tables:
        raise EvaluationError(f"baseline {baseline!r} is not one of the systems {list(tables)}")
    measures = list(summary.columns[len(SUMMARY_COLUMNS):])
    if measure not in measures:
        raise EvaluationError(f"measure {measure!r} is not among the evaluated measures {measures}")

    p_values = []
    for system in summary["system"]:
        if system == baseline:
            p_values.append(math.nan)
        else:
            p_values.append(paired_p_value(tables[system][measure], tables[baseline][measure])[0])
    table = summary.copy()
    table["n_queries"] = table["n_queries"].astype(int)
    table["p_value"] = p_values

    with atomic_open(output_tsv) as handle:
        handle.write("\t".join(table.columns) + "\n")
        for row in table.itertuples(index=False):
            system, n, cov, *values, p = row
            cells = [str(system), str(int(n)), _format(cov, MEASURE_FORMAT)]
            cells += [_format(v, MEASURE_FORMAT) for v in values] + [_format(p, P_VALUE_FORMAT)]
            handle.write("\t".join(cells) + "\n")

    write_combined_per_query(per_query_tsv, tables, measure)
    plot_ndcg_at_k(plot_path, table)
    logger.info("wrote %s, %s and %s:\n%s", output_tsv, per_query_tsv, plot_path, table.to_string(index=False))
    return table


def write_combined_per_query(path: PathLike, tables: Mapping[str, pd.DataFrame], measure: str) -> None:
    """``query_id <system...>``: ``measure`` per query and system (empty where not evaluated)."""
    qids = sorted(set().union(*(t.index for t in tables.values())), key=natural_key)
    with atomic_open(path) as handle:
        handle.write("\t".join(["query_id", *tables]) + "\n")
        for qid in qids:
            cells = [qid]
            for table in tables.values():
                cells.append(_format(float(table.at[qid, measure]), MEASURE_FORMAT) if qid in table.index else "")
            handle.write("\t".join(cells) + "\n")


def plot_ndcg_at_k(path: PathLike, table: pd.DataFrame) -> None:
    """PNG of nDCG@k (x = k) with one line per row of ``table`` (columns ``system``, ``ndcg_cut_k``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = sorted(
        ((int(m.group(1)), c) for c in table.columns if (m := re.fullmatch(r"ndcg_cut_(\d+)", str(c)))),
    )
    if not columns:
        raise EvaluationError("no ndcg_cut_k measure to plot")
    ks = [k for k, _ in columns]
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for _, row in table.iterrows():
        ax.plot(ks, [row[c] for _, c in columns], marker="o", label=str(row["system"]))
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k")
    ax.set_ylabel("nDCG@k")
    ax.set_title("nDCG@k by system")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", metadata={"Software": None})


def plot_loss_curves(model_dirs, path: PathLike) -> None:
    """Training (and eval) loss per step of each trained stage, from its ``loss_history.json``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure


    figure = Figure(figsize=(6, 3.5 * max(1, len(model_dirs))))
    for row, folder in enumerate(model_dirs):
        history = read_json(Path(folder) / "loss_history.json")
        axis = figure.add_subplot(len(model_dirs), 1, row + 1)
        for key, style in (("loss", "-"), ("eval_loss", "o--")):
            points = [(h["step"], h[key]) for h in history if key in h]
            if points:
                axis.plot(*zip(*points), style, label=key)
        axis.set_title(Path(folder).name)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("loss")
        axis.legend()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
