import json

import numpy as np
import pytest
import torch

from asymret.bank import store_name
from asymret.cli import main
from asymret.data import load_test_set
from asymret.evaluate import evaluate_retrieval
from asymret.features import extract_vectors
from asymret.models import load_model
from train_fixtures import make_teacher, make_training_data


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_training_data(root)
    models = tmp_path_factory.mktemp("models")
    return root, make_teacher(models / "teacher"), make_teacher(models / "student", seed=5)


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def test_extract_writes_stores_equal_to_direct_extraction(capsys, tmp_path, world):
    root, teacher, _ = world
    run(capsys, "extract", "--model", teacher, "--dataset", "tiny", "--root", root,
        "--imsize", 32, "--out", tmp_path / "feats")
    dataset = load_test_set("tiny", root)
    net = load_model(teacher)
    expected = extract_vectors(net, dataset.query_images(32), progress=False)
    stored = np.load(tmp_path / "feats" / "queries" / "vectors.npy")
    np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-6, atol=1e-6)
    database = np.load(tmp_path / "feats" / "database" / "vectors.npy")
    assert database.shape == (len(dataset.imlist), 16)


def test_evaluate_reports_three_settings_consistent_with_evaluate_features(capsys, tmp_path,
                                                                           world):
    root, teacher, student = world
    out = run(capsys, "evaluate", "--model", student, "--teacher", teacher, "--dataset", "tiny",
              "--root", root, "--imsize", 32, "--features", tmp_path / "cache", "--json")
    results = json.loads(out)
    assert set(results) == {"symmetric", "asymmetric", "teacher"}
    cache = tmp_path / "cache" / "tiny"
    student_store = cache / store_name(load_model(student), 32)
    teacher_store = cache / store_name(load_model(teacher), 32)
    assert sorted(cache.iterdir()) == sorted([student_store, teacher_store])
    dataset = load_test_set("tiny", root)
    asymmetric = evaluate_retrieval(np.load(student_store / "queries" / "vectors.npy"),
                                    np.load(teacher_store / "database" / "vectors.npy"),
                                    dataset.gnd)
    assert results["asymmetric"] == asymmetric.to_dict()
    features = run(capsys, "evaluate-features", "--gnd", root / "tiny" / "gnd_tiny.pkl",
                   "--queries", teacher_store / "queries" / "vectors.npy",
                   "--database", teacher_store / "database" / "vectors.npy", "--json")
    assert json.loads(features) == results["teacher"]


def test_whiten_saves_a_whitened_model(capsys, tmp_path, world):
    root, teacher, _ = world
    assert main(["whiten", "--model", str(teacher), "--db", "retrieval-tiny", "--root",
                 str(root), "--out", str(tmp_path / "no")]) == 2
    assert "already has a projection" in capsys.readouterr().err
    assert not (tmp_path / "no").exists(), "refused before any work"
    many_pairs = tmp_path / "data"
    make_training_data(many_pairs, clusters=90)
    plain = make_teacher(tmp_path / "plain", "test_efficientnet-gem")
    out = run(capsys, "whiten", "--model", plain, "--db", "retrieval-tiny", "--split", "train",
              "--imsize", 32, "--root", many_pairs, "--features", tmp_path / "cache",
              "--out", tmp_path / "white")
    assert "learned from 270 pairs of retrieval-tiny-train" in out
    assert (tmp_path / "cache" / "retrieval-tiny-train" / store_name(load_model(plain), 32)
            / "vectors.npy").is_file(), "the whitening images' vectors are cached"
    whitened = load_model(tmp_path / "white").eval()
    assert whitened.whiten is not None and whitened.outputdim == 256
    images = torch.rand(2, 3, 24, 32)
    assert not torch.allclose(whitened(images), load_model(plain).eval()(images))
