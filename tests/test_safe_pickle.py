import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from asymret.errors import AsymretError
from asymret.safe_pickle import UnsafePickleError, load_pickle, loads_pickle

SHARED_REVISITOP = Path(__file__).resolve().parents[2] / "shared" / "data" / "revisitop"


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch should-not-exist",))


def test_plain_containers_and_numpy_round_trip():
    obj = {
        "imlist": ["a", "b"],
        "gnd": [{"bbx": [1.0, 2.0, 3.0, 4.0], "easy": [0], "hard": [], "junk": [1]}],
        "arr": np.arange(6, dtype=np.int64).reshape(2, 3),
        "f32": np.linspace(0, 1, 5, dtype=np.float32),
        "scalar": np.float64(2.5),
        "set": {1, 2},
        "tuple": (1, "x", None, True),
    }
    for protocol in (2, 3, 4, 5):
        out = loads_pickle(pickle.dumps(obj, protocol=protocol))
        assert out["imlist"] == obj["imlist"] and out["gnd"] == obj["gnd"]
        np.testing.assert_array_equal(out["arr"], obj["arr"])
        np.testing.assert_array_equal(out["f32"], obj["f32"])
        assert out["scalar"] == 2.5 and out["set"] == {1, 2} and out["tuple"] == obj["tuple"]


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "gnd_evil.pkl"
    path.write_bytes(pickle.dumps({"gnd": _RunsCode()}))
    with pytest.raises(UnsafePickleError, match=r"gnd_evil\.pkl.*(posix|os)\.system"):
        load_pickle(path)
    assert not (tmp_path / "should-not-exist").exists()


def test_object_array_cannot_smuggle_code():
    arr = np.empty(1, dtype=object)
    arr[0] = _RunsCode()
    with pytest.raises(UnsafePickleError):
        loads_pickle(pickle.dumps(arr))


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(AsymretError, match=r"nope\.pkl"):
        load_pickle(tmp_path / "nope.pkl")
    bad = tmp_path / "truncated.pkl"
    bad.write_bytes(pickle.dumps({"a": list(range(100))})[:20])
    with pytest.raises(AsymretError, match=r"truncated\.pkl"):
        load_pickle(bad)


@pytest.mark.skipif(not SHARED_REVISITOP.is_dir(), reason="shared revisitop annotations absent")
@pytest.mark.parametrize("name", ["gnd_roxford5k.pkl", "gnd_rparis6k.pkl"])
def test_official_annotation_files_load(name):
    data = load_pickle(SHARED_REVISITOP / name)
    assert set(data) >= {"gnd", "imlist", "qimlist"}
    assert len(data["qimlist"]) == len(data["gnd"]) == 70
