"""`asymret reproduce` end to end at tiny scale: the eight presets trained with small overrides,
tested with multi-scale extraction and database-side whitening, ours beside the paper's."""

import csv
import math
import shutil
from pathlib import Path

import pytest
import yaml

from asymret.cli import main
from asymret.data import load_test_set
from asymret.data.images import DEFAULT_SCALES
from asymret.errors import AsymretError
from asymret.models import load_model, load_network
from asymret.reproduce import format_markdown, reproduce, select_rows
from asymret.retrieval import evaluate_networks
from asymret.train.presets import PAPER_ROWS, PRESETS_DIR
from train_fixtures import make_teacher, make_training_data

REPO = Path(__file__).resolve().parents[1]
TINY_OVERRIDES = [
    "data.train_db=retrieval-tiny", "data.val_sets=[]", "data.imsize=32",
    # a linear head: a tiny random conv head leaves ReLU channels dead, and the whitening of
    # constant dimensions is refused (singular pair covariance)
    "models.student=test_efficientnet-gem-16", "models.pretrained=false",
    "mining.num_pairs=8", "mining.pool_size=32", "mining.num_negatives=2",
    "mining.num_images=12", "optim.epochs=1", "optim.batch_size=4", "optim.lr=1e-3",
    "run.progress=false", "run.checkpoint_every=1",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny training db, its test set published under the name roxford5k, and a teacher."""
    root = tmp_path_factory.mktemp("data")
    make_training_data(root)
    shutil.move(root / "tiny", root / "roxford5k")
    (root / "roxford5k" / "gnd_tiny.pkl").rename(root / "roxford5k" / "gnd_roxford5k.pkl")
    teacher = make_teacher(tmp_path_factory.mktemp("teacher") / "teacher")
    return root, teacher


def _run(world, out, **options):
    root, teacher = world
    return reproduce(
        out, configs_dir=PRESETS_DIR, overrides=[f"data.root={root}", *TINY_OVERRIDES],
        teacher=str(teacher), datasets=["roxford5k"], root=root, imsize=32,
        scales=DEFAULT_SCALES, whitening="retrieval-tiny", progress=False, **options,
    )


@pytest.mark.slow
def test_reproduce_trains_every_preset_and_tabulates_ours_beside_the_paper(world, tmp_path,
                                                                             capsys):
    root, teacher = world
    out = tmp_path / "reproduce"
    table = _run(world, out)

    assert [(r["preset"], r["protocol"]) for r in table] == [
        (row.preset or "teacher", protocol) for row in PAPER_ROWS for protocol in ("medium", "hard")
    ]
    for row in PAPER_ROWS:
        entries = [r for r in table if r["preset"] == (row.preset or "teacher")]
        assert [e["published_symmetric"] for e in entries] == list(row.published["roxford5k"])
        assert all(0 <= e["symmetric"] <= 100 for e in entries)
        assert all(math.isnan(e["asymmetric"]) == (row.preset is None) for e in entries)

    for row in PAPER_ROWS[1:]:
        saved = yaml.safe_load((out / row.preset / "config.yaml").read_text())
        preset = yaml.safe_load((PRESETS_DIR / f"{row.preset}.yaml").read_text())
        assert saved["loss"] == preset["loss"] and saved["mining"]["sampler"] == (
            preset["mining"]["sampler"])
        assert saved["models"]["student"] == "test_efficientnet-gem-16"
        assert saved["models"]["teacher"] == (None if preset["models"]["teacher"] is None
                                              else str(teacher))
        assert saved["run"]["teacher_bank"] == str(out / "teacher-bank")

    dataset = load_test_set("roxford5k", root)
    student = load_model(out / "regression" / "student")
    expected = evaluate_networks(
        dataset, student, load_network(str(teacher)), tmp_path / "independent", imsize=32,
        scales=DEFAULT_SCALES, whitening="retrieval-tiny", root=root, progress=False,
    )
    regression = {r["protocol"]: r for r in table if r["preset"] == "regression"}
    for protocol in ("medium", "hard"):
        assert regression[protocol]["symmetric"] == pytest.approx(
            expected["symmetric"].map[protocol])
        assert regression[protocol]["asymmetric"] == pytest.approx(
            expected["asymmetric"].map[protocol])

    with open(out / "reproduction.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == len(table)
    assert float(written[0]["published_symmetric"]) == 65.4
    markdown = (out / "reproduction.md").read_text()
    assert markdown == format_markdown(table)
    assert "| teacher RN101-GeM alone | 65.4 / " in markdown and " / —" in markdown

    student_file = out / "regression" / "student" / "model.safetensors"
    trained_at = student_file.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["reproduce", *(f"{o}" for o in [f"data.root={root}", *TINY_OVERRIDES]),
                 "--out", str(out), "--configs", str(PRESETS_DIR), "--teacher", str(teacher),
                 "--datasets", "roxford5k", "--root", str(root), "--imsize", "32",
                 "--whitening", "retrieval-tiny", "--rows", "teacher", "regression",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert student_file.stat().st_mtime_ns == trained_at
    assert "| Reg | 64.9 / " in printed and "Contr⁺" not in printed


def test_unknown_rows_and_missing_presets_are_one_line(world, tmp_path):
    with pytest.raises(AsymretError, match="unknown row rgression; choose from teacher, "):
        select_rows(["rgression"])
    with pytest.raises(AsymretError, match=r"asym-triplet\.yaml: preset not found"):
        reproduce(tmp_path / "out", configs_dir=tmp_path, rows=["asym-triplet"])
