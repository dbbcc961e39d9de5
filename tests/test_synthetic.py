"""The synthetic benchmark: determinism, official formats, ground truth, difficulty."""

import hashlib
import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asymret.data.revisitop import load_gnd
from asymret.data.synth import (
    GND_FILE,
    META_FILE,
    MIN_QUERY_POSITIVES,
    SYNTH_VERSION,
    TEST_DIR,
    TRAIN_DB_FILE,
    TRAIN_DIR,
    generate_synth,
    synth_config,
)
from asymret.data.synth.geometry import _landmark_geometry, _plan_landmark, _wall_extent
from asymret.data.synth.labels import _label_database, _query_region
from asymret.data.synth.scene import _observe
from asymret.data.synth.streams import _ROLE_QUERY
from asymret.data.synth.views import _landmark_view, _query_spots, _Spot
from asymret.errors import AsymretError
from asymret.safe_pickle import load_pickle

TINY = synth_config(
    "small",
    image_size=64,
    train_landmarks=3,
    train_images_per_landmark=4,
    val_landmarks=1,
    val_images_per_landmark=3,
    test_landmarks=2,
    queries_per_landmark=2,
    database_images_per_landmark=8,
    distractor_landmarks=1,
    images_per_distractor_landmark=3,
    street_images=3,
    photo_images=2,
)

SMALL_DIGEST = "23804c163163038b620e79a45823a19014c2d441ffb4d2fc613e6ecb80c59ef6"
"""sha256 (see :func:`_tree_digest`) of the ``small`` benchmark of seed 0, 343 files."""


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth-small")
    return generate_synth(root, seed=0, size="small", workers=1, progress=False)


@pytest.fixture(scope="module")
def meta(small) -> dict:
    return json.loads((small / TEST_DIR / META_FILE).read_text())


@pytest.fixture(scope="module")
def gnd(small) -> dict:
    return load_pickle(small / TEST_DIR / GND_FILE)


@pytest.fixture(scope="module")
def train_db(small) -> dict:
    return load_pickle(small / TRAIN_DIR / TRAIN_DB_FILE)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _tree_digest(root: Path) -> str:
    """sha256 over every file under ``root``: its relative path and the sha256 of its bytes,
    one ``<path>\\0<sha256>\\n`` line per file in sorted order."""
    lines = (f"{name}\0{digest}\n" for name, digest in sorted(_digests(root).items()))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _cid_path(root: Path, cid: str) -> Path:
    return root / TRAIN_DIR / "ims" / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(small, tmp_path):
    again = generate_synth(tmp_path, seed=0, size="small", workers=2, progress=False)
    first, second = _digests(small), _digests(again)
    assert len(first) > 300
    assert first == second


def test_output_digest(small):
    """Every file of ``generate_synth(seed=0, size="small")``, byte for byte, as recorded
    before the generator was split into modules; a change here needs a new SYNTH_VERSION."""
    assert len(_digests(small)) == 343
    assert _tree_digest(small) == SMALL_DIGEST


def test_another_seed_gives_other_files(tmp_path):
    one = _digests(generate_synth(tmp_path / "a", seed=0, config=TINY, progress=False))
    two = _digests(generate_synth(tmp_path / "b", seed=1, config=TINY, progress=False))
    assert one[f"{TEST_DIR}/{GND_FILE}"] != two[f"{TEST_DIR}/{GND_FILE}"]
    images = [name for name in one if name.endswith(".jpg")]
    assert images and all(one[name] != two.get(name) for name in images)
    training = [name for name in one if name.startswith(f"{TRAIN_DIR}/ims/")]
    assert training and not set(training) & set(two)  # image ids depend on the seed


# --------------------------------------------------------------------------------------------
# Official formats
# --------------------------------------------------------------------------------------------


def test_test_set_is_a_revisitop_pickle_with_its_images(small, gnd):
    raw = (small / TEST_DIR / GND_FILE).read_bytes()
    assert raw[:2] == b"\x80\x03"  # pickle protocol 3
    assert set(gnd) == {"imlist", "qimlist", "gnd"}
    assert load_gnd(small / TEST_DIR / GND_FILE)["imlist"] == gnd["imlist"]
    assert len(gnd["gnd"]) == len(gnd["qimlist"]) == 12
    assert not set(gnd["imlist"]) & set(gnd["qimlist"])
    for entry in gnd["gnd"]:
        assert set(entry) == {"bbx", "easy", "hard", "junk"}
        assert len(entry["bbx"]) == 4 and all(type(v) is float for v in entry["bbx"])
        for name in ("easy", "hard", "junk"):
            assert all(type(i) is int and 0 <= i < len(gnd["imlist"]) for i in entry[name])
    on_disk = {path.stem for path in (small / TEST_DIR / "jpg").iterdir()}
    assert on_disk == set(gnd["imlist"]) | set(gnd["qimlist"])
    for name in gnd["imlist"] + gnd["qimlist"]:
        with Image.open(small / TEST_DIR / "jpg" / f"{name}.jpg") as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert max(image.size) == 128
            image.load()


def test_training_db_is_an_sfm120k_pickle_with_its_images(small, train_db):
    assert (small / TRAIN_DIR / TRAIN_DB_FILE).read_bytes()[:2] == b"\x80\x03"
    assert set(train_db) == {"train", "val"}
    files = {path for path in (small / TRAIN_DIR / "ims").rglob("*") if path.is_file()}
    expected = set()
    for split in train_db.values():
        assert set(split) == {"cids", "cluster", "qidxs", "pidxs"}
        assert len(split["cids"]) == len(split["cluster"])
        assert len(split["qidxs"]) == len(split["pidxs"]) > 0
        assert len(set(split["cids"])) == len(split["cids"])
        for cid in split["cids"]:
            assert re.fullmatch(r"[0-9a-f]{32}", cid)
            expected.add(_cid_path(small, cid))
    assert files == expected
    for path in sorted(files):
        with Image.open(path) as image:
            assert image.format == "JPEG"
            image.load()


def test_meta_records_seed_size_and_version(small, meta, gnd, train_db):
    assert meta["seed"] == 0 and meta["size"] == "small"
    assert meta["version"] == SYNTH_VERSION
    assert meta["config"] == asdict(synth_config("small"))
    assert meta["counts"]["database"] == len(gnd["imlist"])
    assert meta["counts"]["train_pairs"] == len(train_db["train"]["qidxs"])


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------


def test_every_image_of_the_query_landmark_is_labelled_and_nothing_else(gnd, meta):
    landmark_of = np.array(meta["database_landmark"])
    for query, entry in enumerate(gnd["gnd"]):
        lists = [set(entry[name]) for name in ("easy", "hard", "junk")]
        assert not (lists[0] & lists[1] or lists[0] & lists[2] or lists[1] & lists[2])
        assert len(lists[0] | lists[1]) >= MIN_QUERY_POSITIVES
        same_landmark = set(np.flatnonzero(landmark_of == meta["query_landmark"][query]))
        assert lists[0] | lists[1] | lists[2] == same_landmark


def test_every_protocol_has_positives_and_distractors(gnd, meta):
    kinds = set(meta["database_kind"])
    assert kinds == {"landmark", "street", "photo"}
    distractor_landmarks = set(meta["landmarks"]["distractor"])
    assert distractor_landmarks & set(meta["database_landmark"]) == distractor_landmarks
    assert any(entry["easy"] for entry in gnd["gnd"])
    assert any(entry["hard"] for entry in gnd["gnd"])
    assert any(entry["junk"] for entry in gnd["gnd"])


def test_query_boxes_lie_inside_the_query_images(small, gnd):
    for name, entry in zip(gnd["qimlist"], gnd["gnd"], strict=True):
        with Image.open(small / TEST_DIR / "jpg" / f"{name}.jpg") as image:
            width, height = image.size
        x1, y1, x2, y2 = entry["bbx"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert (x2 - x1) * (y2 - y1) >= 0.1 * width * height


def test_training_and_test_landmarks_are_disjoint(train_db, meta):
    train = set(train_db["train"]["cluster"])
    val = set(train_db["val"]["cluster"])
    tested = set(meta["query_landmark"]) | set(meta["database_landmark"]) - {-1}
    assert train and val and tested
    assert not train & val and not (train | val) & tested
    assert set(meta["landmarks"]["train"]) == train and set(meta["landmarks"]["val"]) == val


def test_training_pairs_join_two_images_of_one_landmark(train_db):
    for split in train_db.values():
        for query, positive in zip(split["qidxs"], split["pidxs"], strict=True):
            assert 0 <= query < len(split["cids"]) and 0 <= positive < len(split["cids"])
            assert query != positive
            assert split["cluster"][query] == split["cluster"][positive]


def test_labels_follow_viewpoint_change_and_overlap():
    config = synth_config("small")
    plan = _plan_landmark(0, 7)
    geometry = _landmark_geometry(plan)
    front = replace(_query_spots(0, plan, config, 1)[0], yaw=0.0)
    assert front.quad == 0

    def calm_view(number, spot):
        key = (plan.landmark_id, _ROLE_QUERY, number)  # no occluders, normal light
        return _landmark_view(0, key, "", plan, spot, config)

    query = calm_view(0, front)
    region, _ = _query_region(query, geometry, front)
    query_seen = _observe(query, geometry)
    candidates = {
        "same spot": front,
        "strong yaw": _Spot(0, front.region, np.radians(55), 0.8, 1.7),
        "far away": _Spot(0, front.region, 0.0, 0.1, 1.7),
        "back wall": _Spot(2, (0.0, 0.0, *_wall_extent(geometry.quads[2])), 0.0, 0.8, 1.7),
    }
    labels = {
        name: _label_database(
            region, query_seen, geometry, [_observe(calm_view(k + 1, spot), geometry)]
        )[0]
        for k, (name, spot) in enumerate(candidates.items())
    }
    assert labels == {
        "same spot": "easy",
        "strong yaw": "hard",
        "far away": "junk",
        "back wall": "junk",
    }


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    generate_synth(tmp_path, seed=0, config=TINY, progress=False)
    with pytest.raises(AsymretError, match="overwrite"):
        generate_synth(tmp_path, seed=0, config=TINY, progress=False)
    generate_synth(tmp_path, seed=0, config=TINY, overwrite=True, progress=False)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"size": "huge"}, "size"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, arguments, message):
    with pytest.raises(AsymretError, match=message):
        generate_synth(tmp_path, progress=False, **arguments)


def test_bad_config_is_refused():
    with pytest.raises(AsymretError, match="train_images_per_landmark"):
        synth_config("small", train_images_per_landmark=1)
    with pytest.raises(AsymretError, match="no_such_field"):
        synth_config("small", no_such_field=3)


# --------------------------------------------------------------------------------------------
# Difficulty
# --------------------------------------------------------------------------------------------


def _features(net, paths, boxes=None):
    """Descriptors of the images (cropped to ``boxes`` when given), batched by image size."""
    import torch

    pixels = []
    for k, path in enumerate(paths):
        with Image.open(path) as image:
            image = image.convert("RGB")
            if boxes is not None:
                image = image.crop(tuple(round(v) for v in boxes[k]))
            pixels.append(np.asarray(image, dtype=np.float32) / 255.0)
    vectors = [None] * len(pixels)
    by_shape = {}
    for k, array in enumerate(pixels):
        by_shape.setdefault(array.shape, []).append(k)
    with torch.no_grad():
        for members in by_shape.values():
            batch = torch.from_numpy(np.stack([pixels[k] for k in members])).permute(0, 3, 1, 2)
            for k, vector in zip(members, net(batch).numpy(), strict=True):
                vectors[k] = vector
    return np.stack(vectors)


@pytest.mark.slow
def test_imagenet_network_is_well_above_chance_and_well_below_perfect(small, gnd):
    import torch

    from asymret.evaluate import evaluate_retrieval
    from asymret.models import create_model

    try:
        pretrained = create_model("tf_efficientnet_lite0-gem", pretrained=True).eval()
    except AsymretError as exc:
        pytest.skip(f"no offline ImageNet weights for lite0: {exc}")
    torch.manual_seed(0)
    random_init = create_model("tf_efficientnet_lite0-gem", pretrained=False).eval()
    jpg = small / TEST_DIR / "jpg"
    database_paths = [jpg / f"{name}.jpg" for name in gnd["imlist"]]
    query_paths = [jpg / f"{name}.jpg" for name in gnd["qimlist"]]
    boxes = [entry["bbx"] for entry in gnd["gnd"]]
    positives = np.mean([len(e["easy"]) + len(e["hard"]) for e in gnd["gnd"]])
    chance = 100 * positives / len(gnd["imlist"])
    scores = {}
    for name, net in (("pretrained", pretrained), ("random", random_init)):
        result = evaluate_retrieval(
            _features(net, query_paths, boxes), _features(net, database_paths), gnd["gnd"]
        )
        scores[name] = result.map["medium"]
    assert scores["pretrained"] > max(3 * chance, scores["random"] + 15)
    assert scores["pretrained"] < 85
