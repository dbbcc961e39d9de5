"""Partial fine-tuning: freeze a trunk's early stages and cache their activations.

Fine-tuning only the last stages of a trunk (with BatchNorm statistics frozen, as retrieval
networks are trained) leaves the early stages a fixed function of the image. Their output is
then computed once per image and kept in an :class:`ActivationCache`, keyed by the content of
the normalised input: every later epoch, mining pass, projection fit and evaluation of that
image runs only the trainable stages. On a CPU this makes training the last stage of
EfficientNet-Lite several times faster, and several students that share a trunk (as the demo's
do) share one cache.

A cache file records the identity of the frozen prefix (architecture, split point and a
digest of its weights) and is refused for any other prefix.

An entry's float rounding can depend on the batch that first computed it (a convolution's
kernel depends on the batch size), so a resumed run must find the entries it had: the trainer
saves the cache with every checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from asymret.errors import AsymretError
from asymret.models.state import hash_state_dict

CACHE_FORMAT = "asymret-activations"


def trunk_parts(trunk: nn.Module) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]]:
    """Split a timm trunk into ``(stem, stages, tail)`` whose composition is its
    ``forward_features``.

    Supports timm's EfficientNet family (EfficientNet, -Lite, MobileNetV2: stem = conv and
    BatchNorm, stages = ``blocks``, tail = head conv and BatchNorm) and ResNets (stages =
    ``layer1``–``layer4``).

    Raises:
        AsymretError: another architecture.
    """
    kind = type(trunk).__name__
    if kind == "EfficientNet":
        return [trunk.conv_stem, trunk.bn1], list(trunk.blocks), [trunk.conv_head, trunk.bn2]
    if kind == "ResNet":
        stem = [trunk.conv1, trunk.bn1, trunk.act1, trunk.maxpool]
        return stem, [trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4], []
    raise AsymretError(
        f"partial fine-tuning (trainable_stages) supports EfficientNet/MobileNetV2 and ResNet "
        f"trunks, not {kind}"
    )


def split_trunk(trunk: nn.Module, trainable_stages: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``(frozen prefix, trainable tail)`` of a trunk: the tail is its last ``trainable_stages``
    stages and the head layers after them.

    Raises:
        AsymretError: ``trainable_stages`` outside 1..number of stages, or an unsupported trunk.
    """
    stem, stages, tail = trunk_parts(trunk)
    if not 1 <= trainable_stages <= len(stages):
        raise AsymretError(
            f"trainable_stages must lie in 1..{len(stages)} for {type(trunk).__name__}, "
            f"got {trainable_stages}"
        )
    cut = len(stages) - trainable_stages
    return nn.Sequential(*stem, *stages[:cut]), nn.Sequential(*stages[cut:], *tail)


def prefix_identity(arch: str, prefix: nn.Module, trainable_stages: int) -> str:
    """Digest naming a frozen prefix: architecture, split point and every weight's bytes."""
    hasher = hashlib.sha256(f"{arch}|{trainable_stages}\n".encode())
    hash_state_dict(hasher, prefix.state_dict())
    return "sha256:" + hasher.hexdigest()


def input_key(image: torch.Tensor) -> str:
    """Content key of one normalised input (3, H, W): its shape, dtype and bytes."""
    data = image.detach().cpu().contiguous()
    hasher = hashlib.sha256(f"{tuple(data.shape)}|{data.dtype}\n".encode())
    hasher.update(data.reshape(-1).view(torch.uint8).numpy())
    return hasher.hexdigest()[:40]


class ActivationCache:
    """Output of a frozen prefix per input image, keyed by the input's content.

    Args:
        path: file the cache is read from (when it exists) and saved to; ``None`` keeps it
            in memory only.

    Attributes:
        identity: the prefix the entries belong to (set by the first :meth:`bind`).
        computed: images whose activations were computed (not found) since creation.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.identity: str | None = None
        self.entries: dict[str, torch.Tensor] = {}
        self.computed = 0
        self._saved_size = 0

    def bind(self, identity: str) -> None:
        """Attach the cache to a prefix; loads the file, which must belong to that prefix.

        Raises:
            AsymretError: the cache (in memory or on disk) belongs to another prefix, or the
                file is unreadable.
        """
        if self.identity is not None:
            if self.identity != identity:
                raise AsymretError(
                    f"activation cache {self.path or '(in memory)'} belongs to another frozen "
                    "trunk prefix (different architecture, split point or weights)"
                )
            return
        self.identity = identity
        if self.path is None or not self.path.exists():
            return
        try:
            with safe_open(str(self.path), "pt") as handle:
                meta = handle.metadata() or {}
                entries = {key: handle.get_tensor(key) for key in handle.keys()}
        except (OSError, SafetensorError, ValueError) as exc:
            raise AsymretError(f"{self.path}: unreadable activation cache ({exc})") from exc
        if meta.get("format") != CACHE_FORMAT or meta.get("identity") != identity:
            raise AsymretError(
                f"{self.path}: activation cache of another frozen trunk prefix (different "
                "architecture, split point or weights); delete it or choose another path"
            )
        self.entries = entries
        self._saved_size = len(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def activations(self, prefix: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """``prefix(inputs)``, computing only the images not cached yet.

        Args:
            prefix: the frozen prefix (eval mode), mapping (B, 3, H, W) to (B, C, h, w).
            inputs: (B, 3, H, W) normalised images of one size.

        Returns:
            (B, C, h, w) activations on ``inputs``' device, without gradient.
        """
        keys = [input_key(image) for image in inputs]
        missing = [i for i, key in enumerate(keys) if key not in self.entries]
        if missing:
            with torch.no_grad():
                computed = prefix(inputs[missing]).float().cpu()
            # Own contiguous copies (the batch may be channels-last): saved as they are.
            for row, index in enumerate(missing):
                self.entries[keys[index]] = computed[row].clone(
                    memory_format=torch.contiguous_format
                )
        self.computed += len(missing)
        stacked = torch.stack([self.entries[key] for key in keys])
        return stacked.to(inputs.device, dtype=inputs.dtype)

    def save(self) -> None:
        """Write the cache to its file atomically (nothing to do in memory or when unchanged)."""
        if self.path is None or self.identity is None or len(self.entries) == self._saved_size:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        save_file(
            self.entries,
            temporary,
            metadata={"format": CACHE_FORMAT, "identity": self.identity},
        )
        os.replace(temporary, self.path)
        self._saved_size = len(self.entries)

