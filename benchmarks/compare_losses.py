"""Every loss on the demo's benchmark, several seeds each: which one to pick.

Trains the student alone, the seven losses of the paper (their presets), the neighbourhood
losses (``csd``, ``raml``, ``rank-order``) and Contr⁺ sums with them, each from its preset at
the demo's scale (:class:`asymret.demo.DemoRun`: the same fine-tuned, centred teacher, bank,
student architecture, epochs and learning rate for every row), once per student seed, and
prints and writes mean ± sample standard deviation of the symmetric and asymmetric Medium
and Hard mAP and of the asymmetric / teacher ratio (asymmetric Medium over the teacher's own
Medium mAP). ``--benchmark-seeds`` repeats everything on other draws of the synth benchmark
(a new teacher each), to see whether the ranking holds. Finished students are reused when
the script is run again::

    .venv/bin/python benchmarks/compare_losses.py --plan quick --seeds 0   # does it run
    .venv/bin/python benchmarks/compare_losses.py --seeds 0 1 2 --benchmark-seeds 0 1

Writes ``<out>/benchmark-<seed>/compare_losses.{csv,md}`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from asymret.data.synth import generate_synth
from asymret.demo import PLANS, STUDENT_ALONE, DemoRun, StudentSpec
from asymret.files import write_text_atomic
from asymret.train.config import TrainConfig

ROWS: tuple[tuple[str, str], ...] = (
    ("trained alone", STUDENT_ALONE),
    ("Contr⁺", "asym-contrastive-plus"),
    ("Contr", "asym-contrastive"),
    ("Triplet", "asym-triplet"),
    ("MS", "asym-multi-similarity"),
    ("Reg", "regression"),
    ("RKD", "rkd"),
    ("DarkRank", "darkrank"),
    ("CSD", "csd"),
    ("RAML", "raml"),
    ("rank order", "rank-order"),
    ("Contr⁺ + 0.5·CSD", "asym-contrastive-plus-csd"),
    ("Contr⁺ + rank order", "asym-contrastive-plus-rank-order"),
    ("Contr⁺ + RAML", "asym-contrastive-plus-raml"),
)
"""(label, preset) of every row, in the table's order."""

COLUMNS = ("sym_medium", "sym_hard", "asym_medium", "asym_hard", "asym_over_teacher")


class SeededDemoRun(DemoRun):
    """The demo's machinery on the synth benchmark drawn with ``benchmark_seed``, training
    each student with the ``run.seed`` its spec names."""

    def __init__(self, out: Path, plan_name: str, benchmark_seed: int, progress: bool):
        super().__init__(out, PLANS[plan_name], progress=progress)
        self.benchmark_seed = benchmark_seed
        self.student_seeds: dict[str, int] = {}

    def prepare_data(self) -> None:
        """The benchmark of this seed (the demo's own step draws seed 0)."""
        marker = self.data_root / "synth-config.json"
        wanted = json.dumps({**self.plan.synth.__dict__, "seed": self.benchmark_seed},
                            sort_keys=True)
        if marker.is_file() and marker.read_text() == wanted:
            return
        generate_synth(self.data_root, seed=self.benchmark_seed, config=self.plan.synth,
                       overwrite=True, progress=self.progress)
        write_text_atomic(marker, wanted)

    def _config(self, run_dir: Path, spec: StudentSpec | None) -> TrainConfig:
        config = super()._config(run_dir, spec)
        if spec is not None:
            config.run.seed = self.student_seeds[spec.key]
        return config


def _scores(evaluation: dict, teacher_medium: float) -> dict[str, float]:
    symmetric, asymmetric = evaluation["symmetric"]["map"], evaluation["asymmetric"]["map"]
    return {"sym_medium": symmetric["medium"], "sym_hard": symmetric["hard"],
            "asym_medium": asymmetric["medium"], "asym_hard": asymmetric["hard"],
            "asym_over_teacher": asymmetric["medium"] / teacher_medium}


def run_benchmark(out: Path, plan: str, benchmark_seed: int, seeds: list[int],
                  presets: set[str] | None, progress: bool) -> tuple[list[dict], dict, float]:
    """Train and evaluate every row × seed; returns per-row results, the teacher's mAP and
    the wall-clock seconds of this call."""
    started = time.perf_counter()
    run = SeededDemoRun(out, plan, benchmark_seed, progress)
    run.out.mkdir(parents=True, exist_ok=True)
    run.prepare_data()
    teacher = run.train_teacher()
    run.extract_teacher(teacher)
    teacher_map = run.evaluate(run.teacher_dir, teacher)["teacher"]["map"]
    rows = []
    for label, preset in ROWS:
        if presets is not None and preset not in presets:
            continue
        per_seed = []
        for seed in seeds:
            spec = StudentSpec(f"{preset}-seed{seed}", label, preset)
            run.student_seeds[spec.key] = seed
            student = run.train_student(spec)
            evaluation = run.evaluate(run.out / "students" / spec.key, teacher, student)
            per_seed.append(_scores(evaluation, teacher_map["medium"]))
        rows.append({"label": label, "preset": preset, "seeds": per_seed})
    return rows, teacher_map, time.perf_counter() - started


def _mean_std(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown_table(rows: list[dict], teacher_map: dict) -> str:
    """The results as a Markdown table: mean ± std over seeds (mAP in percent)."""
    lines = [
        "| student | sym M | sym H | asym M | asym H | asym M / teacher |",
        "|---|---:|---:|---:|---:|---:|",
        f"| teacher (its own database) | {teacher_map['medium']:.1f} | "
        f"{teacher_map['hard']:.1f} | — | — | 1 |",
    ]
    for row in rows:
        cells = [_mean_std([s[c] for s in row["seeds"]], 2 if c == "asym_over_teacher" else 1)
                 for c in COLUMNS]
        lines.append(f"| {row['label']} (`{row['preset']}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(out: Path, rows: list[dict], teacher_map: dict, seconds: float,
                  seeds: list[int]) -> str:
    """``compare_losses.csv`` (one line per row and seed) and ``compare_losses.md``."""
    csv_lines = ["preset,seed," + ",".join(COLUMNS)]
    for row in rows:
        for seed, scores in zip(seeds, row["seeds"], strict=True):
            csv_lines.append(f"{row['preset']},{seed}," +
                             ",".join(f"{scores[c]:.4f}" for c in COLUMNS))
    write_text_atomic(out / "compare_losses.csv", "\n".join(csv_lines) + "\n")
    table = markdown_table(rows, teacher_map)
    note = (f"\n\nSeeds {', '.join(map(str, seeds))}; mean ± sample std; "
            f"{seconds / 60:.1f} min wall clock for this call.\n")
    write_text_atomic(out / "compare_losses.md", table + note)
    return table + note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compare-losses"))
    parser.add_argument("--plan", default="default", choices=sorted(PLANS),
                        help="the demo plan giving the benchmark size, epochs and rates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="student seeds (run.seed) per row")
    parser.add_argument("--benchmark-seeds", type=int, nargs="+", default=[0],
                        help="synth benchmark draws (a teacher each)")
    parser.add_argument("--presets", nargs="+", default=None,
                        help="only these rows (preset names)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="student epochs instead of the plan's (label the results)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.epochs is not None:
        PLANS[args.plan] = replace(PLANS[args.plan], student_epochs=args.epochs)
    for benchmark_seed in args.benchmark_seeds:
        out = args.out / f"{args.plan}-benchmark-{benchmark_seed}"
        rows, teacher_map, seconds = run_benchmark(
            out, args.plan, benchmark_seed, args.seeds,
            None if args.presets is None else set(args.presets), args.progress,
        )
        print(f"\n## synth benchmark seed {benchmark_seed} ({args.plan} plan, "
              f"{PLANS[args.plan].student_epochs} student epochs)\n")
        print(write_results(out, rows, teacher_map, seconds, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
