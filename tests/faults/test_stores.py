"""Stale or corrupted feature stores are refused, never scored.

A complete store is checked when it is opened: its size always, the sha256 of 64 sampled
rows by default, every byte with ``verify="full"`` (``asymret evaluate --verify full``).
A photo folder's vectors are kept under a name made of its resolved path and its images'
sizes and modification times, so another folder of the same name, or an edited image, gets
vectors of its own.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asymret.cli import main
from asymret.data import load_test_set
from asymret.data.folder import PhotoFolder
from asymret.errors import AsymretError
from asymret.evaluate import evaluate_retrieval
from asymret.features import FeatureStore, extract_vectors
from asymret.features.store import SAMPLE_ROWS, _sampled_rows
from asymret.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

META = {"source": "test"}
COUNT, DIM = 200, 8


def _rows(count: int = COUNT, dim: int = DIM) -> np.ndarray:
    rows = np.random.default_rng(0).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def store_dir(tmp_path) -> Path:
    store = FeatureStore.create(tmp_path / "store", [f"im{i}" for i in range(COUNT)], DIM, META)
    store.write(0, _rows())
    return tmp_path / "store"


def _rewrite_rows(store_dir: Path, change) -> None:
    """Apply ``change`` to the (N, D) vectors in the file, keeping its size."""
    vectors = np.load(store_dir / "vectors.npy", mmap_mode="r+")
    change(vectors)
    vectors.flush()
    del vectors


# --- One store -------------------------------------------------------------------------


def test_sampled_rows_are_spread_evenly_with_both_ends():
    for count in (1, 2, 63, 64, 65, 200, 10_007):
        rows = _sampled_rows(count)
        assert rows[0] == 0 and rows[-1] == count - 1
        assert len(rows) == min(count, SAMPLE_ROWS) and rows == sorted(set(rows))
        # No gap is longer than the even spacing rounded up: a longer run of bad rows is seen.
        gaps = np.diff(rows) if len(rows) > 1 else np.array([1])
        assert gaps.max() <= int(np.ceil((count - 1) / (SAMPLE_ROWS - 1))) + 1


def test_an_intact_store_opens_at_every_level(store_dir):
    for verify in ("size", "sample", "full", True, False):
        store = FeatureStore.open(store_dir, verify=verify)
        np.testing.assert_array_equal(np.asarray(store.vectors), _rows())


@pytest.mark.parametrize("change", [
    pytest.param(lambda v: v.__setitem__(slice(None), 0.0), id="all rows zeroed"),
    pytest.param(lambda v: v.__setitem__(slice(50, 150), 0.0), id="a run of rows zeroed"),
    pytest.param(lambda v: v.__setitem__(slice(None), v[::-1].copy()), id="rows reversed"),
    pytest.param(lambda v: v.__setitem__(0, -v[0]), id="first row negated"),
])
def test_changed_rows_are_refused_by_a_default_open(store_dir, change):
    _rewrite_rows(store_dir, change)
    with pytest.raises(AsymretError, match=r"vectors\.npy: sampled rows do not match meta\.json"):
        FeatureStore.open(store_dir)
    with pytest.raises(AsymretError, match=r"vectors\.npy: checksum mismatch"):
        FeatureStore.open(store_dir, verify="full")


def test_same_size_corruption_between_samples_needs_the_full_check(store_dir):
    unsampled = next(r for r in range(COUNT) if r not in set(_sampled_rows(COUNT)))
    _rewrite_rows(store_dir, lambda v: v.__setitem__((unsampled, 3), v[unsampled, 3] + 0.5))
    FeatureStore.open(store_dir)  # documented limit of the cheap check
    with pytest.raises(AsymretError, match=r"checksum mismatch .* delete .*store and extract"):
        FeatureStore.open(store_dir, verify="full")


def test_truncated_or_extended_vectors_are_refused(store_dir):
    vectors_file = store_dir / "vectors.npy"
    data = vectors_file.read_bytes()
    vectors_file.write_bytes(data[:-DIM * 4])
    with pytest.raises(AsymretError, match=r"vectors file is truncated or corrupt"):
        FeatureStore.open(store_dir, verify="size")
    vectors_file.write_bytes(data + b"\0" * 16)
    with pytest.raises(AsymretError, match=r"vectors file is truncated or corrupt"):
        FeatureStore.open(store_dir, verify="size")


def test_a_store_written_before_the_sample_is_checked_in_full(store_dir):
    meta = json.loads((store_dir / "meta.json").read_text())
    del meta["sample_checksum"]
    (store_dir / "meta.json").write_text(json.dumps(meta))
    FeatureStore.open(store_dir)
    unsampled = next(r for r in range(COUNT) if r not in set(_sampled_rows(COUNT)))
    _rewrite_rows(store_dir, lambda v: v.__setitem__(unsampled, 0.0))
    with pytest.raises(AsymretError, match=r"checksum mismatch"):
        FeatureStore.open(store_dir)


def test_an_unknown_verify_level_is_one_line(store_dir):
    with pytest.raises(AsymretError, match=r"verify must be one of size, sample, full, got 'all'"):
        FeatureStore.open(store_dir, verify="all")


# --- Through `asymret evaluate` --------------------------------------------------------


def _evaluate(capsys, root, teacher, dataset, cache, *extra) -> tuple[int, dict | None, str]:
    status = main(["evaluate", "--model", str(teacher), "--dataset", str(dataset), "--root",
                   str(root), "--imsize", "32", "--features", str(cache), "--json", *extra])
    out, err = capsys.readouterr()
    last_line = err.strip().splitlines()[-1] if err.strip() else ""
    return status, (json.loads(out) if status == 0 else None), last_line


def _reference_map(root, teacher, dataset) -> dict:
    """mAP of the network's vectors computed here, without any store."""
    test_set = load_test_set(str(dataset), root)
    net = load_model(teacher)
    queries = extract_vectors(net, test_set.query_images(32), progress=False)
    database = extract_vectors(net, test_set.database_images(32), progress=False)
    return evaluate_retrieval(queries.numpy(), database.numpy(), test_set.gnd).to_dict()["map"]


def _database_store(cache: Path) -> Path:
    [store] = [p.parent for p in cache.rglob("database/meta.json")]
    return store


@pytest.mark.parametrize("change", [
    pytest.param(lambda v: v.__setitem__(slice(None), 0.0), id="rows zeroed"),
    pytest.param(lambda v: v.__setitem__(slice(None), v[::-1].copy()), id="rows reversed"),
])
def test_evaluate_refuses_a_corrupted_cached_store(capsys, tmp_path, data_root, teacher_dir,
                                                   change):
    status, first, _ = _evaluate(capsys, data_root, teacher_dir, "tiny", tmp_path / "cache")
    assert status == 0
    assert first["symmetric"]["map"] == pytest.approx(
        _reference_map(data_root, teacher_dir, "tiny"), abs=1e-9)
    store = _database_store(tmp_path / "cache")
    _rewrite_rows(store, change)
    status, _, err = _evaluate(capsys, data_root, teacher_dir, "tiny", tmp_path / "cache")
    assert status == 2
    assert err.startswith("asymret: error: ") and "sampled rows do not match" in err
    assert str(store / "vectors.npy") in err
    shutil.rmtree(store)  # as the message says: delete it, and it is extracted again
    status, again, _ = _evaluate(capsys, data_root, teacher_dir, "tiny", tmp_path / "cache")
    assert status == 0 and again == first


# --- Photo folders: keyed on their path and their images -------------------------------


def _texture(seed: int) -> np.ndarray:
    coarse = np.random.default_rng(seed).random((6, 7, 3))
    return np.kron(coarse, np.ones((6, 6, 1)))[:32, :40]


def _view(texture: np.ndarray, seed: int) -> Image.Image:
    noisy = texture + np.random.default_rng(seed).normal(0, 0.05, texture.shape)
    return Image.fromarray((np.clip(noisy, 0, 1) * 255).astype(np.uint8))


def make_photo_folder(folder: Path, database_contents: list[int]) -> Path:
    """Instances A and B: a query each, and the first and second half of the database
    images; database image ``i`` shows the instance ``database_contents[i]`` (0: A, 1: B)
    whatever its CSV row says."""
    folder.mkdir(parents=True)
    textures = [_texture(10), _texture(20)]
    rows = ["path,instance,role"]
    for instance, name in enumerate("AB"):
        _view(textures[instance], 100 + instance).save(folder / f"q{name}.png")
        rows.append(f"q{name}.png,{name},query")
    for index, content in enumerate(database_contents):
        _view(textures[content], index).save(folder / f"d{index}.png")
        rows.append(f"d{index}.png,{'AB'[2 * index >= len(database_contents)]},database")
    (folder / "images.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_two_photo_folders_of_the_same_name_keep_their_own_vectors(capsys, tmp_path,
                                                                   teacher_dir):
    first = make_photo_folder(tmp_path / "a" / "photos", [0, 0, 0, 1, 1, 1])
    second = make_photo_folder(tmp_path / "b" / "photos", [1, 1, 1, 0, 0, 0])  # same names
    cache = tmp_path / "cache"
    status, first_result, _ = _evaluate(capsys, tmp_path, teacher_dir, first, cache)
    assert status == 0
    status, second_result, _ = _evaluate(capsys, tmp_path, teacher_dir, second, cache)
    assert status == 0
    fresh = _evaluate(capsys, tmp_path, teacher_dir, second, tmp_path / "fresh")[1]
    assert second_result == fresh
    reference = _reference_map(tmp_path, teacher_dir, second)
    assert np.isnan(reference["hard"]) and second_result["symmetric"]["map"]["hard"] is None
    for protocol in ("easy", "medium"):
        assert second_result["symmetric"]["map"][protocol] == pytest.approx(reference[protocol],
                                                                            abs=1e-9)
    # The test can fail: the truths differ, so reusing the first folder's vectors would show.
    assert second_result["symmetric"]["map"]["medium"] != first_result["symmetric"]["map"][
        "medium"]
    collections = sorted(p.name for p in cache.iterdir())
    assert len(collections) == 2 and all(name.startswith("photos-") for name in collections)
    # Hard has no positives in a photo folder: null in JSON, never NaN.
    assert first_result["symmetric"]["map"]["hard"] is None


def test_an_edited_image_is_extracted_again(capsys, tmp_path, teacher_dir):
    folder = make_photo_folder(tmp_path / "photos", [0, 0, 0, 1, 1, 1])
    cache = tmp_path / "cache"
    status, before, _ = _evaluate(capsys, tmp_path, teacher_dir, folder, cache)
    assert status == 0
    name_before = PhotoFolder.load(folder).collection_name(("query", "database"))
    training_before = PhotoFolder.load(folder).training_name()
    # d0 (instance A) now shows instance B; same file name, new content and time.
    shutil.copyfile(folder / "d3.png", folder / "d0.png")
    stat = os.stat(folder / "d0.png")
    os.utime(folder / "d0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert PhotoFolder.load(folder).collection_name(("query", "database")) != name_before
    assert PhotoFolder.load(folder).training_name() == training_before  # no train rows changed
    status, after, _ = _evaluate(capsys, tmp_path, teacher_dir, folder, cache)
    assert status == 0
    assert after == _evaluate(capsys, tmp_path, teacher_dir, folder, tmp_path / "fresh")[1]
    assert after["symmetric"]["map"]["medium"] != before["symmetric"]["map"]["medium"]


def test_training_name_follows_the_images_and_the_resolved_path(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(2):
        Image.new("RGB", (8, 8), (index * 50, 0, 0)).save(folder / f"t{index}.png")
    (folder / "images.csv").write_text("path,instance\nt0.png,x\nt1.png,x\n")
    name = PhotoFolder.load(folder).training_name()
    assert name.startswith("photos-") and len(name) == len("photos-") + 8
    link = tmp_path / "link"
    link.symlink_to(folder)
    assert PhotoFolder.load(link).training_name() == name  # the resolved path counts
    Image.new("RGB", (8, 8), (0, 0, 255)).save(folder / "t1.png")
    stat = os.stat(folder / "t1.png")
    os.utime(folder / "t1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert PhotoFolder.load(folder).training_name() != name


def test_evaluate_verify_full_finds_a_change_between_the_samples(capsys, tmp_path, teacher_dir):
    count = SAMPLE_ROWS + 6
    folder = make_photo_folder(tmp_path / "photos", [0] * (count // 2) + [1] * (count // 2))
    cache = tmp_path / "cache"
    assert _evaluate(capsys, tmp_path, teacher_dir, folder, cache)[0] == 0
    unsampled = next(r for r in range(count) if r not in set(_sampled_rows(count)))
    _rewrite_rows(_database_store(cache), lambda v: v.__setitem__(unsampled, -v[unsampled]))
    assert _evaluate(capsys, tmp_path, teacher_dir, folder, cache)[0] == 0  # the cheap check
    status, _, err = _evaluate(capsys, tmp_path, teacher_dir, folder, cache, "--verify", "full")
    assert status == 2 and "vectors.npy: checksum mismatch" in err, err
