"""Loss sums ("contrastive + 0.5*csd"): parsing, values against the terms added by hand, the
configuration from YAML and the command line, and the trainer feeding every kind of term."""

import pytest
import torch
import torch.nn.functional as F

from asymret.errors import AsymretError
from asymret.losses import LossInputs, LossSum, LossTerm, build_loss, parse_loss_spec
from asymret.neighbours import cache_paths, teacher_neighbours
from asymret.train import load_config
from asymret.train.loop import Trainer, train
from asymret.train.steps import tuple_references
from train_fixtures import STUDENT, write_config

# ---------------------------------------------------------------- the specification


@pytest.mark.parametrize(("spec", "terms"), [
    ("csd", [(1.0, "csd")]),
    ("contrastive + 0.5*csd", [(1.0, "contrastive"), (0.5, "csd")]),
    ("2 * regression+1e-2*raml + rank_order",
     [(2.0, "regression"), (0.01, "raml"), (1.0, "rank_order")]),
])
def test_a_specification_parses_into_weighted_terms(spec, terms):
    assert parse_loss_spec(spec) == tuple(LossTerm(w, n) for w, n in terms)


@pytest.mark.parametrize(("spec", "message"), [
    ("", r"loss.name='': expected a loss name or a sum"),
    ("contrastive + ", r"term '' is not NAME or WEIGHT\*NAME"),
    ("contrastive + 0.5 csd", r"term '0.5 csd' is not NAME or WEIGHT\*NAME"),
    ("contrastive + x*csd", r"term 'x\*csd' has weight 'x'; expected a positive number"),
    ("contrastive + 0*csd", r"term '0\*csd' has weight '0'"),
    ("contrastive + -1*csd", r"term '-1\*csd' has weight '-1'"),
    ("contrastive + nan*csd", r"has weight 'nan'"),
    ("contrastive + csdd", r"unknown loss 'csdd'; known losses: contrastive, csd"),
    ("csd + 0.5*csd", r"loss 'csd' appears twice"),
])
def test_a_bad_specification_is_one_clear_error(spec, message):
    with pytest.raises(AsymretError, match=message):
        parse_loss_spec(spec)


def _inputs(batch=4, k=3, refs=5, dim=6, seed=0):
    torch.manual_seed(seed)
    teacher_anchor = F.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1)
    anchor = F.normalize(teacher_anchor + 0.5 * torch.randn(batch, dim, dtype=torch.float64),
                         dim=1).requires_grad_(True)
    neighbours = F.normalize(torch.randn(batch, k, dim, dtype=torch.float64), dim=2)
    references = F.normalize(torch.randn(batch, refs, dim, dtype=torch.float64), dim=2)
    positive = torch.zeros(batch, refs, dtype=torch.bool)
    positive[:, 0] = True
    return LossInputs(anchor=anchor, refs=references, positive=positive, student=anchor,
                      teacher=teacher_anchor, teacher_anchor=teacher_anchor,
                      neighbours=neighbours)


def test_a_sum_equals_its_terms_added_by_hand():
    inputs = _inputs()
    loss = LossSum("contrastive + 0.5*csd + 2*raml",
                   {"contrastive": {"margin": 0.5}, "csd": {"student_temperature": 0.1}})
    by_hand = (build_loss("contrastive", margin=0.5)(inputs.anchor, inputs.refs, inputs.positive)
               + 0.5 * build_loss("csd", student_temperature=0.1)(
                   inputs.anchor, inputs.teacher_anchor, inputs.neighbours)
               + 2 * build_loss("raml")(inputs.student, inputs.teacher))
    value = loss(inputs)
    torch.testing.assert_close(value, by_hand, rtol=1e-12, atol=1e-12)
    assert loss.kinds == {"tuple", "neighbour", "relational"}
    (got,) = torch.autograd.grad(value, inputs.anchor)
    (want,) = torch.autograd.grad(by_hand, inputs.anchor)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_single_loss_is_returned_exactly_and_a_missing_input_is_named():
    inputs = _inputs()
    single = LossSum("contrastive", {"margin": 0.4})
    assert torch.equal(single(inputs), build_loss("contrastive", margin=0.4)(
        inputs.anchor, inputs.refs, inputs.positive))
    with pytest.raises(AsymretError, match="loss term 'csd' needs neighbours"):
        LossSum("csd")(LossInputs(anchor=inputs.anchor, teacher_anchor=inputs.teacher_anchor))


def test_a_relational_term_skips_a_one_anchor_step_in_a_sum_but_not_alone():
    inputs = _inputs(batch=1)
    loss = LossSum("contrastive + raml")
    torch.testing.assert_close(loss(inputs), build_loss("contrastive")(
        inputs.anchor, inputs.refs, inputs.positive))
    with pytest.raises(AsymretError, match="at least 2 vectors"):
        LossSum("raml")(inputs)


def test_plain_params_go_to_every_term_that_takes_them_and_per_term_params_win():
    loss = LossSum("contrastive + triplet + csd",
                   {"margin": 0.3, "triplet": {"margin": 0.2}, "csd": {"include_self": False}})
    contrastive, triplet, csd = loss.losses
    assert (contrastive.margin, triplet.margin, csd.include_self) == (0.3, 0.2, False)
    with pytest.raises(AsymretError, match=r"loss.params.alpha: neither a term of the loss sum "
                                           r"\(contrastive, csd\) nor a parameter"):
        LossSum("contrastive + csd", {"alpha": 2.0})
    with pytest.raises(AsymretError, match=r"loss.params.csd must be a mapping"):
        LossSum("contrastive + csd", {"csd": 0.1})
    with pytest.raises(AsymretError, match=r"loss 'csd': .*accepted parameters"):
        LossSum("contrastive + csd", {"csd": {"k": 3}})


# ---------------------------------------------------------------- configuration


def test_a_sum_with_per_term_params_from_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "models: {teacher: t}\n"
        "loss:\n"
        "  name: contrastive + 0.25*csd\n"
        "  params: {contrastive: {margin: 0.6}, csd: {teacher_temperature: 0.05}}\n"
        "  positives: pair+self\n"
    )
    config = load_config(path)
    assert config.uses_neighbours and not config.relational and config.needs_teacher
    loss = LossSum(config.loss.name, config.loss.params)
    assert [term.weight for term in loss.terms] == [1.0, 0.25]
    assert loss.losses[0].margin == 0.6 and loss.losses[1].teacher_temperature == 0.05


def test_a_sum_from_command_line_overrides_on_a_preset():
    config = load_config("asym-contrastive-plus", [
        "loss.name=contrastive + 0.5*csd", "loss.params.csd.student_temperature=0.1",
        "loss.params.csd.include_self=false", "mining.neighbours=32",
    ])
    assert config.loss.params == {"margin": 0.7, "csd": {"student_temperature": 0.1,
                                                         "include_self": False}}
    loss = LossSum(config.loss.name, config.loss.params)
    assert loss.losses[0].margin == 0.7
    assert (loss.losses[1].student_temperature, loss.losses[1].include_self) == (0.1, False)
    assert config.mining.neighbours == 32


@pytest.mark.parametrize(("overrides", "message"), [
    (["loss.name=contrastive + x*csd"], r"term 'x\*csd' has weight 'x'"),
    (["loss.name=contrastive + cdd"], r"unknown loss 'cdd'"),
    (["loss.name=contrastive + csd", "loss.params.raml.cross_weight=1"],
     r"loss.params.raml: neither a term of the loss sum"),
    (["loss.name=csd", "mining.neighbours=0"], r"mining.neighbours must be at least 1"),
    (["loss.name=csd", "models.teacher=null"], r"loss csd .*needs models.teacher"),
])
def test_bad_sums_in_the_configuration_are_one_clear_error(overrides, message):
    with pytest.raises(AsymretError, match=message):
        load_config("asym-contrastive-plus", overrides)


@pytest.mark.parametrize("preset", ["csd", "raml", "rank-order", "asym-contrastive-plus-csd",
                                    "asym-contrastive-plus-rank-order"])
def test_the_new_presets_build_their_loss(preset):
    config = load_config(preset)
    loss = LossSum(config.loss.name, config.loss.params)
    assert loss.terms and config.needs_teacher


# ---------------------------------------------------------------- the trainer


def _trainer(tmp_path, data_root, teacher_dir, loss, mining=None):
    config = load_config(write_config(
        tmp_path / "c.yaml", data_root, tmp_path / "run", teacher_dir, loss=loss,
        mining={"neighbours": 5, **(mining or {})}, optim={"epochs": 1},
        data={"val_sets": []},
    ))
    trainer = Trainer(config)
    trainer._prepare_run_dir()
    trainer._build()
    trainer.student.eval()
    return trainer


def test_the_trainer_mines_the_banks_neighbours_once_and_caches_them(tmp_path, data_root,
                                                                      teacher_dir):
    trainer = _trainer(tmp_path, data_root, teacher_dir, {"name": "contrastive + csd"})
    assert torch.equal(trainer.neighbours, teacher_neighbours(trainer.bank, 5))
    assert cache_paths(trainer.bank_store, 5)[0].is_file()


def test_contr_plus_and_csd_in_one_step_equal_the_terms_by_hand(tmp_path, data_root,
                                                                teacher_dir):
    trainer = _trainer(tmp_path, data_root, teacher_dir,
                       {"name": "contrastive + 0.5*csd + 0.3*raml", "positives": "pair+self"})
    tuples = trainer._epoch_tuples(0)
    rows = trainer._step_rows(tuples)[0]
    needed = trainer._needed_images(rows, tuples)
    images = [trainer.train_images[int(i)][0] for i in needed]
    value, skipped = trainer._step_loss(rows, tuples, images)

    queries = tuples.query_indices[rows]
    anchors = torch.cat([trainer.student(image[None]) for image in images])
    g_a = trainer._bank_rows(queries)
    refs, positive = tuple_references(trainer._bank_rows(tuples.positive_indices[rows]),
                                      trainer._bank_rows(tuples.negative_indices[rows]),
                                      "pair+self", g_a)
    neighbours = trainer._bank_rows(teacher_neighbours(trainer.bank, 5)[queries])
    by_hand = (build_loss("contrastive")(anchors, refs, positive)
               + 0.5 * build_loss("csd")(anchors, g_a, neighbours)
               + 0.3 * build_loss("raml")(anchors, g_a))
    assert skipped == 0 and torch.equal(needed, queries)
    torch.testing.assert_close(value, by_hand, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("loss", "mining"), [
    ({"name": "csd", "positives": "self"}, {"sampler": "images", "num_images": 16,
                                            "negatives": "none"}),
    ({"name": "rank_order"}, {"sampler": "images", "num_images": 16, "negatives": "none"}),
    ({"name": "raml"}, {"sampler": "images", "num_images": 16, "negatives": "none"}),
    ({"name": "contrastive + 0.5*csd", "positives": "pair+self"}, {}),
])
def test_the_new_losses_and_a_sum_train(tmp_path, data_root, teacher_dir, loss, mining):
    from asymret.models import create_model, load_network

    out = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", data_root, out, teacher_dir,
                                      loss=loss, mining={"neighbours": 5, **mining},
                                      optim={"epochs": 1}, data={"val_sets": []}))
    train(config)
    before = create_model(STUDENT).state_dict()
    after = load_network(out / "student").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after if "weight" in k)
    log = (out / "train_log.csv").read_text().splitlines()
    assert len(log) > 1 and "nan" not in "".join(log[1:]).lower()


def test_too_many_neighbours_for_the_bank_names_the_setting(tmp_path, data_root, teacher_dir):
    with pytest.raises(AsymretError, match=r"mining.neighbours=96: .*bank holds 32 images"):
        _trainer(tmp_path, data_root, teacher_dir, {"name": "csd"}, {"neighbours": 96})


def test_a_run_with_neighbours_stopped_mid_epoch_resumes_exactly(tmp_path, data_root,
                                                                  teacher_dir, monkeypatch):
    from asymret.models import load_network

    def config(out):
        return load_config(write_config(
            tmp_path / f"{out}.yaml", data_root, tmp_path / out, teacher_dir,
            loss={"name": "contrastive + 0.5*csd + rank_order", "positives": "pair+self"},
            mining={"neighbours": 5}, data={"val_sets": []},
        ))

    train(config("reference"))
    calls = {"count": 0}
    original = Trainer._step_loss

    def interrupted(self, *args):
        calls["count"] += 1
        if calls["count"] == 5:  # epoch 2, step 2 (3 steps per epoch)
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_step_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config("stopped"))
    monkeypatch.setattr(Trainer, "_step_loss", original)
    train(config("stopped"), resume=True)
    resumed = load_network(tmp_path / "stopped" / "student").state_dict()
    expected = load_network(tmp_path / "reference" / "student").state_dict()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
