"""Training on your own photos: a photo folder is a training db and a validation set."""

import csv

import pytest

from asymret.cli import main
from asymret.data import load_test_set, load_training_db
from asymret.errors import AsymretError
from asymret.models import load_model
from train_fixtures import make_photo_folder, make_teacher, write_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "my landmarks")


def test_a_photo_folder_is_a_training_db_with_a_stable_bank_name(photos, tmp_path):
    name, db = load_training_db(photos)
    assert len(db) == 12 and db.clusters.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert len(db.query_indices) == 4 * 3 * 2
    assert db.paths[0] == photos / "train" / "i0_0.jpg"
    assert "/" not in name and "\\" not in name and name.startswith("my landmarks-")
    assert load_training_db(str(photos))[0] == name, "the same folder, the same name"
    twin = make_photo_folder(tmp_path / "my landmarks")
    twin_name = load_training_db(twin)[0]
    assert twin_name != name, "another folder of the same name"
    (twin / "train" / "extra.jpg").write_bytes((twin / "train" / "i0_0.jpg").read_bytes())
    with open(twin / "images.csv", "a") as handle:
        handle.write("train/extra.jpg,place0,train\n")
    assert load_training_db(twin)[0] != twin_name, "edited training rows, another name"


def test_photo_folder_training_errors_name_the_folder_and_the_problem(photos, tmp_path):
    only_tests = tmp_path / "tests-only"
    only_tests.mkdir()
    rows = [r for r in (photos / "images.csv").read_text().splitlines() if ",train" not in r]
    (only_tests / "images.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(AsymretError, match=r"tests-only/images\.csv: no training rows"):
        load_training_db(only_tests)

    singles = tmp_path / "singles"
    singles.mkdir()
    (singles / "images.csv").write_text("path,instance\na.jpg,x\nb.jpg,y\n")
    with pytest.raises(AsymretError, match=r"singles/images\.csv: 2 training rows but no "
                                           r"positive pairs"):
        load_training_db(singles)
    assert len(load_training_db(singles, require_pairs=False)[1]) == 2

    with pytest.raises(AsymretError, match=r"one training split, 'train'.*not 'val'"):
        load_training_db(photos, "val")
    empty = tmp_path / "no-csv"
    empty.mkdir()
    with pytest.raises(AsymretError, match=r"no-csv: not a photo folder \(no images\.csv\)"):
        load_training_db(empty, root=tmp_path)
    with pytest.raises(AsymretError, match=r"training db not found, and nowhere is not a folder "
                                           r"with images\.csv"):
        load_training_db("nowhere", root=tmp_path)
    with pytest.raises(AsymretError, match=r"gone/photos: photo folder not found$"):
        load_training_db(tmp_path / "gone" / "photos", root=tmp_path)


def test_train_on_a_photo_folder_and_validate_on_its_test_rows(photos, tmp_path, capsys):
    """The README's own-photos path: check, train, evaluate, all on one folder."""
    assert main(["data", "check", str(photos)]) == 0
    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "run"
    config = write_config(tmp_path / "photos.yaml", tmp_path / "unused-root", out, teacher)
    status = main(["train", "--config", str(config), f"data.train_db={photos}",
                   f"data.val_sets=[{photos}]", "mining.pool_size=12"])
    assert status == 0, capsys.readouterr().err
    student = load_model(out / "student")
    assert student.config.name == "test_efficientnet-gem-16"

    with open(out / "validation.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["setting"] for r in rows} == {"symmetric", "asymmetric", "teacher"}
    assert {r["dataset"] for r in rows} == {str(photos)}
    assert all(0 <= float(r["map_medium"]) <= 100 for r in rows)
    name = load_training_db(photos)[0]
    assert (out / "teacher" / f"{name}-train").is_dir()

    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "student"), "--dataset", str(photos),
                 "--imsize", "32", "--features", str(tmp_path / "features")]) == 0
    assert "symmetric" in capsys.readouterr().out


def test_validation_sets_are_checked_before_training(photos, tmp_path, capsys):
    no_queries = make_photo_folder(tmp_path / "no-queries", train_instances=1, test_instances=0)
    assert len(load_test_set(no_queries).qimlist) == 0
    config = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "run", None,
                          loss={"similarity": "symmetric", "positives": "pair"})
    status = main(["train", "--config", str(config), f"data.train_db={photos}",
                   f"data.val_sets=[{no_queries}]"])
    assert status == 2
    assert "no-queries: 0 queries and 1 database images; validation needs both" in (
        capsys.readouterr().err)
    assert not (tmp_path / "run" / "student").exists()
