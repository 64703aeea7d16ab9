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
- PNG plot: nDCG@k against k, one line per system with a 95% bootstrap interval over the queries
  as a band (Agg, no pyplot state, no software/date metadata, so the same input gives the same
  bytes with the same matplotlib).
- win/loss TSV and PNG (optional): per system, the queries where it beats, ties and loses to the
  baseline on the measure, and the mean difference, each rate with its 95% bootstrap interval.

Bootstrap intervals resample the queries with replacement ``n_boot`` times from a generator
seeded with ``seed`` (percentile intervals of the mean): the same input gives the same intervals.
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

#: resamples of the queries behind the 95% intervals, and the default seed of their generator
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0

#: columns of the win/loss table
WIN_LOSS_COLUMNS = ("system", "n_queries", "wins", "ties", "losses", "win_rate", "win_low", "win_high",
                    "loss_rate", "loss_low", "loss_high", "mean_delta", "delta_low", "delta_high")

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


def bootstrap_interval(values, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval (``level``) of the mean of ``values`` (one per query) over ``n_boot``
    resamples of the queries with replacement, drawn from ``numpy.random.default_rng(seed)``; NaN
    for no values. The same values and seed give the same interval."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def win_loss(tables: Mapping[str, pd.DataFrame], baseline: str, measure: str, n_boot: int = BOOTSTRAP_SAMPLES,
             seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """Per system other than ``baseline``, over the queries both evaluated: how many it wins,
    ties and loses on ``measure``, the win and loss rates and the mean difference (system minus
    baseline), each with its 95% bootstrap interval (:func:`bootstrap_interval`). Columns
    :data:`WIN_LOSS_COLUMNS`, systems in ``tables``' order."""
    rows = []
    base = tables[baseline][measure].dropna()
    for system, table in tables.items():
        if system == baseline:
            continue
        own = table[measure].dropna()
        common = sorted(set(own.index) & set(base.index), key=natural_key)
        delta = own.loc[common].to_numpy(dtype=float) - base.loc[common].to_numpy(dtype=float)
        wins, losses = (delta > 0).astype(float), (delta < 0).astype(float)
        rate = (lambda x: float(x.mean())) if len(common) else (lambda x: math.nan)
        rows.append([system, len(common), int(wins.sum()), int(len(common) - wins.sum() - losses.sum()),
                     int(losses.sum()), rate(wins), *bootstrap_interval(wins, n_boot, seed),
                     rate(losses), *bootstrap_interval(losses, n_boot, seed),
                     rate(delta), *bootstrap_interval(delta, n_boot, seed)])
    return pd.DataFrame(rows, columns=list(WIN_LOSS_COLUMNS))


def write_win_loss_tsv(path: PathLike, frame: pd.DataFrame) -> None:
    """The :func:`win_loss` table: counts as integers, rates and differences with 4 decimals."""
    with atomic_open(path) as handle:
        handle.write("\t".join(WIN_LOSS_COLUMNS) + "\n")
        for row in frame.itertuples(index=False):
            system, n, wins, ties, losses, *values = row
            cells = [str(system), *(str(int(x)) for x in (n, wins, ties, losses))]
            handle.write("\t".join(cells + [_format(v, MEASURE_FORMAT) for v in values]) + "\n")


def _figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: PathLike) -> None:
    """Write ``fig`` atomically, without software/date metadata (same figure, same bytes)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", metadata={"Software": None})


def plot_win_loss(path: PathLike, frame: pd.DataFrame, baseline: str, measure: str) -> None:
    """PNG of a :func:`win_loss` table: left, the share of queries each system wins (right of 0)
    and loses (left of 0) against ``baseline``; right, the mean difference; 95% intervals as
    whiskers, the win/tie/loss counts beside each system."""
    fig = _figure(9, 1.8 + 0.6 * max(1, len(frame)))
    rates, deltas = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(frame))[::-1]
    for values, low, high, sign, colour, label in (("win_rate", "win_low", "win_high", 1, "tab:green", "wins"),
                                                     ("loss_rate", "loss_low", "loss_high", -1, "tab:red", "losses")):
        centre = sign * frame[values].to_numpy(dtype=float)
        ends = sign * frame[[low, high]].to_numpy(dtype=float).T  # losses drawn left of 0: the ends swap
        error = np.vstack([centre - ends.min(axis=0), ends.max(axis=0) - centre])
        rates.barh(y, centre, color=colour, alpha=0.7, label=label)
        rates.errorbar(centre, y, xerr=error, fmt="none", ecolor="black", capsize=3)
    rates.axvline(0, color="black", linewidth=0.8)
    rates.set_xlim(-1.05, 1.05)
    rates.set_xticks([-1, -0.5, 0, 0.5, 1])
    rates.set_xticklabels(["100%", "50%", "0", "50%", "100%"])
    rates.set_yticks(y)
    rates.set_yticklabels([f"{row.system}\n{row.wins}/{row.ties}/{row.losses}" for row in frame.itertuples(index=False)])
    rates.set_ylabel("system, wins/ties/losses")
    rates.set_xlabel(f"share of queries lost | won against {baseline}")
    rates.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    mean = frame["mean_delta"].to_numpy(dtype=float)
    error = np.vstack([mean - frame["delta_low"].to_numpy(dtype=float), frame["delta_high"].to_numpy(dtype=float) - mean])
    deltas.errorbar(mean, y, xerr=error, fmt="o", color="tab:blue", capsize=3)
    deltas.axvline(0, color="black", linewidth=0.8)
    deltas.set_xlabel(f"mean {measure} difference vs {baseline}")
    for axis in (rates, deltas):
        axis.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"per-query {measure} against {baseline}, 95% bootstrap intervals")
    fig.tight_layout()
    _save_png(fig, path)


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
    win_loss_tsv: PathLike | None = None,
    win_loss_plot: PathLike | None = None,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Write the metrics table, the combined per-query table of ``measure``, the nDCG@k plot and,
    where their paths are given, the win/loss table and plot against ``baseline``.

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
    plot_ndcg_at_k(plot_path, table, tables, n_boot=n_boot, seed=seed)
    logger.info("wrote %s, %s and %s:\n%s", output_tsv, per_query_tsv, plot_path, table.to_string(index=False))
    if win_loss_tsv is not None or win_loss_plot is not None:
        wins = win_loss(tables, baseline, measure, n_boot=n_boot, seed=seed)
        if win_loss_tsv is not None:
            write_win_loss_tsv(win_loss_tsv, wins)
        if win_loss_plot is not None:
            plot_win_loss(win_loss_plot, wins, baseline, measure)
        logger.info("per-query %s against %s:\n%s", measure, baseline,
                    wins[["system", "n_queries", "wins", "ties", "losses", "mean_delta", "delta_low", "delta_high"]]
                    .to_string(index=False))
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


def plot_ndcg_at_k(path: PathLike, table: pd.DataFrame, per_query: Mapping[str, pd.DataFrame] | None = None,
                   n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> None:
    """PNG of nDCG@k (x = k) with one line per row of ``table`` (columns ``system``, ``ndcg_cut_k``);
    with ``per_query`` (system -> per-query table), a band of each point's 95% bootstrap interval."""
    columns = sorted(
        ((int(m.group(1)), c) for c in table.columns if (m := re.fullmatch(r"ndcg_cut_(\d+)", str(c)))),
    )
    if not columns:
        raise EvaluationError("no ndcg_cut_k measure to plot")
    ks = [k for k, _ in columns]
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    for _, row in table.iterrows():
        (line,) = ax.plot(ks, [row[c] for _, c in columns], marker="o", label=str(row["system"]))
        if per_query is not None and row["system"] in per_query:
            bounds = [bootstrap_interval(per_query[row["system"]][c].dropna(), n_boot, seed) for _, c in columns]
            ax.fill_between(ks, [b[0] for b in bounds], [b[1] for b in bounds], color=line.get_color(), alpha=0.15,
                            linewidth=0)
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k")
    ax.set_ylabel("nDCG@k")
    ax.set_title("nDCG@k by system" + (" (bands: 95% bootstrap intervals)" if per_query is not None else ""))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_png(fig, path)


def plot_loss_curves(model_dirs, path: PathLike):
    """Training (and eval) loss per step of each trained stage, from its ``loss_history.json``.

    The loss axis is logarithmic: a run's loss falls by orders of magnitude in its first steps
    (the tiny model's stage 1: 6.9 to 0.75 in 80 steps, then 0.2 to 0.06 over 3,000), and a linear
    axis shows everything after the fall as a flat line at zero. Symmetric-log where a loss is
    not positive. Returns the figure."""

    fig = _figure(6, 3.5 * max(1, len(model_dirs)))
    for row, folder in enumerate(model_dirs):
        history = read_json(Path(folder) / "loss_history.json")
        axis = fig.add_subplot(len(model_dirs), 1, row + 1)
        values = []
        for key, style in (("loss", "-"), ("eval_loss", "o--")):
            points = [(h["step"], h[key]) for h in history if key in h]
            if points:
                axis.plot(*zip(*points), style, label=key)
                values += [v for _, v in points]
        if values:
            axis.set_yscale("log" if min(values) > 0 else "symlog")
            axis.legend()
        else:
            axis.text(0.5, 0.5, "no loss logged", transform=axis.transAxes, ha="center", va="center")
        axis.set_title(Path(folder).name)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("loss (log scale)")
        axis.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _save_png(fig, path)
    return fig
