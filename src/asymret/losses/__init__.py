"""Metric-learning and distillation losses, symmetric or asymmetric by what the caller passes.

Tuple losses (``loss(anchor, refs, positive)``, summed over anchors): ``contrastive``,
``triplet``, ``multi_similarity``, ``regression``. Relational losses
(``loss(student, teacher)``): ``rkd``, ``darkrank``, ``raml``. Neighbour losses
(``loss(anchor, teacher_anchor, neighbours)``, averaged over anchors): ``csd``,
``rank_order``. Contr⁺ is ``contrastive`` called on :func:`with_self_positive`'s output.
Weighted sums of any of them are named by one string, ``"contrastive + 0.5*csd"``
(:class:`LossSum`). New losses join with ``@register_loss("name")``.
"""

from asymret.losses.base import (
    DISTANCE_EPS,
    NeighbourLoss,
    RelationalLoss,
    TupleLoss,
    build_loss,
    list_losses,
    loss_class,
    loss_parameters,
    register_loss,
    with_self_positive,
)
from asymret.losses.composite import (
    LossInputs,
    LossKind,
    LossSum,
    LossTerm,
    loss_kind,
    parse_loss_spec,
    term_params,
)
from asymret.losses.contrastive import ContrastiveLoss
from asymret.losses.csd import CSDLoss
from asymret.losses.darkrank import DarkRankLoss
from asymret.losses.multi_similarity import MultiSimilarityLoss
from asymret.losses.raml import RAMLLoss
from asymret.losses.rank_order import RankOrderLoss
from asymret.losses.regression import RegressionLoss
from asymret.losses.rkd import RKDLoss
from asymret.losses.triplet import TripletLoss

__all__ = [
    "DISTANCE_EPS",
    "CSDLoss",
    "ContrastiveLoss",
    "DarkRankLoss",
    "LossInputs",
    "LossKind",
    "LossSum",
    "LossTerm",
    "MultiSimilarityLoss",
    "NeighbourLoss",
    "RAMLLoss",
    "RKDLoss",
    "RankOrderLoss",
    "RegressionLoss",
    "RelationalLoss",
    "TripletLoss",
    "TupleLoss",
    "build_loss",
    "list_losses",
    "loss_class",
    "loss_kind",
    "loss_parameters",
    "parse_loss_spec",
    "register_loss",
    "term_params",
    "with_self_positive",
]
