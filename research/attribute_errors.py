"""Which of a test query's attributes a reranker checks, on a finished synthetic-benchmark run.

    python research/attribute_errors.py RUN [RUN ...] [--workdir .] [--config config/config.yaml]

RUN is a scored run of the test queries: a TREC run file (``results/rerank/stage2/run.trec``) or
``{qid: {doc: score}}`` JSON (``stage2_variant.py``'s ``scores.json``). Each score is z-scored
within its query; the table gives the mean z of the first-stage candidates that have every
attribute the query names (exact matches, grade 2) and of those that miss exactly one, per missed
attribute. A reranker that checks an attribute puts a candidate missing it well below the exact
matches; one blind to it scores the two alike. The test queries' attributes are drawn again from
the run's config (:func:`attribute_oracle.test_attributes`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def attribute_errors(run: dict, test: dict, attributes: dict) -> dict[str, tuple[float, int]]:
    """{"exact" | attribute missed: (mean within-query z-score, number of candidates)}."""
    import numpy as np

    groups: dict[str, list[float]] = {}
    for qid, query in test.items():
        docs = run.get(qid) or {}
        if len(docs) < 2:
            continue
        values = np.array(list(docs.values()), dtype=float)
        mean, spread = values.mean(), values.std() or 1.0
        for doc, value in docs.items():
            missed = [a for a, v in query.items() if attributes[doc][a] != v]
            if len(missed) <= 1:
                groups.setdefault(missed[0] if missed else "exact", []).append((value - mean) / spread)
    return {key: (float(np.mean(v)), len(v)) for key, v in groups.items()}


def main(argv=None) -> int:
    from attribute_oracle import test_attributes

    from rankvideo.data import formats
    from rankvideo.demo.synthetic import ATTRIBUTES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="TREC run files or {qid: {doc: score}} JSON")
    parser.add_argument("--workdir", default=".", help="the pipeline's root (holds results/ and config/)")
    parser.add_argument("--config", default="config/config.yaml", help="the run's config (relative to --workdir)")
    parser.add_argument("--overlay", action="append", default=[], help="config files laid over --config, in order")
    args = parser.parse_args(argv)

    test, videos = test_attributes(Path(args.workdir), args.config, args.overlay)
    attributes = {v.video_id: v.attributes() for v in videos}
    keys = ["exact", *ATTRIBUTES]
    print("| run | " + " | ".join("exact match" if k == "exact" else f"misses {k}" for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for path in args.runs:
        table = attribute_errors(formats.read_run(path), test, attributes)
        cells = [f"{table[k][0]:+.2f} ({table[k][1]})" if k in table else "" for k in keys]
        print(f"| {path} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
