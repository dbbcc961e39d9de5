"""JPEG draft decoding (opt-in), its sizes and store provenance, and the decode cache."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from asymret.data.image_list import DecodeCache, ImageList, shared_decode_cache
from asymret.data.images import (
    ImageReadError,
    draft_scale,
    load_image,
    loaded_size,
    to_tensor,
)
from asymret.errors import AsymretError
from asymret.features import (
    FeatureStore,
    extract_to_store,
    extract_vectors,
    extraction_meta,
    resized_size,
    resized_sizes,
)
from asymret.models import create_model
from asymret.train import load_config
from asymret.train.loop import Trainer
from train_fixtures import write_config

pytestmark = pytest.mark.usefixtures("one_thread")


def photo(path, width, height, seed=0, fmt="JPEG"):
    """A smooth random texture (like a photo: most energy at low frequencies)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(height // 12, 2), max(width // 12, 2), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    image.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def pixels(image):
    return np.asarray(image, dtype=np.float64)


# --- Draft decoding ------------------------------------------------------------------------


def test_draft_scale_is_the_largest_dct_reduction_within_the_shrink():
    assert draft_scale((160, 120), 80) == 2  # exactly half
    assert draft_scale((161, 121), 80) == 2
    assert draft_scale((160, 120), 81) == 1  # less than half: full decode
    assert draft_scale((160, 120), 40) == 4
    assert draft_scale((160, 120), 20) == 8
    assert draft_scale((1024, 768), 10) == 8  # 8 is the decoder's largest reduction
    assert draft_scale((120, 160), 80) == 2  # portrait: the longer side counts
    assert draft_scale((160, 120), None) == 1
    assert draft_scale((400, 3), 50) == 2, "never reduces a side below one pixel"
    # A crop shrinks by its full image's factor, so the same reduction applies; a box that
    # reaches outside the image (clipped to it) is decoded in full.
    assert draft_scale((160, 120), 40, (10, 10, 50, 50)) == 4
    assert draft_scale((160, 120), 40, (-1, 10, 50, 50)) == 1
    assert draft_scale((160, 120), 40, (10, 10, 161, 50)) == 1


@pytest.mark.parametrize("size", [(160, 120), (161, 121), (97, 163), (333, 251)])
def test_draft_decode_is_close_to_full_decode_at_the_same_size(tmp_path, size):
    path = photo(tmp_path / "a.jpg", *size)
    for imsize in (80, 40, 20):
        full = load_image(path, imsize)
        draft = load_image(path, imsize, draft=True)
        assert draft.size == full.size == resized_size(path, imsize), imsize
        difference = np.abs(pixels(draft) - pixels(full))
        assert difference.mean() > 0.1, "draft decoding must have been used"
        # About 1/255 on average where the reduction is exactly the DCT scale (as 160 → 80);
        # up to 3.5/255 where LANCZOS has to finish a reduction just above it (161 → 20).
        assert difference.mean() < 4.0, (imsize, difference.mean())
        assert np.percentile(difference, 99) < 25, imsize
    exact_half = np.abs(pixels(load_image(path, max(size) // 2, draft=True))
                        - pixels(load_image(path, max(size) // 2))).mean()
    assert exact_half < 2.0


@pytest.mark.filterwarnings("ignore::asymret.data.images.BoxClippedWarning")
def test_draft_is_a_no_op_where_it_does_not_apply(tmp_path):
    jpeg = photo(tmp_path / "a.jpg", 160, 120)
    png = photo(tmp_path / "a.png", 160, 120, fmt="PNG")
    for path, imsize, bbox in (
        (jpeg, 81, None),  # shrinks less than 2×
        (jpeg, None, None),
        (jpeg, 200, [3, 4, 90, 70]),
        (png, 40, None),  # not a JPEG
        (png, 40, [3, 4, 90, 70]),
        (jpeg, 40, [-5, 4, 90, 70]),  # box outside the image: clipped, decoded in full
        (jpeg, 40, [3, 4, 170, 70]),
    ):
        full = load_image(path, imsize, bbox)
        draft = load_image(path, imsize, bbox, draft=True)
        assert draft.size == full.size == resized_size(path, imsize, bbox)
        np.testing.assert_array_equal(pixels(draft), pixels(full), err_msg=str((imsize, bbox)))


@pytest.mark.filterwarnings("ignore::asymret.data.images.BoxClippedWarning")
def test_draft_crop_covers_the_full_decodes_region(tmp_path):
    """A query box is scaled into the drafted image's coordinates: the result shows the same
    region, at the same size, as cropping the full decode."""
    path = photo(tmp_path / "a.jpg", 321, 243, seed=3)
    for imsize, bbox in ((160, [40.4, 30.6, 201.2, 180.0]), (80, [17, 9, 300, 240]),
                         (40, [100, 50, 180, 130]), (100, [0, 0, 321, 243]),
                         (80, [33.5, 21.5, 64.5, 99.5])):
        full = load_image(path, imsize, bbox)
        draft = load_image(path, imsize, bbox, draft=True)
        assert draft.size == full.size == resized_size(path, imsize, bbox), bbox
        error = np.abs(pixels(draft) - pixels(full)).mean()
        assert 0 < error < 4.0, (bbox, error)
        # The check can tell regions apart: the box moved by 8 full-size pixels is far off.
        x1, y1, x2, y2 = bbox
        moved = load_image(path, imsize, [x1 + 8, y1, x2 + 8, y2]).resize(full.size)
        assert np.abs(pixels(moved) - pixels(full)).mean() > 2 * error, bbox


def test_header_sizes_predict_draft_decoding_for_odd_sizes_and_crops(tmp_path):
    rng = np.random.default_rng(1)
    checked = 0
    for index in range(24):
        width, height = (int(v) for v in rng.integers(9, 260, 2))
        path = photo(tmp_path / f"{index}.jpg", width, height, seed=index)
        for imsize in (int(rng.integers(3, max(width, height) // 2 + 2)), 7, 64):
            x1, y1 = rng.uniform(0, width / 2), rng.uniform(0, height / 2)
            x2, y2 = rng.uniform(x1 + 1.5, width), rng.uniform(y1 + 1.5, height)
            for bbox in (None, [x1, y1, x2, y2]):
                predicted = resized_size(path, imsize, bbox)
                assert load_image(path, imsize, bbox, draft=True).size == predicted, (
                    width, height, imsize, bbox)
                assert load_image(path, imsize, bbox).size == predicted
                checked += draft_scale((width, height), imsize) > 1
    assert checked > 30, "most cases must exercise draft decoding"
    boxes = [None, [1, 1, 6, 8]]
    images = ImageList([tmp_path / "0.jpg"] * 2, 5, bboxes=boxes, draft=True)
    assert resized_sizes(images) == [tuple(images[i][0].shape[:0:-1]) for i in range(2)]


def test_loaded_size_is_the_one_rule_of_crops(tmp_path):
    assert loaded_size("x", (1000, 800), 500) == (500, 400)
    assert loaded_size("x", (1000, 800), 500, [100, 50, 400, 250]) == (150, 100)
    assert loaded_size("x", (1000, 800), 700, [0, 0, 333, 100]) == (233, 70)
    with pytest.raises(ImageReadError, match=r"x: empty crop box \[5, 5, 5\.2, 9\]"):
        loaded_size("x", (100, 80), 50, [5, 5, 5.2, 9])
    path = photo(tmp_path / "a.jpg", 100, 80)
    with pytest.raises(ImageReadError, match=r"a\.jpg: empty crop box"):
        load_image(path, 20, [5, 5, 5.2, 9], draft=True)


def test_to_tensor_is_bit_for_bit_the_torch_division(tmp_path):
    """NumPy divides (in the calling thread) exactly as torch's ``float().div_(255)``: every
    one of the 256 values, and the channels-last strides of an image."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    expected = torch.from_numpy(values.copy()).permute(2, 0, 1).float().div_(255.0)
    converted = to_tensor(Image.fromarray(values))
    assert torch.equal(converted.view(torch.int32), expected.view(torch.int32))
    image = load_image(photo(tmp_path / "a.jpg", 161, 121), 80)
    reference = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255.0)
    converted = to_tensor(image)
    assert torch.equal(converted, reference) and converted.stride() == reference.stride()


# --- ImageList and store provenance --------------------------------------------------------


def test_image_list_carries_draft_through_subsets(tmp_path):
    paths = [photo(tmp_path / f"{i}.jpg", 160, 120, seed=i) for i in range(3)]
    images = ImageList(paths, 80)
    assert not images.draft and images.drafted().draft and not images.drafted().drafted(False).draft
    drafted = images.drafted()
    assert drafted.subset([2, 0]).draft and drafted.subset([2, 0]).paths == [paths[2], paths[0]]
    torch.testing.assert_close(drafted[1][0], to_tensor(load_image(paths[1], 80, draft=True)))
    assert not torch.equal(drafted[1][0], images[1][0])


def test_store_records_draft_decoding_and_refuses_mixing(tmp_path):
    paths = [photo(tmp_path / f"{i}.jpg", 64, 48, seed=i) for i in range(4)]
    ids = [f"im{i}" for i in range(4)]
    net = create_model("test_efficientnet-gem-16")
    full, draft = ImageList(paths, 24), ImageList(paths, 24, draft=True)
    assert "decode" not in extraction_meta(net, full, (1.0,))["preprocessing"]
    assert extraction_meta(net, draft, (1.0,))["preprocessing"]["decode"] == "draft"

    drafted_store = tmp_path / "drafted"
    store = extract_to_store(net, draft, ids, drafted_store, chunk_size=3, progress=False)
    assert store.meta["preprocessing"]["decode"] == "draft"
    np.testing.assert_allclose(np.asarray(store.vectors),
                               extract_vectors(net, draft, progress=False).numpy(), atol=1e-6)
    assert not np.allclose(np.asarray(store.vectors),
                           extract_vectors(net, full, progress=False).numpy(), atol=1e-6)
    with pytest.raises(AsymretError, match=rf"{drafted_store}: feature store was made with a "
                       r"different preprocessing\.decode \(stored 'draft', requested None\)"):
        extract_to_store(net, full, ids, drafted_store, progress=False)

    full_store = tmp_path / "full"
    extract_to_store(net, full, ids, full_store, progress=False)
    assert "decode" not in FeatureStore.open(full_store).meta["preprocessing"]
    with pytest.raises(AsymretError, match=rf"{full_store}: .*preprocessing\.decode \(stored "
                       r"None, requested 'draft'\); refusing to mix vectors"):
        extract_to_store(net, draft, ids, full_store, progress=False)
    # A store made before draft decoding existed (no decode key) still resumes.
    extract_to_store(net, full, ids, full_store, progress=False)


# --- Decode cache --------------------------------------------------------------------------


def test_decode_cache_gives_the_same_items(tmp_path):
    paths = [photo(tmp_path / f"{i}.jpg", 160, 120, seed=i) for i in range(4)]
    boxes = [None, [10.5, 3, 90, 80], None, [0, 0, 160, 120]]
    for draft in (False, True):
        plain = ImageList(paths, 80, bboxes=boxes, draft=draft)
        cache = DecodeCache(max_bytes=1 << 20)
        cached = ImageList(paths, 80, bboxes=boxes, draft=draft, decode_cache=cache)
        for _ in range(2):
            for index in range(len(paths)):
                image, returned = cached[index]
                expected, _ = plain[index]
                assert returned == index and image.dtype == torch.float32
                assert torch.equal(image, expected) and image.stride() == expected.stride()
                image.mul_(0)  # the caller's copy: the cache is not changed
        assert (cache.hits, cache.misses, len(cache)) == (4, 4, 4)
    # Keys tell apart size, box and decoding; a subset reads the same cache.
    shared = DecodeCache(max_bytes=1 << 20)
    for imsize, draft in ((80, False), (80, True), (40, False)):
        ImageList(paths[:1], imsize, draft=draft, decode_cache=shared)[0]
    ImageList(paths, 80, decode_cache=shared).subset([0])[0]
    assert (len(shared), shared.hits) == (3, 1)


def test_decode_cache_is_bounded_and_sees_rewritten_files(tmp_path):
    paths = [photo(tmp_path / f"{i}.jpg", 80, 60, seed=i) for i in range(3)]
    one = 3 * 80 * 60  # bytes of one uint8 image
    cache = DecodeCache(max_bytes=2 * one)
    images = ImageList(paths, decode_cache=cache)
    for index in (0, 1, 0, 2):  # 1 is then the least recently used
        images[index]
    assert (len(cache), cache.bytes) == (2, 2 * one)
    assert cache.get(cache.key(paths[1], None, None, False)) is None
    assert cache.get(cache.key(paths[0], None, None, False)) is not None
    cache.resize(one)
    assert len(cache) == 1 and cache.bytes == one
    tiny = DecodeCache(max_bytes=one - 1)
    ImageList(paths, decode_cache=tiny)[0]
    assert len(tiny) == 0, "an image larger than the bound is not kept"

    cache = DecodeCache(max_bytes=1 << 20)
    images = ImageList(paths[:1], decode_cache=cache)
    before = images[0][0]
    photo(paths[0], 80, 60, seed=99)  # same name and size, other pixels
    os.utime(paths[0], ns=(1, 1))
    assert not torch.equal(images[0][0], before)
    assert len(pickle.loads(pickle.dumps(cache))) == 0, "a cache travels empty"
    with pytest.raises(ValueError, match="max_bytes"):
        DecodeCache(-1)


def test_decode_cache_keeps_unreadable_images_unreadable(tmp_path):
    paths = [photo(tmp_path / "a.jpg", 40, 30), tmp_path / "missing.jpg"]
    cache = DecodeCache(max_bytes=1 << 20)
    images = ImageList(paths, skip_unreadable=True, decode_cache=cache)
    assert images[1] is None and images[1] is None and len(cache) == 0
    assert images.skipped == [paths[1], paths[1]]
    with pytest.raises(ImageReadError, match=r"missing\.jpg: image file not found"):
        ImageList(paths, decode_cache=cache)[1]


def test_shared_decode_cache_is_one_per_process():
    cache = shared_decode_cache(1 << 20)
    assert shared_decode_cache(2 << 20) is cache and cache.max_bytes == 2 << 20


# --- Training ------------------------------------------------------------------------------


def _train(tmp_path, data_root, teacher_dir, name, **run_and_data):
    config = load_config(write_config(
        tmp_path / f"{name}.yaml", data_root, tmp_path / name, teacher_dir,
        data={"imsize": 16, "val_imsize": 16, **run_and_data.get("data", {})},
        optim={"epochs": 1}, run=run_and_data.get("run", {}),
    ))
    trainer = Trainer(config)
    trainer.run()
    return trainer, trainer.student.state_dict()


def test_training_decodes_students_images_in_draft_mode_when_asked(
    tmp_path, data_root, teacher_dir, monkeypatch
):
    extracted = []
    original = Trainer._extract

    def spy(self, net, images, indices):
        extracted.append(images.draft)
        return original(self, net, images, indices)

    monkeypatch.setattr(Trainer, "_extract", spy)
    plain, plain_state = _train(tmp_path, data_root, teacher_dir, "plain")
    assert not plain.train_images.draft and not any(extracted)
    extracted.clear()
    draft, draft_state = _train(tmp_path, data_root, teacher_dir, "draft",
                                data={"draft_decode": True})
    assert draft.train_images.draft and extracted and all(extracted)  # mining and validation
    assert any(not torch.equal(plain_state[k], draft_state[k]) for k in plain_state)
    cached, cached_state = _train(tmp_path, data_root, teacher_dir, "cached",
                                  data={"draft_decode": True}, run={"decode_cache_mb": 4})
    cache = cached.train_images.decode_cache
    assert cache is shared_decode_cache(4 << 20) and cache.hits > 0
    assert all(torch.equal(draft_state[k], cached_state[k]) for k in draft_state), (
        "the decode cache must not change training")
    with pytest.raises(AsymretError, match=r"run\.decode_cache_mb must be 0 \(off\) or more"):
        load_config(write_config(tmp_path / "bad.yaml", data_root, tmp_path / "bad",
                                 teacher_dir, run={"decode_cache_mb": -1}))
