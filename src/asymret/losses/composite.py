"""Weighted sums of registered losses, named by one string: ``"contrastive + 0.5*csd"``.

Syntax of a loss specification: terms joined by ``+``, each ``NAME`` or ``WEIGHT*NAME`` with
WEIGHT a positive finite number (``0.5``, ``2``, ``1e-2``) and NAME a registered loss, each
name at most once; spaces are ignored. A single name is a sum of one term of weight 1.

A term's keyword arguments: for a single loss, ``params`` holds them directly
(``{margin: 0.7}``); for a sum, ``params`` maps term names to their keyword arguments
(``{contrastive: {margin: 0.7}, csd: {teacher_temperature: 0.05}}``), terms left out taking
their defaults. A plain key in a sum's ``params`` (``{margin: 0.7}``, as a single loss's
preset holds) goes to every term that accepts that keyword, and must fit at least one; a
term's own mapping wins over it.

The terms may be of different kinds (:class:`~asymret.losses.TupleLoss`,
:class:`~asymret.losses.RelationalLoss`, :class:`~asymret.losses.NeighbourLoss`); the caller
passes :class:`LossInputs` holding what every kind present needs, and
``L = Σ_t w_t · L_t(inputs of its kind)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from asymret.errors import AsymretError
from asymret.losses.base import (
    NeighbourLoss,
    RelationalLoss,
    TupleLoss,
    build_loss,
    list_losses,
    loss_class,
    loss_parameters,
)

LossKind = Literal["tuple", "relational", "neighbour"]

_TERM = re.compile(r"^(?:(?P<weight>[^*]+)\*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class LossTerm:
    """One term of a loss specification: ``weight · name``."""

    weight: float
    name: str

    @property
    def kind(self) -> LossKind:
        return loss_kind(self.name)


def loss_kind(name: str) -> LossKind:
    """Which call shape the registered loss ``name`` takes.

    Raises:
        AsymretError: unknown name (the message lists the known ones).
    """
    cls = loss_class(name)
    if issubclass(cls, RelationalLoss):
        return "relational"
    if issubclass(cls, NeighbourLoss):
        return "neighbour"
    if issubclass(cls, TupleLoss):
        return "tuple"
    raise AsymretError(f"loss '{name}' ({cls.__name__}) is not a TupleLoss, RelationalLoss or "
                       "NeighbourLoss")


def parse_loss_spec(spec: object) -> tuple[LossTerm, ...]:
    """``"contrastive + 0.5*csd"`` → ``(LossTerm(1.0, "contrastive"), LossTerm(0.5, "csd"))``.

    Raises:
        AsymretError: one line naming the specification and the bad term: empty, not
            ``[WEIGHT*]NAME``, a weight that is not a positive finite number, an unknown
            name, or a name given twice.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise AsymretError(f"loss.name={spec!r}: expected a loss name or a sum such as "
                           "'contrastive + 0.5*csd'")
    terms: list[LossTerm] = []
    for raw in spec.split("+"):
        text = "".join(raw.split())
        match = _TERM.match(text)
        if match is None:
            raise AsymretError(f"loss.name={spec!r}: term {raw.strip()!r} is not NAME or "
                               "WEIGHT*NAME")
        weight = 1.0
        if match["weight"] is not None:
            try:
                weight = float(match["weight"])
            except ValueError:
                weight = math.nan
            if not (math.isfinite(weight) and weight > 0):
                raise AsymretError(f"loss.name={spec!r}: term {raw.strip()!r} has weight "
                                   f"{match['weight']!r}; expected a positive number")
        name = match["name"]
        if name not in list_losses():
            raise AsymretError(f"loss.name={spec!r}: unknown loss '{name}'; known losses: "
                               f"{', '.join(list_losses())}")
        if any(term.name == name for term in terms):
            raise AsymretError(f"loss.name={spec!r}: loss '{name}' appears twice; give it "
                               "one weight")
        terms.append(LossTerm(weight, name))
    return tuple(terms)


def term_params(
    terms: tuple[LossTerm, ...], params: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each term's keyword arguments from ``loss.params`` (see the module docstring).

    Raises:
        AsymretError: for a sum, a key of ``params`` that is not one of its terms, or a
            value that is not a mapping.
    """
    if len(terms) == 1:
        return {terms[0].name: dict(params)}
    names = [term.name for term in terms]
    by_term: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in params.items():
        if key in by_term:
            continue
        takers = [name for name in names if key in loss_parameters(name)]
        if not takers:
            raise AsymretError(f"loss.params.{key}: neither a term of the loss sum "
                               f"({', '.join(names)}) nor a parameter of one of them (a sum "
                               "takes loss.params.<term>.<name>)")
        for name in takers:
            by_term[name][key] = value
    for key in by_term.keys() & params.keys():
        value = params[key]
        if not isinstance(value, Mapping):
            raise AsymretError(f"loss.params.{key} must be a mapping of the keyword arguments "
                               f"of loss '{key}', got {value!r}")
        by_term[key].update(value)
    return by_term


@dataclass
class LossInputs:
    """What the terms of a loss sum are called with; a field a kind needs may not be None.

    Attributes:
        anchor: ``(B, D)`` the student's anchors f(a) (tuple and neighbour terms).
        refs: ``(B, K, D)`` a tuple loss's references; positive: ``(B, K)`` bool mask.
        student: ``(B', D)`` student vectors of a relational batch.
        teacher: ``(B', D)`` the teacher's vectors of the same images.
        teacher_anchor: ``(B, D)`` the teacher's g(a) (neighbour terms).
        neighbours: ``(B, K', D)`` the teacher's vectors of each anchor's neighbours.
    """

    anchor: torch.Tensor | None = None
    refs: torch.Tensor | None = None
    positive: torch.Tensor | None = None
    student: torch.Tensor | None = None
    teacher: torch.Tensor | None = None
    teacher_anchor: torch.Tensor | None = None
    neighbours: torch.Tensor | None = None


_ARGUMENTS: dict[LossKind, tuple[str, ...]] = {
    "tuple": ("anchor", "refs", "positive"),
    "relational": ("student", "teacher"),
    "neighbour": ("anchor", "teacher_anchor", "neighbours"),
}


class LossSum(nn.Module):
    """``Σ_t w_t · L_t``: a loss specification built with its terms' parameters.

    Args:
        spec: a loss specification (see the module docstring).
        params: ``loss.params``: the single loss's keyword arguments, or per-term ones.

    Raises:
        AsymretError: a bad specification, unknown term in ``params``, or a keyword a
            term does not accept.
    """

    def __init__(self, spec: str, params: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.terms = parse_loss_spec(spec)
        by_term = term_params(self.terms, params or {})
        self.losses = nn.ModuleList(build_loss(t.name, **by_term[t.name]) for t in self.terms)

    @property
    def kinds(self) -> frozenset[LossKind]:
        """The call shapes of the terms."""
        return frozenset(term.kind for term in self.terms)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        """The weighted sum; a single term of weight 1 is returned as its loss exactly.

        In a sum with terms of other kinds, a relational term whose batch is smaller than
        its ``min_batch`` (a last step with one anchor) adds nothing; alone, it raises.
        """
        total = None
        mixed = len(self.kinds) > 1
        for term, loss in zip(self.terms, self.losses, strict=True):
            if (mixed and term.kind == "relational" and inputs.student is not None
                    and inputs.student.shape[0] < loss.min_batch):
                continue
            arguments = [getattr(inputs, field) for field in _ARGUMENTS[term.kind]]
            missing = [f for f, v in zip(_ARGUMENTS[term.kind], arguments, strict=True)
                       if v is None]
            if missing:
                raise AsymretError(f"loss term '{term.name}' needs {', '.join(missing)}")
            value = loss(*arguments)
            value = value if term.weight == 1.0 else term.weight * value
            total = value if total is None else total + value
        return total
