"""Contextual similarity distillation (CSD; Wu et al., CVPR 2022, "Contextual Similarity
Distillation for Asymmetric Image Retrieval").

Each anchor a is compared with its context: the teacher's vectors c_0..c_K, where c_1..c_K
= g(x_1)..g(x_K) are a's K nearest teacher neighbours in the whole training set's teacher
bank (the anchor itself excluded, :mod:`asymret.neighbours`) and, with ``include_self``
(default), c_0 = g(a). The teacher's and the student's contextual similarities are::

    p_k = softmax_k( g(a)·c_k / τ_g )          q_k = softmax_k( f(a)·c_k / τ_s )

and the loss is the mean over anchors of KL(p ‖ q) = Σ_k p_k (log p_k − log q_k). The teacher
side is fixed: only f(a) carries a gradient.

Defaults K = 96 and τ_g = 0.01, the values of the D3still repository's re-implementation
(SCY-X/D3still, ``CSD.TOPK`` and ``CSD.TEMPERATURE_GALLERY``; the CSD paper releases no
code). That re-implementation ranks the anchor's own teacher vector first (its similarity 1
is the largest), which is the paper's "first-order feature vector preserving" part; hence
``include_self`` on by default. τ_s = τ_g = 0.01 by default, not the re-implementation's
τ_s = 1: with equal temperatures f(a) = g(a) gives p = q, a zero loss, so a student that
copies the teacher is a minimum, as asymmetric retrieval needs. K is set by the neighbour
mining (``mining.neighbours``), not by the loss.
"""

from __future__ import annotations

import torch

from asymret.losses.base import NeighbourLoss, check_positive, context_vectors, register_loss


@register_loss("csd")
class CSDLoss(NeighbourLoss):
    """Mean over anchors of KL(softmax(g(a)·c/τ_g) ‖ softmax(f(a)·c/τ_s)) over a's context.

    Args:
        teacher_temperature: τ_g > 0.
        student_temperature: τ_s > 0.
        include_self: put g(a) first in the context, beside the K neighbours.
    """

    def __init__(
        self,
        teacher_temperature: float = 0.01,
        student_temperature: float = 0.01,
        include_self: bool = True,
    ) -> None:
        super().__init__()
        self.teacher_temperature = check_positive("csd teacher_temperature", teacher_temperature)
        self.student_temperature = check_positive("csd student_temperature", student_temperature)
        self.include_self = bool(include_self)

    def compute(
        self, anchor: torch.Tensor, teacher_anchor: torch.Tensor, neighbours: torch.Tensor
    ) -> torch.Tensor:
        """``(B, D), (B, D), (B, K, D) -> ()``."""
        context = context_vectors(teacher_anchor, neighbours, self.include_self)
        teacher_logits = torch.einsum("bd,bkd->bk", teacher_anchor, context)
        student_logits = torch.einsum("bd,bkd->bk", anchor, context)
        log_p = torch.log_softmax(teacher_logits / self.teacher_temperature, dim=1)
        log_q = torch.log_softmax(student_logits / self.student_temperature, dim=1)
        return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()

    def extra_repr(self) -> str:
        return (f"teacher_temperature={self.teacher_temperature}, "
                f"student_temperature={self.student_temperature}, "
                f"include_self={self.include_self}")
