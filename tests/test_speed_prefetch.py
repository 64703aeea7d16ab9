"""Decoding the next video while the current one is scored (rankvideo.rerank.prefetched)."""

import threading
import time

import pytest

from rankvideo.rerank import prefetched
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
