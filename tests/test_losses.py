"""Losses against slow per-element reference loops, hand-worked cases, and degenerate inputs.

The reference functions below are written straight from the formulas in DESIGN.md §2 with
Python loops and do not use any asymret helper.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from asymret.errors import AsymretError
from asymret.losses import (
    ContrastiveLoss,
    RelationalLoss,
    TupleLoss,
    build_loss,
    list_losses,
    register_loss,
    with_self_positive,
)
from asymret.losses import base as losses_base

TUPLE_LOSSES = ("contrastive", "triplet", "multi_similarity", "regression")
RELATIONAL_LOSSES = ("rkd", "darkrank")
TOLERANCE = {"rtol": 1e-9, "atol": 1e-9}


# ---------------------------------------------------------------- slow reference loops


def _distance(x, y):
    return torch.sqrt(((x - y) ** 2).sum())


def ref_contrastive(anchor, refs, positive, margin=0.7):
    total = anchor.new_zeros(())
    for b in range(refs.shape[0]):
        for k in range(refs.shape[1]):
            d = _distance(anchor[b], refs[b, k])
            if positive[b, k]:
                total = total + 0.5 * d**2
            else:
                total = total + 0.5 * torch.clamp(margin - d, min=0) ** 2
    return total


def ref_triplet(anchor, refs, positive, margin=0.1):
    total = anchor.new_zeros(())
    for b in range(refs.shape[0]):
        for p in range(refs.shape[1]):
            for n in range(refs.shape[1]):
                if positive[b, p] and not positive[b, n]:
                    d_ap = _distance(anchor[b], refs[b, p])
                    d_an = _distance(anchor[b], refs[b, n])
                    total = total + torch.clamp(d_ap**2 - d_an**2 + margin, min=0)
    return total


def ref_multi_similarity(anchor, refs, positive, alpha=2.0, beta=40.0, lam=0.5):
    total = anchor.new_zeros(())
    for b in range(refs.shape[0]):
        positive_sum = anchor.new_zeros(())
        negative_sum = anchor.new_zeros(())
        for k in range(refs.shape[1]):
            s = (anchor[b] * refs[b, k]).sum()
            if positive[b, k]:
                positive_sum = positive_sum + torch.exp(-alpha * (s - lam))
            else:
                negative_sum = negative_sum + torch.exp(beta * (s - lam))
        total = total + torch.log(1 + positive_sum) / alpha + torch.log(1 + negative_sum) / beta
    return total


def ref_regression(anchor, refs, positive):
    total = anchor.new_zeros(())
    for b in range(refs.shape[0]):
        for k in range(refs.shape[1]):
            if positive[b, k]:
                total = total - (anchor[b] * refs[b, k]).sum()
    return total


def _smooth_l1(u, v):
    diff = torch.abs(u - v)
    return 0.5 * diff**2 if diff < 1 else diff - 0.5


def _cosine_at(x, i, j, k):
    u, v = x[j] - x[i], x[k] - x[i]
    if torch.all(u == 0) or torch.all(v == 0):
        return x.new_zeros(())
    return (u * v).sum() / (torch.sqrt((u**2).sum()) * torch.sqrt((v**2).sum()))


def _normalised_distance_rows(x):
    size = x.shape[0]
    d = [
        [_distance(x[i], x[j]) if i != j else x.new_zeros(()) for j in range(size)]
        for i in range(size)
    ]
    mean = sum(d[i][j] for i in range(size) for j in range(size) if i != j) / (size * (size - 1))
    return [[d[i][j] / mean for j in range(size)] for i in range(size)]


def ref_rkd(student, teacher, distance_weight=1.0, angle_weight=2.0):
    teacher = teacher.detach()
    size = student.shape[0]
    ds, dt = _normalised_distance_rows(student), _normalised_distance_rows(teacher)
    distance_term = (
        sum(_smooth_l1(ds[i][j], dt[i][j]) for i in range(size) for j in range(size)) / size**2
    )
    angle_term = (
        sum(
            _smooth_l1(_cosine_at(student, i, j, k), _cosine_at(teacher, i, j, k))
            for i in range(size)
            for j in range(size)
            for k in range(size)
        )
        / size**3
    )
    return distance_weight * distance_term + angle_weight * angle_term


def ref_darkrank(student, teacher, alpha=3.0, beta=3.0, list_length=4):
    teacher = teacher.detach()
    size = student.shape[0]
    length = min(list_length, size - 1)
    total = student.new_zeros(())
    for i in range(size):
        teacher_score = {
            j: -alpha * float(_distance(teacher[i], teacher[j])) ** beta
            for j in range(size)
            if j != i
        }
        order = sorted(teacher_score, key=lambda j: -teacher_score[j])[:length]
        s = [-alpha * _distance(student[i], student[j]) ** beta for j in order]
        log_likelihood = student.new_zeros(())
        for t in range(length):
            log_likelihood = (
                log_likelihood + s[t] - torch.log(sum(torch.exp(s[u]) for u in range(t, length)))
            )
        total = total - log_likelihood
    return total / size


TUPLE_REFERENCES = {
    "contrastive": ref_contrastive,
    "triplet": ref_triplet,
    "multi_similarity": ref_multi_similarity,
    "regression": ref_regression,
}
RELATIONAL_REFERENCES = {"rkd": ref_rkd, "darkrank": ref_darkrank}
NON_DEFAULT_KWARGS = {
    "contrastive": {"margin": 1.1},
    "triplet": {"margin": 0.6},
    "multi_similarity": {"alpha": 1.5, "beta": 10.0, "lam": 0.3},
    "regression": {},
    "rkd": {"distance_weight": 0.5, "angle_weight": 3.0},
    "darkrank": {"alpha": 2.0, "beta": 1.5, "list_length": 2},
}


# ---------------------------------------------------------------- inputs


def tuple_inputs(batch, num_refs, dim, scale=1.0, seed=0):
    """Unit anchors; refs spread around them at varying distances; mixed positive masks.

    Row 0 has no negatives and row 1 (if any) has no positives.
    """
    torch.manual_seed(seed)
    anchor = F.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1)
    spread = 0.05 + 1.5 * torch.rand(batch, num_refs, 1, dtype=torch.float64)
    noise = torch.randn(batch, num_refs, dim, dtype=torch.float64)
    refs = F.normalize(anchor.unsqueeze(1) + spread * noise, dim=2)
    positive = torch.rand(batch, num_refs) < 0.5
    positive[0] = True
    if batch > 1:
        positive[1] = False
    return scale * anchor, scale * refs, positive


def relational_inputs(batch, dim, seed=0):
    torch.manual_seed(seed)
    teacher = F.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1)
    student = F.normalize(teacher + 0.7 * torch.randn(batch, dim, dtype=torch.float64), dim=1)
    return student, teacher


def unit(degrees):
    radians = math.radians(degrees)
    return [math.cos(radians), math.sin(radians)]


def grads(value, *inputs):
    """Gradients of ``value`` wrt ``inputs``; zeros when ``value`` is a constant (no terms)."""
    if not value.requires_grad:
        return tuple(torch.zeros_like(x) for x in inputs)
    return torch.autograd.grad(value, inputs, allow_unused=True)


# ---------------------------------------------------------------- agreement with references

TUPLE_SHAPES = [(1, 1, 3, 1.0), (3, 5, 4, 1.0), (6, 7, 16, 1.0), (4, 6, 8, 1.3)]


@pytest.mark.parametrize("name", TUPLE_LOSSES)
@pytest.mark.parametrize("non_default", [False, True])
@pytest.mark.parametrize(("batch", "num_refs", "dim", "scale"), TUPLE_SHAPES)
def test_tuple_loss_values_and_gradients_match_reference(
    name, non_default, batch, num_refs, dim, scale
):
    kwargs = NON_DEFAULT_KWARGS[name] if non_default else {}
    anchor, refs, positive = tuple_inputs(batch, num_refs, dim, scale, seed=batch * 10 + dim)
    anchor.requires_grad_(True)
    refs.requires_grad_(True)

    value = build_loss(name, **kwargs)(anchor, refs, positive)
    expected = TUPLE_REFERENCES[name](anchor, refs, positive, **kwargs)

    assert value.dim() == 0
    torch.testing.assert_close(value, expected, **TOLERANCE)
    for got, want in zip(grads(value, anchor, refs), grads(expected, anchor, refs), strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)


def test_random_inputs_exercise_both_sides_of_every_hinge():
    anchor, refs, positive = tuple_inputs(6, 7, 16, seed=76)
    distances = torch.linalg.vector_norm(anchor.unsqueeze(1) - refs, dim=2)
    negative_distances = distances[~positive]
    assert (negative_distances < 0.7).any() and (negative_distances > 0.7).any()
    squared = distances**2
    triplet_margins = [
        float(squared[b, p] - squared[b, n] + 0.1)
        for b in range(6)
        for p in range(7)
        for n in range(7)
        if positive[b, p] and not positive[b, n]
    ]
    assert min(triplet_margins) < 0 < max(triplet_margins)


@pytest.mark.parametrize("name", RELATIONAL_LOSSES)
@pytest.mark.parametrize("non_default", [False, True])
@pytest.mark.parametrize(("batch", "dim"), [(2, 3), (3, 4), (5, 8), (7, 5)])
def test_relational_loss_values_and_gradients_match_reference(name, non_default, batch, dim):
    kwargs = NON_DEFAULT_KWARGS[name] if non_default else {}
    student, teacher = relational_inputs(batch, dim, seed=batch * 10 + dim)
    student.requires_grad_(True)
    teacher.requires_grad_(True)

    value = build_loss(name, **kwargs)(student, teacher)
    expected = RELATIONAL_REFERENCES[name](student, teacher, **kwargs)

    assert value.dim() == 0
    torch.testing.assert_close(value, expected, **TOLERANCE)
    (student_grad, teacher_grad) = grads(value, student, teacher)
    (expected_grad,) = grads(expected, student)
    torch.testing.assert_close(student_grad, expected_grad, **TOLERANCE)
    assert teacher_grad is None


def test_darkrank_excludes_the_anchor_by_index_even_when_a_neighbour_ties_with_it():
    # α = β = 1, list length 2. Teacher rows 0 and 1 are identical, so for anchor 0 the
    # neighbour 1 ties with the anchor itself; the list must be [1, 2], never [0, 2].
    # Student (0,0), (1,0), (0.5,2): anchors 0 and 1 → log(1 + e^{1 − √4.25});
    # anchor 2 sees 0 and 1 tied in the teacher, but at equal student distance → log 2.
    teacher = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]], dtype=torch.float64)
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 2.0]], dtype=torch.float64)
    value = build_loss("darkrank", alpha=1.0, beta=1.0, list_length=2)(student, teacher)
    expected = (2 * math.log1p(math.exp(1 - math.sqrt(4.25))) + math.log(2)) / 3
    assert value.item() == pytest.approx(expected, rel=1e-9)
    reference = ref_darkrank(student, teacher, alpha=1.0, beta=1.0, list_length=2)
    torch.testing.assert_close(value, reference, **TOLERANCE)


@pytest.mark.parametrize("name", TUPLE_LOSSES)
def test_tuple_loss_gradcheck(name):
    anchor, refs, positive = tuple_inputs(3, 4, 5, seed=11)
    anchor.requires_grad_(True)
    refs.requires_grad_(True)
    loss = build_loss(name)
    assert torch.autograd.gradcheck(lambda a, r: loss(a, r, positive), (anchor, refs))


@pytest.mark.parametrize("name", RELATIONAL_LOSSES)
def test_relational_loss_gradcheck(name):
    student, teacher = relational_inputs(5, 4, seed=12)
    student.requires_grad_(True)
    loss = build_loss(name)
    assert torch.autograd.gradcheck(lambda s: loss(s, teacher), (student,))


@pytest.mark.parametrize("name", TUPLE_LOSSES)
def test_tuple_losses_sum_over_anchors(name):
    anchor, refs, positive = tuple_inputs(5, 4, 6, seed=5)
    loss = build_loss(name)
    per_anchor = [loss(anchor[b : b + 1], refs[b : b + 1], positive[b : b + 1]) for b in range(5)]
    torch.testing.assert_close(loss(anchor, refs, positive), sum(per_anchor), **TOLERANCE)


# ---------------------------------------------------------------- hand-worked cases


def test_contrastive_hand_worked():
    # anchor (1,0). Positive (0,1): d = √2, ½·d² = 1. Negative at angle θ = 2·asin(0.25):
    # chord 2·sin(θ/2) = 0.5 < m, ½·(0.7 − 0.5)² = 0.02. Negative (−1,0): d = 2 > m, 0.
    # Total 1.02.
    anchor = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    near_negative = unit(math.degrees(2 * math.asin(0.25)))
    refs = torch.tensor([[[0.0, 1.0], near_negative, [-1.0, 0.0]]], dtype=torch.float64)
    positive = torch.tensor([[True, False, False]])
    value = ContrastiveLoss(margin=0.7)(anchor, refs, positive)
    torch.testing.assert_close(value, torch.tensor(1.02, dtype=torch.float64), **TOLERANCE)


def test_triplet_hand_worked():
    # anchor (1,0). Positives: 60° (d² = 2 − 2·cos 60° = 1) and (1,0) itself (d² = 0).
    # Negatives: (0,1) (d² = 2) and (1,0) (d² = 0). With m = 0.1 the four pairs give
    # [1−2+0.1]₊ = 0, [1−0+0.1]₊ = 1.1, [0−2+0.1]₊ = 0, [0−0+0.1]₊ = 0.1; total 1.2.
    anchor = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    refs = torch.tensor([[unit(60), [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    positive = torch.tensor([[True, True, False, False]])
    value = build_loss("triplet")(anchor, refs, positive)
    torch.testing.assert_close(value, torch.tensor(1.2, dtype=torch.float64), **TOLERANCE)


def test_multi_similarity_hand_worked():
    # anchor (1,0); positive (0,1): s = 0; negative (1,0): s = 1. α = 2, β = 40, λ = 0.5:
    # ½·log(1 + e^{−2·(0 − 0.5)}) + (1/40)·log(1 + e^{40·(1 − 0.5)}) = ½·log(1+e) + log(1+e²⁰)/40.
    anchor = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    refs = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    positive = torch.tensor([[True, False]])
    expected = 0.5 * math.log(1 + math.e) + math.log1p(math.exp(20)) / 40
    value = build_loss("multi_similarity")(anchor, refs, positive)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    assert value.item() == pytest.approx(1.1566308438, rel=1e-9)


def test_regression_is_minus_sum_of_cosines_and_ignores_negatives():
    # cos 60° = 0.5 and cos 0° = 1 for the positives; the negatives are ignored: −1.5.
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    refs = torch.tensor([[unit(60), [1.0, 0.0]], [[0.0, 1.0], [0.0, -1.0]]], dtype=torch.float64)
    positive = torch.tensor([[True, False], [True, False]])
    value = build_loss("regression")(anchor, refs, positive)
    torch.testing.assert_close(value, torch.tensor(-1.5, dtype=torch.float64), **TOLERANCE)


def test_regression_equals_half_squared_distance_minus_number_of_positives():
    student, teacher = relational_inputs(5, 8, seed=2)
    value = build_loss("regression")(student, teacher.unsqueeze(1), torch.ones(5, 1, dtype=bool))
    half_squared = 0.5 * ((student - teacher) ** 2).sum()
    torch.testing.assert_close(value, half_squared - 5, **TOLERANCE)


def test_darkrank_hand_worked_kept_and_swapped_orders():
    # α = β = 1, list length 2, teacher points 0, 1, 3 on a line; scores are −distance.
    # Each anchor's loss is log(1 + e^{s₂ − s₁}) for the teacher's order (1st, 2nd neighbour).
    # Student = teacher: anchor 0 → log(1+e^{−2}); anchors 1 and 2 → log(1+e^{−1}).
    # Student points 0, 3, 1 (items 1 and 2 swapped): anchor 0 → log(1+e²); 1, 2 → log(1+e).
    teacher = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    swapped = torch.tensor([[0.0], [3.0], [1.0]], dtype=torch.float64)
    loss = build_loss("darkrank", alpha=1.0, beta=1.0, list_length=2)
    kept_expected = (math.log1p(math.exp(-2)) + 2 * math.log1p(math.exp(-1))) / 3
    swapped_expected = (math.log1p(math.exp(2)) + 2 * math.log1p(math.e)) / 3
    assert loss(teacher, teacher).item() == pytest.approx(kept_expected, rel=1e-9)
    assert loss(swapped, teacher).item() == pytest.approx(swapped_expected, rel=1e-9)


def test_darkrank_reversed_ranking_costs_more_than_the_teachers_own():
    # Defaults (α = β = 3, list length 4). Anchor 0 at the origin; teacher neighbours at
    # 0.5, 1.0, 1.5, 2.0 along one axis; the student places them at 2.0, 1.5, 1.0, 0.5,
    # reversing anchor 0's list.
    teacher = torch.tensor([[0.0], [0.5], [1.0], [1.5], [2.0]], dtype=torch.float64)
    reversed_student = torch.tensor([[0.0], [2.0], [1.5], [1.0], [0.5]], dtype=torch.float64)
    loss = build_loss("darkrank")
    assert loss(reversed_student, teacher) > loss(teacher, teacher) + 1.0


def test_rkd_is_zero_for_a_scaled_or_rotated_teacher_and_positive_otherwise():
    student, teacher = relational_inputs(6, 5, seed=4)
    loss = build_loss("rkd")
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    assert loss(3.7 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(teacher @ rotation, teacher).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(student, teacher).item() > 1e-3


def test_contr_plus_equals_contrastive_with_teacher_anchor_appended_by_hand():
    anchor, refs, positive = tuple_inputs(4, 3, 6, seed=9)
    teacher_anchor = F.normalize(anchor + 0.3 * torch.randn_like(anchor), dim=1)
    refs_plus, positive_plus = with_self_positive(teacher_anchor, refs, positive)

    assert refs_plus.shape == (4, 4, 6) and positive_plus.shape == (4, 4)
    by_hand_refs = torch.stack([torch.cat([teacher_anchor[b : b + 1], refs[b]]) for b in range(4)])
    by_hand_positive = torch.tensor([[True, *row] for row in positive.tolist()])
    torch.testing.assert_close(refs_plus, by_hand_refs, rtol=0, atol=0)
    assert torch.equal(positive_plus, by_hand_positive)

    loss = build_loss("contrastive")
    contr_plus = loss(anchor, refs_plus, positive_plus)
    torch.testing.assert_close(contr_plus, loss(anchor, by_hand_refs, by_hand_positive))
    self_term = 0.5 * ((anchor - teacher_anchor) ** 2).sum()
    torch.testing.assert_close(contr_plus, loss(anchor, refs, positive) + self_term)


# ---------------------------------------------------------------- degenerate inputs


def _assert_finite_value_and_grads(value, *inputs):
    assert torch.isfinite(value)
    for grad in grads(value, *inputs):
        assert grad is None or torch.isfinite(grad).all()


@pytest.mark.parametrize("name", TUPLE_LOSSES)
@pytest.mark.parametrize("case", ["no_negatives", "no_positives", "single_ref", "identical"])
def test_tuple_losses_stay_finite_on_degenerate_inputs(name, case):
    anchor, refs, positive = tuple_inputs(3, 4, 5, seed=1)
    if case == "no_negatives":
        positive = torch.ones_like(positive)
    elif case == "no_positives":
        positive = torch.zeros_like(positive)
    elif case == "single_ref":
        refs, positive = refs[:, :1], positive[:, :1]
    else:
        refs = anchor.unsqueeze(1).repeat(1, 4, 1)
    for dtype in (torch.float32, torch.float64):
        a = anchor.to(dtype).requires_grad_(True)
        r = refs.to(dtype).requires_grad_(True)
        _assert_finite_value_and_grads(build_loss(name)(a, r, positive), a, r)


def test_identical_vectors_give_the_exact_hinge_values():
    # d = 0: positives cost 0, each negative ½·m² (contrastive); each pair costs m (triplet).
    anchor = torch.tensor([[0.6, 0.8]])
    refs = anchor.unsqueeze(1).repeat(1, 3, 1)
    positive = torch.tensor([[True, False, False]])
    contrastive = build_loss("contrastive")(anchor, refs, positive)
    triplet = build_loss("triplet")(anchor, refs, positive)
    assert contrastive.item() == pytest.approx(2 * 0.5 * 0.7**2, rel=1e-5)
    assert triplet.item() == pytest.approx(2 * 0.1, rel=1e-5)


@pytest.mark.parametrize("name", RELATIONAL_LOSSES)
@pytest.mark.parametrize("case", ["all_rows_identical", "student_rows_identical", "batch_of_two"])
def test_relational_losses_stay_finite_on_degenerate_inputs(name, case):
    student, teacher = relational_inputs(5, 4, seed=6)
    if case == "all_rows_identical":
        student = student[:1].repeat(5, 1)
        teacher = teacher[:1].repeat(5, 1)
    elif case == "student_rows_identical":
        student = student[:1].repeat(5, 1)
    else:
        student, teacher = student[:2], teacher[:2]
    for dtype in (torch.float32, torch.float64):
        s = student.to(dtype).requires_grad_(True)
        _assert_finite_value_and_grads(build_loss(name)(s, teacher.to(dtype)), s)


def test_relational_losses_on_a_batch_of_identical_rows():
    # RKD: both batches collapse the same way → 0. DarkRank: all 4 listed scores are equal,
    # so −log P = Σ_t log(number left) = log 4!.
    rows = F.normalize(torch.randn(1, 4, dtype=torch.float64), dim=1).repeat(6, 1)
    assert build_loss("rkd")(rows, rows).item() == pytest.approx(0.0, abs=1e-12)
    assert build_loss("darkrank")(rows, rows).item() == pytest.approx(math.log(24), rel=1e-9)


# ---------------------------------------------------------------- validation and registry


def _good_tuple():
    return torch.randn(2, 3), torch.randn(2, 4, 3), torch.ones(2, 4, dtype=torch.bool)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda a, r, p: (a.index_fill(1, torch.tensor([0]), float("nan")), r, p),
            r"anchor contains NaN \(2 of 6 values\)",
        ),
        (
            lambda a, r, p: (a, r.index_fill(2, torch.tensor([1]), float("inf")), p),
            r"refs contains Inf",
        ),
        (
            lambda a, r, p: (a, r.index_fill(0, torch.tensor([1]), float("nan")), p),
            r"refs contains NaN",
        ),
        (lambda a, r, p: (a[0], r, p), r"anchor must be a 2-D tensor \(B, D\), got shape \(3,\)"),
        (lambda a, r, p: (a, r[0], p), r"refs must be a 3-D tensor"),
        (
            lambda a, r, p: (a, r[..., :2], p),
            r"refs shape \(2, 4, 2\) does not match anchor shape \(2, 3\): expected \(2, K, 3\)",
        ),
        (lambda a, r, p: (a, r[:1], p), r"refs shape \(1, 4, 3\) does not match anchor"),
        (lambda a, r, p: (a, r, p.float()), r"positive must be a bool tensor, got torch.float32"),
        (lambda a, r, p: (a, r, p[:, :3]), r"positive must have shape \(B, K\) = \(2, 4\)"),
        (lambda a, r, p: (a, r, p.tolist()), r"positive must be a bool torch.Tensor, got list"),
        (lambda a, r, p: (a.long(), r, p), r"anchor must be a floating-point tensor"),
        (lambda a, r, p: (a, r[:, :0], p[:, :0]), r"refs \(B, K, D\) is empty"),
    ],
)
@pytest.mark.parametrize("name", TUPLE_LOSSES)
def test_bad_tuple_inputs_raise_specific_errors(name, mutate, message):
    with pytest.raises(AsymretError, match=message):
        build_loss(name)(*mutate(*_good_tuple()))


@pytest.mark.parametrize("name", RELATIONAL_LOSSES)
def test_bad_relational_inputs_raise_specific_errors(name):
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    loss = build_loss(name)
    with pytest.raises(AsymretError, match=r"teacher contains NaN"):
        loss(student, teacher.index_fill(0, torch.tensor([2]), float("nan")))
    with pytest.raises(AsymretError, match=r"student contains Inf"):
        loss(student.index_fill(1, torch.tensor([0]), float("-inf")), teacher)
    with pytest.raises(AsymretError, match=r"student shape \(4, 3\) and teacher shape \(4, 2\)"):
        loss(student, teacher[:, :2])
    with pytest.raises(AsymretError, match=r"at least 2 vectors, got shape \(1, 3\)"):
        loss(student[:1], teacher[:1])
    with pytest.raises(AsymretError, match=r"teacher must be a 2-D tensor"):
        loss(student, teacher[0])


def test_with_self_positive_rejects_mismatched_teacher_anchor():
    anchor, refs, positive = _good_tuple()
    with pytest.raises(AsymretError, match=r"does not match teacher_anchor shape \(2, 2\)"):
        with_self_positive(anchor[:, :2], refs, positive)


def test_registry_lists_builds_and_explains_errors():
    neighbourhood = ["csd", "raml", "rank_order"]  # tests/test_losses_neighbourhood.py
    assert list_losses() == sorted([*TUPLE_LOSSES, *RELATIONAL_LOSSES, *neighbourhood])
    assert all(isinstance(build_loss(name), TupleLoss) for name in TUPLE_LOSSES)
    assert all(isinstance(build_loss(name), RelationalLoss) for name in RELATIONAL_LOSSES)
    assert build_loss("contrastive", margin=0.5).margin == 0.5
    known = ("contrastive, csd, darkrank, multi_similarity, raml, rank_order, regression, rkd, "
             "triplet")
    with pytest.raises(AsymretError, match=f"unknown loss 'contrastiv'; known losses: {known}"):
        build_loss("contrastiv")
    with pytest.raises(AsymretError, match=r"loss 'triplet': .*margn.*accepted parameters: margin"):
        build_loss("triplet", margn=0.2)
    with pytest.raises(AsymretError, match=r"'regression': .*margin.*accepted parameters: none"):
        build_loss("regression", margin=0.7)
    with pytest.raises(AsymretError, match=r"contrastive margin must be > 0, got -1.0"):
        build_loss("contrastive", margin=-1)
    with pytest.raises(AsymretError, match=r"list_length must be an integer >= 1, got 0"):
        build_loss("darkrank", list_length=0)


def test_register_loss_adds_a_buildable_loss_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(losses_base, "_REGISTRY", dict(losses_base._REGISTRY))

    @register_loss("mean_similarity")
    class MeanSimilarity(TupleLoss):
        def compute(self, anchor, refs, positive):
            return torch.einsum("bd,bkd->bk", anchor, refs).mean()

    assert "mean_similarity" in list_losses()
    anchor, refs, positive = _good_tuple()
    assert isinstance(build_loss("mean_similarity"), MeanSimilarity)
    with pytest.raises(AsymretError, match="anchor contains NaN"):
        build_loss("mean_similarity")(anchor * float("nan"), refs, positive)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("mean_similarity")(MeanSimilarity)
