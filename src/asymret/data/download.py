"""Download the benchmark datasets and the reference teacher networks into the data root.

``asymret download NAME [--root DIR] [--mirror URL]`` fetches from the official addresses (the
ones the reference projects cnnimageretrieval-pytorch and revisitop use) and lays the files
out exactly as the readers expect::

    <root>/roxford5k/gnd_roxford5k.pkl          <root>/roxford5k/jpg/<name>.jpg
    <root>/rparis6k/gnd_rparis6k.pkl            <root>/rparis6k/jpg/<name>.jpg
    <root>/revisitop1m/revisitop1m.txt          <root>/revisitop1m/jpg/<name as listed>
    <root>/retrieval-SfM-120k/retrieval-SfM-120k.pkl (+ the two *-whiten.pkl files)
    <root>/retrieval-SfM-120k/ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>
    <root>/networks/<checkpoint>.pth

The Oxford and Paris archives are flattened into ``jpg/`` (Paris nests its images per
landmark). The Paris set holds a few known-corrupt JPEG files; they are kept as they are,
and the image reader reports them.

Public API:

- :data:`DATASETS` and :data:`NETWORKS` map each downloadable name to a
  :class:`DownloadSpec`; :data:`DOWNLOADS` holds both.
- :func:`download` ``(name, root=None, mirror=None, progress=True) -> Path`` fetches one
  name; it returns the dataset folder, or the checkpoint file for a network.
- :func:`download_file` ``(url, dest, size=None, sha256=None, progress=True) -> Path``
  streams one file with resume, size and checksum checks and an atomic rename.
- :func:`extract_archive` ``(path, dest, flatten=False, progress=True) -> int`` unpacks a
  tar archive safely.
- :func:`apply_mirror` ``(url, mirror) -> str`` swaps the official host for a mirror.

Behaviour:

- A file is streamed into ``<dest>.part`` and renamed to ``dest`` only once it is complete,
  its size (``Content-Length``, or the known size) and SHA-256 (where known) match, and its
  content is of the kind expected (:data:`FORMATS`: a pickle that the restricted unpickler
  loads, a ground truth that :func:`~asymret.data.revisitop.load_gnd` accepts, a tar archive
  whose first member reads, a torch checkpoint, UTF-8 text). An interrupted download keeps
  the ``.part`` file and the next call resumes it with an HTTP ``Range`` request; a server
  that ignores ``Range`` makes it restart cleanly from zero. A checksum, size or format
  failure deletes the ``.part`` file.
- An HTML page is never a file we asked for: an answer with ``Content-Type: text/html`` is
  refused before anything is written (a captive portal or an error page sent with status
  200), and so is content that starts like an HTML document.
- A file already in place counts as done only while it still passes its format check; one
  that does not (garbage kept by an older version) is deleted and fetched again.
- An archive is downloaded, extracted into a staging folder beside the target with tarfile's
  ``"data"`` filter (no member may leave the folder, no device files), moved into place,
  deleted, and recorded by a marker file under ``<dataset>/.extracted/``.
- Work already done is skipped: finished files and extracted archives are not fetched again,
  and the image archives are skipped altogether when every image that the annotation file
  lists is already on disk (e.g. copied from an existing cnnimageretrieval-pytorch tree).
  When images are still missing after the archives were extracted, their markers are
  removed, so that nothing failed counts as done.
- Network and HTTP failures raise :class:`~asymret.errors.AsymretError` with one line that
  names the URL and the reason.
- ``mirror`` replaces the scheme and host of every official address by another base URL
  and keeps the path, so one mirror serves the files of all three official hosts (e.g.
  ``http://cmp.felk.cvut.cz/revisitop/data/...`` → ``<mirror>/revisitop/data/...``).

SHA-256 sums and sizes are recorded where we know them: the revisited ground-truth files
(measured on copies of the official files). They are left ``None`` where they are not
published (the image archives, the SfM-120k dbs, the networks); the ``Content-Length``
check then still catches a truncated transfer, and the format check garbage.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from asymret.data.revisitop import load_gnd
from asymret.data.root import resolve_data_root
from asymret.data.sfm120k import SPLITS, TrainingDb, cid_to_relative_path
from asymret.errors import AsymretError
from asymret.safe_pickle import load_pickle

OXFORD_VGG_DATA = "https://www.robots.ox.ac.uk/~vgg/data"
REVISITOP_DATA = "http://cmp.felk.cvut.cz/revisitop/data"
REVISITOP1M_DATA = "http://ptak.felk.cvut.cz/revisitop/revisitop1m"
CNNIMAGERETRIEVAL_DATA = "http://cmp.felk.cvut.cz/cnnimageretrieval/data"

REVISITOP1M_PARTS = 100
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "asymret-download"
EXTRACTED_MARKERS = ".extracted"

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")
# A torch checkpoint: a zip archive (torch >= 1.6), or the legacy format, a pickle that starts
# with the magic number 0x1950a86a20f9469cfc6c (protocol 2: PROTO 2, LONG1 of 10 bytes).
_TORCH_LEGACY_START = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_ZIP_START = b"PK\x03\x04"


@dataclass(frozen=True)
class RemoteFile:
    """One file at an official address.

    Attributes:
        url: Official address.
        sha256: Expected SHA-256 hex digest, or None where it is not known.
        size: Expected size in bytes, or None where it is not known.
        kind: What the content must be, a key of :data:`FORMATS`.
    """

    url: str
    sha256: str | None = None
    size: int | None = None
    kind: str = "pickle"

    @property
    def filename(self) -> str:
        """The last component of the URL path, used as the local file name."""
        return urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RemoteArchive(RemoteFile):
    """A tar archive whose content goes into a sub-folder of the dataset folder.

    Attributes:
        into: Folder, relative to the dataset folder, that receives the content.
        flatten: Drop the archive's folders and put every file directly into ``into``.
    """

    into: str = "jpg"
    flatten: bool = False
    kind: str = "tar"


@dataclass(frozen=True)
class DownloadSpec:
    """What one downloadable name fetches and where it goes.

    Attributes:
        name: Name on the command line.
        folder: Folder under the data root.
        description: One line for listings.
        files: Plain files saved into ``folder`` under their own names (fetched first).
        archives: Archives extracted into ``folder``.
        expected_images: Given the dataset folder, yields the relative path of every image
            that its annotation file lists (used to skip or check the image archives).
        returns: Path relative to ``folder`` that :func:`download` returns; the folder itself
            when None.
    """

    name: str
    folder: str
    description: str
    files: tuple[RemoteFile, ...] = ()
    archives: tuple[RemoteArchive, ...] = ()
    expected_images: Callable[[Path], Iterator[str]] | None = None
    returns: str | None = None


def _revisited_images(dataset: str) -> Callable[[Path], Iterator[str]]:
    """Expected image paths of ROxford5k / RParis6k: ``jpg/<name>.jpg`` for both lists."""

    def expected(folder: Path) -> Iterator[str]:
        cfg = load_gnd(folder / f"gnd_{dataset}.pkl")
        for name in dict.fromkeys([*cfg["imlist"], *cfg["qimlist"]]):
            yield f"jpg/{name}.jpg"

    return expected


def _revisitop1m_images(folder: Path) -> Iterator[str]:
    """Expected image paths of R1M: ``jpg/<line>`` for each line of the image list."""
    with open(folder / "revisitop1m.txt", encoding="utf-8") as listing:
        for line in listing:
            if line.strip():
                yield f"jpg/{line.strip()}"


def _sfm120k_images(folder: Path) -> Iterator[str]:
    """Expected image paths of SfM-120k: ``ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>``."""
    for split in SPLITS:
        for cid in TrainingDb.load(folder.name, split, folder.parent).cids:
            yield cid_to_relative_path(cid).as_posix()


DATASETS: dict[str, DownloadSpec] = {
    spec.name: spec
    for spec in (
        DownloadSpec(
            name="roxford5k",
            folder="roxford5k",
            description="Revisited Oxford: 4,993 database images, 70 queries",
            files=(
                RemoteFile(
                    f"{REVISITOP_DATA}/datasets/roxford5k/gnd_roxford5k.pkl",
                    sha256="ba7967754bd2d7d2210a5799f9c45ad5835e269a80ef9d3eba44caa35816c471",
                    size=149_871,
                    kind="gnd",
                ),
            ),
            archives=(
                RemoteArchive(f"{OXFORD_VGG_DATA}/oxbuildings/oxbuild_images-v1.tgz", flatten=True),
            ),
            expected_images=_revisited_images("roxford5k"),
        ),
        DownloadSpec(
            name="rparis6k",
            folder="rparis6k",
            description="Revisited Paris: 6,322 database images, 70 queries",
            files=(
                RemoteFile(
                    f"{REVISITOP_DATA}/datasets/rparis6k/gnd_rparis6k.pkl",
                    sha256="d2e729a5293dda7dda8a15c8383424a42e4964a2c4cfea2f32fa85d11d2df499",
                    size=276_508,
                    kind="gnd",
                ),
            ),
            archives=tuple(
                RemoteArchive(f"{OXFORD_VGG_DATA}/parisbuildings/{part}", flatten=True)
                for part in ("paris_1-v1.tgz", "paris_2-v1.tgz")
            ),
            expected_images=_revisited_images("rparis6k"),
        ),
        DownloadSpec(
            name="revisitop1m",
            folder="revisitop1m",
            description="R1M distractors: 1,001,001 images in 100 archives",
            files=(RemoteFile(f"{REVISITOP1M_DATA}/revisitop1m.txt", kind="text"),),
            archives=tuple(
                RemoteArchive(f"{REVISITOP1M_DATA}/jpg/revisitop1m.{part}.tar.gz")
                for part in range(1, REVISITOP1M_PARTS + 1)
            ),
            expected_images=_revisitop1m_images,
        ),
        DownloadSpec(
            name="sfm120k",
            folder="retrieval-SfM-120k",
            description="SfM-120k training db and images, with the 120k/30k whitening dbs",
            files=tuple(
                RemoteFile(f"{CNNIMAGERETRIEVAL_DATA}/train/dbs/{db}")
                for db in (
                    "retrieval-SfM-120k.pkl",
                    "retrieval-SfM-120k-whiten.pkl",
                    "retrieval-SfM-30k-whiten.pkl",
                )
            ),
            archives=(RemoteArchive(f"{CNNIMAGERETRIEVAL_DATA}/train/ims/ims.tar.gz", into="ims"),),
            expected_images=_sfm120k_images,
        ),
    )
}

_REFERENCE_NETWORKS = {
    "retrievalSfM120k-vgg16-gem": "retrieval-SfM-120k/retrievalSfM120k-vgg16-gem-b4dcdc6.pth",
    "retrievalSfM120k-resnet101-gem": (
        "retrieval-SfM-120k/retrievalSfM120k-resnet101-gem-b80fb85.pth"
    ),
    "rSfM120k-tl-resnet50-gem-w": "retrieval-SfM-120k/rSfM120k-tl-resnet50-gem-w-97bf910.pth",
    "rSfM120k-tl-resnet101-gem-w": "retrieval-SfM-120k/rSfM120k-tl-resnet101-gem-w-a155e54.pth",
    "rSfM120k-tl-resnet152-gem-w": "retrieval-SfM-120k/rSfM120k-tl-resnet152-gem-w-f39cada.pth",
    "gl18-tl-resnet50-gem-w": "gl18/gl18-tl-resnet50-gem-w-83fdc30.pth",
    "gl18-tl-resnet101-gem-w": "gl18/gl18-tl-resnet101-gem-w-a4d43db.pth",
    "gl18-tl-resnet152-gem-w": "gl18/gl18-tl-resnet152-gem-w-21278d5.pth",
}

NETWORKS: dict[str, DownloadSpec] = {
    name: DownloadSpec(
        name=name,
        folder="networks",
        description=f"reference teacher network {name} (cnnimageretrieval-pytorch)",
        files=(RemoteFile(f"{CNNIMAGERETRIEVAL_DATA}/networks/{path}", kind="torch"),),
        returns=path.rsplit("/", 1)[-1],
    )
    for name, path in _REFERENCE_NETWORKS.items()
}

DOWNLOADS: dict[str, DownloadSpec] = {**DATASETS, **NETWORKS}


def apply_mirror(url: str, mirror: str | None) -> str:
    """Replace the scheme and host of ``url`` by the base URL ``mirror``, keeping the path.

    Args:
        url: An official address.
        mirror: Base URL such as ``http://127.0.0.1:8000`` or ``https://host/prefix``;
            None returns ``url`` unchanged.

    Returns:
        The address on the mirror.

    Raises:
        AsymretError: ``mirror`` is not an http(s) URL with a host.
    """
    if mirror is None:
        return url
    parsed = urllib.parse.urlsplit(mirror)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise AsymretError(f"mirror '{mirror}' must be an http:// or https:// URL with a host")
    path = urllib.parse.urlsplit(url).path
    return mirror.rstrip("/") + path


def download(
    name: str,
    root: str | os.PathLike | None = None,
    mirror: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch a dataset or a reference network into the data root, skipping work already done.

    Args:
        name: A key of :data:`DOWNLOADS` (e.g. ``"roxford5k"``, ``"sfm120k"``,
            ``"rSfM120k-tl-resnet101-gem-w"``).
        root: Data root; see :func:`asymret.data.root.resolve_data_root`.
        mirror: Base URL that replaces the official hosts (see :func:`apply_mirror`).
        progress: Show tqdm progress bars on stderr.

    Returns:
        The dataset folder, or the checkpoint file for a network.

    Raises:
        AsymretError: unknown name, unreachable host, HTTP error, interrupted transfer,
            size or checksum mismatch, unsafe archive, or images still missing afterwards.
    """
    spec = DOWNLOADS.get(name)
    if spec is None:
        raise AsymretError(f"unknown download '{name}'; choose one of: {', '.join(DOWNLOADS)}")
    folder = resolve_data_root(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    for remote in spec.files:
        download_file(
            apply_mirror(remote.url, mirror),
            folder / remote.filename,
            size=remote.size,
            sha256=remote.sha256,
            progress=progress,
            kind=remote.kind,
        )
    images_present = spec.expected_images is not None and (
        next(_missing_images(spec, folder), None) is None
    )
    if not images_present:
        for archive in spec.archives:
            _fetch_and_extract(archive, folder, mirror, progress)
        try:
            _check_images(spec, folder)
        except AsymretError:
            for archive in spec.archives:  # nothing that failed counts as done
                (folder / EXTRACTED_MARKERS / archive.filename).unlink(missing_ok=True)
            raise
    return folder / spec.returns if spec.returns else folder


def _missing_images(spec: DownloadSpec, folder: Path) -> Iterator[str]:
    """Relative paths of the images that the dataset's annotation lists but the disk lacks."""
    if spec.expected_images is None:
        return
    for relative in spec.expected_images(folder):
        if not (folder / relative).is_file():
            yield relative


def _check_images(spec: DownloadSpec, folder: Path) -> None:
    """Raise if any image listed by the annotation file is still missing after extraction."""
    missing = list(_missing_images(spec, folder))
    if missing:
        raise AsymretError(
            f"{folder}: {len(missing)} listed images are missing after the download "
            f"(first: {missing[0]}); the archives did not hold them (they will be fetched "
            "again next time)"
        )


def _fetch_and_extract(
    archive: RemoteArchive, folder: Path, mirror: str | None, progress: bool
) -> None:
    """Download one archive, extract it into the dataset folder, delete it, record a marker."""
    marker = folder / EXTRACTED_MARKERS / archive.filename
    if marker.is_file():
        (folder / archive.filename).unlink(missing_ok=True)
        return
    url = apply_mirror(archive.url, mirror)
    path = download_file(
        url, folder / archive.filename, size=archive.size, sha256=archive.sha256,
        progress=progress, kind=archive.kind,
    )
    extract_archive(path, folder / archive.into, flatten=archive.flatten, progress=progress)
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(archive.url + "\n", encoding="utf-8")
    path.unlink()


def download_file(
    url: str,
    dest: str | os.PathLike,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    kind: str | None = None,
) -> Path:
    """Stream ``url`` into ``dest``, resuming ``<dest>.part`` and renaming only when verified.

    An existing ``dest`` counts as done and is returned without a request, unless it fails
    the ``kind`` check: it is then deleted and fetched again.

    Args:
        url: http(s) address.
        dest: Final file path; its folder is created.
        size: Expected size in bytes, or None to trust ``Content-Length``.
        sha256: Expected SHA-256 hex digest, or None to skip the check.
        progress: Show a tqdm progress bar on stderr.
        kind: What the content must be, a key of :data:`FORMATS`; None: any bytes (an HTML
            page is refused all the same).

    Returns:
        ``dest`` as a Path.

    Raises:
        AsymretError: unreachable host or HTTP error, an HTML page, transfer cut short (the
            ``.part`` file is kept for the next call to resume), size mismatch, checksum
            mismatch or content of the wrong kind (the ``.part`` file is deleted).
    """
    dest = Path(dest)
    if kind is not None and kind not in FORMATS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(FORMATS)}")
    if dest.is_file():
        if _format_problem(dest, kind) is None:
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if size is not None and part.is_file() and part.stat().st_size > size:
        part.unlink()
    if size is None or not part.is_file() or part.stat().st_size < size:
        _fetch_into_part(url, part, size, progress)
    _verify_part(url, part, size, sha256)
    problem = _format_problem(part, kind)
    if problem is not None:
        part.unlink()
        raise AsymretError(f"download of {url} is not {problem}; deleted it (a wrong address "
                           "or mirror?)")
    os.replace(part, dest)
    return dest


class _RangeNotSatisfiable(Exception):
    """The server answered 416 to a resume request; ``total`` is the remote size if given."""

    def __init__(self, total: int | None):
        super().__init__(total)
        self.total = total


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    """Send a GET for ``url``, asking for the bytes from ``offset`` on when it is positive.

    Raises:
        _RangeNotSatisfiable: 416 answer to a request with a positive ``offset``.
        AsymretError: any other HTTP error, or the host cannot be reached.
    """
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        if offset and exc.code == http.client.REQUESTED_RANGE_NOT_SATISFIABLE:
            total = _content_range(exc.headers.get("Content-Range", ""))[1]
            raise _RangeNotSatisfiable(total) from exc
        raise AsymretError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise AsymretError(f"cannot download {url}: {reason}") from exc


def _fetch_into_part(url: str, part: Path, size: int | None, progress: bool) -> None:
    """Append the missing bytes of ``url`` to ``part``, or rewrite it if Range is ignored."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset)
    except _RangeNotSatisfiable as exc:
        if exc.total == offset:
            return  # the partial file already holds every byte
        part.unlink()  # longer than the remote file: it cannot be a prefix of it
        offset = 0
        response = _open(url, offset)
    with response:
        content_type = response.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() == "text/html":
            raise AsymretError(
                f"cannot download {url}: the server sent an HTML page (status "
                f"{response.status}, Content-Type {content_type}) instead of the file; check "
                "the address or mirror"
            )
        start, total = _response_span(url, response, offset)
        if size is not None and total is not None and total != size:
            raise AsymretError(
                f"cannot download {url}: server offers {total} bytes, expected {size}"
            )
        received = start
        try:
            with (
                open(part, "ab" if start else "wb") as out,
                tqdm(
                    total=total,
                    initial=start,
                    desc=part.name.removesuffix(".part"),
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as exc:
            raise AsymretError(
                f"download of {url} interrupted after {received} bytes ({exc}); "
                f"run again to resume from {part}"
            ) from exc
    expected = total if total is not None else size
    if expected is not None and received < expected:
        raise AsymretError(
            f"download of {url} interrupted after {received} of {expected} bytes; "
            f"run again to resume from {part}"
        )


def _content_range(header: str) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` from a Content-Range header; None for what it omits."""
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (None if total == "*" else int(total))


def _response_span(
    url: str, response: http.client.HTTPResponse, offset: int
) -> tuple[int, int | None]:
    """Where the response body starts in the file, and the whole file's size (None: unknown).

    A 200 answer to a resume request means the server ignored ``Range``: the body is the
    whole file and starts at 0.
    """
    length_header = response.headers.get("Content-Length", "")
    length = int(length_header) if length_header.isdigit() else None
    if response.status != http.client.PARTIAL_CONTENT:
        return 0, length
    first, total = _content_range(response.headers.get("Content-Range", ""))
    if first != offset:
        raise AsymretError(
            f"cannot download {url}: asked for bytes from {offset} on, server sent a range "
            f"starting at {first}"
        )
    if total is None and length is not None:
        total = offset + length
    return offset, total


def _verify_part(url: str, part: Path, size: int | None, sha256: str | None) -> None:
    """Check the finished ``.part`` file's size and SHA-256; delete it when they are wrong."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise AsymretError(
            f"download of {url} has {actual_size} bytes, expected {size}; deleted it, run again"
        )
    if sha256 is None:
        return
    digest = hashlib.sha256()
    with open(part, "rb") as data:
        while block := data.read(CHUNK_BYTES):
            digest.update(block)
    if digest.hexdigest() != sha256.lower():
        part.unlink()
        raise AsymretError(
            f"download of {url} failed the SHA-256 check (expected {sha256}, got "
            f"{digest.hexdigest()}); deleted it, run again"
        )


def _tar_problem(path: Path) -> str | None:
    """A tar archive (any compression) whose first member header reads; the members are read
    in full by the extraction that follows."""
    try:
        with tarfile.open(path) as tar:
            if tar.next() is None:
                return "a tar archive (it holds no member)"
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        return f"a tar archive ({type(exc).__name__}: {exc})"
    return None


def _pickle_problem(path: Path) -> str | None:
    """A pickle that the restricted unpickler loads."""
    try:
        load_pickle(path)
    except AsymretError as exc:
        return f"a pickle of plain data ({exc})"
    return None


def _gnd_problem(path: Path) -> str | None:
    """A revisited ground truth that :func:`~asymret.data.revisitop.load_gnd` accepts."""
    try:
        load_gnd(path)
    except AsymretError as exc:
        return f"a revisited ground-truth pickle ({exc})"
    return None


def _torch_problem(path: Path) -> str | None:
    """A torch checkpoint: a zip archive or the legacy format (magic number first)."""
    with open(path, "rb") as handle:
        start = handle.read(len(_TORCH_LEGACY_START))
    if start.startswith(_ZIP_START) or start == _TORCH_LEGACY_START:
        return None
    return "a torch checkpoint (neither a zip archive nor the legacy format)"


def _text_problem(path: Path) -> str | None:
    """UTF-8 text."""
    try:
        with open(path, encoding="utf-8") as handle:
            while handle.read(CHUNK_BYTES):
                pass
    except UnicodeDecodeError as exc:
        return f"UTF-8 text ({exc})"
    return None


FORMATS: dict[str, Callable[[Path], str | None]] = {
    "pickle": _pickle_problem,
    "gnd": _gnd_problem,
    "tar": _tar_problem,
    "torch": _torch_problem,
    "text": _text_problem,
}
"""Kind of content → its check: given a file, None, or what the file is not."""


def _format_problem(path: Path, kind: str | None) -> str | None:
    """What ``path`` should be and is not (an HTML page, or not of ``kind``), or None."""
    with open(path, "rb") as handle:
        start = handle.read(512).lstrip().lower()
    if start.startswith(_HTML_STARTS):
        return "the file but an HTML page"
    return None if kind is None else FORMATS[kind](path)


def _refuse_unsafe_member(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo | None:
    """tarfile's ``"data"`` filter, refusing absolute names too instead of stripping them."""
    if member.name.startswith(("/", os.sep)) or os.path.isabs(member.name):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest_path)


def extract_archive(
    path: str | os.PathLike, dest: str | os.PathLike, flatten: bool = False, progress: bool = True
) -> int:
    """Safely unpack the tar archive ``path`` (any compression) into the folder ``dest``.

    Members are first extracted into a staging folder beside ``dest`` with tarfile's
    ``"data"`` filter, so that a member leaving the folder (``..``, an absolute path, a link
    pointing outside) or a device file refuses the whole archive and nothing reaches
    ``dest``. Regular files are then moved into ``dest``, replacing files of the same name;
    links and empty folders are not kept.

    Args:
        path: The archive.
        dest: Target folder; created if needed.
        flatten: Put every file directly into ``dest``, dropping the archive's folders.
        progress: Show a tqdm counter of extracted members on stderr.

    Returns:
        The number of files placed in ``dest``.

    Raises:
        AsymretError: unreadable or unsafe archive, or (with ``flatten``) two files of the
            same name in different folders.
    """
    path, dest = Path(path), Path(dest)
    staging = dest.parent / f".{path.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        try:
            with tarfile.open(path) as tar:
                members = tqdm(
                    tar,
                    desc=f"extract {path.name}",
                    unit=" files",
                    disable=not progress,
                    leave=False,
                )
                tar.extractall(staging, members=members, filter=_refuse_unsafe_member)
        except tarfile.FilterError as exc:
            raise AsymretError(f"{path}: refused an unsafe archive member ({exc})") from exc
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise AsymretError(f"{path}: cannot extract ({type(exc).__name__}: {exc})") from exc
        return _move_files(staging, dest, flatten, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_files(staging: Path, dest: Path, flatten: bool, archive: Path) -> int:
    """Move the regular files under ``staging`` into ``dest``; return how many were moved."""
    dest.mkdir(parents=True, exist_ok=True)
    flattened_names: set[str] = set()
    moved = 0
    for directory, _, names in os.walk(staging):
        for name in names:
            source = Path(directory, name)
            if source.is_symlink() or not source.is_file():
                continue
            if flatten:
                if name in flattened_names:
                    raise AsymretError(
                        f"{archive}: more than one file is named '{name}'; cannot flatten it"
                    )
                flattened_names.add(name)
                target = dest / name
            else:
                target = dest / source.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            moved += 1
    return moved
