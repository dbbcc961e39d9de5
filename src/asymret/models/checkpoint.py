"""Model checkpoints: our format (safetensors + config.json) and the reference project's.

Our format is a directory holding ``model.safetensors`` (the state dict) and ``config.json``
(the :class:`ModelConfig`). The reference project (cirtorch / AML) saves one torch file with
a ``meta`` dict (architecture, pooling, whitening, mean, std, outputdim) and a ``state_dict``
whose keys are ``features.<i>.*`` (the trunk's children in order), ``pool.p`` and optionally
``whiten.weight`` / ``whiten.bias``; :func:`import_reference_checkpoint` maps it onto ours.

A reference checkpoint may also carry learned whitenings for the test protocol in
``meta['Lw'][<whitening db>]['ms' | 'ss']`` (multi-scale / single-scale), each a dict of
numpy arrays ``m`` (D × 1) and ``P`` (D × D). The file is read with
``torch.load(weights_only=True)``, which admits tensors and plain containers only; exactly the
numpy globals a plain numeric array needs are admitted besides (:data:`NUMPY_ARRAY_GLOBALS`),
so an object array or any other global is still refused before it runs. The whitenings are
kept on the imported network (:func:`reference_whitenings`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from asymret.errors import AsymretError
from asymret.files import writing
from asymret.models.network import ModelConfig, RetrievalNet
from asymret.models.state import load_checked, read_state_dict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "asymret-model"
FORMAT_VERSION = 1

# Children of torchvision's ResNet in order; cirtorch keeps the first eight as `features`.
_RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
_REFERENCE_ARCHS = {f"resnet{depth}" for depth in (18, 34, 50, 101, 152)} | {"vgg16"}
REFERENCE_WHITENINGS_ATTR = "reference_whitenings"
"""Attribute of a network imported from a reference checkpoint holding its ``meta['Lw']``."""


def _numpy_array_globals() -> list:
    """What ``torch.load(weights_only=True)`` must admit to rebuild a plain numeric array:
    ``ndarray``, ``dtype`` and the numeric dtype classes (whose state it sets), and
    ``_reconstruct`` under its numpy 2 name and the ``numpy.core`` name of older pickles."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    numeric = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
               "float16", "float32", "float64", "complex64", "complex128")
    dtype_classes = list(dict.fromkeys(type(np.dtype(name)) for name in numeric))
    return [
        np.ndarray,
        np.dtype,
        *dtype_classes,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
    ]


NUMPY_ARRAY_GLOBALS = _numpy_array_globals()
"""The numpy globals admitted when reading a reference checkpoint (plain numeric arrays)."""


def save_model(net: RetrievalNet, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (each atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    weights_tmp = directory / f".{WEIGHTS_FILE}.tmp"
    config_tmp = directory / f".{CONFIG_FILE}.tmp"
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": net.config.to_dict()}
    with writing(directory / WEIGHTS_FILE, weights_tmp, config_tmp):
        # Serialised in memory and written by Python: a full disk is then an OSError (ENOSPC)
        # that names the file, where safetensors' own writer gives an opaque error.
        weights_tmp.write_bytes(safetensors.torch.save(state))
        config_tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(weights_tmp, directory / WEIGHTS_FILE)
        os.replace(config_tmp, directory / CONFIG_FILE)
    return directory


def load_model(directory: str | Path) -> RetrievalNet:
    """Rebuild a network saved by :func:`save_model`.

    Raises:
        AsymretError: a file is missing or unreadable, or the weights do not fit the config.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    try:
        payload = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AsymretError(f"{config_path}: cannot read model config ({exc})") from exc
    if (not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME
            or not isinstance(payload.get("config"), dict)):
        raise AsymretError(f"{config_path}: not an asymret model config")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise AsymretError(f"{config_path}: model format version {version!r}; this asymret "
                           f"reads versions up to {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise AsymretError(f"{config_path}: invalid model config ({exc})") from exc
    net = _build_network(config, config_path)
    weights_path = directory / WEIGHTS_FILE
    load_checked(net, read_state_dict(weights_path), str(weights_path))
    return net


def _build_network(config: ModelConfig, source: Path) -> RetrievalNet:
    """``RetrievalNet(config)``; an architecture timm does not know or a pooling asymret
    does not have becomes an AsymretError naming ``source``."""
    try:
        return RetrievalNet(config)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise AsymretError(f"{source}: cannot build network {config.name} ({exc})") from None


def reference_trunk_key(arch: str, key: str) -> str:
    """Map a reference ``features.<i>.rest`` key to the timm trunk's key (without prefix)."""
    match = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    if match is None:
        raise AsymretError(f"unexpected trunk key '{key}'")
    index, rest = int(match.group(1)), match.group(2)
    if arch.startswith("resnet"):
        if index >= len(_RESNET_CHILDREN):
            raise AsymretError(f"unexpected trunk key '{key}' for {arch}")
        return f"{_RESNET_CHILDREN[index]}.{rest}"
    return key


def import_reference_checkpoint(path: str | Path) -> RetrievalNet:
    """Load a checkpoint of the reference project (``meta`` + ``state_dict``) as a RetrievalNet.

    Raises:
        AsymretError: unreadable file, unsupported architecture or pooling, or weights that do
            not fit (the message names the missing / unexpected keys or the wrong dimension).
    """
    path = Path(path)
    if not path.is_file():
        raise AsymretError(f"{path}: checkpoint file not found")
    try:
        with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AsymretError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict) or not {"meta", "state_dict"} <= set(checkpoint):
        raise AsymretError(f"{path}: not a reference checkpoint (needs 'meta' and 'state_dict')")
    meta, state = checkpoint["meta"], checkpoint["state_dict"]
    if not isinstance(meta, dict):
        raise AsymretError(f"{path}: 'meta' is a {type(meta).__name__}, not a dict")
    arch = meta.get("architecture")
    if arch not in _REFERENCE_ARCHS:
        raise AsymretError(
            f"{path}: architecture '{arch}' is not supported for import "
            f"(supported: {', '.join(sorted(_REFERENCE_ARCHS))})"
        )
    if meta.get("local_whitening") or meta.get("regional"):
        raise AsymretError(f"{path}: local whitening / regional pooling are not supported")
    whitening = bool(meta.get("whitening")) or "whiten.weight" in state
    dim = None
    if whitening:
        if "whiten.weight" not in state:
            raise AsymretError(f"{path}: meta says whitening but 'whiten.weight' is missing")
        dim = int(state["whiten.weight"].shape[0])
    try:
        config = ModelConfig.from_dict({
            "arch": arch, "pooling": meta.get("pooling", "gem"), "dim": dim,
            "mean": meta.get("mean", (0.485, 0.456, 0.406)),
            "std": meta.get("std", (0.229, 0.224, 0.225)),
        })
        outputdim = int(meta["outputdim"]) if "outputdim" in meta else None
    except (TypeError, ValueError) as exc:
        raise AsymretError(f"{path}: invalid 'meta' ({exc})") from None
    net = _build_network(config, path)
    if outputdim is not None and outputdim != net.outputdim:
        raise AsymretError(
            f"{path}: meta outputdim {meta['outputdim']} but the weights give {net.outputdim}"
        )
    mapped = {}
    for key, value in state.items():
        if key.startswith("features."):
            mapped["features." + reference_trunk_key(arch, key)] = value
        else:
            mapped[key] = value
    load_checked(net, mapped, str(path))
    setattr(net, REFERENCE_WHITENINGS_ATTR, _read_whitenings(meta.get("Lw"), path))
    return net


def reference_whitenings(net: RetrievalNet) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """The whitenings stored in the reference checkpoint ``net`` was imported from.

    Returns:
        ``{whitening db: {"ms" | "ss": {"m": (D,) float64, "P": (D, D) float64}}}`` as in
        the checkpoint's ``meta['Lw']``; empty for any other network.
    """
    return getattr(net, REFERENCE_WHITENINGS_ATTR, None) or {}


def _read_whitenings(lw: object, path: Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Check ``meta['Lw']`` and convert its arrays to float64 (``m`` flattened to (D,))."""
    if lw is None:
        return {}
    where = f"{path}: meta['Lw']"
    if not isinstance(lw, dict):
        raise AsymretError(f"{where} is a {type(lw).__name__}, not a dict")
    whitenings: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name, kinds in lw.items():
        if not isinstance(kinds, dict):
            raise AsymretError(f"{where}[{name!r}] is a {type(kinds).__name__}, not a dict")
        whitenings[str(name)] = {}
        for kind, entry in kinds.items():
            at = f"{where}[{name!r}][{kind!r}]"
            if not isinstance(entry, dict) or not {"m", "P"} <= set(entry):
                raise AsymretError(f"{at} must be a dict with arrays 'm' and 'P'")
            try:
                mean = np.asarray(entry["m"], dtype=np.float64).reshape(-1)
                projection = np.asarray(entry["P"], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise AsymretError(f"{at}: 'm' and 'P' must be numeric arrays ({exc})") from None
            dim = mean.shape[0]
            if projection.shape != (dim, dim):
                raise AsymretError(
                    f"{at}: 'P' has shape {projection.shape} but 'm' has {dim} values; "
                    f"expected P of shape ({dim}, {dim})"
                )
            whitenings[str(name)][str(kind)] = {"m": mean, "P": projection}
    return whitenings
