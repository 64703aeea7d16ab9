"""What a trained reranker looks at, on a finished synthetic-benchmark run.

    python research/attribute_probe.py [--workdir .] [--model results/models/stage2] [--output probe.json]

1. Attribute probe: one single-attribute query per value ("something red", "three objects", ...),
   scored against every video of the benchmark; per attribute, the mean over its values of the AUC
   of the videos that have the value against those that do not (0.5 = blind to that attribute).
2. Positive-vs-negative AUC per query on the stage-2 training data, for the training split and the
   held-out split (``training_data.eval_fraction``): learning versus memorising.

Video settings are read from the run's config (``rerank.video``). Prints a table; ``--output``
writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def auc(pos, neg) -> float:
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if not len(pos) or not len(neg):
        return float("nan")
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def attribute_aucs(reranker, videos: dict, loaded: dict) -> dict:
    """{attribute: {"mean_auc", "per_value"}}: each single-attribute query ("something red") scored
    against every video of ``loaded`` ({doc: LoadedVideo}); ``videos`` holds their attributes."""
    from rankvideo.demo import synthetic

    values = {"count": synthetic.COUNTS, "colour": list(synthetic.COLOURS), "shape": synthetic.SHAPES,
              "motion": list(synthetic.MOTIONS), "background": synthetic.BACKGROUNDS}
    probes = [(attr, value) for attr, vals in values.items() for value in vals]
    texts = [synthetic.describe({attr: value}) for attr, value in probes]
    scores = {doc: [s["logit_delta"] for s in reranker.score_video(frames, texts)] for doc, frames in loaded.items()}
    result = {}
    for attr in values:
        per_value = {}
        for i, (a, value) in enumerate(probes):
            if a != attr:
                continue
            pos = [scores[d][i] for d in loaded if videos[d][attr] == value]
            neg = [scores[d][i] for d in loaded if videos[d][attr] != value]
            per_value[str(value)] = auc(pos, neg)
        result[attr] = {"mean_auc": float(np.nanmean(list(per_value.values()))), "per_value": per_value}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=".", help="the pipeline's root (holds results/ and config/)")
    parser.add_argument("--model", default="results/models/stage2")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--output")
    args = parser.parse_args(argv)

    import torch
    import yaml

    from rankvideo import VLMReranker
    from rankvideo.data import formats
    from rankvideo.video import VideoSettings, load_video

    torch.manual_seed(0)
    root = Path(args.workdir)
    config = yaml.safe_load((root / args.config).read_text())
    video = config["rerank"]["video"]
    settings = VideoSettings.with_tokens(video["fps"], video["max_frames"], video["tokens_per_frame"])
    reranker = VLMReranker(str(root / args.model), prompt_variant=config["rerank"].get("prompt_variant", "default"))
    bench = root / "results" / "benchmark"
    videos = {v["doc_id"]: v for v in formats.read_jsonl(bench / "videos.jsonl")}
    loaded = {doc: load_video(str(bench / "videos" / f"{doc}.mp4"), settings) for doc in videos}

    result: dict = {"model": args.model, "attributes": attribute_aucs(reranker, videos, loaded), "training_data": {}}

    for split in ("train", "eval"):
        path = root / "results" / "training_data" / f"{split}.jsonl"
        if not path.exists():
            continue
        by_query = defaultdict(list)
        for record in formats.read_jsonl(path):
            if record.get("positive") is not None:
                by_query[record["query_id"]].append(record)
        aucs = []
        for records in by_query.values():
            s = [reranker.score_video(loaded[r["doc_id"]], [r["query"]])[0]["logit_delta"] for r in records]
            value = auc([x for x, r in zip(s, records) if r["positive"]], [x for x, r in zip(s, records) if not r["positive"]])
            if not np.isnan(value):
                aucs.append(value)
        result["training_data"][split] = {"queries": len(aucs), "mean_auc": float(np.mean(aucs)) if aucs else None}

    print(f"model {args.model}")
    for attr, row in result["attributes"].items():
        print(f"  {attr:<10} AUC {row['mean_auc']:.3f}  " + " ".join(f"{k}={v:.2f}" for k, v in row["per_value"].items()))
    for split, row in result["training_data"].items():
        print(f"  training data {split:<5}: positive-vs-negative AUC {row['mean_auc']:.3f} over {row['queries']} queries")
    if args.output:
        formats.write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
