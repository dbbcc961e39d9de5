"""How the paper's first finding (F1) moves with the training budget on synth.

F1: students trained asymmetrically with Contr⁺ and Contr beat the same student trained
alone in the symmetric test. This trains the student alone, Contr⁺ and Contr with the demo's
recipe (presets at the demo's scale) for ``--epochs`` epochs, validating on the test set
every ``--every`` epochs, for each number of trainable student stages and each projection
start asked, and prints symmetric Medium mAP per epoch with the gap of each asymmetric
student to the student alone (positive: F1 holds at that budget).

The benchmark, the teacher and its bank are taken from a finished demo folder (``asymret
demo``; linked, not copied), so every row shares the demo's teacher::

    .venv/bin/python benchmarks/f1_budget.py --demo runs/demo --epochs 48 --every 4
    .venv/bin/python benchmarks/f1_budget.py --demo runs/demo --stages 1 2 --starts random ridge
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

from asymret.demo import PLANS, DemoRun, demo_students
from asymret.train.log import VALIDATION_LOG_NAME

SHARED = ("data", "teacher", "teacher-vectors")
ROWS = ("sym-student-alone", "asym-contrastive-plus", "asym-contrastive")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"),
                        help="a finished demo folder (its benchmark, teacher and bank)")
    parser.add_argument("--out", type=Path, default=Path("runs/f1-budget"))
    parser.add_argument("--epochs", type=int, default=48)
    parser.add_argument("--every", type=int, default=4, help="validate every N epochs")
    parser.add_argument("--stages", type=int, nargs="+", default=[1],
                        help="trainable trunk stages of the students")
    parser.add_argument("--starts", nargs="+", default=["random"], choices=("random", "ridge"))
    args = parser.parse_args()
    if not (args.demo / "teacher" / "centred" / "config.json").is_file():
        print(f"{args.demo}: not a finished demo folder; run `asymret demo` first",
              file=sys.stderr)
        return 2
    for stages in args.stages:
        out = args.out / f"stages-{stages}"
        (out / "cache").mkdir(parents=True, exist_ok=True)
        for name in SHARED:
            if not (out / name).exists():
                (out / name).symlink_to((args.demo / name).resolve())
        teacher_cache = out / "cache" / "teacher-activations.safetensors"
        if not teacher_cache.exists():
            teacher_cache.symlink_to((args.demo / "cache" / teacher_cache.name).resolve())
        plan = replace(PLANS["default"], student_epochs=args.epochs, val_every=args.every,
                       student_stages=stages, starts=tuple(args.starts))
        run = DemoRun(out, plan, progress=False)
        curves = {}
        for spec in demo_students(plan.starts):
            if spec.preset not in ROWS:
                continue
            run.train_student(spec)
            with open(out / "students" / spec.key / VALIDATION_LOG_NAME, newline="") as handle:
                curves[spec] = {int(row["epoch"]): float(row["map_medium"])
                                for row in csv.DictReader(handle)
                                if row["setting"] == "symmetric"}
        print_table(stages, curves)
    return 0


def print_table(stages: int, curves: dict) -> None:
    """Epoch rows: each run's symmetric Medium mAP, then each asymmetric run's gap to alone."""
    alone = next(points for spec, points in curves.items() if spec.role == "student-alone")
    others = [spec for spec in curves if spec.role == "asymmetric"]
    names = ["alone", *(f"{s.label} {s.projection_init}" for s in others)]
    gaps = [f"Δ {s.label} {s.projection_init}" for s in others]
    print(f"\nstudents fine-tune {stages} trunk stage(s); symmetric Medium mAP, synth test set")
    print("epoch " + "".join(f"{n:>16s}" for n in names + gaps))
    for epoch in sorted(alone):
        values = [alone[epoch], *(curves[s].get(epoch, float("nan")) for s in others)]
        deltas = [curves[s].get(epoch, float("nan")) - alone[epoch] for s in others]
        print(f"{epoch:5d} " + "".join(f"{v:16.1f}" for v in values)
              + "".join(f"{d:+16.1f}" for d in deltas))


if __name__ == "__main__":
    sys.exit(main())
