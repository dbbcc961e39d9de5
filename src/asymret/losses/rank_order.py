"""Rank-order preservation (after ROP: Wu et al., ICLR 2023, "A General Rank Preserving
Framework for Asymmetric Image Retrieval", in the form of the D3still repository's
re-implementation, SCY-X/D3still ``ROP``).

Each anchor a has a context of teacher vectors c_1..c_n: its K nearest teacher neighbours
g(x_1)..g(x_K) (the anchor excluded, :mod:`asymret.neighbours`), preceded by g(a) with
``include_self`` (default; n = K + 1). With the teacher's similarities t_i = g(a)·c_i and the
student's asymmetric ones s_j = f(a)·c_j, the teacher says whether c_j ranks above c_i by the
step H(t_j − t_i) (H(0) = ½), and the student by where s_j falls in the teacher's list,
σ((s_j − t_i)/τ)::

    L(a) = (1/n²) Σ_i Σ_j ( H(t_j − t_i) − σ((s_j − t_i) / τ) )²

averaged over anchors. A student keeps the teacher's order of a's neighbours, and puts each
similarity in the teacher's list where the teacher puts it (the diagonal i = j asks for
s_j = t_j), so the loss also aligns f(a) with g(a). Only f(a) carries a gradient.

Defaults τ = 0.1 (``ROP.TEMPERATURE`` of the re-implementation) and K = 96 (``ROP.TOPK``; set
by ``mining.neighbours``). Unlike the re-implementation, every (i, j) pair weighs the same:
its rank weights (a softmax of 0.2·t times the position) are nearly the position alone and
are not in a formula we could check against the paper. The teacher's indicator is the exact
step, the limit of the re-implementation's σ(·/10⁻⁶).
"""

from __future__ import annotations

import torch

from asymret.losses.base import NeighbourLoss, check_positive, context_vectors, register_loss


@register_loss("rank_order")
class RankOrderLoss(NeighbourLoss):
    """Mean over anchors of (1/n²) Σ_ij (H(t_j − t_i) − σ((s_j − t_i)/τ))².

    Args:
        temperature: τ > 0, the sharpness of the student's soft rank indicator.
        include_self: put g(a) first in the context, beside the K neighbours.
    """

    def __init__(self, temperature: float = 0.1, include_self: bool = True) -> None:
        super().__init__()
        self.temperature = check_positive("rank_order temperature", temperature)
        self.include_self = bool(include_self)

    def compute(
        self, anchor: torch.Tensor, teacher_anchor: torch.Tensor, neighbours: torch.Tensor
    ) -> torch.Tensor:
        """``(B, D), (B, D), (B, K, D) -> ()``."""
        context = context_vectors(teacher_anchor, neighbours, self.include_self)
        teacher = torch.einsum("bd,bkd->bk", teacher_anchor, context)  # t_i
        student = torch.einsum("bd,bkd->bk", anchor, context)  # s_j
        # [b, i, j]: compares column j's similarity with the teacher's t_i of row i.
        teacher_above = torch.heaviside(
            teacher.unsqueeze(1) - teacher.unsqueeze(2), teacher.new_tensor(0.5)
        )
        student_above = torch.sigmoid((student.unsqueeze(1) - teacher.unsqueeze(2))
                                      / self.temperature)
        return (teacher_above - student_above).pow(2).mean(dim=(1, 2)).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, include_self={self.include_self}"
