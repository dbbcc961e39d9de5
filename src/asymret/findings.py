"""The paper's two findings, checked on the demo's results.

Budnik & Avrithis (CVPR 2021) find, for mAP Medium in percent:

- **F1, symmetric test** (each network on its own database): students trained asymmetrically
  with Contr⁺ and Contr beat the same student trained alone (66.8 / 66.3 vs 59.6) and come
  close to the teacher or beat it (65.4); Triplet and MS trained asymmetrically, and RKD and
  DarkRank, do worse than the student alone.
- **F2, asymmetric test** (student queries against the teacher's database): regression is the
  best or near the best; Contr⁺ and Contr are compatible with the teacher too; RKD, DarkRank
  and the student trained alone are incompatible (near chance).

:func:`demo_findings` turns the rows of a results table into a :class:`Finding` per claim,
each with the :class:`Check` objects that decide it, under the rules of the module constants
below. A row is found by its training recipe (:data:`RECIPES`, the names of the presets in
``asymret/presets/``); the asymmetric students are taken from one projection start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from asymret.errors import AsymretError

TEACHER = "teacher"
STUDENT_ALONE = "sym-student-alone"
CONTRASTIVE_PLUS = "asym-contrastive-plus"
CONTRASTIVE = "asym-contrastive"
TRIPLET = "asym-triplet"
MULTI_SIMILARITY = "asym-multi-similarity"
REGRESSION = "regression"
RKD = "rkd"
DARKRANK = "darkrank"

ASYMMETRIC_RECIPES = (
    CONTRASTIVE_PLUS,
    CONTRASTIVE,
    TRIPLET,
    MULTI_SIMILARITY,
    REGRESSION,
    RKD,
    DARKRANK,
)
"""Recipes of students trained against the teacher (role ``asymmetric``), in the paper's order."""
RECIPES = (TEACHER, STUDENT_ALONE, *ASYMMETRIC_RECIPES)
"""Every recipe a results row may name: ``teacher`` for the teacher's row, else a preset name."""
RECIPE_ROLES: dict[str, str] = {
    TEACHER: "teacher",
    STUDENT_ALONE: "student-alone",
    **{recipe: "asymmetric" for recipe in ASYMMETRIC_RECIPES},
}
"""The row role each recipe goes with."""
RECIPE_NAMES: dict[str, str] = {
    TEACHER: "teacher",
    STUDENT_ALONE: "student alone",
    CONTRASTIVE_PLUS: "Contr⁺",
    CONTRASTIVE: "Contr",
    TRIPLET: "Triplet",
    MULTI_SIMILARITY: "MS",
    REGRESSION: "Reg",
    RKD: "RKD",
    DARKRANK: "DarkRank",
}
"""How the findings name each recipe's row in their numbers (the paper's short names)."""

STATUSES = ("reproduced", "partly reproduced", "not reproduced")
"""A finding's status: every check passed; its first check (the headline claim) passed but not
every other; or its first check did not pass. A check that was not run does not pass."""

NEAR_TEACHER = 2.0
"""F1 (b): Contr⁺ and Contr come "close to the teacher" when their symmetric Medium mAP is at
most this many points below the teacher's (or above it); exactly this far below still counts."""
NEAR_BEST = 1.0
"""F2 (a): regression is "near the best" when its asymmetric Medium mAP is at most this many
points below the best asymmetric student's of the same projection start; exactly this far
below still counts."""
COMPATIBLE = 0.5
"""F2 (b): a student is compatible with the teacher when, querying the teacher's database, it
keeps at least this share of the teacher's own Medium mAP (asymmetric / teacher symmetric);
exactly this share still counts."""
INCOMPATIBLE = 0.2
"""F2 (c): a student is incompatible with the teacher (near chance) when, querying the
teacher's database, it keeps less than this share of the teacher's own Medium mAP; exactly
this share does not count."""
TOLERANCE = 1e-9
"""Slack of the threshold comparisons (not of the strict "beats" / "worse than" ones), so that
numbers written in decimals that sit exactly on a threshold (65.4 − 63.4 = 2.0, 13.08 / 65.4 =
0.2) are judged as on it despite binary rounding."""

_PROTOCOL = "medium"


class ResultRow(Protocol):
    """What the findings read of a results row; :class:`asymret.report.RunResult` has it."""

    @property
    def recipe(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def projection_start(self) -> str: ...

    @property
    def symmetric_map(self) -> Mapping[str, float]: ...

    @property
    def asymmetric_map(self) -> Mapping[str, float] | None: ...


@dataclass(frozen=True)
class Check:
    """One claim of a finding, and whether the results bear it out.

    Attributes:
        claim: The claim, in words.
        passed: Whether the results bear it out (False when it was not run).
        numbers: The numbers that decide it, e.g. ``"Contr⁺ 41.2, Contr 40.8 vs student alone
            39.9"``, or why it was not run.
        ran: False when a row it needs is missing (a partial demo).
    """

    claim: str
    passed: bool
    numbers: str
    ran: bool = True

    def __post_init__(self) -> None:
        if not self.ran and self.passed:
            raise AsymretError(f"Check {self.claim!r}: a check that was not run cannot pass")


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings, checked.

    Attributes:
        key: ``"F1"`` or ``"F2"``.
        title: The finding in words.
        status: One of :data:`STATUSES`.
        checks: The checks that decide it; the first is the headline claim.
    """

    key: str
    title: str
    status: str
    checks: list[Check]

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise AsymretError(
                f"Finding {self.key}.status: unknown status {self.status!r}; expected one of "
                f"{STATUSES}"
            )


def check_recipe(role: str, recipe: object, field: str) -> None:
    """Raise unless ``recipe`` is one of :data:`RECIPES` and goes with ``role``.

    Args:
        role: The row's role (``teacher``, ``student-alone``, ``asymmetric``).
        recipe: The row's recipe.
        field: The row, as the error should name it, e.g. ``results[2]``.

    Raises:
        ValueError: (an :class:`~asymret.errors.AsymretError`) naming ``field.recipe``.
    """
    if recipe not in RECIPES:
        raise AsymretError(f"{field}.recipe: unknown recipe {recipe!r}; expected one of {RECIPES}")
    if role in RECIPE_ROLES.values() and RECIPE_ROLES[recipe] != role:
        raise AsymretError(
            f"{field}.recipe: {recipe!r} is a recipe of the role {RECIPE_ROLES[recipe]!r}, but "
            f"the row's role is {role!r}"
        )


def teacher_share(asymmetric_map: float | None, teacher_map: float | None) -> float | None:
    """The share of the teacher's own mAP a student keeps when querying the teacher's database.

    Args:
        asymmetric_map: The student's asymmetric mAP (student queries, teacher database).
        teacher_map: The teacher's symmetric mAP, same protocol.

    Returns:
        ``asymmetric_map / teacher_map``; None where either is absent or not finite, or the
        teacher's mAP is not positive.
    """
    if asymmetric_map is None or teacher_map is None:
        return None
    if not (math.isfinite(asymmetric_map) and math.isfinite(teacher_map)) or teacher_map <= 0:
        return None
    return float(asymmetric_map) / float(teacher_map)


def demo_findings(results: Sequence[ResultRow], start: str = "random") -> list[Finding]:
    """Check F1 and F2 on a results table.

    The teacher's row (recipe ``teacher``), the student-alone row (``sym-student-alone``) and
    the asymmetric students' rows of projection start ``start`` are used; other rows are
    ignored. A check whose rows are not all there is not run, and its finding is then not
    ``"reproduced"``.

    Args:
        results: The rows, e.g. :class:`asymret.report.RunResult`; Medium mAP in percent.
        start: The projection start of the asymmetric students (``"random"``, as published,
            or ``"ridge"``).

    Returns:
        ``[F1, F2]``.

    Raises:
        ValueError: (an :class:`~asymret.errors.AsymretError`) a row's recipe is unknown or
            does not go with its role, or two rows have the same recipe (and start).
    """
    rows = _Rows(results, start)
    return [_finding_symmetric(rows), _finding_asymmetric(rows)]


# --- Rows ---------------------------------------------------------------------------------


class _Rows:
    """The rows the findings use, by recipe, with their Medium mAP."""

    def __init__(self, results: Sequence[ResultRow], start: str):
        self.start = start
        self._rows: dict[str, ResultRow] = {}
        first: dict[str, int] = {}
        for index, row in enumerate(results):
            check_recipe(row.role, row.recipe, f"results[{index}]")
            if row.recipe in ASYMMETRIC_RECIPES and row.projection_start != start:
                continue
            if row.recipe in first:
                raise AsymretError(
                    f"results[{index}]: a second row of {self.name(row.recipe)} (the first is "
                    f"results[{first[row.recipe]}])"
                )
            first[row.recipe] = index
            self._rows[row.recipe] = row

    def name(self, recipe: str) -> str:
        """The recipe's short name, with the projection start for an asymmetric student."""
        if recipe in ASYMMETRIC_RECIPES:
            return f"{RECIPE_NAMES[recipe]} ({self.start} start)"
        return RECIPE_NAMES[recipe]

    def symmetric(self, recipe: str) -> float | None:
        """The row's symmetric Medium mAP (the teacher's own), None without the row."""
        row = self._rows.get(recipe)
        return None if row is None else float(row.symmetric_map[_PROTOCOL])

    def asymmetric(self, recipe: str) -> float | None:
        """The row's asymmetric Medium mAP, None without the row or its asymmetric test."""
        row = self._rows.get(recipe)
        if row is None or row.asymmetric_map is None:
            return None
        return float(row.asymmetric_map[_PROTOCOL])


def _measured(
    rows: _Rows,
    claim: str,
    values: Mapping[str, float | None],
    decide: Callable[[dict[str, float]], tuple[bool, str]],
) -> Check:
    """A check on the given recipes' values, not run where one of them is absent."""
    missing = [rows.name(recipe) for recipe, value in values.items() if value is None]
    if missing:
        return Check(claim, False, f"not run: no result for {', '.join(missing)}", ran=False)
    passed, numbers = decide({recipe: float(value) for recipe, value in values.items()})
    return Check(claim, passed, numbers)


def _status(checks: Sequence[Check]) -> str:
    if all(check.passed for check in checks):
        return STATUSES[0]
    return STATUSES[1] if checks[0].passed else STATUSES[2]


def _map(value: float) -> str:
    return f"{value:.1f}"


def _listed(values: Mapping[str, float], text: Callable[[float], str] = _map) -> str:
    return ", ".join(f"{RECIPE_NAMES[recipe]} {text(value)}" for recipe, value in values.items())


def _failing(names: Sequence[str], what: str) -> str:
    return f"; {what}: {', '.join(names)}" if names else ""


# --- F1 -----------------------------------------------------------------------------------

F1_TITLE = (
    "Symmetric test: students trained asymmetrically with Contr⁺ and Contr beat the student "
    "trained alone and come close to the teacher; Triplet, MS, RKD and DarkRank do worse"
)
_WORSE_THAN_ALONE = (TRIPLET, MULTI_SIMILARITY, RKD, DARKRANK)


def _finding_symmetric(rows: _Rows) -> Finding:
    contrastive = (CONTRASTIVE_PLUS, CONTRASTIVE)

    def beat_alone(values: dict[str, float]) -> tuple[bool, str]:
        alone = values.pop(STUDENT_ALONE)
        losing = [RECIPE_NAMES[r] for r, value in values.items() if not value > alone]
        numbers = f"{_listed(values)} vs student alone {_map(alone)}"
        return not losing, numbers + _failing(losing, "not above")

    def near_teacher(values: dict[str, float]) -> tuple[bool, str]:
        teacher = values.pop(TEACHER)
        far = [
            RECIPE_NAMES[r]
            for r, value in values.items()
            if not teacher - value <= NEAR_TEACHER + TOLERANCE
        ]
        numbers = _listed(values, lambda value: f"{_map(value)} ({value - teacher:+.1f})")
        return not far, (
            f"{numbers} vs teacher {_map(teacher)}; allowed -{NEAR_TEACHER:.1f}"
            + _failing(far, "too far below")
        )

    def worse_than_alone(values: dict[str, float]) -> tuple[bool, str]:
        alone = values.pop(STUDENT_ALONE)
        not_worse = [RECIPE_NAMES[r] for r, value in values.items() if not value < alone]
        numbers = f"{_listed(values)} vs student alone {_map(alone)}"
        return not not_worse, numbers + _failing(not_worse, "not below")

    def values(recipes: Sequence[str]) -> dict[str, float | None]:
        return {recipe: rows.symmetric(recipe) for recipe in recipes}

    checks = [
        _measured(
            rows,
            "Contr⁺ and Contr students trained asymmetrically beat the student trained alone "
            "(paper 66.8 / 66.3 vs 59.6)",
            values([*contrastive, STUDENT_ALONE]),
            beat_alone,
        ),
        _measured(
            rows,
            f"Contr⁺ and Contr come within {NEAR_TEACHER:.1f} mAP of the teacher or beat it "
            "(paper 66.8 / 66.3 vs 65.4)",
            values([*contrastive, TEACHER]),
            near_teacher,
        ),
        _measured(
            rows,
            "Triplet and MS trained asymmetrically, RKD and DarkRank do worse than the student "
            "trained alone (paper 39.5 / 39.9 / 56.3 / 40.3 vs 59.6)",
            values([*_WORSE_THAN_ALONE, STUDENT_ALONE]),
            worse_than_alone,
        ),
    ]
    return Finding("F1", f"{F1_TITLE} ({rows.start} projection start)", _status(checks), checks)


# --- F2 -----------------------------------------------------------------------------------

F2_TITLE = (
    "Asymmetric test: regression is the best or near the best; Contr⁺ and Contr are "
    "compatible with the teacher; RKD, DarkRank and the student trained alone are not"
)


def _finding_asymmetric(rows: _Rows) -> Finding:
    def best_or_near(values: dict[str, float]) -> tuple[bool, str]:
        regression = values.pop(REGRESSION)
        best = max(values, key=values.__getitem__)
        if regression >= values[best]:
            return True, (
                f"Reg {_map(regression)} is the best; next {RECIPE_NAMES[best]} "
                f"{_map(values[best])}"
            )
        gap = values[best] - regression
        return gap <= NEAR_BEST + TOLERANCE, (
            f"Reg {_map(regression)} vs best {RECIPE_NAMES[best]} {_map(values[best])} "
            f"(gap {gap:.1f}; allowed {NEAR_BEST:.1f})"
        )

    def share_rule(keeps: Callable[[float], bool], need: str, failure: str):
        """Decide on each student's share of the teacher's mAP (the teacher's own is there)."""

        def decide(values: dict[str, float]) -> tuple[bool, str]:
            teacher = values.pop(TEACHER)
            kept = {recipe: teacher_share(value, teacher) for recipe, value in values.items()}
            numbers = ", ".join(
                f"{RECIPE_NAMES[recipe]} {_map(values[recipe])} / {_map(teacher)} = "
                + ("—" if share is None else f"{share:.2f}")
                for recipe, share in kept.items()
            )
            failed = [
                RECIPE_NAMES[recipe]
                for recipe, share in kept.items()
                if share is None or not keeps(share)
            ]
            return not failed, f"{numbers}; need {need}" + _failing(failed, failure)

        return decide

    def asymmetric_and_teacher(recipes: Sequence[str]) -> dict[str, float | None]:
        # The teacher's own mAP is the denominator of every share: without it, not run.
        return {
            **{recipe: rows.asymmetric(recipe) for recipe in recipes},
            TEACHER: rows.symmetric(TEACHER),
        }

    checks = [
        _measured(
            rows,
            f"Regression gives the best asymmetric mAP of the asymmetric students, or comes "
            f"within {NEAR_BEST:.1f} mAP of it (paper: regression works best)",
            {recipe: rows.asymmetric(recipe) for recipe in ASYMMETRIC_RECIPES},
            best_or_near,
        ),
        _measured(
            rows,
            f"Contr⁺ and Contr are compatible: querying the teacher's database they keep at "
            f"least {COMPATIBLE:.2f} of the teacher's own mAP",
            asymmetric_and_teacher([CONTRASTIVE_PLUS, CONTRASTIVE]),
            share_rule(
                lambda share: share >= COMPATIBLE - TOLERANCE, f"≥ {COMPATIBLE:.2f}", "below"
            ),
        ),
        _measured(
            rows,
            f"RKD, DarkRank and the student trained alone are incompatible: querying the "
            f"teacher's database they keep less than {INCOMPATIBLE:.2f} of its mAP",
            asymmetric_and_teacher([RKD, DARKRANK, STUDENT_ALONE]),
            share_rule(
                lambda share: share < INCOMPATIBLE - TOLERANCE,
                f"< {INCOMPATIBLE:.2f}",
                "not below",
            ),
        ),
    ]
    return Finding("F2", f"{F2_TITLE} ({rows.start} projection start)", _status(checks), checks)
