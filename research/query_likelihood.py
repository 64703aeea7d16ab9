"""Does a model's *caption* head already rank the test candidates? Score each first-stage candidate
pair by the log-likelihood of the query as the model's caption of the video, then evaluate.

    python research/query_likelihood.py --work /tmp/ql [--model results/models/stage1]
        [--wording query|caption] [--device cpu] [--config config/config.yaml]

Run it in a finished pipeline folder (synthetic benchmark). A pair's score is
``sum_t log p(query_t | video, stage-1 caption prompt, <think>, query_<t)``: the stage-1 prompt
exactly as stage 1 trains it, with the query where the caption goes. ``--wording caption`` first
rewrites the query's motion and background phrases into the reference captions' words ("moving
left" -> "moves from right to left", "on a" -> "across a", a capital first letter; from
:mod:`rankvideo.demo.synthetic`), so
that a model which learnt the reference captions is asked in its own words. Scoring reads the same
pairs as the rerank rule (``video2queries_test.json``); nDCG@10 of the ranking and of its z-score
fusion with the first stage, with paired p-values against the first stage, go to
``work/result.json`` (scores in ``work/scores.json``).

This is a probe, not a reranker of the pipeline: it says whether what the reranker should compare
(query words against what the video shows) is already in a model, whatever its yes/no head does.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def caption_wording(query: str) -> str:
    """The query in the reference captions' words (the benchmark's own phrase tables)."""
    from rankvideo.demo import synthetic

    verb = "moves" if query.startswith(("a ", "something")) else "move"  # one object, as the captions say it
    for motion, phrase in synthetic.MOTION_PHRASES.items():
        query = query.replace(f"moving {motion}", f"{verb} {phrase}")
    query = query.replace(" on a ", " across a ")
    return query[:1].upper() + query[1:]  # captions start a sentence


def query_loglik(backend, video, queries: list[str]) -> list[float]:
    """log p(query | video) under the stage-1 caption prompt, one float per query (one batch).

    The clip goes through the processor once: each row is the prompt's token ids up to ``<think>``
    followed by its query's own tokens (``<think>`` is a special token, so nothing merges across it)."""
    import torch

    from rankvideo import prompts

    processor, model = backend.processor, backend.model
    prefix = processor.apply_chat_template(prompts.caption_messages(), tokenize=False,
                                           add_generation_prompt=True) + prompts.THINK_OPEN
    shared = processor(text=[prefix], videos=[video.frames], video_metadata=[video.metadata], do_sample_frames=False,
                       do_resize=False, return_tensors="pt")
    prefix_ids = shared["input_ids"][0].tolist()
    start = len(prefix_ids)
    pad = processor.tokenizer.pad_token_id
    rows = [prefix_ids + processor.tokenizer(q, add_special_tokens=False)["input_ids"] for q in queries]
    width = max(map(len, rows))
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    n = len(queries)
    inputs = {"input_ids": ids, "attention_mask": mask,
              "pixel_values_videos": shared["pixel_values_videos"].repeat(n, 1),
              "video_grid_thw": shared["video_grid_thw"].repeat(n, 1)}
    if "mm_token_type_ids" in shared:  # which tokens are video (M-RoPE): the prefix's, then text only
        types = shared["mm_token_type_ids"][0].tolist()
        inputs["mm_token_type_ids"] = torch.tensor([types + [0] * (width - start)] * n)
    with torch.no_grad():
        logprobs = model(**{k: v.to(model.device) for k, v in inputs.items()}).logits.float().log_softmax(-1)
    return [float(logprobs[i, start - 1:len(row) - 1].gather(-1, ids[i, start:len(row), None].to(model.device)).sum())
            for i, row in enumerate(rows)]


def main(argv=None) -> int:
    from candidates import add_run_arguments, compare_with_first_stage, open_run, score_candidates

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--model", default="results/models/stage1")
    parser.add_argument("--wording", choices=["query", "caption"], default="query")
    args = parser.parse_args(argv)

    from rankvideo.video import VideoSettings
    from rankvideo.data import formats
    from rankvideo.backends.hf import HFBackend

    cfg, work = open_run(args)
    settings = VideoSettings.from_config(cfg["train_stage1"]["video"])
    backend = HFBackend(args.model, device=args.device)

    queries = formats.read_queries("results/benchmark/queries_test.tsv")
    asked = {q: caption_wording(text) if args.wording == "caption" else text for q, text in queries.items()}
    scores = score_candidates(lambda doc, video, qids: query_loglik(backend, video, [asked[q] for q in qids]), settings)
    formats.write_json(work / "scores.json", scores)
    formats.write_json(work / "result.json", compare_with_first_stage(
        scores, cfg, "query_likelihood", {"model": args.model, "wording": args.wording}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
