"""The main job: the whole method on the embedded ``synth`` benchmark, offline, on a CPU.

``asymret demo`` generates the benchmark, fine-tunes a teacher (EfficientNet-Lite2 + GeM,
symmetric contrastive loss with hard negatives), centres its output space, extracts its
database once, and trains
students (EfficientNet-Lite0 + GeM projected to the teacher's dimension) with every loss of
the paper, asymmetric, from both projection starts (random as published, and the closed-form
ridge fit), plus a student trained alone (symmetric). Each network is evaluated symmetrically
and asymmetrically with the revisited protocol and the run folder gets a report
(:mod:`asymret.report`).

Everything is an ordinary :class:`~asymret.train.loop.Trainer` run. To fit a laptop CPU the
networks fine-tune only their last trunk stage, whose frozen predecessors' activations are
computed once per image and shared by all students (``optim.trainable_stages``), at a reduced
image size. Each finished part is kept: re-running reuses the benchmark, the teacher, its
vectors and every finished student, continues an interrupted student from its checkpoint,
and Ctrl-C leaves all of it usable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asymret.bank import TeacherBank
from asymret.data.image_list import ImageList
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
from asymret.models import ActivationCache, RetrievalNet, Teacher, load_network, save_model
from asymret.report import QueryRanking, RankedImage, RunResult, write_report
from asymret.search import exact_search
from asymret.train.checkpoint import CHECKPOINT_NAME
from asymret.train.config import TrainConfig
from asymret.train.loop import Trainer
from asymret.whitening import Whitening, fold_whitening

TEACHER_ARCH = "tf_efficientnet_lite2-gem"
STUDENT_ARCH = "tf_efficientnet_lite0-gem"
EVALUATION_FILE = "evaluation.json"
GRID_QUERIES = 4
GRID_TOP = 10


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is.

    Attributes:
        synth: the benchmark's parameters.
        imsize: longer image side for training and testing.
        trainable_stages: trunk stages every network fine-tunes.
        teacher_epochs, student_epochs: epochs of the teacher and of each student.
        num_pairs: training pairs per epoch.
        batch_size: tuples per step.
        teacher_lr, student_lr: Adam learning rates (no decay).
        ridge_lambda: regularisation of the closed-form projection start.
        starts: projection starts of the asymmetric students (``random``, ``ridge``).
    """

    synth: SynthConfig
    imsize: int = 160
    trainable_stages: int = 1
    teacher_epochs: int = 4
    student_epochs: int = 4
    num_pairs: int = 400
    batch_size: int = 16
    teacher_lr: float = 1e-4
    student_lr: float = 1e-4
    ridge_lambda: float = 0.1
    starts: tuple[str, ...] = ("random", "ridge")


PLANS: dict[str, DemoPlan] = {
    "default": DemoPlan(synth=synth_config("default", image_size=160)),
    "quick": DemoPlan(
        synth=synth_config(
            "default", image_size=160, train_landmarks=40, train_images_per_landmark=16,
            test_landmarks=6, database_images_per_landmark=40, distractor_landmarks=10,
            images_per_distractor_landmark=10, street_images=80, photo_images=20,
        ),
        teacher_epochs=1,
        student_epochs=1,
        num_pairs=200,
        starts=("ridge",),
    ),
}


@dataclass(frozen=True)
class StudentSpec:
    """One student of the demo.

    Attributes:
        key: its folder under ``students/``.
        label: its row label in the report.
        role: ``asymmetric`` (trained against the teacher) or ``student-alone``.
        loss: registered loss name; ``params`` its keyword arguments.
        positives, negatives: tuple options (``loss.positives``, ``mining.negatives``).
        projection_init: ``ridge`` or ``random``.
    """

    key: str
    label: str
    role: str
    loss: str
    params: dict[str, Any] = field(default_factory=dict)
    positives: str = "pair"
    negatives: str = "hard"
    projection_init: str = "random"


def _students() -> list[StudentSpec]:
    losses = [
        ("contrastive-plus", "Contr⁺", "contrastive", {"margin": 0.7}, "pair+self", "hard"),
        ("contrastive", "Contr", "contrastive", {"margin": 0.7}, "pair", "hard"),
        ("triplet", "Triplet", "triplet", {"margin": 0.1}, "pair", "hard"),
        ("multi-similarity", "MS", "multi_similarity", {}, "pair", "hard"),
        ("regression", "Reg", "regression", {}, "self", "none"),
        ("rkd", "RKD", "rkd", {}, "pair", "random"),
        ("darkrank", "DarkRank", "darkrank", {}, "pair", "random"),
    ]
    specs = [StudentSpec("student-alone", "Student alone", "student-alone", "contrastive",
                         {"margin": 0.7})]
    for start in ("random", "ridge"):
        specs += [
            StudentSpec(f"{key}-{start}", label, "asymmetric", loss, params, positives,
                        negatives, start)
            for key, label, loss, params, positives, negatives in losses
        ]
    return specs


STUDENTS = _students()


class DemoRun:
    """The demo's run folder and its steps.

    Args:
        out: run folder (created).
        plan: how big the demo is.
        progress: show progress bars.
    """

    def __init__(self, out: str | Path, plan: DemoPlan, progress: bool = True):
        self.out = Path(out)
        self.plan = plan
        self.progress = progress
        self.data_root = self.out / "data"
        self.teacher_dir = self.out / "teacher"
        self.bank_dir = self.out / "teacher-vectors"
        self.teacher_cache = self.out / "cache" / "teacher-activations.safetensors"
        self.student_cache = self.out / "cache" / "student-activations.safetensors"
        self.students = [s for s in STUDENTS
                         if s.role == "student-alone" or s.projection_init in plan.starts]

    # ------------------------------------------------------------------ steps

    def run(self) -> dict[str, Path]:
        """Every step, each skipped when already done; returns the report's files."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.prepare_data()
        teacher = self.train_teacher()
        self.extract_teacher(teacher)
        teacher_eval = self.evaluate(self.teacher_dir, teacher)
        try:
            for spec in self.students:
                self.evaluate(self.out / "students" / spec.key, teacher, self.train_student(spec))
        except KeyboardInterrupt:
            self.write_report(teacher_eval)
            raise
        return self.write_report(teacher_eval)

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
        """The Trainer configuration of the teacher (``spec=None``) or of a student."""
        plan = self.plan
        config = TrainConfig()
        config.data.root = str(self.data_root)
        config.data.train_db = "retrieval-synth"
        config.data.val_sets = []
        config.data.imsize = plan.imsize
        config.data.val_imsize = plan.imsize
        config.mining.num_pairs = plan.num_pairs
        config.mining.pool_size = len(self.train_db)
        config.mining.num_negatives = 5
        config.optim.batch_size = plan.batch_size
        config.optim.lr_decay = 1.0
        config.optim.trainable_stages = plan.trainable_stages
        config.run.out = str(run_dir)
        config.run.progress = self.progress
        config.run.checkpoint_every = 10
        if spec is None:
            config.models.student = TEACHER_ARCH
            config.loss.name = "contrastive"
            config.loss.params = {"margin": 0.7}
            config.loss.similarity = "symmetric"
            config.optim.epochs = plan.teacher_epochs
            config.optim.lr = plan.teacher_lr
            config.run.activation_cache = str(self.teacher_cache)
            return config
        teacher = self._teacher_model_dir()
        config.models.student = f"{STUDENT_ARCH}-{self.teacher_dim}"
        config.models.projection_init = spec.projection_init
        config.models.ridge_lambda = plan.ridge_lambda
        config.models.ridge_images = 0
        config.loss.name = spec.loss
        config.loss.params = dict(spec.params)
        config.loss.positives = spec.positives
        config.mining.negatives = spec.negatives
        if spec.role == "student-alone":
            config.loss.similarity = "symmetric"
        else:
            config.models.teacher = str(teacher)
            config.loss.similarity = "asymmetric"
            config.run.teacher_bank = str(self.bank_dir)
        if spec.negatives == "random":
            config.mining.num_negatives = 1
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
        cache = self.teacher_cache if spec is None else self.student_cache
        net = load_network(model_dir)
        net.freeze_trunk(self.plan.trainable_stages, ActivationCache(cache))
        return net

    def train_teacher(self) -> Teacher:
        """Fine-tune the teacher (symmetric contrastive, hard negatives), then centre its space.

        The fine-tuned GeM vectors all lie in a narrow cone (mean cosine ≈ 0.7 between
        database vectors), and a student started from a random projection collapses towards
        it. As the reference project's teachers carry a learned whitening, the demo's teacher
        gets the mean of its training-image vectors subtracted (a whitening with identity
        rotation, folded into the network) before it indexes anything.
        """
        tuned = self._train(self.teacher_dir, None, "the teacher (Lite2, symmetric)")
        centred_dir = self._teacher_model_dir()
        if not (centred_dir / "config.json").is_file():
            vectors = extract_vectors(tuned, ImageList(self.train_db.paths, self.plan.imsize),
                                      progress=self.progress).double()
            tuned.activation_cache.save()
            centring = Whitening(mean=vectors.mean(0).numpy(),
                                 projection=np.eye(vectors.shape[1]), num_pairs=0)
            save_model(fold_whitening(tuned, centring), centred_dir)
        net = load_network(centred_dir)
        net.freeze_trunk(self.plan.trainable_stages, ActivationCache(self.teacher_cache))
        return Teacher(net)

    def train_student(self, spec: StudentSpec) -> RetrievalNet:
        """Train one student (reused when finished)."""
        start = "" if spec.role == "student-alone" else f", {spec.projection_init} start"
        return self._train(self.out / "students" / spec.key, spec, f"student {spec.label}{start}")

    @cached_property
    def train_db(self) -> TrainingDb:
        """The benchmark's training db (read once)."""
        return TrainingDb.load("retrieval-synth", "train", self.data_root)

    @cached_property
    def test_set(self) -> tuple[RevisitopDataset, ImageList, ImageList]:
        """The test set (read once): the dataset, its cropped queries and its database."""
        dataset = RevisitopDataset.load("synth", self.data_root)
        imsize = self.plan.imsize
        return dataset, dataset.query_images(imsize), dataset.database_images(imsize)

    @cached_property
    def teacher_dim(self) -> int:
        """Dimension of the (centred) teacher's vectors, which the students project to."""
        return load_network(self._teacher_model_dir()).outputdim

    def teacher_bank(self, teacher: Teacher) -> TeacherBank:
        """The teacher's bank, which the students' Trainer runs read too."""
        return TeacherBank(self.bank_dir, teacher, progress=self.progress)

    def extract_teacher(self, teacher: Teacher) -> None:
        """The teacher's vectors of the training images (the students' bank) and of the test
        set, each extracted once."""
        bank = self.teacher_bank(teacher)
        bank.training_vectors("retrieval-synth", self.train_db, self.plan.imsize)
        bank.test_vectors(self.test_set[0], self.plan.imsize)
        teacher.net.activation_cache.save()

    def evaluate(
        self, run_dir: Path, teacher: Teacher, student: RetrievalNet | None = None
    ) -> dict:
        """Results saved in ``run_dir/evaluation.json`` (reused when present): the teacher's
        (``student=None``: the ``teacher`` setting) or a student's ``symmetric`` and
        ``asymmetric`` mAP, Medium precision–recall points and top-10 database indices per
        query."""
        path = run_dir / EVALUATION_FILE
        if path.is_file():
            return json.loads(path.read_text())
        dataset, queries, database = self.test_set
        teacher_q, teacher_x = self.teacher_bank(teacher).test_vectors(dataset, self.plan.imsize)
        vectors = {"teacher": (np.asarray(teacher_q.vectors), np.asarray(teacher_x.vectors))}
        if student is not None:
            vectors["student"] = (
                extract_vectors(student, queries, progress=self.progress).numpy(),
                extract_vectors(student, database, progress=self.progress).numpy(),
            )
            student.activation_cache.save()
        settings = available_settings(vectors)
        if student is not None:
            del settings["teacher"]
        medium = protocol_ground_truth(dataset.gnd, "medium")
        result: dict[str, Any] = {"seconds": _seconds(run_dir)}
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
        rows = [_run_result("Teacher (Lite2, centred)", "teacher", "contrastive", "", teacher_eval)]
        for spec in self.students:
            path = self.out / "students" / spec.key / EVALUATION_FILE
            if path.is_file():
                start = "" if spec.role == "student-alone" else spec.projection_init
                rows.append(_run_result(spec.label, spec.role, spec.loss, start,
                                        json.loads(path.read_text())))
        return rows

    def rankings(self, teacher_eval: dict, spec: StudentSpec) -> list[QueryRanking]:
        """Picture-grid rows: the first queries' top-10, teacher→teacher and student→teacher."""
        path = self.out / "students" / spec.key / EVALUATION_FILE
        if not path.is_file():
            return []
        student_top = json.loads(path.read_text())["asymmetric"]["top"]
        dataset, queries, database = self.test_set
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
        grid_student = next(s for s in STUDENTS if s.key == "contrastive-plus-ridge")
        notes = [
            f"Benchmark: synth ({self.plan.synth.image_size} px), test set of "
            f"{len(self.test_set[0].qimlist)} queries; images at {self.plan.imsize} px.",
            f"Teacher: {TEACHER_ARCH} fine-tuned (symmetric contrastive, hard negatives, "
            f"{self.plan.teacher_epochs} epochs), then centred (the mean of its training-image "
            f"vectors subtracted, as a whitening layer). Students: {STUDENT_ARCH} projected to the "
            f"teacher's dimension, {self.plan.student_epochs} epochs each; all networks train "
            f"their last {self.plan.trainable_stages} trunk stage(s).",
            "Symmetric: each network's queries against its own database. Asymmetric: student "
            "queries against the teacher's database. mAP in percent, revisited protocol.",
            "Projection start: random (as published) or ridge (closed-form fit to the "
            "teacher's vectors before training).",
        ]
        if len(results) < len(self.students) + 1:
            notes.append(f"Partial report: {len(results) - 1} of {len(self.students)} students "
                         "finished; run the demo again to continue.")
        return write_report(self.out, results, self.rankings(teacher_eval, grid_student),
                            title="asymret demo: asymmetric metric learning on synth",
                            notes=notes)


def _seconds(run_dir: Path) -> float:
    path = run_dir / "seconds.txt"
    return float(path.read_text()) if path.is_file() else 0.0


def _run_result(label: str, role: str, loss: str, start: str, evaluation: dict) -> RunResult:
    def curves(setting: str) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.asarray(r), np.asarray(p)) for r, p in evaluation[setting]["pr"]]

    own = "teacher" if role == "teacher" else "symmetric"
    asymmetric = evaluation.get("asymmetric")
    return RunResult(
        label=label, role=role, loss=loss, projection_start=start,
        symmetric_map=evaluation[own]["map"],
        asymmetric_map=None if asymmetric is None else asymmetric["map"],
        pr_curves={"symmetric": curves(own),
                   **({} if asymmetric is None else {"asymmetric": curves("asymmetric")})},
        train_seconds=evaluation["seconds"],
    )


def run_demo(out: str | Path, quick: bool = False, progress: bool = True) -> dict[str, Path]:
    """Run the demo (``quick``: a smaller benchmark and fewer epochs) into ``out``.

    Returns:
        The report's files: ``{"html", "md", "csv"}``.

    Raises:
        AsymretError: the folder holds a demo of the other size.
    """
    plan = PLANS["quick" if quick else "default"]
    run = DemoRun(out, plan, progress=progress)
    marker = run.out / "demo-plan.json"
    wanted = json.dumps({"quick": quick})
    if marker.is_file() and marker.read_text() != wanted:
        raise AsymretError(
            f"{run.out}: holds a demo of the other size (--quick or not); choose another --out"
        )
    write_text_atomic(marker, wanted)
    torch.manual_seed(0)
    return run.run()

