"""Decoding the next video while the current one is scored (rankvideo.scoring.rerank.prefetched)."""

import threading
import time

import pytest

from rankvideo.scoring.rerank import prefetched
from rankvideo.video import VideoError


@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_prefetched_keeps_order_loads_once_and_passes_video_errors(ahead):
    loads, threads = [], set()

    def load(item):
        loads.append(item)
        threads.add(threading.current_thread().name)
        if item == "bad":
            raise VideoError("empty file", item, item)
        time.sleep(0.01)
        return item.upper()

    items = ["a", "bad", "c", "d"]
    out = list(prefetched(items, load, ahead=ahead))
    assert [o[0] for o in out] == items and sorted(loads) == sorted(items)  # each item loaded exactly once
    assert [o[1] for o in out] == ["A", None, "C", "D"]
    assert out[1][2].reason == "empty file" and all(o[2] is None for o in out if o[0] != "bad")
    # seconds: the time load took (each good item sleeps 0.01 s in it); waited: without prefetching,
    # the caller waits for the whole load
    assert all(o[3] >= 0.01 for o in out if o[0] != "bad")
    if not ahead:
        assert all(o[4] == o[3] for o in out)
    if ahead:
        assert all(name.startswith("rankvideo-decode") for name in threads)
    else:
        assert threads == {threading.current_thread().name}


def test_prefetched_overlaps_loading_with_the_callers_work():
    """With ahead=1 the next item loads while the caller works on the current one. Checked on events,
    not on time: the caller's work on item n lasts until item n + 1's load has begun, and that load
    cannot finish before the caller's work on item n has begun. Loading only when asked would hang
    here (the waits' 60 s are a guard against that hang, not a speed limit)."""
    events, lock = [], threading.Lock()
    started = {i: threading.Event() for i in range(5)}
    working = {i: threading.Event() for i in range(5)}

    def record(what):
        with lock:
            events.append(what)

    def load(item):
        record(("load start", item))
        started[item].set()
        if item > 0:
            assert working[item - 1].wait(timeout=60), f"item {item} loaded before the caller took item {item - 1}"
        record(("load end", item))
        return item

    for item, loaded, _, _, _ in prefetched(range(5), load, ahead=1):
        assert loaded == item
        record(("work start", item))
        working[item].set()
        if item < 4:
            assert started[item + 1].wait(timeout=60), f"item {item + 1} was not loading while item {item} was worked on"
        record(("work end", item))
    position = {event: index for index, event in enumerate(events)}
    assert len(position) == len(events) == 20, events  # each item loaded once, worked on once
    for item in range(4):
        assert position[("work start", item)] < position[("load end", item + 1)], events
        assert position[("load start", item + 1)] < position[("work end", item)], events
    for item in range(3):  # never more than one item ahead
        assert position[("work start", item)] < position[("load start", item + 2)], events


def test_prefetched_raises_other_errors():
    def load(item):
        raise KeyError(item)

    with pytest.raises(KeyError):
        list(prefetched(["x"], load, ahead=1))


def test_prefetched_workers_load_several_items_at_once():
    """``workers`` threads decode at the same time (and ``ahead`` is raised to keep them busy)."""
    running, most = [0], [0]
    lock = threading.Lock()

    def load(item):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return item

    out = list(prefetched(range(8), load, ahead=1, workers=4))
    assert [o[0] for o in out] == list(range(8)) and [o[1] for o in out] == list(range(8))
    assert most[0] > 1  # with ahead=1 alone, one load at a time
    most[0] = 0
    list(prefetched(range(4), load, ahead=1))
    assert most[0] == 1


def test_default_decode_workers_follow_the_cpus_this_process_may_use(monkeypatch):
    import os

    from rankvideo.scoring import rerank

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert rerank.default_decode_workers() == 5
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert rerank.default_decode_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert rerank.default_decode_workers() == 8


def test_compile_cache_flag_points_torch_at_the_folder(tmp_path, monkeypatch):
    import os

    from rankvideo.scoring import rerank

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    args = rerank.build_parser().parse_args(["--model", "m", "--video2queries", "v", "--query-mapping", "q",
                                             "--output-dir", "o", "--compile-cache", str(tmp_path / "cc"),
                                             "--decode-workers", "3"])
    assert args.compile_cache == str(tmp_path / "cc") and args.decode_workers == 3
    rerank.use_compile_cache(args.compile_cache)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "cc").resolve())
    assert os.environ["TRITON_CACHE_DIR"] == str((tmp_path / "cc" / "triton").resolve())


@pytest.mark.parametrize("in_processes", [False, True])
def test_rerank_loop_decodes_in_threads_or_processes_once_each(tmp_path, in_processes):
    """The rerank loop with decode workers (threads, or processes: the GPU default): the same videos reach
    the scorer in order, each decoded once (counted in the parent too), and a missing file is a failure."""
    from rankvideo.data import formats
    from rankvideo.scoring.rerank import rerank_unlocked
    from rankvideo.video import VideoResolver, VideoSettings, reset_decode_count
    from tests.videos import make_multivent_tree

    paths = make_multivent_tree(tmp_path / "videos", ["101", "102", "103"], n_frames=8, rate=4)
    video2queries = {"101": ["q1", "q2"], "102": ["q1"], "103": ["q2"], "999": ["q1"]}  # 999 has no file
    seen = []

    def score_video(video, queries, description):
        seen.append((tuple(video.frames.shape), len(queries)))
        return [{"logprob_yes": -1.0, "logprob_no": -2.0, "logit_delta": 1.0, "p_yes": 0.7} for _ in queries]

    reset_decode_count()
    summary = rerank_unlocked(video2queries, {"q1": "a", "q2": "b"}, VideoResolver(tmp_path / "videos", "multivent"),
                              tmp_path / "out", score_video, "m", VideoSettings.with_tokens(2.0, 4, 4),
                              progress=False, decode_ahead=1, decode_workers=2, decode_in_processes=in_processes)
    assert summary.videos_scored == 3 and summary.videos_failed == 1 and summary.pairs_scored == 4
    assert summary.decodes == 3 and summary.videos_decoded_twice == 0
    assert [q for _, q in seen] == [2, 1, 1] and all(shape[0] > 0 for shape, _ in seen)
    assert formats.read_video_scores(tmp_path / "out" / formats.rerank_filename("102", "m"))["102"]["q1"]["p_yes"] == 0.7
    assert len(paths) == 3


def test_score_files_are_written_off_the_scoring_thread(tmp_path, monkeypatch):
    """The scoring thread does no file I/O: each video's score file is written by the writer thread. A
    write that fails stops the job with its error; the videos scored before it keep their files."""
    import threading

    from rankvideo.data import formats
    from rankvideo.scoring.rerank import rerank_unlocked
    from rankvideo.video import VideoResolver, VideoSettings
    from tests.videos import make_multivent_tree

    make_multivent_tree(tmp_path / "videos", ["101", "102", "103"], n_frames=8, rate=4)
    video2queries = {"101": ["q1"], "102": ["q1", "q2"], "103": ["q2"]}
    writers = []
    real_write = formats.write_video_scores

    def write(path, video_id, scores):
        writers.append(threading.current_thread().name)
        if video_id == "103" and "fail" in str(path):
            raise OSError(28, "No space left on device", str(path))
        real_write(path, video_id, scores)

    def score_video(video, queries, description):
        return [{"logprob_yes": -1.0, "logprob_no": -2.0, "logit_delta": 1.0, "p_yes": 0.7} for _ in queries]

    monkeypatch.setattr(formats, "write_video_scores", write)
    run = dict(resolver=VideoResolver(tmp_path / "videos", "multivent"), score_video=score_video, model_name="m",
               settings=VideoSettings.with_tokens(2.0, 4, 4), progress=False, decode_ahead=1)
    summary = rerank_unlocked(video2queries, {"q1": "a", "q2": "b"}, output_dir=tmp_path / "out", **run)
    assert summary.videos_scored == 3 and writers and all(name.startswith("rankvideo-write") for name in writers)
    assert len(list((tmp_path / "out").glob("*_reranking_*.json"))) == 3
    with pytest.raises(OSError, match="No space left"):
        rerank_unlocked(video2queries, {"q1": "a", "q2": "b"}, output_dir=tmp_path / "fail", **run)
    assert sorted(p.name.split("_")[0] for p in (tmp_path / "fail").glob("*_reranking_*.json")) == ["101", "102"]
