"""Dataset downloads, end to end against a local HTTP server on 127.0.0.1 (no internet).

The server serves small archives generated here with the layout of the official ones; the
downloads reach it through the ``mirror`` option, which keeps the official URL paths.
"""

import dataclasses
import hashlib
import io
import random
import re
import socket
import tarfile
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from asymret.data.download import (
    DATASETS,
    DOWNLOADS,
    NETWORKS,
    apply_mirror,
    download,
    download_file,
    extract_archive,
)
from asymret.data.revisitop import write_gnd
from asymret.data.sfm120k import write_training_db, write_whitening_db
from asymret.errors import AsymretError
from asymret.safe_pickle import load_pickle
from download_fixtures import jpeg_bytes, tar_gz

SERVER_WATCHDOG_S = 60.0


class _FileServer:
    """Serves ``files`` (URL path → bytes) with Range support, and records every request.

    Attributes:
        files: URL path → content.
        requests: ``(path, Range header or None)`` for each GET, in order.
        cut_after: URL path → byte count: the next answer for that path announces the full
            length but sends only that many bytes, then closes the connection (one-shot).
        ignore_range: Answer every GET with 200 and the whole file.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: dict[str, int] = {}
        self.ignore_range = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, official_url: str, content: bytes) -> None:
        self.files[urllib.parse.urlsplit(official_url).path] = content

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                range_header = self.headers.get("Range")
                server.requests.append((path, range_header))
                body = server.files.get(path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if range_header and not server.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", range_header)[1])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                cut = server.cut_after.pop(path, None)
                self.wfile.write(payload if cut is None else payload[:cut])
                self.close_connection = True

            def log_message(self, format, *args):
                pass

        return Handler


@pytest.fixture(autouse=True)
def unknown_ground_truth_sums(monkeypatch):
    """The tests serve ground-truth files of their own: forget the official files' known
    sizes and SHA-256 (``tests/faults/test_downloads.py`` checks that they are enforced)."""
    for name in ("roxford5k", "rparis6k"):
        spec = DOWNLOADS[name]
        files = tuple(dataclasses.replace(f, sha256=None, size=None) for f in spec.files)
        monkeypatch.setitem(DOWNLOADS, name, dataclasses.replace(spec, files=files))


@pytest.fixture
def server():
    file_server = _FileServer()
    thread = threading.Thread(
        target=file_server.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    watchdog = threading.Timer(SERVER_WATCHDOG_S, file_server.httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield file_server
    finally:
        watchdog.cancel()
        file_server.httpd.shutdown()
        file_server.httpd.server_close()
        thread.join(timeout=5)


def _written(write, *arguments, **options) -> bytes:
    """The bytes of the file that ``write(path, *arguments, **options)`` writes."""
    with tempfile.TemporaryDirectory() as folder:
        return write(Path(folder) / "file.pkl", *arguments, **options).read_bytes()


def _gnd(imlist: list[str], qimlist: list[str]) -> bytes:
    queries = [{"bbx": [0.0, 0.0, 4.0, 3.0], "easy": [0], "hard": [], "junk": []}] * len(qimlist)
    return _written(write_gnd, imlist, qimlist, queries, protocol=2)


def _serve_roxford5k(server: _FileServer) -> dict[str, bytes]:
    """Flat Oxford archive and its gnd file; returns image name → bytes."""
    images = {
        "all_souls_000000": jpeg_bytes(1),
        "all_souls_000001": jpeg_bytes(2),
        "bodleian_000000": jpeg_bytes(3),
    }
    spec = DATASETS["roxford5k"]
    server.serve(
        spec.files[0].url, _gnd(["all_souls_000000", "bodleian_000000"], ["all_souls_000001"])
    )
    server.serve(spec.archives[0].url, tar_gz({f"{n}.jpg": b for n, b in images.items()}))
    return images


def _serve_rparis6k(server: _FileServer) -> dict[str, bytes]:
    """Two Paris archives nesting images per landmark, one image corrupt on purpose."""
    parts = [
        {"defense": {"paris_defense_000000": jpeg_bytes(4), "paris_defense_000001": jpeg_bytes(5)}},
        {
            "louvre": {
                "paris_louvre_000000": jpeg_bytes(6),
                "paris_louvre_000136": b"\xff\xd8\xff broken",
            }
        },
    ]
    spec = DATASETS["rparis6k"]
    images = {}
    for archive, landmarks in zip(spec.archives, parts, strict=True):
        entries = {}
        for landmark, files in landmarks.items():
            entries.update({f"paris/{landmark}/{name}.jpg": data for name, data in files.items()})
            images.update(files)
        server.serve(archive.url, tar_gz(entries))
    names = sorted(images)
    server.serve(spec.files[0].url, _gnd(names[1:], names[:1]))
    return images


def test_official_addresses_and_mirror_mapping():
    assert DATASETS["roxford5k"].archives[0].url == (
        "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz"
    )
    assert [a.url for a in DATASETS["rparis6k"].archives] == [
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1-v1.tgz",
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_2-v1.tgz",
    ]
    assert DATASETS["rparis6k"].files[0].url == (
        "http://cmp.felk.cvut.cz/revisitop/data/datasets/rparis6k/gnd_rparis6k.pkl"
    )
    r1m = DATASETS["revisitop1m"]
    assert len(r1m.archives) == 100
    assert r1m.archives[99].url == (
        "http://ptak.felk.cvut.cz/revisitop/revisitop1m/jpg/revisitop1m.100.tar.gz"
    )
    assert r1m.files[0].url == "http://ptak.felk.cvut.cz/revisitop/revisitop1m/revisitop1m.txt"
    assert DATASETS["sfm120k"].archives[0].url == (
        "http://cmp.felk.cvut.cz/cnnimageretrieval/data/train/ims/ims.tar.gz"
    )
    assert NETWORKS["gl18-tl-resnet101-gem-w"].files[0].url == (
        "http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/gl18/gl18-tl-resnet101-gem-w-a4d43db.pth"
    )
    assert set(DOWNLOADS) == set(DATASETS) | set(NETWORKS)

    url = DATASETS["roxford5k"].archives[0].url
    assert apply_mirror(url, "http://10.0.0.1:81/m/") == (
        "http://10.0.0.1:81/m/~vgg/data/oxbuildings/oxbuild_images-v1.tgz"
    )
    assert apply_mirror(url, None) == url
    with pytest.raises(AsymretError, match="mirror"):
        apply_mirror(url, "ftp://example.org")
    with pytest.raises(AsymretError, match="roxford5k"):
        download("roxford6k")


def test_revisited_oxford_and_paris_land_where_the_readers_expect(server, tmp_path):
    oxford = _serve_roxford5k(server)
    paris = _serve_rparis6k(server)

    oxford_dir = download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    paris_dir = download("rparis6k", root=tmp_path, mirror=server.url, progress=False)

    assert oxford_dir == tmp_path / "roxford5k" and paris_dir == tmp_path / "rparis6k"
    for folder, images in ((oxford_dir, oxford), (paris_dir, paris)):
        assert sorted(p.name for p in (folder / "jpg").iterdir()) == sorted(
            f"{name}.jpg" for name in images
        )
        for name, content in images.items():
            assert (folder / "jpg" / f"{name}.jpg").read_bytes() == content
        assert not list(folder.glob("*.tgz*")) and not list(folder.glob(".*.staging"))
    assert load_pickle(oxford_dir / "gnd_roxford5k.pkl")["qimlist"] == ["all_souls_000001"]
    assert "paris_louvre_000136" in load_pickle(paris_dir / "gnd_rparis6k.pkl")["imlist"]


def test_rerun_makes_no_request_and_present_images_skip_the_archives(server, tmp_path):
    _serve_roxford5k(server)
    download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    assert len(server.requests) == 2

    download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    assert len(server.requests) == 2

    # Images copied in by hand (no extraction markers): the archive is not fetched either.
    for marker in (tmp_path / "roxford5k" / ".extracted").iterdir():
        marker.unlink()
    download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    assert len(server.requests) == 2


def test_image_listed_but_not_in_the_archive_is_reported(server, tmp_path):
    _serve_roxford5k(server)
    gnd_url = DATASETS["roxford5k"].files[0].url
    server.serve(gnd_url, _gnd(["all_souls_000000", "not_in_archive_000000"], ["bodleian_000000"]))
    with pytest.raises(AsymretError, match=r"1 listed images are missing.*not_in_archive_000000"):
        download("roxford5k", root=tmp_path, mirror=server.url, progress=False)


def test_sfm120k_layout(server, tmp_path):
    cids = ["7d8bcad8b0d5d7a3d23bb6e96baad03b", "00a1b2c3d4e5f60718293a4b5c6d7e8f", "ffee01"]
    images = {cid: jpeg_bytes(i) for i, cid in enumerate(cids)}
    spec = DATASETS["sfm120k"]
    db = _written(
        write_training_db,
        {"cids": cids[:2], "cluster": [0, 1], "qidxs": [0], "pidxs": [1]},
        {"cids": cids[2:], "cluster": [2], "qidxs": [], "pidxs": []},
    )
    whiten = _written(write_whitening_db, {"cids": cids, "qidxs": [0], "pidxs": [1]})
    for remote in spec.files:
        server.serve(remote.url, db if remote.filename.endswith("120k.pkl") else whiten)
    server.serve(
        spec.archives[0].url,
        tar_gz({f"{c[-2:]}/{c[-4:-2]}/{c[-6:-4]}/{c}": data for c, data in images.items()}),
    )

    folder = download("sfm120k", root=tmp_path, mirror=server.url, progress=False)

    assert folder == tmp_path / "retrieval-SfM-120k"
    assert load_pickle(folder / "retrieval-SfM-120k.pkl")["train"]["cids"] == cids[:2]
    assert (folder / "retrieval-SfM-30k-whiten.pkl").is_file()
    assert (folder / "ims/3b/d0/aa/7d8bcad8b0d5d7a3d23bb6e96baad03b").read_bytes() == images[
        cids[0]
    ]
    for cid, content in images.items():
        assert (folder / "ims" / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid).read_bytes() == content


def test_revisitop1m_parts_extract_into_jpg(server, tmp_path):
    spec = DATASETS["revisitop1m"]
    names = []
    for part, archive in enumerate(spec.archives, start=1):
        name = f"{part % 7}/{part:03d}/distractor_{part}.jpg"
        names.append(name)
        server.serve(archive.url, tar_gz({name: f"image {part}".encode()}))
    server.serve(spec.files[0].url, "".join(f"{n}\n" for n in names).encode())
    part_51 = urllib.parse.urlsplit(spec.archives[50].url).path
    server.cut_after[part_51] = 40

    with pytest.raises(AsymretError, match=r"revisitop1m\.51\.tar\.gz interrupted"):
        download("revisitop1m", root=tmp_path, mirror=server.url, progress=False)
    server.requests.clear()
    folder = download("revisitop1m", root=tmp_path, mirror=server.url, progress=False)

    # Parts 1-50 are done and not fetched again; part 51 resumes; 52-100 follow.
    fetched = [path for path, _ in server.requests]
    assert fetched == [urllib.parse.urlsplit(a.url).path for a in spec.archives[50:]]
    assert server.requests[0] == (part_51, "bytes=40-")
    assert (folder / "revisitop1m.txt").read_text().splitlines() == names
    assert (folder / "jpg" / names[41]).read_bytes() == b"image 42"
    assert sum(1 for p in (folder / "jpg").rglob("*") if p.is_file()) == 100
    assert not list(folder.glob("*.tar.gz*"))


def test_reference_network_goes_to_networks(server, tmp_path):
    network = NETWORKS["rSfM120k-tl-resnet101-gem-w"].files[0]
    checkpoint = io.BytesIO()
    torch.save({"state_dict": {"pool.p": torch.ones(1)}}, checkpoint)
    server.serve(network.url, checkpoint.getvalue())
    path = download("rSfM120k-tl-resnet101-gem-w", root=tmp_path, mirror=server.url, progress=False)
    assert path == tmp_path / "networks" / "rSfM120k-tl-resnet101-gem-w-a155e54.pth"
    assert path.read_bytes() == checkpoint.getvalue()


def _content(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def test_cut_download_resumes_with_a_range_request(server, tmp_path):
    content = _content(300_000)
    server.files["/big.bin"] = content
    server.cut_after["/big.bin"] = 120_000
    dest = tmp_path / "big.bin"
    part = tmp_path / "big.bin.part"

    with pytest.raises(AsymretError, match=r"interrupted after 120000 .*run again to resume"):
        download_file(f"{server.url}/big.bin", dest, progress=False)
    assert part.stat().st_size == 120_000 and not dest.exists()

    download_file(f"{server.url}/big.bin", dest, progress=False)
    assert server.requests[-1] == ("/big.bin", "bytes=120000-")
    assert dest.read_bytes() == content and not part.exists()


def test_cut_archive_resumes_through_download(server, tmp_path):
    images = _serve_roxford5k(server)
    archive_path = urllib.parse.urlsplit(DATASETS["roxford5k"].archives[0].url).path
    server.cut_after[archive_path] = len(server.files[archive_path]) // 2

    with pytest.raises(AsymretError, match="interrupted"):
        download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    assert (tmp_path / "roxford5k" / "oxbuild_images-v1.tgz.part").is_file()

    download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    assert server.requests[-1] == (archive_path, f"bytes={len(server.files[archive_path]) // 2}-")
    assert (tmp_path / "roxford5k" / "jpg" / "bodleian_000000.jpg").read_bytes() == images[
        "bodleian_000000"
    ]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    content = _content(50_000)
    server.files["/f.bin"] = content
    server.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(content[:20_000])

    download_file(f"{server.url}/f.bin", tmp_path / "f.bin", progress=False)

    assert server.requests == [("/f.bin", "bytes=20000-")]
    assert (tmp_path / "f.bin").read_bytes() == content


@pytest.mark.parametrize("stale_tail", [b"", b"garbage after the end"])
def test_range_not_satisfiable(server, tmp_path, stale_tail):
    content = _content(40_000)
    server.files["/f.bin"] = content
    (tmp_path / "f.bin.part").write_bytes(content + stale_tail)

    download_file(f"{server.url}/f.bin", tmp_path / "f.bin", progress=False)

    assert (tmp_path / "f.bin").read_bytes() == content
    assert not (tmp_path / "f.bin.part").exists()
    expected = [("/f.bin", f"bytes={len(content) + len(stale_tail)}-")]
    if stale_tail:  # the partial file cannot be a prefix: fetched again whole
        expected.append(("/f.bin", None))
    assert server.requests == expected


def test_checksum_and_size_are_checked(server, tmp_path):
    content = _content(10_000)
    server.files["/f.bin"] = content
    url = f"{server.url}/f.bin"

    with pytest.raises(AsymretError, match=rf"{re.escape(url)} failed the SHA-256 check"):
        download_file(url, tmp_path / "f.bin", sha256="0" * 64, progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()

    with pytest.raises(AsymretError, match="server offers 10000 bytes, expected 10001"):
        download_file(url, tmp_path / "f.bin", size=10_001, progress=False)
    assert not (tmp_path / "f.bin").exists()

    digest = hashlib.sha256(content).hexdigest()
    download_file(url, tmp_path / "f.bin", size=10_000, sha256=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == content


def test_unreachable_host_and_http_error_are_one_line_errors(server, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    mirror = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(AsymretError) as unreachable:
        download("roxford5k", root=tmp_path, mirror=mirror, progress=False)
    message = str(unreachable.value)
    assert f"{mirror}/revisitop/data/datasets/roxford5k/gnd_roxford5k.pkl" in message
    assert "refused" in message.lower() and "\n" not in message

    with pytest.raises(AsymretError, match=rf"{re.escape(server.url)}/missing.bin: HTTP 404"):
        download_file(f"{server.url}/missing.bin", tmp_path / "missing.bin", progress=False)
    assert not list(tmp_path.glob("missing.bin*"))


def _write_tar(path: Path, members: list[tarfile.TarInfo]) -> None:
    with tarfile.open(path, "w") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)


def _file_member(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = 1
    return member


def _symlink_member(name: str, target: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = tarfile.SYMTYPE
    member.linkname = target
    return member


@pytest.mark.parametrize(
    "bad_member",
    [
        _file_member("../escaped.txt"),
        _file_member("ok/../../escaped.txt"),
        _file_member("/tmp/escaped.txt"),
        _symlink_member("link", "../../escaped.txt"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out"],
)
def test_archive_escaping_the_target_is_refused(tmp_path, bad_member):
    archive = tmp_path / "evil.tar"
    _write_tar(archive, [_file_member("fine.jpg"), bad_member])
    dest = tmp_path / "out" / "jpg"

    with pytest.raises(AsymretError, match="refused an unsafe archive member"):
        extract_archive(archive, dest, progress=False)

    assert not list(tmp_path.rglob("escaped.txt"))
    assert not dest.exists() or not any(dest.iterdir())
    assert not list((tmp_path / "out").glob(".*staging"))


def test_flatten_refuses_two_files_of_the_same_name(tmp_path):
    archive = tmp_path / "dup.tar"
    _write_tar(archive, [_file_member("a/x.jpg"), _file_member("b/x.jpg")])
    with pytest.raises(AsymretError, match=r"more than one file is named 'x\.jpg'"):
        extract_archive(archive, tmp_path / "jpg", flatten=True, progress=False)
    assert extract_archive(archive, tmp_path / "tree", progress=False) == 2
    assert (tmp_path / "tree" / "a" / "x.jpg").is_file()
