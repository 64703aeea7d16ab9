"""Stage-2 losses against hand computations; the group sampler under DDP."""

import math

import pytest
import torch

from rankvideo.training.losses import LossWeights, distill_loss, point_loss, rank_loss, reranker_loss
from rankvideo.training.sampler import GroupBatchSampler

T, F = True, False


def test_rank_loss_by_hand():
    s = torch.tensor([2.0, 0.0, 1.0, 1.0])
    loss = rank_loss(s, torch.tensor([0, 0, 1, 1]), torch.tensor([T, F, F, T]), tau=1.0)
    # group 0: -log(e^2 / (e^2 + 1)); group 1: -log(1/2); mean over the two positives
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    # temperature divides the scores: tau=2 on group 0 alone
    loss = rank_loss(s[:2], torch.tensor([0, 0]), torch.tensor([T, F]), tau=2.0)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_distill_loss_only_where_teacher_known():
    s = torch.tensor([0.0, 2.0])
    loss = distill_loss(s, torch.tensor([0.5, float("nan")]), tau=2.0)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-6)
    assert distill_loss(s, torch.tensor([float("nan")] * 2), tau=1.0) is None


def test_point_loss_targets_and_weights():
    s = torch.tensor([math.log(3), 0.0])
    loss = point_loss(s, torch.tensor([T, F]), tau=1.0, neg_target=0.1, pos_weight=1.0, neg_weight=0.5)
    expected = (1.0 * -math.log(0.75) + 0.5 * math.log(2)) / 1.5
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_group_without_negative_falls_back_to_bce():
    s = torch.tensor([math.log(3)])
    loss, parts = reranker_loss(s, torch.tensor([0]), torch.tensor([T]), torch.tensor([float("nan")]),
                                LossWeights(lambda_point=0.0))
    assert set(parts) == {"fallback"} and float(loss) == pytest.approx(-math.log(0.75), abs=1e-6)
    s = torch.tensor([0.0, 0.0])  # a group without a positive: BCE against 0
    loss, parts = reranker_loss(s, torch.tensor([0, 0]), torch.tensor([F, F]), torch.tensor([float("nan")] * 2),
                                LossWeights(lambda_point=0.0))
    assert float(loss) == pytest.approx(math.log(2), abs=1e-6)


def test_combined_loss_weights_the_parts():
    s = torch.tensor([2.0, 0.0, math.log(3), 0.0])
    group, positive = torch.tensor([0, 0, 1, 1]), torch.tensor([T, F, T, F])
    teacher = torch.tensor([0.5, float("nan"), float("nan"), float("nan")])
    w = LossWeights(tau_rank=1.0, tau_distill=4.0, tau_point=1.0, lambda_distill=5.0, lambda_point=1.0)
    loss, parts = reranker_loss(s, group, positive, teacher, w)
    rank = float(rank_loss(s, group, positive, 1.0))
    distill = float(distill_loss(s, teacher, 4.0))
    point = float(point_loss(s, positive, 1.0))
    assert float(loss) == pytest.approx(rank + 5 * distill + point, abs=1e-6)
    assert parts == pytest.approx({"rank": rank, "distill": distill, "point": point})
    s.requires_grad_(True)  # without the teacher: push positives up and negatives down
    reranker_loss(s, group, positive, torch.full_like(teacher, float("nan")), w)[0].backward()
    assert s.grad[0] < 0 < s.grad[1] and s.grad[2] < 0 < s.grad[3]


QIDS = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"] * 2
LABELS = [T, F, F, T, T, F, F, T, T, F, None]  # c has no negative; d's second pair is unlabelled


def test_groups_hold_one_positive_and_its_queries_negatives():
    sampler = GroupBatchSampler(QIDS, LABELS, num_negs=1, groups_per_batch=1, seed=3)
    batches = list(sampler)
    assert len(batches) == 5  # one group per positive
    for batch in batches:
        assert LABELS[batch[0]] is True and len({QIDS[i] for i in batch}) == 1
        assert all(LABELS[i] is False for i in batch[1:]) and len(batch) <= 2
    assert sorted(b[0] for b in batches) == [0, 3, 4, 7, 8]


def test_epochs_reshuffle_deterministically_and_ddp_ranks_split_the_global_batches():
    one = GroupBatchSampler(QIDS, LABELS, num_negs=2, seed=5)
    epoch0, epoch1 = list(one), list(one)
    assert epoch0 != epoch1  # the second pass is another epoch
    again = GroupBatchSampler(QIDS, LABELS, num_negs=2, seed=5)
    assert list(again) == epoch0 and list(again) == epoch1
    again.set_epoch(0)
    assert list(again) == epoch0
    ranks = [GroupBatchSampler(QIDS, LABELS, num_negs=2, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    seen = [list(r) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 2  # 5 groups: the uneven last one is dropped under DDP
    assert not {tuple(b) for b in seen[0]} & {tuple(b) for b in seen[1]}
    assert [b for pair in zip(*seen) for b in pair] == epoch1[:4]
