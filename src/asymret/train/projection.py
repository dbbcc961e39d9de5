"""Closed-form start for the student's projection: ridge regression onto the teacher.

Before any gradient step, the projection ``whiten`` (C → D) is set to the ridge solution
mapping the student's pooled, L2-normalised features of the training images onto the
teacher's vectors of the same images. Asymmetric training then starts from aligned spaces
instead of a random projection (the published setting, one option away).

This start belongs to the linear head (``<arch>-gem-<d>``) only. The conv head of the paper
(``<arch>-conv<d>-gem``: 1×1 conv + ReLU before pooling) has no closed-form fit of this kind;
it starts from PyTorch's default initialisation, as published, and
:func:`check_projection_init` refuses a ridge start for it.
"""

from __future__ import annotations

import torch
from torch import nn

from asymret.errors import AsymretError
from asymret.models import RetrievalNet


def fit_ridge(
    features: torch.Tensor, targets: torch.Tensor, ridge_lambda: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares with an unpenalised bias: min ‖X Wᵀ + b − T‖² + λ' ‖W‖².

    λ' = ``ridge_lambda`` × Σᵢ‖xᵢ‖² / C, the mean diagonal entry of XᵀX, so the penalty is
    relative to the data's energy.

    Args:
        features: (N, C) inputs X.
        targets: (N, D) targets T.
        ridge_lambda: relative regularisation (≥ 0).

    Returns:
        weight (D, C) and bias (D,), float32.
    """
    if features.shape[0] != targets.shape[0] or features.shape[0] < 2:
        raise AsymretError(
            f"ridge fit needs matching rows (at least 2): {tuple(features.shape)} vs "
            f"{tuple(targets.shape)}"
        )
    x = features.double()
    t = targets.double()
    x_mean, t_mean = x.mean(0), t.mean(0)
    xc, tc = x - x_mean, t - t_mean
    channels = x.shape[1]
    penalty = ridge_lambda * x.pow(2).sum() / channels
    gram = xc.T @ xc + penalty * torch.eye(channels, dtype=x.dtype)
    weight = torch.linalg.solve(gram, xc.T @ tc).T
    bias = t_mean - weight @ x_mean
    return weight.float(), bias.float()


def check_projection_init(net: RetrievalNet, projection_init: str) -> None:
    """Refuse a ridge start for a network whose head it cannot initialise.

    Raises:
        AsymretError: ``projection_init`` is ``ridge`` and ``net`` has the conv head.
    """
    if projection_init == "ridge" and net.config.head == "conv":
        raise AsymretError(
            f"models.projection_init=ridge fits a linear projection after pooling, but student "
            f"'{net.config.name}' has the conv head (1x1 conv before pooling); set "
            "models.projection_init=random (its published start)"
        )


class PooledFeatures(nn.Module):
    """A view of a RetrievalNet that outputs its (N, C) pooled features, before projection."""

    def __init__(self, net: RetrievalNet):
        super().__init__()
        self.net = net

    @property
    def outputdim(self) -> int:
        return self.net.pooled_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(images)


def set_projection(net: RetrievalNet, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Copy a fitted (D, C) weight and (D,) bias into the network's projection layer."""
    if net.whiten is None:
        raise AsymretError(f"{net.config.name} has no projection to initialise")
    if tuple(weight.shape) != tuple(net.whiten.weight.shape):
        raise AsymretError(
            f"projection shape {tuple(weight.shape)} does not fit {tuple(net.whiten.weight.shape)}"
        )
    with torch.no_grad():
        net.whiten.weight.copy_(weight)
        net.whiten.bias.copy_(bias)
