"""Malformed input files and odd values: the right result, or one line naming the file.

Photo-folder CSVs saved by spreadsheets (a UTF-8 BOM), in another encoding, with NUL bytes
or infinite boxes; and ``--json`` outputs, which must stay JSON when a score is NaN.
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

from asymret.cli import main, print_json
from asymret.data.folder import PhotoFolder
from asymret.data.revisitop import write_gnd
from asymret.errors import AsymretError

HEADER = "path,instance,role,x1,y1,x2,y2"


def _folder(tmp_path, text: str | bytes):
    folder = tmp_path / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("q.png", "d.png", "t0.png", "t1.png"):
        Image.new("RGB", (20, 10), (len(name) * 30, 40, 90)).save(folder / name)
    data = text.encode("utf-8") if isinstance(text, str) else text
    (folder / "images.csv").write_bytes(data)
    return folder


def _strict_json(text: str):
    """``json.loads`` that refuses NaN and infinities, as strict JSON readers do."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


ROWS = "q.png,tower,query,2,1,18,9\nd.png,tower,database,,,,\nt0.png,x,,,,,\nt1.png,x,,,,,\n"


def test_a_csv_with_a_utf8_bom_reads_as_without(tmp_path):
    plain = PhotoFolder.load(_folder(tmp_path / "a", f"{HEADER}\n{ROWS}"))
    with_bom = PhotoFolder.load(_folder(tmp_path / "b", "\ufeff" + f"{HEADER}\n{ROWS}"))
    assert with_bom.rows == plain.rows and len(plain.rows) == 4
    assert with_bom.rows[0].bbox == (2.0, 1.0, 18.0, 9.0)


def test_a_spreadsheets_crlf_and_bom_csv_reads_too(tmp_path):
    text = "\ufeff" + f"{HEADER}\n{ROWS}".replace("\n", "\r\n")
    folder = PhotoFolder.load(_folder(tmp_path, text))
    assert [row.path for row in folder.rows] == ["q.png", "d.png", "t0.png", "t1.png"]


def test_a_csv_in_another_encoding_is_one_line_naming_the_line(tmp_path):
    text = f"{HEADER}\n{ROWS}caf\xe9.png,x,,,,,\n".encode("latin-1")
    folder = _folder(tmp_path, text)
    offset = text.index(b"\xe9")
    with pytest.raises(AsymretError) as caught:
        PhotoFolder.load(folder)
    assert str(caught.value) == (
        f"{folder / 'images.csv'}:6: not UTF-8 text (byte 0xe9 at offset {offset}); save the "
        "CSV as UTF-8"
    )
    assert main(["data", "check", str(folder)]) == 2


def test_a_csv_with_a_nul_byte_is_one_line(tmp_path):
    folder = _folder(tmp_path, f"{HEADER}\nq.png,tower,query,,,,\nd\0.png,tower,,,,,\n")
    with pytest.raises(AsymretError, match=r"images\.csv:3: 'd\\x00\.png' holds a control "
                       r"character"):
        PhotoFolder.load(folder)


@pytest.mark.parametrize("box", ["0,0,inf,9", "-inf,0,5,9", "0,nan,5,9", "0,0,1e400,9"])
def test_infinite_or_nan_boxes_are_named_with_their_line(tmp_path, box):
    folder = _folder(tmp_path, f"{HEADER}\nd.png,tower,database,,,,\nq.png,tower,query,{box}\n")
    with pytest.raises(AsymretError, match=r"images\.csv:3: 'q\.png' has a box with a "
                       r"non-finite number"):
        PhotoFolder.load(folder)
    loose = PhotoFolder.load(folder, strict=False)
    assert [row.path for row in loose.rows] == ["d.png"] and len(loose.problems) == 1


def test_data_check_lists_a_box_beyond_the_image(tmp_path, capsys):
    folder = _folder(tmp_path, f"{HEADER}\nq.png,tower,query,2,1,30,9\nd.png,tower,database,,,,\n")
    assert main(["data", "check", str(folder)]) == 2
    out = capsys.readouterr().out
    assert "box [2.0, 1.0, 30.0, 9.0] exceeds the image 20x10" in out


# --- --json never prints NaN -----------------------------------------------------------


def test_print_json_writes_null_for_nan_and_infinities(capsys):
    print_json({"map": {"easy": np.float32(40.5), "hard": float("nan")},
                "mp@k": [np.float64("inf"), -math.inf, np.int64(3)], "ok": True})
    out = capsys.readouterr().out
    assert _strict_json(out) == {"map": {"easy": 40.5, "hard": None},
                                 "mp@k": [None, None, 3], "ok": True}
    assert "NaN" not in out and "Infinity" not in out


def test_evaluate_features_json_has_null_for_a_protocol_without_positives(tmp_path, capsys):
    gnd = write_gnd(tmp_path / "gnd.pkl", ["a", "b", "c"], ["q"],
                    [{"easy": [0], "hard": [], "junk": [2]}])  # Hard: no positive
    database = np.eye(4, dtype=np.float32)[:3]  # a, b, c
    np.save(tmp_path / "q.npy", np.array([[0.6, 0.8, 0, 0]], np.float32))  # ranks b, a, c
    np.save(tmp_path / "x.npy", database)
    assert main(["evaluate-features", "--gnd", str(gnd), "--queries", str(tmp_path / "q.npy"),
                 "--database", str(tmp_path / "x.npy"), "--json"]) == 0
    result = _strict_json(capsys.readouterr().out)
    assert result["map"]["hard"] is None and all(v is None for v in result["mp@k"]["hard"])
    # Easy: the one positive a is ranked second, after b; the official compute_ap's trapezoid
    # rule gives (0/1 + 1/2) / 2.
    assert result["map"]["easy"] == pytest.approx(25.0)
