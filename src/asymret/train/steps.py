"""One training step's pieces: batched student forward, loss inputs from tuples.

Asymmetric tuple losses need the student only for the anchors: the references are rows of
the teacher's precomputed feature bank. Symmetric ones also run the student on positives and
negatives. Relational losses (RKD, DarkRank) compare the student's vectors of every image of
the step with the teacher's vectors of the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn


def forward_by_size(
    net: nn.Module,
    images: Sequence[torch.Tensor],
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """Run ``net`` on images of several sizes, one batch per size, without resizing any.

    Args:
        net: maps (B, 3, H, W) to (B, D).
        images: N tensors (3, H_i, W_i) on the target device.
        amp: bf16 autocast for the forward pass (outputs are returned in float32).
        channels_last: channels-last memory format.

    Returns:
        (N, D) float32 outputs in the order of ``images``.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(index)
    outputs: list[torch.Tensor | None] = [None] * len(images)
    device_type = images[0].device.type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if amp else nullcontext()
    for indices in groups.values():
        batch = torch.stack([images[i] for i in indices])
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast:
            vectors = net(batch).float()
        for row, index in enumerate(indices):
            outputs[index] = vectors[row]
    return torch.stack(outputs)


def tuple_references(
    positive_vectors: torch.Tensor,
    negative_vectors: torch.Tensor,
    positives: str,
    self_vectors: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assemble a tuple loss's references and positive mask.

    Args:
        positive_vectors: (B, D) vectors of each anchor's matching image.
        negative_vectors: (B, k, D) vectors of its negatives (k may be 0).
        positives: ``pair`` (the matching image), ``self`` (g(a) instead of it), or
            ``pair+self`` (both, Contr⁺).
        self_vectors: (B, D) the anchors' teacher vectors g(a); needed for ``self`` modes.

    Returns:
        refs (B, K, D) and positive (B, K) bool, positives first (g(a) before the pair, as
        :func:`asymret.losses.with_self_positive` orders them).
    """
    if "self" in positives and self_vectors is None:
        raise ValueError(f"positives={positives} needs the anchors' teacher vectors")
    chosen = {"pair": [positive_vectors], "self": [self_vectors],
              "pair+self": [self_vectors, positive_vectors]}[positives]
    refs = torch.cat([torch.stack(chosen, dim=1), negative_vectors], dim=1)
    positive = torch.zeros(refs.shape[:2], dtype=torch.bool, device=refs.device)
    positive[:, : len(chosen)] = True
    return refs, positive
