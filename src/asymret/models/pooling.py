"""Global pooling of a convolutional feature map into one vector per image."""

from __future__ import annotations

import torch
from torch import nn


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent p (Radenović et al.).

    ``GeM(x) = (mean_{h,w} max(x, eps)^p)^(1/p)``: p = 1 is average pooling, p → ∞ max pooling.

    Args:
        p: initial exponent (3 in the reference project).
        eps: lower clamp of the activations, keeps the power and its gradient finite.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) feature map → (N, C) pooled vectors.

        A mean over the spatial axes rather than an average pooling whose kernel is the map's
        size: a traced graph (ONNX export, :mod:`asymret.export`) then keeps H and W dynamic.
        """
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class MAC(nn.Module):
    """Maximum activation of convolutions: global max pooling, (N, C, H, W) → (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1))


class SPoC(nn.Module):
    """Sum-pooled convolutional features (average pooling), (N, C, H, W) → (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


POOLINGS = {"gem": GeM, "mac": MAC, "spoc": SPoC}


def create_pooling(name: str, gem_p: float = 3.0) -> nn.Module:
    """Build a pooling layer by name ("gem", "mac" or "spoc")."""
    if name == "gem":
        return GeM(p=gem_p)
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling '{name}'; known: {', '.join(sorted(POOLINGS))}")
    return POOLINGS[name]()
