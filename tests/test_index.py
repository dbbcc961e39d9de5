"""The teacher index on disk (asymret.index), the teacher record beside a student, and the
`asymret index` / `asymret search` commands."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import asymret.features.extract as extract_module
from asymret.cli import main
from asymret.data.image_list import ImageList
from asymret.data.images import load_image, to_tensor
from asymret.errors import AsymretError
from asymret.features import FeatureStore, extract_vectors, model_fingerprint
from asymret.files import exclusive_lock
from asymret.index import (
    INDEX_META,
    PENDING,
    WRITER_LOCK,
    IvfPqOptions,
    TeacherIndex,
    TorchQueryModel,
    add_to_index,
    build_index,
    check_query_model,
    collection_images,
    create_index,
    exact_neighbours,
    measure_recall,
    retrain_index,
    search_index,
)
from asymret.models import load_model
from asymret.teacher_record import TEACHER_RECORD_FILE, read_teacher_record, write_teacher_record
from train_fixtures import make_teacher, write_config

pytestmark = pytest.mark.usefixtures("one_thread")

IMSIZE = 32
BOX = (2.0, 3.0, 22.0, 19.0)


def write_photos(folder: Path, count: int, seed: int, groups: int = 4) -> list[Path]:
    """``count`` small JPEGs of ``groups`` textures (views: shifted, re-lit, noisy), of two
    sizes, so that rankings have structure and distinct scores."""
    rng = np.random.default_rng(seed)
    bases = [np.kron(rng.random((9, 10, 3)), np.ones((6, 6, 1))) for _ in range(groups)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        height, width = (24, 32) if i % 3 else (32, 24)
        base = bases[i % groups]
        top, left = rng.integers(0, 54 - height), rng.integers(0, 60 - width)
        crop = base[top : top + height, left : left + width] * rng.uniform(0.8, 1.2)
        crop = np.clip(crop + rng.normal(0, 0.05, crop.shape), 0, 1)
        path = folder / f"p{seed}_{i:03d}.jpg"
        Image.fromarray((crop * 255).astype(np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return load_model(teacher_dir)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, teacher_dir, teacher):
    """Another network of the teacher's dimension, recorded as trained against the teacher."""
    path = make_teacher(tmp_path_factory.mktemp("student") / "student", seed=2)
    write_teacher_record(path, teacher_dir, teacher)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    first = write_photos(folder / "a", 10, seed=0)
    second = write_photos(folder / "b", 5, seed=1)
    return folder, first, second


@pytest.fixture(scope="module")
def built(tmp_path_factory, teacher_dir, teacher, photos):
    """An exact index of photos/a."""
    out = tmp_path_factory.mktemp("index") / "idx"
    ids, paths = collection_images(photos[0] / "a")
    report = build_index(out, teacher, ids, paths, teacher_spec=teacher_dir, imsize=IMSIZE,
                         progress=False)
    return out, report


def reference_vectors(net, paths) -> np.ndarray:
    return extract_vectors(net, ImageList(paths, IMSIZE), progress=False).numpy()


def brute_force(queries: np.ndarray, database: np.ndarray, k: int):
    scores = queries @ database.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


def assert_same_ranking(hits, scores, order, paths):
    """Equal scores; equal order wherever consecutive scores are distinct."""
    assert len(hits) == len(order)
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)
    got = [h.path for h in hits]
    for rank, row in enumerate(order):
        tied = (rank > 0 and scores[rank - 1] - scores[rank] < 1e-5) or (
            rank + 1 < len(order) and scores[rank] - scores[rank + 1] < 1e-5)
        if not tied:
            assert got[rank] == str(paths[row]), rank


# --------------------------------------------------------------------- exact search


def test_exact_search_equals_a_brute_force_reference(built, teacher, student_dir, photos):
    out, report = built
    _, first, second = photos
    assert report.added == 10 and report.skipped == [] and report.recall is None
    assert not (out / PENDING).exists(), "the pending store is removed once committed"
    index = TeacherIndex.open(out, verify=True)
    assert index.kind == "exact" and index.count == 10 and index.dim == teacher.outputdim
    assert index.paths == [str(p) for p in sorted(first)]
    assert index.fingerprint == model_fingerprint(teacher) and index.imsize == IMSIZE
    database = reference_vectors(teacher, index.paths)
    model = TorchQueryModel.load(student_dir)
    queries = [first[0], second[1], second[2]]
    results = search_index(index, model, queries, k=7)
    query_vectors = np.stack([model([to_tensor(load_image(q, IMSIZE))])[0] for q in queries])
    scores, order = brute_force(query_vectors, database, 7)
    for hits, row_scores, row_order in zip(results, scores, order, strict=True):
        assert_same_ranking(hits, row_scores, row_order, index.paths)
    assert len({h.path for h in results[1]}) == 7
    # k beyond the collection: every image, once.
    assert sorted(h.path for h in search_index(out, model, queries[:1], k=50)[0]) == sorted(
        index.paths)


def test_a_box_crops_the_query_as_asymret_reads_queries(built, teacher, student_dir, photos):
    out, _ = built
    query = photos[2][0]
    model = TorchQueryModel.load(student_dir)
    index = TeacherIndex.open(out)
    [hits] = search_index(index, model, [query], k=10, box=BOX)
    cropped = to_tensor(load_image(query, IMSIZE, BOX))
    assert cropped.shape[1:] != to_tensor(load_image(query, IMSIZE)).shape[1:]
    scores, order = brute_force(model([cropped]), reference_vectors(teacher, index.paths), 10)
    assert_same_ranking(hits, scores[0], order[0], index.paths)
    [uncropped] = search_index(index, model, [query], k=10)
    assert [h.score for h in hits] != pytest.approx([h.score for h in uncropped])


def test_the_teacher_queries_its_own_index_and_finds_each_image_first(built, teacher):
    out, _ = built
    index = TeacherIndex.open(out)
    results = search_index(index, teacher, index.paths[:4], k=1)
    assert [hits[0].path for hits in results] == index.paths[:4]
    assert all(hits[0].score == pytest.approx(1.0, abs=1e-5) for hits in results)


# ---------------------------------------------------------------------- adding


def test_add_extends_the_index_and_skips_what_it_holds(tmp_path, teacher, teacher_dir, photos,
                                                       student_dir):
    folder, _, second = photos
    out = tmp_path / "idx"
    ids, paths = collection_images(folder / "a")
    build_index(out, teacher, ids, paths, teacher_spec=teacher_dir, imsize=IMSIZE,
                progress=False)
    ids, paths = collection_images(folder)  # a/ and b/
    report = add_to_index(out, ids, paths, progress=False)
    assert (report.added, report.already) == (5, 10)
    index = report.index
    assert index.count == 15 and index.paths[10:] == [str(p) for p in sorted(second)]
    assert sorted(p.name for p in out.iterdir()) == [
        WRITER_LOCK, "images-000002.json", "index-000002.faiss", INDEX_META]
    model = TorchQueryModel.load(student_dir)
    [hits] = search_index(out, model, [second[3]], k=15)
    scores, order = brute_force(model([to_tensor(load_image(second[3], IMSIZE))]),
                                reference_vectors(teacher, index.paths), 15)
    assert_same_ranking(hits, scores[0], order[0], index.paths)
    again = add_to_index(out, ids, paths, progress=False)
    assert (again.added, again.already, again.index.count) == (0, 15, 15)


def test_one_writer_at_a_time_and_a_killed_writer_leaves_no_lock(tmp_path, teacher,
                                                                 teacher_dir, photos):
    folder, _, second = photos
    out = tmp_path / "idx"
    ids, paths = collection_images(folder / "a")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; h = open(sys.argv[1], 'a'); "
         "fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(out / WRITER_LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        out.mkdir()
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(AsymretError, match=rf"index {out} is being written by another "
                                               "asymret run; wait for it"):
            build_index(out, teacher, ids, paths, imsize=IMSIZE, progress=False)
        assert not (out / INDEX_META).exists() and not (out / PENDING).exists()
    finally:
        holder.kill()
        holder.wait()
    build_index(out, teacher, ids, paths, teacher_spec=teacher_dir, imsize=IMSIZE,
                progress=False)
    with exclusive_lock(out / WRITER_LOCK, "a test"):
        with pytest.raises(AsymretError, match="being written by another asymret run"):
            add_to_index(out, [str(p) for p in second], second, progress=False)
    assert add_to_index(out, [str(p) for p in second], second, progress=False).added == 5


def test_a_killed_add_resumes_where_it_stopped(tmp_path, teacher, teacher_dir, photos,
                                               monkeypatch):
    folder = photos[0]
    out = tmp_path / "idx"
    build_index(out, teacher, *collection_images(folder / "a"), teacher_spec=teacher_dir,
                imsize=IMSIZE, progress=False)
    before = (out / INDEX_META).read_text()
    real_write = FeatureStore.write
    calls = []

    def write_then_die(self, start, vectors):
        calls.append(start)
        if len(calls) > 1:
            raise KeyboardInterrupt
        real_write(self, start, vectors)

    monkeypatch.setattr(FeatureStore, "write", write_then_die)
    ids, paths = collection_images(folder / "b")
    with pytest.raises(KeyboardInterrupt):
        add_to_index(out, ids, paths, chunk_size=2, progress=False)
    assert (out / INDEX_META).read_text() == before, "the index is untouched until committed"
    assert TeacherIndex.open(out).count == 10
    assert FeatureStore.open(out / PENDING, writable=True).complete_rows == 2
    monkeypatch.setattr(FeatureStore, "write", real_write)
    extracted = []
    real_extract = extract_module.extract_vectors

    def counting_extract(net, images, **options):
        extracted.extend(images.paths)
        return real_extract(net, images, **options)

    monkeypatch.setattr(extract_module, "extract_vectors", counting_extract)
    report = add_to_index(out, ids, paths, chunk_size=2, progress=False)
    assert extracted == [Path(p) for p in paths[2:]], "only the images not yet extracted"
    assert report.added == 5 and report.index.count == 15 and not (out / PENDING).exists()
    database = np.stack([report.index.faiss_index.reconstruct(i) for i in range(15)])
    np.testing.assert_allclose(database, reference_vectors(teacher, report.index.paths),
                               atol=1e-6)


def test_unreadable_images_are_skipped_and_reported(tmp_path, teacher, teacher_dir, photos):
    folder = tmp_path / "photos"
    good = write_photos(folder, 4, seed=5)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / ".hidden.jpg").write_bytes(b"ignored")
    report = build_index(tmp_path / "idx", teacher, *collection_images(folder),
                         teacher_spec=teacher_dir, imsize=IMSIZE, progress=False)
    assert report.added == 4 and report.skipped == [str((folder / "broken.jpg").resolve())]
    assert report.index.paths == [str(p.resolve()) for p in sorted(good)]


def test_add_refuses_a_teacher_with_other_weights(built, tmp_path, photos, student_dir):
    out, _ = built
    with pytest.raises(AsymretError, match="the given teacher's weights differ"):
        add_to_index(out, *collection_images(photos[0] / "b"), teacher=load_model(student_dir),
                     progress=False)


def test_build_refuses_an_existing_index_and_bad_settings(built, teacher, photos):
    out, _ = built
    ids, paths = collection_images(photos[0] / "a")
    with pytest.raises(AsymretError, match="already holds an index; add images with"):
        build_index(out, teacher, ids, paths, imsize=IMSIZE, progress=False)
    with pytest.raises(AsymretError, match="unknown index kind 'hnsw'"):
        build_index(out.parent / "new", teacher, ids, paths, kind="hnsw", progress=False)
    with pytest.raises(AsymretError, match="needs at least 256 vectors"):
        build_index(out.parent / "small", teacher, ids, paths, kind="ivfpq", imsize=IMSIZE,
                    progress=False)


# ------------------------------------------------------------------------ IVF-PQ


def clustered_vectors(count: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around ``clusters`` centres, with a decaying spectrum."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(dim) + 1.0) ** -0.5
    centres = rng.normal(size=(clusters, dim)) * scale
    vectors = centres[rng.integers(0, clusters, count)] + 0.5 * rng.normal(size=(count, dim)) \
        * scale
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


TEACHER_META = {"spec": None, "pretrained": False, "name": "generated", "config": {},
                "fingerprint": "sha256:" + "0" * 64}
PREPROCESSING = {"imsize": None, "scales": [1.0], "precision": "fp32"}


@pytest.fixture(scope="module")
def ivfpq_index(tmp_path_factory):
    vectors = clustered_vectors(4000, 64, 80, seed=0)
    out = tmp_path_factory.mktemp("ivfpq") / "idx"
    names = [f"v{i}" for i in range(len(vectors))]
    index = create_index(out, vectors, names, names, teacher=TEACHER_META,
                         preprocessing=PREPROCESSING, kind="ivfpq",
                         ivfpq=IvfPqOptions(nlist=32, nprobe=8, rerank=50), recall_queries=300)
    return index, vectors


def test_ivfpq_recall_is_measured_and_high_on_clustered_vectors(ivfpq_index):
    index, _ = ivfpq_index
    recall = index.recall
    assert recall["k"] == 10 and recall["queries"] == 300 and recall["count"] == 4000
    assert (recall["nprobe"], recall["rerank"]) == (8, 50)
    assert recall["recall"] >= 0.9
    assert json.loads((index.path / INDEX_META).read_text())["recall"] == recall
    settings = index.meta["ivfpq"]
    assert settings["factory"] == "IVF32,PQ32x4fs" and settings["train_size"] == 4000
    # Without re-ranking the codes alone are measured, and they find less.
    codes_only = measure_recall(index, 300, rerank=0)
    assert codes_only["rerank"] == 0 and codes_only["recall"] < recall["recall"]
    assert codes_only["recall"] >= 0.3
    one_list = measure_recall(index, 300, nprobe=1)
    assert one_list["recall"] < recall["recall"]
    assert faiss_nprobe(index) == 8, "an override does not stay"


def faiss_nprobe(index):
    import faiss

    return faiss.extract_index_ivf(index.faiss_index).nprobe


def test_ivfpq_reranked_scores_are_exact_inner_products(ivfpq_index):
    index, vectors = ivfpq_index
    queries = clustered_vectors(5, 64, 80, seed=1)
    scores, rows = index.search(queries, 10)
    stored = vectors.astype(np.float16).astype(np.float32)
    expected = np.einsum("qkd,qd->qk", stored[rows], queries)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    exact_scores, exact_rows = exact_neighbours(index, queries, 10)
    reference_scores, reference_rows = brute_force(queries, stored, 10)
    np.testing.assert_allclose(exact_scores, reference_scores, atol=1e-5)
    assert (exact_rows == reference_rows).mean() > 0.95
    approximate, _ = index.search(queries, 10, rerank=0)
    assert np.abs(approximate - scores).max() > 1e-4, "codes' scores are approximate"


def test_ivfpq_index_of_images_grows(tmp_path, teacher, teacher_dir):
    folder = tmp_path / "photos"
    write_photos(folder / "a", 260, seed=3, groups=13)
    write_photos(folder / "b", 12, seed=4, groups=3)
    report = build_index(tmp_path / "idx", teacher, *collection_images(folder / "a"),
                         teacher_spec=teacher_dir, imsize=16, kind="ivfpq",
                         ivfpq=IvfPqOptions(nlist=4, train_size=260), recall_queries=50,
                         progress=False)
    assert report.added == 260 and 0.5 <= report.recall["recall"] <= 1
    assert report.index.meta["ivfpq"]["factory"] == "IVF4,PQ8x4fs"
    assert report.index.meta["ivfpq"]["nprobe"] == 4, "at most nlist"
    added = add_to_index(tmp_path / "idx", *collection_images(folder), recall_queries=50,
                         progress=False)
    index = added.index
    assert (added.added, added.already, index.count) == (12, 260, 272)
    assert [p["name"] for p in index.meta["files"]["vectors"]] == [
        "vectors-000001.npy", "vectors-000002.npy"]
    assert added.recall["count"] == 272
    last = index.paths[-1]
    [hits] = search_index(index, teacher, [last], k=3)
    assert hits[0].path == last and hits[0].score == pytest.approx(1.0, abs=2e-3)


def test_retrain_fits_the_quantisers_to_the_grown_collection(tmp_path, teacher, teacher_dir,
                                                             capsys, built):
    folder = tmp_path / "photos"
    write_photos(folder / "a", 260, seed=3, groups=13)
    write_photos(folder / "b", 40, seed=4, groups=3)
    out = tmp_path / "idx"
    build_index(out, teacher, *collection_images(folder / "a"), teacher_spec=teacher_dir,
                imsize=16, kind="ivfpq", ivfpq=IvfPqOptions(nlist=4, nprobe=2, rerank=20),
                recall_queries=0, progress=False)
    grown = add_to_index(out, *collection_images(folder), progress=False).index
    vector_files = grown.meta["files"]["vectors"]
    stored = grown.vectors(np.arange(grown.count))
    status, printed, _ = run(capsys, "index", "retrain", out, "--nlist", 8,
                             "--recall-queries", 60)
    assert status == 0 and printed.startswith("retrained the quantisers on all 300 vectors\n")
    assert "IVF8,PQ8x4fs" in printed and "recall@10 against exact search" in printed
    index = TeacherIndex.open(out, verify=True)
    settings = index.meta["ivfpq"]
    assert (settings["nlist"], settings["train_size"]) == (8, 300), "trained on all of it"
    assert (settings["nprobe"], settings["rerank"]) == (2, 20), "search settings kept"
    assert index.meta["generation"] == grown.meta["generation"] + 1
    assert (index.ids, index.paths) == (grown.ids, grown.paths)
    assert index.meta["files"]["vectors"] == vector_files, "nothing extracted again"
    assert np.array_equal(index.vectors(np.arange(index.count)), stored)
    assert index.recall["count"] == 300 and index.recall["nprobe"] == 2
    assert sorted(p.name for p in out.glob("index-*.faiss")) == [
        f"index-{index.meta['generation']:06d}.faiss"]
    scores, rows = index.search(stored[-5:], 3)
    assert rows[:, 0].tolist() == list(range(295, 300))
    assert np.allclose(scores[:, 0], (stored[-5:] ** 2).sum(1), atol=1e-5)
    with pytest.raises(AsymretError, match="an exact index has no quantisers to retrain"):
        retrain_index(built[0])


# -------------------------------------------------------------- teachers of queries


class FakeQueryModel:
    """A plain callable with metadata, as an ONNX query model."""

    def __init__(self, net, **metadata):
        self.torch_model = TorchQueryModel(net)
        self.metadata = metadata

    def __call__(self, images):
        return self.torch_model(images)


def test_a_student_of_another_teacher_is_refused(built, tmp_path, teacher_dir, photos):
    out, _ = built
    other_teacher = load_model(make_teacher(tmp_path / "other", seed=7))
    student = make_teacher(tmp_path / "student", seed=8)
    write_teacher_record(student, tmp_path / "other", other_teacher)
    with pytest.raises(AsymretError) as error:
        search_index(out, TorchQueryModel.load(student), [photos[1][0]])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{student} was trained against another teacher "
                              f"({model_fingerprint(other_teacher)[:19]})")
    index = TeacherIndex.open(out)
    assert f"built index {out}, teacher test_efficientnet-gem-16 ({index.fingerprint[:19]})" \
        in message


def test_a_student_without_a_teacher_record_needs_allow_unknown_teacher(built, tmp_path,
                                                                        photos):
    out, _ = built
    student = make_teacher(tmp_path / "alone", seed=9)
    model = TorchQueryModel.load(student)
    assert model.metadata["teacher_fingerprint"] is None
    with pytest.raises(AsymretError, match=r"has no record of the teacher it was trained "
                       r"against \(no teacher\.json.*--allow-unknown-teacher"):
        search_index(out, model, [photos[1][0]])
    [hits] = search_index(out, model, [photos[1][0]], k=3, allow_unknown_teacher=True)
    assert len(hits) == 3


def test_query_models_are_checked_by_their_metadata(built, teacher, student_dir):
    index = TeacherIndex.open(built[0])
    student = load_model(student_dir)
    check_query_model(index, FakeQueryModel(student, teacher_fingerprint=index.fingerprint))
    check_query_model(index, FakeQueryModel(teacher, model_fingerprint=index.fingerprint))
    with pytest.raises(AsymretError, match="trained against another teacher"):
        check_query_model(index, FakeQueryModel(student, teacher_fingerprint="sha256:beef"))
    with pytest.raises(AsymretError, match="no record of the teacher"):
        check_query_model(index, lambda images: None)


def test_the_trainer_records_the_teacher_beside_the_student(tmp_path, data_root, teacher_dir,
                                                            teacher):
    from asymret.train import load_config, train

    config = load_config(write_config(tmp_path / "c.yaml", data_root, tmp_path / "run",
                                      teacher_dir, optim={"epochs": 1},
                                      data={"val_sets": []}))
    student = train(config)
    record = read_teacher_record(student)
    assert record.fingerprint == model_fingerprint(teacher)
    assert (record.spec, record.name) == (str(teacher_dir), "test_efficientnet-gem-16")
    alone = load_config(write_config(
        tmp_path / "alone.yaml", data_root, tmp_path / "alone", None, optim={"epochs": 1},
        data={"val_sets": []}, loss={"similarity": "symmetric", "positives": "pair"}))
    assert not (train(alone) / TEACHER_RECORD_FILE).exists()


def test_a_corrupt_teacher_record_is_named(tmp_path):
    (tmp_path / TEACHER_RECORD_FILE).write_text("{")
    with pytest.raises(AsymretError, match=f"{tmp_path / TEACHER_RECORD_FILE}: cannot read"):
        read_teacher_record(tmp_path)
    (tmp_path / TEACHER_RECORD_FILE).write_text('{"format": "asymret-teacher-record"}')
    with pytest.raises(AsymretError, match="version None is not supported"):
        read_teacher_record(tmp_path)
    assert read_teacher_record(tmp_path / "missing") is None


# --------------------------------------------------------------- damaged folders


def files_of(out: Path) -> dict[str, Path]:
    meta = json.loads((out / INDEX_META).read_text())
    return {"index": out / meta["files"]["index"]["name"],
            "images": out / meta["files"]["images"]["name"], "meta": out / INDEX_META}


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = bytes(255 - b for b in data[len(data) // 2 :])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "target", "message"),
    [
        (lambda p: p.unlink(), "index", "index file is missing"),
        (lambda p: p.write_bytes(p.read_bytes()[:-7]), "index", "truncated or corrupt"),
        (lambda p: p.write_bytes(b"\0" * p.stat().st_size), "index",
         "cannot read the faiss index"),
        (flip_bytes, "images", "checksum does not match index.json"),
        (lambda p: p.unlink(), "images", "index file is missing"),
        (lambda p: p.write_text("{"), "meta", "cannot read index metadata"),
        (lambda p: p.unlink(), "meta", "not an asymret index (index.json is missing)"),
    ],
)
def test_damaged_index_files_are_named(tmp_path, teacher, teacher_dir, photos, damage, target,
                                       message):
    out = tmp_path / "idx"
    build_index(out, teacher, *collection_images(photos[0] / "b"), imsize=IMSIZE,
                progress=False)
    path = files_of(out)[target]
    damage(path)
    with pytest.raises(AsymretError) as error:
        TeacherIndex.open(out)
    shown = str(error.value)
    assert message in shown and "\n" not in shown
    assert shown.startswith(str(out if target == "meta" and "missing" in message else path))


def test_verify_finds_a_changed_faiss_file_of_the_same_size(tmp_path, teacher, photos):
    out = tmp_path / "idx"
    build_index(out, teacher, *collection_images(photos[0] / "b"), imsize=IMSIZE,
                progress=False)
    path = files_of(out)["index"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # the last vector's last byte: still a readable faiss file
    path.write_bytes(bytes(data))
    assert TeacherIndex.open(out).count == 5
    with pytest.raises(AsymretError, match=f"{path}: checksum does not match"):
        TeacherIndex.open(out, verify=True)


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(AsymretError, match=f"{tmp_path / 'nope'}: no such index folder"):
        TeacherIndex.open(tmp_path / "nope")
    with pytest.raises(AsymretError, match="not a folder of images"):
        collection_images(tmp_path / "nope")
    with pytest.raises(AsymretError, match="no image files"):
        collection_images(tmp_path)


# ------------------------------------------------------------------ command line


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_command_line_round_trip(capsys, tmp_path, teacher_dir, student_dir, photos):
    folder, first, second = photos
    out = tmp_path / "idx"
    status, printed, _ = run(capsys, "index", "build", "--teacher", teacher_dir, "--images",
                             folder / "a", "--out", out, "--imsize", IMSIZE, "--quiet")
    assert status == 0 and printed.startswith("indexed 10 images\n")
    assert f"{out}: 10 images, 16-D, exact; teacher test_efficientnet-gem-16" in printed
    status, printed, _ = run(capsys, "index", "add", out, "--images", folder, "--quiet")
    assert status == 0 and printed.startswith("added 5 images (10 already indexed)\n")
    queries = [second[0], first[4]]
    status, printed, err = run(capsys, "search", "--index", out, "--model", student_dir,
                               *queries, "-k", 4, "--json", "--box", "2,3,22,19")
    assert status == 0 and err == ""
    listed = json.loads(printed)
    expected = search_index(out, TorchQueryModel.load(student_dir), queries, 4, box=BOX)
    assert [entry["query"] for entry in listed] == [str(q) for q in queries]
    for entry, hits in zip(listed, expected, strict=True):
        assert [r["rank"] for r in entry["results"]] == [1, 2, 3, 4]
        assert [(r["path"], r["score"]) for r in entry["results"]] == [
            (h.path, h.score) for h in hits]
    status, printed, _ = run(capsys, "search", "--index", out, "--model", student_dir,
                             queries[0], "-k", 2)
    lines = printed.splitlines()
    assert status == 0 and lines[0] == f"{queries[0]}:" and len(lines) == 3
    [plain] = search_index(out, TorchQueryModel.load(student_dir), queries[:1], 2)
    assert lines[1].split() == ["1", f"{plain[0].score:.4f}", plain[0].path]
    status, printed, _ = run(capsys, "index", "info", out, "--json", "--verify")
    assert status == 0 and json.loads(printed)["count"] == 15


def test_command_line_errors_are_one_line(capsys, tmp_path, built, photos):
    out, _ = built
    alone = make_teacher(tmp_path / "alone", seed=9)
    status, printed, err = run(capsys, "search", "--index", out, "--model", alone,
                               photos[1][0])
    assert status == 2 and printed == "" and err.count("\n") == 1
    assert err.startswith(f"asymret: error: {alone} has no record of the teacher")
    status, printed, _ = run(capsys, "search", "--index", out, "--model", alone, photos[1][0],
                             "--allow-unknown-teacher", "-k", 1)
    assert status == 0 and len(printed.splitlines()) == 2
    status, _, err = run(capsys, "search", "--index", tmp_path / "none", "--model", alone, "q")
    assert status == 2 and f"{tmp_path / 'none'}: no such index folder" in err
    status, _, err = run(capsys, "index", "build", "--teacher", alone, "--images", photos[0],
                         "--out", tmp_path / "x", "--nlist", 4)
    assert status == 2 and "--nlist: IVF-PQ settings, for --kind ivfpq" in err
    status, _, err = run(capsys, "search", "--index", out, "--model", alone, photos[1][0],
                         "--box", "5,5,1,1", "--allow-unknown-teacher")
    assert status == 2 and "--box must be x1,y1,x2,y2" in err


# ------------------------------------------------------------------------- ONNX


@pytest.mark.skipif(
    importlib.util.find_spec("asymret.export") is None
    or importlib.util.find_spec("onnxruntime") is None,
    reason="needs asymret.export and onnxruntime",
)
def test_an_onnx_student_gives_the_torch_ranking(capsys, tmp_path, built, student_dir, photos):
    from asymret.export import OnnxQueryModel, export_onnx

    out, _ = built
    onnx_file = tmp_path / "student.onnx"
    export_onnx(student_dir, onnx_file)
    queries = [photos[2][0], photos[1][3]]
    with_torch = search_index(out, TorchQueryModel.load(student_dir), queries, k=10, box=BOX)
    with_onnx = search_index(out, OnnxQueryModel(onnx_file), queries, k=10, box=BOX)
    for torch_hits, onnx_hits in zip(with_torch, with_onnx, strict=True):
        assert [h.path for h in onnx_hits] == [h.path for h in torch_hits]
        np.testing.assert_allclose([h.score for h in onnx_hits],
                                   [h.score for h in torch_hits], atol=1e-4)
    status, printed, _ = run(capsys, "search", "--index", out, "--model", onnx_file,
                             *queries, "--json", "--box", "2,3,22,19")
    assert status == 0
    assert [[r["path"] for r in entry["results"]] for entry in json.loads(printed)] == [
        [h.path for h in hits] for hits in with_torch]


def test_torch_query_model_takes_a_batch_or_a_list(teacher):
    model = TorchQueryModel(teacher)
    images = torch.rand(3, 3, 20, 16)
    batch = model(images)
    listed = model([images[0], torch.rand(3, 16, 20), images[2]])
    assert batch.shape == (3, teacher.outputdim) and batch.dtype == np.float32
    np.testing.assert_allclose(listed[[0, 2]], batch[[0, 2]], atol=1e-6)
