"""Stage-2 training under DDP against one process on the same global batch (CPU gloo or GPU NCCL).

    python benchmarks/ddp_stage2.py prepare DIR          # tiny model + small synthetic training set
    torchrun --nproc_per_node 2 -m rankvideo.train_reranker --model DIR/vlm --train-data DIR/data/train.jsonl \\
        --output-dir DIR/ddp --batch-size 1 ...           # 2 processes x 1 query group
    python -m rankvideo.train_reranker ... --output-dir DIR/single --batch-size 2   # 1 process x 2 groups
    python benchmarks/ddp_stage2.py compare DIR/ddp DIR/single

The group sampler hands rank r every world_size-th global batch, so both runs see the same groups
per optimizer step; their weights must agree up to floating-point reduction order. (Only queries with
both a positive and a negative are kept: the BCE fallback for incomplete groups is not a mean over
groups, so a step mixing a complete and an incomplete group weighs them differently in the two runs.)
"""

import json
import sys
from pathlib import Path


def prepare(root: Path) -> None:
    from rankvideo.data import formats, training_data
    from rankvideo.demo.tiny_model import build_tiny_vlm
    from rankvideo.demo.synthetic import SyntheticConfig, generate
    from rankvideo.video import VideoResolver

    bench = root / "bench"
    generate(SyntheticConfig.from_dict({"n_videos": 12, "n_test_queries": 2, "n_train_queries": 8}), bench)
    qrels = formats.read_qrels(bench / "qrels.txt")
    train = formats.read_queries(bench / "queries_train.tsv")
    # candidates: every video, scored by its grade (no first-stage library needed on the GPU machine)
    formats.write_first_stage_json(root / "run.json", {q: {d: float(r) for d, r in qrels[q].items()} for q in train})
    formats.write_jsonl(root / "teacher.jsonl", [])
    training_data.build(bench / "queries_train.tsv", bench / "qrels.txt", root / "run.json", root / "teacher.jsonl",
                        bench / "transcripts.jsonl", bench / "captions_reference.jsonl", VideoResolver(bench / "videos"),
                        root / "data", depth=6, eval_fraction=0.0, seed=0, caption_source="reference")
    # a group without a negative falls back to BCE, a loss that is not a mean over groups: keep queries
    # that have both labels, so that 2 x 1 group per step and 1 x 2 groups are the same loss
    rows = formats.read_jsonl(root / "data" / "train.jsonl")
    labels = {}
    for row in rows:
        labels.setdefault(row["query_id"], set()).add(training_data.is_positive(row))
    formats.write_jsonl(root / "data" / "train.jsonl", [r for r in rows if labels[r["query_id"]] == {True, False}])
    build_tiny_vlm(root / "vlm", seed=4)


def compare(a: Path, b: Path) -> dict:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    scale = max(float(wa[k].float().abs().max()) for k in wa)
    base = load_file(a.parent / "vlm" / "model.safetensors")
    moved = max(float((wa[k].float() - base[k].float()).abs().max()) for k in wa if k in base)
    result = {"max_abs_diff": worst, "max_abs_weight": scale, "max_update_from_init": moved}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    if command == "prepare":
        prepare(Path(paths[0]))
    else:
        compare(Path(paths[0]), Path(paths[1]))
