"""Does ``--fp8`` keep a trained reranker's ranking? (issue 26: Spearman >= 0.99 against bf16)

Random weights cannot answer it: their logit deltas are noise that any perturbation reorders (Spearman
0.34-0.44 in ``rerank_job_nvidia-h200_run5``/``run13``). This scores the pipeline's own trained stage-2
model (``make pipeline`` writes it to ``results/models/stage2``) on its test candidates with the rerank
CLI, as the pipeline's rerank step does, once per precision, and compares each with float32:

- ``float32`` (the reference), ``bfloat16``, ``fp8`` (``--fp8``: linear layers in float8 e4m3 with
  float32 activations around them), ``fp8_bf16`` (``--fp8 --dtype bfloat16``, what a GPU runs);
- per variant: Spearman's rho of the logit deltas over all pairs and the mean over queries of the
  rho between one query's candidates (the order a user sees), max |delta logit_delta| against the
  spread of the reference's scores (against float32, and against bfloat16: the issue's comparison),
  and nDCG@10 of the reranked first stage (pytrec_eval).

Usage (after ``make pipeline``; about 2 minutes on 2 CPUs)::

    python benchmarks/fp8_agreement.py --results results --out benchmarks/results

Writes ``fp8_agreement_<model>.json`` and ``.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rankvideo.data import formats  # noqa: E402
from rankvideo.evaluation.evaluate import evaluate_run, rerank_run  # noqa: E402
from rankvideo.video import VideoSettings  # noqa: E402
from rerank_job import spearman  # noqa: E402

VARIANTS = {"float32": ["--dtype", "float32"], "bfloat16": ["--dtype", "bfloat16"],
            "fp8": ["--dtype", "float32", "--fp8"], "fp8_bf16": ["--dtype", "bfloat16", "--fp8"]}


def compare(reference: dict, other: dict) -> dict:
    """{qid: {video: score}} against the reference's: rho over all pairs, mean rho per query, max |delta|."""
    pairs = [(reference[q][v], other[q][v]) for q in reference for v in reference[q]]
    a, b = zip(*pairs)
    per_query = [spearman(list(reference[q].values()), [other[q][v] for v in reference[q]])
                 for q in reference if len(reference[q]) > 1]
    return {"pairs": len(pairs), "spearman": spearman(list(a), list(b)),
            "spearman_per_query_mean": statistics.fmean(per_query),
            "spearman_per_query_min": min(per_query),
            "max_abs_delta": max(abs(x - y) for x, y in pairs), "spread": max(a) - min(a)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="the pipeline's results folder")
    parser.add_argument("--model", type=Path, help="default: RESULTS/models/stage2")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    results = args.results
    model = args.model or results / "models" / "stage2"
    run_info = json.loads(next((results / "rerank" / "stage2" / "shards").glob("*/run_info.json")).read_text())
    video = run_info["video"]
    settings = VideoSettings.from_dict(video)
    tokens = settings.max_pixels // settings.factor ** 2  # the shards' tokens per frame (VideoSettings.with_tokens)
    first_stage = formats.read_first_stage_json(results / "first_stage" / "test.json")
    qrels = formats.read_qrels(results / "benchmark" / "qrels.txt")
    common = [sys.executable, "-m", "rankvideo.rerank", "--model", str(model),
              "--video2queries", str(results / "first_stage" / "video2queries_test.json"),
              "--query-mapping", str(results / "benchmark" / "queries_test.tsv"),
              "--video-dir", str(results / "benchmark" / "videos"), "--device", args.device, "--no-progress",
              "--fps", str(video["fps"]), "--max-frames", str(video["max_frames"]), "--tokens-per-frame", str(tokens)]
    if run_info.get("descriptions"):
        common += ["--descriptions", str(results / "descriptions" / "descriptions.jsonl")]
    import torch

    report: dict = {"model": str(model), "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    "versions": f"torch {torch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs",
                    "device": args.device, "video": video, "variants": {}}
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            out = Path(tmp) / name
            start = time.perf_counter()
            proc = subprocess.run([*common, "--output-dir", str(out), *VARIANTS[name]], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{name}: rc {proc.returncode}\n{proc.stderr[-3000:]}")
            scores[name] = formats.read_prediction_dir(out)
            per_query = evaluate_run(rerank_run(first_stage, scores[name], rerank_depth=10_000), qrels, ks=(10,))
            report["variants"][name] = {"seconds": round(time.perf_counter() - start, 1),
                                        "ndcg_cut_10": statistics.fmean(v["ndcg_cut_10"] for v in per_query.values()),
                                        "queries": len(per_query)}
            for reference in ("float32", "bfloat16"):
                if name != reference and reference in scores:
                    report["variants"][name][f"vs_{reference}"] = compare(scores[reference], scores[name])
            print(name, json.dumps(report["variants"][name]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"fp8_agreement_{model.name}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [f"# FP8 against float32 on a trained reranker ({model})", "",
             f"- date: {report['date']}; {report['versions']}; device {args.device}",
             f"- produced by `benchmarks/fp8_agreement.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             "- every variant is one `python -m rankvideo.rerank` run over the pipeline's test candidates",
             "", "| variant | against | pairs | Spearman (all pairs) | Spearman per query, mean (min) | max abs delta | "
                 "reference's spread |", "|---|---|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        for reference in ("float32", "bfloat16"):
            c = v.get(f"vs_{reference}")
            if c:
                lines.append(f"| {name} | {reference} | {c['pairs']} | {c['spearman']:.4f} | "
                             f"{c['spearman_per_query_mean']:.4f} ({c['spearman_per_query_min']:.4f}) | "
                             f"{c['max_abs_delta']:.3f} | {c['spread']:.2f} |")
    lines += ["", "| variant | nDCG@10 | queries | seconds |", "|---|---|---|---|"]
    lines += [f"| {name} | {v['ndcg_cut_10']:.4f} | {v['queries']} | {v['seconds']} |"
              for name, v in report["variants"].items()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
