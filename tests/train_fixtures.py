"""Tiny training data and networks for the training tests, generated in code."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from asymret.data.revisitop import write_gnd
from asymret.data.sfm120k import cid_to_relative_path, write_training_db
from asymret.losses import ContrastiveLoss
from asymret.models import create_model, save_model

STUDENT = "test_efficientnet-gem-16"


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.random((height // 6 + 1, width // 6 + 1, 3))
    return np.kron(coarse, np.ones((6, 6, 1)))[:height, :width]


def _view(rng: np.random.Generator, base: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A shifted, re-lit, noisy crop of a cluster's base texture."""
    height, width = size
    top = int(rng.integers(0, base.shape[0] - height + 1))
    left = int(rng.integers(0, base.shape[1] - width + 1))
    crop = base[top : top + height, left : left + width] * rng.uniform(0.8, 1.2)
    crop = crop + rng.normal(0, 0.05, crop.shape)
    return Image.fromarray((np.clip(crop, 0, 1) * 255).astype(np.uint8))


def make_training_data(root: Path, clusters: int = 8, per_cluster: int = 4, seed: int = 0) -> None:
    """An SfM-format db ``root/retrieval-tiny`` and a revisitop-format set ``root/tiny``."""
    rng = np.random.default_rng(seed)
    bases = [_texture(rng, 40, 48) for _ in range(clusters + 3)]
    db_dir = root / "retrieval-tiny"
    cids, cluster_ids = [], []
    for cluster in range(clusters):
        for view in range(per_cluster):
            cid = f"{cluster:04x}{view:04x}" + "0" * 24
            path = db_dir / cid_to_relative_path(cid)
            path.parent.mkdir(parents=True, exist_ok=True)
            size = (24, 32) if view % 2 == 0 else (32, 24)
            _view(rng, bases[cluster], size).save(path, format="JPEG", quality=95)
            cids.append(cid)
            cluster_ids.append(cluster)
    first = [c * per_cluster for c in range(clusters)]
    queries = [i + v for i in first for v in range(per_cluster - 1)]
    positives = [q + 1 for q in queries]
    split = {"cids": cids, "cluster": cluster_ids, "qidxs": queries, "pidxs": positives}
    write_training_db(db_dir / "retrieval-tiny.pkl", split, split)

    test_dir = root / "tiny" / "jpg"
    test_dir.mkdir(parents=True)
    imlist, qimlist, gnd = [], [], []
    for landmark in range(3):
        base = bases[clusters + landmark]
        for view in range(3):
            imlist.append(f"db{landmark}_{view}")
            _view(rng, base, (24, 32)).save(test_dir / f"{imlist[-1]}.jpg", quality=95)
        qimlist.append(f"q{landmark}")
        _view(rng, base, (30, 36)).save(test_dir / f"q{landmark}.jpg", quality=95)
        start = 3 * landmark
        gnd.append({"bbx": [2.0, 2.0, 34.0, 28.0], "easy": [start, start + 1],
                    "hard": [start + 2], "junk": []})
    write_gnd(root / "tiny" / "gnd_tiny.pkl", imlist, qimlist, gnd)


def make_teacher(path: Path, name: str = STUDENT, seed: int = 1) -> Path:
    import torch

    torch.manual_seed(seed)
    return save_model(create_model(name), path)


def write_config(path: Path, root: Path, out: Path, teacher: Path | None, **sections) -> Path:
    """A small training config; ``sections`` update its sections, e.g. ``loss={...}``."""
    config = {
        "data": {"root": str(root), "train_db": "retrieval-tiny", "val_sets": ["tiny"],
                 "imsize": 32, "val_imsize": 32},
        "models": {"student": STUDENT, "pretrained": False,
                   "teacher": str(teacher) if teacher else None, "ridge_images": 0},
        "loss": {"name": "contrastive", "similarity": "asymmetric", "positives": "pair+self"},
        "mining": {"negatives": "hard", "num_pairs": 12, "pool_size": 32, "num_negatives": 2},
        "optim": {"epochs": 2, "batch_size": 4, "lr": 1e-3},
        "run": {"out": str(out), "seed": 3, "checkpoint_every": 1, "progress": False},
    }
    for section, values in sections.items():
        config[section].update(values)
    path.write_text(yaml.safe_dump(config))
    return path


def make_photo_folder(folder: Path, train_instances: int = 4, per_instance: int = 3,
                      test_instances: int = 3, seed: int = 0) -> Path:
    """Generated photos: ``train_instances`` × ``per_instance`` training images, then per test
    instance one query and two database images, and one distractor."""
    rng = np.random.default_rng(seed)
    rows = [("path", "instance", "role")]
    for instance in range(train_instances):
        base = _texture(rng, 40, 48)
        for view in range(per_instance):
            rows.append((f"train/i{instance}_{view}.jpg", f"place{instance}", "train"))
            _save(folder / rows[-1][0], _view(rng, base, (24, 32) if view % 2 else (32, 24)))
    for instance in range(test_instances):
        base = _texture(rng, 40, 48)
        name = f"sight{instance}"
        rows.append((f"test/{name}_q.jpg", name, "query"))
        _save(folder / rows[-1][0], _view(rng, base, (30, 36)))
        for view in range(2):
            rows.append((f"test/{name}_{view}.jpg", name, "database"))
            _save(folder / rows[-1][0], _view(rng, base, (24, 32)))
    rows.append(("test/street.jpg", "street", "database"))
    _save(folder / rows[-1][0], _view(rng, _texture(rng, 40, 48), (24, 32)))
    with open(folder / "images.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return folder


def _save(path: Path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)


class NanAtThirdCall(ContrastiveLoss):
    """Contrastive loss that turns NaN at its third call (register it to train with it)."""

    calls = 0

    def compute(self, anchor, refs, positive):
        type(self).calls += 1
        value = super().compute(anchor, refs, positive)
        return value * float("nan") if type(self).calls == 3 else value
