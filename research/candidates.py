"""The test candidates of a finished synthetic-benchmark pipeline folder, and how the probes in
``research/`` evaluate scores of them: as the metrics table does (the reranked top
``rerank_depth`` of the first stage, its fusion with the first stage, nDCG@10 with pytrec_eval and
the paired p-value against the first stage)."""

from __future__ import annotations

from pathlib import Path


def add_run_arguments(parser) -> None:
    """``--work``, ``--device`` and ``--config``: what every probe over a finished run takes."""
    parser.add_argument("--work", required=True, help="folder for this probe's files and result.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", default="config/config.yaml")


def open_run(args) -> tuple[dict, Path]:
    """(the run's validated config, the work folder, created)."""
    import yaml

    from rankvideo import config

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    return config.validate(yaml.safe_load(Path(args.config).read_text())), work


def score_candidates(score_video, settings, video_dir: str = "results/benchmark/videos") -> dict[str, dict[str, float]]:
    """``{qid: {doc: score}}`` over the pairs the rerank rule scores (``video2queries_test.json``: every
    query a video is a first-stage candidate for); ``score_video(doc, video, qids)`` returns one float
    per query id."""
    from rankvideo.data import formats
    from rankvideo.video import load_video

    scores: dict[str, dict[str, float]] = {qid: {} for qid in formats.read_first_stage_json("results/first_stage/test.json")}
    for doc, qids in sorted(formats.read_video2queries("results/first_stage/video2queries_test.json").items()):
        video = load_video(Path(video_dir) / f"{doc}.mp4", settings)
        for qid, value in zip(qids, score_video(doc, video, qids)):
            scores[qid][doc] = float(value)
    return scores


def compare_with_first_stage(scores: dict, cfg: dict, name: str, extra: dict | None = None) -> dict:
    """nDCG@10 of ``name`` (the first stage reranked by ``scores``) and ``name+fusion``, with paired
    p-values against the first stage; printed in one line and returned (for result.json)."""
    import pandas as pd

    from rankvideo.data import formats
    from rankvideo.evaluation import evaluate
    from rankvideo.evaluation.metrics import paired_p_value

    first = formats.read_first_stage_json("results/first_stage/test.json")
    queries = formats.read_queries("results/benchmark/queries_test.tsv")
    qrels = {q: judged for q, judged in formats.read_qrels("results/benchmark/qrels.txt").items() if q in queries}

    def ndcg10(run) -> pd.Series:
        return pd.Series({q: m["ndcg_cut_10"] for q, m in evaluate.evaluate_run(run, qrels).items()})

    depth, fusion = cfg["evaluation"]["rerank_depth"], cfg["fusion"]
    base = ndcg10(first)
    systems = {name: ndcg10(evaluate.rerank_run(first, scores, depth)),
               f"{name}+fusion": ndcg10(evaluate.fuse(first, scores, depth, fusion["method"], fusion["weight"],
                                                      fusion["rrf_k"]))}
    result = {**(extra or {}), "first_stage": base.mean(),
              **{key: {"ndcg_cut_10": s.mean(), "p_value": paired_p_value(s, base)[0]} for key, s in systems.items()}}
    print(f"first_stage {base.mean():.3f} | " + " | ".join(
        f"{key} {result[key]['ndcg_cut_10']:.3f} (p {result[key]['p_value']:.2g})" for key in systems))
    return result
