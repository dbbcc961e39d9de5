"""Relational asymmetric metric learning (RAML; Suma & Tolias, WACV 2023, "Large-to-small
image resolution asymmetry in deep metric learning").

For a batch x_1..x_B embedded by the student (f_i) and the teacher (g_i), with
S^{ft}_{ij} = f_i·g_j, S^{ff}_{ij} = f_i·f_j and S^{gg}_{ij} = g_i·g_j::

    L = (1/B) Σ_i (1 − f_i·g_i)²
      + λ_1 · (1/(B(B−1))) Σ_{i≠j} (S^{ft}_{ij} − S^{gg}_{ij})²
      + λ_2 · (1/(B(B−1))) Σ_{i≠j} (S^{ff}_{ij} − S^{gg}_{ij})²

The first (absolute) term aligns each student vector with its teacher vector; the second
transfers the teacher's relations to the asymmetric similarities, the third to the student's
own. Defaults λ_1 = 0.7482, λ_2 = 0.6778, the weights of the D3still repository's
re-implementation (SCY-X/D3still, ``RAML.LAMBDA1``/``LAMBDA2``), which also averages the
absolute term over the batch (as here), so the weights do not depend on the batch size. The
teacher side carries no gradient.
"""

from __future__ import annotations

import torch

from asymret.losses.base import RelationalLoss, check_positive, register_loss


def _off_diagonal_mean_squared(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Mean of ``(left − right)²`` over the B(B−1) off-diagonal entries of ``(B, B)`` matrices."""
    size = left.shape[0]
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=left.device)
    return (left - right)[off_diagonal].pow(2).mean()


@register_loss("raml")
class RAMLLoss(RelationalLoss):
    """(1/B) Σ(1 − f·g)² + λ_1 · MSE_{i≠j}(f·g, g·g) + λ_2 · MSE_{i≠j}(f·f, g·g).

    Args:
        cross_weight: λ_1 >= 0, weight of the student–teacher relations.
        student_weight: λ_2 >= 0, weight of the student–student relations.
    """

    def __init__(self, cross_weight: float = 0.7482, student_weight: float = 0.6778) -> None:
        super().__init__()
        self.cross_weight = check_positive("raml cross_weight", cross_weight, allow_zero=True)
        self.student_weight = check_positive(
            "raml student_weight", student_weight, allow_zero=True
        )

    def compute(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``(B, D), (B, D) -> ()`` with B >= 2."""
        teacher = teacher.detach()
        teacher_relations = teacher @ teacher.T
        absolute = (1 - (student * teacher).sum(dim=1)).pow(2).mean()
        cross = _off_diagonal_mean_squared(student @ teacher.T, teacher_relations)
        own = _off_diagonal_mean_squared(student @ student.T, teacher_relations)
        return absolute + self.cross_weight * cross + self.student_weight * own

    def extra_repr(self) -> str:
        return f"cross_weight={self.cross_weight}, student_weight={self.student_weight}"
