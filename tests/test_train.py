import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from asymret.errors import AsymretError
from asymret.features import FeatureStore, model_fingerprint
from asymret.losses import base as loss_registry
from asymret.losses import build_loss
from asymret.models import create_model, load_model
from asymret.train import TrainingDiverged, load_config, train
from asymret.train.config import parse_overrides
from asymret.train.presets import PRESETS_DIR
from asymret.train.projection import fit_ridge
from asymret.train.steps import forward_by_size, tuple_references
from train_fixtures import STUDENT, NanAtThirdCall, make_teacher, write_config

REPO = Path(__file__).resolve().parents[1]


def read_log(run_dir: Path) -> list[dict]:
    with open(run_dir / "train_log.csv") as handle:
        return list(csv.DictReader(handle))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_model(run_dir / "student").state_dict()


# ------------------------------------------------------------------ configuration


def test_config_layers_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 1.0e-5, epochs: 3}\nloss: {params: {margin: 0.5}}\n"
                    "models: {teacher: t}\n")
    overrides = ["optim.lr=2e-4", "loss.params.margin=0.6", "mining.negatives=random"]
    config = load_config(path, overrides)
    assert config.optim.lr == 2e-4 and config.optim.epochs == 3
    assert config.loss.params == {"margin": 0.6} and config.mining.negatives == "random"
    assert config.optim.batch_size == 5, "untouched keys keep their defaults"
    assert parse_overrides(["run.device=cuda"]) == {"run": {"device": "cuda"}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], "unknown key 'optim.lrr'"),
        (["optim.lr=fast"], "optim.lr='fast'"),
        (["loss.similarity=sideways"], "loss.similarity='sideways'"),
        (["models.teacher=null"], "needs models.teacher"),
        (["loss.similarity=symmetric", "loss.positives=pair+self"], "positives=pair"),
        (["loss.name=contrastve"], "loss.name='contrastve'"),
        (["nosection"], "section.key=value"),
        (["mining.sampler=pairs"], "mining.sampler='pairs'"),
        (["mining.sampler=images", "loss.name=regression", "loss.positives=self"],
         "mining.negatives=none"),
        (["mining.sampler=images", "mining.negatives=none"], "positives=self"),
        (["mining.sampler=images", "mining.negatives=none", "loss.name=regression",
          "loss.positives=self", "mining.num_images=0"], "mining.num_images"),
    ],
)
def test_config_errors_are_specific(overrides, message):
    with pytest.raises(AsymretError, match=message.replace("+", r"\+")):
        load_config(None, ["models.teacher=t", *overrides])


# ------------------------------------------------------------------ step pieces


@pytest.mark.parametrize("preset", sorted(PRESETS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_loads_and_validates(preset):
    config = load_config(preset)
    assert config.run.out.startswith("runs/")


def test_a_preset_is_found_by_name_and_a_file_wins_over_it(tmp_path, monkeypatch):
    assert load_config("asym-contrastive-plus") == load_config(
        PRESETS_DIR / "asym-contrastive-plus.yaml")
    with pytest.raises(AsymretError, match=r"no preset 'asym-contrastive-pls' \(presets: .*"
                       r"asym-contrastive-plus, .*sym-student-alone"):
        load_config("asym-contrastive-pls")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "regression").write_text("models: {teacher: t}\noptim: {epochs: 3}\n")
    assert load_config("regression").optim.epochs == 3


PAPER_PRESETS = ("asym-contrastive-plus", "asym-contrastive", "asym-triplet",
                 "asym-multi-similarity", "regression", "rkd", "darkrank", "sym-student-alone")


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_are_the_published_setting(name):
    config = load_config(PRESETS_DIR / f"{name}.yaml")
    assert config.models.student == "tf_efficientnet_b3-conv2048-gem"
    assert config.models.projection_init == "random"
    expected_teacher = None if name == "sym-student-alone" else (
        "networks/retrievalSfM120k-resnet101-gem-b80fb85.pth")
    assert config.models.teacher == expected_teacher
    assert config.optim.amp is False
    assert (config.optim.batch_size, config.optim.lr, config.optim.epochs) == (5, 1e-6, 100)
    random_images = name in ("regression", "rkd", "darkrank")
    assert config.mining.sampler == ("images" if random_images else "tuples")
    assert config.mining.negatives == ("none" if random_images else "hard")
    if random_images:
        assert config.mining.num_images == 20000
    else:
        assert (config.mining.num_pairs, config.mining.pool_size) == (2000, 20000)


def test_tuple_references_for_each_positive_mode():
    pos, neg, self_vec = torch.randn(2, 4), torch.randn(2, 3, 4), torch.randn(2, 4)
    refs, positive = tuple_references(pos, neg, "pair")
    assert torch.equal(refs[:, 0], pos) and torch.equal(refs[:, 1:], neg)
    assert positive.tolist() == [[True, False, False, False]] * 2
    refs, positive = tuple_references(pos, neg, "self", self_vec)
    assert torch.equal(refs[:, 0], self_vec) and positive[:, 0].all() and not positive[:, 1:].any()
    refs, positive = tuple_references(pos, neg, "pair+self", self_vec)
    assert torch.equal(refs[:, 0], self_vec) and torch.equal(refs[:, 1], pos)
    assert positive.tolist() == [[True, True, False, False, False]] * 2
    refs, positive = tuple_references(pos, neg[:, :0], "pair+self", self_vec)
    assert refs.shape == (2, 2, 4) and positive.all()


def test_contr_plus_from_config_equals_contrastive_with_g_of_a_by_hand():
    anchor, g_anchor = torch.randn(3, 8), torch.randn(3, 8)
    pos, neg = torch.randn(3, 8), torch.randn(3, 2, 8)
    refs, positive = tuple_references(pos, neg, "pair+self", g_anchor)
    loss = build_loss("contrastive")(anchor, refs, positive)
    by_hand = sum(
        0.5 * (anchor[b] - g_anchor[b]).pow(2).sum() + 0.5 * (anchor[b] - pos[b]).pow(2).sum()
        + sum(0.5 * (0.7 - (anchor[b] - neg[b, j]).pow(2).sum().add(1e-12).sqrt()).clamp(min=0) ** 2
              for j in range(2))
        for b in range(3)
    )
    torch.testing.assert_close(loss, by_hand)


def test_forward_by_size_equals_one_image_at_a_time():
    net = create_model(STUDENT).eval()
    images = [torch.rand(3, 24, 32), torch.rand(3, 32, 24), torch.rand(3, 24, 32)]
    batched = forward_by_size(net, images)
    single = torch.cat([net(image[None]) for image in images])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_ridge_fit_matches_least_squares():
    features, targets = torch.randn(50, 6, dtype=torch.float64), torch.randn(50, 4)
    weight, bias = fit_ridge(features, targets, ridge_lambda=0.0)
    design = torch.cat([features, torch.ones(50, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, targets.double()).solution
    torch.testing.assert_close(weight, solution[:6].T.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bias, solution[6].float(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ training runs


def test_asymmetric_training_writes_student_logs_and_validation(tmp_path, data_root, teacher_dir):
    out = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", data_root, out, teacher_dir))
    student_dir = train(config)
    assert (student_dir / "model.safetensors").is_file()
    log = read_log(out)
    assert len(log) == 2 * 3 and all(float(row["loss"]) > 0 for row in log)
    assert float(log[-1]["lr"]) == pytest.approx(1e-3 * config.optim.lr_decay)
    with open(out / "validation.csv") as handle:
        settings = {row["setting"] for row in csv.DictReader(handle)}
    assert settings == {"symmetric", "asymmetric", "teacher"}
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["batch_size"] == 4
    [bank] = (out / "teacher" / "retrieval-tiny-train").iterdir()
    assert (bank / "meta.json").is_file() and bank.name.endswith("-32px")
    [validation] = (out / "teacher" / "tiny").iterdir()
    assert (validation / "queries" / "meta.json").is_file()


def test_batchnorm_statistics_stay_frozen(tmp_path, data_root, teacher_dir):
    out = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", data_root, out, teacher_dir,
                                      optim={"epochs": 1}, data={"val_sets": []}))
    torch.manual_seed(0)
    initial = create_model(STUDENT)
    train(config)
    trained = load_model(out / "student")
    for name, buffer in initial.state_dict().items():
        if "running_" in name:
            assert torch.equal(buffer, trained.state_dict()[name]), name


def test_ridge_projection_starts_aligned(tmp_path, data_root, teacher_dir):
    alignment = {}
    for init in ("random", "ridge"):
        out = tmp_path / init
        config = load_config(write_config(
            tmp_path / f"{init}.yaml", data_root, out, teacher_dir,
            models={"projection_init": init, "student": "test_efficientnet-gem-32"},
            optim={"epochs": 1, "lr": 1e-12}, data={"val_sets": []},
        ))
        with pytest.raises(AsymretError, match="32-D"):
            train(config)
        config.models.student = STUDENT
        config.run.out = str(tmp_path / f"{init}-16")
        from asymret.train.loop import Trainer
        trainer = Trainer(config)
        trainer._prepare_run_dir()
        trainer._build()
        trainer._init_projection()
        indices = torch.arange(len(trainer.db))
        student = trainer._extract(trainer.student, trainer.train_images, indices)
        teacher = trainer._bank_rows(indices)
        alignment[init] = (student * teacher).sum(1).mean().item()
    assert alignment["ridge"] > alignment["random"] + 0.2


@pytest.mark.parametrize(
    ("loss", "mining"),
    [
        ({"name": "regression", "positives": "self"}, {"negatives": "none"}),
        ({"name": "rkd"}, {"negatives": "random"}),
        ({"name": "darkrank"}, {"negatives": "random"}),
        ({"name": "triplet", "positives": "pair"},
         {"negatives": "hard", "query_vectors": "teacher"}),
        ({"name": "multi_similarity", "positives": "pair"}, {"negatives": "hard"}),
    ],
)
def test_every_loss_trains(tmp_path, data_root, teacher_dir, loss, mining):
    out = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", data_root, out, teacher_dir,
                                      loss=loss, mining=mining, optim={"epochs": 1},
                                      data={"val_sets": []}))
    train(config)
    before = create_model(STUDENT).state_dict()
    after = weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in after if "weight" in k)
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in read_log(out))


@pytest.mark.parametrize("loss", ["regression", "rkd", "darkrank"])
def test_image_sampler_trains_on_random_images_in_batches(tmp_path, data_root, teacher_dir,
                                                          loss):
    from asymret.train.loop import Trainer

    positives = "self" if loss == "regression" else "pair"
    config = load_config(write_config(
        tmp_path / "c.yaml", data_root, tmp_path / "run", teacher_dir,
        loss={"name": loss, "positives": positives},
        mining={"sampler": "images", "num_images": 20, "negatives": "none"},
        optim={"epochs": 1, "batch_size": 5}, data={"val_sets": []},
    ))
    trainer = Trainer(config)
    trainer._prepare_run_dir()
    trainer._build()
    tuples = trainer._epoch_tuples(0)
    assert len(tuples) == 20 and len(tuples.query_indices.unique()) == 20
    steps = trainer._step_rows(tuples)
    seen = [trainer._needed_images(rows, tuples) for rows in steps]
    assert [len(images) for images in seen] == [5, 5, 5, 5]
    assert sorted(torch.cat(seen).tolist()) == sorted(tuples.query_indices.tolist())

    images = [trainer.train_images[int(i)][0] for i in seen[0]]
    trainer.student.eval()
    loss_value, skipped = trainer._step_loss(steps[0], tuples, images)
    student = torch.cat([trainer.student(image[None]) for image in images])
    teacher = trainer._bank_rows(seen[0])
    if loss == "regression":
        by_hand = -(student * teacher).sum()
    else:
        by_hand = build_loss(loss)(student, teacher)
    assert skipped == 0
    torch.testing.assert_close(loss_value, by_hand, rtol=1e-4, atol=1e-5)

    config.run.out = str(tmp_path / "full")
    train(config)
    assert len(read_log(tmp_path / "full")) == 4


def test_symmetric_training_without_teacher(tmp_path, data_root):
    out = tmp_path / "run"
    config = load_config(write_config(
        tmp_path / "c.yaml", data_root, out, None, optim={"epochs": 1},
        loss={"similarity": "symmetric", "positives": "pair"},
    ))
    train(config)
    with open(out / "validation.csv") as handle:
        assert [row["setting"] for row in csv.DictReader(handle)] == ["symmetric"]


def test_validation_extracts_queries_cropped_to_their_boxes(tmp_path, data_root, teacher_dir):
    from asymret.data.revisitop import RevisitopDataset
    from asymret.features import extract_vectors
    from asymret.train.loop import Trainer

    config = load_config(write_config(tmp_path / "c.yaml", data_root, tmp_path / "run",
                                      teacher_dir))
    trainer = Trainer(config)
    trainer._prepare_run_dir()
    trainer._build()
    queries = RevisitopDataset.load("tiny", data_root).query_images(32)
    cropped = extract_vectors(trainer.student, queries, progress=False)
    uncropped = extract_vectors(trainer.student, type(queries)(queries.paths, 32), progress=False)
    assert not torch.allclose(cropped, uncropped), "the boxes must matter for this check"
    extracted = trainer._extract(trainer.student, queries, torch.arange(len(queries)))
    torch.testing.assert_close(extracted, cropped)


def test_partial_finetuning_trains_the_last_stage_and_shares_its_cache(tmp_path, data_root,
                                                                      teacher_dir):
    from asymret.models.frozen_trunk import split_trunk
    from asymret.train.loop import Trainer

    cache = tmp_path / "cache.safetensors"
    computed = []
    for run in ("first", "second"):
        config = load_config(write_config(
            tmp_path / f"{run}.yaml", data_root, tmp_path / run, teacher_dir,
            optim={"epochs": 1, "trainable_stages": 1}, run={"activation_cache": str(cache)},
        ))
        trainer = Trainer(config)
        trainer.run()
        computed.append(trainer.activation_cache.computed)
    assert computed[0] > 0 and computed[1] == 0, "the second run reads every activation"
    torch.manual_seed(3)
    before = create_model(STUDENT)
    after = load_model(tmp_path / "first" / "student")
    prefix_before, tail_before = split_trunk(before.features, 1)
    prefix_after, tail_after = split_trunk(after.features, 1)
    for old, new in zip(prefix_before.state_dict().values(), prefix_after.state_dict().values(),
                        strict=True):
        assert torch.equal(old, new)
    assert any(not torch.equal(old, new) for old, new in zip(
        tail_before.state_dict().values(), tail_after.state_dict().values(), strict=True))


# ------------------------------------------------------------------ nothing lost


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, data_root,
                                                                    teacher_dir, monkeypatch):
    monkeypatch.setitem(loss_registry._REGISTRY, "test_nan_at_third_call", NanAtThirdCall)
    out = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", data_root, out, teacher_dir,
                                      loss={"name": "test_nan_at_third_call"},
                                      data={"val_sets": []}))
    NanAtThirdCall.calls = 0
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3: loss is nan.*last\.pt"):
        train(config)
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (0, 2)
    floats = [v for v in checkpoint["student"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in floats)


def test_teacher_dimension_mismatch_is_refused_before_training(tmp_path, data_root):
    teacher = make_teacher(tmp_path / "t64", "test_efficientnet-gem-64")
    out = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", data_root, out, teacher))
    with pytest.raises(AsymretError, match=r"64-D vectors but student .* gives 16-D"):
        train(config)
    assert not (out / "checkpoints" / "last.pt").exists()


def test_a_shared_teacher_bank_keeps_each_teacher_apart(tmp_path, data_root, teacher_dir):
    bank = tmp_path / "bank"
    other = make_teacher(tmp_path / "other", seed=7)
    for name, teacher in (("a", teacher_dir), ("b", other)):
        train(load_config(write_config(tmp_path / f"{name}.yaml", data_root, tmp_path / name,
                                       teacher, optim={"epochs": 1}, data={"val_sets": []},
                                       run={"teacher_bank": str(bank)})))
    stores = sorted((bank / "retrieval-tiny-train").iterdir())
    assert len(stores) == 2
    fingerprints = {FeatureStore.open(s).meta["model"]["fingerprint"] for s in stores}
    assert fingerprints == {model_fingerprint(load_model(t)) for t in (teacher_dir, other)}


def test_existing_run_needs_resume(tmp_path, data_root, teacher_dir):
    config_path = write_config(tmp_path / "c.yaml", data_root, tmp_path / "run", teacher_dir,
                               optim={"epochs": 1}, data={"val_sets": []})
    train(load_config(config_path))
    with pytest.raises(AsymretError, match="--resume"):
        train(load_config(config_path))
    with pytest.raises(AsymretError, match="different 'optim'"):
        train(load_config(config_path, ["optim.batch_size=2"]), resume=True)


def _train_command(config_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "asymret", "train", "--config", str(config_path), *extra]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, data_root,
                                                                    teacher_dir):
    reference = load_config(write_config(tmp_path / "ref.yaml", data_root, tmp_path / "ref",
                                         teacher_dir, data={"val_sets": []}))
    train(reference)
    killed_dir = tmp_path / "killed"
    config_path = write_config(tmp_path / "k.yaml", data_root, killed_dir, teacher_dir,
                               data={"val_sets": []})
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(_train_command(config_path), env=env)
    log = killed_dir / "train_log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 5:  # header + 4 steps
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint = torch.load(killed_dir / "checkpoints" / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) != (2, 0), "killed before the end"
    subprocess.run(_train_command(config_path, "--resume"), env=env, check=True)
    resumed, expected = weights(killed_dir), weights(tmp_path / "ref")
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
    steps = [(row["epoch"], row["step"]) for row in read_log(killed_dir)]
    assert steps == [(row["epoch"], row["step"]) for row in read_log(tmp_path / "ref")]


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(tmp_path, data_root, teacher_dir):
    single = load_config(write_config(tmp_path / "one.yaml", data_root, tmp_path / "one",
                                      teacher_dir, data={"val_sets": []}))
    train(single)
    config_path = write_config(tmp_path / "two.yaml", data_root, tmp_path / "two", teacher_dir,
                               data={"val_sets": []})
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "asymret", "train", "--config", str(config_path)]
    subprocess.run(command, env=env, check=True, timeout=240)
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert len(one) == len(two)
    for a, b in zip(one, two, strict=True):
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-4, abs=1e-5)
    assert (tmp_path / "two" / "student" / "model.safetensors").is_file()
