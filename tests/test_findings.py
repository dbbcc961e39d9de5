"""The paper's findings F1 and F2 checked on hand-made results rows."""

from collections.abc import Callable

import pytest

from asymret import findings
from asymret.findings import (
    COMPATIBLE,
    INCOMPATIBLE,
    NEAR_BEST,
    NEAR_TEACHER,
    RECIPE_NAMES,
    RECIPE_ROLES,
    STATUSES,
    Check,
    Finding,
    demo_findings,
    teacher_share,
)
from asymret.report import RunResult

PAPER = {
    # recipe: (symmetric Medium, asymmetric Medium); the symmetric ones are the paper's ROxf.
    "teacher": (65.4, None),
    "sym-student-alone": (59.6, 0.9),
    "asym-contrastive-plus": (66.8, 60.9),
    "asym-contrastive": (66.3, 60.2),
    "asym-triplet": (39.5, 30.0),
    "asym-multi-similarity": (39.9, 31.0),
    "regression": (64.9, 61.3),
    "rkd": (56.3, 2.1),
    "darkrank": (40.3, 1.4),
}
"""Numbers under which both findings hold (asymmetric values made up, in the paper's spirit)."""


def medium_map(value: float) -> dict[str, float]:
    return {"easy": min(100.0, value + 10.0), "medium": value, "hard": value / 2}


def row(recipe: str, symmetric: float, asymmetric: float | None, start: str = "random"):
    role = RECIPE_ROLES[recipe]
    return RunResult(
        label=RECIPE_NAMES[recipe],
        role=role,
        loss="contrastive",
        projection_start=start if role == "asymmetric" else "",
        symmetric_map=medium_map(symmetric),
        asymmetric_map=None if asymmetric is None else medium_map(asymmetric),
        pr_curves={},
        recipe=recipe,
    )


def paper_rows(**changes: tuple[float, float | None] | None) -> list[RunResult]:
    """The rows of :data:`PAPER`, with ``recipe_with_underscores=(sym, asym)`` changed and
    ``=None`` left out; ridge-start rows that would break every check come along."""
    numbers = dict(PAPER)
    for key, value in changes.items():
        recipe = key.replace("_", "-")
        assert recipe in numbers, key
        if value is None:
            del numbers[recipe]
        else:
            numbers[recipe] = value
    rows = [row(recipe, *values) for recipe, values in numbers.items()]
    # Another start's students, all failing: the random-start findings must not see them.
    rows += [row(recipe, 10.0, 50.0, start="ridge") for recipe in findings.ASYMMETRIC_RECIPES]
    return rows


def by_key(found: list[Finding]) -> dict[str, Finding]:
    assert [finding.key for finding in found] == ["F1", "F2"]
    return {finding.key: finding for finding in found}


def test_the_paper_numbers_reproduce_both_findings():
    found = by_key(demo_findings(paper_rows()))
    for finding in found.values():
        assert finding.status == "reproduced"
        assert len(finding.checks) == 3
        assert all(check.passed and check.ran for check in finding.checks)
        assert "random projection start" in finding.title
    f1, f2 = found["F1"].checks, found["F2"].checks
    assert f1[0].numbers == "Contr⁺ 66.8, Contr 66.3 vs student alone 59.6"
    assert f1[1].numbers == "Contr⁺ 66.8 (+1.4), Contr 66.3 (+0.9) vs teacher 65.4; allowed -2.0"
    assert f1[2].numbers == "Triplet 39.5, MS 39.9, RKD 56.3, DarkRank 40.3 vs student alone 59.6"
    assert f2[0].numbers == "Reg 61.3 is the best; next Contr⁺ 60.9"
    assert f2[1].numbers == "Contr⁺ 60.9 / 65.4 = 0.93, Contr 60.2 / 65.4 = 0.92; need ≥ 0.50"
    assert f2[2].numbers == (
        "RKD 2.1 / 65.4 = 0.03, DarkRank 1.4 / 65.4 = 0.02, student alone 0.9 / 65.4 = 0.01; "
        "need < 0.20"
    )


@pytest.mark.parametrize(
    ("changes", "key", "failing", "status", "text"),
    [
        pytest.param(
            # The student alone above Contr (66.5 > 66.3) yet still below Triplet & co.
            {"sym_student_alone": (66.5, 0.9)},
            "F1", 0, "not reproduced", "Contr⁺ 66.8, Contr 66.3 vs student alone 66.5; "
            "not above: Contr",
            id="F1a-contr-not-above-alone",
        ),
        pytest.param(
            {"asym_contrastive_plus": (62.0, 60.9)},
            "F1", 1, "partly reproduced", "Contr⁺ 62.0 (-3.4), Contr 66.3 (+0.9) vs teacher "
            "65.4; allowed -2.0; too far below: Contr⁺",
            id="F1b-contr-plus-far-below-teacher",
        ),
        pytest.param(
            {"rkd": (60.0, 2.1)},
            "F1", 2, "partly reproduced", "Triplet 39.5, MS 39.9, RKD 60.0, DarkRank 40.3 vs "
            "student alone 59.6; not below: RKD",
            id="F1c-rkd-above-alone",
        ),
        pytest.param(
            {"regression": (64.9, 59.0)},
            "F2", 0, "not reproduced", "Reg 59.0 vs best Contr⁺ 60.9 (gap 1.9; allowed 1.0)",
            id="F2a-regression-too-far-from-best",
        ),
        pytest.param(
            {"asym_contrastive": (66.3, 30.0)},
            "F2", 1, "partly reproduced", "Contr⁺ 60.9 / 65.4 = 0.93, Contr 30.0 / 65.4 = 0.46; "
            "need ≥ 0.50; below: Contr",
            id="F2b-contr-incompatible",
        ),
        pytest.param(
            {"darkrank": (40.3, 15.0)},
            "F2", 2, "partly reproduced", "RKD 2.1 / 65.4 = 0.03, DarkRank 15.0 / 65.4 = 0.23, "
            "student alone 0.9 / 65.4 = 0.01; need < 0.20; not below: DarkRank",
            id="F2c-darkrank-compatible",
        ),
    ],
)
def test_each_check_fails_on_its_own(changes, key, failing, status, text):
    found = by_key(demo_findings(paper_rows(**changes)))
    finding = found[key]
    assert finding.status == status
    assert [check.passed for check in finding.checks] == [i != failing for i in range(3)]
    assert all(check.ran for check in finding.checks)
    assert finding.checks[failing].numbers == text
    other = found["F2" if key == "F1" else "F1"]
    assert other.status == "reproduced"


def test_missing_rows_make_their_checks_not_run():
    # Triplet missing: F1 (c) and F2 (a) need it; the rest is decided.
    found = by_key(demo_findings(paper_rows(asym_triplet=None)))
    f1, f2 = found["F1"], found["F2"]
    assert [check.ran for check in f1.checks] == [True, True, False]
    assert [check.passed for check in f1.checks] == [True, True, False]
    assert f1.checks[2].numbers == "not run: no result for Triplet (random start)"
    assert f1.status == "partly reproduced"  # every check that ran passed, still not all
    assert [check.ran for check in f2.checks] == [False, True, True]
    assert f2.checks[0].numbers == "not run: no result for Triplet (random start)"
    assert f2.status == "not reproduced"

    # The teacher and DarkRank missing, and the student alone without an asymmetric test.
    rows = paper_rows(teacher=None, darkrank=None, sym_student_alone=(59.6, None))
    f1, f2 = by_key(demo_findings(rows)).values()
    assert [check.ran for check in f1.checks] == [True, False, False]
    assert f1.checks[1].numbers == "not run: no result for teacher"
    assert f1.status == "partly reproduced"
    assert [check.ran for check in f2.checks] == [False, False, False]
    assert f2.checks[1].numbers == "not run: no result for teacher"
    assert f2.checks[2].numbers == (
        "not run: no result for DarkRank (random start), student alone, teacher"
    )
    assert f2.status == "not reproduced"


def test_a_demo_with_only_the_teacher_and_the_student_alone():
    found = demo_findings([row("teacher", 65.4, None), row("sym-student-alone", 59.6, 0.9)])
    for finding in found:
        assert finding.status == "not reproduced"
        assert not any(check.ran or check.passed for check in finding.checks)
        assert all(check.numbers.startswith("not run: no result for ") for check in found[0].checks)


def test_no_finding_is_reproduced_with_a_check_not_run():
    for recipe in PAPER:
        found = demo_findings(paper_rows(**{recipe.replace("-", "_"): None}))
        affected = [f.key for f in found if not all(check.ran for check in f.checks)]
        # F1 does not use regression; every other row is needed by both findings.
        assert affected == (["F2"] if recipe == "regression" else ["F1", "F2"]), recipe
        for finding in found:
            expected_reproduced = finding.key not in affected
            assert (finding.status == "reproduced") is expected_reproduced, (recipe, finding)


@pytest.mark.parametrize(
    ("changes", "key", "check", "passed"),
    [
        # 65.4 − 63.4 is 2.000000000000007 in binary: exactly NEAR_TEACHER below still counts.
        pytest.param({"asym_contrastive_plus": (63.4, 60.9)}, "F1", 1, True, id="near-teacher"),
        pytest.param({"asym_contrastive_plus": (63.3, 60.9)}, "F1", 1, False, id="too-far"),
        pytest.param({"regression": (64.9, 59.9)}, "F2", 0, True, id="near-best"),
        pytest.param({"regression": (64.9, 59.8)}, "F2", 0, False, id="too-far-from-best"),
        # A share of exactly 0.5 is compatible; exactly 0.2 (13.08 / 65.4, which is
        # 0.19999999999999998 in binary) is not incompatible.
        pytest.param({"asym_contrastive": (66.3, 32.7)}, "F2", 1, True, id="share-0.5"),
        pytest.param({"asym_contrastive": (66.3, 32.6)}, "F2", 1, False, id="share-below-0.5"),
        pytest.param({"rkd": (56.3, 13.08)}, "F2", 2, False, id="share-0.2"),
        pytest.param({"rkd": (56.3, 13.0)}, "F2", 2, True, id="share-below-0.2"),
        # "Beats" and "worse than" are strict: a tie with the student alone does not count.
        pytest.param({"asym_contrastive": (59.6, 60.2)}, "F1", 0, False, id="tie-beats"),
        pytest.param({"asym_multi_similarity": (59.6, 31.0)}, "F1", 2, False, id="tie-worse"),
        # Regression level with the best counts as the best.
        pytest.param({"regression": (64.9, 60.9)}, "F2", 0, True, id="tie-best"),
    ],
)
def test_threshold_edges(changes, key, check, passed):
    assert (NEAR_TEACHER, NEAR_BEST, COMPATIBLE, INCOMPATIBLE) == (2.0, 1.0, 0.5, 0.2)
    finding = by_key(demo_findings(paper_rows(**changes)))[key]
    assert finding.checks[check].passed is passed
    assert finding.status == ("reproduced" if passed else STATUSES[1 if check else 2])


def test_the_rules_read_the_module_constants(monkeypatch):
    rows = paper_rows(asym_contrastive_plus=(62.9, 60.9))  # 2.5 below the teacher
    assert not by_key(demo_findings(rows))["F1"].checks[1].passed
    monkeypatch.setattr(findings, "NEAR_TEACHER", 3.0)
    check = by_key(demo_findings(rows))["F1"].checks[1]
    assert check.passed
    assert "within 3.0 mAP" in check.claim and "allowed -3.0" in check.numbers


def test_the_projection_start_chooses_the_asymmetric_rows():
    rows = [row("teacher", 65.4, None), row("sym-student-alone", 59.6, 0.9)]
    rows += [row(r, *PAPER[r], start="ridge") for r in findings.ASYMMETRIC_RECIPES]
    rows += [row(r, 5.0, 90.0, start="random") for r in findings.ASYMMETRIC_RECIPES]
    ridge = demo_findings(rows, start="ridge")
    assert [finding.status for finding in ridge] == ["reproduced", "reproduced"]
    assert all("ridge projection start" in finding.title for finding in ridge)
    random = demo_findings(rows)  # published start by default
    assert [finding.status for finding in random] == ["not reproduced", "partly reproduced"]
    assert not any(check.ran for check in demo_findings(rows, start="other")[0].checks[:1])


def test_a_teacher_without_map_gives_no_share():
    assert teacher_share(32.7, 65.4) == 0.5
    assert teacher_share(10.0, 0.0) is None
    assert teacher_share(None, 65.4) is None and teacher_share(10.0, None) is None
    assert teacher_share(float("nan"), 65.4) is None
    f2 = by_key(demo_findings(paper_rows(teacher=(0.0, None))))["F2"]
    assert not f2.checks[1].passed and not f2.checks[2].passed
    assert "Contr⁺ 60.9 / 0.0 = —" in f2.checks[1].numbers


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda rows: rows.append(row("rkd", 1.0, 1.0)),
            r"results\[16\]: a second row of RKD \(random start\) \(the first is results\[7\]\)",
            id="duplicate",
        ),
        pytest.param(
            lambda rows: setattr(rows[2], "recipe", "asym-contrastive-pluss"),
            r"results\[2\]\.recipe: unknown recipe 'asym-contrastive-pluss'",
            id="unknown-recipe",
        ),
        pytest.param(
            lambda rows: setattr(rows[1], "role", "asymmetric"),
            r"results\[1\]\.recipe: 'sym-student-alone' is a recipe of the role "
            r"'student-alone', but the row's role is 'asymmetric'",
            id="role-mismatch",
        ),
    ],
)
def test_bad_rows_raise_naming_the_row(change: Callable, message: str):
    rows = paper_rows()
    change(rows)
    with pytest.raises(ValueError, match=message):
        demo_findings(rows)


def test_check_and_finding_validate_themselves():
    with pytest.raises(ValueError, match="not run cannot pass"):
        Check("claim", passed=True, numbers="not run", ran=False)
    with pytest.raises(ValueError, match=r"Finding F1\.status: unknown status 'done'"):
        Finding("F1", "title", "done", [])
