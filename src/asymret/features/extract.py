"""Batched descriptor extraction, and extraction into a feature store.

This module owns how images become vectors: header-only image sizes, same-size batches, the
multi-scale descriptor, the fingerprint and preprocessing record of an extraction, and
:func:`extract_to_store`, which fills a :class:`~asymret.features.store.FeatureStore` chunk by
chunk (the store's format lives in :mod:`asymret.features.store`).

Extraction (:func:`extract_vectors`). Images of a retrieval dataset have many sizes, and the
reference project feeds them one at a time so that none is distorted or padded. Here images
are grouped by their exact size after cropping and resizing, computed from the file headers
alone (:func:`resized_sizes`), and each batch holds images of one size only
(:class:`SizeBatchSampler`): the batched vectors equal the one-at-a-time vectors up to float
rounding, and come back in dataset order. Multi-scale extraction follows the reference
(cirtorch ``extract_ms``): the generalised mean, with the GeM exponent, of the vectors at each
scale, L2-normalised.

Into a store (:func:`extract_to_store`). The store's ``meta.json`` records the model (name,
config, fingerprint of the weights) and the preprocessing (imsize, scales, digest of the crop
boxes, fp32 or bf16, JPEG draft decoding when used) (:func:`extraction_meta`); resuming a
store made with other settings raises :class:`~asymret.errors.AsymretError` naming the store
and the first setting that differs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from asymret.data.image_list import ImageList
from asymret.data.images import ImageReadError, loaded_size, open_image, rescale
from asymret.data.images import thumbnail_size as thumbnail_size  # re-exported
from asymret.errors import AsymretError
from asymret.features.store import META_FILE, FeatureStore
from asymret.models.network import RetrievalNet, Teacher
from asymret.models.pooling import GeM
from asymret.models.state import hash_state_dict
from asymret.runtime import prefers_channels_last

Network = RetrievalNet | Teacher

DEFAULT_CHUNK_SIZE = 4096


# --- Sizes and batches -------------------------------------------------------------------


def resized_size(
    path: str | Path, imsize: int | None = None, bbox: Sequence[float] | None = None
) -> tuple[int, int]:
    """``(width, height)`` that ``load_image(path, imsize, bbox)`` returns, from the header only.

    A crop shrinks by its full image's factor (:func:`~asymret.data.images.crop_imsize`).
    Draft decoding (``load_image(..., draft=True)``) gives the same size
    (:func:`~asymret.data.images.loaded_size`).

    Raises:
        ImageReadError: the file is missing or not an image, or the box is empty.
    """
    path = Path(path)
    with open_image(path, "read image header") as handle:
        image_size = handle.size
    return loaded_size(path, image_size, imsize, bbox)


def resized_sizes(images: ImageList) -> list[tuple[int, int] | None]:
    """Per image, its ``(width, height)`` as the dataset will load it (headers only).

    Returns:
        One size per image; ``None`` for an unreadable image when ``images.skip_unreadable``
        (its path is then added to ``images.skipped``).

    Raises:
        ImageReadError: an unreadable image, unless ``images.skip_unreadable``.
    """
    sizes: list[tuple[int, int] | None] = []
    for index, path in enumerate(images.paths):
        bbox = images.bboxes[index] if images.bboxes is not None else None
        try:
            sizes.append(resized_size(path, images.imsize, bbox))
        except ImageReadError:
            if not images.skip_unreadable:
                raise
            _note_skipped(images, [path])
            sizes.append(None)
    return sizes


class SizeBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices whose images all have the same size.

    Images are grouped by exact size; each group is cut into batches of at most
    ``batch_size`` consecutive (in dataset order) members. Batches are ordered by their first
    index, so extraction walks through the dataset roughly in order.

    Args:
        sizes: per dataset index, the image size; ``None`` leaves the image out.
        batch_size: most images per batch.

    Attributes:
        batches: the batches, each a list of dataset indices.
    """

    def __init__(self, sizes: Sequence[tuple[int, int] | None], batch_size: int):
        if batch_size < 1:
            raise AsymretError(f"batch_size must be at least 1, got {batch_size}")
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, size in enumerate(sizes):
            if size is not None:
                groups[size].append(index)
        self.batches = sorted(
            (group[start : start + batch_size]
             for group in groups.values()
             for start in range(0, len(group), batch_size)),
            key=lambda batch: batch[0],
        )

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _SameSizeCollate:
    """Stack ``(image, index)`` items of one size; drop ``None`` (skipped unreadable) items."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = paths

    def __call__(
        self, items: list[tuple[torch.Tensor, int] | None]
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        present = [item for item in items if item is not None]
        if not present:
            return None, torch.empty(0, dtype=torch.long)
        expected = present[0][0].shape
        for image, index in present:
            if image.shape != expected:
                raise AsymretError(
                    f"{self.paths[index]}: decoded to size {tuple(image.shape[1:])} but its "
                    f"header predicted {tuple(expected[1:])}; was the file changed?"
                )
        images = torch.stack([image for image, _ in present])
        return images, torch.tensor([index for _, index in present], dtype=torch.long)


# --- Extraction --------------------------------------------------------------------------


def retrieval_net(net: Network) -> RetrievalNet:
    """The :class:`RetrievalNet` itself, unwrapping a :class:`Teacher`."""
    return net.net if isinstance(net, Teacher) else net


def multiscale_power(net: Network) -> float:
    """Multi-scale exponent, as the reference: GeM's p without a ``whiten`` layer, else 1."""
    model = retrieval_net(net)
    if isinstance(model.pool, GeM) and model.whiten is None:
        return float(model.pool.p.detach().item())
    return 1.0


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """Validate extraction scales: at least one, all positive."""
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0 or not all(math.isfinite(s) for s in scales):
        raise AsymretError(f"scales must be one or more positive numbers, got {list(scales)}")
    return scales


def multiscale_vectors(
    net: Network, images: torch.Tensor, scales: Sequence[float], power: float
) -> torch.Tensor:
    """Descriptors of a batch of same-size images at one or several scales.

    For ``scales == (1,)`` this is ``net(images)``; otherwise
    ``L2N((mean_s net(rescale(images, s))^power)^(1/power))`` (cirtorch ``extract_ms``).

    Args:
        net: the network, in eval mode.
        images: (B, 3, H, W) images in [0, 1].
        scales: image scales.
        power: exponent of the mean (see :func:`multiscale_power`).

    Returns:
        (B, D) float32 unit vectors.
    """
    if tuple(scales) == (1.0,):
        return net(images).float()
    total = sum(net(rescale(images, scale)).float().pow(power) for scale in scales)
    return F.normalize((total / len(scales)).pow(1.0 / power), dim=-1)


def extract_vectors(
    net: Network,
    images: ImageList,
    *,
    batch_size: int = 32,
    scales: Sequence[float] = (1.0,),
    device: str | torch.device = "cpu",
    amp: bool = False,
    channels_last: bool | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """Descriptors of every image of a dataset, in batches of same-size images.

    The network is moved to ``device`` (and to channels-last memory format when asked) and run
    in eval mode under ``torch.no_grad``; its train/eval mode is restored afterwards. The
    returned vectors are ordinary tensors, usable as targets in a training step.

    Args:
        net: a RetrievalNet or Teacher mapping (B, 3, H, W) images in [0, 1] to (B, D).
        images: the dataset; its ``imsize`` and ``bboxes`` define the preprocessing.
        batch_size: most images per forward pass (all of one size).
        scales: image scales; several give the reference's multi-scale descriptor.
        device: where the network runs, e.g. ``"cuda"``.
        amp: bfloat16 autocast. Off by default: test vectors are fp32, as the published
            protocol (``benchmarks/precision.py`` measures what bf16 changes); training
            passes its own ``optim.amp``.
        channels_last: channels-last memory format; default on for CPU and CUDA.
        num_workers: DataLoader worker processes decoding images.
        progress: show a tqdm progress bar (stderr).

    Returns:
        (N, D) float32 unit vectors on the CPU, row ``i`` for image ``i``; rows of images
        skipped as unreadable (``images.skip_unreadable``) are NaN and their paths are in
        ``images.skipped``.

    Raises:
        ImageReadError: an unreadable image, unless ``images.skip_unreadable``.
        AsymretError: invalid scales or batch size.
    """
    scales = check_scales(scales)
    device = torch.device(device)
    amp = bool(amp)
    channels_last = prefers_channels_last(device) if channels_last is None else channels_last
    sampler = SizeBatchSampler(resized_sizes(images), batch_size)
    vectors = torch.full((len(images), net.outputdim), math.nan, dtype=torch.float32)
    loader = DataLoader(
        images,
        batch_sampler=sampler,
        collate_fn=_SameSizeCollate(images.paths),
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    was_training = net.training
    net.eval().to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    power = multiscale_power(net) if len(scales) > 1 else 1.0
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    try:
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp),
            tqdm(total=sum(map(len, sampler.batches)), desc="extract", unit="img",
                 disable=not progress) as bar,
        ):
            for batch_indices, (batch, indices) in zip(sampler.batches, loader, strict=True):
                if len(indices) < len(batch_indices):
                    missing = sorted(set(batch_indices) - set(indices.tolist()))
                    _note_skipped(images, [images.paths[i] for i in missing])
                if batch is not None:
                    batch = batch.to(device, non_blocking=True, memory_format=memory_format)
                    vectors[indices] = multiscale_vectors(net, batch, scales, power).cpu()
                bar.update(len(batch_indices))
    finally:
        net.train(was_training)
    return vectors


def _note_skipped(images: ImageList, paths: Sequence[Path]) -> None:
    """Add paths to ``images.skipped`` once (a worker process's own list is not shared)."""
    known = set(images.skipped)
    images.skipped.extend(path for path in paths if path not in known)


# --- Fingerprints ------------------------------------------------------------------------


def model_fingerprint(net: Network) -> str:
    """``"sha256:<hex>"`` over the state dict: every key, dtype, shape and tensor's bytes."""
    hasher = hashlib.sha256()
    hash_state_dict(hasher, retrieval_net(net).state_dict())
    return "sha256:" + hasher.hexdigest()


def _json_digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(value).encode()).hexdigest()


def extraction_meta(
    net: Network, images: ImageList, scales: Sequence[float], *, amp: bool = False
) -> dict:
    """What a store records about how its vectors were made (and refuses to mix).

    Returns:
        ``{"model": {"name", "config", "fingerprint"}, "preprocessing": {"imsize", "scales",
        "crop_boxes", "precision"}}``; ``crop_boxes`` is ``None`` without boxes, else a digest
        of them, and then ``crop_resize: "image"`` records that crops shrink by their full
        image's factor (:func:`~asymret.data.images.crop_imsize`) and ``crop_outside:
        "clip"`` that boxes reaching outside their image are clipped to it, not padded
        (:func:`~asymret.data.images.crop_pixels`); ``precision`` is
        ``"fp32"`` or ``"bf16"`` (``amp``). With ``images.draft`` (JPEG draft decoding) it
        also holds ``decode: "draft"``; without, there is no ``decode`` key, as in every store
        made before draft decoding existed, so those stay valid and neither kind of store
        accepts the other's vectors.
    """
    model = retrieval_net(net)
    boxes = None
    if images.bboxes is not None and any(box is not None for box in images.bboxes):
        boxes = [None if box is None else [float(v) for v in box] for box in images.bboxes]
    return {
        "model": {
            "name": model.config.name,
            "config": model.config.to_dict(),
            "fingerprint": model_fingerprint(model),
        },
        "preprocessing": {
            "imsize": images.imsize,
            "scales": list(check_scales(scales)),
            "crop_boxes": None if boxes is None else _json_digest(boxes),
            **({} if boxes is None else {"crop_resize": "image", "crop_outside": "clip"}),
            "precision": "bf16" if amp else "fp32",
            **({"decode": "draft"} if images.draft else {}),
        },
    }


def _comparable_meta(requested: dict, stored: Mapping[str, Any]) -> dict:
    """``requested`` without ``precision`` for a store written before it was recorded: every
    such store was extracted in fp32 unless asked otherwise (CPU default)."""
    stored_preprocessing = stored.get("preprocessing")
    if (
        isinstance(stored_preprocessing, dict)
        and "precision" not in stored_preprocessing
        and requested["preprocessing"]["precision"] == "fp32"
    ):
        preprocessing = dict(requested["preprocessing"])
        del preprocessing["precision"]
        return {**requested, "preprocessing": preprocessing}
    return requested


# --- Into a store ------------------------------------------------------------------------


def extract_to_store(
    net: Network,
    images: ImageList,
    ids: Sequence[str],
    path: str | Path,
    *,
    scales: Sequence[float] = (1.0,),
    dtype: str = "float32",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    amp: bool = False,
    channels_last: bool | None = None,
    num_workers: int = 0,
    progress: bool = True,
    verify: bool | str = "sample",
) -> FeatureStore:
    """Extract descriptors into a feature store, chunk by chunk, resuming where it stopped.

    A new directory gets a new store. An existing store must match the network's weights and
    config, the preprocessing (``images.imsize``, ``scales``, ``images.bboxes``, ``amp``,
    ``images.draft``), ``ids``, dimension and ``dtype``; extraction then resumes after its last
    completed chunk, and a complete store is returned untouched. Progress is recorded after
    every chunk of ``chunk_size`` images, so a killed run loses at most one chunk.

    Args:
        net: a RetrievalNet or Teacher.
        images: the dataset, row ``i`` of the store is image ``i``.
        ids: one id per image (e.g. the revisitop name or the SfM-120k cid).
        path: store directory.
        scales: extraction scales (see :func:`extract_vectors`).
        dtype: storage dtype, ``"float32"`` or ``"float16"``.
        chunk_size: images extracted between two progress records.
        batch_size, device, amp, channels_last, num_workers: as :func:`extract_vectors`.
        progress: show a tqdm progress bar (stderr).
        verify: how much of a complete store found at ``path`` to check before it is
            reused, one of :data:`~asymret.features.store.VERIFY_LEVELS` (it was perhaps
            changed since it was written).

    Returns:
        The complete store, opened read-only.

    Raises:
        AsymretError: the store exists but was made otherwise (naming the setting), its files
            are corrupt, or the arguments are invalid.
        ImageReadError: an unreadable image, unless ``images.skip_unreadable``.
    """
    path = Path(path)
    if len(ids) != len(images):
        raise AsymretError(f"{path}: {len(ids)} ids for {len(images)} images")
    if chunk_size < 1:
        raise AsymretError(f"chunk_size must be at least 1, got {chunk_size}")
    meta = extraction_meta(net, images, scales, amp=amp)
    if (path / META_FILE).exists():
        store = FeatureStore.open(path, writable=True, verify=verify)
        store.check_matches(_comparable_meta(meta, store.meta), ids, dim=net.outputdim,
                            dtype=dtype)
    else:
        store = FeatureStore.create(path, ids, net.outputdim, meta, dtype=dtype)
    with tqdm(total=store.count, initial=store.complete_rows, desc=f"extract {path.name}",
              unit="img", disable=not progress) as bar:
        for start in range(store.complete_rows, store.count, chunk_size):
            stop = min(start + chunk_size, store.count)
            chunk = images.subset(range(start, stop))
            vectors = extract_vectors(
                net, chunk, batch_size=batch_size, scales=scales, device=device, amp=amp,
                channels_last=channels_last, num_workers=num_workers, progress=False,
            )
            _note_skipped(images, chunk.skipped)
            store.write(start, vectors)
            bar.update(stop - start)
    # A reused store was verified when it was opened above; a store finished here has just
    # had its checksums computed from the file.
    return FeatureStore.open(path, verify="size")
