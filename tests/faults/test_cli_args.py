"""Command-line papercuts of ``asymret train``: options and overrides in any order, clearing
``loss.params``, a line per epoch without progress bars."""

import re

import pytest

from asymret.cli import _parse_args as parse_args
from asymret.cli import build_parser, main
from asymret.errors import AsymretError
from asymret.train import load_config
from train_fixtures import write_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("argv", [
    ["train", "--config", "c.yaml", "--resume", "optim.lr=1e-4", "run.seed=2"],
    ["train", "--resume", "optim.lr=1e-4", "run.seed=2", "--config", "c.yaml"],
    ["train", "optim.lr=1e-4", "--resume", "run.seed=2", "--config", "c.yaml"],
    ["train", "optim.lr=1e-4", "--config", "c.yaml", "run.seed=2", "--resume"],
    ["train", "optim.lr=1e-4", "run.seed=2", "--config", "c.yaml", "--resume"],
])
def test_options_and_overrides_mix_in_any_order(argv):
    args = parse_args(build_parser(), argv)
    assert (args.config, args.resume) == ("c.yaml", True)
    assert args.overrides == ["optim.lr=1e-4", "run.seed=2"]


def test_a_later_override_of_the_same_key_wins_wherever_it_stands(tmp_path):
    args = parse_args(build_parser(), ["train", "optim.lr=1e-4", "--resume", "optim.lr=2e-4"])
    assert load_config(None, ["models.teacher=t", *args.overrides]).optim.lr == 2e-4


def test_a_stray_argument_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(build_parser(), ["train", "optim.lr=1e-4", "--resume", "--bogus"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["train", "optim.lr=1e-4", "--resume", "stray"])
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["download", "roxford5k", "optim.lr=1"])


def test_resume_with_overrides_after_the_flag_runs(tmp_path, data_root, teacher_dir, capsys):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", data_root, out, teacher_dir,
                          optim={"epochs": 1}, data={"val_sets": []})
    assert main(["train", "--config", str(config)]) == 0
    weights = (out / "student" / "model.safetensors").read_bytes()
    (out / "student" / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--resume", "run.progress=false",
                 "run.checkpoint_every=2"]) == 0, capsys.readouterr().err
    assert (out / "student" / "model.safetensors").read_bytes() == weights


@pytest.fixture
def params_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("models: {teacher: t}\nloss: {name: contrastive, params: {margin: 0.5}}\n")
    return path


@pytest.mark.parametrize(("overrides", "params"), [
    ([], {"margin": 0.5}),
    (["loss.params.margin=0.9"], {"margin": 0.9}),
    (["loss.params={}"], {}),
    (["loss.params=null"], {}),
    (["loss.params="], {}),
    (["loss.params={margin: 0.8}"], {"margin": 0.8}),
    (["loss.params=null", "loss.params.margin=0.7"], {"margin": 0.7}),
    (["loss.params.margin=0.7", "loss.params={}"], {}),
])
def test_inherited_loss_params_can_be_replaced_or_cleared(params_config, overrides, params):
    assert load_config(params_config, overrides).loss.params == params


def test_loss_params_that_are_not_a_mapping_are_refused(params_config):
    with pytest.raises(AsymretError, match=r"loss\.params=5: expected a mapping, \{\} or null"):
        load_config(params_config, ["loss.params=5"])


def test_a_run_without_progress_bars_logs_one_line_per_epoch(tmp_path, data_root, teacher_dir,
                                                             capsys):
    config = write_config(tmp_path / "c.yaml", data_root, tmp_path / "run", teacher_dir,
                          data={"val_sets": []}, optim={"epochs": 3})
    capsys.readouterr()
    assert main(["train", "--config", str(config), "run.progress=false"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    pattern = r"epoch {}/3: 3 steps, mean loss \d+\.\d{{4}}, lr [0-9.e-]+, \d+ s"
    assert len(lines) == 3
    for number, line in enumerate(lines, start=1):
        assert re.fullmatch(pattern.format(number), line), line
    assert "it/s" not in captured.err and "step/s" not in captured.err, "no progress bar"


def test_progress_bars_replace_the_epoch_lines(tmp_path, data_root, teacher_dir, capsys):
    config = write_config(tmp_path / "c.yaml", data_root, tmp_path / "run", teacher_dir,
                          data={"val_sets": []}, optim={"epochs": 1})
    capsys.readouterr()
    assert main(["train", "--config", str(config), "run.progress=true"]) == 0
    assert not re.search(r"^epoch 1/1: ", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--imsize", "0", "argument --imsize: must be at least 1, got 0"),
    ("--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
    ("--workers", "-1", "argument --workers: must be 0 or more, got -1"),
    ("--imsize", "big", "argument --imsize: not a whole number: 'big'"),
])
def test_extraction_sizes_and_workers_out_of_range_exit_2(tmp_path, capsys, option, value,
                                                          message):
    with pytest.raises(SystemExit) as exit_:
        main(["extract", "--model", "m", "--dataset", "d", "--out", str(tmp_path / "f"),
              option, value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_an_unknown_extraction_device_is_one_line(tmp_path, teacher_dir, data_root, capsys):
    status = main(["extract", "--model", str(teacher_dir), "--dataset", "tiny", "--root",
                   str(data_root), "--out", str(tmp_path / "f"), "--device", "tpu"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err == ("asymret: error: --device tpu: unknown device 'tpu'; use "
                                   "cpu, cuda, cuda:<index> or mps")
    assert not (tmp_path / "f").exists()
