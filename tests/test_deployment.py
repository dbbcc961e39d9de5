"""The deployment path of the README, end to end on a tiny photo folder, through the command
line: train a student, export it, index the folder's database images with the teacher, and
search with the torch student and its ONNX export — the same ranked list."""

import json

import pytest

from asymret.cli import main
from asymret.data import load_test_set
from asymret.index import TeacherIndex
from asymret.teacher_record import read_teacher_record
from train_fixtures import make_photo_folder, make_teacher, write_config

pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *argv) -> str:
    status = main([str(a) for a in argv])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    return printed.out


def test_from_a_photo_folder_to_the_same_ranking_from_torch_and_onnx(tmp_path, capsys):
    photos = make_photo_folder(tmp_path / "landmarks")
    teacher = make_teacher(tmp_path / "teacher", seed=4)
    out = tmp_path / "run"
    config = write_config(tmp_path / "photos.yaml", tmp_path / "unused-root", out, teacher)
    run(capsys, "train", "--config", config, f"data.train_db={photos}",
        f"data.val_sets=[{photos}]", "mining.pool_size=12")
    student = out / "student"
    assert read_teacher_record(student).spec == str(teacher)

    onnx = tmp_path / "student.onnx"
    assert "onnxruntime matches PyTorch" in run(capsys, "export", "--model", student,
                                                "--out", onnx)
    index = tmp_path / "index"
    run(capsys, "index", "build", "--teacher", teacher, "--dataset", photos, "--out", index,
        "--imsize", 32, "--quiet")
    test_set = load_test_set(photos)
    opened = TeacherIndex.open(index)
    assert opened.ids == test_set.imlist and opened.count == 7

    queries = [test_set.image_path(name) for name in test_set.qimlist]
    rankings = {}
    for model in (student, onnx):
        listed = json.loads(run(capsys, "search", "--index", index, "--model", model,
                                *queries, "-k", 7, "--json"))
        rankings[model.suffix] = listed
    torch_lists, onnx_lists = rankings[""], rankings[".onnx"]
    for from_torch, from_onnx in zip(torch_lists, onnx_lists, strict=True):
        assert [r["path"] for r in from_onnx["results"]] == [r["path"] for r in
                                                             from_torch["results"]]
        assert [r["score"] for r in from_onnx["results"]] == pytest.approx(
            [r["score"] for r in from_torch["results"]], abs=1e-4)
        assert len(from_torch["results"]) == 7
    assert [entry["query"] for entry in torch_lists] == [str(q) for q in queries]
