"""Metric-learning and distillation losses, symmetric or asymmetric by what the caller passes.

Tuple losses (``loss(anchor, refs, positive)``, summed over anchors): ``contrastive``,
``triplet``, ``multi_similarity``, ``regression``. Relational losses
(``loss(student, teacher)``): ``rkd``, ``darkrank``. Contr⁺ is ``contrastive`` called on
:func:`with_self_positive`'s output. New losses join with ``@register_loss("name")``.
"""

from asymret.losses.base import (
    DISTANCE_EPS,
    RelationalLoss,
    TupleLoss,
    build_loss,
    list_losses,
    register_loss,
    with_self_positive,
)
from asymret.losses.contrastive import ContrastiveLoss
from asymret.losses.darkrank import DarkRankLoss
from asymret.losses.multi_similarity import MultiSimilarityLoss
from asymret.losses.regression import RegressionLoss
from asymret.losses.rkd import RKDLoss
from asymret.losses.triplet import TripletLoss

__all__ = [
    "DISTANCE_EPS",
    "ContrastiveLoss",
    "DarkRankLoss",
    "MultiSimilarityLoss",
    "RKDLoss",
    "RegressionLoss",
    "RelationalLoss",
    "TripletLoss",
    "TupleLoss",
    "build_loss",
    "list_losses",
    "register_loss",
    "with_self_positive",
]
