"""Contrastive loss (Contr), and Contr⁺ through :func:`~asymret.losses.with_self_positive`.

Reference form (cirtorch / AML), per anchor a with references r of which P(a) are positives
and N(a) negatives::

    L(a) = Σ_{p ∈ P(a)} ½ d(a, p)²  +  Σ_{n ∈ N(a)} ½ [m − d(a, n)]₊²

with d the Euclidean distance, and the batch loss the sum over anchors. Default m = 0.7.

Relation to the similarity form of the slides: for unit vectors d² = 2 − 2·sim, so the
positive term is 1 − sim(a, p) and a negative contributes only while d < m, i.e.
sim(a, n) > 1 − m²/2 (= 0.755 for m = 0.7).

Asymmetric training passes teacher vectors g(x) as ``refs``. Contr⁺ also adds g(a) as a
positive of f(a): ``loss(f_a, *with_self_positive(g_a, refs, positive))``.
"""

from __future__ import annotations

import torch

from asymret.losses.base import (
    TupleLoss,
    check_positive,
    distances_from_squared,
    register_loss,
    squared_distances,
)


@register_loss("contrastive")
class ContrastiveLoss(TupleLoss):
    """Σ_p ½ d(a,p)² + Σ_n ½ [m − d(a,n)]₊², summed over anchors.

    Args:
        margin: m > 0, the distance beyond which negatives cost nothing.
    """

    def __init__(self, margin: float = 0.7) -> None:
        super().__init__()
        self.margin = check_positive("contrastive margin", margin)

    def compute(
        self, anchor: torch.Tensor, refs: torch.Tensor, positive: torch.Tensor
    ) -> torch.Tensor:
        """``(B, D), (B, K, D), (B, K) bool -> ()``."""
        squared = squared_distances(anchor, refs)
        negative_hinge = (self.margin - distances_from_squared(squared)).clamp(min=0)
        per_pair = torch.where(positive, 0.5 * squared, 0.5 * negative_hinge.pow(2))
        return per_pair.sum()

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
