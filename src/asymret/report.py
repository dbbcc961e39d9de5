"""The demo's report: findings, results table, Medium-mAP bar chart, precision–recall curves,
picture grid.

:func:`write_report` leaves three files in a run folder, each written atomically:

- ``results.csv``: one row per run, the mAP values unrounded, with the row's recipe, its
  network's size and the share of the teacher's Medium mAP it keeps on the teacher's database,
  for further analysis;
- ``report.md``: the title, the notes, the paper's findings checked (:mod:`asymret.findings`),
  the paper-style table (values with one decimal, plus "Asym M / teacher") and the networks'
  sizes (parameters, GFLOPs, image size);
- ``report.html``: one self-contained page (no network access, no side files): the findings
  box, the table, the networks' sizes, a grouped bar chart of symmetric vs asymmetric Medium
  mAP and the mean interpolated precision–recall curves, both as hand-written inline SVG, and
  a picture grid of top-10 rankings with base64-inlined JPEG thumbnails. A
  Content-Security-Policy forbids any external load, and a small script records on ``<body>``
  how many images the browser decoded (``data-images-loaded``) out of how many
  (``data-images-total``).

The settings: *symmetric* ranks each network's own database with its own queries (teacher →
teacher, student → student), *asymmetric* ranks the teacher's database with student queries.
"""

from __future__ import annotations

import base64
import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from asymret.data.images import ImageReadError, load_image
from asymret.errors import AsymretError
from asymret.evaluate import PROTOCOLS, SETTINGS
from asymret.files import write_text_atomic
from asymret.findings import Check, Finding, check_recipe, teacher_share

ROLES = ("teacher", "student-alone", "asymmetric")
VERDICTS = ("positive", "junk", "negative")
PLOTTED_SETTINGS = tuple(setting for setting in SETTINGS if setting != "teacher")
"""The report's two settings: symmetric (a teacher's row shows its own, g–g) and asymmetric."""
THUMBNAIL_SIDE = 112
"""Longer side of a picture-grid thumbnail in pixels (smaller images are not enlarged)."""

RECALL_LEVELS = np.arange(101) / 100
"""Recall 0, 0.01, ..., 1 of the interpolated precision–recall curves. Each level is k / 100
correctly rounded, as are the recalls (j + 1) / len(ok) of the evaluation, so equal fractions
compare equal."""

CSV_COLUMNS = (
    "label",
    "role",
    "recipe",
    "loss",
    "projection_start",
    *(f"sym_{protocol}" for protocol in PROTOCOLS),
    *(f"asym_{protocol}" for protocol in PROTOCOLS),
    "asym_over_teacher_medium",
    "params",
    "gflops",
    "imsize",
    "train_seconds",
)
"""``asym_over_teacher_medium``: the row's asymmetric Medium mAP over the teacher's symmetric
Medium mAP (:func:`asymret.findings.teacher_share`), empty for the teacher's row and where
there is no teacher row; ``params``, ``gflops``, ``imsize``: empty where not known."""

_ABSENT = "—"
_CURVES_CAPTION = (
    "Symmetric Medium mAP of each student on the test set after each validated epoch: how the "
    "findings move with the training budget."
)
_ASYMMETRIC_MEDIUM_COLUMN = len(PROTOCOLS) + PROTOCOLS.index("medium")
"""Position of asymmetric Medium among the six mAP cells of a table row."""
_VERDICT_MARKS = {"positive": "✓", "junk": "junk", "negative": "✗"}
_STATUS_MARKS = {"reproduced": "✓", "partly reproduced": "◐", "not reproduced": "✗"}
_CHECK_MARKS = {"passed": "✓", "failed": "✗", "not-run": "–"}
_SETTING_TITLES = {
    "symmetric": "Symmetric (each network on its own database)",
    "asymmetric": "Asymmetric (student queries → teacher database)",
}
_SETTING_LEGENDS = {"symmetric": "symmetric", "asymmetric": "asymmetric (student → teacher)"}
_BAR_COLOURS = {"symmetric": "#a0aec0", "asymmetric": "#2b6cb0"}
_LINE_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_LABEL_ANGLE = 35
_LABEL_CHAR_WIDTH = 6.5
"""Slant in degrees of the bar chart's run labels; rough width in pixels of a label character."""
_PLACEHOLDER_GREY = (204, 204, 204)
_JPEG_QUALITY = 85


@dataclass
class RunResult:
    """One row of the results table.

    Attributes:
        label: Row label, e.g. ``"Contr⁺"``, ``"Student alone"``, ``"Teacher"``.
        role: ``"teacher"``, ``"student-alone"`` or ``"asymmetric"``.
        loss: Loss name, e.g. ``"contrastive"``, ``"rkd"``.
        projection_start: ``"random"``, ``"ridge"``, or ``""`` where not applicable.
        symmetric_map: ``{"easy", "medium", "hard"}`` → mAP in percent.
        asymmetric_map: The same keys for student queries against the teacher's database;
            None for the teacher.
        pr_curves: Setting (``"symmetric"``/``"asymmetric"``) → per query ``(recall,
            precision)``, two 1-D arrays of equal length with one point per positive in rank
            order, Medium protocol (as :func:`asymret.evaluate.precision_recall_points`).
        train_seconds: Training time.
        recipe: The training recipe: the preset name (one of
            :data:`asymret.findings.RECIPES`: ``"sym-student-alone"``,
            ``"asym-contrastive-plus"``, ..., ``"darkrank"``), ``"teacher"`` for the teacher's
            row; it goes with the role. Keyword only.
        params: The network's parameter count, or None where not known. Keyword only.
        gflops: The network's GFLOPs per image at ``imsize``, or None. Keyword only.
        imsize: The image size the network sees (longer side, pixels), or None. Keyword only.
    """

    label: str
    role: str
    loss: str
    projection_start: str
    symmetric_map: dict[str, float]
    asymmetric_map: dict[str, float] | None
    pr_curves: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    train_seconds: float = 0.0
    _: KW_ONLY
    recipe: str
    params: int | None = None
    gflops: float | None = None
    imsize: int | None = None


@dataclass
class RankedImage:
    """One database image in a ranking.

    Attributes:
        path: Image file.
        verdict: ``"positive"``, ``"junk"`` or ``"negative"`` for the query.
    """

    path: Path
    verdict: str


@dataclass
class QueryRanking:
    """One row of the picture grid.

    Attributes:
        query_path: Query image file.
        query_bbox: Crop box ``(x1, y1, x2, y2)`` in pixels, or None for the whole image.
        teacher_top: Top-10 of teacher queries against the teacher's database.
        student_top: Top-10 of student queries against the teacher's database.
        student_label: Which student, e.g. ``"Contr⁺ (ridge start)"``.
    """

    query_path: Path
    query_bbox: tuple[float, float, float, float] | None
    teacher_top: list[RankedImage]
    student_top: list[RankedImage]
    student_label: str


def write_report(
    out_dir: Path,
    results: list[RunResult],
    rankings: list[QueryRanking],
    *,
    title: str,
    notes: Sequence[str] = (),
    findings: Sequence[Finding] = (),
    learning_curves: Mapping[str, Mapping[int, float]] | None = None,
) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and ``results.csv`` into ``out_dir``.

    Every input is checked before anything is written. A picture-grid image that is missing
    or unreadable becomes a grey placeholder whose alt text names the file.

    Args:
        out_dir: Run folder, created if needed.
        results: The table's rows, in display order; at least one.
        rankings: The picture grid's rows (may be empty).
        title: Heading of both reports.
        notes: Short remarks shown under the title, one bullet each.
        findings: The paper's findings checked on these results
            (:func:`asymret.findings.demo_findings`), shown before the table; none: no box.
        learning_curves: run label → {epoch: symmetric Medium mAP} from validation during
            training, shown as a table of epochs (the training budget each finding needs);
            none: no table.

    Returns:
        ``{"html": path, "md": path, "csv": path}``.

    Raises:
        ValueError: (an :class:`~asymret.errors.AsymretError`) a bad input; the message names
            the field, e.g. ``results[2].role``.
    """
    _check_results(results)
    _check_rankings(rankings)
    _check_findings(findings)
    curves = _checked_curves(learning_curves or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "results.csv",
        "md": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    write_text_atomic(paths["csv"], _results_csv(results))
    write_text_atomic(paths["md"], _markdown_report(results, title, notes, findings)
                      + _markdown_curves(curves))
    write_text_atomic(paths["html"],
                      _html_report(results, rankings, title, notes, findings, curves))
    return paths


def _checked_curves(
    curves: Mapping[str, Mapping[int, float]],
) -> tuple[list[str], list[tuple[int, list[float | None]]]]:
    """Learning curves as (labels, rows of (epoch, one value or None per label)), checked."""
    labels = list(curves)
    epochs: set[int] = set()
    for label, points in curves.items():
        if not isinstance(label, str) or not isinstance(points, Mapping):
            raise AsymretError(f"learning_curves[{label!r}]: expected a label → {{epoch: mAP}}")
        for epoch, value in points.items():
            if not _is_whole(epoch) or epoch < 1:
                raise AsymretError(f"learning_curves[{label!r}]: epoch {epoch!r} is not ≥ 1")
            if not _is_real(value) or not 0.0 <= value <= 100.0:
                raise AsymretError(
                    f"learning_curves[{label!r}][{epoch}]: {value!r} is not a mAP in [0, 100]")
        epochs.update(points)
    rows = [(epoch, [curves[label].get(epoch) for label in labels]) for epoch in sorted(epochs)]
    return labels, rows


def _markdown_curves(curves: tuple[list[str], list[tuple[int, list[float | None]]]]) -> str:
    labels, rows = curves
    if not rows:
        return ""
    lines = [
        "## Learning curves",
        "",
        f"{_CURVES_CAPTION}",
        "",
        "| epoch | " + " | ".join(_markdown_cell(label) for label in labels) + " |",
        "|---:|" + "---:|" * len(labels),
        *(f"| {epoch} | " + " | ".join(_one_decimal(v) for v in values) + " |"
          for epoch, values in rows),
        "",
    ]
    return "\n".join(lines)


def _curves_html(curves: tuple[list[str], list[tuple[int, list[float | None]]]]) -> str:
    labels, rows = curves
    if not rows:
        return ""
    head = "".join(f"<th>{escape(label)}</th>" for label in labels)
    body = "".join(
        f"<tr><td>{epoch}</td>" + "".join(f"<td>{_one_decimal(v)}</td>" for v in values)
        + "</tr>"
        for epoch, values in rows
    )
    return (f'<h2>Learning curves</h2><p class="caption">{escape(_CURVES_CAPTION)}</p>'
            f'<table id="learning-curves"><thead><tr><th>epoch</th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


# --- Input checks -------------------------------------------------------------------------


def _check_results(results: Sequence[RunResult]) -> None:
    if not results:
        raise AsymretError("results: at least one RunResult is needed")
    teacher_index = None
    for index, result in enumerate(results):
        field = f"results[{index}]"
        if result.role not in ROLES:
            raise AsymretError(
                f"{field}.role: unknown role {result.role!r}; expected one of {ROLES}"
            )
        if result.role == "teacher":
            if teacher_index is not None:
                raise AsymretError(
                    f"{field}.role: a second teacher row (the first is results[{teacher_index}]); "
                    "the asymmetric test has one teacher"
                )
            teacher_index = index
        check_recipe(result.role, result.recipe, field)
        for name in ("params", "imsize"):
            value = getattr(result, name)
            if value is not None and not (_is_whole(value) and value > 0):
                raise AsymretError(
                    f"{field}.{name}: expected a positive whole number or None, got {value!r}"
                )
        if result.gflops is not None and not (
            _is_real(result.gflops) and math.isfinite(result.gflops) and result.gflops > 0
        ):
            raise AsymretError(
                f"{field}.gflops: expected a positive number or None, got {result.gflops!r}"
            )
        _check_map_values(result.symmetric_map, f"{field}.symmetric_map")
        if result.asymmetric_map is not None:
            _check_map_values(result.asymmetric_map, f"{field}.asymmetric_map")
        if not isinstance(result.pr_curves, Mapping):
            raise AsymretError(f"{field}.pr_curves: expected a dict of setting → curves")
        for setting, curves in result.pr_curves.items():
            if setting not in PLOTTED_SETTINGS:
                raise AsymretError(
                    f"{field}.pr_curves: unknown setting {setting!r}; expected one of "
                    f"{PLOTTED_SETTINGS}"
                )
            for query, curve in enumerate(curves):
                _check_curve(curve, f"{field}.pr_curves[{setting!r}][{query}]")
        if not _is_real(result.train_seconds):
            raise AsymretError(
                f"{field}.train_seconds: expected a number, got {result.train_seconds!r}"
            )


def _check_findings(findings: Sequence[Finding]) -> None:
    for index, finding in enumerate(findings):
        field = f"findings[{index}]"
        if not isinstance(finding, Finding):
            raise AsymretError(f"{field}: expected a Finding, got {type(finding).__name__}")
        for position, check in enumerate(finding.checks):
            if not isinstance(check, Check):
                raise AsymretError(
                    f"{field}.checks[{position}]: expected a Check, got {type(check).__name__}"
                )


def _check_map_values(values: Mapping[str, float], field: str) -> None:
    if not isinstance(values, Mapping) or set(values) != set(PROTOCOLS):
        raise AsymretError(f"{field}: expected a dict with exactly the keys {PROTOCOLS}")
    for protocol in PROTOCOLS:
        if not _is_real(values[protocol]):
            raise AsymretError(
                f"{field}[{protocol!r}]: expected a number, got {values[protocol]!r}"
            )


def _check_curve(curve: Sequence[np.ndarray], field: str) -> None:
    if len(curve) != 2:
        raise AsymretError(f"{field}: expected a (recall, precision) pair")
    recall, precision = (np.asarray(values) for values in curve)
    if recall.ndim != 1 or recall.shape != precision.shape:
        raise AsymretError(
            f"{field}: recall and precision must be 1-D of equal length, got shapes "
            f"{recall.shape} and {precision.shape}"
        )
    if np.any(np.diff(recall) < 0):
        raise AsymretError(
            f"{field}: recall must not decrease (one point per positive in rank order)"
        )


def _check_rankings(rankings: Sequence[QueryRanking]) -> None:
    for index, ranking in enumerate(rankings):
        field = f"rankings[{index}]"
        if ranking.query_bbox is not None:
            box = ranking.query_bbox
            if len(box) != 4 or not all(_is_real(value) and math.isfinite(value) for value in box):
                raise AsymretError(f"{field}.query_bbox: expected four numbers, got {box!r}")
            x1, y1, x2, y2 = box
            if not (x2 > x1 and y2 > y1):
                raise AsymretError(f"{field}.query_bbox: empty box {box!r}")
        for row_name in ("teacher_top", "student_top"):
            for rank, ranked in enumerate(getattr(ranking, row_name)):
                if ranked.verdict not in VERDICTS:
                    raise AsymretError(
                        f"{field}.{row_name}[{rank}].verdict: unknown verdict "
                        f"{ranked.verdict!r}; expected one of {VERDICTS}"
                    )


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# --- Numbers ------------------------------------------------------------------------------


def _mean_interpolated_precision(
    curves: Sequence[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray | None:
    """Mean over queries of the interpolated precision at :data:`RECALL_LEVELS`.

    The interpolated precision of a query at recall r is the highest precision among its
    points with recall ≥ r, and 0 where it has none. Queries without points (no positives)
    are left out of the mean, as they are left out of mAP.

    Args:
        curves: Per query ``(recall, precision)``, shape (k,) each, recall non-decreasing.

    Returns:
        Shape (101,), or None when no query has a point.
    """
    interpolated = []
    for recall, precision in curves:
        recall = np.asarray(recall, dtype=np.float64)
        precision = np.asarray(precision, dtype=np.float64)
        if recall.size == 0:
            continue
        # best_from[i] = max(precision[i:]): the best precision at recall ≥ recall[i].
        best_from = np.append(np.maximum.accumulate(precision[::-1])[::-1], 0.0)
        interpolated.append(best_from[np.searchsorted(recall, RECALL_LEVELS, side="left")])
    if not interpolated:
        return None
    return np.mean(interpolated, axis=0)


def _best_asymmetric_medium(results: Sequence[RunResult]) -> float | None:
    values = [
        float(result.asymmetric_map["medium"])
        for result in results
        if result.asymmetric_map is not None and math.isfinite(result.asymmetric_map["medium"])
    ]
    return max(values) if values else None


def _map_cells(result: RunResult) -> list[float | None]:
    """Symmetric then asymmetric mAP, Easy/Medium/Hard; None where absent."""
    asymmetric = result.asymmetric_map
    return [float(result.symmetric_map[protocol]) for protocol in PROTOCOLS] + [
        None if asymmetric is None else float(asymmetric[protocol]) for protocol in PROTOCOLS
    ]


def _one_decimal(value: float | None) -> str:
    return _ABSENT if value is None or not math.isfinite(value) else f"{value:.1f}"


def _teacher_shares(results: Sequence[RunResult]) -> list[float | None]:
    """Per row, the share of the teacher's Medium mAP it keeps querying the teacher's database.

    None for the teacher's row, for a row without an asymmetric test and where there is no
    teacher row.
    """
    teachers = [result for result in results if result.role == "teacher"]
    teacher = float(teachers[0].symmetric_map["medium"]) if teachers else None
    return [
        None
        if result.role == "teacher" or result.asymmetric_map is None
        else teacher_share(float(result.asymmetric_map["medium"]), teacher)
        for result in results
    ]


def _share_text(value: float | None) -> str:
    return _ABSENT if value is None else f"{value:.2f}"


@dataclass
class _Network:
    """One line of the networks table: the rows that share a network's size."""

    labels: list[str]
    params: int | None
    gflops: float | None
    imsize: int | None

    def cells(self) -> list[str]:
        """Label, parameters in millions, GFLOPs, image size."""
        return [
            ", ".join(self.labels),
            _ABSENT if self.params is None else f"{self.params / 1e6:.2f}",
            _ABSENT if self.gflops is None else f"{self.gflops:.2f}",
            _ABSENT if self.imsize is None else f"{self.imsize} px",
        ]


_NETWORK_HEADER = ("Network (runs)", "Params (M)", "GFLOPs", "Image size")


def _networks(results: Sequence[RunResult]) -> list[_Network]:
    """The teacher and the students, grouped by their size, in order of first appearance.

    Rows that know none of their size are left out; a label that repeats (the same loss from
    both projection starts) is listed once.
    """
    networks: dict[tuple[bool, int | None, float | None, int | None], _Network] = {}
    for result in results:
        if result.params is None and result.gflops is None and result.imsize is None:
            continue
        size = (
            None if result.params is None else int(result.params),
            None if result.gflops is None else float(result.gflops),
            None if result.imsize is None else int(result.imsize),
        )
        network = networks.setdefault((result.role == "teacher", *size), _Network([], *size))
        if result.label not in network.labels:
            network.labels.append(result.label)
    return list(networks.values())


# --- CSV and Markdown ---------------------------------------------------------------------


def _results_csv(results: Sequence[RunResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for result, share in zip(results, _teacher_shares(results), strict=True):
        writer.writerow(
            [
                result.label,
                result.role,
                result.recipe,
                result.loss,
                result.projection_start,
                *("" if value is None else repr(value) for value in _map_cells(result)),
                "" if share is None else repr(share),
                "" if result.params is None else str(int(result.params)),
                "" if result.gflops is None else repr(float(result.gflops)),
                "" if result.imsize is None else str(int(result.imsize)),
                repr(float(result.train_seconds)),
            ]
        )
    return buffer.getvalue()


_TABLE_HEADER = (
    "Run",
    "Projection start",
    "Sym E",
    "Sym M",
    "Sym H",
    "Asym E",
    "Asym M",
    "Asym H",
    "Asym M / teacher",
)
_SHARE_CAPTION = (
    "Asym M / teacher: the share of the teacher's own Medium mAP a student keeps when its "
    "queries search the teacher's database."
)


def _markdown_report(
    results: Sequence[RunResult], title: str, notes: Sequence[str], findings: Sequence[Finding]
) -> str:
    best = _best_asymmetric_medium(results)
    lines = [f"# {title}", ""]
    if notes:
        lines += [f"- {note}" for note in notes] + [""]
    lines += _markdown_findings(findings)
    lines += [
        "## Results",
        "",
        "mAP in percent, revisited protocol (E = Easy, M = Medium, H = Hard). Symmetric: each "
        "network on its own database; asymmetric: student queries against the teacher's "
        f"database. Best asymmetric Medium in bold. {_SHARE_CAPTION}",
        "",
        "| " + " | ".join(_TABLE_HEADER) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * 7) + "|",
    ]
    for result, share in zip(results, _teacher_shares(results), strict=True):
        cells = [_one_decimal(value) for value in _map_cells(result)]
        if best is not None and result.asymmetric_map is not None:
            if result.asymmetric_map["medium"] == best:
                cells[_ASYMMETRIC_MEDIUM_COLUMN] = f"**{cells[_ASYMMETRIC_MEDIUM_COLUMN]}**"
        row = [_markdown_cell(result.label), _markdown_cell(result.projection_start or _ABSENT)]
        lines.append("| " + " | ".join([*row, *cells, _share_text(share)]) + " |")
    networks = _networks(results)
    if networks:
        lines += [
            "",
            "## Networks",
            "",
            "| " + " | ".join(_NETWORK_HEADER) + " |",
            "|---|---:|---:|---:|",
            *(
                "| " + " | ".join(_markdown_cell(cell) for cell in network.cells()) + " |"
                for network in networks
            ),
        ]
    lines += ["", "Charts, precision–recall curves and the picture grid: `report.html`.", ""]
    return "\n".join(lines)


def _check_state(check: Check) -> str:
    """``passed``, ``failed`` or ``not-run``."""
    if not check.ran:
        return "not-run"
    return "passed" if check.passed else "failed"


def _markdown_findings(findings: Sequence[Finding]) -> list[str]:
    if not findings:
        return []
    lines = ["## Findings", ""]
    for finding in findings:
        lines += [
            f"### {_markdown_cell(finding.key)}: **{finding.status.upper()}** "
            f"{_STATUS_MARKS[finding.status]}",
            "",
            _markdown_cell(finding.title),
            "",
        ]
        lines += [
            f"- {_CHECK_MARKS[_check_state(check)]} {_markdown_cell(check.claim)}: "
            f"{_markdown_cell(check.numbers)}"
            for check in finding.checks
        ]
        lines.append("")
    return lines


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a202c;
  margin: 2rem auto; max-width: 1400px; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.5rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #e2e8f0; }
.caption { color: #4a5568; font-size: 0.9rem; }
table#results { border-collapse: collapse; font-variant-numeric: tabular-nums; }
#results th, #results td { padding: 0.35rem 0.7rem; border-bottom: 1px solid #e2e8f0; }
#results thead th { background: #edf2f7; }
#results tbody tr:nth-child(even) { background: #f7fafc; }
#results td.number { text-align: right; }
#results td.best { font-weight: 700; background: #c6f6d5; }
#results tr.role-teacher td { color: #2d3748; font-style: italic; }
table#networks { border-collapse: collapse; font-variant-numeric: tabular-nums; }
#networks th, #networks td { padding: 0.3rem 0.7rem; border-bottom: 1px solid #e2e8f0; }
#networks thead th { background: #edf2f7; }
#networks td.number { text-align: right; }
#findings { border: 2px solid #4a5568; border-radius: 6px; padding: 0.4rem 1.2rem 0.8rem;
  margin: 1.2rem 0; background: #fcfcfd; }
#findings h2 { margin-top: 0.6rem; }
.finding h3 { font-size: 1.05rem; margin: 1rem 0 0.3rem; }
.finding .title { font-weight: 400; }
.status { display: inline-block; padding: 0.05rem 0.55rem; border-radius: 4px; color: #fff;
  font-size: 0.85rem; font-weight: 700; text-transform: uppercase; margin-right: 0.4rem; }
.status-reproduced .status { background: #2f855a; }
.status-partly-reproduced .status { background: #b7791f; }
.status-not-reproduced .status { background: #c53030; }
.checks { list-style: none; padding-left: 0.4rem; margin: 0.2rem 0; }
.check { margin: 0.15rem 0; }
.check .mark { display: inline-block; width: 1.4rem; font-weight: 700; }
.check-passed .mark { color: #2f855a; }
.check-failed .mark { color: #c53030; }
.check-not-run .mark, .check-not-run .numbers { color: #718096; }
.check .numbers { font-variant-numeric: tabular-nums; color: #1a202c; font-weight: 600; }
svg { display: block; margin: 0.5rem 0; font-size: 11px; }
svg text { fill: #2d3748; }
.ranking { display: flex; gap: 1rem; align-items: flex-start; margin: 1.2rem 0;
  padding-bottom: 1rem; border-bottom: 1px solid #edf2f7; }
.rows { display: flex; flex-direction: column; gap: 0.4rem; }
.row-label { font-size: 0.85rem; color: #4a5568; }
.thumbs { display: flex; gap: 4px; }
.thumb { margin: 0; width: 112px; text-align: center; font-size: 0.75rem; }
.thumb img { width: 112px; height: 112px; object-fit: contain; background: #f7fafc;
  border: 3px solid #cbd5e0; box-sizing: border-box; display: block; }
.verdict-positive img { border-color: #38a169; }
.verdict-positive figcaption { color: #276749; }
.verdict-junk img { border-color: #a0aec0; }
.verdict-junk figcaption { color: #718096; }
.verdict-negative img { border-color: #e53e3e; }
.verdict-negative figcaption { color: #c53030; }
.query-thumb img { border-color: #2b6cb0; }
"""

_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
)

_IMAGES_LOADED_SCRIPT = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const decoded = images.filter((image) => image.complete && image.naturalWidth > 0);
  document.body.dataset.imagesLoaded = String(decoded.length);
  document.body.dataset.imagesTotal = String(images.length);
});
"""


def _html_report(
    results: Sequence[RunResult],
    rankings: Sequence[QueryRanking],
    title: str,
    notes: Sequence[str],
    findings: Sequence[Finding],
    curves: tuple[list[str], list[tuple[int, list[float | None]]]],
) -> str:
    notes_html = (
        '<ul id="notes">' + "".join(f"<li>{escape(note)}</li>" for note in notes) + "</ul>"
        if notes
        else ""
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CONTENT_SECURITY_POLICY}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{escape(title)}</h1>",
            notes_html,
            _findings_html(findings),
            "<h2>Results</h2>",
            '<p class="caption">mAP in percent, revisited protocol. Symmetric: each network on '
            "its own database; asymmetric: student queries against the teacher's database. "
            f"Best asymmetric Medium highlighted. {escape(_SHARE_CAPTION)}</p>",
            _results_table_html(results),
            _networks_html(results),
            _curves_html(curves),
            "<h2>Medium mAP per run</h2>",
            _bar_chart_svg(results),
            "<h2>Precision–recall (Medium)</h2>",
            '<p class="caption">Mean over queries of the interpolated precision (the best '
            "precision at any recall ≥ r) at recall 0, 0.01, …, 1.</p>",
            _pr_curves_svg(results),
            _picture_grid_html(rankings),
            f"<script>{_IMAGES_LOADED_SCRIPT}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _findings_html(findings: Sequence[Finding]) -> str:
    """The findings box: each finding with its status and its checks, ✓/✗ with numbers."""
    if not findings:
        return ""
    parts = []
    for finding in findings:
        status_class = "status-" + finding.status.replace(" ", "-")
        checks = "".join(
            f'<li class="check check-{_check_state(check)}">'
            f'<span class="mark">{_CHECK_MARKS[_check_state(check)]}</span>'
            f'<span class="claim">{escape(check.claim)}</span>: '
            f'<span class="numbers">{escape(check.numbers)}</span></li>'
            for check in finding.checks
        )
        parts.append(
            f'<div class="finding {status_class}" data-status="{escape(finding.status)}">'
            f"<h3>{escape(finding.key)} "
            f'<span class="status">{_STATUS_MARKS[finding.status]} {escape(finding.status)}</span>'
            f'<span class="title">{escape(finding.title)}</span></h3>'
            f'<ul class="checks">{checks}</ul></div>'
        )
    return (
        '<section id="findings"><h2>Findings of the paper</h2>'
        '<p class="caption">Medium mAP in percent; ✓ holds, ✗ does not, – not run (a row is '
        "missing).</p>" + "".join(parts) + "</section>"
    )


def _networks_html(results: Sequence[RunResult]) -> str:
    networks = _networks(results)
    if not networks:
        return ""
    head = "<thead><tr>" + "".join(f"<th>{name}</th>" for name in _NETWORK_HEADER) + "</tr></thead>"
    rows = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"number" if column else "label"}">{escape(cell)}</td>'
            for column, cell in enumerate(network.cells())
        )
        + "</tr>"
        for network in networks
    )
    return f'<h2>Networks</h2><table id="networks">{head}<tbody>{rows}</tbody></table>'


def _results_table_html(results: Sequence[RunResult]) -> str:
    best = _best_asymmetric_medium(results)
    head = (
        "<thead><tr>"
        '<th rowspan="2">Run</th><th rowspan="2">Projection start</th>'
        '<th colspan="3">Symmetric mAP</th><th colspan="3">Asymmetric mAP</th>'
        '<th rowspan="2">Asym M / teacher</th></tr><tr>'
        + "".join(f"<th>{protocol[0].upper()}</th>" for protocol in PROTOCOLS) * 2
        + "</tr></thead>"
    )
    rows = []
    for result, share in zip(results, _teacher_shares(results), strict=True):
        cells = []
        for column, value in enumerate(_map_cells(result)):
            is_best = column == _ASYMMETRIC_MEDIUM_COLUMN and best is not None and value == best
            css_class = "number best" if is_best else "number"
            cells.append(f'<td class="{css_class}">{_one_decimal(value)}</td>')
        cells.append(f'<td class="number share">{_share_text(share)}</td>')
        rows.append(
            f'<tr class="role-{escape(result.role)}">'
            f"<td>{escape(result.label)}</td>"
            f"<td>{escape(result.projection_start or _ABSENT)}</td>" + "".join(cells) + "</tr>"
        )
    return f'<table id="results">{head}<tbody>{"".join(rows)}</tbody></table>'


def _bar_chart_svg(results: Sequence[RunResult]) -> str:
    """Grouped bars, symmetric and asymmetric Medium mAP per run, on a 0–100 axis."""
    top, plot_height, group_width, bar_width = 36, 220, 64, 22
    # Room for the slanted run labels: the longest one reaches left of the first group's centre
    # by cos(angle) × its length and below the axis by sin(angle) × its length.
    label_length = _LABEL_CHAR_WIDTH * max(len(result.label) for result in results)
    slant = math.radians(_LABEL_ANGLE)
    left = max(56, math.ceil(math.cos(slant) * label_length - group_width / 2) + 8)
    label_space = math.ceil(math.sin(slant) * label_length) + 28
    plot_right = left + group_width * len(results) + 8
    width = max(plot_right + 16, left + 320)  # the legend spans about 320 px
    height = top + plot_height + label_space
    bottom = top + plot_height

    def y_of(value: float) -> float:
        return bottom - plot_height * min(max(value, 0.0), 100.0) / 100.0

    parts = ["<title>Medium mAP per run: symmetric and asymmetric</title>"]
    for tick in range(0, 101, 20):
        y = y_of(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{plot_right}" y2="{y:.1f}" '
            f'stroke="{"#4a5568" if tick == 0 else "#e2e8f0"}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    parts.append(
        f'<text transform="translate({left - 42},{top + plot_height / 2:.1f}) rotate(-90)" '
        'text-anchor="middle">Medium mAP (%)</text>'
    )
    for position, result in enumerate(results):
        group_left = left + group_width * position + (group_width - 2 * bar_width) / 2
        values = {
            "symmetric": float(result.symmetric_map["medium"]),
            "asymmetric": None
            if result.asymmetric_map is None
            else float(result.asymmetric_map["medium"]),
        }
        for offset, (setting, value) in enumerate(values.items()):
            x = group_left + offset * bar_width
            centre = x + bar_width / 2
            if value is None or not math.isfinite(value):
                parts.append(
                    f'<text x="{centre:.1f}" y="{bottom - 4}" text-anchor="middle">{_ABSENT}</text>'
                )
                continue
            y = y_of(value)
            parts.append(
                f'<rect class="bar-{setting}" x="{x:.1f}" y="{y:.1f}" width="{bar_width - 2}" '
                f'height="{bottom - y:.1f}" fill="{_BAR_COLOURS[setting]}"/>'
                f'<text x="{centre:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="9">'
                f"{value:.1f}</text>"
            )
        label_x = left + group_width * position + group_width / 2
        parts.append(
            f'<text transform="translate({label_x:.1f},{bottom + 14}) rotate(-{_LABEL_ANGLE})" '
            f'text-anchor="end">{escape(result.label)}</text>'
        )
    for offset, setting in enumerate(PLOTTED_SETTINGS):
        x = left + offset * 100
        parts.append(
            f'<rect x="{x}" y="8" width="12" height="12" fill="{_BAR_COLOURS[setting]}"/>'
            f'<text x="{x + 17}" y="18">{_SETTING_LEGENDS[setting]}</text>'
        )
    return (
        f'<svg id="map-chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">' + "".join(parts) + "</svg>"
    )


def _pr_curves_svg(results: Sequence[RunResult]) -> str:
    """One panel per setting, one line per run with curves for it, and a shared legend."""
    panel_width, panel_height = 300, 240
    left, top, gap = 48, 28, 64
    legend_left = left + len(PLOTTED_SETTINGS) * (panel_width + gap)
    legend_row = 16
    longest_label = max(len(result.label) for result in results)
    width = legend_left + 36 + math.ceil(_LABEL_CHAR_WIDTH * longest_label)
    height = max(top + panel_height + 44, top + legend_row * len(results) + 8)
    mean_curves = [
        {
            setting: _mean_interpolated_precision(result.pr_curves.get(setting, []))
            for setting in PLOTTED_SETTINGS
        }
        for result in results
    ]

    parts = ["<title>Mean interpolated precision–recall, Medium protocol</title>"]
    for panel, setting in enumerate(PLOTTED_SETTINGS):
        x0 = left + panel * (panel_width + gap)
        y0 = top + panel_height
        parts.append(
            f'<g class="pr-panel" id="pr-{setting}">'
            f'<text x="{x0 + panel_width / 2}" y="{top - 10}" text-anchor="middle" '
            f'font-weight="600">{escape(_SETTING_TITLES[setting])}</text>'
        )
        for tick in range(0, 11, 2):
            fraction = tick / 10
            x = x0 + fraction * panel_width
            y = y0 - fraction * panel_height
            parts.append(
                f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + panel_width}" y2="{y:.1f}" '
                'stroke="#e2e8f0"/>'
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{y0}" stroke="#e2e8f0"/>'
                f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{fraction:.1f}</text>'
                f'<text x="{x:.1f}" y="{y0 + 14}" text-anchor="middle">{fraction:.1f}</text>'
            )
        parts.append(
            f'<rect x="{x0}" y="{top}" width="{panel_width}" height="{panel_height}" '
            'fill="none" stroke="#4a5568"/>'
            f'<text x="{x0 + panel_width / 2}" y="{y0 + 32}" text-anchor="middle">recall</text>'
            f'<text transform="translate({x0 - 34},{top + panel_height / 2}) rotate(-90)" '
            'text-anchor="middle">precision</text>'
        )
        for run, result in enumerate(results):
            precision = mean_curves[run][setting]
            if precision is None:
                continue
            points = " ".join(
                f"{x0 + recall * panel_width:.1f},{y0 - value * panel_height:.1f}"
                for recall, value in zip(RECALL_LEVELS, precision, strict=True)
            )
            parts.append(
                f'<polyline class="pr-line" data-run="{escape(result.label)}" fill="none" '
                f'stroke-width="1.8" points="{points}" {_line_style(run)}/>'
            )
        parts.append("</g>")
    shown_runs = [
        run for run in range(len(results)) if any(c is not None for c in mean_curves[run].values())
    ]
    for row, run in enumerate(shown_runs):
        result = results[run]
        y = top + row * legend_row
        parts.append(
            f'<line x1="{legend_left}" y1="{y}" x2="{legend_left + 22}" y2="{y}" '
            f'stroke-width="2.5" {_line_style(run)}/>'
            f'<text x="{legend_left + 28}" y="{y + 4}">{escape(result.label)}</text>'
        )
    return (
        f'<svg id="pr-curves" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">' + "".join(parts) + "</svg>"
    )


def _line_style(run: int) -> str:
    """Colour of a run's line; dashed once the palette repeats."""
    colour = _LINE_COLOURS[run % len(_LINE_COLOURS)]
    dash = ' stroke-dasharray="6 3"' if run >= len(_LINE_COLOURS) else ""
    return f'stroke="{colour}"{dash}'


# --- Picture grid -------------------------------------------------------------------------


def _picture_grid_html(rankings: Sequence[QueryRanking]) -> str:
    thumbnails: dict[tuple[Path, tuple[float, ...] | None], tuple[str, bool]] = {}

    def thumbnail(path: Path, bbox: tuple[float, ...] | None) -> tuple[str, bool]:
        key = (Path(path), None if bbox is None else tuple(float(value) for value in bbox))
        if key not in thumbnails:
            thumbnails[key] = _thumbnail_data_uri(*key)
        return thumbnails[key]

    articles = []
    for ranking in rankings:
        data_uri, readable = thumbnail(ranking.query_path, ranking.query_bbox)
        alt = (
            f"query {Path(ranking.query_path).name}"
            if readable
            else f"missing image: {ranking.query_path}"
        )
        query_figure = (
            '<figure class="thumb query-thumb">'
            f'<img src="{data_uri}" alt="{escape(alt)}" title="{escape(str(ranking.query_path))}">'
            "<figcaption>query</figcaption></figure>"
        )
        rows = [
            ("Teacher → teacher", ranking.teacher_top),
            (f"{ranking.student_label} → teacher", ranking.student_top),
        ]
        rows_html = "".join(
            '<div class="row">'
            f'<div class="row-label">{escape(row_label)}</div><div class="thumbs">'
            + "".join(
                _ranked_figure(rank, ranked, *thumbnail(ranked.path, None))
                for rank, ranked in enumerate(ranked_images, start=1)
            )
            + "</div></div>"
            for row_label, ranked_images in rows
        )
        articles.append(
            f'<article class="ranking">{query_figure}<div class="rows">{rows_html}</div></article>'
        )
    legend = (
        '<p class="caption">Top 10 of the teacher’s database for each query. Border and mark: '
        '<span style="color:#276749">✓ positive</span>, '
        '<span style="color:#718096">junk</span> (ignored by the protocol), '
        '<span style="color:#c53030">✗ negative</span>.</p>'
    )
    body = "".join(articles) if articles else '<p class="caption">No rankings.</p>'
    return f'<section id="picture-grid"><h2>Top-10 retrievals</h2>{legend}{body}</section>'


def _ranked_figure(rank: int, ranked: RankedImage, data_uri: str, readable: bool) -> str:
    alt = (
        f"rank {rank}: {Path(ranked.path).name} ({ranked.verdict})"
        if readable
        else f"missing image: {ranked.path}"
    )
    return (
        f'<figure class="thumb verdict-{ranked.verdict}">'
        f'<img src="{data_uri}" alt="{escape(alt)}" title="{escape(str(ranked.path))}">'
        f"<figcaption>{rank} {_VERDICT_MARKS[ranked.verdict]}</figcaption></figure>"
    )


def _thumbnail_data_uri(path: Path, bbox: tuple[float, ...] | None) -> tuple[str, bool]:
    """JPEG thumbnail as a ``data:`` URI, and whether the image could be read.

    A missing or unreadable image gives a grey square placeholder instead.
    """
    try:
        # The crop itself fills the thumbnail (extraction shrinks a crop by its image's factor).
        image = load_image(path, bbox=bbox)
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        readable = True
    except ImageReadError:
        image = Image.new("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE), _PLACEHOLDER_GREY)
        readable = False
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/jpeg;base64,{encoded}", readable


# --- Files --------------------------------------------------------------------------------
