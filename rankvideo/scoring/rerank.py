"""Rerank: score every (query, candidate video) pair of a video2queries map, one JSON per video.

    python -m rankvideo.rerank --model M --video2queries F --query-mapping Q --video-dir D --output-dir O \\
        [--id-start N --id-end N] [--fps 2 --max-frames 32] [--backend hf|vllm] [--video-index TSV]
    python -m rankvideo.rerank --model M --first-stage RUN --depth 100 --query-mapping Q --video-dir D --output-dir O

``--first-stage`` (TREC run or JSON ``{qid: {docid: score}}``) reranks each query's top ``--depth``
candidates, as a video2queries map made from it would. Videos are found by id in ``--video-dir``:
``{dir}/{id}.{ext}``, else (numeric ids) the MultiVENT 2.0 path ``{dir}/{(id//100)+1:06d}/{id}.mp4``
(``--video-layout`` to fix one, ``--video-index`` for any other layout).

Each video is decoded once and all of its queries are scored together. Output per video:
``{output_dir}/{video_id}_reranking_{model_name}.json`` = ``{video_id: {qid: {logprob_yes,
logprob_no, logit_delta, p_yes}}}``, written atomically. A rerun skips finished videos and redoes
unreadable or incomplete ones; ``run_info.json`` records model, settings and code version, and a
folder holding scores of another model or code is refused (or cleared with ``--restart``).
Videos that cannot be read go to ``failures.jsonl``. A model trained with video descriptions
(``descriptions.enabled``) is scored with them (``--descriptions``: the video's description, then
the query, :func:`rankvideo.prompts.render_rerank`); a video without one is a failure too.
Ids are checked (:func:`formats.id_problem`) before any path is built from them: an unsafe or
over-long id is a failure record, never a path. One process writes a folder at a time
(:class:`formats.DirLock`); failed videos are retried and their records replaced by the outcome;
``summary.json`` merges the counts of disjoint shards run in one folder.
Exit status: 0 when something was scored (or nothing was asked), 1 when pairs were asked but none
could be scored, 2 on malformed input or an I/O error (one sentence naming the file).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rankvideo import backends, logs, models, prompts, provenance
from rankvideo.config import defaults
from rankvideo.data import formats
from rankvideo.training.common import RECORD
from rankvideo.video import (FailureLog, VideoError, VideoResolver, VideoSettings, add_decode_counts, decode_counts,
                             load_video)

log = logging.getLogger(__name__)

RUN_INFO = formats.RERANK_RUN_INFO
SUMMARY = formats.RERANK_SUMMARY
COMPILE_CACHE = ".compile_cache"  # beside a run's shard folders: torch.compile's caches, shared by its shard jobs


class RerankInputError(ValueError):
    """Input the rerank cannot use, named in the message (the CLI exits 2)."""


class OutputDirError(ValueError):
    """The output folder holds scores made with other settings."""


@dataclass
class RerankSummary:
    videos_asked: int = 0
    videos_scored: int = 0
    videos_already_done: int = 0
    videos_failed: int = 0
    pairs_asked: int = 0
    pairs_scored: int = 0
    pairs_already_done: int = 0
    unknown_queries: list = field(default_factory=list)
    decodes: int = 0
    videos_decoded_twice: int = 0  # files decoded more than once in this job (must stay 0)
    seconds_decoding: float = 0.0  # decoding (+ resizing, except on a GPU: see prepare), in the background threads
    seconds_waiting_for_decode: float = 0.0  # scoring loop blocked on a decode that was not ready
    seconds_preparing: float = 0.0  # a pipelined backend's host work (prompts, pixels), in the decode threads
    seconds_scoring: float = 0.0  # the loop launching scoring and waiting for scores
    seconds_total: float = 0.0  # wall time of the decode + score loop

    def line(self) -> str:
        done = self.pairs_scored + self.pairs_already_done
        share = 100 * self.seconds_decoding / self.seconds_total if self.seconds_total else 0.0
        return (f"pairs scored {done} / asked {self.pairs_asked} ({self.pairs_already_done} from an earlier run); "
                f"videos scored {self.videos_scored + self.videos_already_done} / {self.videos_asked}, "
                f"failed {self.videos_failed}; unknown query ids {len(self.unknown_queries)}; "
                f"videos decoded {self.decodes} (decode {self.seconds_decoding:.1f} s = {share:.0f}% of the "
                f"{self.seconds_total:.1f} s loop, overlapped with scoring; waited {self.seconds_waiting_for_decode:.1f} s; "
                f"prepare {self.seconds_preparing:.1f} s; score {self.seconds_scoring:.1f} s)")


def _timed_load(load, item):
    start = time.perf_counter()
    try:
        return load(item), None, time.perf_counter() - start
    except VideoError as error:
        return None, error, time.perf_counter() - start


def prefetched(items: Sequence, load: Callable, ahead: int = 1, workers: int | None = None):
    """Yield ``(item, loaded, error, seconds, waited)`` for ``items`` in order, loading up to ``ahead``
    items in background threads while the caller works on the current one (``ahead=0``: load in the
    caller's thread). ``workers``: threads loading at once (default ``ahead``; more than ``ahead``
    raises ``ahead`` to it, so that every worker has an item). ``error`` is the :class:`VideoError` that
    ``load`` raised (``loaded`` is None then); any other exception is raised here. ``seconds``: time
    ``load`` took; ``waited``: time the caller was blocked on it. Each item is loaded exactly once."""

    items = list(items)
    workers = max(1, workers if workers else ahead)
    if ahead > 0:
        ahead = max(ahead, workers)
    if ahead <= 0:
        for item in items:
            loaded, error, seconds = _timed_load(load, item)
            yield item, loaded, error, seconds, seconds
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="rankvideo-decode") as pool:
        pending = deque(pool.submit(_timed_load, load, item) for item in items[:ahead])
        for index, item in enumerate(items):
            start = time.perf_counter()
            loaded, error, seconds = pending.popleft().result()
            waited = time.perf_counter() - start
            if index + ahead < len(items):
                pending.append(pool.submit(_timed_load, load, items[index + ahead]))
            yield item, loaded, error, seconds, waited


def default_decode_workers() -> int:
    """Decoding threads for a job: the CPUs this process may run on (its affinity: a Slurm or cgroup
    allotment, not the whole node), less one for the scoring loop, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus - 1))


#: in a decode process: the weightless backends that prepare videos, by the file their host side was pickled to
_HOST_BACKENDS: dict = {}


def _decode_worker_init(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _host_backend(path: str):
    """In a decode process: the weightless backend of the host side pickled to ``path`` (loaded once)."""
    backend = _HOST_BACKENDS.get(path)
    if backend is None:
        import pickle

        with open(path, "rb") as f:
            backend = _HOST_BACKENDS[path] = pickle.load(f).backend()
    return backend


def _decode_job(settings: VideoSettings, job, resize: bool = True, host: tuple | None = None) -> tuple:
    """In a decode process: (video, {path: decodes}, seconds preparing) of ``job`` = (video_id, path or
    VideoError); ``resize``: as :func:`load_video`'s. ``host`` = (file of a pickled
    :meth:`HFBackend.host_side`, queries, description): the video is also prepared here (``prepare_host``,
    its pixels left to the device when not ``resize``) and the prepared video comes back instead."""
    video_id, path = job[0], job[-1]
    if isinstance(path, VideoError):
        raise path
    before = decode_counts()
    video = load_video(path, settings, video_id=video_id, resize=resize)
    counts = {p: n - before.get(p, 0) for p, n in decode_counts().items() if n != before.get(p, 0)}
    if host is None:
        return video, counts, 0.0
    start = time.perf_counter()
    prepared = _host_backend(host[0]).prepare_host(video, *host[1:], defer_pixels=not resize)
    return prepared, counts, time.perf_counter() - start


#: what the decode processes import once, in the forkserver they fork from (a module that is not
#: installed is left out): the readers, the resize, Qwen3-VL's processor and model classes (the host side)
DECODE_PRELOAD = ("rankvideo.scoring.rerank", "rankvideo.backends.hf", "rankvideo.video", "torch",
                  "torchvision.transforms.functional", "decord", "av", "qwen_vl_utils",
                  "transformers.models.qwen3_vl.processing_qwen3_vl",
                  "transformers.models.qwen3_vl.video_processing_qwen3_vl",
                  "transformers.models.qwen3_vl.modeling_qwen3_vl")


def decode_processes(workers: int | None = None):
    """A pool of ``workers`` (default :func:`default_decode_workers`) decoding processes (forkserver: a
    clean process, not a fork of one that holds a GPU context and threads, with :data:`DECODE_PRELOAD`
    imported once before the workers fork), each with its share of the CPUs for torch's resize. Started
    before the model loads (:func:`run`), the workers are ready when the first video is asked for."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = workers or default_decode_workers()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(DECODE_PRELOAD))
    threads = max(1, default_decode_workers() // workers) if hasattr(os, "sched_getaffinity") else 1
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_decode_worker_init, initargs=(threads,))

    def start():  # the processes now, not as jobs come; in a thread: the forkserver's imports take seconds
        try:
            for _ in range(workers):
                pool.submit(int)
        except RuntimeError:  # the pool was shut down first (a job that ended at once)
            pass

    threading.Thread(target=start, name="rankvideo-decode-start", daemon=True).start()
    return pool


def use_compile_cache(folder) -> None:
    """Keep torch.compile's caches (Inductor's FX graph and AOTAutograd caches, Triton's kernels) in
    ``folder``, shared by the shard jobs of one run: the first job compiles, the others load."""
    folder = Path(folder).resolve()  # made by torch when it first writes (never on the CPU, where nothing compiles)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")


def _done_scores(path: Path, video_id: str, qids: list[str]) -> bool:
    """True when ``path`` holds valid scores of ``video_id`` for every id in ``qids``."""
    if not path.exists():
        return False
    try:
        data = formats.read_video_scores(path)
    except (formats.FormatError, ValueError) as error:
        log.warning("%s: unreadable (%s); scoring the video again", path, error)
        path.unlink()
        return False
    scored = data.get(video_id, {})
    if not set(qids) <= set(scored):
        log.info("%s: %d of %d queries scored; scoring the video again", path, len(set(qids) & set(scored)), len(qids))
        return False
    return True


def settings_differences(previous, current, prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for each (nested, dotted) setting that differs between two run_info records."""
    if not (isinstance(previous, dict) and isinstance(current, dict)):
        return [] if previous == current else [f"{prefix or 'run_info'}: {previous!r} -> {current!r}"]
    differences = []
    for key in sorted(set(previous) | set(current), key=str):
        differences += settings_differences(previous.get(key), current.get(key), f"{prefix}{key}" if not prefix
                                            else f"{prefix}.{key}")
    return differences


def prepare_output_dir(output_dir: Path, run_info: dict, restart: bool) -> None:
    """Check (or write) run_info.json; clear the folder when restarting on other settings."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(".*.tmp"):  # a killed run's unfinished atomic write
        stale.unlink()
    info_path = output_dir / RUN_INFO
    if info_path.exists():
        previous = formats.read_json(info_path)
        if previous != run_info:
            changed = settings_differences(previous, run_info)
            if not restart:
                raise OutputDirError(f"{output_dir} holds scores made with other settings ({'; '.join(changed)}); "
                                 "use another --output-dir or pass --restart to clear it")
            log.info("%s: settings changed (%s); clearing earlier scores", output_dir, ", ".join(changed))
            for old in output_dir.glob("*_reranking_*.json"):
                old.unlink()
            (output_dir / FailureLog.FILENAME).unlink(missing_ok=True)
            (output_dir / SUMMARY).unlink(missing_ok=True)  # its counts are of the cleared scores
    formats.write_json(info_path, run_info)


def rerank_unlocked(video2queries: dict[str, list[str]], queries: dict[str, str], resolver: VideoResolver,
           output_dir: str | Path, score_video: Callable, model_name: str, settings: VideoSettings,
           video_ids: Sequence[str] | None = None, run_info: dict | None = None, restart: bool = False,
           progress: bool = True, decode_ahead: int = 2, descriptions: dict[str, str] | None = None,
           decode_workers: int | None = None, decode_in_processes: bool = False, decode_pool=None) -> RerankSummary:
    """Score the videos ``video_ids`` (default: all of video2queries) into ``output_dir``.

    ``score_video(loaded_video, [query texts], description) -> [score dicts]`` is a backend's or
    VLMReranker's method. The next ``decode_ahead`` videos are decoded in background threads while
    the current one is scored (0: decode, then score, one after the other), by ``decode_workers``
    threads (default :func:`default_decode_workers`; ``decode_ahead`` is raised to it), or processes with
    ``decode_in_processes`` (decoding then takes no GIL from the scoring thread; ``decode_pool``: a
    :func:`decode_processes` pool already started, left running). When ``score_video``
    is the method of a pipelined backend (:class:`rankvideo.backends.PipelinedBackend`), its host work
    is done in the decode threads too, and each video is queued on the device before the previous
    one's scores are read and written; one that can score several videos in one pass
    (``HFBackend.launch_many``, ``video_batch``) gets consecutive videos in groups (``fits``). ``descriptions``
    ({video id: text}): each query is shown with its video's description; a video without one is
    recorded as a failure.
    """
    output_dir = Path(output_dir)
    prepare_output_dir(output_dir, run_info or {}, restart)
    failures = FailureLog.in_dir(output_dir)
    ids = list(video_ids) if video_ids is not None else sorted(video2queries)
    summary = RerankSummary(videos_asked=len(ids))
    unknown: set[str] = set()
    decodes_before = decode_counts()
    todo = []
    for video_id in ids:
        asked = video2queries[video_id]
        qids = [q for q in asked if q in queries]
        unknown.update(q for q in asked if q not in queries)
        summary.pairs_asked += len(asked)
        if not qids:
            continue
        problem = formats.id_problem(video_id)  # before any path is built from the id
        if problem:
            failures.replace(video_id, None, problem)
            summary.videos_failed += 1
            log.warning("video %.80r: %s; skipped", video_id, problem)
            continue
        out_path = output_dir / formats.rerank_filename(video_id, model_name)
        if _done_scores(out_path, video_id, qids):
            failures.discard(video_id)
            summary.videos_already_done += 1
            summary.pairs_already_done += len(qids)
            continue
        if descriptions is not None and video_id not in descriptions:
            failures.replace(video_id, None, "no description of this video (see the describe step's failure manifest)")
            summary.videos_failed += 1
            log.warning("video %s: no description; skipped", video_id)
            continue
        todo.append((video_id, qids, out_path))

    # a pipelined backend (rankvideo.backends.PipelinedBackend) gets each video's host work done in the
    # decode threads, and the next video queued on the device before this one's scores are read
    backend = getattr(score_video, "__self__", None)
    pipelined = backends.is_pipelined(backend) and getattr(score_video, "__name__", "") == "score_video"

    def texts(item):
        video_id, qids = item[0], item[1]
        return [queries[q] for q in qids], (descriptions[video_id] if descriptions is not None else None)

    def prepare(item, video):
        start = time.perf_counter()
        prepared = backend.prepare(video, *texts(item))
        return prepared, time.perf_counter() - start

    resize = not (pipelined and getattr(backend, "resize_on_device", False))  # else on the device, in prepare

    def decode(item):
        video_id = item[0]
        video = load_video(resolver.resolve(video_id), settings, video_id=video_id, resize=resize)
        return prepare(item, video) if pipelined else (video, 0.0)

    def resolved(video_id):  # paths found here, decoded in a worker process
        try:
            return resolver.resolve(video_id)
        except VideoError as error:
            return error

    bar = logs.progress(total=len(ids), initial=len(ids) - len(todo), desc=f"rerank {model_name}", unit="video",
                        enabled=progress, logger=log)
    loop_start = time.perf_counter()
    # the next videos are decoded in background threads while this one is scored (decoding is CPU work,
    # scoring mostly GPU work); each video is still decoded once (decode_counts)
    workers = decode_workers or default_decode_workers()
    executor, load, scratch = None, decode, None
    if decode_ahead > 0 and (decode_in_processes or decode_pool is not None) and todo:
        # the decode threads hand the decoding, and a pipelined backend's host work, to processes (no GIL
        # taken from the scoring thread; tensors come back through shared memory) and finish on the
        # device what comes back
        host_file = None
        if pipelined and hasattr(backend, "host_side"):  # each process loads it once
            import pickle
            import tempfile

            scratch = tempfile.TemporaryDirectory(prefix="rankvideo-host-")  # removed at the end, or at exit
            host_file = os.path.join(scratch.name, "host_side.pickle")
            with open(host_file, "wb") as f:
                pickle.dump(backend.host_side(), f)
        executor = decode_pool or decode_processes(workers)
        paths = {video_id: resolved(video_id) for video_id, *_ in todo}

        def decode_in_process(item):
            job = (item[0], paths[item[0]])
            host = (host_file, *texts(item)) if host_file else None
            done, counts, preparing = executor.submit(_decode_job, settings, job, resize, host).result()
            add_decode_counts(counts)
            if host is None:
                return prepare(item, done) if pipelined else (done, 0.0)
            start = time.perf_counter()  # the device side (pinning; the pixels, when deferred) here
            return backend.adopt(done), preparing + time.perf_counter() - start

        load = decode_in_process
    # a backend that can score several videos in one pass (HFBackend.launch_many) gets them in groups
    batching = pipelined and callable(getattr(backend, "launch_many", None))
    if batching and decode_ahead > 0:  # a whole group decoded ahead while the previous one is scored
        decode_ahead = max(decode_ahead, backend.video_batch)
    if decode_ahead > 0:
        log.info("decoding in %d background %s, up to %d videos ahead", workers,
                 "processes" if executor else "threads", max(decode_ahead, workers))
    compile_stats = getattr(backend, "compile_stats", None)
    in_flight: list = []  # (video_id, qids, out_path, pending scores) of the videos on the device
    group: list = []  # (item, prepared video) waiting to be launched together

    # the score files are written by a thread of their own: the scoring thread does no file I/O (a
    # temporary file, an fsync and a rename per video take milliseconds on a cluster's shared file system)
    writer = ThreadPoolExecutor(1, thread_name_prefix="rankvideo-write")
    writes: deque = deque()

    def write(video_id, out_path, scores):
        formats.write_video_scores(out_path, video_id, scores)
        failures.discard(video_id)  # a retry that worked: the old failure record goes

    def finish(video_id, qids, out_path, pending):
        start = time.perf_counter()
        scores = pending.result()
        summary.seconds_scoring += time.perf_counter() - start
        writes.append(writer.submit(write, video_id, out_path, dict(zip(qids, scores))))
        while writes and writes[0].done():
            writes.popleft().result()  # a write that failed stops the job
        summary.videos_scored += 1
        summary.pairs_scored += len(qids)
        if compile_stats is not None and summary.videos_scored == 1:
            log.info("job stats after the first video: %s", json.dumps(compile_stats()))
        elapsed = time.perf_counter() - loop_start
        bar.update(1)
        bar.set_postfix(pairs_per_s=f"{summary.pairs_scored / max(elapsed, 1e-9):.1f}", failed=summary.videos_failed)

    def launch():
        """Queue the group on the device, then read and write the scores of the videos launched before it."""
        nonlocal in_flight
        start = time.perf_counter()
        if batching:
            pendings = backend.launch_many([ready for _, ready in group])
        elif pipelined:
            pendings = [backend.launch(ready) for _, ready in group]
        else:
            pendings = [backends.PendingScores(score_video(ready, *texts(item))) for item, ready in group]
        summary.seconds_scoring += time.perf_counter() - start
        for done in in_flight:
            finish(*done)
        in_flight = [(*item[:3], pending) for (item, _), pending in zip(group, pendings)]
        group.clear()

    try:
        for item, loaded, error, seconds, waited in prefetched(todo, load, ahead=decode_ahead, workers=workers):
            video_id, qids, out_path = item[:3]
            summary.seconds_waiting_for_decode += waited
            if error is not None:
                summary.seconds_decoding += seconds
                failures.replace(video_id, error.path, error.reason)
                summary.videos_failed += 1
                log.warning("video %s: %s (%s); skipped", video_id, error.reason, error.path)
                bar.update(1)
                continue
            ready, preparing = loaded
            summary.seconds_decoding += seconds - preparing
            summary.seconds_preparing += preparing
            if group and not backend.fits([r for _, r in group], ready):
                launch()
            group.append((item, ready))
            if not batching or not backend.batchable(ready) or len(group) >= backend.video_batch:
                launch()
        if group:
            launch()
        for done in in_flight:
            finish(*done)
        while writes:
            writes.popleft().result()
    finally:
        writer.shutdown(wait=True)  # what was scored is written, also when the job stops on an error
        if executor is not None and decode_pool is None:
            executor.shutdown(cancel_futures=True)
        if scratch is not None:
            scratch.cleanup()
    bar.close()
    summary.seconds_total = time.perf_counter() - loop_start
    summary.unknown_queries = sorted(unknown)
    decodes_after = decode_counts()
    summary.decodes = sum(decodes_after.values()) - sum(decodes_before.values())
    twice = sorted(p for p, n in decodes_after.items() if n - decodes_before.get(p, 0) > 1)
    summary.videos_decoded_twice = len(twice)
    if twice:
        log.warning("%d videos were decoded more than once in this job: %s", len(twice), ", ".join(twice[:5]))
    if unknown:
        log.warning("%d query ids of video2queries are not in the query file and were not scored: %s",
                    len(unknown), ", ".join(sorted(unknown)[:10]) + (" ..." if len(unknown) > 10 else ""))
    write_summary(output_dir, summary, ids)
    if compile_stats is not None:
        log.info("job stats at the end: %s", json.dumps(compile_stats()))
    log.info("%s", summary.line())
    return summary


def rerank(video2queries, queries, resolver, output_dir, *args, **kwargs) -> RerankSummary:
    """:func:`rerank_unlocked` holding the output folder's lock (:class:`formats.DirLock`): a second
    process on the same folder gets :class:`formats.LockedError` naming the holder."""
    with formats.DirLock(output_dir):
        return rerank_unlocked(video2queries, queries, resolver, output_dir, *args, **kwargs)


def write_summary(output_dir: Path, summary: RerankSummary, ids: Sequence[str]) -> dict:
    """summary.json: this run's counts merged with those of earlier runs on other videos of the folder
    (disjoint ``--id-start/--id-end`` shards). Each run is one entry of ``shards`` ({first_id,
    last_id, counts}); a run replaces the entries whose id range overlaps its own; the top-level
    counts are the sums over the entries (lists: their union)."""
    path = output_dir / SUMMARY
    shards = []
    if path.exists():
        try:
            previous = formats.read_json(path)
            shards = [s for s in previous.get("shards", []) if isinstance(s, dict)] if isinstance(previous, dict) else []
        except formats.FormatError as error:
            log.warning("%s; writing it anew", error)
    if ids:
        first, last = min(ids), max(ids)
        shards = [s for s in shards if not (str(s.get("first_id")) <= last and first <= str(s.get("last_id")))]
        shards.append({"first_id": first, "last_id": last, **asdict(summary)})
    shards.sort(key=lambda s: str(s.get("first_id")))
    totals: dict = asdict(RerankSummary()) if shards else asdict(summary)
    for shard in shards:
        for key in totals:
            value = shard.get(key)
            if isinstance(value, list):
                totals[key] = sorted(set(totals[key]) | set(value))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[key] += value
    totals["shards"] = shards
    formats.write_json(path, totals)
    return totals


def shard_ids(video2queries: dict, id_start: int | None, id_end: int | None) -> list[str]:
    """The seed's slicing: videos sorted by id, then [id_start, id_end)."""
    return sorted(video2queries)[id_start:id_end]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rankvideo.rerank", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="local folder or hub id of the reranker")
    candidates = parser.add_mutually_exclusive_group(required=True)
    candidates.add_argument("--video2queries", help="JSON {video_id: [qid, ...]}")
    candidates.add_argument("--first-stage", help="first-stage run to rerank instead of --video2queries: TREC run "
                                                  "(qid Q0 docid rank score tag) or JSON {qid: {docid: score}}")
    parser.add_argument("--depth", type=int, default=None,
                        help="with --first-stage: the top DEPTH candidates of each query are scored (default 100)")
    parser.add_argument("--query-mapping", required=True,
                        help="queries TSV (query_id<TAB>text; the reference reads it from its config.py)")
    parser.add_argument("--video-dir", help="folder of the videos")
    parser.add_argument("--video-layout", choices=["auto", "flat", "multivent", "index"], default=None,
                        help="flat: {dir}/{id}.{ext}; multivent: {dir}/{(id//100)+1:06d}/{id}.mp4; "
                             "index: --video-index; auto: flat, then multivent for numeric ids "
                             "(default: index if --video-index is given, else auto)")
    parser.add_argument("--video-index", help="TSV video_id<TAB>path")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--id-start", type=int, default=None, help="first video (index into the sorted ids)")
    parser.add_argument("--id-end", type=int, default=None, help="one past the last video")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--max-frames", type=int, default=32)
    parser.add_argument("--tokens-per-frame", type=int, default=128, help="visual tokens per frame (paper: 128)")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--prompt-variant", default="default", choices=sorted(prompts.RERANK_VARIANTS),
                        help="default: the stage-2 training prompt (video first); reference_inference: the released one")
    parser.add_argument("--answer-tokens", choices=list(prompts.ANSWER_TOKENS), default="auto",
                        help="variants: every token that decodes to yes/no (the reference); single: the ids stage 2 "
                             "trains; auto: single for a stage-2 folder of this project, else variants")
    parser.add_argument("--descriptions", help="JSONL {doc_id, text}: the video descriptions a model trained with "
                                               "them is scored with (descriptions.enabled)")
    parser.add_argument("--model-name", help="name in output files (default: the model folder's name)")
    parser.add_argument("--cache-dir", help="Hugging Face cache folder")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (hf)")
    parser.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--query-batch-size", type=int, default=None,
                        help="queries of one video per forward (hf; default: the config schema's rerank.query_batch_size)")
    parser.add_argument("--video-batch", type=int, default=None,
                        help="hf: videos scored together in one pass (default: 4 on a GPU, 1 on the CPU)")
    parser.add_argument("--fp8", action="store_true",
                        help="hf: linear layers in float8 (per-channel weight, per-token activation scales); off by default")
    parser.add_argument("--gpu-memory", type=float, default=0.9, help="vLLM gpu_memory_utilization")
    parser.add_argument("--tensor-parallel", type=int, default=1, help="vLLM tensor_parallel_size")
    parser.add_argument("--decode-ahead", type=int, default=2,
                        help="videos decoded in background threads while one is scored (0: no overlap)")
    parser.add_argument("--decode-workers", type=int, default=None,
                        help="threads decoding videos at once (default: the CPUs this job may use, less one, at most 8)")
    parser.add_argument("--decode-in", choices=["auto", "threads", "processes"], default="auto",
                        help="decode in background threads (auto, the default) or processes")
    parser.add_argument("--compile-cache", help="folder for torch.compile's caches (hf), shared by the shard jobs of "
                                                "one run: later jobs load what the first compiled")
    parser.add_argument("--restart", action="store_true", help="clear scores made with other settings")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, exit_at_once: bool = False) -> int:
    """The command. ``exit_at_once`` (the ``python -m`` entry points): with the hf backend, the process
    ends as soon as the job is written and its summary printed (:func:`logs.exit_now`)."""
    args = build_parser().parse_args(argv)
    logs.setup()
    try:
        if args.depth is not None and (args.video2queries or args.depth < 1):
            raise ValueError(f"--depth {args.depth}: give a depth of at least 1, and only with --first-stage "
                             "(--video2queries lists the candidates itself)")
        video2queries = (formats.read_video2queries(args.video2queries) if args.video2queries else
                         formats.video2queries_from_run(formats.read_run(args.first_stage), args.depth or 100))
        queries = formats.read_queries(args.query_mapping)
        layout = args.video_layout or ("index" if args.video_index else "auto")
        resolver = VideoResolver(args.video_dir, layout, args.video_index)
        settings = VideoSettings.with_tokens(args.fps, args.max_frames, args.tokens_per_frame)
    except (formats.FormatError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        summary = run(args.model, video2queries, queries, resolver, args.output_dir, settings,
                      video_ids=shard_ids(video2queries, args.id_start, args.id_end), backend=args.backend,
                      model_name=args.model_name, prompt_variant=args.prompt_variant, restart=args.restart,
                      answer_tokens=args.answer_tokens, descriptions=args.descriptions,
                      progress=not args.no_progress, decode_ahead=args.decode_ahead,
                      decode_workers=args.decode_workers, compile_cache=args.compile_cache, decode_in=args.decode_in,
                      options=backend_options(args.backend, device=args.device, dtype=args.dtype,
                                              query_batch_size=args.query_batch_size, gpu_memory=args.gpu_memory,
                                              tensor_parallel=args.tensor_parallel, cache_dir=args.cache_dir,
                                              fp8=args.fp8, video_batch=args.video_batch))
    except OSError as error:  # read-only or full output folder, missing model or weights, lock held
        print(f"error: {formats.io_error_sentence(error)}", file=sys.stderr)
        return 2
    except ValueError as error:  # bad input (FormatError, RerankInputError, OutputDirError, an unknown dtype)
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.line())
    code = 1 if summary.pairs_asked and not (summary.pairs_scored + summary.pairs_already_done) else 0
    if exit_at_once and args.backend == "hf":
        logs.exit_now(code)
    return code


def scoring_settings(backend: str, options: dict) -> dict:
    """The backend settings that change scores (numerics), recorded in run_info.json: device kind,
    resolved dtype, query batch size, and fp8 and video batch when used (hf); dtype and tensor parallel
    size (vllm)."""

    if backend == "hf":
        device = options.get("device") or models.default_device()
        dtype = str(models.torch_dtype(options.get("dtype"), device)).removeprefix("torch.")
        from rankvideo.backends.hf import default_video_batch

        video_batch = options.get("video_batch") or default_video_batch(device.split(":")[0])
        return {"device": device.split(":")[0], "dtype": dtype, "query_batch_size": options.get("query_batch_size"),
                **({"fp8": True} if options.get("fp8") else {}), **({"video_batch": video_batch} if video_batch > 1 else {})}
    return {"dtype": options.get("dtype") or "auto", "tensor_parallel_size": options.get("tensor_parallel_size")}


def backend_options(backend: str, device=None, dtype=None, query_batch_size=None, gpu_memory=0.9, tensor_parallel=1,
                    cache_dir=None, trust_remote_code=False, allow_pickle_weights=False, fp8=False,
                    video_batch=None) -> dict:
    """The keyword arguments of one backend's constructor."""
    options: dict = {"cache_dir": cache_dir, "dtype": dtype, "trust_remote_code": trust_remote_code}
    if allow_pickle_weights:
        options["allow_pickle_weights"] = True
    if backend == "hf":
        if query_batch_size is None:  # the config schema's default, the one place it is set

            query_batch_size = defaults("rerank")["query_batch_size"]
        options.update(device=device, query_batch_size=query_batch_size)
        if video_batch is not None:
            options["video_batch"] = video_batch
        if fp8:
            options["fp8"] = True
    elif fp8:
        raise ValueError("fp8 is an option of the hf backend (vLLM has its own: quantization='fp8')")
    elif video_batch is not None:
        raise ValueError("video_batch is an option of the hf backend (vLLM batches by itself)")
    else:
        options.update(gpu_memory_utilization=gpu_memory, tensor_parallel_size=tensor_parallel)
    return options


def training_record(model: str) -> dict:
    """The ``rankvideo_training.json`` of a folder this project trained; {} for other models."""

    record = Path(model) / RECORD
    return formats.read_json(record) if record.is_file() else {}


def needs_descriptions(model: str, record: dict) -> bool:
    """Whether the stage-2 folder ``model`` (its training ``record``) was trained with a description of
    each video, so that scoring must show them too. A folder trained with another layout than this
    version's (:data:`rankvideo.prompts.DESCRIPTION_LAYOUT`) is a ValueError that says what to do."""
    layout = record.get("descriptions")
    if layout and layout != prompts.DESCRIPTION_LAYOUT:
        shown = "after the query" if layout is True else repr(layout)
        raise ValueError(f"{model} was trained with each video's description {shown} (an older version); this "
                         f"version shows it before the query: train it again (snakemake -R train_stage2)")
    return bool(layout)


def trained_prompt_variant(model: str) -> str | None:
    """The prompt variant a stage-2 folder made by this project was trained with; None for other models."""
    return training_record(model).get("prompt_variant")


def resolve_answer_tokens(model: str, answer_tokens: str, record: dict | None = None) -> str:
    """``auto``: ``single`` for a stage-2 folder of this project (the ids it was trained to move),
    ``variants`` (the reference's inference) for any other model; else ``answer_tokens``.
    ``record``: the folder's training record when the caller has read it already."""
    if answer_tokens not in prompts.ANSWER_TOKENS:
        raise ValueError(f"answer_tokens must be one of {', '.join(prompts.ANSWER_TOKENS)}, not {answer_tokens!r}")
    if answer_tokens != "auto":
        return answer_tokens
    record = training_record(model) if record is None else record
    return "single" if record.get("stage") == "stage2" else "variants"


def run(model: str, video2queries, queries, resolver, output_dir, settings: VideoSettings, *, video_ids=None,
        backend: str = "hf", model_name: str | None = None, prompt_variant: str = "default", restart: bool = False,
        progress: bool = True, options: dict | None = None, decode_ahead: int = 2,
        answer_tokens: str = "auto", descriptions=None, decode_workers: int | None = None,
        compile_cache=None, decode_in: str = "auto") -> RerankSummary:
    """Load the backend and rerank; returns the summary. Bad input raises ``ValueError`` (a
    :class:`RerankInputError`, :class:`OutputDirError`, ``FormatError``), a missing model or an
    unusable output folder ``OSError``.
    ``descriptions``: JSONL {doc_id, text} of video descriptions, required for a model trained with
    them (its training record says so). ``compile_cache``: see :func:`use_compile_cache`. ``decode_in``:
    ``threads`` (also ``auto``, the default) or ``processes`` (decoding and the backend's host work in
    worker processes, started before the model loads). On an H200 with 16 CPUs and decord both score at
    the same rate in the loop (benchmarks/results/rerank_job_nvidia-h200.md, runs 7-9), so threads stay
    the default."""

    empty_shard = video_ids is not None and not list(video_ids)  # no model to load
    if not empty_shard:  # the weights read from disk while the imports below run
        models.prefetch_weights(model, models.LoadOptions(cache_dir=(options or {}).get("cache_dir")))
    model_name = model_name or models.model_name(model)
    record = training_record(model)
    trained_with = record.get("prompt_variant")
    if trained_with and trained_with != prompt_variant:
        log.warning("%s was trained with the prompt variant %r; scoring it with %r reads the answer where it "
                    "was not trained to put it", model, trained_with, prompt_variant)
    described_training = needs_descriptions(model, record)
    if described_training and not descriptions:
        raise RerankInputError(f"{model} was trained with a description of each video before the query; score it "
                               "with the same descriptions (--descriptions, the describe rule's descriptions.jsonl)")
    if descriptions and record.get("stage") == "stage2" and not described_training:
        log.warning("%s was trained without video descriptions; scoring it with them shows it a prompt it was "
                    "not trained on", model)
    described = formats.read_id_text_jsonl(descriptions) if descriptions else None
    answer_tokens = resolve_answer_tokens(model, answer_tokens, record)
    models.warn_below_paper(model, settings)
    scoring = scoring_settings(backend, options or {})  # ValueError: an unknown dtype
    run_info = {"model": provenance.model_fingerprint(model), "model_name": model_name, "backend": backend,
                "prompt_variant": prompt_variant, "answer_tokens": answer_tokens, "video": settings.to_dict(),
                "scoring": scoring, "code_version": provenance.code_version(),
                "descriptions": {"path": str(descriptions), "sha256": provenance.file_sha256(descriptions)} if descriptions else None}
    pool = None
    try:
        if empty_shard:
            score_video = None
        else:
            if compile_cache and backend == "hf":
                use_compile_cache(compile_cache)
            if decode_in == "processes" and decode_ahead > 0:  # the workers start while the model loads
                pool = decode_processes(decode_workers)
            score_video = backends.create(backend, model, prompt_variant=prompt_variant, answer_tokens=answer_tokens,
                                          **(options or {})).score_video
        return rerank(video2queries, queries, resolver, output_dir, score_video, model_name, settings,
                      video_ids=video_ids, run_info=run_info, restart=restart, progress=progress,
                      decode_ahead=decode_ahead, descriptions=described, decode_workers=decode_workers,
                      decode_in_processes=decode_in == "processes", decode_pool=pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


# ----------------------------------------------------------------------------- pipeline steps


def shard_slice(n_videos: int, shard: int, shards: int) -> tuple[int, int]:
    """Contiguous [start, end) of sorted video ids for one of ``shards`` shards."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range 0..{shards - 1}")
    return n_videos * shard // shards, n_videos * (shard + 1) // shards


def run_shard(model: str, video2queries_path, queries_path, videos: dict, output_dir, shard: int, shards: int,
              rerank_config: dict, models_config: dict, model_name: str, descriptions=None) -> RerankSummary:
    """One pipeline shard: config sections in, per-video JSONs and summary.json out."""

    models.apply_offline(models_config)
    video2queries = formats.read_video2queries(video2queries_path)
    start, end = shard_slice(len(video2queries), shard, shards)
    resolver = VideoResolver.from_config(videos)
    settings = VideoSettings.from_config(rerank_config["video"])
    options = backend_options(rerank_config["backend"], device=rerank_config["device"], dtype=rerank_config["dtype"],
                              query_batch_size=rerank_config["query_batch_size"],
                              gpu_memory=rerank_config["gpu_memory"], tensor_parallel=rerank_config["tensor_parallel"],
                              cache_dir=models_config["cache_dir"], trust_remote_code=models_config["trust_remote_code"],
                              allow_pickle_weights=models_config["allow_pickle_weights"], fp8=rerank_config["fp8"],
                              video_batch=rerank_config["video_batch"])
    summary = run(model, video2queries, formats.read_queries(queries_path), resolver, output_dir, settings,
                  video_ids=sorted(video2queries)[start:end], backend=rerank_config["backend"], model_name=model_name,
                  prompt_variant=rerank_config["prompt_variant"], restart=True, options=options,
                  answer_tokens=rerank_config["answer_tokens"], descriptions=descriptions,
                  compile_cache=Path(output_dir).parent / COMPILE_CACHE)
    if summary.pairs_asked and not (summary.pairs_scored + summary.pairs_already_done):
        raise RuntimeError(f"shard {shard}: no pair could be scored ({summary.line()})")
    return summary


def gather(shard_dirs: Sequence, first_stage_path, predictions_dir, run_path, failures_path, summary_path,
           rerank_depth: int, output_depth: int | None, score_field: str) -> dict:
    """Merge shard folders into one prediction folder, failures file, summary and reranked TREC run."""
    import shutil

    from rankvideo.evaluation.evaluate import rerank_run

    predictions_dir = Path(predictions_dir)
    failures, totals = [], {}
    with formats.atomic_dir(predictions_dir) as partial:
        for shard_dir in map(Path, shard_dirs):
            for path in sorted(shard_dir.glob("*_reranking_*.json")):
                shutil.copy2(path, partial / path.name)
            failure_file = shard_dir / FailureLog.FILENAME
            if failure_file.exists():
                failures += formats.read_jsonl(failure_file, required=("video_id", "path", "reason"))
            for key, value in formats.read_json(shard_dir / SUMMARY).items():
                if key == "shards":
                    continue
                totals[key] = (totals.get(key, 0) + value if isinstance(value, (int, float))
                               else sorted(set(totals.get(key, [])) | set(value)))
    formats.write_jsonl(failures_path, failures)
    formats.write_json(summary_path, totals)
    scores = formats.read_prediction_dir(predictions_dir, score_field)
    reranked = rerank_run(formats.read_run(first_stage_path), scores, rerank_depth, output_depth)
    formats.write_trec_run(run_path, reranked, tag="rankvideo")
    log.info("gathered %d shards: %d videos scored, %d failed", len(shard_dirs),
             len(list(predictions_dir.glob("*.json"))), len(failures))
    return totals


if __name__ == "__main__":
    sys.exit(main(exit_at_once=True))
