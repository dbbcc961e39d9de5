"""Multi-similarity loss (MS; Wang et al., CVPR 2019), as written, without pair mining.

Per anchor a, with s = dot product::

    L(a) = (1/α) log(1 + Σ_{p ∈ P(a)} exp(−α (s(a, p) − λ)))
         + (1/β) log(1 + Σ_{n ∈ N(a)} exp( β (s(a, n) − λ)))

summed over anchors. Defaults α = 2, β = 40, λ = 0.5. Each log(1 + Σ exp) is a logsumexp
over the masked terms plus a zero term, so it is stable for large β and is exactly 0 for an
anchor without positives (or negatives).

Relation to the distance form: MS is defined on similarities; for unit vectors
s = 1 − d²/2, so λ = 0.5 is the similarity of vectors at distance 1.
"""

from __future__ import annotations

import torch

from asymret.losses.base import TupleLoss, check_positive, register_loss, similarities


def _log_one_plus_sum_exp(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``log(1 + Σ_k exp(logits[b, k]))`` over entries where ``keep``: ``(B, K) -> (B,)``."""
    masked = logits.masked_fill(~keep, float("-inf"))
    with_zero = torch.cat([masked.new_zeros(masked.shape[0], 1), masked], dim=1)
    return torch.logsumexp(with_zero, dim=1)


@register_loss("multi_similarity")
class MultiSimilarityLoss(TupleLoss):
    """(1/α) log(1 + Σ_p e^{−α(s−λ)}) + (1/β) log(1 + Σ_n e^{β(s−λ)}), summed over anchors.

    Args:
        alpha: α > 0, weight of positive similarities.
        beta: β > 0, weight of negative similarities.
        lam: λ, the similarity threshold.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 40.0, lam: float = 0.5) -> None:
        super().__init__()
        self.alpha = check_positive("multi_similarity alpha", alpha)
        self.beta = check_positive("multi_similarity beta", beta)
        self.lam = float(lam)

    def compute(
        self, anchor: torch.Tensor, refs: torch.Tensor, positive: torch.Tensor
    ) -> torch.Tensor:
        """``(B, D), (B, K, D), (B, K) bool -> ()``."""
        shifted = similarities(anchor, refs) - self.lam
        positive_term = _log_one_plus_sum_exp(-self.alpha * shifted, positive) / self.alpha
        negative_term = _log_one_plus_sum_exp(self.beta * shifted, ~positive) / self.beta
        return (positive_term + negative_term).sum()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, lam={self.lam}"
