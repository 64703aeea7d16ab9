"""Attribute-swap negatives for stage 2 on the synthetic benchmark (``stage2_variant.py --swap-negatives``).

A positive training pair whose query has one attribute word changed to another value of the same
attribute ("a red circle" -> "a blue circle") is a negative for the same video and description: the
query now names a value the video does not have. A probe, not a pipeline step (results in
``benchmarks/results/stage2_variants.md``).
"""

from __future__ import annotations

import random

from rankvideo.synthetic import BACKGROUNDS, COLOURS, MOTIONS, SHAPES

VALUES = {"colour": list(COLOURS), "shape": list(SHAPES), "motion": list(MOTIONS), "background": list(BACKGROUNDS)}


def _slots(words: list[str]) -> list[tuple[int, str, str]]:
    """(word index, attribute, plural suffix) of each swappable word of a query (rankvideo.synthetic.describe's words)."""
    slots = []
    for i, word in enumerate(words):
        if word in COLOURS:
            slots.append((i, "colour", ""))
        elif word.rstrip("s") in SHAPES:
            slots.append((i, "shape", word[len(word.rstrip("s")):]))
        elif i > 0 and words[i - 1] == "moving":
            slots.append((i, "motion", ""))
        elif i + 1 < len(words) and words[i + 1] == "background":
            slots.append((i, "background", ""))
    return slots


def attributes(text: str) -> dict:
    """The attributes a query names, read from its words (count from "a single" / "two" / "three")."""
    words = text.lower().split()
    found = {attr: (words[i][:len(words[i]) - len(suffix)] if suffix else words[i]) for i, attr, suffix in _slots(words)}
    if words[:2] == ["a", "single"]:
        found["count"] = 1
    elif words and words[0] in ("two", "three"):
        found["count"] = {"two": 2, "three": 3}[words[0]]
    return found


def swap(text: str, rng: random.Random, which: int | None = None) -> str | None:
    """The query with one attribute word (the ``which``-th, else a random one) changed to another value."""
    words = text.split()
    slots = _slots(words)
    if not slots or (which is not None and which >= len(slots)):
        return None
    i, attr, suffix = rng.choice(slots) if which is None else slots[which]
    old = words[i][:len(words[i]) - len(suffix)] if suffix else words[i]
    words[i] = rng.choice([v for v in VALUES[attr] if v != old]) + suffix
    return " ".join(words)


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
