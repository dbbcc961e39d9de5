"""Small files for the download tests, generated in code."""

import io
import tarfile

from PIL import Image


def jpeg_bytes(seed: int = 0) -> bytes:
    """A tiny JPEG, its colour set by ``seed``."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (seed * 40 % 256, 90, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def tar_gz(entries: dict[str, bytes]) -> bytes:
    """A gzipped tar of ``{member name: content}``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
