"""Garbage downloads, from a loopback HTTP server (no internet): refused, never kept.

Files of known size and SHA-256 are checked against them; every file is checked to be what
it should be (a pickle of plain data, a revisited ground truth, a tar archive, a torch
checkpoint, UTF-8 text); an HTML page is never a file; and nothing that failed is kept or
counted as done, so the next run fetches it again.
"""

import dataclasses
import io
import re
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from asymret.data.download import DATASETS, DOWNLOADS, FORMATS, NETWORKS, download, download_file
from asymret.data.revisitop import write_gnd
from asymret.data.sfm120k import write_training_db
from asymret.errors import AsymretError
from download_fixtures import jpeg_bytes, tar_gz

HTML_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Service unavailable</h1></body></html>\n"


class Server:
    """Serves ``files`` (URL path → (bytes, Content-Type)) with status 200; records paths."""

    def __init__(self):
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                server.requests.append(path)
                body, content_type = server.files.get(path, (None, ""))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, official_url: str, body: bytes,
              content_type: str = "application/octet-stream") -> None:
        self.files[urllib.parse.urlsplit(official_url).path] = (body, content_type)

    def address(self, official_url: str) -> str:
        return self.url + urllib.parse.urlsplit(official_url).path


@pytest.fixture
def server():
    served = Server()
    thread = threading.Thread(target=served.httpd.serve_forever,
                              kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.httpd.shutdown()
        served.httpd.server_close()
        thread.join(timeout=5)


def _file_bytes(write, *arguments) -> bytes:
    """The bytes that ``write(path, *arguments)`` writes."""
    with tempfile.TemporaryDirectory() as folder:
        return write(Path(folder) / "f.pkl", *arguments).read_bytes()


def _training_db() -> bytes:
    split = {"cids": ["a" * 32], "cluster": [0], "qidxs": [], "pidxs": []}
    return _file_bytes(write_training_db, split, split)


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


SFM_DB = DATASETS["sfm120k"].files[0]


# --- HTML pages ------------------------------------------------------------------------


def test_an_html_error_page_sent_with_status_200_is_refused_before_writing(server, tmp_path):
    server.serve(SFM_DB.url, HTML_PAGE, "text/html; charset=utf-8")
    with pytest.raises(AsymretError) as caught:
        download_file(server.address(SFM_DB.url), tmp_path / "db.pkl", progress=False,
                      kind="pickle")
    assert str(caught.value) == (
        f"cannot download {server.address(SFM_DB.url)}: the server sent an HTML page (status "
        "200, Content-Type text/html; charset=utf-8) instead of the file; check the address "
        "or mirror"
    )
    assert _leftovers(tmp_path) == []


def test_an_html_page_with_a_binary_content_type_is_refused_and_deleted(server, tmp_path):
    server.serve(SFM_DB.url, b"\n  " + HTML_PAGE.upper())
    with pytest.raises(AsymretError, match=r"is not the file but an HTML page; deleted it"):
        download_file(server.address(SFM_DB.url), tmp_path / "f.bin", progress=False)
    assert _leftovers(tmp_path) == []


# --- Known sizes and SHA-256 -----------------------------------------------------------


def test_the_ground_truth_files_have_known_sizes_and_sums():
    for name in ("roxford5k", "rparis6k"):
        [remote] = DATASETS[name].files
        assert remote.kind == "gnd" and remote.size > 100_000
        assert re.fullmatch(r"[0-9a-f]{64}", remote.sha256)


def test_a_ground_truth_of_the_wrong_size_or_sum_is_refused(server, tmp_path):
    [remote] = DATASETS["roxford5k"].files
    fake = _file_bytes(write_gnd, ["a"], ["b"], [{"easy": [0], "hard": [], "junk": []}])
    server.serve(remote.url, fake)
    with pytest.raises(AsymretError, match=rf"server offers {len(fake)} bytes, expected "
                       rf"{remote.size}"):
        download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    same_size = fake + b"\0" * (remote.size - len(fake))
    server.serve(remote.url, same_size)
    with pytest.raises(AsymretError, match=r"failed the SHA-256 check"):
        download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    assert _leftovers(tmp_path) == []


# --- Content of the wrong kind ---------------------------------------------------------


@pytest.mark.parametrize("body, problem", [
    (b"\x00garbage bytes" * 50, r"is not a pickle of plain data \(.*not a readable pickle"),
    (b"cos\nsystem\n(S'touch pwned'\ntR.", r"is not a pickle of plain data \(.*refused to "
     r"unpickle 'os.system'"),
])
def test_a_pickle_that_does_not_load_is_refused_and_fetched_again(server, tmp_path, body,
                                                                  problem, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server.serve(SFM_DB.url, body)
    with pytest.raises(AsymretError, match=problem):
        download_file(server.address(SFM_DB.url), tmp_path / "db.pkl", progress=False,
                      kind="pickle")
    assert _leftovers(tmp_path) == [], "no payload ran ('pwned' absent), nothing kept"
    server.serve(SFM_DB.url, _training_db())
    path = download_file(server.address(SFM_DB.url), tmp_path / "db.pkl", progress=False,
                         kind="pickle")
    assert path.read_bytes() == _training_db()


def test_a_pickle_that_is_not_a_ground_truth_is_refused(server, tmp_path):
    url = DATASETS["roxford5k"].files[0].url
    server.serve(url, _training_db())
    with pytest.raises(AsymretError, match=r"is not a revisited ground-truth pickle \(.*missing "
                       r"key 'imlist'"):
        download_file(server.address(url), tmp_path / "gnd.pkl", progress=False, kind="gnd")
    assert _leftovers(tmp_path) == []


def test_a_network_that_is_not_a_torch_checkpoint_is_refused(server, tmp_path):
    remote = NETWORKS["retrievalSfM120k-resnet101-gem"].files[0]
    server.serve(remote.url, b"not a checkpoint" * 10)
    with pytest.raises(AsymretError, match=r"is not a torch checkpoint \(neither a zip archive"):
        download("retrievalSfM120k-resnet101-gem", root=tmp_path, mirror=server.url,
                 progress=False)
    assert _leftovers(tmp_path) == []
    for legacy in (False, True):
        buffer = io.BytesIO()
        torch.save({"state_dict": {}}, buffer, _use_new_zipfile_serialization=not legacy)
        assert FORMATS["torch"](_written(tmp_path / f"c{legacy}.pth", buffer.getvalue())) is None


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_distractor_list_that_is_not_utf8_text_is_refused(server, tmp_path):
    remote = DATASETS["revisitop1m"].files[0]
    server.serve(remote.url, "caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(AsymretError, match=r"is not UTF-8 text"):
        download_file(server.address(remote.url), tmp_path / "list.txt", progress=False,
                      kind="text")
    assert _leftovers(tmp_path) == []


def test_garbage_kept_by_an_older_version_is_fetched_again(server, tmp_path):
    (tmp_path / "db.pkl").write_bytes(HTML_PAGE)
    server.serve(SFM_DB.url, _training_db())
    download_file(server.address(SFM_DB.url), tmp_path / "db.pkl", progress=False, kind="pickle")
    assert (tmp_path / "db.pkl").read_bytes() == _training_db()
    assert len(server.requests) == 1
    download_file(server.address(SFM_DB.url), tmp_path / "db.pkl", progress=False, kind="pickle")
    assert len(server.requests) == 1, "a good file is done: no second request"


# --- Archives --------------------------------------------------------------------------


def _serve_oxford(server: Server, archive: bytes) -> None:
    spec = DATASETS["roxford5k"]
    gnd = _file_bytes(write_gnd, ["all_souls_000000"], ["all_souls_000001"],
                      [{"bbx": [0.0, 0.0, 4.0, 3.0], "easy": [0], "hard": [], "junk": []}])
    server.serve(spec.files[0].url, gnd)
    server.serve(spec.archives[0].url, archive)


@pytest.fixture
def unknown_oxford_sums(monkeypatch):
    """The test's own ground truth stands in for the official one (other size and sum)."""
    spec = DOWNLOADS["roxford5k"]
    files = tuple(dataclasses.replace(f, sha256=None, size=None) for f in spec.files)
    monkeypatch.setitem(DOWNLOADS, "roxford5k", dataclasses.replace(spec, files=files))


@pytest.mark.usefixtures("unknown_oxford_sums")
def test_a_garbage_archive_is_refused_and_not_marked_done(server, tmp_path):
    _serve_oxford(server, b"\x1f\x8b garbage that is not a tar" * 20)
    with pytest.raises(AsymretError, match=r"oxbuild_images-v1\.tgz is not a tar archive"):
        download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    folder = tmp_path / "roxford5k"
    assert _leftovers(folder) == ["gnd_roxford5k.pkl"]
    images = {"all_souls_000000.jpg": jpeg_bytes(), "all_souls_000001.jpg": jpeg_bytes()}
    _serve_oxford(server, tar_gz(images))
    download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    assert sorted(p.name for p in (folder / "jpg").iterdir()) == sorted(images)


@pytest.mark.usefixtures("unknown_oxford_sums")
def test_an_archive_without_the_listed_images_is_fetched_again_next_time(server, tmp_path):
    archive_url = DATASETS["roxford5k"].archives[0].url
    _serve_oxford(server, tar_gz({"other.jpg": jpeg_bytes()}))
    for _ in range(2):
        with pytest.raises(AsymretError, match=r"2 listed images are missing after the "
                           r"download .*fetched again next time"):
            download("roxford5k", root=tmp_path, mirror=server.url, progress=False)
    archive_path = urllib.parse.urlsplit(archive_url).path
    assert server.requests.count(archive_path) == 2, "the failed archive was not counted done"
    assert not (tmp_path / "roxford5k" / ".extracted" / "oxbuild_images-v1.tgz").exists()


def test_every_known_file_has_a_format_check():
    kinds = {remote.kind for spec in (*DATASETS.values(), *NETWORKS.values())
             for remote in (*spec.files, *spec.archives)}
    assert kinds == set(FORMATS) == {"gnd", "pickle", "tar", "torch", "text"}
