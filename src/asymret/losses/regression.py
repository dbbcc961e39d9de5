"""Regression loss (Reg): pull the student's vector onto the teacher's vector of the same image.

Reference form, summed over anchors b and their positive references k::

    L = − Σ_b Σ_{k ∈ P(b)} sim(a_b, r_bk)

The usual call passes K = 1 with ``refs[:, 0] = g(a)`` and ``positive`` all True, giving
−Σ_b sim(f(a_b), g(a_b)). Negatives (``positive`` False) are ignored; no labels are needed.

Relation to the distance form: for unit vectors ½‖f − g‖² = 1 − sim(f, g), so the loss equals
Σ ½‖f(a) − g(a)‖² minus a constant (1 per positive pair, i.e. B for K = 1); both have the
same gradient.
"""

from __future__ import annotations

import torch

from asymret.losses.base import TupleLoss, register_loss, similarities


@register_loss("regression")
class RegressionLoss(TupleLoss):
    """−Σ sim(a, r) over positive references; no hyperparameters."""

    def compute(
        self, anchor: torch.Tensor, refs: torch.Tensor, positive: torch.Tensor
    ) -> torch.Tensor:
        """``(B, D), (B, K, D), (B, K) bool -> ()``."""
        return -torch.where(positive, similarities(anchor, refs), 0.0).sum()
