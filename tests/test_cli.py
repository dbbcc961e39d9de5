import json

import numpy as np
import pytest
from PIL import Image

from asymret.cli import build_parser, main
from asymret.data.revisitop import write_gnd
from asymret.evaluate import evaluate_retrieval


@pytest.fixture
def feature_files(tmp_path):
    rng = np.random.default_rng(0)
    database = rng.normal(size=(30, 8)).astype(np.float32)
    queries = database[[0, 10]] + 0.1 * rng.normal(size=(2, 8)).astype(np.float32)
    gnd = [
        {"bbx": [0, 0, 1, 1], "easy": [0, 1, 2], "hard": [3, 4], "junk": [5]},
        {"bbx": [0, 0, 1, 1], "easy": [10, 11], "hard": [], "junk": [12, 13]},
    ]
    paths = {"gnd": tmp_path / "gnd_toy.pkl", "q": tmp_path / "Q.npy", "x": tmp_path / "X.npy"}
    write_gnd(paths["gnd"], [f"d{i}" for i in range(30)], ["q0", "q1"], gnd)
    np.save(paths["q"], queries)
    np.save(paths["x"], database)
    return paths, queries, database, gnd


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_evaluate_features_json_equals_the_library(capsys, feature_files):
    paths, queries, database, gnd = feature_files
    status, out, err = run(
        capsys, "evaluate-features", "--gnd", str(paths["gnd"]), "--queries", str(paths["q"]),
        "--database", str(paths["x"]), "--json",
    )
    assert status == 0 and err == ""
    printed = json.loads(out)
    expected = evaluate_retrieval(queries, database, gnd).to_dict()
    assert printed == expected
    assert set(printed) == {"map", "mp@k"} and printed["mp@k"]["k"] == [1, 5, 10]
    assert set(printed["map"]) == {"easy", "medium", "hard"}


def test_evaluate_features_table(capsys, feature_files):
    paths, *_ = feature_files
    status, out, _ = run(
        capsys, "evaluate-features", "--gnd", str(paths["gnd"]), "--queries", str(paths["q"]),
        "--database", str(paths["x"]),
    )
    assert status == 0 and "mAP" in out and "mP@" in out


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: np.save(p["q"], np.zeros((2, 5), np.float32)), "dimension"),
        (lambda p: np.save(p["q"], np.full((2, 8), np.nan, np.float32)), "NaN"),
        (lambda p: np.save(p["x"], np.ones((12, 8), np.float32)), "index 12 is outside"),
        (lambda p: p["x"].unlink(), "X.npy"),
    ],
)
def test_evaluate_features_user_errors_are_one_line(capsys, feature_files, corrupt, message):
    paths, *_ = feature_files
    corrupt(paths)
    argv = ["evaluate-features", "--gnd", str(paths["gnd"]), "--queries", str(paths["q"]),
            "--database", str(paths["x"])]
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith("asymret: error: ") and err.count("\n") == 1
    assert message.lower() in err.lower()
    status, _, err = run(capsys, "--debug", *argv)
    assert status == 2 and "Traceback" in err


def test_demo_refuses_a_folder_of_another_plan(capsys, tmp_path):
    (tmp_path / "demo-plan.json").write_text(json.dumps({"plan": "quick", "version": 2}))
    status, out, err = run(capsys, "demo", "--long", "--out", str(tmp_path))
    assert status == 2 and out == ""
    assert err == f"asymret: error: {tmp_path}: holds the 'quick' demo, not the 'long' one; " \
        "choose another --out or delete it\n"
    (tmp_path / "demo-plan.json").write_text(json.dumps({"quick": True}))
    status, _, err = run(capsys, "demo", "--out", str(tmp_path))
    assert status == 2 and "holds a demo of an older asymret, not the 'default' one" in err


def test_models_lists_names(capsys):
    status, out, _ = run(capsys, "models")
    assert status == 0 and "efficientnet_b3-gem-2048" in out and "resnet101-gem" in out


def test_data_check_names_every_bad_image(capsys, tmp_path):
    (tmp_path / "images.csv").write_text(
        "path,instance,role\ngood.jpg,a,train\nbroken.jpg,a,train\nmissing.jpg,b,query\n"
    )
    Image.new("RGB", (8, 8)).save(tmp_path / "good.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    status, out, err = run(capsys, "data", "check", str(tmp_path))
    assert status == 2 and "2 problem(s)" in err
    assert "broken.jpg: cannot decode" in out and "missing.jpg: image file not found" in out
    (tmp_path / "broken.jpg").unlink()
    Image.new("RGB", (8, 8)).save(tmp_path / "broken.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "missing.jpg")
    status, out, _ = run(capsys, "data", "check", str(tmp_path))
    assert status == 0 and "all images readable" in out


def test_download_unreachable_host_is_one_line(capsys, tmp_path):
    status, _, err = run(capsys, "download", "roxford5k", "--root", str(tmp_path), "--quiet",
                         "--mirror", "http://127.0.0.1:9")
    assert status == 2 and err.startswith("asymret: error: ") and "127.0.0.1:9" in err


def test_every_subcommand_help_shows_an_example():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        if name == "data":
            for data_sub in sub._subparsers._group_actions[0].choices.values():
                assert "example:" in data_sub.format_help()
        else:
            assert "example:" in sub.format_help(), name


def test_data_synth_writes_the_benchmark_and_refuses_to_overwrite(capsys, tmp_path):
    status, out, _ = run(capsys, "data", "synth", "--out", str(tmp_path), "--size", "small",
                         "--quiet")
    assert status == 0 and out.strip() == str(tmp_path)
    assert (tmp_path / "synth" / "gnd_synth.pkl").is_file()
    status, _, err = run(capsys, "data", "synth", "--out", str(tmp_path), "--size", "small",
                         "--quiet")
    assert status == 2 and "overwrite" in err
    status, _, _ = run(capsys, "data", "synth", "--out", str(tmp_path), "--size", "small",
                       "--quiet", "--overwrite")
    assert status == 0
