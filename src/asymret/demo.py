"""The main job: the whole method on the embedded ``synth`` benchmark, offline, on a CPU.

``asymret demo`` generates the benchmark, fine-tunes a teacher (EfficientNet-Lite2 + GeM, the
student-alone preset's symmetric recipe, more trunk stages and more pixels than the student:
the server side of a deployment), centres its output space, extracts its database once, and
trains students (EfficientNet-Lite0 + GeM projected to the teacher's dimension, at a smaller
image size: the phone side) with the recipe of every row of the paper's table, read from the
presets (:mod:`asymret.train.presets`: loss, similarity, positives, sampler and mining of
each row; the demo's :class:`DemoPlan` only scales sizes, epochs and learning rates to a
laptop). Each network is evaluated symmetrically and asymmetrically with the revisited
protocol, the paper's two findings are checked (:mod:`asymret.findings`), and the run folder
gets a report (:mod:`asymret.report`).

Everything is an ordinary :class:`~asymret.train.loop.Trainer` run. To fit a laptop CPU the
networks fine-tune only their last trunk stages, whose frozen predecessors' activations are
computed once per image and shared by all students (``optim.trainable_stages``). Each
finished part is kept: re-running reuses the benchmark, the teacher, its vectors and every
finished student, continues an interrupted student from its checkpoint, and Ctrl-C leaves
all of it usable.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asymret.bank import TeacherBank
from asymret.data.revisitop import RevisitopDataset
from asymret.data.sfm120k import TrainingDb
from asymret.data.synth import SynthConfig, generate_synth, synth_config
from asymret.errors import AsymretError
from asymret.evaluate import (
    available_settings,
    evaluate_retrieval,
    precision_recall_points,
    protocol_ground_truth,
)
from asymret.features import extract_vectors
from asymret.files import write_text_atomic
from asymret.findings import RECIPE_NAMES, demo_findings
from asymret.models import ActivationCache, RetrievalNet, Teacher, load_network, save_model
from asymret.models.complexity import count_flops, count_parameters
from asymret.report import QueryRanking, RankedImage, RunResult, write_report
from asymret.search import exact_search
from asymret.train.checkpoint import CHECKPOINT_NAME
from asymret.train.config import TrainConfig, load_config
from asymret.train.log import VALIDATION_LOG_NAME
from asymret.train.loop import Trainer
from asymret.train.presets import PAPER_ROWS, PRESETS_DIR, preset_path
from asymret.whitening import Whitening, fold_whitening

TEACHER_ARCH = "tf_efficientnet_lite2-gem"
STUDENT_ARCH = "tf_efficientnet_lite0-gem"
STUDENT_ALONE = "sym-student-alone"
"""The preset of the student trained alone; its symmetric recipe also fine-tunes the teacher."""
DECODE_CACHE_MB = 1024
"""Decoded training images kept in memory across epochs and students (all of the default
benchmark's, at both networks' sizes)."""
EVALUATION_FILE = "evaluation.json"
TIMINGS_FILE = "timings.csv"
GRID_QUERIES = 4
GRID_TOP = 10


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is: the scale layer over the presets' recipes.

    Attributes:
        synth: the benchmark's parameters.
        teacher_imsize, student_imsize: longer image side each network sees (training and
            test).
        teacher_stages, student_stages: trunk stages each network fine-tunes.
        teacher_epochs, student_epochs: epochs of the teacher and of each student.
        num_pairs: training pairs per epoch (and random images per epoch for the presets
            that sample images).
        batch_size: tuples (or images) per step.
        teacher_lr, student_lr: Adam learning rates (no decay); the students' is the best of
            1e-4, 3e-4 and 1e-3 for the student alone (the baseline is tuned, not the method).
        ridge_lambda: regularisation of the closed-form projection start.
        starts: projection starts of the asymmetric students (``random`` as published, and
            ``ridge``); the findings are checked on the first.
        val_every: validate every student on the test set every this many epochs (0: only
            the final evaluation) — the learning curves of the report.
    """

    synth: SynthConfig
    teacher_imsize: int = 160
    student_imsize: int = 80
    teacher_stages: int = 2
    student_stages: int = 1
    teacher_epochs: int = 4
    student_epochs: int = 12
    num_pairs: int = 400
    batch_size: int = 16
    teacher_lr: float = 1e-4
    student_lr: float = 3e-4
    ridge_lambda: float = 0.1
    starts: tuple[str, ...] = ("random",)
    val_every: int = 0


_DEFAULT = DemoPlan(synth=synth_config("default", image_size=160))
PLANS: dict[str, DemoPlan] = {
    "default": _DEFAULT,
    "quick": replace(
        _DEFAULT,
        synth=synth_config(
            "default", image_size=160, train_landmarks=40, train_images_per_landmark=16,
            test_landmarks=6, database_images_per_landmark=40, distractor_landmarks=10,
            images_per_distractor_landmark=10, street_images=80, photo_images=20,
        ),
        teacher_epochs=1, student_epochs=4, num_pairs=200,
    ),
    "long": replace(_DEFAULT, student_epochs=48, starts=("random", "ridge"), val_every=4),
}


@dataclass(frozen=True)
class StudentSpec:
    """One student of the demo: a preset's recipe from one projection start.

    Attributes:
        key: its folder under ``students/``.
        label: its row label in the report.
        preset: the preset whose loss and mining recipe it is trained with.
        projection_init: ``random`` or ``ridge`` (the student alone: ``random``).
    """

    key: str
    label: str
    preset: str
    projection_init: str = "random"

    @property
    def role(self) -> str:
        """``student-alone`` (trained without the teacher) or ``asymmetric``."""
        return "student-alone" if self.preset == STUDENT_ALONE else "asymmetric"


def _label(preset: str) -> str:
    """Report label of a preset's row: the paper's short name, capitalised."""
    name = RECIPE_NAMES[preset]
    return name[:1].upper() + name[1:]


def demo_students(starts: tuple[str, ...]) -> list[StudentSpec]:
    """The student alone, then every asymmetric row of the paper's table from each start."""
    rows = [row.preset for row in PAPER_ROWS if row.preset is not None]
    specs = [StudentSpec("student-alone", _label(STUDENT_ALONE), STUDENT_ALONE)]
    for start in starts:
        specs += [StudentSpec(f"{preset}-{start}", _label(preset), preset, start)
                  for preset in rows if preset != STUDENT_ALONE]
    return specs


def preset_recipe(preset: str, presets_dir: str | Path = PRESETS_DIR) -> TrainConfig:
    """The preset's configuration, of which the demo keeps the loss and mining sections."""
    return load_config(preset_path(preset, presets_dir))


class DemoRun:
    """The demo's run folder and its steps.

    Args:
        out: run folder (created).
        plan: how big the demo is.
        progress: show progress bars.
        presets_dir: where the students' recipes are read from.
    """

    def __init__(self, out: str | Path, plan: DemoPlan, progress: bool = True,
                 presets_dir: str | Path = PRESETS_DIR):
        self.out = Path(out)
        self.plan = plan
        self.progress = progress
        self.presets_dir = Path(presets_dir)
        self.data_root = self.out / "data"
        self.teacher_dir = self.out / "teacher"
        self.bank_dir = self.out / "teacher-vectors"
        self.teacher_cache = self.out / "cache" / "teacher-activations.safetensors"
        self.student_cache = self.out / "cache" / "student-activations.safetensors"
        self.students = demo_students(plan.starts)

    # ------------------------------------------------------------------ steps

    def run(self) -> dict[str, Path]:
        """Every step, each skipped when already done; returns the report's files.

        The seconds of each step of this call go to ``timings.csv`` (a step reused from an
        earlier call takes about none).
        """
        self.out.mkdir(parents=True, exist_ok=True)
        timings: list[tuple[str, float]] = []

        def timed(step: str, work, *args):
            started = time.perf_counter()
            result = work(*args)
            timings.append((step, time.perf_counter() - started))
            return result

        timed("benchmark generation", self.prepare_data)
        teacher = timed("teacher training", self.train_teacher)
        timed("teacher bank", self.extract_teacher, teacher)
        teacher_eval = timed("evaluation: teacher", self.evaluate, self.teacher_dir, teacher)
        try:
            for spec in self.students:
                student = timed(f"training: {spec.key}", self.train_student, spec)
                timed(f"evaluation: {spec.key}", self.evaluate,
                      self.out / "students" / spec.key, teacher, student)
        except KeyboardInterrupt:
            self.write_report(teacher_eval)
            raise
        files = timed("report", self.write_report, teacher_eval)
        lines = ["step,seconds", *(f"{step},{seconds:.2f}" for step, seconds in timings)]
        write_text_atomic(self.out / TIMINGS_FILE, "\n".join(lines) + "\n")
        return files

    def prepare_data(self) -> None:
        """Generate the benchmark unless a finished one is in ``data/``."""
        marker = self.data_root / "synth-config.json"
        wanted = json.dumps(self.plan.synth.__dict__, sort_keys=True)
        if marker.is_file() and marker.read_text() == wanted:
            return
        print(f"generating the synth benchmark in {self.data_root}")
        generate_synth(self.data_root, config=self.plan.synth, overwrite=True,
                       progress=self.progress)
        write_text_atomic(marker, wanted)

    def _config(self, run_dir: Path, spec: StudentSpec | None) -> TrainConfig:
        """The Trainer configuration of the teacher (``spec=None``) or of a student: the
        preset's loss and mining recipe, at the plan's scale."""
        plan = self.plan
        recipe = preset_recipe(STUDENT_ALONE if spec is None else spec.preset, self.presets_dir)
        config = TrainConfig()
        config.loss = recipe.loss
        config.mining = replace(recipe.mining, num_pairs=plan.num_pairs,
                                num_images=plan.num_pairs, pool_size=len(self.train_db),
                                backend="torch")
        config.data.root = str(self.data_root)
        config.data.train_db = "retrieval-synth"
        config.data.val_sets = []
        config.optim.batch_size = plan.batch_size
        config.optim.lr_decay = 1.0
        config.run.out = str(run_dir)
        config.run.progress = self.progress
        config.run.checkpoint_every = 10
        config.run.decode_cache_mb = DECODE_CACHE_MB
        if spec is None:
            config.models.student = TEACHER_ARCH
            config.data.imsize = config.data.val_imsize = plan.teacher_imsize
            config.optim.trainable_stages = plan.teacher_stages
            config.optim.epochs = plan.teacher_epochs
            config.optim.lr = plan.teacher_lr
            config.run.activation_cache = str(self.teacher_cache)
            config.validate()
            return config
        config.models.student = f"{STUDENT_ARCH}-{self.teacher_dim}"
        config.models.projection_init = spec.projection_init
        config.models.ridge_lambda = plan.ridge_lambda
        config.models.ridge_images = 0
        config.data.imsize = config.data.val_imsize = plan.student_imsize
        config.data.draft_decode = True
        config.data.teacher_imsize = config.data.val_teacher_imsize = plan.teacher_imsize
        if recipe.models.teacher:
            config.models.teacher = str(self._teacher_model_dir())
            config.run.teacher_bank = str(self.bank_dir)
        if plan.val_every:
            config.data.val_sets = ["synth"]
            config.run.val_every = plan.val_every
        config.optim.trainable_stages = plan.student_stages
        config.optim.epochs = plan.student_epochs
        config.optim.lr = plan.student_lr
        config.run.activation_cache = str(self.student_cache)
        config.validate()
        return config

    def _teacher_model_dir(self) -> Path:
        """The teacher the students learn from: fine-tuned, then centred."""
        return self.teacher_dir / "centred"

    def _train(self, run_dir: Path, spec: StudentSpec | None, title: str) -> RetrievalNet:
        """Train (or continue, or reuse) one network; returns it with its trunk cache."""
        model_dir = run_dir / "student"
        if not (model_dir / "config.json").is_file():
            print(f"training {title}")
            started = time.perf_counter()
            resume = (run_dir / "checkpoints" / CHECKPOINT_NAME).is_file()
            Trainer(self._config(run_dir, spec), resume=resume).run()
            seconds = time.perf_counter() - started
            write_text_atomic(run_dir / "seconds.txt", f"{seconds:.1f}")
            print(f"trained {title} in {seconds:.0f} s")
        if spec is None:
            return self._with_cache(model_dir, self.plan.teacher_stages, self.teacher_cache)
        return self._with_cache(model_dir, self.plan.student_stages, self.student_cache)

    @staticmethod
    def _with_cache(model_dir: Path, stages: int, cache: Path) -> RetrievalNet:
        net = load_network(model_dir)
        net.freeze_trunk(stages, ActivationCache(cache))
        return net

    def train_teacher(self) -> Teacher:
        """Fine-tune the teacher (the student-alone preset's symmetric recipe), then centre its
        space.

        The fine-tuned GeM vectors all lie in a narrow cone (mean cosine ≈ 0.7 between
        database vectors), and a student started from a random projection collapses towards
        it. As the reference project's teachers carry a learned whitening, the demo's teacher
        gets the mean of its training-image vectors subtracted (a whitening with identity
        rotation, folded into the network) before it indexes anything.
        """
        tuned = self._train(self.teacher_dir, None, "the teacher (Lite2, symmetric)")
        centred_dir = self._teacher_model_dir()
        if not (centred_dir / "config.json").is_file():
            vectors = extract_vectors(tuned, self.train_db.images(self.plan.teacher_imsize),
                                      progress=self.progress).double()
            tuned.activation_cache.save()
            centring = Whitening(mean=vectors.mean(0).numpy(),
                                 projection=np.eye(vectors.shape[1]), num_pairs=0)
            save_model(fold_whitening(tuned, centring), centred_dir)
        return Teacher(self._with_cache(centred_dir, self.plan.teacher_stages, self.teacher_cache))

    def train_student(self, spec: StudentSpec) -> RetrievalNet:
        """Train one student (reused when finished)."""
        start = "" if spec.role == "student-alone" else f", {spec.projection_init} start"
        return self._train(self.out / "students" / spec.key, spec, f"student {spec.label}{start}")

    @cached_property
    def train_db(self) -> TrainingDb:
        """The benchmark's training db (read once)."""
        return TrainingDb.load("retrieval-synth", "train", self.data_root)

    @cached_property
    def test_set(self) -> RevisitopDataset:
        """The test set (read once)."""
        return RevisitopDataset.load("synth", self.data_root)

    @cached_property
    def teacher_dim(self) -> int:
        """Dimension of the (centred) teacher's vectors, which the students project to."""
        return load_network(self._teacher_model_dir()).outputdim

    def teacher_bank(self, teacher: Teacher) -> TeacherBank:
        """The teacher's bank, which the students' Trainer runs read too."""
        return TeacherBank(self.bank_dir, teacher, progress=self.progress)

    def extract_teacher(self, teacher: Teacher) -> None:
        """The teacher's vectors of the training images (the students' bank) and of the test
        set, each extracted once, at the teacher's image size."""
        bank = self.teacher_bank(teacher)
        bank.training_vectors("retrieval-synth", self.train_db, self.plan.teacher_imsize)
        bank.test_vectors(self.test_set, self.plan.teacher_imsize)
        teacher.net.activation_cache.save()

    def evaluate(
        self, run_dir: Path, teacher: Teacher, student: RetrievalNet | None = None
    ) -> dict:
        """Results saved in ``run_dir/evaluation.json`` (reused when present): the teacher's
        (``student=None``: the ``teacher`` setting) or a student's ``symmetric`` and
        ``asymmetric`` mAP, Medium precision–recall points and top-10 database indices per
        query, and the network's parameters, GFLOPs and image size."""
        path = run_dir / EVALUATION_FILE
        if path.is_file():
            return json.loads(path.read_text())
        dataset, plan = self.test_set, self.plan
        teacher_q, teacher_x = self.teacher_bank(teacher).test_vectors(dataset, plan.teacher_imsize)
        vectors = {"teacher": (np.asarray(teacher_q.vectors), np.asarray(teacher_x.vectors))}
        if student is not None:
            vectors["student"] = tuple(
                extract_vectors(student, images, progress=self.progress).numpy()
                for images in (dataset.query_images(plan.student_imsize).drafted(),
                               dataset.database_images(plan.student_imsize).drafted())
            )
            student.activation_cache.save()
        settings = available_settings(vectors)
        if student is not None:
            del settings["teacher"]
        network, imsize = (teacher, plan.teacher_imsize) if student is None else (
            student, plan.student_imsize)
        medium = protocol_ground_truth(dataset.gnd, "medium")
        result: dict[str, Any] = {
            "seconds": _seconds(run_dir),
            "params": count_parameters(network),
            "gflops": count_flops(network, (imsize, imsize)) / 1e9,
            "imsize": imsize,
        }
        for setting, (query_side, database_side) in settings.items():
            q, x = vectors[query_side][0], vectors[database_side][1]
            _, top = exact_search(q, x, min(GRID_TOP, len(x)))
            result[setting] = {
                "map": evaluate_retrieval(q, x, dataset.gnd).map,
                "pr": [[r.tolist(), p.tolist()] for r, p in precision_recall_points(q, x, medium)],
                "top": top.tolist(),
            }
        write_text_atomic(path, json.dumps(result))
        return result

    # ----------------------------------------------------------------- report

    def results(self, teacher_eval: dict) -> list[RunResult]:
        """Rows of the report: the teacher, then every finished student."""
        rows = [_run_result("Teacher (Lite2, centred)", "teacher", "teacher", "",
                            teacher_eval)]
        for spec in self.students:
            path = self.out / "students" / spec.key / EVALUATION_FILE
            if path.is_file():
                start = "" if spec.role == "student-alone" else spec.projection_init
                rows.append(_run_result(spec.label, spec.role, spec.preset, start,
                                        json.loads(path.read_text()),
                                        preset_recipe(spec.preset, self.presets_dir).loss.name))
        return rows

    def rankings(self, teacher_eval: dict, spec: StudentSpec) -> list[QueryRanking]:
        """Picture-grid rows: the first queries' top-10, teacher→teacher and student→teacher."""
        path = self.out / "students" / spec.key / EVALUATION_FILE
        if not path.is_file():
            return []
        student_top = json.loads(path.read_text())["asymmetric"]["top"]
        dataset = self.test_set
        queries = dataset.query_images(self.plan.student_imsize)
        database = dataset.database_images(self.plan.teacher_imsize)
        rows = []
        for query in range(min(GRID_QUERIES, len(dataset.qimlist))):
            entry = dataset.gnd[query]
            verdicts = {int(i): "junk" for i in entry["junk"]}
            verdicts.update({int(i): "positive" for i in [*entry["easy"], *entry["hard"]]})
            box = queries.bboxes[query] if queries.bboxes is not None else None
            rows.append(QueryRanking(
                query_path=queries.paths[query],
                query_bbox=None if box is None else tuple(float(v) for v in box),
                teacher_top=[RankedImage(database.paths[i], verdicts.get(i, "negative"))
                             for i in teacher_eval["teacher"]["top"][query]],
                student_top=[RankedImage(database.paths[i], verdicts.get(i, "negative"))
                             for i in student_top[query]],
                student_label=f"{spec.label} ({spec.projection_init} start)",
            ))
        return rows

    def write_report(self, teacher_eval: dict) -> dict[str, Path]:
        """Write report.html, report.md and results.csv from everything finished so far."""
        results = self.results(teacher_eval)
        plan = self.plan
        grid_student = next(s for s in self.students if s.preset == "asym-contrastive-plus")
        notes = [
            f"Benchmark: synth ({plan.synth.image_size} px), test set of "
            f"{len(self.test_set.qimlist)} queries.",
            f"Teacher (server side): {TEACHER_ARCH} at {plan.teacher_imsize} px, fine-tuned "
            f"with the student-alone preset's recipe (symmetric, {plan.teacher_epochs} epochs, "
            f"last {plan.teacher_stages} trunk stages), then centred (the mean of its "
            f"training-image vectors subtracted, as a whitening layer).",
            f"Students (phone side): {STUDENT_ARCH} at {plan.student_imsize} px projected to "
            f"the teacher's dimension, each with the loss and mining recipe of its preset "
            f"(src/asymret/presets/), {plan.student_epochs} epochs, last "
            f"{plan.student_stages} trunk stage(s).",
            "Symmetric: each network's queries against its own database. Asymmetric: student "
            "queries against the teacher's database. mAP in percent, revisited protocol.",
            "Projection start: random (as published) or ridge (closed-form fit to the "
            "teacher's vectors before training).",
        ]
        if len(results) < len(self.students) + 1:
            notes.append(f"Partial report: {len(results) - 1} of {len(self.students)} students "
                         "finished; run the demo again to continue.")
        findings = demo_findings(results, start=plan.starts[0])
        return write_report(self.out, results, self.rankings(teacher_eval, grid_student),
                            title="asymret demo: asymmetric metric learning on synth",
                            notes=notes, findings=findings,
                            learning_curves=self.learning_curves())

    def learning_curves(self) -> dict[str, dict[int, float]]:
        """Per student with validation during training: {epoch: symmetric Medium mAP}."""
        curves = {}
        for spec in self.students:
            path = self.out / "students" / spec.key / VALIDATION_LOG_NAME
            if not path.is_file():
                continue
            with open(path, newline="") as handle:
                points = {int(row["epoch"]): float(row["map_medium"])
                          for row in csv.DictReader(handle) if row["setting"] == "symmetric"}
            start = "" if spec.role == "student-alone" else f" ({spec.projection_init})"
            curves[f"{spec.label}{start}"] = points
        return curves


def _seconds(run_dir: Path) -> float:
    path = run_dir / "seconds.txt"
    return float(path.read_text()) if path.is_file() else 0.0


def _run_result(label: str, role: str, recipe: str, start: str, evaluation: dict,
                loss: str = "contrastive") -> RunResult:
    def curves(setting: str) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.asarray(r), np.asarray(p)) for r, p in evaluation[setting]["pr"]]

    own = "teacher" if role == "teacher" else "symmetric"
    asymmetric = evaluation.get("asymmetric")
    return RunResult(
        label=label, role=role, loss=loss, projection_start=start, recipe=recipe,
        symmetric_map=evaluation[own]["map"],
        asymmetric_map=None if asymmetric is None else asymmetric["map"],
        pr_curves={"symmetric": curves(own),
                   **({} if asymmetric is None else {"asymmetric": curves("asymmetric")})},
        train_seconds=evaluation["seconds"],
        params=evaluation["params"], gflops=evaluation["gflops"], imsize=evaluation["imsize"],
    )


def run_demo(out: str | Path, plan: str = "default", progress: bool = True) -> dict[str, Path]:
    """Run the demo of ``plan`` (``quick``: a smaller benchmark and fewer epochs; ``long``:
    more epochs, both projection starts and learning curves) into ``out``.

    Returns:
        The report's files: ``{"html", "md", "csv"}``.

    Raises:
        AsymretError: an unknown plan, or the folder holds a demo of another plan.
    """
    if plan not in PLANS:
        raise AsymretError(f"unknown demo plan {plan!r}; expected one of {', '.join(PLANS)}")
    run = DemoRun(out, PLANS[plan], progress=progress)
    marker = run.out / "demo-plan.json"
    wanted = json.dumps({"plan": plan, "version": 2})
    if marker.is_file() and marker.read_text() != wanted:
        stored = json.loads(marker.read_text())
        held = (f"the '{stored['plan']}' demo" if stored.get("version") == 2
                else "a demo of an older asymret")
        raise AsymretError(
            f"{run.out}: holds {held}, not the '{plan}' one; choose another --out or delete it"
        )
    write_text_atomic(marker, wanted)
    torch.manual_seed(0)
    return run.run()
