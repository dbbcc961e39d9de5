"""The demo's report: numbers in CSV and Markdown, interpolated PR curves, a self-contained page."""

import base64
import csv
import io
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asymret.evaluate import precision_recall_points
from asymret.findings import Check, Finding, demo_findings
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
STUDENT_SIZE = {"params": 3_371_616, "gflops": 0.3924, "imsize": 160}


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
            recipe="teacher",
            params=6_093_920,
            gflops=1.6378,
            imsize=256,
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
            recipe="sym-student-alone",
            **STUDENT_SIZE,
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
            recipe="asym-contrastive-plus",
            **STUDENT_SIZE,
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
            recipe="rkd",
            **STUDENT_SIZE,
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
    table_rows = markdown_table(text, "Run")
    assert set(table_rows) == {result.label for result in results}
    assert table_rows["Teacher"] == ["—", "84.8", "64.7", "38.5", "—", "—", "—", "—"]
    # Asym M / teacher: 0.98 / 64.671 and 66.8333333 / 64.671.
    assert table_rows["Student alone"] == [
        "random", "80.0", "59.6", "33.2", "1.2", "1.0", "0.4", "0.02"]
    # The best asymmetric Medium (Contr⁺, 66.8) is in bold, and only that one.
    assert table_rows["Contr⁺"] == [
        "ridge", "81.0", "60.2", "34.8", "86.0", "**66.8**", "42.5", "1.03"]
    assert text.count("**") == 2
    assert "## Findings" not in text  # none given, no box


def markdown_table(text: str, first_header: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header starts with ``first_header``: first cell →
    the others."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        cells = [cell.strip() for cell in line.strip("| ").split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


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
        pytest.param(
            lambda results, rankings: setattr(results[2], "recipe", "contrastive"),
            r"results\[2\]\.recipe: unknown recipe 'contrastive'",
            id="recipe",
        ),
        pytest.param(
            lambda results, rankings: setattr(results[3], "recipe", "sym-student-alone"),
            r"results\[3\]\.recipe: 'sym-student-alone' is a recipe of the role 'student-alone', "
            r"but the row's role is 'asymmetric'",
            id="recipe-role",
        ),
        pytest.param(
            lambda results, rankings: setattr(results[1], "params", True),
            r"results\[1\]\.params: expected a positive whole number or None, got True",
            id="params-bool",
        ),
        pytest.param(
            lambda results, rankings: setattr(results[0], "params", 0),
            r"results\[0\]\.params: expected a positive whole number or None, got 0",
            id="params-zero",
        ),
        pytest.param(
            lambda results, rankings: setattr(results[2], "imsize", 160.0),
            r"results\[2\]\.imsize: expected a positive whole number or None, got 160\.0",
            id="imsize-float",
        ),
        pytest.param(
            lambda results, rankings: setattr(results[3], "gflops", float("nan")),
            r"results\[3\]\.gflops: expected a positive number or None, got nan",
            id="gflops-nan",
        ),
        pytest.param(
            lambda results, rankings: results.append(replace(results[0], label="Teacher 2")),
            r"results\[4\]\.role: a second teacher row \(the first is results\[0\]\)",
            id="second-teacher",
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


def make_findings() -> list[Finding]:
    """One finding of each status, with text to escape and a check that was not run."""
    return [
        Finding(
            "F1",
            "Symmetric <test> & co",
            "partly reproduced",
            [
                Check(
                    "Contr⁺ beats the student <alone>", True, "Contr⁺ 60.2 vs student alone 59.6"
                ),
                Check("Contr⁺ is near the teacher", False, "Contr⁺ 60.2 (-4.5) vs teacher 64.7"),
                Check(
                    "Triplet does worse",
                    False,
                    "not run: no result for Triplet (random start)",
                    ran=False,
                ),
            ],
        ),
        Finding("F2", "Asymmetric test", "reproduced", [Check("Reg is best", True, "Reg 61.3")]),
        Finding("F9", "Nothing holds", "not reproduced", [Check("claim", False, "12.5 vs 13.0")]),
    ]


def test_csv_holds_recipe_network_size_and_share_of_the_teacher(report):
    paths, _, _ = report
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["recipe"] for row in rows] == [
        "teacher", "sym-student-alone", "asym-contrastive-plus", "rkd"]
    # Asymmetric Medium over the teacher's symmetric Medium (64.671), by hand.
    assert rows[0]["asym_over_teacher_medium"] == ""
    assert float(rows[1]["asym_over_teacher_medium"]) == 0.98 / 64.671
    assert float(rows[2]["asym_over_teacher_medium"]) == 66.8333333 / 64.671
    assert float(rows[3]["asym_over_teacher_medium"]) == pytest.approx(0.870560, abs=1e-6)
    assert [(row["params"], row["gflops"], row["imsize"]) for row in rows] == [
        ("6093920", "1.6378", "256"), *[("3371616", "0.3924", "160")] * 3]


def test_without_a_teacher_or_sizes_the_cells_stay_empty(tmp_path):
    student = replace(make_results()[2], params=None, gflops=None, imsize=None)
    paths = write_report(tmp_path, [student], [], title="no teacher")
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        (row,) = csv.DictReader(handle)
    assert (row["asym_over_teacher_medium"], row["params"], row["gflops"], row["imsize"]) == (
        "", "", "", "")
    text = paths["md"].read_text(encoding="utf-8")
    assert markdown_table(text, "Run")["Contr⁺"][-1] == "—"
    assert "## Networks" not in text
    html = paths["html"].read_text(encoding="utf-8")
    assert re.findall(r'<td class="number share">([^<]*)</td>', html) == ["—"]
    assert 'id="networks"' not in html and 'id="findings"' not in html


def test_share_column_and_networks_table(report):
    paths, _, _ = report
    html = paths["html"].read_text(encoding="utf-8")
    # Teacher: —; the students: 0.98, 66.83 and 56.3 over 64.671.
    assert re.findall(r'<td class="number share">([^<]*)</td>', html) == [
        "—", "0.02", "1.03", "0.87"]
    assert "<th rowspan=\"2\">Asym M / teacher</th>" in html
    network_rows = re.findall(r"<tr>((?:<td[^>]*>[^<]*</td>)+)</tr>", html)
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", network_row) for network_row in network_rows]
    # The three students share one network; their labels are listed once each, escaped.
    assert cells == [
        ["Teacher", "6.09", "1.64", "256 px"],
        ["Student alone, Contr⁺, RKD &lt;relational&gt; &amp; co", "3.37", "0.39", "160 px"],
    ]
    assert html.index('id="results"') < html.index('id="networks"') < html.index('id="map-chart"')

    text = paths["md"].read_text(encoding="utf-8")
    assert markdown_table(text, "Network (runs)") == {
        "Teacher": ["6.09", "1.64", "256 px"],
        "Student alone, Contr⁺, RKD <relational> & co": ["3.37", "0.39", "160 px"],
    }


def test_findings_box_comes_first_with_statuses_marks_and_numbers(tmp_path):
    paths = write_report(
        tmp_path, make_results(), [], title=TITLE, notes=NOTES, findings=make_findings()
    )
    html = paths["html"].read_text(encoding="utf-8")
    assert html.index('id="notes"') < html.index('id="findings"') < html.index('id="results"')
    elements = parse_elements(html)
    boxes = [a for tag, a, ids in elements if tag == "div" and "findings" in ids]
    assert [a["data-status"] for a in boxes] == [
        "partly reproduced", "reproduced", "not reproduced"]
    assert [a["class"] for a in boxes] == [
        "finding status-partly-reproduced",
        "finding status-reproduced",
        "finding status-not-reproduced",
    ]
    checks = [a["class"] for tag, a, ids in elements if tag == "li" and "findings" in ids]
    assert checks == [
        "check check-passed", "check check-failed", "check check-not-run",
        "check check-passed", "check check-failed",
    ]
    assert '<span class="status">◐ partly reproduced</span>' in html
    assert '<span class="status">✓ reproduced</span>' in html
    assert '<span class="status">✗ not reproduced</span>' in html
    assert (
        '<span class="mark">✓</span><span class="claim">Contr⁺ beats the student &lt;alone&gt;'
        '</span>: <span class="numbers">Contr⁺ 60.2 vs student alone 59.6</span>'
    ) in html
    assert (
        '<span class="mark">✗</span><span class="claim">Contr⁺ is near the teacher</span>: '
        '<span class="numbers">Contr⁺ 60.2 (-4.5) vs teacher 64.7</span>'
    ) in html
    assert '<span class="mark">–</span><span class="claim">Triplet does worse</span>' in html
    assert "Symmetric &lt;test&gt; &amp; co" in html and "<test>" not in html

    text = paths["md"].read_text(encoding="utf-8")
    assert text.index("## Findings") < text.index("## Results") < text.index("| Run |")
    lines = text.splitlines()
    assert "### F1: **PARTLY REPRODUCED** ◐" in lines
    assert "### F2: **REPRODUCED** ✓" in lines
    assert "### F9: **NOT REPRODUCED** ✗" in lines
    f1 = lines.index("### F1: **PARTLY REPRODUCED** ◐")
    assert lines[f1 + 2 : f1 + 7] == [
        "Symmetric <test> & co",
        "",
        "- ✓ Contr⁺ beats the student <alone>: Contr⁺ 60.2 vs student alone 59.6",
        "- ✗ Contr⁺ is near the teacher: Contr⁺ 60.2 (-4.5) vs teacher 64.7",
        "- – Triplet does worse: not run: no result for Triplet (random start)",
    ]


def test_demo_findings_of_the_rows_go_into_the_report(tmp_path):
    results = make_results()
    found = demo_findings(results, start="ridge")
    paths = write_report(tmp_path, results, [], title="demo", findings=found)
    html = paths["html"].read_text(encoding="utf-8")
    text = paths["md"].read_text(encoding="utf-8")
    for finding in found:
        assert f'data-status="{finding.status}"' in html
        assert f"### {finding.key}: **{finding.status.upper()}**" in text
        for check in finding.checks:
            assert f'<span class="numbers">{escape_html(check.numbers)}</span>' in html
            assert f": {check.numbers}" in text
    # Only a teacher, the student alone, Contr⁺ (ridge) and RKD (random): F1 (a) needs Contr.
    assert found[0].checks[0].numbers == "not run: no result for Contr (ridge start)"


def escape_html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.mark.parametrize(
    ("findings", "message"),
    [
        pytest.param([{"key": "F1"}], r"findings\[0\]: expected a Finding, got dict", id="dict"),
        pytest.param(
            [make_findings()[1], Finding("F2", "t", "reproduced", ["✓"])],
            r"findings\[1\]\.checks\[0\]: expected a Check, got str",
            id="check",
        ),
    ],
)
def test_bad_findings_raise_naming_the_field(tmp_path, findings, message):
    with pytest.raises(ValueError, match=message):
        write_report(tmp_path / "run", make_results(), [], title="bad", findings=findings)
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


def test_learning_curves_table_lists_every_epoch_and_run(tmp_path):
    curves = {"Student alone": {4: 10.0, 8: 12.25}, "Contr⁺ (random)": {4: 9.5, 8: 13.0, 12: 14.0}}
    paths = write_report(tmp_path, make_results(), [], title="t", learning_curves=curves)
    table = markdown_table(paths["md"].read_text(), "epoch")
    assert table["4"] == ["10.0", "9.5"]
    assert table["8"] == ["12.2", "13.0"]
    assert table["12"] == ["—", "14.0"]
    html = paths["html"].read_text()
    assert html.index('id="learning-curves"') < html.index("Medium mAP per run")
    assert "<th>Contr⁺ (random)</th>" in html and "<td>12.2</td>" in html
    plain = write_report(tmp_path / "none", make_results(), [], title="t")
    assert "Learning curves" not in plain["md"].read_text()
    assert 'id="learning-curves"' not in plain["html"].read_text()


@pytest.mark.parametrize("curves, problem", [
    ({"a": {0: 10.0}}, r"learning_curves\['a'\]: epoch 0 is not ≥ 1"),
    ({"a": {2: 101.0}}, r"learning_curves\['a'\]\[2\]: 101.0 is not a mAP in \[0, 100\]"),
    ({"a": {2: float("nan")}}, r"learning_curves\['a'\]\[2\]: nan is not a mAP"),
])
def test_bad_learning_curves_are_refused_before_writing(tmp_path, curves, problem):
    with pytest.raises(ValueError, match=problem):
        write_report(tmp_path / "out", make_results(), [], title="t", learning_curves=curves)
    assert not (tmp_path / "out").exists()
