"""CSD, RAML and rank-order losses against slow loops written straight from their formulas,
hand-worked cases, gradcheck, and bad inputs.

The reference functions use Python loops and scalar math only, no asymret helper.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from asymret.errors import AsymretError
from asymret.losses import (
    CSDLoss,
    NeighbourLoss,
    RAMLLoss,
    RankOrderLoss,
    RelationalLoss,
    build_loss,
)

TOLERANCE = {"rtol": 1e-9, "atol": 1e-10}


# ---------------------------------------------------------------- slow reference loops


def _dot(x, y):
    return sum(x[i] * y[i] for i in range(len(x)))


def _context(teacher_anchor_b, neighbours_b, include_self):
    items = [neighbours_b[k] for k in range(neighbours_b.shape[0])]
    return [teacher_anchor_b, *items] if include_self else items


def ref_csd(anchor, teacher_anchor, neighbours, teacher_temperature=0.01,
            student_temperature=0.01, include_self=True):
    total = 0.0
    for b in range(anchor.shape[0]):
        context = _context(teacher_anchor[b], neighbours[b], include_self)
        teacher_logits = [_dot(teacher_anchor[b], c) / teacher_temperature for c in context]
        student_logits = [_dot(anchor[b], c) / student_temperature for c in context]
        teacher_norm = torch.logsumexp(torch.stack(teacher_logits), 0)
        student_norm = torch.logsumexp(torch.stack(student_logits), 0)
        for t, s in zip(teacher_logits, student_logits, strict=True):
            log_p, log_q = t - teacher_norm, s - student_norm
            total = total + torch.exp(log_p) * (log_p - log_q)
    return total / anchor.shape[0]


def ref_rank_order(anchor, teacher_anchor, neighbours, temperature=0.1, include_self=True):
    total = 0.0
    for b in range(anchor.shape[0]):
        context = _context(teacher_anchor[b], neighbours[b], include_self)
        teacher = [_dot(teacher_anchor[b], c) for c in context]
        student = [_dot(anchor[b], c) for c in context]
        n = len(context)
        row = 0.0
        for i in range(n):
            for j in range(n):
                difference = teacher[j] - teacher[i]
                step = 1.0 if difference > 0 else (0.5 if difference == 0 else 0.0)
                soft = 1 / (1 + torch.exp(-(student[j] - teacher[i]) / temperature))
                row = row + (step - soft) ** 2
        total = total + row / n**2
    return total / anchor.shape[0]


def ref_raml(student, teacher, cross_weight=0.7482, student_weight=0.6778):
    size = student.shape[0]
    absolute = sum((1 - _dot(student[i], teacher[i])) ** 2 for i in range(size)) / size
    cross = own = 0.0
    for i in range(size):
        for j in range(size):
            if i != j:
                gg = _dot(teacher[i], teacher[j])
                cross = cross + (_dot(student[i], teacher[j]) - gg) ** 2
                own = own + (_dot(student[i], student[j]) - gg) ** 2
    pairs = size * (size - 1)
    return absolute + cross_weight * cross / pairs + student_weight * own / pairs


NEIGHBOUR_REFERENCES = {"csd": ref_csd, "rank_order": ref_rank_order}
NON_DEFAULT = {
    "csd": {"teacher_temperature": 0.05, "student_temperature": 0.2, "include_self": False},
    "rank_order": {"temperature": 0.03, "include_self": False},
    "raml": {"cross_weight": 2.0, "student_weight": 0.0},
}


# ---------------------------------------------------------------- inputs


def neighbour_inputs(batch, k, dim, seed=0):
    """Unit teacher anchors, student anchors near them, unit neighbours around the teacher's."""
    torch.manual_seed(seed)
    teacher_anchor = F.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1)
    anchor = F.normalize(teacher_anchor + 0.6 * torch.randn(batch, dim, dtype=torch.float64),
                         dim=1)
    spread = 0.3 + torch.rand(batch, k, 1, dtype=torch.float64)
    neighbours = F.normalize(
        teacher_anchor.unsqueeze(1) + spread * torch.randn(batch, k, dim, dtype=torch.float64),
        dim=2,
    )
    return anchor, teacher_anchor, neighbours


def relational_inputs(batch, dim, seed=0):
    torch.manual_seed(seed)
    teacher = F.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1)
    student = F.normalize(teacher + 0.7 * torch.randn(batch, dim, dtype=torch.float64), dim=1)
    return student, teacher


# ---------------------------------------------------------------- agreement with references


@pytest.mark.parametrize("name", ["csd", "rank_order"])
@pytest.mark.parametrize("non_default", [False, True])
@pytest.mark.parametrize(("batch", "k", "dim"), [(1, 1, 3), (3, 4, 5), (5, 7, 8)])
def test_neighbour_loss_values_and_gradients_match_reference(name, non_default, batch, k, dim):
    kwargs = NON_DEFAULT[name] if non_default else {}
    anchor, teacher_anchor, neighbours = neighbour_inputs(batch, k, dim, seed=batch * 7 + k)
    anchor.requires_grad_(True)
    loss = build_loss(name, **kwargs)
    assert isinstance(loss, NeighbourLoss)

    value = loss(anchor, teacher_anchor, neighbours)
    expected = NEIGHBOUR_REFERENCES[name](anchor, teacher_anchor, neighbours, **kwargs)

    assert value.dim() == 0
    torch.testing.assert_close(value, expected, **TOLERANCE)
    (got,) = torch.autograd.grad(value, anchor)
    (want,) = torch.autograd.grad(expected, anchor)
    torch.testing.assert_close(got, want, **TOLERANCE)


@pytest.mark.parametrize("non_default", [False, True])
@pytest.mark.parametrize(("batch", "dim"), [(2, 3), (4, 5), (7, 6)])
def test_raml_values_and_gradients_match_reference(non_default, batch, dim):
    kwargs = NON_DEFAULT["raml"] if non_default else {}
    student, teacher = relational_inputs(batch, dim, seed=batch + dim)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    loss = build_loss("raml", **kwargs)
    assert isinstance(loss, RelationalLoss)

    value = loss(student, teacher)
    expected = ref_raml(student, teacher, **kwargs)

    torch.testing.assert_close(value, expected, **TOLERANCE)
    student_grad, teacher_grad = torch.autograd.grad(value, (student, teacher),
                                                     allow_unused=True)
    (want,) = torch.autograd.grad(expected, student)
    torch.testing.assert_close(student_grad, want, **TOLERANCE)
    assert teacher_grad is None  # the teacher side is fixed


@pytest.mark.parametrize("name", ["csd", "rank_order"])
def test_neighbour_loss_gradcheck(name):
    # Temperatures high enough that finite differences of 1e-6 stay in the linear regime.
    kwargs = {"csd": {"teacher_temperature": 0.1, "student_temperature": 0.2},
              "rank_order": {"temperature": 0.5}}[name]
    anchor, teacher_anchor, neighbours = neighbour_inputs(3, 4, 5, seed=3)
    anchor.requires_grad_(True)
    loss = build_loss(name, **kwargs)
    assert torch.autograd.gradcheck(lambda a: loss(a, teacher_anchor, neighbours), (anchor,))


def test_raml_gradcheck():
    student, teacher = relational_inputs(5, 4, seed=12)
    student.requires_grad_(True)
    loss = build_loss("raml")
    assert torch.autograd.gradcheck(lambda s: loss(s, teacher), (student,))


def test_defaults_are_the_documented_ones():
    assert (CSDLoss().teacher_temperature, CSDLoss().student_temperature) == (0.01, 0.01)
    assert CSDLoss().include_self and RankOrderLoss().include_self
    assert RankOrderLoss().temperature == 0.1
    assert (RAMLLoss().cross_weight, RAMLLoss().student_weight) == (0.7482, 0.6778)


# ---------------------------------------------------------------- hand-worked cases


def test_csd_is_zero_for_a_student_equal_to_the_teacher_and_positive_otherwise():
    anchor, teacher_anchor, neighbours = neighbour_inputs(4, 6, 5, seed=1)
    loss = build_loss("csd")
    assert loss(teacher_anchor, teacher_anchor, neighbours).item() == pytest.approx(0, abs=1e-12)
    assert loss(anchor, teacher_anchor, neighbours).item() > 0.01


def test_csd_hand_worked_two_neighbours():
    # 2-D, g(a) = (1, 0), neighbours at 0° and 90°; context [g(a), n1, n2] without/with self.
    # τ_g = τ_s = 1, student f(a) at 90°: teacher logits (1, 1, 0), student logits (0, 0, 1).
    teacher_anchor = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    anchor = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    neighbours = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    loss = build_loss("csd", teacher_temperature=1.0, student_temperature=1.0)
    p = [math.e / (2 * math.e + 1)] * 2 + [1 / (2 * math.e + 1)]
    q = [1 / (2 + math.e)] * 2 + [math.e / (2 + math.e)]
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert loss(anchor, teacher_anchor, neighbours).item() == pytest.approx(expected, rel=1e-12)
    # Without self: teacher logits (1, 0), student logits (0, 1): KL of swapped distributions.
    no_self = build_loss("csd", teacher_temperature=1.0, student_temperature=1.0,
                         include_self=False)
    p, q = [math.e / (1 + math.e), 1 / (1 + math.e)], [1 / (1 + math.e), math.e / (1 + math.e)]
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert no_self(anchor, teacher_anchor, neighbours).item() == pytest.approx(expected, rel=1e-12)


def test_rank_order_hand_worked_and_its_teacher_step_on_ties():
    # One anchor, no self, two neighbours with teacher similarities t = (0.5, 0.5) (a tie),
    # student similarities s = (0.5, 0.5): every H is ½ and every σ(0) is ½ → loss 0.
    teacher_anchor = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    tied = torch.tensor([[[0.5, math.sqrt(0.75)], [0.5, -math.sqrt(0.75)]]], dtype=torch.float64)
    loss = build_loss("rank_order", temperature=0.1, include_self=False)
    assert loss(teacher_anchor, teacher_anchor, tied).item() == pytest.approx(0, abs=1e-15)
    # Student at 90°: s = (√0.75, −√0.75). Row i has t_i = 0.5; H = ½ everywhere; σ terms:
    # σ((√0.75 − 0.5)/0.1) and σ((−√0.75 − 0.5)/0.1), each in both rows.
    anchor = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    sigma = [1 / (1 + math.exp(-(x - 0.5) / 0.1)) for x in (math.sqrt(0.75), -math.sqrt(0.75))]
    expected = 2 * sum((0.5 - s) ** 2 for s in sigma) / 4
    assert loss(anchor, teacher_anchor, tied).item() == pytest.approx(expected, rel=1e-12)


def test_rank_order_costs_more_for_a_reversed_order_than_for_the_teachers_own():
    _, teacher_anchor, neighbours = neighbour_inputs(1, 5, 6, seed=9)
    order = torch.einsum("bd,bkd->bk", teacher_anchor, neighbours).argsort(dim=1, descending=True)
    ranked = neighbours[:, order[0]]
    loss = build_loss("rank_order")
    keeps_order = loss(teacher_anchor, teacher_anchor, ranked)
    # The student whose similarities reverse the teacher's order: minus the teacher anchor
    # reflected through the neighbours' mean keeps no pair in order.
    reversed_student = F.normalize(2 * ranked.mean(dim=1) - 3 * teacher_anchor, dim=1)
    assert loss(reversed_student, teacher_anchor, ranked) > keeps_order + 0.05


def test_raml_is_zero_for_a_student_equal_to_the_teacher():
    _, teacher = relational_inputs(5, 4, seed=2)
    student, _ = relational_inputs(5, 4, seed=3)
    loss = build_loss("raml")
    assert loss(teacher, teacher).item() == pytest.approx(0, abs=1e-14)
    assert loss(student, teacher).item() > 0.1


def test_raml_hand_worked_pair():
    # B = 2, 2-D: g = (1,0), (0,1); f = (1,0), (1,0). f·g diag = (1, 0) → absolute (0 + 1)/2.
    # Off-diagonal g·g = 0; f·g: f0·g1 = 0, f1·g0 = 1 → cross (0 + 1)/2; f·f off = 1 → own 1.
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    value = build_loss("raml", cross_weight=2.0, student_weight=3.0)(student, teacher)
    assert value.item() == pytest.approx(0.5 + 2.0 * 0.5 + 3.0 * 1.0, rel=1e-12)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda a, t, n: (a, t[:2], n), r"teacher_anchor shape \(2, 5\) does not match anchor"),
    (lambda a, t, n: (a, t, n[:, :, :4]), r"neighbours shape \(3, 4, 4\) does not match"),
    (lambda a, t, n: (a, t, n[0]), r"neighbours must be a 3-D tensor \(B, K, D\)"),
    (lambda a, t, n: (a * float("nan"), t, n), r"anchor contains NaN"),
    (lambda a, t, n: (a, t, n * float("inf")), r"neighbours contains Inf"),
    (lambda a, t, n: (a.long(), t, n), r"anchor must be a floating-point tensor"),
])
@pytest.mark.parametrize("name", ["csd", "rank_order"])
def test_bad_neighbour_inputs_raise_one_clear_error(name, mutate, message):
    inputs = mutate(*neighbour_inputs(3, 4, 5, seed=0))
    with pytest.raises(AsymretError, match=message):
        build_loss(name)(*inputs)


def test_bad_parameters_are_named():
    with pytest.raises(AsymretError, match=r"csd teacher_temperature must be > 0, got 0.0"):
        build_loss("csd", teacher_temperature=0)
    with pytest.raises(AsymretError, match=r"rank_order temperature must be > 0"):
        build_loss("rank_order", temperature=-1)
    with pytest.raises(AsymretError, match=r"raml cross_weight must be >= 0"):
        build_loss("raml", cross_weight=-0.1)
    with pytest.raises(AsymretError, match=r"loss 'csd': .*accepted parameters: "
                                           r"teacher_temperature, student_temperature"):
        build_loss("csd", k=5)
