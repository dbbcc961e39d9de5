"""The paper's table, reproduced: train every preset row, test it, print ours beside theirs.

Budnik & Avrithis (CVPR 2021) report, for an EfficientNet-B3 student and the reference
project's ResNet101-GeM teacher at d = 2048, the **symmetric** test (queries and database
both by the network of the row) of students trained as each row says; their asymmetric-test
finding (student queries against the teacher's database) is that plain regression works
best. :data:`~asymret.train.presets.PAPER_ROWS` holds that table, one row per preset.

:func:`reproduce` trains each row's preset (with the caller's overrides layered on top, so the
same code path runs at full scale on a GPU or at tiny scale in the test suite), then tests
every network with the published protocol: multi-scale extraction and learned whitening
learned on the database-side network (:func:`asymret.retrieval.evaluate_networks`). It
writes ``reproduction.csv`` and ``reproduction.md`` with, per row, dataset and protocol, the
published symmetric mAP, ours symmetric and ours asymmetric. A finished row is reused when
the command runs again, and an interrupted training run continues from its checkpoint.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from asymret.data import load_test_set
from asymret.data.images import DEFAULT_SCALES
from asymret.errors import AsymretError
from asymret.files import write_text_atomic
from asymret.models import load_model, load_network
from asymret.retrieval import evaluate_networks
from asymret.train import load_config, train
from asymret.train.presets import PAPER_ROWS, PRESETS_DIR, PaperRow

PROTOCOLS = ("medium", "hard")
DATASET_LABELS = {"roxford5k": "ROxf", "rparis6k": "RPar"}


TEACHER_PRESET = "asym-contrastive-plus"
"""The preset whose ``models.teacher`` is the teacher of every row."""

CSV_FIELDS = ("row", "preset", "dataset", "protocol", "published_symmetric", "symmetric",
              "asymmetric")


def select_rows(names: Sequence[str] | None) -> list[PaperRow]:
    """The rows whose preset (or ``teacher``) is named, in the paper's order; all for None."""
    if not names:
        return list(PAPER_ROWS)
    known = {row.preset or "teacher": row for row in PAPER_ROWS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise AsymretError(
            f"unknown row {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return [row for row in PAPER_ROWS if (row.preset or "teacher") in names]


def _trained_student(config_path: Path, overrides: list[str], run_dir: Path,
                     teacher: str):
    """Train (or continue, or reuse) one preset's student; returns the network.

    A preset with a teacher gets ``teacher``; the student-alone preset keeps none.
    """
    student_dir = run_dir / "student"
    if (student_dir / "config.json").is_file():
        return load_model(student_dir)
    config = load_config(config_path, [*overrides, f"run.out={run_dir}"])
    if config.models.teacher:
        config.models.teacher = teacher
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    return load_model(train(config, resume=resume))


def reproduce(
    out: str | Path,
    *,
    configs_dir: str | Path = PRESETS_DIR,
    rows: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    teacher: str | None = None,
    datasets: Sequence[str] = ("roxford5k", "rparis6k"),
    root: str | Path | None = None,
    imsize: int = 1024,
    scales: Sequence[float] = DEFAULT_SCALES,
    whitening: str | None = "retrieval-SfM-120k",
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> list[dict]:
    """Train and test the paper's rows; write ``reproduction.csv`` and ``.md`` into ``out``.

    Args:
        out: folder of the runs (``out/<preset>/``), the shared teacher bank, the feature
            stores and the tables.
        configs_dir: folder of the presets.
        rows: presets to run (``teacher`` for the teacher-alone row); all by default.
        overrides: ``section.key=value`` settings applied to every preset after its YAML
            (e.g. ``data.root=...``, ``models.pretrained_path=...``, or small sizes).
        teacher: the teacher of every row (default: the presets' own teacher).
        datasets: test sets.
        root: data root of the test sets and the whitening db.
        imsize, scales: test-time image size and scales (published: 1024, [1, 1/√2, 1/2]).
        whitening: db whose matching pairs learn the whitening on the database side
            (published: ``retrieval-SfM-120k``); ``None`` for none.
        device, batch_size: where and how many images at a time the tests extract.
        progress: progress bars.

    Returns:
        The table's rows, as written to ``reproduction.csv``.
    """
    out = Path(out)
    configs_dir = Path(configs_dir)
    selected = select_rows(rows)
    for row in selected:
        if row.preset is not None and not (configs_dir / f"{row.preset}.yaml").is_file():
            raise AsymretError(f"{configs_dir / row.preset}.yaml: preset not found")
    teacher_preset = load_config(configs_dir / f"{TEACHER_PRESET}.yaml", list(overrides))
    teacher_spec = teacher or teacher_preset.models.teacher
    teacher_net = load_network(teacher_spec, teacher_preset.data.root,
                               pretrained=teacher_preset.models.teacher_pretrained)
    test_sets = [load_test_set(name, root) for name in datasets]
    options = dict(imsize=imsize, scales=scales, device=device, batch_size=batch_size,
                   progress=progress, whitening=whitening, root=root)
    table: list[dict] = []
    for row in selected:
        if row.preset is None:
            network, partner = teacher_net, None
        else:
            network = _trained_student(
                configs_dir / f"{row.preset}.yaml",
                [*overrides, f"run.teacher_bank={out / 'teacher-bank'}"],
                out / row.preset, teacher_spec,
            )
            partner = teacher_net
        for dataset in test_sets:
            results = evaluate_networks(dataset, network, partner, out / "features", **options)
            published = row.published.get(dataset.name)
            for position, protocol in enumerate(PROTOCOLS):
                table.append({
                    "row": row.label,
                    "preset": row.preset or "teacher",
                    "dataset": dataset.name,
                    "protocol": protocol,
                    "published_symmetric": math.nan if published is None else published[position],
                    "symmetric": results["symmetric"].map[protocol],
                    "asymmetric": results["asymmetric"].map[protocol]
                    if "asymmetric" in results else math.nan,
                })
        write_tables(table, out)
    return table


def _cell(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def format_markdown(table: Sequence[dict]) -> str:
    """The side-by-side table: per row, each dataset × protocol as published / sym / asym."""
    columns = list(dict.fromkeys((r["dataset"], r["protocol"]) for r in table))
    by_row: dict[str, dict] = {}
    for entry in table:
        by_row.setdefault(entry["row"], {})[(entry["dataset"], entry["protocol"])] = entry
    header = ["row"] + [
        f"{DATASET_LABELS.get(dataset, dataset)} {protocol[0].upper()} paper / sym / asym"
        for dataset, protocol in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(columns) + "|"]
    for label, entries in by_row.items():
        cells = [
            " / ".join(_cell(entries[c][key]) for key in
                       ("published_symmetric", "symmetric", "asymmetric"))
            if c in entries else "" for c in columns
        ]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return (
        "mAP. paper: published symmetric test; sym: ours, student queries and database; "
        "asym: ours, student queries against the teacher's database.\n\n"
        + "\n".join(lines) + "\n"
    )


def write_tables(table: Sequence[dict], out: Path) -> tuple[Path, Path]:
    """Write ``reproduction.csv`` (unrounded) and ``reproduction.md`` into ``out``."""
    csv_path, md_path = out / "reproduction.csv", out / "reproduction.md"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(table)
    write_text_atomic(csv_path, buffer.getvalue())
    write_text_atomic(md_path, format_markdown(table))
    return csv_path, md_path
