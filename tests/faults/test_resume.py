"""Kills at chosen points, and one real SIGKILL, then ``--resume``: the same final weights,
byte for byte, and the same logs, in every training mode; a NaN stop resumed at a lower lr."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from asymret.cli import main
from asymret.losses import base as loss_registry
from asymret.models import ActivationCache
from asymret.train import TrainingDiverged, load_config, train
from asymret.train import loop as train_loop
from asymret.train.log import trim_train_log, trim_validation_log, write_validation
from train_fixtures import NanAtThirdCall, write_config

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]

MODES = {
    "whole trunk": {},
    "trainable stages, cache in memory": {"optim": {"trainable_stages": 1}},
    "trainable stages, cache file": {"optim": {"trainable_stages": 1},
                                     "run": {"activation_cache": "cache.safetensors"}},
}
"""Training modes: sections each adds to the tiny config (a cache file lies in its run)."""


class Killed(BaseException):
    """Raised where a kill is simulated: nothing catches it, as nothing survives SIGKILL."""


def mode_config(tmp: Path, name: str, out: Path, data_root: Path, teacher: Path) -> Path:
    """The tiny 2-epoch config of mode ``name``: 3 steps an epoch, validated every epoch."""
    sections = {"optim": {}, "run": {}}
    for section, values in MODES[name].items():
        sections[section] = dict(values)
    if "activation_cache" in sections["run"]:
        sections["run"]["activation_cache"] = str(out / sections["run"]["activation_cache"])
    sections["run"]["val_every"] = 1
    return write_config(tmp / f"{out.name}.yaml", data_root, out, teacher, **sections)


def outcome(run_dir: Path) -> dict:
    """What must not depend on kills: weight bytes, validation log, and each step's log row
    without its wall-clock time."""
    with open(run_dir / "train_log.csv") as handle:
        steps = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
    return {
        "weights": (run_dir / "student" / "model.safetensors").read_bytes(),
        "validation": (run_dir / "validation.csv").read_text(),
        "steps": steps,
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root, teacher_dir):
    """Outcome of an uninterrupted run of each mode."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    results = {}
    for index, name in enumerate(MODES):
        out = tmp / f"mode{index}"
        train(load_config(mode_config(tmp, name, out, data_root, teacher_dir)))
        results[name] = outcome(out)
    return results


def kill_after(monkeypatch, owner, attribute: str, call: int) -> None:
    """Make ``owner.attribute`` raise :class:`Killed` right after its ``call``-th call."""
    original = getattr(owner, attribute)
    calls = []

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == call:
            raise Killed(f"{attribute} call {call}")
        return result

    monkeypatch.setattr(owner, attribute, wrapped)


# Checkpoints of a fresh run: 1 start, 2 epoch 1's tuples, 3-4 after its steps 1-2, 5 its end,
# 6 its validation, 7 epoch 2's tuples, ... (the last step of an epoch is saved by its end).
KILL_POINTS = {
    "mid-epoch, after a step's checkpoint": ("save_checkpoint", 4),
    "after an epoch's end, before its validation": ("save_checkpoint", 5),
    "after epoch 2's tuples were saved": ("save_checkpoint", 7),
    "after a step, before its checkpoint": ("step", 5),
    "between a validation and its checkpoint": ("write_validation", 1),
    "between the final validation and its checkpoint": ("write_validation", 2),
    "after the final student was saved, before its validation": ("save_model", 1),
    "between the activation cache's save and its checkpoint": ("ActivationCache.save", 4),
}


KILL_CASES = [(mode, point) for mode in MODES for point in KILL_POINTS
              if (mode == "trainable stages, cache in memory" or "tuples" not in point)
              and (mode != "whole trunk" or "activation cache" not in point)]
"""Every kill point in the mode the activation cache made inexact; all but one in the others
(and the cache's own point where there is a cache)."""


@pytest.mark.parametrize(("mode", "point"), KILL_CASES)
def test_a_kill_then_resume_gives_the_same_weights_and_logs(tmp_path, data_root, teacher_dir,
                                                            uninterrupted, mode, point):
    out = tmp_path / "killed"
    config_path = mode_config(tmp_path, mode, out, data_root, teacher_dir)
    attribute, call = KILL_POINTS[point]
    with pytest.MonkeyPatch.context() as patch:
        owner = {"step": train_loop.TrainLog, "ActivationCache.save": ActivationCache}.get(
            attribute, train_loop)
        kill_after(patch, owner, attribute.rpartition(".")[2], call)
        with pytest.raises(Killed):
            train(load_config(config_path))
    train(load_config(config_path), resume=True)
    resumed, expected = outcome(out), uninterrupted[mode]
    assert resumed["weights"] == expected["weights"], "final weights differ"
    assert resumed["validation"] == expected["validation"], "validation.csv differs"
    assert resumed["steps"] == expected["steps"]


def test_a_validation_killed_before_its_checkpoint_is_logged_once(tmp_path, data_root,
                                                                  teacher_dir):
    out = tmp_path / "run"
    config_path = mode_config(tmp_path, "whole trunk", out, data_root, teacher_dir)
    with pytest.MonkeyPatch.context() as patch:
        kill_after(patch, train_loop, "write_validation", 1)
        with pytest.raises(Killed):
            train(load_config(config_path))
    train(load_config(config_path), resume=True)
    with open(out / "validation.csv") as handle:
        keys = [(row["epoch"], row["dataset"], row["setting"]) for row in csv.DictReader(handle)]
    assert len(keys) == len(set(keys)) == 2 * 3, keys


@pytest.mark.slow
def test_sigkill_at_a_random_step_with_trainable_stages_then_resume_is_exact(
        tmp_path, data_root, teacher_dir, uninterrupted):
    mode = "trainable stages, cache in memory"
    out = tmp_path / "killed"
    config_path = mode_config(tmp_path, mode, out, data_root, teacher_dir)
    kill_at = random.Random(os.urandom(8)).randint(1, 5)  # logged steps before the kill
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "asymret", "train", "--config", str(config_path)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    log = out / "train_log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) > kill_at:
            break
        time.sleep(0.01)
    assert process.poll() is None, f"the run ended before step {kill_at} could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    subprocess.run([*command, "--resume"], env=env, check=True, stdout=subprocess.DEVNULL)
    resumed, expected = outcome(out), uninterrupted[mode]
    assert resumed["weights"] == expected["weights"], f"killed after step {kill_at}"
    assert resumed["validation"] == expected["validation"], f"killed after step {kill_at}"
    assert resumed["steps"] == expected["steps"], f"killed after step {kill_at}"


def test_a_nan_stop_resumes_at_the_lower_lr_it_advises(tmp_path, data_root, teacher_dir,
                                                       monkeypatch):
    monkeypatch.setitem(loss_registry._REGISTRY, "test_nan_at_third_call", NanAtThirdCall)
    out = tmp_path / "run"
    config_path = write_config(tmp_path / "c.yaml", data_root, out, teacher_dir,
                               loss={"name": "test_nan_at_third_call"}, data={"val_sets": []})
    NanAtThirdCall.calls = 0
    with pytest.raises(TrainingDiverged, match=r"--resume optim\.lr=0\.0001 ") as stop:
        train(load_config(config_path))
    assert "epoch 1, step 3" in str(stop.value)
    train(load_config(config_path, ["optim.lr=0.0001"]), resume=True)
    decay = load_config(config_path).optim.lr_decay
    with open(out / "train_log.csv") as handle:
        rates = [(int(row["epoch"]), int(row["step"]), float(row["lr"]))
                 for row in csv.DictReader(handle)]
    assert [(e, s) for e, s, _ in rates] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert [lr for e, s, lr in rates if (e, s) <= (1, 2)] == [1e-3, 1e-3]
    for epoch, _, lr in rates[2:]:
        assert lr == pytest.approx(1e-4 * decay ** (epoch - 1), rel=1e-12)
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 1e-4
    assert (out / "student" / "model.safetensors").is_file()


def test_resume_without_config_yaml_is_one_line(tmp_path, data_root, teacher_dir, capsys):
    out = tmp_path / "run"
    config_path = write_config(tmp_path / "c.yaml", data_root, out, teacher_dir,
                               optim={"epochs": 1}, data={"val_sets": []})
    train(load_config(config_path))
    checkpoint = (out / "checkpoints" / "last.pt").read_bytes()
    (out / "config.yaml").unlink()
    assert main(["train", "--config", str(config_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.yaml: missing" in err, err
    (out / "config.yaml").write_text("optim: [1, 2]\n")
    assert main(["train", "--config", str(config_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.yaml: 'optim' must be a mapping" in err, err
    assert (out / "checkpoints" / "last.pt").read_bytes() == checkpoint, "nothing lost"


def test_a_resume_may_not_change_the_seed(tmp_path, data_root, teacher_dir):
    config_path = write_config(tmp_path / "c.yaml", data_root, tmp_path / "run", teacher_dir,
                               optim={"epochs": 1}, data={"val_sets": []})
    train(load_config(config_path))
    with pytest.raises(Exception, match=r"run\.seed=3, not 4"):
        train(load_config(config_path, ["run.seed=4"]), resume=True)
    with pytest.raises(Exception, match=r"different 'optim' settings \(optim\.weight_decay\)"):
        train(load_config(config_path, ["optim.weight_decay=0.1"]), resume=True)



def _read(path: Path) -> list[tuple[str, ...]]:
    with open(path, newline="") as handle:
        return [tuple(row) for row in csv.reader(handle)]


def test_a_validation_replaces_its_epochs_rows_and_a_resume_drops_later_and_cut_ones(tmp_path):
    path = tmp_path / "validation.csv"

    def rows(epoch: int, value: float) -> list[dict]:
        return [{"epoch": epoch, "dataset": "tiny", "setting": setting, "map_medium": value}
                for setting in ("symmetric", "teacher")]

    write_validation(path, 1, rows(1, 10.0))
    write_validation(path, 2, rows(2, 20.0))
    write_validation(path, 2, rows(2, 21.0))  # epoch 2 validated again after a kill
    header = ("epoch", "dataset", "setting", "map_medium")
    assert _read(path) == [header, ("1", "tiny", "symmetric", "10.0"),
                           ("1", "tiny", "teacher", "10.0"), ("2", "tiny", "symmetric", "21.0"),
                           ("2", "tiny", "teacher", "21.0")]
    with open(path, "a") as handle:
        handle.write("3,tiny,symm")  # a row cut short by a kill while it was written
    trim_validation_log(path, 2)
    assert [row[0] for row in _read(path)] == ["epoch", "1", "1", "2", "2"]
    trim_validation_log(path, 1)
    assert [row[0] for row in _read(path)] == ["epoch", "1", "1"]
    trim_validation_log(path, 0)
    assert not path.exists()


def test_a_resume_drops_the_train_log_rows_after_its_checkpoint_and_a_cut_row(tmp_path):
    path = tmp_path / "train_log.csv"
    path.write_text("epoch,step,loss\n1,1,0.5\n1,2,0.4\n1,3,0.3\n2,1,0.2\n2,")  # cut: "2,"
    trim_train_log(path, 1, 0)  # checkpoint: epoch 2 (0-based 1) with no step done
    assert _read(path) == [("epoch", "step", "loss"), ("1", "1", "0.5"), ("1", "2", "0.4"),
                           ("1", "3", "0.3")]
    trim_train_log(path, 0, 1)
    assert _read(path) == [("epoch", "step", "loss"), ("1", "1", "0.5")]
