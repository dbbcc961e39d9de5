"""Common call shapes, input validation, distance helpers and the loss registry.

Two kinds of loss share one calling convention each:

* :class:`TupleLoss` — ``loss(anchor, refs, positive)`` with anchor ``(B, D)``, references
  ``(B, K, D)`` and a bool mask ``(B, K)`` marking which references are positives of their
  anchor. The loss does not know whether ``refs`` holds student vectors (symmetric training)
  or teacher vectors (asymmetric training, AML): the caller decides by what it passes.
* :class:`RelationalLoss` — ``loss(student, teacher)`` with two ``(B, D)`` batches of the
  same images; the loss compares relations *within* each batch, and the teacher side carries
  no gradient.
* :class:`NeighbourLoss` — ``loss(anchor, teacher_anchor, neighbours)`` with the student's
  ``(B, D)`` anchors f(a), the teacher's ``(B, D)`` g(a) and the teacher's vectors of each
  anchor's K nearest teacher neighbours ``(B, K, D)``, mined from the whole training set's
  teacher bank (:mod:`asymret.neighbours`); the teacher side carries no gradient.

Inputs are expected to be L2-normalised; no loss renormalises them. Losses are registered by
name with :func:`register_loss` and built with :func:`build_loss`.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable

import torch
from torch import nn

from asymret.errors import AsymretError

DISTANCE_EPS = 1e-12
"""Added to squared distances before the square root, so d = sqrt(d² + eps) has a finite
gradient for identical vectors. It shifts a distance by at most 1e-6 (at d = 0)."""

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that makes a loss buildable by ``name`` with :func:`build_loss`.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"loss '{name}' is already registered by {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_losses() -> list[str]:
    """Names accepted by :func:`build_loss`, sorted."""
    return sorted(_REGISTRY)


def loss_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``.

    Raises:
        AsymretError: unknown name (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise AsymretError(f"unknown loss '{name}'; known losses: {', '.join(list_losses())}")
    return _REGISTRY[name]


def _signature(cls: type[nn.Module]) -> inspect.Signature:
    # A loss without its own __init__ inherits nn.Module's (*args, **kwargs): it takes nothing.
    return inspect.Signature() if cls.__init__ is nn.Module.__init__ else inspect.signature(cls)


def loss_parameters(name: str) -> tuple[str, ...]:
    """The keyword arguments the registered loss ``name`` accepts."""
    return tuple(_signature(loss_class(name)).parameters)


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build a registered loss, e.g. ``build_loss("contrastive", margin=0.7)``.

    Raises:
        AsymretError: unknown name (the message lists the known ones) or a keyword the loss
            does not accept (the message lists the accepted ones), or an invalid value.
    """
    cls = loss_class(name)
    signature = _signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(signature.parameters) or "none"
        raise AsymretError(f"loss '{name}': {exc}; accepted parameters: {accepted}") from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # e.g. margin="abc": float() fails in the loss
        if isinstance(exc, AsymretError):
            raise AsymretError(f"loss '{name}': {exc}") from None
        raise AsymretError(f"loss '{name}': bad parameter value ({exc}); given "
                           f"{kwargs}") from None


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float, or raise AsymretError if it is not > 0 (or >= 0)."""
    value = float(value)
    if not (value >= 0 if allow_zero else value > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise AsymretError(f"{name} must be {bound}, got {value}")
    return value


def squared_distances(anchor: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Exact squared Euclidean distances, from differences rather than 2 − 2·sim.

    Args:
        anchor: ``(B, D)``.
        refs: ``(B, K, D)``.

    Returns:
        ``(B, K)`` with entry ``[b, k] = ‖anchor[b] − refs[b, k]‖²``.
    """
    return (anchor.unsqueeze(1) - refs).pow(2).sum(dim=-1)


def distances_from_squared(squared: torch.Tensor) -> torch.Tensor:
    """``sqrt(d² + DISTANCE_EPS)``: a distance whose gradient is finite at d = 0."""
    return torch.sqrt(squared + DISTANCE_EPS)


def similarities(anchor: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Dot products ``(B, D), (B, K, D) -> (B, K)``."""
    return torch.einsum("bd,bkd->bk", anchor, refs)


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def _check_tensor(name: str, value: object, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise AsymretError(f"{name} must be a torch.Tensor {layout}, got {type(value).__name__}")
    if value.dim() != ndim:
        raise AsymretError(f"{name} must be a {ndim}-D tensor {layout}, got shape {_shape(value)}")
    if value.numel() == 0:
        raise AsymretError(f"{name} {layout} is empty: shape {_shape(value)}")
    return value


def _check_float_and_finite(name: str, tensor: torch.Tensor) -> None:
    if not tensor.is_floating_point():
        raise AsymretError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    if not torch.isfinite(tensor).all():
        nan_count = int(torch.isnan(tensor).sum())
        problem = "NaN" if nan_count else "Inf"
        count = nan_count or int(torch.isinf(tensor).sum())
        raise AsymretError(f"{name} contains {problem} ({count} of {tensor.numel()} values)")


def validate_tuple_inputs(
    anchor: object, refs: object, positive: object, anchor_name: str = "anchor"
) -> None:
    """Check the :class:`TupleLoss` inputs; raise AsymretError naming the bad argument."""
    anchor = _check_tensor(anchor_name, anchor, 2, "(B, D)")
    refs = _check_tensor("refs", refs, 3, "(B, K, D)")
    batch, dim = anchor.shape
    if refs.shape[0] != batch or refs.shape[2] != dim:
        raise AsymretError(
            f"refs shape {_shape(refs)} does not match {anchor_name} shape {_shape(anchor)}: "
            f"expected ({batch}, K, {dim})"
        )
    if not isinstance(positive, torch.Tensor):
        raise AsymretError(f"positive must be a bool torch.Tensor, got {type(positive).__name__}")
    if positive.dtype != torch.bool:
        raise AsymretError(f"positive must be a bool tensor, got {positive.dtype}")
    if positive.shape != refs.shape[:2]:
        raise AsymretError(
            f"positive must have shape (B, K) = {tuple(refs.shape[:2])}, got {_shape(positive)}"
        )
    for name, tensor in ((anchor_name, anchor), ("refs", refs)):
        if tensor.device != positive.device:
            raise AsymretError(f"{name} is on {tensor.device} but positive is on {positive.device}")
        _check_float_and_finite(name, tensor)


def validate_relational_inputs(student: object, teacher: object, min_batch: int) -> None:
    """Check the :class:`RelationalLoss` inputs; raise AsymretError naming the bad argument."""
    student = _check_tensor("student", student, 2, "(B, D)")
    teacher = _check_tensor("teacher", teacher, 2, "(B, D)")
    if student.shape != teacher.shape:
        raise AsymretError(
            f"student shape {_shape(student)} and teacher shape {_shape(teacher)} differ"
        )
    if student.shape[0] < min_batch:
        raise AsymretError(
            f"relational losses need a batch of at least {min_batch} vectors, "
            f"got shape {_shape(student)}"
        )
    for name, tensor in (("student", student), ("teacher", teacher)):
        _check_float_and_finite(name, tensor)


def validate_neighbour_inputs(anchor: object, teacher_anchor: object, neighbours: object) -> None:
    """Check the :class:`NeighbourLoss` inputs; raise AsymretError naming the bad argument."""
    anchor = _check_tensor("anchor", anchor, 2, "(B, D)")
    teacher_anchor = _check_tensor("teacher_anchor", teacher_anchor, 2, "(B, D)")
    neighbours = _check_tensor("neighbours", neighbours, 3, "(B, K, D)")
    if teacher_anchor.shape != anchor.shape:
        raise AsymretError(
            f"teacher_anchor shape {_shape(teacher_anchor)} does not match anchor shape "
            f"{_shape(anchor)}"
        )
    batch, dim = anchor.shape
    if neighbours.shape[0] != batch or neighbours.shape[2] != dim:
        raise AsymretError(
            f"neighbours shape {_shape(neighbours)} does not match anchor shape "
            f"{_shape(anchor)}: expected ({batch}, K, {dim})"
        )
    for name, tensor in (("anchor", anchor), ("teacher_anchor", teacher_anchor),
                         ("neighbours", neighbours)):
        if tensor.device != anchor.device:
            raise AsymretError(f"{name} is on {tensor.device} but anchor is on {anchor.device}")
        _check_float_and_finite(name, tensor)


class TupleLoss(nn.Module, abc.ABC):
    """Base of losses over (anchor, references, positive mask); reduction is a sum over anchors.

    Subclasses implement :meth:`compute`; :meth:`forward` validates the inputs first.
    """

    def forward(
        self, anchor: torch.Tensor, refs: torch.Tensor, positive: torch.Tensor
    ) -> torch.Tensor:
        """Loss of a batch of tuples.

        Args:
            anchor: ``(B, D)`` anchor vectors (the student's f(a)).
            refs: ``(B, K, D)`` references of each anchor: student vectors for symmetric
                training, teacher vectors for asymmetric training.
            positive: ``(B, K)`` bool, True where ``refs[b, k]`` matches ``anchor[b]``.

        Returns:
            0-dim tensor, summed over anchors.

        Raises:
            AsymretError: wrong shapes or dtypes, or NaN/Inf values.
        """
        validate_tuple_inputs(anchor, refs, positive)
        return self.compute(anchor, refs, positive)

    @abc.abstractmethod
    def compute(
        self, anchor: torch.Tensor, refs: torch.Tensor, positive: torch.Tensor
    ) -> torch.Tensor:
        """The loss on validated inputs (same arguments and result as :meth:`forward`)."""


class RelationalLoss(nn.Module, abc.ABC):
    """Base of losses that match relations within a student batch to the teacher's.

    Subclasses implement :meth:`compute`; :meth:`forward` validates the inputs first.
    """

    min_batch: int = 2
    """Smallest batch size for which the relations are defined."""

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            student: ``(B, D)`` student vectors f(x_i).
            teacher: ``(B, D)`` teacher vectors g(x_i) of the same images; no gradient
                flows into them.

        Returns:
            0-dim tensor.

        Raises:
            AsymretError: shapes differ, ``B < min_batch``, or NaN/Inf values.
        """
        validate_relational_inputs(student, teacher, self.min_batch)
        return self.compute(student, teacher)

    @abc.abstractmethod
    def compute(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The loss on validated inputs (same arguments and result as :meth:`forward`)."""


class NeighbourLoss(nn.Module, abc.ABC):
    """Base of losses that transfer the teacher's similarities to each anchor's neighbours.

    Subclasses implement :meth:`compute`; :meth:`forward` validates the inputs first.
    """

    def forward(
        self, anchor: torch.Tensor, teacher_anchor: torch.Tensor, neighbours: torch.Tensor
    ) -> torch.Tensor:
        """Loss of a batch of anchors, averaged over anchors.

        Args:
            anchor: ``(B, D)`` the student's anchor vectors f(a).
            teacher_anchor: ``(B, D)`` the teacher's vectors g(a) of the same images.
            neighbours: ``(B, K, D)`` the teacher's vectors g(x_1..x_K) of each anchor's K
                nearest teacher neighbours (the anchor itself excluded), nearest first.

        Returns:
            0-dim tensor.

        Raises:
            AsymretError: wrong shapes or dtypes, or NaN/Inf values.
        """
        validate_neighbour_inputs(anchor, teacher_anchor, neighbours)
        return self.compute(anchor, teacher_anchor.detach(), neighbours.detach())

    @abc.abstractmethod
    def compute(
        self, anchor: torch.Tensor, teacher_anchor: torch.Tensor, neighbours: torch.Tensor
    ) -> torch.Tensor:
        """The loss on validated inputs (same arguments and result as :meth:`forward`)."""


def context_vectors(
    teacher_anchor: torch.Tensor, neighbours: torch.Tensor, include_self: bool
) -> torch.Tensor:
    """The teacher vectors an anchor is compared with: ``(B, K, D)`` neighbours, or
    ``(B, K + 1, D)`` with g(a) first when ``include_self``."""
    if not include_self:
        return neighbours
    return torch.cat([teacher_anchor.unsqueeze(1), neighbours], dim=1)


def with_self_positive(
    teacher_anchor: torch.Tensor, refs: torch.Tensor, positive: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepend each anchor's teacher vector g(a) to its references as an extra positive.

    This is how Contr⁺ is built: ``build_loss("contrastive")`` called with the output of this
    function adds ½‖f(a) − g(a)‖² per anchor to the asymmetric contrastive loss. It works the
    same for any :class:`TupleLoss`.

    Args:
        teacher_anchor: ``(B, D)`` teacher vectors g(a) of the anchors.
        refs: ``(B, K, D)`` references.
        positive: ``(B, K)`` bool positive mask.

    Returns:
        ``refs`` as ``(B, K + 1, D)`` with g(a) at index 0, and ``positive`` as
        ``(B, K + 1)`` with True at index 0.

    Raises:
        AsymretError: shapes do not match.
    """
    validate_tuple_inputs(teacher_anchor, refs, positive, anchor_name="teacher_anchor")
    refs_plus = torch.cat([teacher_anchor.unsqueeze(1), refs], dim=1)
    self_positive = positive.new_ones((positive.shape[0], 1))
    return refs_plus, torch.cat([self_positive, positive], dim=1)
