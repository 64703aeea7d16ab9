"""Stage-2 losses as pure functions of tensors (REFERENCE.md, "Stage 2").

``s`` is the relevance score ``logit[yes] - logit[no]`` of each example. A batch holds groups
(``group`` ids): one query's positive and its negatives.

- :func:`rank_loss`: softmax cross-entropy over each group on ``s / tau``, the positive as target,
  averaged over positives;
- :func:`distill_loss`: BCE-with-logits of ``s / tau`` against the teacher's ``p_yes``, only where
  it is known;
- :func:`point_loss`: BCE-with-logits of ``s / tau`` against 1 for positives and ``neg_target``
  (0.1) for negatives, weighted 1 and 0.5, divided by the number of examples (the reference:
  ``BCEWithLogits(weight=w)``'s mean) or, with ``point_normalisation="weights"``, by the sum of the
  weights (a weighted mean);
- :func:`reranker_loss`: ``rank + lambda_distill * distill + lambda_point * point`` over the groups
  that hold a positive and a negative. A group with no positive or no negative trains on plain
  BCE(s, label) alone (the reference, ``fallback="bce"``), or with ``fallback="bce_and_terms"`` on
  that BCE plus the distillation and point terms, which then cover every example of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


# the loss settings a ``train_stage2`` config section and the CLI carry
CONFIG_KEYS = ("tau_rank", "tau_distill", "tau_point", "lambda_distill", "lambda_point")
#: named variants (config keys and CLI flags too): the reference's value first
VARIANTS = {"fallback": ("bce", "bce_and_terms"), "point_normalisation": ("items", "weights")}


@dataclass(frozen=True)
class LossWeights:
    tau_rank: float = 10.0
    tau_distill: float = 5.0
    tau_point: float = 1.0
    lambda_distill: float = 5.0
    lambda_point: float = 1.0
    neg_target: float = 0.1
    pos_weight: float = 1.0
    neg_weight: float = 0.5
    fallback: str = "bce"
    point_normalisation: str = "items"

    def __post_init__(self):
        for name, allowed in VARIANTS.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")

    @classmethod
    def from_config(cls, section: dict) -> "LossWeights":
        """The loss keys of a ``train_stage2`` config section."""
        return cls(**{name: section[name] for name in (*CONFIG_KEYS, *VARIANTS) if name in section})


def _groups(group: torch.Tensor) -> list[torch.Tensor]:
    return [torch.nonzero(group == g, as_tuple=True)[0] for g in torch.unique(group, sorted=True)]


def rank_loss(s: torch.Tensor, group: torch.Tensor, positive: torch.Tensor, tau: float) -> torch.Tensor | None:
    """Mean over positives of -log softmax(s/tau within its group)[positive]; None if no group has
    both a positive and a negative."""
    terms = []
    for index in _groups(group):
        pos = positive[index]
        if pos.all() or not pos.any():
            continue
        log_probs = torch.log_softmax(s[index] / tau, dim=0)
        terms.append(-log_probs[pos])
    return torch.cat(terms).mean() if terms else None


def mixed_groups_mask(group: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """True for examples whose group has at least one positive and one negative."""
    mask = torch.zeros_like(positive, dtype=torch.bool)
    for index in _groups(group):
        pos = positive[index]
        if pos.any() and not pos.all():
            mask[index] = True
    return mask


def distill_loss(s: torch.Tensor, teacher_p_yes: torch.Tensor, tau: float) -> torch.Tensor | None:
    """BCE-with-logits(s/tau, p_yes) over examples whose teacher p_yes is known (not NaN)."""
    known = ~torch.isnan(teacher_p_yes)
    if not known.any():
        return None
    return F.binary_cross_entropy_with_logits(s[known] / tau, teacher_p_yes[known])


def point_loss(s: torch.Tensor, positive: torch.Tensor, tau: float, neg_target: float = 0.1, pos_weight: float = 1.0,
               neg_weight: float = 0.5, normalisation: str = "items") -> torch.Tensor:
    """Weighted BCE-with-logits(s/tau, 1 | neg_target) with weights 1 / 0.5, summed and divided by
    the number of examples (``items``, the reference) or by the sum of the weights (``weights``)."""
    target = torch.where(positive, torch.ones_like(s), torch.full_like(s, neg_target))
    weight = torch.where(positive, torch.full_like(s, pos_weight), torch.full_like(s, neg_weight))
    losses = F.binary_cross_entropy_with_logits(s / tau, target, reduction="none")
    return (losses * weight).sum() / (weight.sum() if normalisation == "weights" else s.numel())


def reranker_loss(s: torch.Tensor, group: torch.Tensor, positive: torch.Tensor, teacher_p_yes: torch.Tensor,
                  weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, float]]:
    """The stage-2 loss and its parts (for logging)."""
    positive = positive.bool()
    mixed = mixed_groups_mask(group, positive)
    parts: dict[str, float] = {}
    total = s.new_zeros(())
    ranking = rank_loss(s[mixed], group[mixed], positive[mixed], weights.tau_rank) if mixed.any() else None
    if ranking is not None:
        total = total + ranking
        parts["rank"] = float(ranking.detach())
    if (~mixed).any():  # groups without a positive or without a negative: plain BCE on the label
        fallback = F.binary_cross_entropy_with_logits(s[~mixed], positive[~mixed].to(s.dtype))
        total = total + fallback
        parts["fallback"] = float(fallback.detach())
    # the reference: the other terms only where the ranking term is (a lone fallback group: BCE alone)
    terms = mixed if weights.fallback == "bce" else torch.ones_like(mixed)
    if not terms.any():
        return total, parts
    distill = distill_loss(s[terms], teacher_p_yes[terms], weights.tau_distill)
    if distill is not None and weights.lambda_distill:
        total = total + weights.lambda_distill * distill
        parts["distill"] = float(distill.detach())
    if weights.lambda_point:
        point = point_loss(s[terms], positive[terms], weights.tau_point, weights.neg_target, weights.pos_weight,
                           weights.neg_weight, weights.point_normalisation)
        total = total + weights.lambda_point * point
        parts["point"] = float(point.detach())
    return total, parts
