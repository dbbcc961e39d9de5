"""Triplet loss over all (positive, negative) pairs of each anchor.

Reference form (cirtorch / AML), with squared Euclidean distances::

    L(a) = Σ_{p ∈ P(a)} Σ_{n ∈ N(a)} [d(a, p)² − d(a, n)² + m]₊

summed over anchors. Default m = 0.1. An anchor with no positive or no negative adds 0.

Relation to the similarity form of the slides: for unit vectors d² = 2 − 2·sim, so each
term is [2·(sim(a, n) − sim(a, p)) + m]₊ = 2·[sim(a, n) − sim(a, p) + m/2]₊, i.e. a
similarity triplet loss with margin m/2, scaled by 2.
"""

from __future__ import annotations

import torch

from asymret.losses.base import TupleLoss, check_positive, register_loss, squared_distances


@register_loss("triplet")
class TripletLoss(TupleLoss):
    """Σ_(p,n) [d(a,p)² − d(a,n)² + m]₊ over every positive × negative pair, summed over anchors.

    Args:
        margin: m >= 0.
    """

    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        self.margin = check_positive("triplet margin", margin, allow_zero=True)

    def compute(
        self, anchor: torch.Tensor, refs: torch.Tensor, positive: torch.Tensor
    ) -> torch.Tensor:
        """``(B, D), (B, K, D), (B, K) bool -> ()``; uses ``(B, K, K)`` memory."""
        squared = squared_distances(anchor, refs)
        # [b, p, n] = d(a_b, r_bp)² − d(a_b, r_bn)² + m, kept where p is positive and n negative.
        hinge = (squared.unsqueeze(2) - squared.unsqueeze(1) + self.margin).clamp(min=0)
        is_triplet = positive.unsqueeze(2) & ~positive.unsqueeze(1)
        return torch.where(is_triplet, hinge, 0.0).sum()

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
