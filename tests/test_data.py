import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from asymret.data import resolve_data_root
from asymret.data.folder import PhotoFolder
from asymret.data.images import ImageReadError, crop_imsize, load_image, rescale, to_tensor
from asymret.data.revisitop import RevisitopDataset, distractor_paths, load_gnd, write_gnd
from asymret.data.sfm120k import (
    TrainingDb,
    cid_to_relative_path,
    read_whitening_db,
    write_training_db,
    write_whitening_db,
)
from asymret.errors import AsymretError
from asymret.features import resized_size
from asymret.safe_pickle import load_pickle


def write_image(path, width, height, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)
    return pixels


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("ASYMRET_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("ASYMRET_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "asymret"


def test_load_image_crops_then_shrinks_keeping_aspect(tmp_path):
    path = tmp_path / "a.png"
    pixels = np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    cropped = load_image(path, bbox=[10, 5, 50, 25])
    assert cropped.size == (40, 20)
    np.testing.assert_array_equal(np.asarray(cropped), pixels[5:25, 10:50])
    assert load_image(path, imsize=50).size == (50, 30)
    assert load_image(path, imsize=500).size == (100, 60), "images are never enlarged"
    tensor = to_tensor(load_image(path))
    assert tensor.shape == (3, 60, 100) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[:, 0, 0], torch.tensor(pixels[0, 0] / 255.0).float())


def test_query_crop_shrinks_by_its_full_image_factor(tmp_path):
    """Hand-worked, as the reference's ImagesFromList: imresize(crop, imsize * max(crop.size)
    / max(image.size)), and PIL's thumbnail floors the float size."""
    path = tmp_path / "big.png"
    Image.new("RGB", (1000, 800), (90, 120, 150)).save(path)
    # The full image shrinks by 500 / 1000 = 1/2: to 500 x 400.
    assert load_image(path, imsize=500).size == (500, 400)
    # A 300 x 200 crop shrinks by the same 1/2: max side 500 * 300 / 1000 = 150, so 150 x 100
    # (not 500 x 333, as shrinking the crop itself to imsize would give).
    assert load_image(path, imsize=500, bbox=[100, 50, 400, 250]).size == (150, 100)
    assert crop_imsize(500, (300, 200), (1000, 800)) == 150
    # 1024 * 333 / 1000 = 340.99, floored to 340; the 333 x 100 crop is within it and is
    # never enlarged.
    assert crop_imsize(1024, (333, 100), (1000, 800)) == 340
    assert load_image(path, imsize=1024, bbox=[0, 0, 333, 100]).size == (333, 100)
    # 700 * 333 / 1000 = 233.1 → 233: 333 x 100 → 233 x 70 (PIL's aspect-preserving rounding).
    assert load_image(path, imsize=700, bbox=[0, 0, 333, 100]).size == (233, 70)
    # A box covering the whole image is the image, shrunk to imsize.
    assert load_image(path, imsize=500, bbox=[0, 0, 1000, 800]).size == (500, 400)
    # The header-only prediction that batches images by size follows the same rule.
    for imsize, box in ((500, [100, 50, 400, 250]), (700, [0, 0, 333, 100]),
                        (500, [0.4, 0.6, 299.5, 201.5]), (1024, [0, 0, 333, 100])):
        assert resized_size(path, imsize, box) == load_image(path, imsize, box).size, box


def test_unreadable_images_are_named(tmp_path):
    with pytest.raises(ImageReadError, match=r"missing\.jpg: image file not found"):
        load_image(tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match=r"corrupt\.jpg: cannot decode"):
        load_image(corrupt)
    truncated = tmp_path / "truncated.jpg"
    write_image(truncated, 64, 64)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ImageReadError, match=r"truncated\.jpg"):
        load_image(truncated)


def test_rescale_matches_reference_sizes():
    images = torch.rand(2, 3, 101, 64)
    assert rescale(images, 1.0) is images
    assert rescale(images, 0.5).shape == (2, 3, 50, 32)
    assert rescale(images, 2**-0.5).shape == (2, 3, 71, 45)


def make_revisitop(root, name="toyset"):
    directory = root / name
    imlist = [f"db{i}" for i in range(4)]
    qimlist = ["q0"]
    for i, image_name in enumerate(imlist + qimlist):
        write_image(directory / "jpg" / f"{image_name}.jpg", 40 + i, 30, seed=i)
    gnd = [{"bbx": [2.0, 3.0, 20.0, 25.0], "easy": [0], "hard": [2], "junk": [3]}]
    write_gnd(directory / f"gnd_{name}.pkl", imlist, qimlist, gnd)
    return directory


def test_revisitop_reader_crops_queries_and_appends_distractors(tmp_path, monkeypatch):
    make_revisitop(tmp_path)
    monkeypatch.setenv("ASYMRET_DATA", str(tmp_path))
    dataset = RevisitopDataset.load("toyset")
    assert dataset.imlist == ["db0", "db1", "db2", "db3"] and dataset.gnd[0]["junk"] == [3]
    query, index = dataset.query_images()[0]
    assert index == 0 and query.shape == (3, 22, 18)
    database = dataset.database_images(imsize=20)
    assert len(database) == 4 and database[1][0].shape == (3, 15, 20)
    distractor_dir = tmp_path / "revisitop1m"
    write_image(distractor_dir / "jpg" / "x" / "d0.jpg", 10, 10)
    (distractor_dir / "revisitop1m.txt").write_text("x/d0.jpg\n")
    with_distractors = dataset.database_images(distractors=distractor_paths())
    assert len(with_distractors) == 5 and with_distractors[4][0].shape == (3, 10, 10)


def test_revisitop_reader_errors_name_the_file(tmp_path):
    with pytest.raises(AsymretError, match=r"gnd_roxford5k\.pkl.*asymret download roxford5k"):
        RevisitopDataset.load("roxford5k", root=tmp_path)
    with pytest.raises(AsymretError, match=r"revisitop1m\.txt"):
        distractor_paths(tmp_path)


def write_pickle(path, obj):
    path.write_bytes(pickle.dumps(obj))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([1, 2], "expected a dict, got list"),
        ({"imlist": ["a"], "qimlist": ["q"]}, "missing key 'gnd'"),
        ({"imlist": "a", "qimlist": ["q"], "gnd": []}, "'imlist' must be a list, got str"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": []}, "'gnd' has 0 entries but 'qimlist' has 1"),
        (
            {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0], "junk": []}]},
            r"gnd\[0\]: missing key 'hard'",
        ),
        (
            {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [1], "hard": [], "junk": []}]},
            r"gnd\[0\]\['easy'\] holds index 1 outside imlist \(1 images\)",
        ),
        (
            {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": ["x"], "hard": [], "junk": []}]},
            r"gnd\[0\]\['easy'\] must be a list of integer indices",
        ),
        (
            {
                "imlist": ["a"],
                "qimlist": ["q"],
                "gnd": [{"bbx": [1, 2], "easy": [0], "hard": [], "junk": []}],
            },
            r"gnd\[0\]\['bbx'\] must be four numbers",
        ),
    ],
)
def test_load_gnd_names_file_and_key(tmp_path, content, message):
    path = write_pickle(tmp_path / "gnd_bad.pkl", content)
    with pytest.raises(AsymretError, match=message) as raised:
        load_gnd(path)
    assert str(raised.value).startswith(str(path))


def test_load_gnd_missing_file(tmp_path):
    with pytest.raises(AsymretError, match=r"gnd_missing\.pkl: cannot read"):
        load_gnd(tmp_path / "gnd_missing.pkl")


def test_gnd_written_is_read_back_as_written(tmp_path):
    imlist, qimlist = [f"db{i}" for i in range(5)], ["q0", "q1"]
    gnd = [
        {"bbx": [0.5, 1.0, 30.0, 20.25], "easy": [4, 0], "hard": [2], "junk": []},
        {"easy": [], "hard": [1, 3], "junk": [0]},
    ]
    path = write_gnd(tmp_path / "gnd_toy.pkl", imlist, qimlist, gnd)
    assert load_gnd(path) == {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}


def test_gnd_writer_hand_worked(tmp_path):
    """Tuples and numpy values are written as plain lists of ints and floats, ``bbx`` first;
    the folder is created; the pickle is protocol 3 unless asked otherwise."""
    path = write_gnd(
        tmp_path / "toy" / "gnd_toy.pkl",
        ("a", "b", "c"),
        ["q"],
        [{"junk": [], "hard": (1,), "easy": np.array([2, 0]), "bbx": (1, 2, 30.5, np.int64(40))}],
    )
    assert path == tmp_path / "toy" / "gnd_toy.pkl" and path.read_bytes()[:2] == b"\x80\x03"
    raw = load_pickle(path)
    assert raw == {
        "imlist": ["a", "b", "c"],
        "qimlist": ["q"],
        "gnd": [{"bbx": [1.0, 2.0, 30.5, 40.0], "easy": [2, 0], "hard": [1], "junk": []}],
    }
    assert list(raw["gnd"][0]) == ["bbx", "easy", "hard", "junk"]
    assert [type(v) for v in raw["gnd"][0]["bbx"]] == [float] * 4
    assert [type(i) for i in raw["gnd"][0]["easy"]] == [int, int]
    assert load_gnd(path) == raw
    again = write_gnd(tmp_path / "gnd_2.pkl", ["a"], [], [], protocol=2)
    assert again.read_bytes()[:2] == b"\x80\x02" and load_gnd(again)["imlist"] == ["a"]


@pytest.mark.parametrize(
    ("gnd", "message"),
    [
        ([], "'gnd' has 0 entries but 'qimlist' has 1"),
        ([{"easy": [0], "junk": []}], r"gnd\[0\]: missing key 'hard'"),
        ([{"easy": [1], "hard": [], "junk": []}], r"gnd\[0\]\['easy'\] holds index 1 outside"),
        ([{"bbx": [1, 2], "easy": [0], "hard": [], "junk": []}], r"\['bbx'\] must be four"),
    ],
)
def test_gnd_writer_refuses_what_the_reader_refuses(tmp_path, gnd, message):
    path = tmp_path / "gnd_bad.pkl"
    with pytest.raises(AsymretError, match=message) as raised:
        write_gnd(path, ["a"], ["q"], gnd)
    assert str(raised.value).startswith(str(path)) and not path.exists()


def make_sfm(root, name="retrieval-toy"):
    directory = root / name
    cids = [f"{i:032x}" for i in range(1, 7)]
    for i, cid in enumerate(cids):
        write_image(directory / cid_to_relative_path(cid), 20, 16, seed=i)
    split = {"cids": cids, "cluster": [0, 0, 1, 1, 2, 2], "qidxs": [0, 2], "pidxs": [1, 3]}
    write_training_db(directory / f"{name}.pkl", split, split)
    return directory, cids


def test_sfm_reader_paths_and_pairs(tmp_path):
    directory, cids = make_sfm(tmp_path)
    db = TrainingDb.load("retrieval-toy", "train", root=tmp_path)
    assert len(db) == 6 and db.clusters.tolist() == [0, 0, 1, 1, 2, 2]
    assert db.query_indices.tolist() == [0, 2] and db.positive_indices.tolist() == [1, 3]
    cid = cids[0]
    assert db.paths[0] == directory / "ims" / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid
    image, index = db.images(imsize=10)[5]
    assert index == 5 and image.shape == (3, 8, 10)


def test_sfm_reader_rejects_bad_dbs(tmp_path):
    with pytest.raises(AsymretError, match="asymret download sfm120k"):
        TrainingDb.load(root=tmp_path)
    directory, cids = make_sfm(tmp_path)
    bad = {"train": {"cids": cids, "cluster": [0] * 6, "qidxs": [0], "pidxs": [9]}}
    (directory / "retrieval-toy.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(AsymretError, match=r"pidxs out of range"):
        TrainingDb.load("retrieval-toy", root=tmp_path)
    with pytest.raises(AsymretError, match="no 'val' split"):
        TrainingDb.load("retrieval-toy", "val", root=tmp_path)


def test_training_db_written_is_read_back_as_written(tmp_path):
    """Hand-worked: the splits come back as written, each image under
    ``ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>``."""
    cids = ["00112233445566778899aabbccddeeff", "0123456789abcdef0123456789abcdef", "ffee01"]
    train = {"cids": cids[:2], "cluster": [7, 7], "qidxs": [0, 1], "pidxs": [1, 0]}
    val = {"cids": cids[2:], "cluster": np.array([3]), "qidxs": (), "pidxs": []}
    path = write_training_db(tmp_path / "retrieval-toy" / "retrieval-toy.pkl", train, val)
    assert path.read_bytes()[:2] == b"\x80\x03"
    raw = load_pickle(path)
    assert raw == {
        "train": train,
        "val": {"cids": ["ffee01"], "cluster": [3], "qidxs": [], "pidxs": []},
    }
    assert list(raw) == ["train", "val"]
    assert list(raw["train"]) == ["cids", "cluster", "qidxs", "pidxs"]
    assert [type(c) for c in raw["val"]["cluster"]] == [int]
    db = TrainingDb.load("retrieval-toy", "train", root=tmp_path)
    assert db.split == "train" and db.cids == cids[:2] and db.clusters.tolist() == [7, 7]
    assert db.query_indices.tolist() == [0, 1] and db.positive_indices.tolist() == [1, 0]
    folder = tmp_path / "retrieval-toy"
    assert db.paths == [folder / "ims/ff/ee/dd" / cids[0], folder / "ims/ef/cd/ab" / cids[1]]
    val_db = TrainingDb.load("retrieval-toy", "val", root=tmp_path)
    assert val_db.cids == ["ffee01"] and val_db.clusters.tolist() == [3]
    assert val_db.query_indices.tolist() == [] and val_db.paths == [folder / "ims/01/ee/ff/ffee01"]


def test_whitening_db_written_is_read_back_as_written(tmp_path):
    pairs = {"cids": ["a", "b", "c"], "qidxs": [0, 2], "pidxs": [1, 1]}
    path = write_whitening_db(tmp_path / "toy-whiten.pkl", pairs, protocol=2)
    assert load_pickle(path) == pairs, "no cluster key unless one is given"
    db = read_whitening_db(path)
    assert db.split == "whiten" and db.cids == ["a", "b", "c"] and db.clusters.tolist() == [-1] * 3
    assert db.query_indices.tolist() == [0, 2] and db.positive_indices.tolist() == [1, 1]
    clustered = write_whitening_db(tmp_path / "c-whiten.pkl", {**pairs, "cluster": [5, 5, 6]})
    assert list(load_pickle(clustered)) == ["cids", "cluster", "qidxs", "pidxs"]
    assert read_whitening_db(clustered).clusters.tolist() == [5, 5, 6]


def test_training_and_whitening_db_writers_refuse_what_the_readers_refuse(tmp_path):
    split = {"cids": ["a", "b"], "cluster": [0, 0], "qidxs": [0], "pidxs": [1]}
    path = tmp_path / "db.pkl"
    with pytest.raises(AsymretError, match=r"db\.pkl: split 'val' lacks cluster"):
        write_training_db(path, split, {"cids": ["c"], "qidxs": [], "pidxs": []})
    with pytest.raises(AsymretError, match=r"split 'train': pidxs out of range 0\.\.1"):
        write_training_db(path, {**split, "pidxs": [2]}, split)
    with pytest.raises(AsymretError, match=r"whitening db lacks pidxs"):
        write_whitening_db(path, {"cids": ["a"], "qidxs": [0]})
    with pytest.raises(AsymretError, match=r"2 qidxs but 1 pidxs"):
        write_whitening_db(path, {"cids": ["a"], "qidxs": [0, 0], "pidxs": [0]})
    assert not path.exists()


def test_unreadable_training_images_can_be_skipped_and_counted(tmp_path):
    make_sfm(tmp_path)
    db = TrainingDb.load("retrieval-toy", root=tmp_path)
    db.paths[2].write_bytes(b"garbage")
    strict = db.images()
    with pytest.raises(ImageReadError, match=db.cids[2]):
        strict[2]
    lenient = db.images(skip_unreadable=True)
    items = [lenient[i] for i in range(len(db))]
    assert items[2] is None and sum(item is None for item in items) == 1
    assert lenient.skipped == [db.paths[2]]


def make_photo_folder(tmp_path):
    rows = [
        "path,instance,role,x1,y1,x2,y2",
        "train/a1.jpg,arch,train,,,,",
        "train/a2.jpg,arch,,,,,",
        "train/a3.jpg,arch,train,,,,",
        "train/b1.jpg,bridge,train,,,,",
        "train/b2.jpg,bridge,train,,,,",
        "test/t_q.jpg,tower,query,2,2,20,18",
        "test/s_q.jpg,statue,query,,,,",
        "test/t1.jpg,tower,database,,,,",
        "test/x1.jpg,street,database,,,,",
        "test/t2.jpg,tower,database,,,,",
        "test/s1.jpg,statue,database,,,,",
    ]
    (tmp_path / "images.csv").write_text("\n".join(rows) + "\n")
    for i, row in enumerate(rows[1:]):
        write_image(tmp_path / row.split(",")[0], 32, 24, seed=i)
    return tmp_path


def test_photo_folder_gives_training_pairs_and_test_ground_truth(tmp_path):
    folder = PhotoFolder.load(make_photo_folder(tmp_path))
    assert folder.summary() == "11 images of 5 instances: 5 train, 2 query, 4 database"
    db = folder.training_db()
    assert db.clusters.tolist() == [0, 0, 0, 1, 1]
    pairs = set(zip(db.query_indices.tolist(), db.positive_indices.tolist(), strict=True))
    assert pairs == {(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (3, 4), (4, 3)}
    test = folder.test_set()
    assert test.qimlist == ["test/t_q.jpg", "test/s_q.jpg"]
    assert test.gnd[0] == {"bbx": [2.0, 2.0, 20.0, 18.0], "easy": [0, 2], "hard": [], "junk": []}
    assert test.gnd[1]["easy"] == [3] and test.gnd[1]["bbx"] == [0.0, 0.0, 32.0, 24.0]
    query, _ = test.query_images()[0]
    assert query.shape == (3, 16, 18)
    assert folder.find_unreadable() == []


def test_photo_folder_reports_every_bad_image_and_row(tmp_path):
    make_photo_folder(tmp_path)
    (tmp_path / "train" / "a2.jpg").unlink()
    (tmp_path / "test" / "x1.jpg").write_bytes(b"broken")
    problems = PhotoFolder.load(tmp_path).find_unreadable()
    assert len(problems) == 2
    assert "a2.jpg: image file not found" in problems[0] and "x1.jpg: cannot decode" in problems[1]
    with open(tmp_path / "images.csv", "a") as handle:
        handle.write("test/t9.jpg,tower,sideways,,,,\ntest/t1.jpg,tower,database,,,,\n")
    with pytest.raises(AsymretError, match=r"images\.csv:13: 'test/t9\.jpg' has role 'sideways'"):
        PhotoFolder.load(tmp_path)
    lenient = PhotoFolder.load(tmp_path, strict=False)
    assert len(lenient.problems) == 2 and "listed twice" in lenient.problems[1]
    assert len(lenient.rows) == 11
