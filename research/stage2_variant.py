"""Train stage 2 again from a finished pipeline's stage-1 model with something changed, score the
test candidates and print nDCG@10 of stage 2 and of its fusion against the first stage.

    python research/stage2_variant.py --work /tmp/v1 [--description config|none|self|reference]
        [--motion-words query] [--set lr=1e-3 tau_rank=1 ...] [--steps 3000] [--device cpu]
        [--teacher pipeline|query-likelihood] [--init MODEL]

Run it in a pipeline folder after ``snakemake`` (synthetic benchmark): it reads
``results/models/stage1``, ``results/training_data/{train,eval}.jsonl``, the first stage's test
candidates (``video2queries_test.json``), the benchmark's queries, qrels and reference captions, and the config's
``train_stage2``, ``evaluation`` and ``fusion`` sections and ``rerank.prompt_variant`` (trained and
scored with). ``--set`` overrides ``train_stage2`` keys.

``--description self`` puts the stage-1 model's own caption of each video into the training and the
scoring prompt, before the query ("Video description: ...", :func:`rankvideo.prompts.render_rerank`,
as the pipeline does with ``descriptions.enabled``): the describe rule's
``results/descriptions/descriptions.jsonl`` when the run has it, else written once into the work
folder the same way; ``reference`` puts the benchmark's reference caption there; ``config`` (the
default) does what the run's config does (self when ``descriptions.enabled``, else none).
``--motion-words query`` rewrites the captions' motion phrases in the queries' words ("moves left"
instead of "moves from right to left"). ``--teacher query-likelihood`` replaces the pipeline's
teacher p_yes by the stage-1 model's likelihood of each training query as its caption of the video
(in the captions' words, z-scored within the query, p_yes = sigmoid(2 z); with ``--set
lambda_distill=5``); ``--init`` starts stage 2 from another model folder (default: the one the
pipeline's stage 2 starts from, ``results/models/stage1-copy`` with copy pretraining, else
``results/models/stage1``; e.g. ``results/models/tiny-vlm``, no stage 1). ``--positive-grade 2``
makes only exact matches positives. ``--swap-negatives``, ``--video-swap`` and ``--score-descriptions
shuffled`` are the probes of ``research/results/stage2_variants.md`` (2026-11-30, third part), each
explained by its ``--help``. The work folder keeps the trained model, the scores and
``result.json``; an existing model there is scored again, not retrained.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

QUERY_MOTION_WORDS = {"from right to left": "left", "from left to right": "right", "upward": "up", "downward": "down"}


PIPELINE_DESCRIPTIONS = Path("results/descriptions/descriptions.jsonl")


def self_captions(work: Path, video_dir: Path, cfg: dict, device: str) -> dict[str, str]:
    """The stage-1 model's captions (stage-1 prompt) of the videos stage 2 meets (training pairs, test
    candidates): the describe rule's when the run has them, else written once to
    ``work/self_captions.jsonl`` the same way."""
    from rankvideo.video import VideoSettings
    from rankvideo.data import formats
    from rankvideo.generation import captions as generate_captions
    from rankvideo.video import VideoResolver

    ids = generate_captions.candidate_ids([f"results/training_data/{split}.jsonl" for split in ("train", "eval")],
                                          "results/first_stage/video2queries_test.json")
    output = PIPELINE_DESCRIPTIONS if PIPELINE_DESCRIPTIONS.exists() else work / "self_captions.jsonl"
    if output != PIPELINE_DESCRIPTIONS:
        section = cfg["descriptions"]
        generate_captions.run("results/models/stage1", ids, VideoResolver(str(video_dir)), output,
                              work / "self_caption_failures.jsonl", VideoSettings.from_config(cfg["train_stage1"]["video"]),
                              section["max_new_tokens"], section["batch_size"], options={"device": device},
                              stage1_prompt=True)
    captions = formats.read_id_text_jsonl(output)
    missing = sorted(set(ids) - set(captions))
    if missing:
        raise SystemExit(f"{len(missing)} videos have no caption in {output} (first: {missing[0]})")
    return captions


def likelihood_teacher(rows: list[dict], backend, settings, sharpness: float = 2.0) -> None:
    """Set each row's ``teacher_p_yes`` to sigmoid(sharpness * z), z the stage-1 model's query likelihood
    (the query in the reference captions' words, ``research/query_likelihood.py``) z-scored within
    its query's rows."""
    import math
    import statistics

    from query_likelihood import caption_wording, query_loglik
    from rankvideo.video import load_video

    by_video: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_video.setdefault(row["videos"][0], []).append(i)
    likelihood = [0.0] * len(rows)
    for path, index in sorted(by_video.items()):
        values = query_loglik(backend, load_video(path, settings), [caption_wording(rows[i]["query"]) for i in index])
        for i, value in zip(index, values):
            likelihood[i] = value
    by_query: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_query.setdefault(row["query_id"], []).append(i)
    for index in by_query.values():
        values = [likelihood[i] for i in index]
        mean, spread = statistics.fmean(values), statistics.pstdev(values) or 1.0
        for i in index:
            rows[i]["teacher_p_yes"] = 1 / (1 + math.exp(-sharpness * (likelihood[i] - mean) / spread))


def main(argv=None) -> int:
    from candidates import add_run_arguments, compare_with_first_stage, open_run, score_candidates

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)  # --work: this variant's data, model and result
    parser.add_argument("--description", choices=["config", "none", "self", "reference"], default="config")
    parser.add_argument("--motion-words", choices=["caption", "query"], default="caption")
    parser.add_argument("--positive-grade", type=int, help="positives are pairs with true_label >= this (default: "
                                                           "the training data's, training_data.positive_grade)")
    parser.add_argument("--swap-negatives", type=int, default=0, metavar="K",
                        help="K more negatives per positive training pair: its video with one attribute word of the "
                             "query changed (-1: one per attribute named; research/swap_probe.py)")
    parser.add_argument("--video-swap", type=float, default=0.0, metavar="P",
                        help="train with a random other training video in place of a pair's own, with probability P "
                             "(the description and label stay the pair's): stage 2 must read the text")
    parser.add_argument("--score-descriptions", choices=["own", "shuffled"], default="own",
                        help="score each test pair with its video's description or with another video's (a fixed "
                             "seeded permutation): what the trained model takes from the description")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="train_stage2 overrides")
    parser.add_argument("--steps", type=int, help="max_steps (default: the config's)")
    parser.add_argument("--init", help="the model stage 2 starts from (default: the pipeline's)")
    parser.add_argument("--teacher", choices=["pipeline", "query-likelihood"], default="pipeline",
                        help="teacher_p_yes: the pipeline's, or the stage-1 model's query likelihood (see above)")
    args = parser.parse_args(argv)

    import yaml

    from rankvideo.video import VideoSettings
    from rankvideo.data import formats
    from rankvideo.training import launch
    from rankvideo.backends.hf import HFBackend

    cfg, work = open_run(args)
    video_dir = Path("results/benchmark/videos")
    settings = VideoSettings.from_config(cfg["train_stage2"]["video"])
    if args.description == "config":
        args.description = "self" if cfg["descriptions"]["enabled"] else "none"
    if args.init is None:
        args.init = "results/models/stage1-copy" if cfg["copy_pretrain"]["steps"] else "results/models/stage1"
    if args.description == "self":
        captions = self_captions(work, video_dir, cfg, args.device)
    elif args.description == "reference":
        captions = {r["doc_id"]: r["text"] for r in formats.read_jsonl("results/benchmark/captions_reference.jsonl")}
    else:
        captions = {}
    if args.motion_words == "query":
        for doc, text in captions.items():
            for phrase, word in QUERY_MOTION_WORDS.items():
                text = text.replace(phrase, word)
            captions[doc] = text

    descriptions = work / "descriptions.jsonl" if captions else None
    if descriptions:
        formats.write_jsonl(descriptions, [{"doc_id": doc, "text": text} for doc, text in sorted(captions.items())])
    teacher = HFBackend("results/models/stage1", device=args.device) if args.teacher == "query-likelihood" else None
    for split in ("train", "eval"):
        rows = formats.read_jsonl(f"results/training_data/{split}.jsonl")
        if teacher is not None:
            likelihood_teacher(rows, teacher, settings)
        if args.positive_grade is not None:
            for row in rows:
                row["positive"] = row["true_label"] is not None and row["true_label"] >= args.positive_grade
        if args.swap_negatives and split == "train":
            from swap_probe import add_swaps
            # the test queries are read only to keep their attribute combinations out of the swapped queries
            rows, added = add_swaps(rows, args.swap_negatives,
                                    list(formats.read_queries("results/benchmark/queries_test.tsv").values()), cfg["seed"])
            print(f"{added} swap negatives added", flush=True)
        if args.video_swap:
            rng, pool = random.Random(cfg["seed"]), sorted({row["videos"][0] for row in rows})
            for row in rows:
                if rng.random() < args.video_swap:
                    row["videos"] = [rng.choice(pool)]
        formats.write_jsonl(work / f"{split}.jsonl", rows)
    stage2 = dict(cfg["train_stage2"])
    for item in args.set:
        key, value = item.split("=", 1)
        if key not in stage2:
            raise SystemExit(f"--set {item}: {key!r} is not a train_stage2 key")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML reads 6e-4 (no dot) as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        stage2[key] = parsed
    if args.steps:
        stage2["max_steps"] = args.steps
    model, variant = work / "stage2", cfg["rerank"]["prompt_variant"]
    if not (model / "config.json").exists():
        launch.run_in_process({"stage": "stage2", "model": args.init, "train": str(work / "train.jsonl"),
                               "eval": str(work / "eval.jsonl"), "output": str(model), "settings": stage2,
                               "seed": cfg["seed"], "models": cfg["models"], "prompt_variant": variant,
                               "descriptions": str(descriptions) if descriptions else None})

    queries = formats.read_queries("results/benchmark/queries_test.tsv")
    if args.score_descriptions == "shuffled":
        docs = sorted(captions)
        captions = dict(zip(docs, [captions[d] for d in random.Random(0).sample(docs, len(docs))]))
    backend = HFBackend(str(model), device=args.device, prompt_variant=variant, answer_tokens="single")
    scores = score_candidates(lambda doc, video, qids: [
        row["logit_delta"] for row in backend.score_video(video, [queries[q] for q in qids], captions.get(doc))],
        settings, str(video_dir))
    suffix = "" if args.score_descriptions == "own" else "-shuffled"  # a second scoring of the same model
    formats.write_json(work / f"scores{suffix}.json", scores)
    variant_args = {k: v for k, v in vars(args).items() if k not in ("work", "config")}
    formats.write_json(work / f"result{suffix}.json", compare_with_first_stage(scores, cfg, "stage2", {"variant": variant_args}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
