"""Attribute-swap negatives for stage 2 on the synthetic benchmark (``stage2_variant.py --swap-negatives``).

A positive training pair whose query has one attribute word changed to another value of the same
attribute ("a red circle" -> "a blue circle") is a negative for the same video and description: the
query now names a value the video does not have. A probe, not a pipeline step (results in
``research/results/stage2_variants.md``).
"""

from __future__ import annotations

import random

from rankvideo.demo.synthetic import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, describe

VALUES = {"colour": list(COLOURS), "shape": list(SHAPES), "motion": list(MOTIONS), "background": list(BACKGROUNDS)}


def _inverse() -> dict[str, dict]:
    """Every query text :func:`rankvideo.demo.synthetic.describe` can write, mapped to its attributes."""
    import itertools

    from rankvideo.demo.synthetic import COUNTS

    table = {}
    for count, colour, shape, motion, background in itertools.product(
            (None, *COUNTS), *[(None, *VALUES[a]) for a in ("colour", "shape", "motion", "background")]):
        attrs = {k: v for k, v in (("count", count), ("colour", colour), ("shape", shape), ("motion", motion),
                                   ("background", background)) if v is not None}
        table[describe(attrs)] = attrs
    return table


_ATTRIBUTES_OF: dict[str, dict] = {}


def attributes(text: str) -> dict:
    """The attributes of a query that :func:`rankvideo.demo.synthetic.describe` wrote (its exact inverse)."""
    if not _ATTRIBUTES_OF:
        _ATTRIBUTES_OF.update(_inverse())
    if text not in _ATTRIBUTES_OF:
        raise ValueError(f"{text!r} is not a query of the synthetic benchmark")
    return dict(_ATTRIBUTES_OF[text])


def swap(text: str, rng: random.Random, which: int | None = None) -> str | None:
    """The query with one of its colour / shape / motion / background values (the ``which``-th it
    names, else a random one) changed to another value, written again by ``describe``."""
    attrs = attributes(text)
    slots = [a for a in ("colour", "shape", "motion", "background") if a in attrs]
    if not slots or (which is not None and which >= len(slots)):
        return None
    attr = rng.choice(slots) if which is None else slots[which]
    attrs[attr] = rng.choice([v for v in VALUES[attr] if v != attrs[attr]])
    return describe(attrs)


def add_swaps(rows: list[dict], k: int, test_queries: list[str], seed: int) -> tuple[list[dict], int]:
    """``rows`` plus up to ``k`` swapped-query negatives per positive row (``k = -1``: one per swappable
    word); a swapped query that names every attribute of a test query is left out. Returns (rows, added)."""
    rng = random.Random(seed)
    test_sets = [frozenset(attributes(t).items()) for t in test_queries]
    out, added = list(rows), 0
    for row in rows:
        if not row.get("positive"):
            continue
        seen: set[str] = set()
        for attempt in range(k * 4 if k > 0 else 5):
            if k > 0 and len(seen) >= k:
                break
            query = swap(row["query"], rng, None if k > 0 else attempt)
            if query is None or query in seen or any(t <= frozenset(attributes(query).items()) for t in test_sets):
                continue
            seen.add(query)
            out.append({**row, "query": query, "positive": False, "true_label": None, "swap": True})
            added += 1
    return out, added
