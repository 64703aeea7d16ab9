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
    # the reference: BCEWithLogits(weight=w) with mean reduction divides by the number of examples
    loss = point_loss(s, torch.tensor([T, F]), tau=1.0, neg_target=0.1, pos_weight=1.0, neg_weight=0.5)
    weighted_sum = 1.0 * -math.log(0.75) + 0.5 * math.log(2)  # BCE(σ=0.5, target 0.1) = log 2
    assert float(loss) == pytest.approx(weighted_sum / 2, abs=1e-6)
    loss = point_loss(s, torch.tensor([T, F]), tau=1.0, normalisation="weights")
    assert float(loss) == pytest.approx(weighted_sum / 1.5, abs=1e-6)


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


def test_per_positive_groups_hold_one_positive_and_its_queries_negatives():
    sampler = GroupBatchSampler(QIDS, LABELS, num_negs=1, groups_per_batch=1, seed=3, grouping="per_positive")
    batches = list(sampler)
    assert len(batches) == 5  # one group per positive
    for batch in batches:
        assert LABELS[batch[0]] is True and len({QIDS[i] for i in batch}) == 1
        assert all(LABELS[i] is False for i in batch[1:]) and len(batch) <= 2
    assert sorted(b[0] for b in batches) == [0, 3, 4, 7, 8]


def test_epochs_reshuffle_deterministically_and_ddp_ranks_split_the_global_batches():
    one = GroupBatchSampler(QIDS, LABELS, num_negs=2, seed=5, grouping="per_positive")
    epoch0, epoch1 = list(one), list(one)
    assert epoch0 != epoch1  # the second pass is another epoch
    again = GroupBatchSampler(QIDS, LABELS, num_negs=2, seed=5, grouping="per_positive")
    assert list(again) == epoch0 and list(again) == epoch1
    again.set_epoch(0)
    assert list(again) == epoch0
    ranks = [GroupBatchSampler(QIDS, LABELS, num_negs=2, seed=5, rank=r, world_size=2, grouping="per_positive")
             for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    seen = [list(r) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 2  # 5 groups: the uneven last one is dropped under DDP
    assert not {tuple(b) for b in seen[0]} & {tuple(b) for b in seen[1]}
    assert [b for pair in zip(*seen) for b in pair] == epoch1[:4]


def test_reference_sampler_one_group_per_query_with_both_labels():
    """The reference's sampler: only queries with a positive and a negative (a, b; not c without
    negatives, not d without positives), one group each per epoch, a random positive, num_negs
    negatives without replacement when there are enough, with replacement otherwise."""
    sampler = GroupBatchSampler(QIDS, LABELS, num_negs=2, seed=1)
    positives_of_a = set()
    for _ in range(20):
        batches = list(sampler)
        assert len(batches) == 2 and len(sampler) == 2  # one group per batch, one group per query
        by_query = {QIDS[b[0]]: b for b in batches}
        assert set(by_query) == {"a", "b"}
        a, b = by_query["a"], by_query["b"]
        assert a[0] in (0, 3) and sorted(a[1:]) == [1, 2]  # two negatives, both drawn (no repeat)
        assert b == [4, 5, 6] or b == [4, 6, 5]
        positives_of_a.add(a[0])
    assert positives_of_a == {0, 3}  # the positive is drawn at random each epoch
    many = GroupBatchSampler(QIDS, LABELS, num_negs=5, seed=1)  # b has 2 negatives: drawn with replacement
    groups = [batch for _ in range(5) for batch in many if QIDS[batch[0]] == "b"]
    assert all(len(g) == 6 and set(g[1:]) <= {5, 6} for g in groups)
    assert any(len(set(g[1:])) < len(g[1:]) for g in groups)


def test_reference_loss_of_one_group_by_hand():
    """One group (the reference's batch) with the default weights: rank + 5 distill + 1 point."""
    s = torch.tensor([2.0, -1.0])  # positive, negative
    teacher = torch.tensor([0.8, 0.3])
    loss, parts = reranker_loss(s, torch.tensor([0, 0]), torch.tensor([T, F]), teacher)

    def bce(logit, target):
        p = 1 / (1 + math.exp(-logit))
        return -(target * math.log(p) + (1 - target) * math.log(1 - p))

    rank = -math.log(math.exp(0.2) / (math.exp(0.2) + math.exp(-0.1)))
    distill = (bce(2.0 / 5, 0.8) + bce(-1.0 / 5, 0.3)) / 2
    point = (1.0 * bce(2.0, 1.0) + 0.5 * bce(-1.0, 0.1)) / 2
    assert parts == pytest.approx({"rank": rank, "distill": distill, "point": point}, abs=1e-6)
    assert float(loss) == pytest.approx(rank + 5 * distill + point, abs=1e-6)


def test_fallback_group_trains_on_bce_alone_as_the_reference():
    s = torch.tensor([0.5, 1.5])  # a group of two positives, teacher known
    group, positive, teacher = torch.tensor([0, 0]), torch.tensor([T, T]), torch.tensor([0.9, 0.2])
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(s, torch.ones(2)))
    loss, parts = reranker_loss(s, group, positive, teacher)
    assert set(parts) == {"fallback"} and float(loss) == pytest.approx(bce, abs=1e-6)
    # our variant: the distillation and point terms on top
    w = LossWeights(fallback="bce_and_terms", point_normalisation="weights")
    loss, parts = reranker_loss(s, group, positive, teacher, w)
    expected = bce + 5 * float(distill_loss(s, teacher, 5.0)) + float(point_loss(s, positive, 1.0, normalisation="weights"))
    assert set(parts) == {"fallback", "distill", "point"} and float(loss) == pytest.approx(expected, abs=1e-6)


def test_fallback_bce_beside_a_full_group_leaves_the_other_terms_to_the_full_group():
    s = torch.tensor([2.0, 0.0, 1.0])
    group, positive = torch.tensor([0, 0, 1]), torch.tensor([T, F, T])  # group 1 has no negative
    teacher = torch.tensor([0.5, 0.5, 0.5])
    loss, parts = reranker_loss(s, group, positive, teacher)
    mixed = torch.tensor([T, T, F])
    expected = (float(rank_loss(s[mixed], group[mixed], positive[mixed], 10.0))
                + float(torch.nn.functional.binary_cross_entropy_with_logits(s[2:], torch.ones(1)))
                + 5 * float(distill_loss(s[mixed], teacher[mixed], 5.0)) + float(point_loss(s[mixed], positive[mixed], 1.0)))
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_stage2_cli_batch_is_one_query_group_whatever_batch_size_says():
    """The reference's `--batch-size 3` is accepted and, as there, a batch stays one query group."""
    from rankvideo.training import stage2

    args = stage2.build_parser().parse_args(
        ["--model", "m", "--train-data", "t.jsonl", "--output-dir", "o", "--batch-size", "3"])
    assert stage2.groups_settings(stage2.settings_from_args(args)) == (1, "reference")
    weights = LossWeights(**{k: getattr(args, k) for k in ("fallback", "point_normalisation")})
    assert (weights.fallback, weights.point_normalisation) == ("bce", "items")
    args = stage2.build_parser().parse_args(
        ["--model", "m", "--train-data", "t.jsonl", "--output-dir", "o", "--groups-per-batch", "2",
         "--grouping", "per_positive"])
    assert stage2.groups_settings(stage2.settings_from_args(args)) == (2, "per_positive")
