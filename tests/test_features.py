"""Batched extraction against the one-image-at-a-time reference loop, and the feature store."""

import copy
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from asymret.data.image_list import ImageList
from asymret.data.images import DEFAULT_SCALES, ImageReadError, load_image, to_tensor
from asymret.errors import AsymretError
from asymret.features import (
    META_FILE,
    VECTORS_FILE,
    FeatureStore,
    SizeBatchSampler,
    extract_to_store,
    extract_vectors,
    model_fingerprint,
    resized_size,
    resized_sizes,
    thumbnail_size,
)
from asymret.models import Teacher, create_model, save_model
from counting import ForwardCounter

IMSIZE = 64
# (width, height, crop box): landscape and portrait, already small, never enlarged, extreme
# aspect ratios, and query boxes with fractional (and .5, banker's-rounded) coordinates.
IMAGE_SPECS = [
    (80, 60, None),
    (60, 80, None),
    (64, 48, None),
    (40, 30, None),
    (100, 37, None),
    (37, 100, None),
    (90, 70, (5.4, 3.5, 70.2, 52.6)),
    (90, 70, (10.5, 2.5, 50.5, 62.5)),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_images(folder: Path, count: int, seed: int = 0) -> tuple[list[Path], list]:
    """``count`` random PNGs cycling through IMAGE_SPECS in a shuffled order, with their boxes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    order = rng.permutation(count) % len(IMAGE_SPECS)
    paths, boxes = [], []
    for index, spec_index in enumerate(order):
        width, height, box = IMAGE_SPECS[spec_index]
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        path = folder / f"im{index:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
        boxes.append(box)
    return paths, boxes


def reference_vectors(net, images: ImageList, scales=(1.0,)) -> torch.Tensor:
    """One image at a time, as the reference project; multi-scale written from the formula."""
    net.eval()
    power = net.pool.p.item() if net.whiten is None else 1.0
    rows = []
    with torch.no_grad():
        for index in range(len(images)):
            bbox = images.bboxes[index] if images.bboxes is not None else None
            image = to_tensor(load_image(images.paths[index], images.imsize, bbox)).unsqueeze(0)
            if tuple(scales) == (1.0,):
                rows.append(net(image)[0])
                continue
            total = torch.zeros(net.outputdim)
            for scale in scales:
                scaled = image if scale == 1 else F.interpolate(
                    image, scale_factor=scale, mode="bilinear", align_corners=False
                )
                total += net(scaled)[0].pow(power)
            vector = (total / len(scales)).pow(1.0 / power)
            rows.append(vector / vector.norm())
    return torch.stack(rows)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_model("test_resnet-gem").eval()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    paths, boxes = write_images(tmp_path_factory.mktemp("images"), 24)
    return ImageList(paths, IMSIZE, boxes)


# --- Sizes and batches ---------------------------------------------------------------------


def test_thumbnail_size_equals_pil_thumbnail():
    rng = np.random.default_rng(1)
    for _ in range(400):
        width, height = (int(v) for v in rng.integers(1, 300, size=2))
        imsize = int(rng.integers(8, 160))
        image = Image.new("L", (width, height))
        if max(image.size) > imsize:
            image.thumbnail((imsize, imsize), Image.Resampling.LANCZOS)
        assert thumbnail_size(width, height, imsize) == image.size, (width, height, imsize)
    assert thumbnail_size(500, 3, None) == (500, 3)


def test_header_sizes_equal_loaded_sizes(dataset):
    sizes = resized_sizes(dataset)
    for index, path in enumerate(dataset.paths):
        assert sizes[index] == load_image(path, IMSIZE, dataset.bboxes[index]).size
    assert len(set(sizes)) >= 6


def test_header_size_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"missing\.png"):
        resized_size(tmp_path / "missing.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=r"bad\.jpg"):
        resized_size(bad)


def test_batches_group_images_of_one_size_only(dataset):
    sizes = resized_sizes(dataset)
    sampler = SizeBatchSampler(sizes, batch_size=3)
    flat = [index for batch in sampler for index in batch]
    assert sorted(flat) == list(range(len(dataset)))
    assert all(len({sizes[i] for i in batch}) == 1 for batch in sampler.batches)
    assert max(map(len, sampler.batches)) == 3
    expected_batches = sum(math.ceil(n / 3) for n in Counter(sizes).values())
    assert len(sampler) == expected_batches < len(dataset)
    assert [batch[0] for batch in sampler.batches] == sorted(batch[0] for batch in sampler.batches)


# --- Extraction ----------------------------------------------------------------------------


def test_batched_extraction_equals_one_at_a_time_in_dataset_order(net, dataset):
    expected = reference_vectors(net, dataset)
    counter = ForwardCounter(net)
    try:
        vectors = extract_vectors(net, dataset, batch_size=4, progress=False)
    finally:
        counter.remove()
    assert vectors.dtype == torch.float32 and vectors.shape == (len(dataset), net.outputdim)
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=0)
    # Batches really hold several images, and each image went in at its own size.
    assert max(shape[0] for shape in counter.shapes) == 4
    assert len(counter.shapes) < len(dataset)
    processed = Counter()
    for batch, height, width in ((s[0], s[2], s[3]) for s in counter.shapes):
        processed[(width, height)] += batch
    assert processed == Counter(resized_sizes(dataset))


def test_extraction_runs_in_eval_mode_and_restores_training_mode(net, dataset):
    images = ImageList(dataset.paths[:5], IMSIZE, dataset.bboxes[:5])
    net.train()
    counter = ForwardCounter(net)
    try:
        vectors = extract_vectors(net, images, batch_size=2, progress=False)
    finally:
        counter.remove()
        training_after = net.training
        net.eval()
    assert training_after and not any(counter.training)
    torch.testing.assert_close(vectors, reference_vectors(net, images), atol=1e-5, rtol=0)


def test_teacher_and_workers_give_the_same_vectors(net, dataset):
    images = ImageList(dataset.paths[:8], IMSIZE, dataset.bboxes[:8])
    expected = extract_vectors(net, images, batch_size=8, progress=False)
    teacher_vectors = extract_vectors(
        Teacher(net), images, batch_size=3, num_workers=2, progress=False
    )
    torch.testing.assert_close(teacher_vectors, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "gem_p"), [("test_resnet-gem", 2.5), ("test_resnet-gem-16", 3.0)])
def test_multiscale_equals_formula(dataset, name, gem_p):
    torch.manual_seed(1)
    model = create_model(name, gem_p=gem_p).eval()
    images = ImageList(dataset.paths[:10], IMSIZE, dataset.bboxes[:10])
    vectors = extract_vectors(model, images, batch_size=4, scales=DEFAULT_SCALES, progress=False)
    expected = reference_vectors(model, images, DEFAULT_SCALES)
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=0)
    single = extract_vectors(model, images, batch_size=4, progress=False)
    assert (vectors - single).abs().max() > 1e-3


def test_bad_scales_are_refused(net, dataset):
    with pytest.raises(AsymretError, match="scales"):
        extract_vectors(net, dataset, scales=(1.0, 0.0), progress=False)


def test_bfloat16_autocast_on_cpu_stays_close(net, dataset):
    images = ImageList(dataset.paths[:4], IMSIZE, dataset.bboxes[:4])
    exact = extract_vectors(net, images, progress=False)
    net = copy.deepcopy(net)  # channels-last conversion is in place
    approx = extract_vectors(net, images, amp=True, channels_last=True, progress=False)
    assert approx.dtype == torch.float32
    assert (exact * approx).sum(dim=1).min() > 0.99


def test_unreadable_images_raise_or_are_skipped_as_nan_rows(net, dataset, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    truncated = tmp_path / "truncated.png"
    data = dataset.paths[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not
    paths = [dataset.paths[1], garbage, dataset.paths[2], truncated, dataset.paths[3]]
    with pytest.raises(ImageReadError, match=r"garbage\.png"):
        extract_vectors(net, ImageList(paths, IMSIZE), progress=False)
    for workers in (0, 1):
        images = ImageList(paths, IMSIZE, skip_unreadable=True)
        vectors = extract_vectors(net, images, num_workers=workers, progress=False)
        assert sorted(images.skipped) == sorted([garbage, truncated])
        assert torch.isnan(vectors[[1, 3]]).all()
        readable = ImageList([paths[0], paths[2], paths[4]], IMSIZE)
        torch.testing.assert_close(
            vectors[[0, 2, 4]], reference_vectors(net, readable), atol=1e-5, rtol=0
        )


# --- Feature store -------------------------------------------------------------------------


def ids_of(images: ImageList) -> list[str]:
    return [path.stem for path in images.paths]


def test_store_round_trip_is_memory_mapped(net, dataset, tmp_path):
    path = tmp_path / "store"
    store = extract_to_store(
        net, dataset, ids_of(dataset), path, chunk_size=5, batch_size=4, progress=False
    )
    expected = extract_vectors(net, dataset, batch_size=4, progress=False)
    assert isinstance(store.vectors, np.memmap) and not store.vectors.flags.writeable
    np.testing.assert_allclose(store.vectors, expected.numpy(), atol=1e-6, rtol=0)
    assert store.ids == ids_of(dataset)
    meta = json.loads((path / META_FILE).read_text())
    assert (meta["count"], meta["dim"], meta["dtype"]) == (len(dataset), net.outputdim, "float32")
    assert meta["complete_rows"] == len(dataset) and meta["checksum"].startswith("sha256:")
    assert meta["model"]["name"] == "test_resnet-gem"
    assert meta["model"]["fingerprint"] == model_fingerprint(net)
    assert meta["preprocessing"]["imsize"] == IMSIZE
    assert meta["preprocessing"]["scales"] == [1.0]
    assert meta["preprocessing"]["crop_boxes"].startswith("sha256:")
    reopened = FeatureStore.open(path, verify=True)
    assert isinstance(reopened.vectors, np.memmap)
    np.testing.assert_array_equal(reopened.vectors, store.vectors)

    half = extract_to_store(net, dataset, ids_of(dataset), tmp_path / "half", dtype="float16",
                            chunk_size=100, progress=False)
    assert half.vectors.dtype == np.float16
    np.testing.assert_allclose(half.vectors, expected.numpy(), atol=2e-3, rtol=0)


def test_resume_after_crash_skips_completed_chunks(net, dataset, tmp_path):
    path, chunk = tmp_path / "store", 5
    crash = ForwardCounter(net, limit=2 * chunk)
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            extract_to_store(net, dataset, ids_of(dataset), path, chunk_size=chunk,
                             batch_size=4, progress=False)
    finally:
        crash.remove()
    with pytest.raises(AsymretError, match="incomplete"):
        FeatureStore.open(path)
    assert FeatureStore.open(path, writable=True).complete_rows == 2 * chunk

    counter = ForwardCounter(net)
    try:
        store = extract_to_store(net, dataset, ids_of(dataset), path, chunk_size=chunk,
                                 batch_size=4, progress=False)
    finally:
        counter.remove()
    assert counter.images == len(dataset) - 2 * chunk
    uninterrupted = extract_to_store(net, dataset, ids_of(dataset), tmp_path / "whole",
                                     chunk_size=chunk, batch_size=4, progress=False)
    np.testing.assert_allclose(store.vectors, uninterrupted.vectors, atol=1e-6, rtol=0)
    store.verify()

    counter = ForwardCounter(net)
    try:
        extract_to_store(net, dataset, ids_of(dataset), path, chunk_size=chunk, progress=False)
    finally:
        counter.remove()
    assert counter.images == 0


KILLED_EXTRACTION = """
import json, os, signal, sys
from asymret.data.image_list import ImageList
from asymret.features import extract_to_store
from asymret.models import load_model

model_dir, spec_file, store, chunk, kill_after = sys.argv[1:6]
spec = json.loads(open(spec_file).read())
net = load_model(model_dir)
seen = [0]

def kill_midway(module, inputs):
    seen[0] += len(inputs[0])
    if seen[0] > int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)

net.register_forward_pre_hook(kill_midway)
images = ImageList(spec["paths"], spec["imsize"], spec["boxes"])
extract_to_store(net, images, spec["ids"], store, chunk_size=int(chunk), batch_size=4,
                 progress=False)
"""


def test_resume_after_sigkill(net, dataset, tmp_path):
    model_dir = save_model(net, tmp_path / "model")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({
        "paths": [str(p) for p in dataset.paths], "imsize": IMSIZE,
        "boxes": dataset.bboxes, "ids": ids_of(dataset),
    }))
    path, chunk = tmp_path / "store", 6
    script = tmp_path / "killed.py"
    script.write_text(KILLED_EXTRACTION)
    result = subprocess.run(
        [sys.executable, str(script), str(model_dir), str(spec_file), str(path), str(chunk),
         str(2 * chunk + 1)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert FeatureStore.open(path, writable=True).complete_rows == 2 * chunk

    counter = ForwardCounter(net)
    try:
        store = extract_to_store(net, dataset, ids_of(dataset), path, chunk_size=chunk,
                                 batch_size=4, progress=False)
    finally:
        counter.remove()
    assert counter.images == len(dataset) - 2 * chunk
    expected = extract_vectors(net, dataset, batch_size=4, progress=False)
    np.testing.assert_allclose(store.vectors, expected.numpy(), atol=1e-5, rtol=0)
    store.verify()


@pytest.fixture
def small_store(net, dataset, tmp_path):
    images = ImageList(dataset.paths[:6], IMSIZE, dataset.bboxes[:6])
    path = tmp_path / "store"
    extract_to_store(net, images, ids_of(images), path, chunk_size=4, progress=False)
    return path, images


def _changed_weights(net):
    other = copy.deepcopy(net)
    with torch.no_grad():
        first = next(other.parameters())
        first[(0,) * first.ndim] += 1e-3
    return other


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("weights", "model.fingerprint"),
        ("imsize", "preprocessing.imsize"),
        ("scales", "preprocessing.scales"),
        ("boxes", "preprocessing.crop_boxes"),
        ("ids", "row 2: stored 'im002', requested 'other'"),
        ("count", "6 stored vs 5 requested"),
        ("dtype", "dtype"),
    ],
)
def test_store_refuses_other_model_preprocessing_or_ids(net, small_store, change, message):
    path, images = small_store
    meta_before = (path / META_FILE).read_text()
    model, ids, kwargs = net, ids_of(images), {}
    if change == "weights":
        model = _changed_weights(net)
    elif change == "imsize":
        images = ImageList(images.paths, 48, images.bboxes)
    elif change == "scales":
        kwargs["scales"] = (1.0, 0.5)
    elif change == "boxes":
        images = ImageList(images.paths, IMSIZE, [(0, 0, 20, 20)] * len(images))
    elif change == "ids":
        ids[2] = "other"
    elif change == "count":
        images = ImageList(images.paths[:5], IMSIZE, images.bboxes[:5])
        ids = ids[:5]
    elif change == "dtype":
        kwargs["dtype"] = "float16"
    counter = ForwardCounter(model)
    try:
        with pytest.raises(AsymretError, match=re.escape(str(path))) as error:
            extract_to_store(model, images, ids, path, progress=False, **kwargs)
    finally:
        counter.remove()
    assert message in str(error.value)
    assert counter.images == 0
    assert (path / META_FILE).read_text() == meta_before


def test_corrupt_or_truncated_vectors_are_reported_with_the_file(small_store):
    path, _ = small_store
    vectors_file = path / VECTORS_FILE
    data = bytearray(vectors_file.read_bytes())
    data[-7] ^= 0xFF
    vectors_file.write_bytes(bytes(data))
    FeatureStore.open(path, verify="size")  # the size alone cannot see it
    # The last row is one of the sampled rows that a default open hashes.
    with pytest.raises(AsymretError, match=rf"{VECTORS_FILE}: sampled rows do not match"):
        FeatureStore.open(path)
    with pytest.raises(AsymretError, match=rf"{VECTORS_FILE}: checksum mismatch"):
        FeatureStore.open(path, verify=True)
    vectors_file.write_bytes(bytes(data[:-100]))
    with pytest.raises(AsymretError, match=rf"{VECTORS_FILE}: vectors file is truncated"):
        FeatureStore.open(path)


def test_damaged_store_files_are_named(small_store):
    path, _ = small_store
    ids_file = path / "ids.json"
    ids_file.write_text(ids_file.read_text().replace("im001", "im999"))
    with pytest.raises(AsymretError, match=r"ids\.json: ids do not match"):
        FeatureStore.open(path)
    (path / META_FILE).write_text("{not json")
    with pytest.raises(AsymretError, match=r"meta\.json: cannot read"):
        FeatureStore.open(path)
    with pytest.raises(AsymretError, match="not a feature store"):
        FeatureStore.open(path.parent / "nowhere")


def test_store_write_checks_order_and_shape(tmp_path):
    store = FeatureStore.create(tmp_path / "s", ["a", "b", "c"], 4, {"note": "manual"})
    with pytest.raises(AsymretError, match="next row is 0"):
        store.write(1, np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(AsymretError, match=r"\(3, 4\) store"):
        store.write(0, np.zeros((2, 5), dtype=np.float32))
    store.write(0, torch.ones(2, 4))
    store.write(2, np.full((1, 4), 2.0, dtype=np.float32))
    reopened = FeatureStore.open(tmp_path / "s", verify=True)
    assert reopened.meta["note"] == "manual" and reopened.is_complete
    np.testing.assert_array_equal(reopened.vectors[2], [2.0] * 4)
    with pytest.raises(AsymretError, match="already exists"):
        FeatureStore.create(tmp_path / "s", ["a"], 4, {})
    with pytest.raises(AsymretError, match="own keys"):
        FeatureStore.create(tmp_path / "t", ["a"], 4, {"count": 1})
