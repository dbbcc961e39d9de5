"""Process-level settings that make CPU training and extraction fast, and the device check.

:func:`check_device` refuses a device name torch does not know or a GPU this machine lacks
before any work starts.

Two measured effects on x86 CPUs (``benchmarks/train_throughput.py``, docs/benchmarks.md):

- oneDNN runs convolutions faster in channels-last memory format than in NCHW, for training
  and inference alike (MobileNetV2, EfficientNet-Lite, ResNet), as CUDA does.
- glibc's malloc serves every block above its mmap threshold (which grows to at most 32 MiB
  unless set) with a fresh ``mmap`` and unmaps it when freed, so a training step on a large
  batch page-faults all of its activations in again; at 112 images of 160×120 that cost a
  third of the throughput. Raising the threshold (and the trim threshold, so the freed heap
  is kept) lets each step reuse the memory of the one before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import TYPE_CHECKING

from asymret.errors import AsymretError

if TYPE_CHECKING:
    import torch

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1


DEVICE_TYPES = ("cpu", "cuda", "mps")
"""Kinds of device a run or an extraction may name (``cuda:1`` names one GPU)."""


def check_device(name: str) -> torch.device:
    """The device ``name`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``), present on this machine.

    Raises:
        AsymretError: a name torch does not parse, another kind of device, or a GPU that is
            not there (no CUDA/MPS, or a CUDA index beyond the GPUs found).
    """
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise AsymretError(f"unknown device {name!r}; use cpu, cuda, cuda:<index> or mps")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise AsymretError("CUDA is not available here (no GPU or driver found); use cpu")
        if device.index is not None and device.index >= count:
            raise AsymretError(f"this machine has {count} CUDA device(s), 0..{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AsymretError("MPS is not available here; use cpu")
    return device


def prefers_channels_last(device: torch.device) -> bool:
    """Whether convolutions on ``device`` run faster in channels-last format (CPU, CUDA)."""
    return device.type in ("cpu", "cuda")


@functools.cache
def tune_cpu_allocator() -> bool:
    """Let glibc keep large freed blocks for reuse (process-wide; called once by the CLI).

    Blocks up to 1 GiB come from the heap instead of ``mmap``, and up to 2 GiB of free heap
    stay with the process instead of going back to the system. Does nothing where the C
    library is not glibc.

    Returns:
        True when both settings were applied.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
