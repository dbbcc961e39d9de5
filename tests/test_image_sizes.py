"""Teacher and student see different image sizes: the teacher's bank, validation and test."""

import csv
import json

import numpy as np
import pytest

from asymret.bank import store_name
from asymret.cli import main
from asymret.data import load_test_set
from asymret.data.sfm120k import TrainingDb
from asymret.errors import AsymretError
from asymret.evaluate import evaluate_retrieval
from asymret.features import FeatureStore, extract_vectors
from asymret.models import load_model
from asymret.retrieval import evaluate_networks
from asymret.train import load_config, train
from train_fixtures import make_teacher, write_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_uses_the_teachers_own_image_sizes(tmp_path, data_root, teacher_dir):
    out = tmp_path / "run"
    config = load_config(write_config(
        tmp_path / "c.yaml", data_root, out, teacher_dir, optim={"epochs": 1},
        data={"teacher_imsize": 40, "val_teacher_imsize": 36, "imsize": 24, "val_imsize": 28},
    ))
    train(config)
    teacher = load_model(teacher_dir)
    [bank] = (out / "teacher" / "retrieval-tiny-train").iterdir()
    assert bank.name == store_name(teacher, 40)
    db = TrainingDb.load("retrieval-tiny", "train", data_root)
    np.testing.assert_allclose(np.asarray(FeatureStore.open(bank).vectors),
                               extract_vectors(teacher, db.images(40), progress=False).numpy(),
                               rtol=1e-5, atol=1e-6)
    [validation] = (out / "teacher" / "tiny").iterdir()
    assert validation.name == store_name(teacher, 36)

    dataset = load_test_set("tiny", data_root)
    student = load_model(out / "student")
    expected = evaluate_retrieval(
        extract_vectors(student, dataset.query_images(28), progress=False).numpy(),
        np.asarray(FeatureStore.open(validation / "database").vectors), dataset.gnd)
    with open(out / "validation.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["setting"] == "asymmetric")
    assert float(row["map_medium"]) == pytest.approx(expected.map["medium"], abs=1e-9)


def test_teacher_sizes_default_to_the_students(tmp_path, data_root, teacher_dir):
    config = load_config(write_config(tmp_path / "c.yaml", data_root, tmp_path / "run",
                                      teacher_dir, data={"imsize": 24, "val_imsize": 28}))
    assert (config.data.teacher_train_imsize, config.data.teacher_val_imsize) == (24, 28)
    with pytest.raises(AsymretError, match=r"data\.teacher_imsize must be at least 1, got 0"):
        load_config(write_config(tmp_path / "d.yaml", data_root, tmp_path / "run", teacher_dir,
                                 data={"teacher_imsize": 0}))


def test_evaluation_extracts_each_side_at_its_size(tmp_path, data_root, teacher_dir, capsys):
    dataset = load_test_set("tiny", data_root)
    teacher = load_model(teacher_dir)
    student = load_model(make_teacher(tmp_path / "student", seed=4))
    results = evaluate_networks(dataset, student, teacher, tmp_path / "features", imsize=24,
                                teacher_imsize=40, progress=False)
    queries = {size: extract_vectors(net, dataset.query_images(size), progress=False).numpy()
               for net, size in ((student, 24), (teacher, 40))}
    teacher_database = extract_vectors(teacher, dataset.database_images(40),
                                       progress=False).numpy()
    asymmetric = evaluate_retrieval(queries[24], teacher_database, dataset.gnd)
    own = evaluate_retrieval(queries[40], teacher_database, dataset.gnd)
    for protocol in ("easy", "medium", "hard"):
        assert results["asymmetric"].map[protocol] == pytest.approx(asymmetric.map[protocol])
        assert results["teacher"].map[protocol] == pytest.approx(own.map[protocol])
    assert (tmp_path / "features" / "tiny" / store_name(teacher, 40)).is_dir()
    assert (tmp_path / "features" / "tiny" / store_name(student, 24)).is_dir()

    assert main(["evaluate", "--model", str(tmp_path / "student"), "--teacher", str(teacher_dir),
                 "--dataset", "tiny", "--root", str(data_root), "--imsize", "24",
                 "--teacher-imsize", "40", "--features", str(tmp_path / "features"),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["asymmetric"] == results["asymmetric"].to_dict()
