"""Reading state dicts safely and explaining why one does not fit a network."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch

from asymret.errors import AsymretError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only``: no pickle code).

    A torch file holding ``{"state_dict": ...}`` (or ``"model"``) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise AsymretError(f"{path}: checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            return safetensors.torch.load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AsymretError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise AsymretError(f"{path}: not a state dict of tensors")
    return loaded


def state_dict_problems(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
) -> str:
    """One line naming missing keys, unexpected keys and shape mismatches; "" if it fits."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]

    def first(items: list[str]) -> str:
        more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
        return ", ".join(items[:5]) + more

    parts = []
    if missing:
        parts.append(f"missing keys: {first(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {first(unexpected)}")
    if wrong_shape:
        parts.append(f"shape mismatch (given vs expected): {first(wrong_shape)}")
    return "; ".join(parts)


def load_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly into ``module``, or raise naming every key that does not fit."""
    problems = state_dict_problems(module.state_dict(), state)
    if problems:
        raise AsymretError(f"{source}: weights do not fit {type(module).__name__}: {problems}")
    module.load_state_dict(state)


def hash_state_dict(hasher, state: Mapping[str, torch.Tensor]) -> None:
    """Feed every key, dtype, shape and tensor's bytes of ``state`` (in key order) to a
    ``hashlib`` hasher: equal digests mean equal weights."""
    for key, tensor in sorted(state.items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"{key}|{data.dtype}|{tuple(tensor.shape)}\n".encode())
        hasher.update(data.view(torch.uint8).numpy())
