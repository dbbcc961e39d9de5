"""Retrieval network: timm trunk → global pooling → L2N → optional projection → L2N.

The layout follows the reference project (cirtorch's ``ImageRetrievalNet``): the pooled
vector is L2-normalised, then an optional linear layer (``whiten``: learned whitening, or the
student's projection to the teacher's dimension) is applied and the result normalised again.
The network normalises its input with its own mean/std, so every network — student or
teacher — takes RGB images in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import timm
import torch
import torch.nn.functional as F
from torch import nn

from asymret.models.frozen_trunk import ActivationCache, prefix_identity, split_trunk
from asymret.models.pooling import create_pooling

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`RetrievalNet` (saved as ``config.json``).

    Attributes:
        arch: timm architecture of the trunk, e.g. ``"resnet101"``.
        pooling: ``"gem"``, ``"mac"`` or ``"spoc"``.
        dim: output dimension of the projection; ``None`` for no projection (D = trunk channels).
        gem_p: initial GeM exponent.
        mean, std: input normalisation, per RGB channel, for images in [0, 1].
    """

    arch: str
    pooling: str = "gem"
    dim: int | None = None
    gem_p: float = 3.0
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be 3 values with std > 0: {self.mean}, {self.std}")
        if self.dim is not None and self.dim <= 0:
            raise ValueError(f"projection dimension must be positive, got {self.dim}")

    @property
    def name(self) -> str:
        """Registry-style name, e.g. ``efficientnet_b3-gem-2048``."""
        return f"{self.arch}-{self.pooling}" + (f"-{self.dim}" if self.dim else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


def create_trunk(arch: str) -> nn.Module:
    """A timm network whose ``forward_features`` gives the (N, C, H, W) feature map."""
    trunk = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
    if arch.startswith("vgg"):
        # As the reference project: drop the fully connected head and the last max-pooling.
        trunk.pre_logits = nn.Identity()
        trunk.features[-1] = nn.Identity()
    return trunk


class RetrievalNet(nn.Module):
    """Global-descriptor network for image retrieval.

    Args:
        config: architecture, pooling, projection dimension and input normalisation.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.features = create_trunk(config.arch)
        self.pool = create_pooling(config.pooling, config.gem_p)
        self.whiten = nn.Linear(self.trunk_dim, config.dim) if config.dim else None
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        # (frozen prefix, trainable tail) of the trunk once freeze_trunk() is called; a tuple,
        # so the modules are not registered twice in the state dict.
        self.trunk_split: tuple[nn.Sequential, nn.Sequential] | None = None
        self.activation_cache: ActivationCache | None = None

    @property
    def trunk_dim(self) -> int:
        """Channels of the trunk's feature map (dimension of the pooled vector)."""
        return int(self.features.num_features)

    @property
    def outputdim(self) -> int:
        """Dimension D of the descriptors."""
        return self.config.dim or self.trunk_dim

    def freeze_trunk(self, trainable_stages: int, cache: ActivationCache | None = None) -> None:
        """Train only the trunk's last ``trainable_stages`` stages (and what follows them).

        The earlier stages get no gradient and stay in eval mode; with a ``cache``, their
        output is computed once per distinct input image (see
        :mod:`asymret.models.frozen_trunk`). The network computes the same function as before.

        Raises:
            AsymretError: unsupported trunk, ``trainable_stages`` out of range, or a cache of
                another prefix.
        """
        prefix, tail = split_trunk(self.features, trainable_stages)
        prefix.requires_grad_(False)
        if cache is not None:
            cache.bind(prefix_identity(self.config.arch, prefix, trainable_stages))
        self.trunk_split = (prefix, tail)
        self.activation_cache = cache
        self.train(self.training)

    def train(self, mode: bool = True) -> RetrievalNet:
        """Set train/eval mode; a frozen prefix stays in eval mode."""
        super().train(mode)
        if self.trunk_split is not None:
            self.trunk_split[0].eval()
        return self

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images → (N, C, h, w) trunk features."""
        if self.trunk_split is None:
            return self.features.forward_features(x)
        prefix, tail = self.trunk_split
        if self.activation_cache is None:
            with torch.no_grad():
                activations = prefix(x)
        else:
            activations = self.activation_cache.activations(prefix, x)
        return tail(activations)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [0, 1] → (N, C) unit pooled vectors, before the projection."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return F.normalize(self.pool(self.feature_map(x)), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [0, 1] → (N, D) L2-normalised descriptors."""
        vectors = self.pooled(images)
        if self.whiten is not None:
            vectors = F.normalize(self.whiten(vectors), dim=-1)
        return vectors

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimiser groups as the reference trains: GeM p at 10× lr without weight decay.

        Parameters of a frozen trunk prefix (:meth:`freeze_trunk`) are left out.
        """
        trainable = [p for p in self.features.parameters() if p.requires_grad]
        groups = [{"params": trainable, "lr": lr, "weight_decay": weight_decay}]
        pool_params = list(self.pool.parameters())
        if pool_params:
            groups.append({"params": pool_params, "lr": 10 * lr, "weight_decay": 0.0})
        if self.whiten is not None:
            groups.append({"params": list(self.whiten.parameters()), "lr": lr,
                           "weight_decay": weight_decay})
        return groups


class Teacher(nn.Module):
    """A frozen network: always in eval mode, no gradients, its own input normalisation.

    Its vectors are targets only, so they can be precomputed once for a whole database.
    """

    def __init__(self, net: RetrievalNet):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    @property
    def config(self) -> ModelConfig:
        return self.net.config

    @property
    def outputdim(self) -> int:
        return self.net.outputdim

    def train(self, mode: bool = True) -> Teacher:
        """Stays in eval mode whatever is asked: BatchNorm statistics never change."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [0, 1] → (N, D) L2-normalised teacher descriptors."""
        return self.net(images)

