"""A full disk while writing stores, metadata, networks and checkpoints: one clear line
naming the file, the previous state intact, no stray temporary file.

Two kinds of test: a real small file system that fills up (a tmpfs mount, when running as
root where mounting works; skipped otherwise), and a portable simulation in which the
system calls raise ``ENOSPC``/``EDQUOT`` (monkeypatched), so the logic is tested everywhere.
Without the reservation of a store's space, writing vectors into its memory map on a full
tmpfs kills the process with SIGBUS (``test_vectors_written_on_a_full_disk_...``).
"""

import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from asymret.errors import AsymretError
from asymret.features import FeatureStore
from asymret.files import reserve_space, write_text_atomic
from asymret.models import create_model, load_model, save_model
from asymret.train.checkpoint import TrainState, load_checkpoint, save_checkpoint

META = {"source": "test"}


def _filler(folder: Path) -> Path:
    """Fill the file system of ``folder`` up to its last byte; return the filler file."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (65536, 4096, 64, 1):  # then smaller and smaller writes
            try:
                while True:
                    os.write(descriptor, b"\0" * block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    return filler


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted at a fresh folder; skipped unless root and mounting works."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _ids(count: int) -> list[str]:
    return [f"im{i:05d}" for i in range(count)]


def _unit_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _tiny_checkpoint_parts():
    net = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    return net, optimizer, scheduler


# --- A real file system that fills up --------------------------------------------------


def test_a_store_larger_than_the_disk_is_refused_at_creation(small_disk):
    store_dir = small_disk / "store"
    with pytest.raises(AsymretError) as caught:
        FeatureStore.create(store_dir, _ids(1024), 512, META)  # 2 MiB on a 1 MiB disk
    message = str(caught.value)
    assert message.startswith(f"{store_dir / 'vectors.npy'}: cannot write it: ")
    assert "No space left on device" in message and "\n" not in message
    assert sorted(p.name for p in store_dir.iterdir()) == []
    assert os.statvfs(small_disk).f_bfree * os.statvfs(small_disk).f_frsize > 900_000


def test_a_store_reserves_its_blocks_and_fills_on_a_full_disk(small_disk):
    store = FeatureStore.create(small_disk / "store", _ids(256), 256, META)  # 256 KiB
    vectors_file = small_disk / "store" / "vectors.npy"
    allocated = os.stat(vectors_file).st_blocks * 512
    assert allocated >= vectors_file.stat().st_size, "the vectors' blocks must be allocated"
    filler = _filler(small_disk)
    rows = _unit_rows(256, 256)
    # The vectors land in reserved blocks; replacing meta.json needs a new block: refused.
    with pytest.raises(AsymretError, match=r"meta\.json: cannot write it: No space left"):
        store.write(0, rows[:128])
    assert not list(small_disk.glob("store/.*.tmp"))
    reopened = FeatureStore.open(small_disk / "store", writable=True)
    assert reopened.complete_rows == 0, "the chunk whose record failed is not counted done"
    filler.unlink()
    reopened.write(0, rows[:128])
    reopened.write(128, rows[128:])
    done = FeatureStore.open(small_disk / "store", verify="full")
    np.testing.assert_array_equal(np.asarray(done.vectors), rows)


def test_vectors_written_on_a_full_disk_without_reservation_die_with_sigbus(small_disk):
    """Why the space is reserved: a sparse memory map on a full disk kills the process."""
    script = (
        "import numpy as np, sys\n"
        "m = np.lib.format.open_memmap(sys.argv[1], mode='w+', dtype='float32', "
        "shape=(512, 1024))\n"  # 2 MiB sparse file on a 1 MiB disk
        "m[:] = 1.0\n"
        "m.flush()\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(small_disk / "v.npy")],
                            capture_output=True)
    assert result.returncode == -signal.SIGBUS, result


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(small_disk):
    net, optimizer, scheduler = _tiny_checkpoint_parts()
    path = small_disk / "checkpoints" / "last.pt"
    path.parent.mkdir()
    save_checkpoint(path, TrainState(epoch=1, step=3), net, optimizer, scheduler)
    before = path.read_bytes()
    _filler(small_disk)
    with torch.no_grad():
        net.weight.add_(1.0)
    with pytest.raises(AsymretError) as caught:
        save_checkpoint(path, TrainState(epoch=2, step=0), net, optimizer, scheduler)
    assert str(caught.value).startswith(f"{path}: cannot write it: No space left on device")
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    assert path.read_bytes() == before
    state = load_checkpoint(path, *_tiny_checkpoint_parts(), torch.device("cpu"))
    assert (state.epoch, state.step) == (1, 3)


def test_saving_a_network_on_a_full_disk_leaves_no_temporary(small_disk):
    net = create_model("test_efficientnet-gem-16")
    _filler(small_disk)
    with pytest.raises(AsymretError, match=r"model\.safetensors: cannot write it: No space"):
        save_model(net, small_disk / "student")
    assert list((small_disk / "student").iterdir()) == []


def test_atomic_text_write_on_a_full_disk_keeps_the_old_text(small_disk):
    path = small_disk / "meta.json"
    write_text_atomic(path, "old\n")
    _filler(small_disk)
    with pytest.raises(AsymretError, match=r"meta\.json: cannot write it: No space left"):
        write_text_atomic(path, "x" * 100_000)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "meta.json"]


# --- The same faults, simulated --------------------------------------------------------


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_reservation_failure_removes_the_new_store(tmp_path, monkeypatch, code):
    monkeypatch.setattr(os, "posix_fallocate", _raise(code), raising=False)
    with pytest.raises(AsymretError) as caught:
        FeatureStore.create(tmp_path / "store", _ids(10), 8, META)
    assert str(caught.value) == (
        f"{tmp_path / 'store' / 'vectors.npy'}: cannot write it: {os.strerror(code)}; free "
        "some space and run again (nothing half-written was kept)"
    )
    assert list((tmp_path / "store").iterdir()) == []


def test_file_systems_that_cannot_reserve_are_left_as_they_are(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "posix_fallocate", _raise(errno.EOPNOTSUPP), raising=False)
    store = FeatureStore.create(tmp_path / "store", _ids(10), 8, META)
    store.write(0, _unit_rows(10, 8))
    assert FeatureStore.open(tmp_path / "store", verify="full").is_complete
    monkeypatch.setattr(os, "posix_fallocate", _raise(errno.EIO), raising=False)
    with pytest.raises(OSError, match="Input/output error"):  # not mistaken for "no space"
        reserve_space(tmp_path / "store" / "vectors.npy", 10)


def test_resuming_an_old_sparse_store_reserves_its_space(tmp_path, monkeypatch):
    FeatureStore.create(tmp_path / "store", _ids(10), 8, META)
    monkeypatch.setattr(os, "posix_fallocate", _raise(errno.ENOSPC), raising=False)
    with pytest.raises(AsymretError, match=r"vectors\.npy: cannot write it: No space left"):
        FeatureStore.open(tmp_path / "store", writable=True)


def test_metadata_write_failure_keeps_the_store_resumable(tmp_path, monkeypatch):
    store = FeatureStore.create(tmp_path / "store", _ids(10), 8, META)
    rows = _unit_rows(10, 8)
    store.write(0, rows[:5])
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", _raise(errno.ENOSPC))
        with pytest.raises(AsymretError, match=r"store/meta\.json: cannot write it: No space"):
            store.write(5, rows[5:])
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [
        "ids.json", "meta.json", "vectors.npy"]
    reopened = FeatureStore.open(tmp_path / "store", writable=True)
    assert reopened.complete_rows == 5
    reopened.write(5, rows[5:])
    np.testing.assert_array_equal(
        np.asarray(FeatureStore.open(tmp_path / "store", verify="full").vectors), rows)


class _FullDiskFile(io.BufferedWriter):
    """A file whose writes fail with ENOSPC once ``room`` bytes were written."""

    def __init__(self, path, room: int):
        super().__init__(io.FileIO(path, "wb"))
        self.room = room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return super().write(data)


def test_checkpoint_write_failure_inside_torch_names_the_checkpoint(tmp_path, monkeypatch):
    """torch.save wraps the failed write in a RuntimeError; its cause is still found."""
    import asymret.train.checkpoint as checkpoint_module

    net, optimizer, scheduler = _tiny_checkpoint_parts()
    path = tmp_path / "last.pt"
    save_checkpoint(path, TrainState(epoch=1), net, optimizer, scheduler)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint_module, "open",
                        lambda name, mode: _FullDiskFile(name, room=200), raising=False)
    with pytest.raises(AsymretError) as caught:
        save_checkpoint(path, TrainState(epoch=2), net, optimizer, scheduler)
    assert str(caught.value).startswith(f"{path}: cannot write it: No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert path.read_bytes() == before


def test_other_write_errors_still_propagate_and_clean_up(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _raise(errno.EIO))
    with pytest.raises(OSError, match="Input/output error"):
        write_text_atomic(tmp_path / "a.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_network_write_failure_names_the_weights(tmp_path, monkeypatch):
    net = create_model("test_efficientnet-gem-16")
    save_model(net, tmp_path / "student")
    before = (tmp_path / "student" / "model.safetensors").read_bytes()
    monkeypatch.setattr(Path, "write_bytes", _raise(errno.EDQUOT))
    with pytest.raises(AsymretError, match=r"model\.safetensors: cannot write it: Disk quota"):
        save_model(net, tmp_path / "student")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == [
        "config.json", "model.safetensors"]
    assert (tmp_path / "student" / "model.safetensors").read_bytes() == before
    assert load_model(tmp_path / "student").config == net.config


def test_an_ivfpq_index_on_a_full_disk_is_refused_and_keeps_the_previous_one(tmp_path,
                                                                             monkeypatch):
    from asymret.index import IvfPqOptions, TeacherIndex, create_index

    teacher = {"spec": None, "pretrained": False, "name": "generated", "config": {},
               "fingerprint": "sha256:" + "0" * 64}
    preprocessing = {"imsize": None, "scales": [1.0], "precision": "fp32"}
    vectors = _unit_rows(300, 16)
    names = _ids(300)
    options = IvfPqOptions(nlist=4, pq_m=8, train_size=300)
    first = create_index(tmp_path / "kept", vectors, names, names, teacher=teacher,
                         preprocessing=preprocessing, kind="ivfpq", ivfpq=options,
                         recall_queries=0)
    monkeypatch.setattr(os, "posix_fallocate", _raise(errno.ENOSPC), raising=False)
    out = tmp_path / "idx"
    with pytest.raises(AsymretError) as caught:
        create_index(out, vectors, names, names, teacher=teacher, preprocessing=preprocessing,
                     kind="ivfpq", ivfpq=options, recall_queries=0)
    assert str(caught.value).startswith(f"{out / 'vectors-000001.npy'}: cannot write it: No "
                                        "space left on device; free some space")
    assert not list(out.glob(".*.tmp")) and not (out / "index.json").exists()
    assert TeacherIndex.open(first.path, verify=True).count == 300
