"""Set-up shared by the benchmark scripts: allocator, threads, device and the machine line.

The scripts import ``asymret`` as installed in ``.venv`` (``make`` installs it); from a bare
checkout, run them with ``PYTHONPATH=src``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from asymret.runtime import tune_cpu_allocator


def add_machine_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--threads`` and ``--default-allocator``."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--default-allocator", action="store_true",
                        help="do not tune glibc malloc (see asymret.runtime)")


def set_up_machine(args: argparse.Namespace) -> torch.device:
    """Apply the machine options (the allocator as the ``asymret`` command tunes it, for both
    sides of a comparison) and print the line that says where the figures come from."""
    tuned = not args.default_allocator and tune_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, device {device}{gpu}, "
          f"malloc {'tuned' if tuned else 'default'}")
    return device


def timed_call(function: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds ``function()`` takes (waiting for CUDA work to finish) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result
