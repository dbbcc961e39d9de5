"""The demo's report: numbers in CSV and Markdown, interpolated PR curves, a self-contained page."""

import base64
import csv
import io
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asymret.evaluate import precision_recall_points
from asymret.report import (
    RECALL_LEVELS,
    QueryRanking,
    RankedImage,
    RunResult,
    _mean_interpolated_precision,
    write_report,
)

TITLE = "Synth demo: Contr⁺ beats its teacher"
NOTES = ["Teacher: ResNet-GeM & friends <d=64>", "Students trained 3 epochs"]
VERDICT_CYCLE = ("positive", "negative", "junk", "positive", "negative")


def two_point_curve(first_precision: float) -> tuple[np.ndarray, np.ndarray]:
    """Two positives, found at recall 0.5 and 1 with the given precision, then 0.5."""
    return np.array([0.5, 1.0]), np.array([first_precision, 0.5])


def make_results() -> list[RunResult]:
    """A teacher, a student alone and two asymmetric students; Contr⁺ has the best asym M."""
    return [
        RunResult(
            label="Teacher",
            role="teacher",
            loss="",
            projection_start="",
            symmetric_map={"easy": 84.8125, "medium": 64.671, "hard": 38.4701},
            asymmetric_map=None,
            pr_curves={"symmetric": [two_point_curve(1.0), two_point_curve(0.8)]},
            train_seconds=0.0,
        ),
        RunResult(
            label="Student alone",
            role="student-alone",
            loss="contrastive",
            projection_start="random",
            symmetric_map={"easy": 80.04, "medium": 59.6349, "hard": 33.25},
            asymmetric_map={"easy": 1.2345, "medium": 0.98, "hard": 0.4},
            pr_curves={"symmetric": [two_point_curve(0.9)], "asymmetric": [two_point_curve(0.1)]},
            train_seconds=12.3456789,
        ),
        RunResult(
            label="Contr⁺",
            role="asymmetric",
            loss="contrastive",
            projection_start="ridge",
            symmetric_map={"easy": 81.0, "medium": 60.25, "hard": 34.75},
            asymmetric_map={"easy": 86.0, "medium": 66.8333333, "hard": 42.5},
            pr_curves={"symmetric": [two_point_curve(0.9)], "asymmetric": [two_point_curve(1.0)]},
            train_seconds=30.5,
        ),
        RunResult(
            label="RKD <relational> & co",
            role="asymmetric",
            loss="rkd",
            projection_start="random",
            symmetric_map={"easy": 79.5, "medium": 58.05, "hard": 30.0},
            asymmetric_map={"easy": 70.0, "medium": 56.3, "hard": 30.5},
            pr_curves={"symmetric": [two_point_curve(0.7)], "asymmetric": [two_point_curve(0.6)]},
            train_seconds=28.0,
        ),
    ]


def make_images(folder: Path, count: int) -> list[Path]:
    """Small images of different sizes, colours and formats (the first one is the query)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        width, height = (300, 200) if index % 2 else (90, 160)
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        path = folder / f"image_{index:02d}.{'png' if index % 3 == 0 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def make_rankings(paths: list[Path]) -> list[QueryRanking]:
    """Two queries, each with a teacher and a student top-10 over ``paths``."""

    def top10(shift: int) -> list[RankedImage]:
        return [
            RankedImage(path=paths[(shift + rank) % len(paths)], verdict=VERDICT_CYCLE[rank % 5])
            for rank in range(10)
        ]

    return [
        QueryRanking(
            query_path=paths[0],
            query_bbox=(10.0, 20.0, 80.0, 150.0),
            teacher_top=top10(1),
            student_top=top10(2),
            student_label="Contr⁺ (ridge start)",
        ),
        QueryRanking(
            query_path=paths[1],
            query_bbox=None,
            teacher_top=top10(3),
            student_top=top10(4),
            student_label="RKD (random start)",
        ),
    ]


class ElementCollector(HTMLParser):
    """Every start tag as ``(tag, attributes, ids of the open ancestors)``."""

    VOID_TAGS = frozenset({"img", "meta", "br", "hr", "input", "link", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = []
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self._record(tag, attrs)
        if tag not in self.VOID_TAGS:
            self._open.append((tag, dict(attrs).get("id")))

    def handle_startendtag(self, tag, attrs):
        self._record(tag, attrs)

    def _record(self, tag, attrs):
        ancestor_ids = tuple(element_id for _, element_id in self._open if element_id)
        self.elements.append((tag, dict(attrs), ancestor_ids))

    def handle_endtag(self, tag):
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth][0] == tag:
                del self._open[depth:]
                return


def parse_elements(html: str) -> list[tuple[str, dict[str, str | None], tuple[str, ...]]]:
    collector = ElementCollector()
    collector.feed(html)
    collector.close()
    return collector.elements


def decode_data_uri(uri: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix), uri[:40]
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :], validate=True)))
    image.load()
    return image


@pytest.fixture
def report(tmp_path):
    """A report of :func:`make_results` and :func:`make_rankings` with 12 readable images."""
    results = make_results()
    rankings = make_rankings(make_images(tmp_path / "images", 12))
    paths = write_report(tmp_path / "run", results, rankings, title=TITLE, notes=NOTES)
    return paths, results, rankings


def test_write_report_returns_the_three_files_and_leaves_no_temporary(report, tmp_path):
    paths, results, rankings = report
    assert set(paths) == {"html", "md", "csv"}
    assert {path.name for path in (tmp_path / "run").iterdir()} == {
        "report.html",
        "report.md",
        "results.csv",
    }
    # Writing again over the same folder replaces the files and still leaves nothing else.
    write_report(tmp_path / "run", results[:1], rankings, title="again")
    assert len(list((tmp_path / "run").iterdir())) == 3
    assert "<h1>again</h1>" in paths["html"].read_text(encoding="utf-8")


def test_csv_round_trips_every_number(report):
    paths, results, _ = report
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(results)
    for row, result in zip(rows, results, strict=True):
        assert row["label"] == result.label
        assert row["role"] == result.role
        assert row["loss"] == result.loss
        assert row["projection_start"] == result.projection_start
        assert float(row["train_seconds"]) == result.train_seconds
        for protocol in ("easy", "medium", "hard"):
            assert float(row[f"sym_{protocol}"]) == result.symmetric_map[protocol]
            if result.asymmetric_map is None:
                assert row[f"asym_{protocol}"] == ""
            else:
                assert float(row[f"asym_{protocol}"]) == result.asymmetric_map[protocol]


def test_markdown_table_has_every_run_with_one_decimal_values(report):
    paths, results, _ = report
    text = paths["md"].read_text(encoding="utf-8")
    assert text.startswith(f"# {TITLE}\n")
    for note in NOTES:
        assert f"- {note}\n" in text
    table_rows = {
        cells[0]: cells[1:]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| Run")
        for cells in [[cell.strip() for cell in line.strip("| ").split(" | ")]]
    }
    assert set(table_rows) == {result.label for result in results}
    assert table_rows["Teacher"] == ["—", "84.8", "64.7", "38.5", "—", "—", "—"]
    assert table_rows["Student alone"] == ["random", "80.0", "59.6", "33.2", "1.2", "1.0", "0.4"]
    # The best asymmetric Medium (Contr⁺, 66.8) is in bold, and only that one.
    assert table_rows["Contr⁺"] == ["ridge", "81.0", "60.2", "34.8", "86.0", "**66.8**", "42.5"]
    assert text.count("**") == 2


def test_mean_interpolated_precision_hand_worked():
    # Positives at ranks 1 and 3 of 2 positives: precision 1 at recall 0.5, 2/3 at recall 1.
    one_query = [(np.array([0.5, 1.0]), np.array([1.0, 2 / 3]))]
    precision = _mean_interpolated_precision(one_query)
    assert precision.shape == (101,)
    np.testing.assert_allclose(precision[RECALL_LEVELS <= 0.5], 1.0)
    np.testing.assert_allclose(precision[RECALL_LEVELS > 0.5], 2 / 3)
    assert np.count_nonzero(RECALL_LEVELS <= 0.5) == 51  # 0, 0.01, ..., 0.5 inclusive

    # A second query found only one of its 2 positives, at rank 2: 0.5 up to recall 0.5, then
    # 0 (no point with higher recall). A query without positives is left out of the mean.
    two_queries = [*one_query, (np.array([0.5]), np.array([0.5])), (np.empty(0), np.empty(0))]
    mean = _mean_interpolated_precision(two_queries)
    np.testing.assert_allclose(mean[RECALL_LEVELS <= 0.5], 0.75)
    np.testing.assert_allclose(mean[RECALL_LEVELS > 0.5], 1 / 3)

    # Interpolation takes the best precision at any higher recall, not the next point's.
    rising = [(np.array([0.25, 0.5, 0.75, 1.0]), np.array([0.5, 0.4, 0.6, 0.5]))]
    expected = np.select([RECALL_LEVELS <= 0.75, RECALL_LEVELS <= 1.0], [0.6, 0.5])
    np.testing.assert_allclose(_mean_interpolated_precision(rising), expected)

    assert _mean_interpolated_precision([(np.empty(0), np.empty(0))]) is None
    assert _mean_interpolated_precision([]) is None


def test_mean_interpolated_precision_of_the_evaluation_points():
    # Four database vectors ranked 0, 1, 2, 3 for the query; positives 0 and 2 → ranks 1 and 3.
    angles = np.array([0.1, 0.2, 0.3, 0.4])
    database = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    queries = np.array([[1.0, 0.0]], dtype=np.float32)
    curves = precision_recall_points(queries, database, [{"ok": [0, 2], "junk": []}])
    precision = _mean_interpolated_precision(curves)
    np.testing.assert_allclose(precision[:51], 1.0)
    np.testing.assert_allclose(precision[51:], 2 / 3)


def test_html_is_self_contained_and_every_image_is_an_inlined_jpeg(report):
    paths, _, rankings = report
    html = paths["html"].read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    elements = parse_elements(html)
    assert not [tag for tag, _, _ in elements if tag in {"link", "iframe", "object", "embed"}]
    for tag, attributes, _ in elements:
        for name in ("src", "href", "xlink:href"):
            if name in attributes:
                assert attributes[name].startswith("data:"), (tag, name, attributes[name][:60])
        assert tag != "script" or "src" not in attributes

    images = [attributes for tag, attributes, _ in elements if tag == "img"]
    per_query = 1 + len(rankings[0].teacher_top) + len(rankings[0].student_top)
    assert len(images) == len(rankings) * per_query
    for attributes in images:
        thumbnail = decode_data_uri(attributes["src"])
        assert thumbnail.format == "JPEG"
        assert max(thumbnail.size) <= 112
        assert attributes["alt"] and not attributes["alt"].startswith("missing")
    # A 300×200 image becomes 112×75 (longer side 112, aspect kept).
    assert decode_data_uri(images[1]["src"]).size == (112, 75)

    figure_classes = Counter(
        attributes["class"] for tag, attributes, _ in elements if tag == "figure"
    )
    expected = Counter(
        f"thumb verdict-{ranked.verdict}"
        for ranking in rankings
        for ranked in ranking.teacher_top + ranking.student_top
    )
    expected["thumb query-thumb"] = len(rankings)
    assert figure_classes == expected


def test_html_table_charts_and_escaping(report):
    paths, results, _ = report
    html = paths["html"].read_text(encoding="utf-8")
    elements = parse_elements(html)
    rows = [a for tag, a, ids in elements if tag == "tr" and "results" in ids]
    assert len(rows) == 2 + len(results)  # two header rows
    best_cells = [a for tag, a, ids in elements if tag == "td" and "best" in (a.get("class") or "")]
    assert len(best_cells) == 1
    assert re.search(r'<td class="number best">66\.8</td>', html)

    ids = {a["id"] for _, a, _ in elements if "id" in a}
    assert {"results", "map-chart", "pr-curves", "picture-grid"} <= ids
    bars = Counter(
        a["class"]
        for tag, a, ids in elements
        if tag == "rect" and "map-chart" in ids and "class" in a
    )
    # Every run has a symmetric Medium bar; all but the teacher an asymmetric one.
    assert bars == {"bar-symmetric": len(results), "bar-asymmetric": len(results) - 1}
    lines = Counter(ids[-1] for tag, _, ids in elements if tag == "polyline")
    # One line per run and setting; the teacher has no asymmetric curve.
    assert lines == {"pr-symmetric": len(results), "pr-asymmetric": len(results) - 1}
    symmetric_runs = [
        a["data-run"] for tag, a, ids in elements if tag == "polyline" and ids[-1] == "pr-symmetric"
    ]
    assert symmetric_runs == [result.label for result in results]

    # Text from the caller is escaped, never markup.
    assert "RKD &lt;relational&gt; &amp; co" in html
    assert "<relational>" not in html and "<d=64>" not in html
    assert "ResNet-GeM &amp; friends &lt;d=64&gt;" in html


def test_pr_polyline_follows_the_mean_interpolated_curve(tmp_path):
    result = make_results()[2]
    result.pr_curves = {"symmetric": [(np.array([0.5, 1.0]), np.array([1.0, 2 / 3]))]}
    paths = write_report(tmp_path, [result], [], title="one run")
    elements = parse_elements(paths["html"].read_text(encoding="utf-8"))
    (points,) = [a["points"] for tag, a, _ in elements if tag == "polyline"]
    ys = [float(pair.split(",")[1]) for pair in points.split()]
    assert len(ys) == 101
    assert len(set(ys[:51])) == 1 and len(set(ys[51:])) == 1
    top, bottom = ys[0], ys[-1]
    assert bottom > top  # lower precision is drawn lower (larger y)
    # The panel spans precision 0..1; the two levels sit at 1 and 2/3 of it.
    (panel,) = [a for tag, a, ids in elements if tag == "rect" and ids[-1:] == ("pr-symmetric",)]
    panel_top, panel_height = float(panel["y"]), float(panel["height"])
    assert top == pytest.approx(panel_top, abs=0.1)
    assert bottom == pytest.approx(panel_top + panel_height / 3, abs=0.1)


def test_query_thumbnail_is_cropped_to_its_box(tmp_path):
    query = tmp_path / "query.png"
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:] = (0, 0, 255)
    Image.fromarray(pixels).save(query)
    ranking = QueryRanking(
        query_path=query,
        query_bbox=(110.0, 10.0, 190.0, 90.0),
        teacher_top=[RankedImage(query, "positive")],
        student_top=[RankedImage(query, "negative")],
        student_label="student",
    )
    paths = write_report(tmp_path / "run", make_results(), [ranking], title="crop")
    elements = parse_elements(paths["html"].read_text(encoding="utf-8"))
    query_src, whole_src, _ = [a["src"] for tag, a, _ in elements if tag == "img"]
    cropped = np.asarray(decode_data_uri(query_src).convert("RGB"), dtype=np.int64)
    assert cropped.shape[:2] == (80, 80)  # an 80×80 box, smaller than 112: not enlarged
    assert (cropped[..., 2] > 200).all() and (cropped[..., 0] < 60).all()  # only blue
    whole = np.asarray(decode_data_uri(whole_src).convert("RGB"), dtype=np.int64)
    assert whole.shape[:2] == (56, 112)
    assert whole[:, :40, 0].mean() > 200 and whole[:, -40:, 2].mean() > 200


def test_missing_and_corrupt_images_become_grey_placeholders(tmp_path):
    paths_on_disk = make_images(tmp_path / "images", 12)
    missing = tmp_path / "images" / "gone.jpg"
    corrupt = tmp_path / "images" / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg at all")
    rankings = make_rankings(paths_on_disk)
    rankings[0].query_path = missing
    rankings[1].student_top[3] = RankedImage(corrupt, "junk")

    paths = write_report(tmp_path / "run", make_results(), rankings, title="missing")
    elements = parse_elements(paths["html"].read_text(encoding="utf-8"))
    images = [a for tag, a, _ in elements if tag == "img"]
    placeholders = [a for a in images if a["alt"].startswith("missing image: ")]
    assert [a["alt"] for a in placeholders] == [
        f"missing image: {missing}",
        f"missing image: {corrupt}",
    ]
    for attributes in placeholders:
        grey = np.asarray(decode_data_uri(attributes["src"]).convert("RGB"), dtype=np.int64)
        assert grey.shape[:2] == (112, 112)
        assert np.abs(grey - 204).max() <= 3
    assert len(images) == 2 * 21
    assert paths["md"].exists() and paths["csv"].exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(
            lambda results, rankings: setattr(results[1], "role", "pupil"),
            r"results\[1\]\.role: unknown role 'pupil'",
            id="role",
        ),
        pytest.param(
            lambda results, rankings: setattr(rankings[0].student_top[2], "verdict", "maybe"),
            r"rankings\[0\]\.student_top\[2\]\.verdict: unknown verdict 'maybe'",
            id="verdict",
        ),
        pytest.param(
            lambda results, rankings: results[2].symmetric_map.pop("hard"),
            r"results\[2\]\.symmetric_map: expected a dict with exactly the keys",
            id="map-keys",
        ),
        pytest.param(
            lambda results, rankings: results[3].asymmetric_map.update(medium="66.8"),
            r"results\[3\]\.asymmetric_map\['medium'\]: expected a number",
            id="map-value",
        ),
        pytest.param(
            lambda results, rankings: results[0].pr_curves.update(cross=[]),
            r"results\[0\]\.pr_curves: unknown setting 'cross'",
            id="pr-setting",
        ),
        pytest.param(
            lambda results, rankings: (
                results[0].pr_curves["symmetric"].append((np.zeros(3), np.zeros(2)))
            ),
            r"results\[0\]\.pr_curves\['symmetric'\]\[2\]: recall and precision must be 1-D",
            id="pr-shapes",
        ),
        pytest.param(
            lambda results, rankings: (
                results[1]
                .pr_curves["asymmetric"]
                .append((np.array([1.0, 0.5]), np.array([0.5, 1.0])))
            ),
            r"results\[1\]\.pr_curves\['asymmetric'\]\[1\]: recall must not decrease",
            id="pr-order",
        ),
        pytest.param(
            lambda results, rankings: setattr(rankings[1], "query_bbox", (50.0, 0.0, 40.0, 9.0)),
            r"rankings\[1\]\.query_bbox: empty box",
            id="empty-bbox",
        ),
        pytest.param(
            lambda results, rankings: results.clear(),
            r"^results: at least one",
            id="no-results",
        ),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_field(tmp_path, change, field):
    results = make_results()
    rankings = make_rankings(make_images(tmp_path / "images", 3))
    change(results, rankings)
    with pytest.raises(ValueError, match=field):
        write_report(tmp_path / "run", results, rankings, title="bad")
    assert not (tmp_path / "run").exists()


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(find_chromium() is None, reason="needs chromium (Debian package chromium)")
def test_chromium_renders_the_report_and_decodes_every_image(report, tmp_path):
    paths, results, rankings = report
    completed = subprocess.run(
        [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-extensions",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            paths["html"].resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    elements = parse_elements(completed.stdout)
    rows = [a for tag, a, ids in elements if tag == "tr" and "results" in ids]
    assert len(rows) == 2 + len(results)  # two header rows, then one row per run
    ids = {a["id"] for _, a, _ in elements if "id" in a}
    assert {"results", "map-chart", "pr-curves", "picture-grid"} <= ids
    (body,) = [a for tag, a, _ in elements if tag == "body"]
    total = 1 + len(rankings[0].teacher_top) + len(rankings[0].student_top)
    assert body.get("data-images-total") == str(len(rankings) * total)
    assert body.get("data-images-loaded") == body.get("data-images-total")
