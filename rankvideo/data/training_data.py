"""Training data: join first-stage candidates, qrels, teacher labels, evidence and video paths.

Stage 2 (``train.jsonl`` / ``eval.jsonl``, split by query): one record per (training query,
candidate within ``depth``) in the seed's format::

    {"query_id", "query", "doc_id", "videos": [path], "true_label", "teacher_p_yes",
     "teacher_label", "evidence": {"caption", "asr"}, "positive"}

``true_label`` is the qrels grade where the pair is judged (else null); ``teacher_*`` come from the
teacher's record where there is one. ``positive`` (beyond the seed's format) is the pair's side in
stage 2: ``true_label >= positive_grade`` (the reference: grade 1, any relevance; grade 2 on graded
qrels makes a partial match a negative), or the teacher's label where the pair is unjudged. Stage 1 (``stage1_train.jsonl`` / ``stage1_eval.jsonl``, the
candidates' videos split by video with the same fraction and seed): one record per video, ``{"doc_id", "videos": [path], "caption", "caption_source"}``, captions from the
dataset's reference captions or from the caption model; a perception set (extra captioned videos,
``source: "perception"``) joins the training split. ``report.json`` / ``report.md`` count
examples, positives and negatives per split and list what stage 2 cannot use.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from rankvideo.data import formats
from rankvideo.video import VideoError, VideoResolver

log = logging.getLogger(__name__)


def is_positive(record: dict, positive_grade: int = 1) -> bool | None:
    """The record's ``positive`` field where the training data wrote one; else REFERENCE.md's rule:
    ``true_label >= positive_grade`` (1: any relevance); unjudged pairs fall back to the teacher's label."""
    if "positive" in record:
        return record["positive"]
    if record.get("true_label") is not None:
        return record["true_label"] >= positive_grade
    if record.get("teacher_label") is not None:
        return bool(record["teacher_label"])
    return None


def split_queries(qids: list[str], eval_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Seeded split of ids (queries, or videos for stage 1): (train, eval); eval gets round(n * fraction)."""
    ordered = sorted(qids)
    random.Random(seed).shuffle(ordered)
    n_eval = round(len(ordered) * eval_fraction)
    return set(ordered[n_eval:]), set(ordered[:n_eval])


def build(queries_tsv, qrels_path, first_stage_run, teacher_jsonl, asr_jsonl, captions_jsonl, resolver: VideoResolver,
          out_dir, depth: int, eval_fraction: float, seed: int, caption_source: str,
          stage1_captions: str | Path | None = None, positive_grade: int = 1, random_judged: int = 0,
          perception_captions: str | Path | None = None, perception_videos: VideoResolver | None = None) -> dict:
    """Write train/eval JSONL for both stages and the report into ``out_dir``; returns the report.

    ``captions_jsonl`` is the evidence (the caption model's captions); stage-1 targets come from
    ``stage1_captions`` (e.g. reference captions) when given, else from the same file. Besides the
    first stage's top ``depth``, each query gets ``random_judged`` more candidates drawn (seeded by
    seed and query id) from its judged videos outside that top: the first stage's candidates are
    mostly positives for short queries, so random judged videos give them negatives to learn from.
    ``perception_captions`` with ``perception_videos``: more (caption, video) pairs for stage 1's
    training split only; a caption whose video is missing is an error naming both."""
    out_dir = Path(out_dir)
    queries = formats.read_queries(queries_tsv)
    qrels = formats.read_qrels(qrels_path)
    run = formats.read_run(first_stage_run)
    teacher = {f"{r['query_id']}\t{r['doc_id']}": r for r in formats.read_jsonl(teacher_jsonl, ("query_id", "doc_id"))}
    captions = formats.read_id_text_jsonl(captions_jsonl)
    sft_captions = formats.read_id_text_jsonl(stage1_captions) if stage1_captions else captions
    asr = formats.read_id_text_jsonl(asr_jsonl) if asr_jsonl else {}
    unknown_teacher = sorted(k for k in teacher if k.split("\t")[0] not in queries)
    if unknown_teacher:
        raise ValueError(f"{teacher_jsonl}: {len(unknown_teacher)} teacher records are for queries not in {queries_tsv} "
                         f"(e.g. {unknown_teacher[0].split(chr(9))[0]!r})")
    train_q, eval_q = split_queries([q for q in queries if q in run], eval_fraction, seed)
    no_candidates = sorted(q for q in queries if q not in run)

    records = {"train": [], "eval": []}
    no_video: dict[str, str] = {}
    paths: dict[str, str] = {}
    for qid in queries:
        if qid not in run:
            continue
        split = "train" if qid in train_q else "eval"
        top = formats.ranked(run[qid])[:depth]
        judged_rest = sorted(set(qrels.get(qid, {})) - set(top))
        extra = random.Random(f"{seed}:{qid}").sample(judged_rest, min(random_judged, len(judged_rest)))
        for doc in top + extra:
            if doc not in paths and doc not in no_video:
                try:
                    paths[doc] = str(resolver.resolve(doc))
                except VideoError as error:
                    no_video[doc] = error.reason
            if doc in no_video:
                continue
            judged = qrels.get(qid, {}).get(doc)
            t = teacher.get(f"{qid}\t{doc}", {})
            records[split].append({
                "query_id": qid, "query": queries[qid], "doc_id": doc, "videos": [paths[doc]],
                "true_label": judged, "teacher_p_yes": t.get("teacher_p_yes"), "teacher_label": t.get("teacher_label"),
                "evidence": {"caption": captions.get(doc, ""), "asr": asr.get(doc, "")},
            })
            records[split][-1]["positive"] = is_positive(records[split][-1], positive_grade)

    report: dict = {"depth": depth, "eval_fraction": eval_fraction, "seed": seed, "caption_source": caption_source,
                    "positive_grade": positive_grade, "random_judged": random_judged,
                    "queries_without_candidates": no_candidates,
                    "pairs_without_video": {doc: reason for doc, reason in sorted(no_video.items())}, "splits": {}}
    for split, rows in records.items():
        formats.write_jsonl(out_dir / f"{split}.jsonl", rows)
        labels = [is_positive(r) for r in rows]
        by_query: dict[str, list] = {}
        for r, label in zip(rows, labels):
            by_query.setdefault(r["query_id"], []).append(label)
        report["splits"][split] = {
            "queries": len(by_query), "examples": len(rows), "positives": labels.count(True),
            "negatives": labels.count(False), "unlabelled": labels.count(None),
            "with_teacher_p_yes": sum(r["teacher_p_yes"] is not None for r in rows),
            "judged": sum(r["true_label"] is not None for r in rows),
            "queries_without_positive": sorted(q for q, ls in by_query.items() if True not in ls),
            "queries_without_negative": sorted(q for q, ls in by_query.items() if False not in ls),
        }

    # stage 1: one caption example per video (deduplicated by doc_id); videos split like queries, seeded
    videos: dict[str, list[str]] = {}
    missing_caption: list[str] = []
    for r in records["train"] + records["eval"]:
        videos.setdefault(r["doc_id"], r["videos"])
    train_v, eval_v = split_queries(list(videos), eval_fraction, seed)
    for split, keep in (("train", train_v), ("eval", eval_v)):
        rows = []
        for doc in sorted(keep):
            text = sft_captions.get(doc, "").strip()
            if not text:
                missing_caption.append(doc)
                continue
            rows.append({"doc_id": doc, "videos": videos[doc], "caption": text, "caption_source": caption_source})
        if split == "train" and perception_captions:
            rows += perception_rows(perception_captions, perception_videos, set(videos))
        formats.write_jsonl(out_dir / f"stage1_{split}.jsonl", rows)
        report["splits"][split]["stage1_videos"] = len(rows)
    report["videos_without_caption"] = sorted(missing_caption)
    formats.write_json(out_dir / "report.json", report)
    formats.write_text(out_dir / "report.md", render_report(report))
    log.info("training data:\n%s", render_report(report))
    return report


def perception_rows(captions_jsonl, resolver: VideoResolver | None, corpus_ids: set[str]) -> list[dict]:
    """Stage-1 rows of a perception set; its ids must not repeat the candidates' videos."""
    if resolver is None:
        raise ValueError(f"{captions_jsonl}: perception captions need their video folder (dataset.perception.videos)")
    rows = []
    for doc, text in sorted(formats.read_id_text_jsonl(captions_jsonl).items()):
        if doc in corpus_ids:
            raise ValueError(f"{captions_jsonl}: perception video {doc!r} is also a candidate video; use other ids")
        if not text.strip():
            raise ValueError(f"{captions_jsonl}: perception video {doc!r} has an empty caption")
        try:
            path = resolver.resolve(doc)
        except VideoError as error:
            raise ValueError(f"{captions_jsonl}: perception video {doc!r}: {error.reason}") from error
        rows.append({"doc_id": doc, "videos": [str(path)], "caption": text.strip(), "caption_source": "perception"})
    log.info("perception set: %d captioned videos join stage 1's training split", len(rows))
    return rows


def render_report(report: dict) -> str:
    lines = ["# Training data report", "",
             f"Candidates per query: first-stage top {report['depth']} + {report.get('random_judged', 0)} random judged; eval fraction {report['eval_fraction']} (seed {report['seed']}); "
             f"stage-1 captions: {report['caption_source']}; positives: true_label >= {report.get('positive_grade', 1)}.", "",
             "| split | queries | examples | positives | negatives | unlabelled | teacher p_yes | stage-1 videos |",
             "|---|---|---|---|---|---|---|---|"]
    for split, s in report["splits"].items():
        lines.append(f"| {split} | {s['queries']} | {s['examples']} | {s['positives']} | {s['negatives']} | "
                     f"{s['unlabelled']} | {s['with_teacher_p_yes']} | {s.get('stage1_videos', 0)} |")
    lines.append("")
    for split, s in report["splits"].items():
        for kind in ("queries_without_positive", "queries_without_negative"):
            if s[kind]:
                lines.append(f"- {split}: {len(s[kind])} {kind.replace('_', ' ')} (stage 2 cannot use them): "
                             + ", ".join(s[kind]))
    if report["pairs_without_video"]:
        lines.append(f"- {len(report['pairs_without_video'])} candidate videos without a readable file (pairs left out): "
                     + ", ".join(f"{d} ({r})" for d, r in report["pairs_without_video"].items()))
    if report["queries_without_candidates"]:
        lines.append(f"- {len(report['queries_without_candidates'])} queries without first-stage candidates: "
                     + ", ".join(report["queries_without_candidates"]))
    if report["videos_without_caption"]:
        lines.append(f"- {len(report['videos_without_caption'])} videos without a caption (no stage-1 example): "
                     + ", ".join(report["videos_without_caption"]))
    return "\n".join(lines) + "\n"
