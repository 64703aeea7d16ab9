"""First-stage retrieval: BM25 over per-video text (transcripts), or an imported run.

BM25 scoring is bm25s's (Lucene variant, English stop words, Snowball stemming); this module
only builds the corpus, asks for every document's score and orders candidates deterministically
(score descending, then document id descending, as trec_eval does). Either way the stage writes
the same three files: the first-stage JSON ``{qid: {docid: score}}``, a TREC run and
``video2queries`` JSON for the top ``depth`` candidates of every query.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from rankvideo import logs
from rankvideo.data import formats

log = logging.getLogger(__name__)


def bm25_run(queries: dict[str, str], documents: dict[str, str], depth: int,
             k1: float = 1.2, b: float = 0.75, stemmer_language: str | None = "english") -> formats.Run:
    """Top ``depth`` documents per query by BM25 score."""
    import bm25s

    if not documents:
        raise ValueError("BM25: the document collection is empty")
    stemmer = None
    if stemmer_language:
        import Stemmer

        stemmer = Stemmer.Stemmer(stemmer_language)
    doc_ids = sorted(documents)
    corpus = bm25s.tokenize([documents[d] for d in doc_ids], stopwords="en", stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(corpus, show_progress=False)
    run: formats.Run = {}
    for qid, text in queries.items():
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False,
                                return_ids=False)[0]
        vocabulary_tokens = [t for t in tokens if t in retriever.vocab_dict]
        scores = retriever.get_scores(vocabulary_tokens) if vocabulary_tokens else np.zeros(len(doc_ids))
        # round so that scores equal up to float noise tie, and ties break by id
        candidates = {doc_ids[i]: round(float(scores[i]), 6) for i in range(len(doc_ids))}
        run[qid] = {doc: candidates[doc] for doc in formats.ranked(candidates)[:depth]}
    return run


def truncate(run: formats.Run, depth: int) -> formats.Run:
    return {qid: {doc: docs[doc] for doc in formats.ranked(docs)[:depth]} for qid, docs in run.items()}


def write_stage(run: formats.Run, json_path, trec_path, video2queries_path, tag: str) -> None:
    """The three first-stage files, from one run."""
    formats.write_first_stage_json(json_path, run)
    formats.write_trec_run(trec_path, run, tag=tag)
    formats.write_json(video2queries_path, formats.video2queries_from_run(run))


def run_bm25_stage(queries_tsv, documents_jsonl, depth: int, json_path, trec_path, video2queries_path,
                   k1: float = 1.2, b: float = 0.75) -> formats.Run:
    queries = formats.read_queries(queries_tsv)
    documents = formats.read_id_text_jsonl(documents_jsonl)
    run = bm25_run(queries, documents, depth, k1=k1, b=b)
    write_stage(run, json_path, trec_path, video2queries_path, tag="bm25")
    log.info("BM25: %d queries, %d documents, depth %d", len(queries), len(documents), depth)
    return run


def run_import_stage(run_path, queries_tsv, depth: int, json_path, trec_path, video2queries_path) -> formats.Run:
    """Import a provided first-stage run (JSON or TREC) for the given queries, cut at ``depth``.

    Queries of the TSV with no candidates in the run are reported; run entries for queries not in
    the TSV are left out and counted, never silently.
    """
    queries = formats.read_queries(queries_tsv)
    full = formats.read_run(run_path)
    missing = sorted(set(queries) - set(full))
    extra = sorted(set(full) - set(queries))
    if missing:
        log.warning("%s: %d of %d queries have no first-stage candidates (e.g. %s)", run_path, len(missing),
                    len(queries), ", ".join(missing[:5]))
    if extra:
        log.info("%s: %d queries of the run are not in %s and are left out", run_path, len(extra), queries_tsv)
    run = truncate({qid: full[qid] for qid in queries if qid in full}, depth)
    write_stage(run, json_path, trec_path, video2queries_path, tag=Path(run_path).stem.replace(" ", "_") or "run")
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BM25 first stage over per-video text.")
    parser.add_argument("--queries", required=True, help="queries TSV")
    parser.add_argument("--documents", required=True, help="JSONL of {doc_id, text} (e.g. transcripts)")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--k1", type=float, default=1.2)
    parser.add_argument("--b", type=float, default=0.75)
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--output-trec", required=True)
    parser.add_argument("--output-video2queries", required=True)
    args = parser.parse_args(argv)
    logs.setup()
    try:
        run_bm25_stage(args.queries, args.documents, args.depth, args.output_json, args.output_trec,
                       args.output_video2queries, k1=args.k1, b=args.b)
    except (formats.FormatError, OSError) as error:  # malformed input; missing input, read-only or full disk
        print(f"error: {formats.io_error_sentence(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
