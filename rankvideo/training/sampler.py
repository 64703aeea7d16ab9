"""Query groups for stage 2: one positive and ``num_negs`` negatives of the same query per group.

:class:`GroupBatchSampler` yields batches of example indices, ``groups_per_batch`` groups each
(the reference: 1; its ``--batch-size`` does not change it). Two ways to form the groups of an epoch:

- ``reference`` (default, REFERENCE.md): only queries with a positive *and* a negative take part;
  one group per query, its positive drawn at random, ``num_negs`` negatives drawn without
  replacement when the query has that many, with replacement otherwise;
- ``per_positive``: one group per positive of every query that has one; up to ``num_negs``
  negatives without replacement (fewer, or none, where the query has fewer: such a group trains on
  the fallback loss).

Every epoch draws a fresh, seeded arrangement (``seed`` and the epoch). Under DDP each rank takes
every ``world_size``-th batch of the same global sequence, so ranks see different queries and
together they see exactly what one process would. The epoch comes from :meth:`set_epoch` (the
Trainer calls it, also when resuming) or counts up by itself with each pass.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

GROUPINGS = ("reference", "per_positive")


class GroupBatchSampler:
    def __init__(self, query_ids: Sequence[str], labels: Sequence[bool | None], num_negs: int = 1,
                 groups_per_batch: int = 1, seed: int = 42, rank: int = 0, world_size: int = 1,
                 drop_last_uneven: bool = True, grouping: str = "reference"):
        if num_negs < 0 or groups_per_batch < 1:
            raise ValueError("num_negs must be >= 0 and groups_per_batch >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping {grouping!r}: expected one of {', '.join(GROUPINGS)}")
        self.num_negs, self.groups_per_batch, self.seed, self.grouping = num_negs, groups_per_batch, seed, grouping
        self.rank, self.world_size, self.drop_last_uneven = rank, world_size, drop_last_uneven
        self.epoch = 0
        self.by_query: dict[str, tuple[list[int], list[int]]] = {}
        for index, (qid, label) in enumerate(zip(query_ids, labels)):
            if label is None:
                continue  # unlabelled pairs cannot be placed in a group
            pos, neg = self.by_query.setdefault(qid, ([], []))
            (pos if label else neg).append(index)
        if grouping == "reference":
            self.queries = sorted(q for q, (pos, neg) in self.by_query.items() if pos and neg)
        else:
            self.queries = sorted(q for q, (pos, _) in self.by_query.items() if pos)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _negatives(self, neg: list[int], rng: random.Random) -> list[int]:
        if len(neg) >= self.num_negs:
            return rng.sample(neg, self.num_negs)
        if self.grouping == "reference":
            return [rng.choice(neg) for _ in range(self.num_negs)]
        return rng.sample(neg, len(neg))

    def _groups(self, rng: random.Random) -> list[list[int]]:
        groups = []
        for qid in self.queries:
            pos, neg = self.by_query[qid]
            if self.grouping == "reference":
                groups.append([rng.choice(pos)] + self._negatives(neg, rng))
            else:
                groups.extend([p] + self._negatives(neg, rng) for p in pos)
        rng.shuffle(groups)
        return groups

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + (self.epoch if epoch is None else epoch))
        groups = self._groups(rng)
        batches = [sum(groups[i:i + self.groups_per_batch], []) for i in range(0, len(groups), self.groups_per_batch)]
        if self.drop_last_uneven and self.world_size > 1:
            batches = batches[: len(batches) - len(batches) % self.world_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()[self.rank::self.world_size]
        self.epoch += 1  # the next pass reshuffles unless set_epoch says otherwise
        yield from batches

    def __len__(self) -> int:
        return len(self.global_batches(0)[self.rank::self.world_size])
