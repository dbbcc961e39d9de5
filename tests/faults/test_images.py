"""Odd and bad images: each decodes to the right pixels or ends in one line naming the file.

16-bit images, float images, a 13,000² PNG, query boxes reaching outside their image or
holding infinities, and files that are not images at all.
"""

import io
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asymret.data.image_list import ImageList
from asymret.data.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_PIXELS_VARIABLE,
    BoxClippedWarning,
    ImageReadError,
    load_image,
    max_image_pixels,
)
from asymret.errors import AsymretError
from asymret.features import extract_vectors, resized_size
from asymret.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG of (H, W) grey or (H, W, 3) RGB ``values``, written byte by byte."""
    height, width = values.shape[:2]
    color_type = 2 if values.ndim == 3 else 0
    rows = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows))
            + _chunk(b"IEND", b""))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that announces ``width`` × ``height`` 8-bit grey pixels and holds one row."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + _chunk(b"IEND", b""))


def eight_bits(values: np.ndarray) -> np.ndarray:
    """Reference: round(v · 255 / 65535), half up, in float64."""
    return np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)


def gradient16(height: int = 6, width: int = 9) -> np.ndarray:
    return (np.arange(height * width, dtype=np.int64).reshape(height, width) * 1213 % 65536)


# --- Bit depths and modes --------------------------------------------------------------


def test_16_bit_grey_png_is_scaled_not_white(tmp_path):
    values = gradient16()
    values[0, :3] = [0, 65535, 128]
    path = tmp_path / "grey16.png"
    path.write_bytes(png16(values))
    assert Image.open(path).mode == "I;16"
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (6, 9, 3) and pixels.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], eight_bits(values))
    assert list(pixels[0, :3, 0]) == [0, 255, 0]  # 128 · 255 / 65535 = 0.498 → 0
    assert (pixels < 255).mean() > 0.9, "not all white"


def test_16_bit_rgb_png_keeps_its_colours(tmp_path):
    values = np.stack([gradient16(), 65535 - gradient16(), np.full((6, 9), 40000)], axis=-1)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png16(values))
    pixels = np.asarray(load_image(path)).astype(int)
    # Pillow keeps the high byte of each sample: within one level of the rounded value.
    assert np.abs(pixels - eight_bits(values)).max() <= 1


def test_32_bit_integer_mode_is_read_as_16_bit_values(tmp_path):
    values = gradient16()
    path = tmp_path / "int32.tif"
    Image.fromarray(values.astype(np.int32)).save(path)
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 1], eight_bits(values))


def test_float_images_are_refused_with_one_line(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((4, 5), 0.5, np.float32)).save(path)
    with pytest.raises(ImageReadError, match=rf"^{path}: 32-bit float image, whose range"):
        load_image(path)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1"])
def test_other_modes_become_rgb(tmp_path, mode):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8))
    path = tmp_path / f"image.{'jpg' if mode == 'CMYK' else 'png'}"
    converted = image.convert(mode)
    converted.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(Image.open(path).convert("RGB")))


# --- Size limit ------------------------------------------------------------------------


def test_a_13000_square_png_is_refused_from_its_header(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_VARIABLE, raising=False)
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(13_000, 13_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail here
        with pytest.raises(ImageReadError) as caught:
            load_image(path)
        with pytest.raises(ImageReadError):
            resized_size(path, 64)
    assert str(caught.value) == (
        f"{path}: 13000x13000 = 169,000,000 pixels, over the limit of 100,000,000; shrink the "
        f"image or raise {MAX_PIXELS_VARIABLE}"
    )
    assert DEFAULT_MAX_IMAGE_PIXELS == 100_000_000


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1199")
    assert max_image_pixels() == 1199
    with pytest.raises(ImageReadError, match=r"40x30 = 1,200 pixels, over the limit of 1,199"):
        load_image(path)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1200")
    assert load_image(path).size == (40, 30)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "0")
    assert max_image_pixels() is None and load_image(path).size == (40, 30)
    for bad in ("-5", "lots", "1e6"):
        monkeypatch.setenv(MAX_PIXELS_VARIABLE, bad)
        with pytest.raises(AsymretError, match=rf"{MAX_PIXELS_VARIABLE}='{bad}': expected a whole"):
            load_image(path)


# --- Crop boxes ------------------------------------------------------------------------


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8)).save(path)
    return path


def test_a_box_beyond_the_image_is_clipped_with_a_warning(photo):
    with pytest.warns(BoxClippedWarning, match=rf"{photo}: crop box \[-3.0, 5.0, 52.0, 25.0\] "
                      r"reaches outside the 40x30 image; clipped to \[0, 5, 40, 25\]"):
        clipped = load_image(photo, bbox=[-3.0, 5.0, 52.0, 25.0])
    inside = load_image(photo, bbox=[0, 5, 40, 25])
    assert clipped.size == inside.size == (40, 20)
    np.testing.assert_array_equal(np.asarray(clipped), np.asarray(inside))
    with pytest.warns(BoxClippedWarning):
        assert resized_size(photo, 20, [-3.0, 5.0, 52.0, 25.0]) == load_image(photo, 20, [
            0, 5, 40, 25]).size


def test_query_vectors_of_a_box_beyond_the_image_equal_those_of_the_clipped_box(photo):
    """What `evaluate` extracts: the query's box as an ImageList crop."""
    torch.manual_seed(0)
    net = create_model("test_efficientnet-gem-16")
    with pytest.warns(BoxClippedWarning):
        beyond = extract_vectors(net, ImageList([photo], 32, bboxes=[[10, -8, 60, 22]]),
                                 progress=False)
    clipped = extract_vectors(net, ImageList([photo], 32, bboxes=[[10, 0, 40, 22]]),
                              progress=False)
    padded = torch.nn.functional.normalize(net(torch.nn.functional.pad(
        _tensor(load_image(photo, bbox=[10, 0, 40, 22])), (0, 20, 8, 0))), dim=-1)
    torch.testing.assert_close(beyond, clipped, rtol=0, atol=0)
    assert (beyond - padded).abs().max() > 1e-3, "the padded crop would give other vectors"


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("box, message", [
    ([50, 5, 70, 25], r"crop box \[50, 5, 70, 25\] lies outside the 40x30 image"),
    ([0, 0, float("inf"), 10], r"crop box \[0, 0, inf, 10\] holds a non-finite number"),
    ([float("nan"), 0, 10, 10], r"crop box \[nan, 0, 10, 10\] holds a non-finite number"),
    ([10, 5, 10.2, 25], r"empty crop box"),
])
def test_impossible_boxes_are_one_line(photo, box, message):
    with pytest.raises(ImageReadError, match=rf"^{photo}: {message}"):
        load_image(photo, bbox=box)
    with pytest.raises(ImageReadError, match=rf"^{photo}: {message}"):
        resized_size(photo, 20, box)


# --- Files that are not (whole) images -------------------------------------------------


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("content, reason", [
    (b"", r"cannot decode image \(cannot identify image file"),
    (b"hello, I am text", r"cannot decode image \(cannot identify image file"),
    (_jpeg_bytes()[:200], r"cannot decode image \("),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, r"cannot decode image \("),
])
def test_broken_files_are_one_line_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as caught:
        load_image(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)
    assert re.search(reason, str(caught.value)), str(caught.value)


def test_a_folder_named_like_an_image_is_one_line(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageReadError, match=r"dir\.jpg: cannot decode image"):
        load_image(tmp_path / "dir.jpg")
