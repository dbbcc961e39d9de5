"""Retrieval network: timm trunk → [conv head] → global pooling → L2N → [linear layer] → L2N.

The layout follows the reference project (cirtorch's ``ImageRetrievalNet``): the pooled
vector is L2-normalised, then an optional linear layer (``whiten``: learned whitening, or the
student's projection to the teacher's dimension) is applied and the result normalised again.
The network normalises its input with its own mean/std, so every network — student or
teacher — takes RGB images in [0, 1].

A student whose trunk has C channels reaches the teacher's dimension d with one of two heads
(:attr:`ModelConfig.head`):

- ``"linear"`` (the default; name ``<arch>-<pooling>-<d>``, e.g. ``efficientnet_b3-gem-2048``):
  trunk map (N, C, h, w) → pooling → L2N → ``whiten`` = Linear(C, d) with bias → L2N. The
  projection acts on one vector per image, so it costs almost nothing, and it can start from
  the closed-form ridge fit of the teacher's vectors (:mod:`asymret.train.projection`).
- ``"conv"`` (name ``<arch>-conv<d>-<pooling>``, e.g. ``tf_efficientnet_b3-conv2048-gem``):
  trunk map → ``head`` = Conv2d(C, d, 1×1, no bias) → ReLU → pooling (N, d) → L2N. This is
  **the head of the paper** (Budnik & Avrithis, CVPR 2021; reference ``budnikm/aml``
  ``lib/networks/imageretrievalnet.py``: timm ``tf_efficientnet_b3`` children[:-2], then
  ``Conv2d(1536, dim, 1, bias=False)`` and ``ReLU`` before GeM, no layer after pooling). The
  same C·d weights as the linear head, but applied at every position of the map, so it adds
  2·C·d·h·w FLOPs (EN-B3, d = 2048, 362×362 input, as on the slides: 10.70 M → 13.84 M
  parameters, 5.36 → 6.26 GFLOPs; see :mod:`asymret.models.complexity`), and the ReLU keeps
  GeM's input non-negative. It starts from PyTorch's default Conv2d initialisation, as
  published. Its ``whiten`` layer is absent, so learned whitening can still be folded in
  later; that layer's dimension is then :attr:`ModelConfig.whiten_dim` (name
  ``<arch>-conv<d>-<pooling>-<d'>``).

In a name, the trailing ``-<number>`` is always the linear layer after pooling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import timm
import torch
import torch.nn.functional as F
from torch import nn

from asymret.models.frozen_trunk import ActivationCache, prefix_identity, split_trunk
from asymret.models.pooling import create_pooling

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("linear", "conv")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`RetrievalNet` (saved as ``config.json``).

    Attributes:
        arch: timm architecture of the trunk, e.g. ``"resnet101"``.
        pooling: ``"gem"``, ``"mac"`` or ``"spoc"``.
        dim: the student head's output dimension. Linear head: the projection after pooling,
            ``None`` for none (D = trunk channels). Conv head: the 1×1 convolution's output
            channels (required).
        gem_p: initial GeM exponent.
        mean, std: input normalisation, per RGB channel, for images in [0, 1].
        head: ``"linear"`` (projection after pooling) or ``"conv"`` (1×1 conv + ReLU on the
            feature map, before pooling: the published student); see the module docstring.
        whiten_dim: conv head only: output dimension of a linear layer after pooling (learned
            whitening folded into the network), ``None`` for none. With the linear head that
            layer is the projection, of dimension ``dim``.
    """

    arch: str
    pooling: str = "gem"
    dim: int | None = None
    gem_p: float = 3.0
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    head: str = "linear"
    whiten_dim: int | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be 3 values with std > 0: {self.mean}, {self.std}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.dim is not None and self.dim <= 0:
            raise ValueError(f"{self.head} head dimension must be positive, got {self.dim}")
        if self.head == "conv" and self.dim is None:
            raise ValueError("the conv head needs dim (its output channels)")
        if self.whiten_dim is not None:
            if self.head != "conv":
                raise ValueError(
                    "whiten_dim is for the conv head; the linear head's layer after pooling "
                    "has dimension dim"
                )
            if self.whiten_dim <= 0:
                raise ValueError(f"whiten_dim must be positive, got {self.whiten_dim}")

    @property
    def name(self) -> str:
        """Registry-style name, e.g. ``efficientnet_b3-gem-2048`` or
        ``tf_efficientnet_b3-conv2048-gem``."""
        if self.head == "conv":
            return f"{self.arch}-conv{self.dim}-{self.pooling}" + (
                f"-{self.whiten_dim}" if self.whiten_dim else ""
            )
        return f"{self.arch}-{self.pooling}" + (f"-{self.dim}" if self.dim else "")

    @property
    def linear_dim(self) -> int | None:
        """Output dimension of the linear layer after pooling (``whiten``); ``None`` for none."""
        return self.dim if self.head == "linear" else self.whiten_dim

    def with_linear_dim(self, dim: int) -> ModelConfig:
        """This config with a linear layer of output ``dim`` after pooling (e.g. whitening)."""
        if self.head == "linear":
            return replace(self, dim=dim)
        return replace(self, whiten_dim=dim)

    def to_dict(self) -> dict:
        """JSON-ready fields. ``head`` and ``whiten_dim`` are left out at their defaults, so a
        linear-head config gives the same dict (and feature-store metadata) as before they
        existed."""
        data = {**asdict(self), "mean": list(self.mean), "std": list(self.std)}
        if self.head == "linear":
            del data["head"], data["whiten_dim"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """The config saved by :meth:`to_dict` (e.g. a ``config.json``).

        Raises:
            TypeError, ValueError: a field of the wrong type or out of range.
        """
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key, expected, optional in (("arch", str, False), ("pooling", str, False),
                                        ("head", str, False), ("dim", int, True),
                                        ("whiten_dim", int, True), ("gem_p", (int, float), False)):
            value = known.get(key)
            if key not in known or (value is None and optional):
                continue
            if isinstance(value, bool) or not isinstance(value, expected):
                raise TypeError(f"{key}={value!r} has the wrong type")
        if "gem_p" in known and not (math.isfinite(known["gem_p"]) and known["gem_p"] > 0):
            raise ValueError(f"gem_p must be a positive number, got {known['gem_p']}")
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


class ConvHead(nn.Module):
    """The published student head: 1×1 convolution without bias, then ReLU, on the map.

    Args:
        in_channels: C, the trunk's channels.
        dim: d, the output channels (the teacher's dimension).
    """

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        # PyTorch's default Conv2d initialisation, as the reference's nn.Conv2d.
        self.conv = nn.Conv2d(in_channels, dim, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) trunk map → (N, d, h, w) non-negative map."""
        return F.relu(self.conv(x))


class RetrievalNet(nn.Module):
    """Global-descriptor network for image retrieval.

    Submodules: ``features`` (the timm trunk), ``head`` (:class:`ConvHead` with the conv head,
    else ``None``), ``pool``, ``whiten`` (the linear layer after pooling, or ``None``).

    Args:
        config: architecture, head, pooling, dimensions and input normalisation.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.features = create_trunk(config.arch)
        self.head = ConvHead(self.trunk_dim, config.dim) if config.head == "conv" else None
        self.pool = create_pooling(config.pooling, config.gem_p)
        linear_dim = config.linear_dim
        self.whiten = nn.Linear(self.pooled_dim, linear_dim) if linear_dim else None
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
    def pooled_dim(self) -> int:
        """Dimension of the pooled vector, the input of ``whiten``: d with the conv head, else C."""
        return self.config.dim if self.config.head == "conv" else self.trunk_dim

    @property
    def outputdim(self) -> int:
        """Dimension D of the descriptors."""
        return self.config.linear_dim or self.pooled_dim

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
        """(N, 3, H, W) images in [0, 1] → (N, :attr:`pooled_dim`) unit pooled vectors, after
        the conv head (if any) and before ``whiten``."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        x = self.feature_map(x)
        if self.head is not None:
            x = self.head(x)
        return F.normalize(self.pool(x), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [0, 1] → (N, D) L2-normalised descriptors."""
        vectors = self.pooled(images)
        if self.whiten is not None:
            vectors = F.normalize(self.whiten(vectors), dim=-1)
        return vectors

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimiser groups as the reference trains: GeM p at 10× lr without weight decay.

        The conv head's weight is in the trunk's group (lr, weight decay). Parameters of a
        frozen trunk prefix (:meth:`freeze_trunk`) are left out.
        """
        trainable = [p for p in self.features.parameters() if p.requires_grad]
        if self.head is not None:
            trainable += list(self.head.parameters())
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

