"""Bad settings and inputs of a training run: one line and exit 2 before any work, every input
read before the first step, the student saved before validation, unreadable images skipped."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from asymret.cli import main
from asymret.data import load_training_db
from asymret.errors import AsymretError
from asymret.models import load_model
from asymret.models.checkpoint import import_reference_checkpoint
from asymret.train import load_config, train
from asymret.train.loop import ReadableImages, Trainer
from test_photo_training import make_photo_folder
from train_fixtures import write_config

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(*args: str, capsys) -> tuple[int, str]:
    """``asymret`` with ``args``: the exit status and stderr."""
    capsys.readouterr()
    status = main(list(args))
    return status, capsys.readouterr().err.strip()


# ------------------------------------------------------------------ settings

BAD_SETTINGS = [
    ("optim.lr=-1e-3", "optim.lr must be a positive number, got -0.001"),
    ("optim.lr=0", "optim.lr must be a positive number, got 0.0"),
    ("optim.lr=.nan", "optim.lr must be a positive number, got nan"),
    ("optim.weight_decay=-1e-6", "optim.weight_decay must be 0 or more, got -1e-06"),
    ("optim.lr_decay=0", "optim.lr_decay must be in (0, 1]"),
    ("optim.lr_decay=1.5", "optim.lr_decay must be in (0, 1]"),
    ("models.ridge_lambda=-0.1", "models.ridge_lambda must be 0 or more, got -0.1"),
    ("run.checkpoint_every=0", "run.checkpoint_every must be at least 1, got 0"),
    ("data.imsize=0", "data.imsize must be at least 1, got 0"),
    ("run.num_workers=-1", "run.num_workers must be at least 0, got -1"),
    ("run.val_every=-2", "run.val_every must be at least 0, got -2"),
    ("run.device=gpu0", "run.device=gpu0: unknown device 'gpu0'; use cpu, cuda"),
    ("run.device=meta", "run.device=meta: unknown device 'meta'"),
    ("loss.params.margin=abc", "loss 'contrastive': bad parameter value"),
    ("loss.params.margin=[1, 2]", "loss 'contrastive': bad parameter value"),
    ("loss.params.margin=-1", "loss 'contrastive': contrastive margin must be > 0"),
    ("loss.params.width=3", "loss 'contrastive': got an unexpected keyword argument 'width'"),
]


@pytest.mark.parametrize(("override", "message"), BAD_SETTINGS,
                         ids=[override for override, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_and_exit_2_before_any_step(tmp_path, data_root, teacher_dir,
                                                              capsys, override, message):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", data_root, out, teacher_dir)
    status, err = run_cli("train", "--config", str(config), override, capsys=capsys)
    assert status == 2
    assert err.count("\n") == 0 and message in err, err
    assert not (out / "checkpoints" / "last.pt").exists()
    assert not (out / "train_log.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path, data_root, teacher_dir, capsys):
    config = write_config(tmp_path / "c.yaml", data_root, tmp_path / "run", teacher_dir)
    status, err = run_cli("train", "--config", str(config), "run.device=cuda", capsys=capsys)
    assert status == 2 and err == ("asymret: error: run.device=cuda: CUDA is not available "
                                   "here (no GPU or driver found); use cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_cuda_index_beyond_the_gpus_is_one_line(tmp_path, data_root, teacher_dir, capsys):
    config = write_config(tmp_path / "c.yaml", data_root, tmp_path / "run", teacher_dir)
    index = torch.cuda.device_count()
    status, err = run_cli("train", "--config", str(config), f"run.device=cuda:{index}",
                          capsys=capsys)
    assert status == 2 and f"CUDA device(s), 0..{index - 1}" in err


def test_a_singular_ridge_fit_names_the_setting(tmp_path, data_root, teacher_dir, capsys):
    config = write_config(tmp_path / "c.yaml", data_root, tmp_path / "run", teacher_dir,
                          models={"ridge_images": 4, "ridge_lambda": 0.0})
    status, err = run_cli("train", "--config", str(config), capsys=capsys)
    assert status == 2
    assert "models.ridge_lambda=0.0: the ridge fit is singular on 4 images" in err, err


# ------------------------------------------------------------ odd config.json

def _saved_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


ODD_MODEL_CONFIGS = {
    "a list": lambda saved: [saved],
    "NaN": lambda saved: float("nan"),
    "config not a mapping": lambda saved: {**saved, "config": [1]},
    "arch a number": lambda saved: {**saved, "config": {**saved["config"], "arch": 5}},
    "unknown arch": lambda saved: {**saved, "config": {**saved["config"], "arch": "no_such_net"}},
    "dim a float": lambda saved: {**saved, "config": {**saved["config"], "dim": 16.5}},
    "dim a string": lambda saved: {**saved, "config": {**saved["config"], "dim": "16"}},
    "gem_p a string": lambda saved: {**saved, "config": {**saved["config"], "gem_p": "x"}},
    "gem_p zero": lambda saved: {**saved, "config": {**saved["config"], "gem_p": 0}},
    "unknown pooling": lambda saved: {**saved, "config": {**saved["config"], "pooling": "max"}},
    "a newer format": lambda saved: {**saved, "version": 99},
}
EXPECTED_MESSAGES = {
    "a list": "not an asymret model config", "NaN": "not an asymret model config",
    "config not a mapping": "not an asymret model config",
    "arch a number": "arch=5 has the wrong type",
    "unknown arch": "cannot build network no_such_net-gem-16",
    "dim a float": "dim=16.5 has the wrong type", "dim a string": "dim='16' has the wrong type",
    "gem_p a string": "gem_p='x' has the wrong type",
    "gem_p zero": "gem_p must be a positive number, got 0",
    "unknown pooling": "unknown pooling 'max'",
    "a newer format": "model format version 99; this asymret reads versions up to 1",
}


@pytest.mark.parametrize("case", list(ODD_MODEL_CONFIGS))
def test_an_odd_config_json_is_refused_naming_it(tmp_path, teacher_dir, case):
    folder = tmp_path / "model"
    shutil.copytree(teacher_dir, folder)
    odd = ODD_MODEL_CONFIGS[case](_saved_config(teacher_dir))
    (folder / "config.json").write_text(json.dumps(odd))
    with pytest.raises(AsymretError) as error:
        load_model(folder)
    assert str(error.value).startswith(f"{folder / 'config.json'}: ")
    assert EXPECTED_MESSAGES[case] in str(error.value)


def test_a_teacher_with_an_odd_config_json_stops_training_with_one_line(tmp_path, data_root,
                                                                        teacher_dir, capsys):
    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_dir, teacher)
    saved = _saved_config(teacher)
    (teacher / "config.json").write_text(json.dumps({**saved, "config": {**saved["config"],
                                                                         "dim": "16"}}))
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", data_root, out, teacher)
    status, err = run_cli("train", "--config", str(config), capsys=capsys)
    assert status == 2 and err.count("\n") == 0
    assert f"{teacher / 'config.json'}: invalid model config (dim='16'" in err
    assert not (out / "train_log.csv").exists()


@pytest.mark.parametrize(("meta", "message"), [
    ({"architecture": "resnet18", "mean": 5}, "invalid 'meta'"),
    ({"architecture": "resnet18", "pooling": 3}, "invalid 'meta' (pooling=3 has the wrong type)"),
    ({"architecture": "resnet18", "outputdim": "wide"}, "invalid 'meta'"),
    ({"architecture": "resnet18", "pooling": "max"}, "unknown pooling 'max'"),
])
def test_odd_values_in_a_reference_checkpoints_meta_are_one_line(tmp_path, meta, message):
    path = tmp_path / "reference.pth"
    torch.save({"meta": meta, "state_dict": {}}, path)
    with pytest.raises(AsymretError) as error:
        import_reference_checkpoint(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


# ------------------------------------------------ inputs before the first step

@pytest.fixture
def photos(tmp_path):
    return make_photo_folder(tmp_path / "photos")


@pytest.mark.parametrize("damage", ["missing", "not an image", "truncated"])
def test_a_bad_validation_image_stops_the_run_before_its_first_step(tmp_path, data_root,
                                                                    teacher_dir, photos,
                                                                    capsys, damage):
    image = photos / "test" / "sight1_0.jpg"
    if damage == "missing":
        image.unlink()
    elif damage == "not an image":
        image.write_bytes(b"<html>not found</html>")
    else:  # the header reads; only decoding the whole image fails
        image.write_bytes(image.read_bytes()[:300])
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", data_root, out, teacher_dir)
    status, err = run_cli("train", "--config", str(config), f"data.val_sets=[{photos}]",
                          capsys=capsys)
    assert status == 2 and err.count("\n") == 0, err
    assert str(image) in err
    assert not (out / "train_log.csv").exists(), "failed only after training"
    assert not (out / "checkpoints" / "last.pt").exists()


def test_a_bad_validation_image_stops_a_run_without_teacher_before_its_first_step(
        tmp_path, data_root, photos, capsys):
    image = photos / "test" / "sight2_1.jpg"
    image.write_bytes(b"<html>not found</html>")
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", data_root, out, None,
                          loss={"similarity": "symmetric", "positives": "pair"})
    status, err = run_cli("train", "--config", str(config), f"data.val_sets=[{photos}]",
                          capsys=capsys)
    assert status == 2 and err.count("\n") == 0
    assert f"validation set {photos}: {image}: cannot read image header" in err, err
    assert not (out / "train_log.csv").exists()


def test_the_student_is_saved_before_the_final_validation(tmp_path, data_root, teacher_dir,
                                                          monkeypatch):
    out = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", data_root, out, teacher_dir,
                                      optim={"epochs": 1}))

    def failing_validation(self, epoch):
        raise AsymretError("the validation failed")

    monkeypatch.setattr(Trainer, "validate", failing_validation)
    with pytest.raises(AsymretError, match="the validation failed"):
        train(config)
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1, "training finished"
    student = load_model(out / "student").state_dict()
    for name, value in checkpoint["student"].items():
        assert torch.equal(student[name], value), name
    assert (out / "student" / "teacher.json").is_file()


# ----------------------------------------------------------- unreadable images

def test_readable_images_keep_the_pairs_and_clusters_of_readable_images_only(data_root):
    _, db = load_training_db("retrieval-tiny", "train", data_root)
    unreadable = np.zeros(len(db), dtype=bool)
    unreadable[[1, 6, 7, 20]] = True
    readable = ReadableImages.of(db, unreadable)
    kept = [i for i in range(len(db)) if not unreadable[i]]
    assert readable.images.tolist() == kept and readable.excluded == 4
    pairs = [(int(q), int(p)) for q, p in zip(db.query_indices, db.positive_indices, strict=True)
             if not unreadable[q] and not unreadable[p]]
    mapped = [(kept[q], kept[p]) for q, p in zip(readable.query_indices.tolist(),
                                                  readable.positive_indices.tolist(), strict=True)]
    assert mapped == pairs
    assert readable.clusters.tolist() == [int(db.clusters[i]) for i in kept]


def _damaged_copy(data_root: Path, tmp_path: Path, image_index: int) -> tuple[Path, Path]:
    """A copy of the data root with training image ``image_index`` overwritten by garbage."""
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    _, db = load_training_db("retrieval-tiny", "train", root)
    bad = Path(db.paths[image_index])
    bad.write_bytes(b"\x00garbage, not a JPEG")
    return root, bad


def _recorded_tuples(monkeypatch) -> list:
    """Every epoch's tuples the trainer draws, recorded as they are drawn."""
    drawn = []
    original = Trainer._epoch_tuples

    def recording(self, epoch):
        tuples = original(self, epoch)
        drawn.append(tuples)
        return tuples

    monkeypatch.setattr(Trainer, "_epoch_tuples", recording)
    return drawn


@pytest.mark.parametrize("similarity", ["asymmetric", "symmetric"])
def test_an_unreadable_training_image_is_in_no_tuple_and_the_loss_stays_finite(
        tmp_path, data_root, teacher_dir, monkeypatch, capsys, similarity):
    bad_index = 5  # a query, a positive and (cluster 1) a negative candidate
    root, bad = _damaged_copy(data_root, tmp_path, bad_index)
    out = tmp_path / "run"
    symmetric = similarity == "symmetric"
    config = load_config(write_config(
        tmp_path / "c.yaml", root, out, None if symmetric else teacher_dir,
        loss={"similarity": similarity, "positives": "pair" if symmetric else "pair+self"},
        data={"val_sets": [], "skip_unreadable": True},
        mining={"num_pairs": 24, "pool_size": 32},
    ))
    drawn = _recorded_tuples(monkeypatch)
    train(config)
    assert "1 unreadable training images left out" in capsys.readouterr().out
    assert len(drawn) == 2
    for tuples in drawn:
        for indices in (tuples.query_indices, tuples.positive_indices, tuples.negative_indices):
            assert bad_index not in indices.tolist()
        assert (tuples.negative_indices >= 0).all()
    with open(out / "train_log.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 2 * 6 and all(np.isfinite(losses)) and all(v > 0 for v in losses)
    assert bad.is_file()


@pytest.mark.parametrize("with_teacher", [True, False], ids=["teacher", "no teacher"])
def test_an_unreadable_training_image_without_skip_stops_before_the_first_step(
        tmp_path, data_root, teacher_dir, capsys, with_teacher):
    root, bad = _damaged_copy(data_root, tmp_path, 5)
    out = tmp_path / "run"
    loss = {} if with_teacher else {"similarity": "symmetric", "positives": "pair"}
    config = write_config(tmp_path / "c.yaml", root, out, teacher_dir if with_teacher else None,
                          data={"val_sets": []}, loss=loss)
    status, err = run_cli("train", "--config", str(config), capsys=capsys)
    assert status == 2 and str(bad) in err and err.count("\n") == 0, err
    if not with_teacher:  # no bank reads the images: the header check finds it
        assert err.startswith("asymret: error: training db retrieval-tiny: "), err
    assert not (out / "train_log.csv").exists()


def test_the_image_sampler_draws_only_readable_images(tmp_path, data_root, teacher_dir,
                                                      monkeypatch):
    root, _ = _damaged_copy(data_root, tmp_path, 0)
    config = load_config(write_config(
        tmp_path / "c.yaml", root, tmp_path / "run", teacher_dir,
        loss={"name": "regression", "positives": "self"},
        mining={"sampler": "images", "negatives": "none", "num_images": 40},
        data={"val_sets": [], "skip_unreadable": True}, optim={"epochs": 1},
    ))
    drawn = _recorded_tuples(monkeypatch)
    train(config)
    [tuples] = drawn
    assert sorted(tuples.query_indices.tolist()) == list(range(1, 32)), "all 31 readable ones"
