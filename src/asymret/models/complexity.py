"""Model complexity: parameters and FLOPs of one forward pass.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the
floating-point operations of convolutions and matrix products (``aten.convolution``,
``mm``, ``addmm``, ``bmm``, attention) as **2 × multiply-accumulates**: a Conv2d with Cin → Cout
channels, a k×k kernel, ``groups`` g and an h×w output costs 2·(Cin/g)·Cout·k²·h·w per image.
Element-wise work (BatchNorm, activations, pooling, normalisation, bias additions) is not
counted; it is a small fraction of a CNN's cost.

How it relates to published numbers: the reference project (``budnikm/aml``
``lib/utils/flops.py``) used ptflops ``get_model_complexity_info(net, (3, 362, 362))``, which
reports MACs and also counts one operation per element for BatchNorm, activations and
pooling layers. The slides' "GFLOPs" are 2 × those MACs. So this module's count is slightly
below the slides' (EfficientNet-B3 + GeM at 362×362: 5.31 here, 5.36 on the slides) while
the difference between two heads, being convolutions, agrees: the paper's conv head
(1536 → 2048, 1×1, on the 12×12 map) adds 2·1536·2048·144 = 0.906 GFLOPs (slides: 6.26 −
5.36 = 0.90). A linear projection after pooling has the same C·d weights but adds only
2·C·d = 0.006 GFLOPs.

By default the pass runs on the ``meta`` device: tensors there have shapes but no data, so
the count (which depends on shapes only) costs a fraction of a second even for ResNet-152 at
a large input; ``meta=False`` runs a real random input instead, on the network's device.
:func:`model_complexity` builds a named network on the meta device too, so ``asymret models``
reports every known network in about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from asymret.models.registry import create_model, load_network

DEFAULT_INPUT_SIZE = (362, 362)
"""(H, W) at which the reference project measured complexity."""


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor once), optionally only those with gradient."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def count_flops(
    net: nn.Module, input_size: Sequence[int] = DEFAULT_INPUT_SIZE, meta: bool = True
) -> int:
    """FLOPs (2 × multiply-accumulates) of one forward pass on one (1, 3, H, W) image.

    The network is run in eval mode under ``no_grad`` (every module's mode is restored
    afterwards). An activation cache of a frozen trunk (:meth:`RetrievalNet.freeze_trunk`) is
    bypassed, so the count is that of the whole network.

    Args:
        net: a network taking (N, 3, H, W) images, e.g. a RetrievalNet or Teacher.
        input_size: (H, W) of the input image.
        meta: count on the ``meta`` device (shapes only, fast); ``False`` runs a random
            input through the real weights.

    Returns:
        Total FLOPs, an integer.
    """
    height, width = (int(v) for v in input_size)
    if height < 1 or width < 1:
        raise ValueError(f"input size must be positive, got {tuple(input_size)}")
    reference = next(net.parameters(), None)
    device = torch.device("meta") if meta else (reference.device if reference is not None
                                                 else torch.device("cpu"))
    dtype = reference.dtype if reference is not None else torch.float32
    images = torch.rand(1, 3, height, width, device=device, dtype=dtype)
    caches = [(m, m.activation_cache) for m in net.modules()
              if getattr(m, "activation_cache", None) is not None]
    modes = [(module, module.training) for module in net.modules()]
    try:
        for module, _ in caches:
            module.activation_cache = None
        net.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            if meta:
                state = {name: torch.empty_like(tensor, device="meta")
                         for name, tensor in [*net.named_parameters(), *net.named_buffers()]}
                functional_call(net, state, (images,))
            else:
                net(images)
    finally:
        for module, cache in caches:
            module.activation_cache = cache
        for module, training in modes:
            module.training = training
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class Complexity:
    """Parameters and FLOPs of a network at one input size.

    Attributes:
        parameters: number of parameters.
        flops: FLOPs (2 × multiply-accumulates) of one forward pass on one image.
        input_size: (H, W) of that image.
    """

    parameters: int
    flops: int
    input_size: tuple[int, int]

    @property
    def mparams(self) -> float:
        """Parameters in millions."""
        return self.parameters / 1e6

    @property
    def gflops(self) -> float:
        """FLOPs in billions."""
        return self.flops / 1e9


def model_complexity(
    spec: str | Path, input_size: Sequence[int] = DEFAULT_INPUT_SIZE
) -> Complexity:
    """Complexity of a network given by name (built on the meta device: no weights, fast) or
    by a saved model folder / reference checkpoint (loaded on the CPU).

    Raises:
        AsymretError: an unknown name or an unreadable saved model.
    """
    if Path(spec).exists():
        net = load_network(spec)
    else:
        with torch.device("meta"):
            net = create_model(str(spec))
    size = (int(input_size[0]), int(input_size[1]))
    return Complexity(count_parameters(net), count_flops(net, size), size)
