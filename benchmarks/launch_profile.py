"""Where a rerank job's scoring thread spends its time (issue 26), one process, one model.

Builds the rerank_job mix (``--videos`` of its sizes, lengths and heavy-tailed query counts) and a
random-weight model of the Qwen3-VL-8B shape in memory, wraps it in the HF backend the CLI uses, decodes
and prepares every video up front (:meth:`HFBackend.prepare`), compiles on a few, then measures:

- ``serial``: per video, the host time of :meth:`HFBackend.launch` (queueing the device work) and
  the time until its scores are on the host, one video after the other;
- ``pipelined``: the rerank loop's order (launch video n, then read video n-1's scores), nothing else
  running: pairs/s and the GPU's busy share (NVML, every 200 ms);
- ``contended``: the same while ``--busy-threads`` threads decode and prepare videos, as a job's decode
  threads do (what the scoring thread loses to them: the GIL);
- ``syncs``: the first host synchronisation inside ``launch`` (``torch.cuda.set_sync_debug_mode``
  "error"), with its stack, if any;
- ``profile``: torch.profiler's host-side table over a few launches (``--out``/launch_profile.txt).

Usage: ``python benchmarks/launch_profile.py --out DIR [--videos 32] [--fp8] [--tiny]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--busy-threads", type=int, default=8)
    parser.add_argument("--fp8", action="store_true")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    import torch

    import rerank_job
    import score_per_video as spv
    from rankvideo import models
    from rankvideo.backends.hf import HFBackend
    from rankvideo.data import formats
    from rankvideo.demo import tiny_model
    from rankvideo.video import VideoSettings, load_video

    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/dev/shm/launch_profile" if cuda else "/tmp/launch_profile")
    mix = rerank_job.make_mix(work, args.videos, args.tiny)
    queries = formats.read_queries(work / "queries.tsv")
    video2queries = formats.read_video2queries(work / "video2queries.json")
    tokenizer = tiny_model.build_tokenizer()
    processor = spv.build_processor(tokenizer)
    models.use_linear_patch_embed()  # as models.load_vlm does for the CLI
    model, _ = spv.build_model(spv.TINY if args.tiny else spv.QWEN3_VL_8B, tokenizer, device,
                               torch.bfloat16 if cuda else torch.float32, attn="sdpa")
    backend = HFBackend.from_model(model, processor, compile=cuda, query_batch_size=64, fp8=args.fp8)
    settings = VideoSettings.with_tokens(2.0, 4, 4) if args.tiny else VideoSettings.with_tokens(2.0, 32, 128)
    ids = sorted(video2queries)
    texts = {v: [queries[q] for q in video2queries[v]] for v in ids}
    t0 = time.perf_counter()
    videos = {v: load_video(work / "videos" / f"{v}.mp4", settings) for v in ids}
    decode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = {v: backend.prepare(videos[v], texts[v]) for v in ids}
    prepare_s = time.perf_counter() - t0
    result: dict = {"videos": len(ids), "pairs": mix["pairs"], "fp8": args.fp8, "decode_ms_per_video": 1000 * decode_s / len(ids),
                    "prepare_ms_per_video": 1000 * prepare_s / len(ids), "device": device}
    print(json.dumps(result), flush=True)
    warm, timed = ids[:args.warmup], ids[args.warmup:]
    for v in warm:  # compilation, kernels' plans, the pinned-memory pool
        backend.launch(prepared[v]).result()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()

    launch_ms, total_ms = [], []
    for v in timed:
        start = time.perf_counter()
        pending = backend.launch(prepared[v])
        launched = time.perf_counter()
        pending.result()
        launch_ms.append(1000 * (launched - start))
        total_ms.append(1000 * (time.perf_counter() - start))
    pairs = sum(len(texts[v]) for v in timed)
    result["serial"] = {"launch_ms_median": statistics.median(launch_ms), "launch_ms_mean": statistics.mean(launch_ms),
                        "total_ms_mean": statistics.mean(total_ms), "pairs_per_s": 1000 * pairs / sum(total_ms),
                        "launch_share": sum(launch_ms) / sum(total_ms)}
    print("serial", json.dumps(result["serial"]), flush=True)

    def pipelined(name):
        with rerank_job.GpuSampler() as sampler:
            start = time.perf_counter()
            wall0 = time.time()
            previous = None
            host = 0.0
            for v in timed:
                t = time.perf_counter()
                pending = backend.launch(prepared[v])
                host += time.perf_counter() - t
                if previous is not None:
                    previous.result()
                previous = pending
            previous.result()
            seconds = time.perf_counter() - start
        result[name] = {"pairs_per_s": pairs / seconds, "seconds": seconds, "launch_s": host,
                        "gpu_busy": sampler.busy(wall0, time.time())}
        print(name, json.dumps(result[name]), flush=True)

    pipelined("pipelined")
    stop = threading.Event()

    def busy():  # a job's decode threads: decode and prepare, again and again
        i = 0
        while not stop.is_set():
            v = ids[i % len(ids)]
            backend.prepare(load_video(work / "videos" / f"{v}.mp4", settings), texts[v])
            i += 1

    workers = [threading.Thread(target=busy, daemon=True) for _ in range(args.busy_threads)]
    for w in workers:
        w.start()
    time.sleep(2)
    pipelined("contended")
    stop.set()
    for w in workers:
        w.join()

    if cuda:
        sync()
        torch.cuda.set_sync_debug_mode("error")
        syncs = []
        for v in timed[:3]:
            try:
                backend.launch(prepared[v])
            except RuntimeError as error:
                syncs.append({"video": v, "error": str(error)[:200],
                              "stack": traceback.format_exc().splitlines()[-24:]})
        torch.cuda.set_sync_debug_mode("default")
        sync()
        result["syncs"] = syncs
        print("syncs", json.dumps(syncs, indent=1), flush=True)
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for v in timed[:4]:
            backend.launch(prepared[v]).result()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    (args.out / "launch_profile.txt").write_text(table)
    print(table[:6000], flush=True)
    (args.out / "launch_profile.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
