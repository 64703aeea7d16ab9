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
    assert all(o[3] >= 0 and o[4] >= 0 for o in out)
    if ahead:
        assert all(name.startswith("rankvideo-decode") for name in threads)
    else:
        assert threads == {threading.current_thread().name}


def test_prefetched_overlaps_loading_with_the_callers_work():
    def load(item):
        time.sleep(0.1)
        return item

    start = time.perf_counter()
    waited = 0.0
    for _, _, _, _, wait in prefetched(range(5), load, ahead=1):
        time.sleep(0.1)  # the caller's work (scoring) while the next item loads
        waited += wait
    elapsed = time.perf_counter() - start
    assert elapsed < 0.85, elapsed  # sequential would take 1.0 s
    assert waited < 0.3


def test_prefetched_raises_other_errors():
    def load(item):
        raise KeyError(item)

    with pytest.raises(KeyError):
        list(prefetched(["x"], load, ahead=1))
