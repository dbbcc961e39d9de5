"""The teacher's bank: one folder layout for training, test and whitening vectors, reused."""

import numpy as np
import pytest

from asymret.bank import TeacherBank, extract_test_set, store_name
from asymret.data import load_test_set
from asymret.data.sfm120k import TrainingDb
from asymret.features import extract_vectors, model_fingerprint
from asymret.models import Teacher, load_model
from counting import ForwardCounter
from train_fixtures import make_teacher

pytestmark = pytest.mark.usefixtures("one_thread")


def test_store_name_is_network_fingerprint_and_preprocessing(teacher_dir):
    net = load_model(teacher_dir)
    digest = model_fingerprint(net).removeprefix("sha256:")[:12]
    assert store_name(net, 32) == f"test_efficientnet-gem-16-{digest}-32px"
    assert store_name(net, None) == f"test_efficientnet-gem-16-{digest}-full"
    assert store_name(net, 1024, (1.0, 0.7071, 0.5)).endswith("-1024px-s1,0.7071,0.5")
    assert store_name(Teacher(net), 32) == store_name(net, 32)


def test_training_vectors_are_the_teachers_and_extracted_once(tmp_path, data_root, teacher_dir):
    teacher = Teacher(load_model(teacher_dir))
    bank = TeacherBank(tmp_path / "bank", teacher, progress=False)
    db = TrainingDb.load("retrieval-tiny", "train", data_root)
    store = bank.training_vectors("retrieval-tiny", db, 32)
    assert store.path == tmp_path / "bank" / "retrieval-tiny-train" / store_name(teacher, 32)
    assert store.ids == db.cids
    expected = extract_vectors(teacher, db.images(32), progress=False).numpy()
    np.testing.assert_allclose(np.asarray(store.vectors), expected, rtol=1e-5, atol=1e-6)

    counter = ForwardCounter(teacher.net)
    again = bank.training_vectors("retrieval-tiny", db, 32)
    counter.remove()
    assert counter.images == 0, "a finished bank is read, not extracted again"
    np.testing.assert_array_equal(np.asarray(again.vectors), np.asarray(store.vectors))
    other_size = bank.training_vectors("retrieval-tiny", db, 24)
    assert other_size.path.name.endswith("-24px") and other_size.path != store.path


def test_test_vectors_match_an_explicit_extraction(tmp_path, data_root, teacher_dir):
    net = load_model(teacher_dir)
    dataset = load_test_set("tiny", data_root)
    queries, database = TeacherBank(tmp_path / "bank", net, progress=False).test_vectors(
        dataset, 32, scales=(1.0, 0.5))
    assert queries.path.parent == tmp_path / "bank" / "tiny" / store_name(net, 32, (1.0, 0.5))
    assert (queries.count, database.count) == (len(dataset.qimlist), len(dataset.imlist))
    explicit_q, explicit_x = extract_test_set(net, dataset, tmp_path / "explicit", imsize=32,
                                              scales=(1.0, 0.5), progress=False)
    np.testing.assert_array_equal(np.asarray(queries.vectors), np.asarray(explicit_q.vectors))
    np.testing.assert_array_equal(np.asarray(database.vectors), np.asarray(explicit_x.vectors))
    cropped = extract_vectors(net, dataset.query_images(32), scales=(1.0, 0.5), progress=False)
    np.testing.assert_allclose(np.asarray(queries.vectors), cropped.numpy(), rtol=1e-5, atol=1e-6)


def test_distractors_get_their_own_collection(tmp_path, data_root, teacher_dir):
    net = load_model(teacher_dir)
    dataset = load_test_set("tiny", data_root)
    distractors = sorted((data_root / "tiny" / "jpg").glob("db0_*.jpg"))
    bank = TeacherBank(tmp_path / "bank", net, progress=False)
    plain = bank.test_vectors(dataset, 32)[1]
    extended = bank.test_vectors(dataset, 32, distractors=distractors)[1]
    assert extended.path.parent.parent.name == "tiny+r1m"
    assert extended.count == plain.count + len(distractors)
    assert extended.ids[plain.count:] == [str(p) for p in distractors]
    np.testing.assert_array_equal(np.asarray(extended.vectors)[: plain.count],
                                  np.asarray(plain.vectors))


def test_two_networks_never_share_a_folder(tmp_path, data_root, teacher_dir):
    dataset = load_test_set("tiny", data_root)
    first = load_model(teacher_dir)
    second = load_model(make_teacher(tmp_path / "other", seed=9))
    stores = [TeacherBank(tmp_path / "bank", net, progress=False).test_vectors(dataset, 32)[0]
              for net in (first, second)]
    assert stores[0].path != stores[1].path
    assert not np.allclose(np.asarray(stores[0].vectors), np.asarray(stores[1].vectors))
