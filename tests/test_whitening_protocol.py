"""The published test protocol: whitening dbs, whitening learned on the database side (or taken
from a reference checkpoint's meta['Lw']), precision, against slow numpy references."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from asymret.bank import store_name
from asymret.cli import main
from asymret.data import load_test_set, load_whitening_pairs
from asymret.data.folder import PhotoFolder
from asymret.data.image_list import ImageList
from asymret.data.sfm120k import load_whitening_db, read_whitening_db, write_whitening_db
from asymret.errors import AsymretError
from asymret.evaluate import compute_map, evaluate_retrieval, protocol_ground_truth
from asymret.features import META_FILE, extract_to_store, extract_vectors
from asymret.models import import_reference_checkpoint, load_model
from asymret.models.checkpoint import reference_whitenings
from asymret.retrieval import evaluate_networks, network_whitening
from counting import ForwardCounter
from test_models import save_reference_checkpoint
from test_whitening import reference_apply, reference_whitening
from train_fixtures import make_teacher, make_training_data

IMSIZE = 32
SCALES = (1.0, 0.7071, 0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


def write_whiten_pkl(root):
    """``<root>/retrieval-tiny/retrieval-tiny-whiten.pkl`` from the training db of
    make_training_data: its train split at the top level, as the official whitening dbs."""
    train = pickle.loads((root / "retrieval-tiny" / "retrieval-tiny.pkl").read_bytes())["train"]
    return write_whitening_db(root / "retrieval-tiny" / "retrieval-tiny-whiten.pkl", train,
                              protocol=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_training_data(root)
    write_whiten_pkl(root)
    models = tmp_path_factory.mktemp("models")
    return root, make_teacher(models / "teacher"), make_teacher(models / "student", seed=5)


# --- Whitening dbs -------------------------------------------------------------------------


def test_whiten_pkl_reader_gives_pairs_and_sfm_paths(world, tmp_path):
    root, _, _ = world
    db = load_whitening_db("retrieval-tiny", root)
    train = pickle.loads((root / "retrieval-tiny" / "retrieval-tiny.pkl").read_bytes())["train"]
    assert db.split == "whiten" and db.cids == train["cids"]
    assert db.query_indices.tolist() == train["qidxs"]
    assert db.positive_indices.tolist() == train["pidxs"]
    cid = db.cids[5]
    assert db.paths[5] == root / "retrieval-tiny" / "ims" / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid
    assert all(path.is_file() for path in db.paths)
    # Where `asymret download sfm120k` puts the 30k db: beside the 120k files, sharing ims/.
    sfm = tmp_path / "retrieval-SfM-120k"
    sfm.mkdir()
    (sfm / "ims").symlink_to(root / "retrieval-tiny" / "ims")
    write_whitening_db(sfm / "retrieval-SfM-30k-whiten.pkl",
                       {"cids": train["cids"], "qidxs": [0, 2], "pidxs": [1, 3]})
    label, thirty = load_whitening_pairs("retrieval-SfM-30k", tmp_path)
    assert label == "retrieval-SfM-30k-whiten" and thirty.positive_indices.tolist() == [1, 3]
    assert thirty.paths[0] == sfm / "ims" / db.paths[0].relative_to(root / "retrieval-tiny" / "ims")
    assert (thirty.clusters == -1).all(), "the cluster list is optional"
    by_file = load_whitening_pairs(sfm / "retrieval-SfM-30k-whiten.pkl")
    assert by_file[0] == "retrieval-SfM-30k-whiten" and by_file[1].cids == thirty.cids


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(["not", "a", "dict"], r"not a whitening db .*got a list", id="not-a-dict"),
        pytest.param({"cids": ["a"], "qidxs": [0]}, r"whitening db lacks pidxs", id="missing"),
        pytest.param({"train": {}, "val": {}}, r"lacks cids, qidxs, pidxs \(this looks like a "
                     "training db", id="training-db"),
        pytest.param({"cids": ["a", "b"], "qidxs": [0, 1], "pidxs": [1]},
                     r"2 qidxs but 1 pidxs", id="lengths"),
        pytest.param({"cids": ["a", "b"], "qidxs": [0], "pidxs": [2]},
                     r"pidxs out of range 0\.\.1 \(index 2\)", id="range"),
        pytest.param({"cids": ["a", "b"], "qidxs": [-1], "pidxs": [1]},
                     r"qidxs out of range", id="negative"),
        pytest.param({"cids": ["a", "b"], "qidxs": ["x"], "pidxs": [1]},
                     r"must be integers", id="not-integers"),
        pytest.param({"cids": ["a", "b"], "cluster": [0], "qidxs": [0], "pidxs": [1]},
                     r"2 cids but 1 clusters", id="clusters"),
    ],
)
def test_malformed_whiten_pkl_is_named_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad-whiten.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(AsymretError, match=message) as info:
        read_whitening_db(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_bad_whitening_source_on_the_command_line_is_one_line(capsys, world, tmp_path):
    root, teacher, _ = world
    bad = tmp_path / "broken-whiten.pkl"
    bad.write_bytes(pickle.dumps({"cids": ["a"], "qidxs": [0], "pidxs": [3]}))
    for source, message in ((bad, "pidxs out of range"), ("retrieval-SfM-120k", "not found")):
        status = main(["evaluate", "--model", str(teacher), "--dataset", "tiny", "--root",
                       str(root), "--imsize", "32", "--features", str(tmp_path / "cache"),
                       "--whitening", str(source)])
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1 and message in err, err
    assert "asymret download sfm120k" in err


# --- Whitening on the database side ----------------------------------------------------------


def numpy_whitened_result(query_vectors, database_vectors, whitening_vectors, db, gnd):
    """Learn (loop reference), whiten both sides, rank by dot product, mAP per protocol."""
    mean, projection = reference_whitening(
        whitening_vectors.astype(np.float64), db.query_indices, db.positive_indices)
    dim = len(mean)
    queries = reference_apply(query_vectors.astype(np.float64), mean, projection, dim)
    database = reference_apply(database_vectors.astype(np.float64), mean, projection, dim)
    ranks = np.argsort(-(database @ queries.T), axis=0, kind="stable")
    return {protocol: 100 * compute_map(ranks, protocol_ground_truth(gnd, protocol))[0]
            for protocol in ("easy", "medium", "hard")}, mean


def test_whitening_is_learned_on_the_database_side_and_applied_to_both(world, tmp_path):
    root, teacher_dir, student_dir = world
    teacher, student = load_model(teacher_dir), load_model(student_dir)
    dataset = load_test_set("tiny", root)
    options = dict(imsize=IMSIZE, scales=SCALES, progress=False)
    results = evaluate_networks(dataset, student, teacher, tmp_path / "cache",
                                whitening="retrieval-tiny", root=root, **options)

    db = load_whitening_db("retrieval-tiny", root)
    vectors = {}
    for side, net in (("student", student), ("teacher", teacher)):
        vectors[side] = {
            "queries": extract_vectors(net, dataset.query_images(IMSIZE), scales=SCALES,
                                       progress=False).numpy(),
            "database": extract_vectors(net, dataset.database_images(IMSIZE), scales=SCALES,
                                        progress=False).numpy(),
            "whitening": extract_vectors(net, ImageList(db.paths, IMSIZE), scales=SCALES,
                                         progress=False).numpy(),
        }
    for setting, (query_side, database_side) in {
        "symmetric": ("student", "student"),
        "asymmetric": ("student", "teacher"),
        "teacher": ("teacher", "teacher"),
    }.items():
        expected, mean = numpy_whitened_result(
            vectors[query_side]["queries"], vectors[database_side]["database"],
            vectors[database_side]["whitening"], db, dataset.gnd)
        for protocol, value in expected.items():
            assert results[setting].map[protocol] == pytest.approx(value, abs=1e-9), setting
        used = results.whitening_of(setting)
        np.testing.assert_allclose(used.whitening.mean, mean, atol=1e-6)
        assert used.origin == "learned" and used.whitening.num_pairs == 24
        raw = evaluate_retrieval(vectors[query_side]["queries"],
                                 vectors[database_side]["database"], dataset.gnd)
        for protocol in expected:
            assert results.raw[setting].map[protocol] == pytest.approx(raw.map[protocol])
    assert results.whitenings["student"].store == (
        tmp_path / "cache" / "retrieval-tiny-whiten" / store_name(student, IMSIZE, SCALES))
    assert results.whitenings["student"].whitening.mean.tolist() != (
        results.whitenings["teacher"].whitening.mean.tolist())

    # The whitening images' vectors are cached: a second run extracts nothing.
    counter = ForwardCounter(teacher)
    again = network_whitening(teacher, "retrieval-tiny", tmp_path / "cache", root=root,
                              **options)
    counter.remove()
    assert counter.images == 0
    np.testing.assert_array_equal(again.whitening.projection,
                                  results.whitenings["teacher"].whitening.projection)


def test_evaluate_whitening_json_is_unambiguous(capsys, world, tmp_path):
    root, teacher, student = world
    argv = ["evaluate", "--model", str(student), "--teacher", str(teacher), "--dataset", "tiny",
            "--root", str(root), "--imsize", str(IMSIZE), "--features", str(tmp_path / "cache"),
            "--json"]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*argv, "--whitening", "retrieval-tiny"]) == 0
    whitened = json.loads(capsys.readouterr().out)
    assert set(plain) == set(whitened) == {"symmetric", "asymmetric", "teacher"}
    for setting, network in (("symmetric", "student"), ("asymmetric", "teacher"),
                             ("teacher", "teacher")):
        assert set(plain[setting]) == {"map", "mp@k"}
        assert whitened[setting]["without_whitening"] == plain[setting]
        assert whitened[setting]["whitening"] == {
            "source": "retrieval-tiny", "origin": "learned", "pairs": 24, "network": network}
    library = evaluate_networks(load_test_set("tiny", root), load_model(student),
                                load_model(teacher), tmp_path / "cache",
                                whitening="retrieval-tiny", root=root, imsize=IMSIZE,
                                progress=False)
    assert whitened == library.to_dict()
    assert main([*argv[:-1], "--whitening", "retrieval-tiny"]) == 0
    table = capsys.readouterr().out
    assert "tiny, asymmetric + whitening (the teacher's, learned from 24 pairs of " \
           "retrieval-tiny-whiten)" in table and "tiny, asymmetric, without whitening" in table


def test_photo_folder_training_rows_are_a_whitening_source(world, tmp_path):
    root, _, _ = world
    db = load_whitening_db("retrieval-tiny", root)
    rows = ["path,instance,role"] + [
        f"{path.relative_to(root)},{cluster},train"
        for path, cluster in zip(db.paths, pickle.loads(
            (root / "retrieval-tiny" / "retrieval-tiny.pkl").read_bytes())["train"]["cluster"],
            strict=True)
    ]
    (root / "images.csv").write_text("\n".join(rows) + "\n")
    try:
        label, pairs = load_whitening_pairs(root)
        training_name = PhotoFolder.load(root).training_name()
    finally:
        (root / "images.csv").unlink()
    # Keyed like the folder's training vectors: its path and its images, not its name alone.
    assert label == training_name and label.startswith(f"{root.name}-")
    assert len(pairs.query_indices) == 8 * 4 * 3
    assert pairs.paths == db.paths


# --- A reference checkpoint's stored whitening ---------------------------------------------


def reference_with_whitening(path, lw, legacy=False):
    """A reference-layout ResNet18-GeM checkpoint (no whitening layer) with ``meta['Lw']``."""
    save_reference_checkpoint(path, "resnet18", 512, [0.4, 0.45, 0.5], [0.2, 0.25, 0.3],
                              whitening=False)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["meta"]["Lw"] = lw
    if not legacy:
        torch.save(checkpoint, path)
        return path
    # The old (pre-1.6) torch format with numpy 1.x global names, as the published files.
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return path


def random_whitening(dim, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {"m": rng.normal(size=(dim, 1)).astype(dtype),
            "P": rng.normal(size=(dim, dim)).astype(dtype)}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-numpy1"])
def test_stored_reference_whitening_is_used_instead_of_learning(world, tmp_path, legacy):
    root, _, _ = world
    stored = random_whitening(512)
    path = reference_with_whitening(tmp_path / "ref.pth", {"retrieval-tiny": {"ss": stored}},
                                    legacy=legacy)
    net = import_reference_checkpoint(path)
    kept = reference_whitenings(net)["retrieval-tiny"]["ss"]
    np.testing.assert_array_equal(kept["m"], stored["m"].reshape(-1))
    np.testing.assert_array_equal(kept["P"], stored["P"])

    dataset = load_test_set("tiny", root)
    counter = ForwardCounter(net)
    used = network_whitening(net, "retrieval-tiny", tmp_path / "cache", root=root,
                             imsize=IMSIZE, progress=False)
    assert counter.images == 0 and used.origin == "stored" and not (tmp_path / "cache").exists()
    results = evaluate_networks(dataset, net, None, tmp_path / "cache",
                                whitening="retrieval-tiny", root=root, imsize=IMSIZE,
                                progress=False)
    counter.remove()
    assert counter.images == len(dataset.qimlist) + len(dataset.imlist), "test set only"
    queries = extract_vectors(net, dataset.query_images(IMSIZE), progress=False).numpy()
    database = extract_vectors(net, dataset.database_images(IMSIZE), progress=False).numpy()
    mean, projection = stored["m"].reshape(-1).astype(np.float64), stored["P"].astype(np.float64)
    expected = evaluate_retrieval(reference_apply(queries, mean, projection, 512),
                                  reference_apply(database, mean, projection, 512), dataset.gnd)
    for protocol in ("easy", "medium", "hard"):
        assert results["symmetric"].map[protocol] == pytest.approx(expected.map[protocol])
    assert results.to_dict()["symmetric"]["whitening"] == {
        "source": "retrieval-tiny", "origin": "stored", "pairs": None, "network": "student"}

    # Multi-scale wants meta['Lw'][...]['ms']; there is none, so it is learned (and 24 pairs
    # cannot whiten 512 dimensions).
    with pytest.raises(AsymretError, match="at least D = 512 matching pairs"):
        network_whitening(net, "retrieval-tiny", tmp_path / "cache", root=root,
                          imsize=IMSIZE, scales=SCALES, progress=False)


def test_stored_whitening_of_another_dimension_is_one_line_exit_2(capsys, world, tmp_path):
    root, _, _ = world
    path = reference_with_whitening(tmp_path / "ref.pth",
                                    {"retrieval-tiny": {"ss": random_whitening(256)}})
    status = main(["evaluate", "--model", str(path), "--dataset", "tiny", "--root", str(root),
                   "--imsize", "32", "--features", str(tmp_path / "cache"),
                   "--whitening", "retrieval-tiny"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert ("gives 512-D vectors but its stored whitening meta['Lw']['retrieval-tiny']['ss'] "
            "is for 256-D vectors") in err
    assert not (tmp_path / "cache").exists(), "refused before any extraction"
    # Without --whitening the same checkpoint evaluates.
    assert main(["evaluate", "--model", str(path), "--dataset", "tiny", "--root", str(root),
                 "--imsize", "32", "--features", str(tmp_path / "cache"), "--json"]) == 0


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch should-not-exist",))


def test_checkpoint_numpy_admission_still_refuses_code_and_objects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arrays = {"retrieval-tiny": {"ss": random_whitening(4)}}
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"architecture": "resnet18", "Lw": arrays}, "state_dict": _RunsCode()},
               path)
    with pytest.raises(AsymretError, match=r"evil\.pth: cannot read checkpoint"):
        import_reference_checkpoint(path)
    objects = tmp_path / "objects.pth"
    torch.save({"meta": {"architecture": "resnet18",
                         "Lw": {"x": {"ss": {"m": np.array([_RunsCode()], dtype=object),
                                             "P": np.eye(1)}}}},
                "state_dict": {}}, objects)
    with pytest.raises(AsymretError, match=r"objects\.pth: cannot read checkpoint"):
        import_reference_checkpoint(objects)
    assert not (tmp_path / "should-not-exist").exists()


def test_malformed_stored_whitening_names_the_key(tmp_path):
    bad = {"retrieval-tiny": {"ms": {"m": np.zeros(4), "P": np.zeros((3, 4))}}}
    path = reference_with_whitening(tmp_path / "ref.pth", bad)
    with pytest.raises(AsymretError, match=r"meta\['Lw'\]\['retrieval-tiny'\]\['ms'\]: 'P' has "
                                           r"shape \(3, 4\)"):
        import_reference_checkpoint(path)


# --- Precision -------------------------------------------------------------------------------


def test_stores_record_precision_and_refuse_to_mix(world, tmp_path):
    root, teacher_dir, _ = world
    net = load_model(teacher_dir)
    images = load_test_set("tiny", root).database_images(IMSIZE)
    ids = [str(p) for p in images.paths]
    store = extract_to_store(net, images, ids, tmp_path / "bf16", amp=True, progress=False)
    assert store.meta["preprocessing"]["precision"] == "bf16"
    with pytest.raises(AsymretError, match=r"different preprocessing\.precision \(stored "
                                           r"'bf16', requested 'fp32'\)"):
        extract_to_store(net, images, ids, tmp_path / "bf16", progress=False)
    fp32 = extract_to_store(net, images, ids, tmp_path / "fp32", progress=False)
    assert fp32.meta["preprocessing"]["precision"] == "fp32"
    # A store written before precision was recorded (fp32 on the CPU) is still reused.
    meta = json.loads((tmp_path / "fp32" / META_FILE).read_text())
    del meta["preprocessing"]["precision"]
    (tmp_path / "fp32" / META_FILE).write_text(json.dumps(meta))
    counter = ForwardCounter(net)
    extract_to_store(net, images, ids, tmp_path / "fp32", progress=False)
    counter.remove()
    assert counter.images == 0
    with pytest.raises(AsymretError, match=r"preprocessing\.precision \(stored None"):
        extract_to_store(net, images, ids, tmp_path / "fp32", amp=True, progress=False)


def test_extraction_defaults_to_fp32(world):
    root, teacher_dir, _ = world
    net = load_model(teacher_dir)
    images = load_test_set("tiny", root).database_images(IMSIZE)
    seen = []
    hook = net.register_forward_pre_hook(
        lambda module, inputs: seen.append(torch.is_autocast_enabled("cpu")))
    extract_vectors(net, images, progress=False)
    extract_vectors(net, images, amp=True, progress=False)
    hook.remove()
    assert seen[0] is False and seen[-1] is True


# --- Query crops ------------------------------------------------------------------------------


def test_every_query_path_shrinks_crops_by_the_image_factor(world, tmp_path):
    root, teacher_dir, _ = world
    dataset = load_test_set("tiny", root)  # 36 x 30 queries, box [2, 2, 34, 28]: 32 x 26
    queries = dataset.query_images(IMSIZE)
    # 32 * 32 / 36 = 28.4 → 28: the 32 x 26 crop becomes 28 x 23 (not 32 x 26 as before).
    assert all(image.shape == (3, 23, 28) for image, _ in (queries[i] for i in range(3)))
    store = extract_to_store(load_model(teacher_dir), queries, dataset.qimlist,
                             tmp_path / "queries", progress=False)
    assert store.meta["preprocessing"]["crop_resize"] == "image"
    # A query store written under the old rule (no crop_resize) is refused, not reused.
    meta = json.loads((tmp_path / "queries" / META_FILE).read_text())
    del meta["preprocessing"]["crop_resize"]
    (tmp_path / "queries" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(AsymretError, match=r"preprocessing\.crop_resize \(stored None"):
        extract_to_store(load_model(teacher_dir), queries, dataset.qimlist, tmp_path / "queries",
                         progress=False)
    # A photo folder's queries, boxed or not, follow the same rule.
    folder = tmp_path / "photos"
    (folder / "q").mkdir(parents=True)
    Image.new("RGB", (100, 80)).save(folder / "q" / "a.png")
    Image.new("RGB", (100, 80)).save(folder / "q" / "b.png")
    (folder / "images.csv").write_text("path,instance,role,x1,y1,x2,y2\n"
                                       "q/a.png,x,query,10,10,70,50\nq/b.png,x,query,,,,\n")
    photo_queries = load_test_set(folder).query_images(50)
    # Box 60 x 40 of a 100 x 80 image at imsize 50: 50 * 60 / 100 = 30 → 30 x 20; no box: 50 x 40.
    assert [photo_queries[i][0].shape for i in range(2)] == [(3, 20, 30), (3, 40, 50)]
