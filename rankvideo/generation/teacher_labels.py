"""Teacher labels: a text LLM reasons over caption + ASR evidence for each query's top-k candidates.

    python -m rankvideo.generate_reasoning --queries Q --candidates RUN.trec --captions-jsonl C \\
        [--asr-jsonl A] --output teacher.jsonl --model-path M --topk 20 [--batch-size 16] \\
        [--reasoning-maxlen 256] [--backend hf|vllm] [--num-gpus 1]

The teacher writes a rationale in <think></think> and an answer in <answer></answer>;
``teacher_p_yes = sigmoid(logp(yes) - logp(no))`` at the token after ``<answer>`` (the teacher's
own output up to there, scored once more). Where the answer is missing or malformed,
``teacher_p_yes`` and ``teacher_label`` are null and the record is counted as such; no value is
made up. Records (REFERENCE.md): query_id, doc_id, query, evidence{caption, asr},
teacher_reasoning, teacher_label, teacher_p_yes, teacher_logit_delta, meta{rank, score, ...}.
Appended as made: a rerun finishes the missing pairs without duplicating any.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Sequence

from rankvideo import logs, prompts
from rankvideo.data import formats

log = logging.getLogger(__name__)


class EvidenceError(ValueError):
    """A candidate without usable evidence (unknown id, empty text)."""


def pair_key(record: dict) -> str:
    return f"{record['query_id']}\t{record['doc_id']}"


def candidate_pairs(queries: dict[str, str], run: formats.Run, topk: int) -> list[tuple[str, str, int, float]]:
    """(qid, doc, rank, score) of each query's top-k, queries in file order."""
    pairs = []
    for qid in queries:
        docs = run.get(qid, {})
        for rank, doc in enumerate(formats.ranked(docs)[:topk], start=1):
            pairs.append((qid, doc, rank, docs[doc]))
    return pairs


def evidence_for(doc: str, captions: dict[str, str], asr: dict[str, str] | None, captions_path, asr_path) -> dict:
    """{"caption", "asr"} of one video; a candidate with no caption (or an empty one) is an error."""
    if doc not in captions:
        raise EvidenceError(f"candidate video {doc!r} has no caption in {captions_path}")
    caption = captions[doc].strip()
    if not caption:
        raise EvidenceError(f"candidate video {doc!r} has an empty caption in {captions_path}")
    speech = (asr or {}).get(doc, "").strip()
    if asr is not None and doc not in asr:
        log.debug("video %s has no transcript in %s", doc, asr_path)
    return {"caption": caption, "asr": speech}


def label_pairs(pairs, queries, captions, asr, teacher, output, batch_size: int, reasoning_maxlen: int,
                captions_path=None, asr_path=None, progress: bool = True) -> dict:
    """Write one teacher record per pair not yet in ``output``; returns counts."""
    done = formats.JsonlAppender(output, pair_key)
    missing_evidence = [(q, d) for q, d, _, _ in pairs if d not in captions or not captions[d].strip()]
    if missing_evidence:
        q, d = missing_evidence[0]
        raise EvidenceError(f"{len(missing_evidence)} candidate pairs lack a caption (first: query {q!r}, video {d!r}) "
                            f"in {captions_path}; caption those videos or remove them from the candidates")
    todo = [p for p in pairs if f"{p[0]}\t{p[1]}" not in done]
    counts = {"pairs": len(pairs), "already_done": len(pairs) - len(todo), "labelled": 0, "answer_missing": 0,
              "answer_malformed": 0, "yes": 0, "no": 0}
    bar = logs.progress(total=len(todo), desc=f"teacher {teacher.model_name}", unit="pair", enabled=progress, logger=log)
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        evidence = [evidence_for(d, captions, asr, captions_path, asr_path) for _, d, _, _ in batch]
        rendered = [teacher.render(prompts.teacher_messages(queries[q], e["caption"], e["asr"] or "(none)"))
                    for (q, _, _, _), e in zip(batch, evidence)]
        outputs = teacher.generate_batch(rendered, reasoning_maxlen)
        parsed = [prompts.parse_teacher_output(text) for text in outputs]
        to_score = [i for i, (_, head, _) in enumerate(parsed) if head is not None]
        logprobs = dict(zip(to_score, teacher.answer_logprobs([rendered[i] + parsed[i][1] for i in to_score])))
        for i, ((qid, doc, rank, score), ev, text) in enumerate(zip(batch, evidence, outputs)):
            reasoning, head, label = parsed[i]
            p_yes = delta = None
            if head is None:
                counts["answer_missing"] += 1
            else:
                yes, no = logprobs[i]
                delta = yes - no
                p_yes = 1.0 / (1.0 + math.exp(-delta)) if delta > -700 else 0.0
                if label is None:
                    counts["answer_malformed"] += 1
                else:
                    counts["yes" if label else "no"] += 1
            done.append({"query_id": qid, "doc_id": doc, "query": queries[qid], "evidence": ev,
                         "teacher_reasoning": reasoning if reasoning is not None else text.strip(),
                         "teacher_label": label, "teacher_p_yes": p_yes, "teacher_logit_delta": delta,
                         "meta": {"rank": rank, "score": score, "model": teacher.model_name,
                                  "answer": "missing" if head is None else ("malformed" if label is None else "ok")}})
            counts["labelled"] += 1
        bar.update(len(batch))
    bar.close()
    log.info("teacher labels: %s", counts)
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rankvideo.generate_reasoning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", required=True, help="queries TSV")
    parser.add_argument("--candidates", required=True, help="first-stage run (TREC run or JSON)")
    parser.add_argument("--captions-jsonl", required=True, help="{doc_id, text} captions")
    parser.add_argument("--asr-jsonl", help="{doc_id, text} transcripts (optional)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", "--model-path", dest="model_path", required=True, help="text LLM: local folder or hub id")
    parser.add_argument("--topk", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reasoning-maxlen", type=int, default=256, help="new tokens for rationale + answer")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--num-gpus", type=int, default=1, help="vLLM tensor parallel size")
    parser.add_argument("--cache-dir")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup()
    try:
        counts = run(args.model_path, args.queries, args.candidates, args.captions_jsonl, args.asr_jsonl, args.output,
                     args.topk, args.batch_size, args.reasoning_maxlen, args.backend, progress=not args.no_progress,
                     options={"cache_dir": args.cache_dir, "dtype": args.dtype,
                              **({"device": args.device} if args.backend == "hf" else
                                 {"tensor_parallel_size": args.num_gpus})})
    except (formats.FormatError, EvidenceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # missing input, read-only or full disk, missing weights, lock held
        print(f"error: {formats.io_error_sentence(error)}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def create_teacher(backend: str, model: str, **options):
    if backend == "hf":
        from rankvideo.backends.hf import HFTextBackend

        return HFTextBackend(model, **options)
    from rankvideo.backends import require_vllm

    require_vllm()
    from rankvideo.backends.vllm import VLLMTextBackend

    return VLLMTextBackend(model, **options)


def run(model, queries_path, candidates_path, captions_path, asr_path, output, topk, batch_size, reasoning_maxlen,
        backend="hf", progress=True, options: dict | None = None) -> dict:
    queries = formats.read_queries(queries_path)
    run_ = formats.read_run(candidates_path)
    unknown = sorted(set(run_) - set(queries))
    if unknown:
        raise EvidenceError(f"{candidates_path}: {len(unknown)} queries are not in {queries_path} (e.g. {unknown[0]!r})")
    captions = formats.read_id_text_jsonl(captions_path)
    asr = formats.read_id_text_jsonl(asr_path) if asr_path else None
    pairs = candidate_pairs(queries, run_, topk)
    teacher = create_teacher(backend, model, **(options or {}))
    output = Path(output)
    with formats.DirLock(output.parent, lock_file=output.with_name(f".{output.name}.lock")):  # one writer
        return label_pairs(pairs, queries, captions, asr, teacher, output, batch_size, reasoning_maxlen,
                           captions_path, asr_path, progress)


if __name__ == "__main__":
    sys.exit(main())
