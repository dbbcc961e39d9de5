"""The demo end to end on a tiny benchmark: report, reuse of finished parts, Ctrl-C."""

import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from asymret.data.synth import synth_config
from asymret.demo import EVALUATION_FILE, PLANS, DemoRun, demo_students
from asymret.features import FeatureStore
from asymret.train.config import load_config
from asymret.train.loop import Trainer
from asymret.train.presets import PAPER_ROWS, PRESETS_DIR

TINY = replace(
    PLANS["quick"],
    synth=synth_config("small", image_size=96, train_landmarks=8, train_images_per_landmark=6,
                       test_landmarks=3, queries_per_landmark=2,
                       database_images_per_landmark=8, distractor_landmarks=2,
                       images_per_distractor_landmark=4, street_images=6, photo_images=2),
    teacher_imsize=64, student_imsize=48, teacher_stages=1, teacher_epochs=1,
    student_epochs=1, num_pairs=8, batch_size=8, starts=("random", "ridge"),
)
STUDENTS = demo_students(TINY.starts)


def test_students_cover_every_row_of_the_paper_from_each_start():
    asymmetric = [s for s in STUDENTS if s.role == "asymmetric"]
    assert {s.label for s in asymmetric} == {
        "Contr⁺", "Contr", "Triplet", "MS", "Reg", "RKD", "DarkRank"}
    assert sorted(s.projection_init for s in asymmetric) == ["random"] * 7 + ["ridge"] * 7
    assert [s.role for s in STUDENTS].count("student-alone") == 1
    assert len({s.key for s in STUDENTS}) == len(STUDENTS)
    assert [s.preset for s in demo_students(("random",))] == [
        row.preset for row in PAPER_ROWS if row.preset is not None]


def _planned_run(tmp_path, presets_dir=PRESETS_DIR) -> DemoRun:
    run = DemoRun(tmp_path / "demo", TINY, progress=False, presets_dir=presets_dir)
    run.__dict__.update(teacher_dim=32, train_db=[None] * 48)  # no benchmark, no teacher
    return run


def test_each_students_recipe_is_its_presets_at_the_plans_scale(tmp_path):
    run = _planned_run(tmp_path)
    for spec in STUDENTS:
        preset = load_config(PRESETS_DIR / f"{spec.preset}.yaml")
        config = run._config(tmp_path / spec.key, spec)
        assert config.loss == preset.loss, spec.key
        for key in ("sampler", "negatives", "num_negatives", "query_vectors"):
            assert getattr(config.mining, key) == getattr(preset.mining, key), (spec.key, key)
        assert (config.mining.num_pairs, config.mining.pool_size) == (TINY.num_pairs, 48)
        assert config.models.student == "tf_efficientnet_lite0-gem-32"
        assert (config.data.imsize, config.data.teacher_imsize) == (48, 64)
        assert config.models.projection_init == spec.projection_init
        assert bool(config.models.teacher) == (spec.role == "asymmetric")
    teacher = run._config(tmp_path / "teacher", None)
    assert teacher.loss == load_config(PRESETS_DIR / "sym-student-alone.yaml").loss
    assert (teacher.data.imsize, teacher.optim.trainable_stages) == (64, TINY.teacher_stages)


def test_changing_a_preset_changes_the_demos_recipe(tmp_path):
    presets = tmp_path / "presets"
    shutil.copytree(PRESETS_DIR, presets)
    path = presets / "asym-triplet.yaml"
    path.write_text(path.read_text().replace("params: {margin: 0.7}", "params: {margin: 0.3}")
                    .replace("negatives: hard", "negatives: random"))
    [triplet] = [s for s in STUDENTS if s.key == "asym-triplet-random"]
    before = _planned_run(tmp_path)._config(tmp_path / "a", triplet)
    after = _planned_run(tmp_path, presets)._config(tmp_path / "b", triplet)
    assert (before.loss.params, before.mining.negatives) == ({"margin": 0.7}, "hard")
    assert (after.loss.params, after.mining.negatives) == ({"margin": 0.3}, "random")


@pytest.mark.slow
def test_demo_reports_reuses_finished_parts_and_survives_ctrl_c(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    calls = {"n": 0}
    original = DemoRun.train_student

    def interrupted_at_the_third_student(self, spec):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, spec)

    monkeypatch.setattr(DemoRun, "train_student", interrupted_at_the_third_student)
    with pytest.raises(KeyboardInterrupt):
        DemoRun(out, TINY, progress=False).run()
    partial = (out / "report.md").read_text()
    assert "Partial report: 2 of 15 students finished" in partial
    with open(out / "results.csv") as handle:
        assert [row["label"] for row in csv.DictReader(handle)] == [
            "Teacher (Lite2, centred)", "Student alone", "Contr⁺"]
    finished = out / "students" / STUDENTS[1].key / EVALUATION_FILE
    kept = finished.read_text()

    monkeypatch.setattr(DemoRun, "train_student", original)
    files = DemoRun(out, TINY, progress=False).run()
    assert finished.read_text() == kept, "a finished student is not evaluated again"
    with open(files["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 + len(STUDENTS)
    for row in rows[1:]:
        for key in ("sym_easy", "sym_medium", "sym_hard", "asym_medium"):
            if row["role"] == "student-alone" and key.startswith("asym"):
                continue
            assert 0.0 <= float(row[key]) <= 100.0
    [bank_store] = (out / "teacher-vectors" / "retrieval-synth-train").iterdir()
    bank = np.asarray(FeatureStore.open(bank_store).vectors)
    assert np.linalg.norm(bank.mean(0)) < 0.1, "the teacher's vectors are centred"
    html = files["html"].read_text()
    assert 'id="results"' in html and 'id="picture-grid"' in html
    assert html.index('id="findings"') < html.index('id="results"')
    assert "Partial report" not in files["md"].read_text()

    def no_training(self):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "run", no_training)
    evaluation = json.loads(finished.read_text())
    DemoRun(out, TINY, progress=False).run()
    assert json.loads(finished.read_text()) == evaluation
