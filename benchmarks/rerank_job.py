"""A whole rerank job as a user runs it: ``python -m rankvideo.rerank`` on a mix of videos and queries.

One run on one card (issue 26, "Speed: the rerank job, not one video"):

1. builds the mix: ``--videos`` mp4 files of mixed frame sizes (aspect ratios, so the frame-group
   size h*w of the vision tower changes) and lengths (2 to 40 s, so 4 to 32 frames at 2 fps), encoded
   with PyAV (``score_per_video.make_mp4``, in a process pool); a heavy-tailed number of queries per
   video (most videos 1-4, a few 30-100; Pareto draws), news-like query texts of 10-60 tokens;
2. builds a random-weight Qwen3-VL-8B-shape model and saves it with ``save_pretrained``
   (``train_steps.build_model_folder``, on /dev/shm);
3. runs ``python -m rankvideo.rerank`` in a subprocess for each code version given with
   ``--code NAME=DIR`` (``DIR`` goes first on PYTHONPATH: e.g. the commit before a change and the
   change), cold (an empty torch.compile cache folder) and warm (the same folder again, a new output
   folder), with ``TORCH_LOGS=recompiles``; torch.compile's counters and the peak allocated GPU memory
   come from the CLI's "job stats at the end" log line (a ``sitecustomize`` put on the child's path
   holds one experiment, ``RANKVIDEO_JOB_SWITCH_INTERVAL``);
4. samples GPU utilisation and memory every 200 ms (NVML) while the job runs;
5. reports per run: whole-command pairs/s (pairs / wall time of the process, start-up included),
   in-loop pairs/s (pairs / the decode+score loop's time, summary.json), start-up and exit (wall -
   loop), exit (from summary.json's writing, at the loop's end, to the process's end),
   frames compiled and seconds compiling, recompilations (TORCH_LOGS lines) in all and after the first
   video's scores were written, decode seconds (summary.json: time inside ``load_video`` summed over
   the threads), the process's CPU seconds, the share of 200-ms samples with the GPU busy (whole
   command and loop only), peak memory (allocated, and NVML's used), the steady state (pairs/s and GPU
   busy from the first score file written to the end, compilation behind), and the agreement of the
   scores with the first code version's (max |delta logit_delta|, Spearman).

Usage::

    python benchmarks/rerank_job.py --out DIR --code base=/path/to/old --code new=/path/to/new [--videos 24]
    python benchmarks/rerank_job.py --out DIR --code new=. --videos 1000 --unique-videos 200 --cold-videos 60
    python benchmarks/rerank_job.py --out DIR --tiny --code new=.     # CPU smoke test, tiny model

Writes ``DIR/rerank_job_<card>.json`` and ``.md`` after every run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: issue 26's mix: (width, height) of the clips in turn (frame groups of different h*w, one portrait),
#: lengths 6-60 s (12 to 32 frames at 2 fps), queries per video 30% one, mean ~8, at most 39; 4-30 words
SIZES = [(512, 256), (640, 360), (360, 640), (480, 480), (854, 480)]
LENGTHS = (6.0, 60.0)
SOURCE_FPS = 12  # the clips' frame rate (24 in score_per_video; 12 keeps encoding 160 clips within a minute)

SITECUSTOMIZE = '''
import os, sys

# an experiment: how often a thread holding the GIL hands it over (Python's default 5 ms), e.g.
# --env "NAME=RANKVIDEO_JOB_SWITCH_INTERVAL=0.0005"
if os.environ.get("RANKVIDEO_JOB_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["RANKVIDEO_JOB_SWITCH_INTERVAL"]))
'''


# ----------------------------------------------------------------------------- the mix


def _encode(job):
    import score_per_video as spv

    path, seconds, width, height, seed = job
    start = time.perf_counter()
    spv.make_mp4(Path(path), seconds=seconds, fps=SOURCE_FPS, width=width, height=height, seed=seed)
    return time.perf_counter() - start


def query_counts(n: int, seed: int, most: int = 39) -> list[int]:
    """Heavy-tailed queries per video as a first stage's top-k gives them: 30% of videos one query,
    the others 2 + a Pareto(1.5) draw x 3 (mean about 8 over all videos), at most ``most``."""
    rng = random.Random(seed)
    return [1 if rng.random() < 0.3 else min(most, 2 + int(3 * (rng.paretovariate(1.5) - 1) * 2.2))
            for _ in range(n)]


def make_mix(work: Path, n_videos: int, tiny: bool, seed: int = 0, unique: int | None = None) -> dict:
    """Videos, queries.tsv and video2queries.json under ``work``. With ``unique`` < ``n_videos``, only
    the first ``unique`` clips are encoded and video ``i`` is a hard link to clip ``i % unique``, of the
    same size and length as an encoded one would have (the job decodes every id; nothing in it caches by
    content): a 1,000-video job without 10 minutes of encoding."""
    import score_per_video as spv

    from rankvideo.data import formats

    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    unique = min(unique or n_videos, n_videos)
    jobs = []
    rng = random.Random(seed)
    for i in range(unique):
        width, height = (128, 96) if tiny else SIZES[i % len(SIZES)]
        seconds = (2.0 + i % 3) if tiny else round(rng.uniform(*LENGTHS), 1)
        jobs.append((str(videos / f"v{i:03d}.mp4"), seconds, width, height, i))
    start = time.perf_counter()
    with ProcessPoolExecutor(max(1, min(16, (os.cpu_count() or 2) - 1))) as pool:
        encode_s = list(pool.map(_encode, jobs))
    for i in range(unique, n_videos):
        os.link(jobs[i % unique][0], videos / f"v{i:03d}.mp4")
        jobs.append((str(videos / f"v{i:03d}.mp4"), *jobs[i % unique][1:]))
    counts = query_counts(n_videos, seed, most=6 if tiny else 39)
    n_queries = max(200, max(counts) * 2)
    texts = {" ".join(rng.choice(spv._WORDS) for _ in range(rng.randint(4, 30))) for _ in range(n_queries)}
    queries = {f"q{j:04d}": text for j, text in enumerate(sorted(texts))}
    qids = sorted(queries)
    video2queries = {f"v{i:03d}": rng.sample(qids, counts[i]) for i in range(n_videos)}
    (work / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    formats.write_json(work / "video2queries.json", video2queries)
    return {"videos": n_videos, "pairs": sum(counts), "queries_per_video": counts,
            "sizes": [[j[2], j[3]] for j in jobs], "seconds": [j[1] for j in jobs],
            "unique_videos": unique, "encode_s": round(time.perf_counter() - start, 1), "encode_s_each": encode_s}


# ----------------------------------------------------------------------------- GPU sampling


class GpuSampler:
    """GPU utilisation (%) and memory used (GiB) every ``period`` s through NVML, in a thread."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples, self._stop = period, [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - no NVML (CPU smoke test)
            self._nvml = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            now = time.time()
            if self._nvml is not None:
                util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
                used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**30
                self.samples.append((now, util, used))
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def busy(self, start: float | None = None, end: float | None = None) -> float | None:
        """Mean utilisation (0-1) of the samples between ``start`` and ``end`` (wall clock)."""
        sel = [u for t, u, _ in self.samples if (start is None or t >= start) and (end is None or t <= end)]
        return sum(sel) / 100 / len(sel) if sel else None

    def peak_used(self) -> float | None:
        return max((m for _, _, m in self.samples), default=None)


# ----------------------------------------------------------------------------- one run


_LOG_TIME = re.compile(r"^[VIWE]\d{4} (\d\d):(\d\d):(\d\d(?:\.\d+)?) ")


def _log_seconds(line: str) -> float | None:
    match = _LOG_TIME.match(line)
    if not match:
        return None
    h, m, s = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def _day_seconds(t: float) -> float:
    lt = time.localtime(t)
    return lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + (t % 1)


def run_job(name: str, code: Path, work: Path, model: Path, cache: Path, out_dir: Path, args, extra: list[str],
            timeout: float, more_env: dict | None = None, video2queries: Path | None = None) -> dict:
    """One ``python -m rankvideo.rerank`` process; its figures."""
    site = work / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), str(site), os.environ.get("PYTHONPATH", "")]),
               TORCHINDUCTOR_CACHE_DIR=str(cache),
               TRITON_CACHE_DIR=str(cache / "triton"), TORCH_LOGS="recompiles", PYTHONUNBUFFERED="1", **(more_env or {}))
    command = [sys.executable, "-m", "rankvideo.rerank", "--model", str(model), "--video2queries",
               str(video2queries or work / "video2queries.json"), "--query-mapping", str(work / "queries.tsv"), "--video-dir",
               str(work / "videos"), "--output-dir", str(out_dir), "--no-progress", "--model-name", "m",
               "--query-batch-size", "64", *extra]  # the config default (the device has no jsonschema to read it)
    if args.tiny:
        command += ["--fps", "2", "--max-frames", "4", "--tokens-per-frame", "4", "--device", "cpu"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    with GpuSampler() as sampler:
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=code)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as error:
            rc, stdout, stderr = "timeout", str(error.stdout or ""), str(error.stderr or "")
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (args.out / f"{name}.log").write_text(stderr[-2_000_000:])
    record: dict = {"name": name, "rc": rc, "wall_s": end - start, "command": " ".join(command[1:]),
                    "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
    summary_path = out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    loop = summary.get("seconds_total")
    pairs = summary.get("pairs_scored", 0)
    outputs = sorted(out_dir.glob("*_reranking_*.json"), key=lambda p: p.stat().st_mtime)
    first_done = outputs[0].stat().st_mtime if outputs else None
    recompiles = [line for line in stderr.splitlines() if "Recompiling function" in line]
    after_first = [line for line in recompiles if first_done is not None and _log_seconds(line) is not None
                   and _log_seconds(line) > _day_seconds(first_done)]
    reasons: dict = {}
    for line in stderr.splitlines():
        if "triggered by the following guard failure" in line or line.strip().startswith("- "):
            key = line.strip()[:160]
            reasons[key] = reasons.get(key, 0) + 1
    cli_stats = [json.loads(line.split("job stats at the end: ", 1)[1]) for line in stderr.splitlines()
                 if "job stats at the end: " in line]
    child = cli_stats[-1] if cli_stats else {}
    loop_start = end - loop if loop else None
    # steady state: from the first score file written (compilation and warm-up behind) to the end
    first_pairs = sum(len(v) for v in json.loads(outputs[0].read_text()).values()) if outputs else 0
    steady = (pairs - first_pairs) / (end - first_done) if first_done and end > first_done and pairs else None
    record.update(
        pairs=pairs, videos=summary.get("videos_scored"), failed=summary.get("videos_failed"),
        loop_s=loop, startup_s=(end - start - loop) if loop else None,
        exit_s=(end - summary_path.stat().st_mtime) if summary_path.exists() else None,
        pairs_per_s_whole=pairs / (end - start) if pairs else None,
        pairs_per_s_loop=pairs / loop if loop and pairs else None,
        first_video_done_s=(first_done - start) if first_done else None,
        decode_s=summary.get("seconds_decoding"), waited_for_decode_s=summary.get("seconds_waiting_for_decode"),
        scoring_s=summary.get("seconds_scoring"), preparing_s=summary.get("seconds_preparing"),
        recompiles=len(recompiles), recompiles_after_first_video=len(after_first),
        recompile_reasons=dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:12]),
        frames_compiled=child.get("frames_compiled"), compile_s=child.get("compile_s"),
        unique_graphs=child.get("unique_graphs"), peak_allocated_gib=child.get("peak_gib"),
        cli_stats=child or None,
        pairs_per_s_after_first_video=steady,
        gpu_busy_whole=sampler.busy(), gpu_busy_loop=sampler.busy(loop_start, end) if loop_start else None,
        gpu_busy_after_first_video=sampler.busy(first_done, end) if first_done else None,
        gpu_peak_used_gib=sampler.peak_used(), gpu_samples=len(sampler.samples),
        stdout_tail=stdout[-600:], stderr_tail=stderr[-1500:] if rc != 0 else "")
    record["scores"] = {p.name: json.loads(p.read_text()) for p in outputs}
    return record


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho of two equally long lists (scipy's: average ranks for ties); 1.0 for fewer than two
    values, and where one list is constant, 1.0 if both are, else 0.0."""
    from scipy import stats

    if len(a) < 2:
        return 1.0
    if len(set(a)) < 2 or len(set(b)) < 2:
        return float(len(set(a)) == len(set(b)))
    return float(stats.spearmanr(a, b).statistic)


def agreement(reference: dict, other: dict) -> dict:
    """max |delta logit_delta| and Spearman's rho over the pairs both runs scored."""
    a, b = [], []
    for name, data in reference.items():
        mine = other.get(name)
        if not mine:
            continue
        for video, scores in data.items():
            for qid, score in scores.items():
                if qid in mine.get(video, {}):
                    a.append(score["logit_delta"])
                    b.append(mine[video][qid]["logit_delta"])
    if not a:
        return {}
    return {"pairs": len(a), "max_abs_delta": max(abs(x - y) for x, y in zip(a, b)),
            "spearman": spearman(a, b), "spread": max(a) - min(a)}


# ----------------------------------------------------------------------------- report


def _f(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def _spread(values: list) -> str:
    """The values themselves when few, else their range, mean and share of ones."""
    if len(values) <= 200:
        return str(sorted(set(values)) if values and isinstance(values[0], float) else values)
    ones = f", {sum(v == 1 for v in values) / len(values):.0%} ones" if isinstance(values[0], int) else ""
    return f"{min(values)}-{max(values)}, mean {sum(values) / len(values):.1f}{ones}"


def write_markdown(r: dict, path: Path) -> None:
    mix = r.get("mix", {})
    lines = [f"# Rerank job: Qwen3-VL-8B shape, random weights, on {r['card']}", "",
             f"- date: {r['date']}; {r.get('versions', '')}",
             f"- produced by `benchmarks/rerank_job.py` (`{r['argv']}`): each row is one `python -m rankvideo.rerank` "
             "process (model load, compilation, decoding and scoring included)",
             f"- mix: {mix.get('videos')} videos, {mix.get('pairs')} pairs; frame sizes {sorted({tuple(s) for s in mix.get('sizes', [])})}; "
             f"lengths (s) {_spread(mix.get('seconds', []))}; queries per video (heavy-tailed) "
             f"{_spread(mix.get('queries_per_video', []))}"
             + (f"; {mix['unique_videos']} clips encoded, the other videos hard links to them"
                if mix.get("unique_videos", mix.get("videos")) < mix.get("videos", 0) else ""),
             f"- model: {r.get('model', {}).get('params', 0) / 1e9:.3f} B parameters, saved in {_f(r.get('model', {}).get('save_s'))} s",
             "- cold = empty torch.compile cache folder; warm = the same folder again (another output folder)"
             + (f"; cold runs scored the first {r['cold_videos']} videos only" if r.get("cold_videos") else ""), "",
             "| run | rc | pairs | whole-command pairs/s | in-loop pairs/s | wall s | start-up and exit s | exit s | "
             "first video done s | "
             "frames compiled | compile s | recompiles (after 1st video) | decode s (threads) | prepare s | waited s | "
             "scoring thread s | CPU s | GPU busy whole | GPU busy loop | peak alloc GiB | peak used GiB | "
             "pairs/s after the 1st video | GPU busy after the 1st video |",
             "|---" * 23 + "|"]
    for run in r.get("runs", []):
        lines.append(
            f"| {run['name']} | {run['rc']} | {run['pairs']} | {_f(run['pairs_per_s_whole'], '.2f')} | "
            f"{_f(run['pairs_per_s_loop'], '.1f')} | {_f(run['wall_s'])} | {_f(run['startup_s'])} | "
            f"{_f(run.get('exit_s'))} | {_f(run['first_video_done_s'])} | {_f(run['frames_compiled'], 'd')} | {_f(run['compile_s'])} | "
            f"{run['recompiles']} ({run['recompiles_after_first_video']}) | {_f(run['decode_s'])} | "
            f"{_f(run.get('preparing_s'))} | {_f(run['waited_for_decode_s'])} | {_f(run.get('scoring_s'))} | {_f(run['cpu_s'])} | "
            f"{_f(run['gpu_busy_whole'] and 100 * run['gpu_busy_whole'], '.0f')}% | "
            f"{_f(run['gpu_busy_loop'] and 100 * run['gpu_busy_loop'], '.0f')}% | "
            f"{_f(run['peak_allocated_gib'])} | {_f(run['gpu_peak_used_gib'])} | "
            f"{_f(run.get('pairs_per_s_after_first_video'), '.1f')} | "
            f"{_f(run.get('gpu_busy_after_first_video') and 100 * run['gpu_busy_after_first_video'], '.0f')}% |")
    lines += ["", "Agreement of each run's scores with the first run's (logit_delta):", ""]
    for name, agree in r.get("agreement", {}).items():
        lines.append(f"- {name}: {agree}")
    lines += ["", "Commands (PYTHONPATH = the code version's folder first):", ""]
    for run in r.get("runs", []):
        lines.append(f"- {run['name']}: `python {run['command']}`")
    lines += ["", "Most frequent recompilation reasons (TORCH_LOGS=recompiles) per run:", ""]
    for run in r.get("runs", []):
        reasons = "; ".join(f"{k} x{v}" for k, v in list(run.get("recompile_reasons", {}).items())[:6])
        lines.append(f"- {run['name']}: {reasons or 'none'}")
    if r.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, default=None, help="videos, model, outputs (default /dev/shm or a temp dir)")
    parser.add_argument("--code", action="append", default=[], help="NAME=DIR: a code version to run")
    parser.add_argument("--videos", type=int, default=160)
    parser.add_argument("--unique-videos", type=int, help="encode only this many clips; the others are hard links")
    parser.add_argument("--cold-videos", type=int,
                        help="cold runs score only the first N videos (they fill the compile cache for the warm run)")
    parser.add_argument("--runs", default="cold,warm", help="cold,warm for every code version, in this order")
    parser.add_argument("--extra", action="append", default=[], help="NAME=ARGS: more CLI arguments for one version")
    parser.add_argument("--env", action="append", default=[], help="NAME=KEY=VALUE: an environment variable for one version")
    parser.add_argument("--kinds", action="append", default=[],
                        help="NAME=warm: only these runs for one version (its cache folder: --cache-of)")
    parser.add_argument("--cache-of", action="append", default=[],
                        help="NAME=OTHER: NAME uses OTHER's compile cache folder (e.g. warm after OTHER's cold run)")
    parser.add_argument("--budget-s", type=float, default=1e9, help="skip runs that would start after this")
    parser.add_argument("--run-timeout-s", type=float, default=300)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--report", type=Path, help="rewrite the .md of this json")
    args = parser.parse_args(argv)
    if args.report:
        data = json.loads(args.report.read_text())
        write_markdown(data, args.report.with_suffix(".md"))
        return 0
    if not args.out or not args.code:
        parser.error("--out and --code are required (or --report)")
    t0 = time.perf_counter()
    import torch

    cuda = torch.cuda.is_available() and not args.tiny
    card = torch.cuda.get_device_name(0).lower().replace(" ", "-") if cuda else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or (Path("/dev/shm/rerank_job") if Path("/dev/shm").is_dir() and cuda else
                         Path("/tmp/rerank_job"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    import transformers

    result: dict = {"card": card, "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    "argv": " ".join(sys.argv[1:] if argv is None else argv),
                    "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, "
                                f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs", "runs": [], "notes": []}
    json_path = args.out / f"rerank_job_{card}.json"

    def save():
        slim = dict(result, runs=[{k: v for k, v in run.items() if k != "scores"} for run in result["runs"]])
        json_path.write_text(json.dumps(slim, indent=1))
        write_markdown(slim, json_path.with_suffix(".md"))

    result["cold_videos"] = args.cold_videos
    result["mix"] = make_mix(work, args.videos, args.tiny, unique=args.unique_videos)
    print(f"mix: {result['mix']['videos']} videos, {result['mix']['pairs']} pairs, encoded in "
          f"{result['mix']['encode_s']} s", flush=True)
    import score_per_video as spv
    import train_steps

    model_dir = work / "model"
    info, _ = train_steps.build_model_folder(model_dir, spv.TINY if args.tiny else spv.QWEN3_VL_8B,
                                             "cuda" if cuda else "cpu", torch.bfloat16 if cuda else torch.float32)
    result["model"] = info
    print(f"model: {info['params'] / 1e9:.2f} B params, built {info['build_s']:.0f} s, saved {info['save_s']:.0f} s",
          flush=True)
    del torch  # the child processes use the GPU
    save()
    extra = {k: v.split() for k, v in (e.split("=", 1) for e in args.extra)}
    codes = [(name, Path(folder).resolve()) for name, folder in (c.split("=", 1) for c in args.code)]
    all_scores = {}
    kinds = dict(k.split("=", 1) for k in args.kinds)
    envs: dict = {}
    for item in args.env:
        name, key, value = item.split("=", 2)
        envs.setdefault(name, {})[key] = value
    cache_of = dict(c.split("=", 1) for c in args.cache_of)
    for name, folder in codes:
        cache = work / f"cache_{cache_of.get(name, name)}"
        for kind in kinds.get(name, args.runs).split(","):
            run_name = f"{name}_{kind}"
            if time.perf_counter() - t0 > args.budget_s:
                result["notes"].append(f"{run_name}: not run (over --budget-s)")
                continue
            if kind == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True, exist_ok=True)
            subset = None
            if kind == "cold" and args.cold_videos:
                subset = work / "video2queries_cold.json"
                every = json.loads((work / "video2queries.json").read_text())
                subset.write_text(json.dumps(dict(list(every.items())[:args.cold_videos])))
            record = run_job(run_name, folder, work, model_dir, cache, work / f"out_{run_name}", args,
                             extra.get(name, []), args.run_timeout_s, envs.get(name, {}), subset)
            all_scores[run_name] = record.pop("scores")
            result["runs"].append(record)
            first = next(iter(all_scores))
            if run_name != first:
                result.setdefault("agreement", {})[f"{run_name} vs {first}"] = agreement(all_scores[first],
                                                                                           all_scores[run_name])
            print(f"{run_name}: rc {record['rc']}, {record['pairs']} pairs, whole {_f(record['pairs_per_s_whole'], '.2f')}"
                  f" pairs/s, loop {_f(record['pairs_per_s_loop'])} pairs/s, wall {record['wall_s']:.0f} s, compile "
                  f"{_f(record['compile_s'])} s / {record['frames_compiled']} frames, recompiles {record['recompiles']} "
                  f"({record['recompiles_after_first_video']} after the 1st video), GPU busy loop "
                  f"{_f(record['gpu_busy_loop'] and 100 * record['gpu_busy_loop'], '.0f')}%", flush=True)
            if record["rc"] != 0:
                print(record["stderr_tail"], flush=True)
            save()
    save()
    print(json_path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
