"""DarkRank (Chen et al., AAAI 2018), hard version: listwise transfer of the teacher's ranking.

Scores are s(i, j) = −α · d(x_i, x_j)^β for the student and the teacher, with d the
Euclidean distance (sqrt(d² + eps), ``DISTANCE_EPS``). For each anchor i, π = (π_1..π_L) are
the teacher's L highest-scoring neighbours, excluding i itself (masked by index, not assumed
first in the sort), in the teacher's order. The student's log-likelihood of that order under
the Plackett–Luce model is::

    log P(π | s) = Σ_{t=1}^{L} [ s(i, π_t) − logsumexp(s(i, π_t), ..., s(i, π_L)) ]

computed with the *student's* scores, and the loss is the mean over anchors of −log P.
Defaults α = 3, β = 3, L = 4; L is lowered to B − 1 for small batches. Only the teacher's
ordering is used, so no gradient reaches the teacher.

Relation to similarities: for unit vectors d = sqrt(2 − 2·sim), so the score is a
decreasing function of distance and an increasing one of similarity.
"""

from __future__ import annotations

import torch

from asymret.errors import AsymretError
from asymret.losses.base import (
    RelationalLoss,
    check_positive,
    distances_from_squared,
    register_loss,
    squared_distances,
)


@register_loss("darkrank")
class DarkRankLoss(RelationalLoss):
    """Mean over anchors of the Plackett–Luce negative log-likelihood of the teacher's top-L.

    Args:
        alpha: α > 0, score scale.
        beta: β > 0, distance exponent.
        list_length: L >= 1, teacher neighbours per anchor (at most B − 1 are used).
    """

    def __init__(self, alpha: float = 3.0, beta: float = 3.0, list_length: int = 4) -> None:
        super().__init__()
        self.alpha = check_positive("darkrank alpha", alpha)
        self.beta = check_positive("darkrank beta", beta)
        if isinstance(list_length, bool) or not isinstance(list_length, int) or list_length < 1:
            raise AsymretError(f"darkrank list_length must be an integer >= 1, got {list_length!r}")
        self.list_length = list_length

    def _scores(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> (B, B)`` scores −α·d^β."""
        every_other = batch.unsqueeze(0).expand(batch.shape[0], -1, -1)
        distances = distances_from_squared(squared_distances(batch, every_other))
        return -self.alpha * distances.pow(self.beta)

    def compute(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``(B, D), (B, D) -> ()`` with B >= 2."""
        size = student.shape[0]
        length = min(self.list_length, size - 1)
        with torch.no_grad():
            self_pair = torch.eye(size, dtype=torch.bool, device=teacher.device)
            teacher_scores = self._scores(teacher).masked_fill(self_pair, float("-inf"))
            teacher_order = teacher_scores.topk(length, dim=1, sorted=True).indices  # (B, L)
        ordered = self._scores(student).gather(1, teacher_order)  # (B, L)
        # [b, t] = logsumexp of ordered[b, t:], the normaliser of the t-th Plackett–Luce choice.
        normalisers = ordered.flip(1).logcumsumexp(dim=1).flip(1)
        log_likelihood = (ordered - normalisers).sum(dim=1)
        return -log_likelihood.mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, list_length={self.list_length}"
