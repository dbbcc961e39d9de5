"""The search page (asymret.serve): the same ranking as `asymret search`, bad uploads refused
with a clear message while the server keeps serving, and a real headless browser driving it."""

import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import urllib.request
import zlib
from pathlib import Path

import pytest
from PIL import Image

from asymret.data import load_test_set
from asymret.data.synth import generate_synth, synth_config
from asymret.errors import AsymretError
from asymret.index import (
    TeacherIndex,
    TorchQueryModel,
    build_index,
    collection_images,
    search_index,
)
from asymret.models import create_model, register_offline_weights, save_model
from asymret.serve import (
    Example,
    SearchPage,
    UploadError,
    UploadLimits,
    create_app,
    example_queries,
    make_server,
)
from asymret.teacher_record import write_teacher_record

pytestmark = pytest.mark.usefixtures("one_thread")

IMSIZE = 64
SYNTH = synth_config(
    "small", image_size=IMSIZE, train_landmarks=2, train_images_per_landmark=2,
    val_landmarks=1, val_images_per_landmark=2, test_landmarks=3, queries_per_landmark=2,
    database_images_per_landmark=6, distractor_landmarks=1, images_per_distractor_landmark=3,
    street_images=2, photo_images=1,
)
REQUIRE_BROWSER = os.environ.get("ASYMRET_REQUIRE_BROWSER") == "1"
"""Set by .ci/run: there a missing browser fails the browser test instead of skipping it."""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """The synth test set, an index of its database by an ImageNet Lite0 teacher, and a
    student folder recording that teacher (the teacher's weights: a perfectly compatible
    student)."""
    root = tmp_path_factory.mktemp("serve")
    generate_synth(root / "data", seed=0, config=SYNTH, progress=False)
    register_offline_weights()
    teacher = create_model("tf_efficientnet_lite0-gem", pretrained=True).eval()
    teacher_dir = save_model(teacher, root / "teacher")
    student_dir = save_model(teacher, root / "student")
    write_teacher_record(student_dir, teacher_dir, teacher)
    ids, paths = collection_images(dataset="synth", root=root / "data")
    build_index(root / "index", teacher, ids, paths, teacher_spec=teacher_dir, imsize=IMSIZE,
                progress=False)
    test_set = load_test_set("synth", root / "data")
    return {"root": root, "index": TeacherIndex.open(root / "index"),
            "model": TorchQueryModel.load(student_dir), "test_set": test_set,
            "examples": example_queries(dataset="synth", root=root / "data")}


def positives(test_set, number: int) -> set[str]:
    entry = test_set.gnd[number]
    return {test_set.imlist[i] for i in entry["easy"] + entry["hard"]}


@pytest.fixture(scope="module")
def matched_query(deployment):
    """The first synth query the student's top result matches (easy or hard)."""
    index, test_set = deployment["index"], deployment["test_set"]
    for number, example in enumerate(deployment["examples"]):
        (hits,) = search_index(index, deployment["model"], [example.path], box=example.box)
        if index.ids[hits[0].row] in positives(test_set, number):
            return number
    pytest.fail("no synth query has a correct top result: the teacher retrieves nothing")


@pytest.fixture(scope="module")
def page(deployment):
    return SearchPage(deployment["index"], deployment["model"], k=8,
                      examples=deployment["examples"],
                      limits=UploadLimits(max_bytes=200_000, max_pixels=2_000_000))


@pytest.fixture(scope="module")
def server(page):
    """The page served by waitress on a free port of 127.0.0.1, in a thread."""
    server = make_server(create_app(page), port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(timeout=10)


def test_examples_are_the_test_sets_queries_with_their_boxes(deployment):
    test_set, examples = deployment["test_set"], deployment["examples"]
    assert [e.name for e in examples] == test_set.qimlist
    assert [e.box for e in examples] == [tuple(g["bbx"]) for g in test_set.gnd]
    assert all(e.path.is_file() for e in examples)


def test_upload_and_example_rank_as_search_index(deployment, page):
    index, model = deployment["index"], deployment["model"]
    for number, example in enumerate(deployment["examples"][:3]):
        (expected,) = search_index(index, model, [example.path], 8, box=example.box)
        picked = page.search_example(number)
        uploaded = page.search_upload(example.path.read_bytes(), example.name, box=example.box)
        assert picked.hits == expected and uploaded.hits == expected
        assert [h.path for h in expected] == [index.paths[h.row] for h in expected]
        width, height = picked.size
        assert max(width, height) <= IMSIZE
        assert picked.model_ms > 0 and picked.search_ms > 0
        with Image.open(io.BytesIO(picked.thumbnail)) as thumbnail:
            assert thumbnail.size == (width, height)


def test_a_student_of_another_teacher_is_refused_at_start(deployment, tmp_path):
    other = create_model("tf_efficientnet_lite0-gem", pretrained=False)
    student = save_model(other, tmp_path / "student")
    write_teacher_record(student, tmp_path / "elsewhere", other)
    with pytest.raises(AsymretError, match="trained against another teacher"):
        SearchPage(deployment["index"], TorchQueryModel.load(student))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb's
    header, without the bomb)."""
    out = io.BytesIO()
    Image.new("L", (8, 8)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    start = 8 + 4  # signature, then the IHDR chunk's length
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[start : start + 4 + 13]))
    data[start + 17 : start + 21] = struct.pack(">I", crc)
    return bytes(data)


def noise_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "the file is empty"),
        (b"%PDF-1.4 not a picture at all", 400, r"q\.bin: not an image \(JPEG, PNG"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, 400, r"q\.bin: (not an image|cannot)"),
        (png_claiming(30_000, 30_000), 413, r"q\.bin: .*900000000 pixels.* at most "
         r"2,000,000 pixels"),
        (png_claiming(2_000, 1_001), 413, r"2000×1001 is 2,002,000 pixels, more than the "
         r"2,000,000"),
        (noise_png(300), 413, r"q\.bin: 0\.3 MB is more than the 0\.2 MB"),
        (os.urandom(1_500_000), 413, r"^the upload is more than the 0\.2 MB an upload may be"),
    ],
    ids=["empty", "not-an-image", "truncated-jpeg", "decompression-bomb", "too-many-pixels",
         "too-large", "far-too-large"],
)
def test_bad_uploads_get_a_clear_message_and_the_server_keeps_serving(page, server, data,
                                                                     status, message):
    answer = post(server + "/api/search", {"query": ("q.bin", data)})
    assert answer["status"] == status
    assert re.search(message, answer["json"]["error"]), answer["json"]["error"]
    page_answer = post(server + "/search", {"query": ("q.bin", data)})
    assert page_answer["status"] == status and "id=\"error\"" in page_answer["body"]
    good = post(server + "/api/search", {"example": "0"})
    assert good["status"] == 200 and len(good["json"]["results"]) == 8


def test_bad_fields_are_refused(server):
    assert post(server + "/api/search", {})["json"]["error"].startswith("choose an image")
    assert post(server + "/api/search", {"example": "99"})["status"] == 404
    answer = post(server + "/api/search", {"example": "0", "k": "0"})
    assert answer["status"] == 400 and "k must be between 1 and 100" in answer["json"]["error"]
    answer = post(server + "/api/search", {"example": "0", "box": "5,5,1,1"})
    assert answer["status"] == 400 and "x1 < x2" in answer["json"]["error"]
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server + "/images/100000")
    assert error.value.code == 404


def test_json_api_answers_the_ranking_with_image_links(deployment, server):
    example = deployment["examples"][1]
    answer = post(server + "/api/search", {"query": ("q.jpg", example.path.read_bytes()),
                                           "box": ",".join(map(str, example.box)), "k": "5"})
    (expected,) = search_index(deployment["index"], deployment["model"], [example.path], 5,
                               box=example.box)
    results = answer["json"]["results"]
    assert [(r["path"], r["rank"]) for r in results] == [(h.path, i + 1)
                                                         for i, h in enumerate(expected)]
    assert [r["score"] for r in results] == pytest.approx([h.score for h in expected], abs=1e-6)
    with urllib.request.urlopen(server + results[0]["image"]) as response:
        assert response.headers["Content-Type"] == "image/jpeg"
        with Image.open(io.BytesIO(response.read())) as thumbnail:
            assert max(thumbnail.size) <= 256


def test_the_serve_command_prints_its_address_and_serves_until_stopped(deployment):
    root = deployment["root"]
    command = [sys.executable, "-m", "asymret", "serve", "--index", root / "index", "--model",
               root / "student", "--port", "0", "--dataset", "synth", "--root", root / "data",
               "-k", "3"]
    server = subprocess.Popen([str(a) for a in command], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"searching .*index \(29 images\) with .*student at "
                          r"(http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)", line)
        assert match, line + server.stderr.read()
        with urllib.request.urlopen(match[1]) as response:
            assert "or pick one" in response.read().decode()
        answer = post(match[1] + "api/search", {"example": "2"})
        assert answer["status"] == 200 and len(answer["json"]["results"]) == 3
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0


def post(url: str, fields: dict) -> dict:
    """POST ``fields`` as multipart/form-data (a tuple value is a file: name, bytes)."""
    boundary = "asymret-test-boundary"
    body = io.BytesIO()
    for name, value in fields.items():
        body.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, data = value
            body.write(f'Content-Disposition: form-data; name="{name}"; '
                       f'filename="{filename}"\r\nContent-Type: application/octet-stream'
                       "\r\n\r\n".encode())
            body.write(data)
        else:
            body.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode())
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(url, data=body.getvalue(), method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    answer = {"status": status, "body": text}
    if url.endswith("/api/search"):
        answer["json"] = json.loads(text)
    return answer


# --- A real browser --------------------------------------------------------------------------


def browser():
    """Headless Debian chromium through chromedriver and Selenium, or a skip (a failure
    under .ci/run) naming what is missing."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"needs {' and '.join(missing)} (Debian: apt install chromium chromium-driver)"
        if REQUIRE_BROWSER:
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-extensions", "--no-first-run", "--window-size=1200,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_a_headless_browser_uploads_a_query_and_sees_the_right_grid(deployment, server,
                                                                    matched_query, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    example: Example = deployment["examples"][matched_query]
    index = deployment["index"]
    (expected,) = search_index(index, deployment["model"], [example.path], 8, box=example.box)
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("a shopping list, not a photo")
    driver = browser()
    try:
        driver.get(server + "/")
        wait = WebDriverWait(driver, 60)

        driver.find_element(By.ID, "query-file").send_keys(str(not_an_image))
        driver.find_element(By.ID, "search-button").click()
        error = wait.until(expected_conditions.presence_of_element_located((By.ID, "error")))
        assert "notes.jpg: not an image" in error.text

        driver.find_element(By.ID, "query-file").send_keys(str(example.path))
        driver.find_element(By.ID, "query-box").send_keys(",".join(map(str, example.box)))
        driver.find_element(By.ID, "search-button").click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "results")))
        hits = driver.find_elements(By.CSS_SELECTOR, "#results figure.hit")
        shown = [(h.get_attribute("data-path"), float(h.get_attribute("data-score")))
                 for h in hits]
        assert [path for path, _ in shown] == [h.path for h in expected]
        assert [score for _, score in shown] == pytest.approx([h.score for h in expected],
                                                              abs=1e-5)
        top = Path(shown[0][0]).stem
        assert top in positives(deployment["test_set"], matched_query), "a correct match"
        assert "query model" in driver.find_element(By.ID, "timing").text
        wait.until(lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete)"))
        sizes = driver.execute_script(
            "return [...document.images].map(i => [i.currentSrc, i.naturalWidth])")
        assert len(sizes) == 1 + len(deployment["examples"]) + len(expected)
        assert all(width > 0 for _, width in sizes), sizes

        driver.find_element(By.CSS_SELECTOR, "#examples button[value='0']").click()
        wait.until(expected_conditions.text_to_be_present_in_element(
            (By.ID, "query-name"), deployment["examples"][0].name))
        assert driver.find_elements(By.CSS_SELECTOR, "#results figure.hit")
    finally:
        driver.quit()


def test_an_upload_the_server_cannot_store_is_refused_clearly(deployment, page, monkeypatch):
    import errno

    import asymret.serve

    example = deployment["examples"][0]

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(asymret.serve.tempfile, "mkstemp", full_disk)
    with pytest.raises(UploadError, match=r"query_000\.jpg: the server cannot store it \(No "
                                          r"space left on device\)") as caught:
        page.search_upload(example.path.read_bytes(), "query_000.jpg")
    assert caught.value.status == 507
    monkeypatch.undo()
    assert page.search_upload(example.path.read_bytes(), "query_000.jpg").hits


@pytest.mark.parametrize("command", ["search", "serve"])
def test_an_unknown_device_is_one_line_before_the_model_loads(deployment, command, capsys):
    from asymret.cli import main

    root = deployment["root"]
    argv = [command, "--index", str(root / "index"), "--model", str(root / "student"),
            "--device", "tpu"] + ([str(deployment["examples"][0].path)]
                                  if command == "search" else ["--port", "0"])
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--device tpu: unknown device 'tpu'; use cpu, cuda, cuda:<index> or mps")
