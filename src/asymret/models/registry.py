"""Create retrieval networks by name, read in pipeline order:
``<timm arch>[-conv<d>]-<pooling>[-<linear dim>]``.

Examples: ``resnet101-gem`` (D = 2048), ``efficientnet_b3-gem-2048`` (1536 channels pooled,
then projected to 2048 by a linear layer), ``tf_efficientnet_b3-conv2048-gem`` (the paper's
student: a 1×1 conv + ReLU from 1536 to 2048 channels on the feature map, then GeM),
``mobilenetv2_100-gem-2048``. Any timm architecture with a convolutional ``forward_features``
works; :func:`list_models` names the ones the project is built around.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import timm
import torch

from asymret.errors import AsymretError
from asymret.models.checkpoint import load_model
from asymret.models.network import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, RetrievalNet
from asymret.models.pooling import POOLINGS
from asymret.models.pretrained import offline_normalisations, offline_trunk_weights
from asymret.models.state import load_checked, read_state_dict

KNOWN_MODELS = (
    "resnet50-gem",
    "resnet101-gem",
    "resnet152-gem",
    "vgg16-gem",
    "efficientnet_b3-gem-2048",
    "tf_efficientnet_b3-conv2048-gem",
    "mobilenetv2_100-gem-2048",
    "tf_efficientnet_lite0-gem",
    "tf_efficientnet_lite1-gem",
    "tf_efficientnet_lite2-gem",
    "tf_efficientnet_lite0-gem-1280",
)

TrunkWeights = Callable[[], dict[str, torch.Tensor]]
OFFLINE_PRETRAINED: dict[str, TrunkWeights] = {}
"""timm arch → function returning ImageNet trunk weights that need no download; filled by
:func:`register_offline_weights`."""

Normalisation = tuple[tuple[float, float, float], tuple[float, float, float]]
OFFLINE_NORMALISATION: dict[str, Normalisation] = {}
"""timm arch → (mean, std) that its offline weights expect, where timm's config differs;
filled by :func:`register_offline_weights`."""

CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "pre_logits.", "last_linear.")


def register_offline_weights() -> None:
    """Register the offline ImageNet weights: EfficientNet-Lite0/1/2 from their pip packages
    (:mod:`asymret.models.pretrained`), in :data:`OFFLINE_PRETRAINED` and
    :data:`OFFLINE_NORMALISATION`.

    Importing :mod:`asymret.models` registers nothing; :func:`parse_model_name` and
    :func:`create_model` call this first. Idempotent: an arch already registered (by an
    earlier call, or by the caller) keeps its entry. No weights are read here.
    """
    for arch, weights in offline_trunk_weights().items():
        OFFLINE_PRETRAINED.setdefault(arch, weights)
    for arch, normalisation in offline_normalisations().items():
        OFFLINE_NORMALISATION.setdefault(arch, normalisation)


def list_models() -> list[str]:
    """Names of the networks the project documents and tests."""
    return list(KNOWN_MODELS)


def parse_model_name(name: str) -> ModelConfig:
    """Parse a name: ``"efficientnet_b3-gem-2048"`` → arch efficientnet_b3, GeM, linear head to
    2048; ``"tf_efficientnet_b3-conv2048-gem"`` → conv head to 2048 channels, then GeM.

    Input normalisation comes from timm's pretrained config of the architecture.
    """
    parts = name.split("-")
    linear_dim = None
    if len(parts) >= 3 and parts[-1].isdigit():
        linear_dim = int(parts.pop())
    if len(parts) < 2 or parts[-1] not in POOLINGS:
        raise AsymretError(
            f"model name '{name}' is not <arch>[-conv<dim>]-<pooling>[-<dim>] with pooling one "
            f"of {', '.join(sorted(POOLINGS))}; e.g. {', '.join(KNOWN_MODELS[:3])}"
        )
    pooling = parts.pop()
    conv_dim = None
    if len(parts) >= 2 and parts[-1].startswith("conv") and parts[-1][4:].isdigit():
        conv_dim = int(parts.pop()[4:])
        if conv_dim <= 0:
            raise AsymretError(f"model name '{name}': the conv head needs a positive dimension")
    if linear_dim is not None and linear_dim <= 0:
        raise AsymretError(f"model name '{name}': the linear layer needs a positive dimension")
    arch = "-".join(parts)
    register_offline_weights()
    if not timm.is_model(arch):
        raise AsymretError(f"model name '{name}': '{arch}' is not a timm architecture")
    cfg = timm.models.get_pretrained_cfg(arch)
    if arch in OFFLINE_NORMALISATION:
        mean, std = OFFLINE_NORMALISATION[arch]
    elif cfg is not None:
        mean, std = tuple(cfg.mean), tuple(cfg.std)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if conv_dim is not None:
        return ModelConfig(arch=arch, pooling=pooling, dim=conv_dim, mean=mean, std=std,
                           head="conv", whiten_dim=linear_dim)
    return ModelConfig(arch=arch, pooling=pooling, dim=linear_dim, mean=mean, std=std)


def create_model(
    name: str,
    pretrained: bool = False,
    pretrained_path: str | Path | None = None,
    **overrides,
) -> RetrievalNet:
    """Build a retrieval network by name, or load a saved one from its directory.

    Args:
        name: ``<arch>[-conv<d>]-<pooling>[-<dim>]``, or a directory written by
            :func:`save_model`.
        pretrained: load ImageNet weights into the trunk from an offline source.
        pretrained_path: a local trunk checkpoint (timm/torchvision names; ``.safetensors``
            or a torch file) to load instead.
        **overrides: ModelConfig fields to change, e.g. ``dim=512`` or ``gem_p=2.5``.

    Returns:
        A RetrievalNet mapping (N, 3, H, W) images in [0, 1] to (N, D) unit vectors.
    """
    if Path(name).is_dir():
        return load_model(name)
    config = parse_model_name(name)
    if overrides:
        config = ModelConfig.from_dict({**config.to_dict(), **overrides})
    net = RetrievalNet(config)
    if pretrained_path is not None:
        load_trunk_weights(net, read_state_dict(pretrained_path), str(pretrained_path))
    elif pretrained:
        register_offline_weights()
        if config.arch not in OFFLINE_PRETRAINED:
            raise AsymretError(
                f"no offline ImageNet weights for '{config.arch}' (available: "
                f"{', '.join(sorted(OFFLINE_PRETRAINED)) or 'none'}); download ImageNet weights "
                "for it yourself and pass the file as pretrained_path (training config: "
                "models.pretrained_path=FILE)"
            )
        load_trunk_weights(net, OFFLINE_PRETRAINED[config.arch](), f"offline {config.arch}")
    return net


def load_trunk_weights(net: RetrievalNet, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ImageNet-style weights into the trunk; classifier weights are ignored.

    Raises:
        AsymretError: naming missing or unexpected keys, or mismatched shapes.
    """
    trunk_state = {k: v for k, v in state_dict.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    load_checked(net.features, trunk_state, f"{source} (trunk '{net.config.arch}')")


def load_network(
    spec: str | Path, root: str | Path | None = None, pretrained: bool = False
) -> RetrievalNet:
    """A network from a saved model folder, a reference-project ``.pth`` or a model name.

    A relative path that does not exist is looked up under the data root (so
    ``networks/<file>.pth`` finds a downloaded reference network).
    """
    from asymret.data.root import resolve_data_root
    from asymret.models.checkpoint import import_reference_checkpoint

    path = Path(spec)
    if not path.exists() and not path.is_absolute():
        under_root = resolve_data_root(root) / path
        if under_root.exists():
            path = under_root
    if path.is_dir():
        return load_model(path)
    if path.is_file() or path.suffix in (".pth", ".pt"):
        return import_reference_checkpoint(path)
    return create_model(str(spec), pretrained=pretrained)
