"""Relational knowledge distillation (RKD; Park et al., CVPR 2019): distance + angle terms.

For a batch x_1..x_B embedded by the student (f) and the teacher (g):

* distance term: ψ_D(i, j) = d(x_i, x_j) / μ, with μ the mean of the B(B−1) off-diagonal
  distances of the same network (the diagonal is 0); smooth-L1 (β = 1) between the student's
  and the teacher's ``(B, B)`` matrices, averaged over all B² entries.
* angle term: ψ_A(i, j, k) = cos of the angle at x_i between x_j − x_i and x_k − x_i, each
  difference normalised as :func:`torch.nn.functional.normalize` does (a zero difference stays
  a zero vector, so ψ_A = 0 when j = i or k = i); smooth-L1 averaged over all B³ entries.

Loss = w_d · distance + w_a · angle, with reference weights w_d = 1, w_a = 2. Off-diagonal
distances are sqrt(d² + eps) (``DISTANCE_EPS``), so identical vectors give finite values and
gradients. The loss is invariant to scaling either batch. It only transfers the *shape* of the
teacher's space, not its position, which is why it fails in the asymmetric test.

Relation to similarities: for unit vectors d = sqrt(2 − 2·sim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asymret.losses.base import (
    RelationalLoss,
    check_positive,
    distances_from_squared,
    register_loss,
)


def _normalised_distances_and_angles(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, D) -> ((B, B) distances / their off-diagonal mean, (B, B, B) cosines at i)``."""
    size = batch.shape[0]
    differences = batch.unsqueeze(0) - batch.unsqueeze(1)  # [i, j] = x_j − x_i
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=batch.device)
    distances = torch.where(
        off_diagonal, distances_from_squared(differences.pow(2).sum(dim=-1)), 0.0
    )
    distances = distances / (distances.sum() / (size * (size - 1)))
    directions = F.normalize(differences, p=2, dim=2)
    cosines = torch.bmm(directions, directions.transpose(1, 2))  # [i, j, k]
    return distances, cosines


@register_loss("rkd")
class RKDLoss(RelationalLoss):
    """w_d · smooth-L1(distances) + w_a · smooth-L1(angles), teacher side without gradient.

    Args:
        distance_weight: w_d >= 0.
        angle_weight: w_a >= 0.
    """

    def __init__(self, distance_weight: float = 1.0, angle_weight: float = 2.0) -> None:
        super().__init__()
        self.distance_weight = check_positive(
            "rkd distance_weight", distance_weight, allow_zero=True
        )
        self.angle_weight = check_positive("rkd angle_weight", angle_weight, allow_zero=True)

    def compute(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``(B, D), (B, D) -> ()`` with B >= 2."""
        with torch.no_grad():
            teacher_distances, teacher_cosines = _normalised_distances_and_angles(teacher)
        student_distances, student_cosines = _normalised_distances_and_angles(student)
        distance_loss = F.smooth_l1_loss(student_distances, teacher_distances, beta=1.0)
        angle_loss = F.smooth_l1_loss(student_cosines, teacher_cosines, beta=1.0)
        return self.distance_weight * distance_loss + self.angle_weight * angle_loss

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"
