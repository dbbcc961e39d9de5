"""The trainer's epoch tuples equal sample_epoch + the negative miners composed by hand."""

import sys

import pytest
import torch

from asymret.errors import AsymretError
from asymret.mining import (
    epoch_generator,
    mine_hard_negatives,
    random_negative_tuples,
    sample_epoch,
)
from asymret.train import load_config
from asymret.train.loop import Trainer
from train_fixtures import write_config


def built_trainer(tmp_path, data_root, teacher, **sections) -> Trainer:
    sections.setdefault("data", {"val_sets": []})
    config = load_config(write_config(tmp_path / "c.yaml", data_root, tmp_path / "run", teacher,
                                      **sections))
    trainer = Trainer(config)
    trainer._prepare_run_dir()
    trainer._build()
    return trainer


def by_hand(trainer: Trainer, epoch: int):
    """sample_epoch, then the vectors the settings name and mine_hard_negatives (or random)."""
    config, db = trainer.config, trainer.db
    mining = config.mining
    generator = epoch_generator(config.run.seed, epoch)
    sample = sample_epoch(mining.num_pairs, mining.pool_size, db.query_indices,
                          db.positive_indices, len(db), generator)
    clusters = torch.from_numpy(db.clusters)
    if mining.negatives == "random":
        return random_negative_tuples(sample, clusters, mining.num_negatives, generator)

    def student(indices):
        return trainer._extract(trainer.student, trainer.train_images, indices)

    def teacher(indices):
        return torch.from_numpy(trainer.bank[indices.numpy()].astype("float32"))

    queries = (teacher if mining.query_vectors == "teacher" else student)(sample.query_indices)
    pool = (teacher if config.loss.similarity == "asymmetric" else student)(sample.pool_indices)
    positions = mine_hard_negatives(queries, clusters[sample.query_indices], pool,
                                    clusters[sample.pool_indices], mining.num_negatives)
    return sample.tuples(positions)


@pytest.mark.parametrize(
    ("teacher", "loss", "mining"),
    [
        (True, {}, {}),
        (True, {}, {"query_vectors": "teacher", "backend": "torch"}),
        (True, {"similarity": "symmetric", "positives": "pair"}, {"query_vectors": "teacher"}),
        (False, {"similarity": "symmetric", "positives": "pair"}, {}),
        (True, {}, {"negatives": "random"}),
    ],
    ids=["student-teacher", "teacher-teacher", "teacher-student", "student-student", "random"],
)
def test_trainer_tuples_equal_the_miners_composed_by_hand(tmp_path, data_root, teacher_dir,
                                                          teacher, loss, mining):
    trainer = built_trainer(tmp_path, data_root, teacher_dir if teacher else None,
                            loss=loss, mining=mining)
    for epoch in (0, 1):
        tuples, expected = trainer._epoch_tuples(epoch), by_hand(trainer, epoch)
        assert len(tuples) == 12 and tuples.negative_indices.shape == (12, 2)
        for name in ("query_indices", "positive_indices", "negative_indices"):
            assert torch.equal(getattr(tuples, name), getattr(expected, name)), (epoch, name)
    assert not torch.equal(trainer._epoch_tuples(0).query_indices, tuples.query_indices)


def test_no_negatives_draw_pairs_only(tmp_path, data_root, teacher_dir):
    trainer = built_trainer(tmp_path, data_root, teacher_dir, mining={"negatives": "none"},
                            loss={"name": "contrastive", "positives": "self"})
    tuples = trainer._epoch_tuples(0)
    sample = sample_epoch(12, 0, trainer.db.query_indices, trainer.db.positive_indices,
                          len(trainer.db), epoch_generator(trainer.config.run.seed, 0))
    assert torch.equal(tuples.query_indices, sample.query_indices)
    assert torch.equal(tuples.positive_indices, sample.positive_indices)
    assert tuples.negative_indices.shape == (12, 0)


def test_a_pool_with_too_few_clusters_is_refused(tmp_path, data_root, teacher_dir):
    trainer = built_trainer(tmp_path, data_root, teacher_dir,
                            mining={"pool_size": 1, "num_negatives": 2})
    with pytest.raises(AsymretError, match=r"epoch 4 has fewer than 2 clusters.*mining\.pool_size"):
        trainer._epoch_tuples(4)


def test_mining_backend_is_a_validated_setting(monkeypatch):
    assert load_config(None, ["models.teacher=t"]).mining.backend == "torch"
    with pytest.raises(AsymretError, match=r"mining\.backend='annoy'; expected one of torch"):
        load_config(None, ["models.teacher=t", "mining.backend=annoy"])
    monkeypatch.setitem(sys.modules, "faiss", None)  # faiss not installed
    with pytest.raises(AsymretError, match=r"mining\.backend=faiss: .*pip install faiss-cpu"):
        load_config(None, ["models.teacher=t", "mining.backend=faiss"])
    with pytest.raises(AsymretError, match=r"mining\.backend=faiss: .*runs on the CPU"):
        load_config(None, ["models.teacher=t", "mining.backend=faiss", "run.device=cuda"])


def test_faiss_backend_mines_the_trainer_tuples(tmp_path, data_root, teacher_dir):
    pytest.importorskip("faiss")
    trainer = built_trainer(tmp_path, data_root, teacher_dir, mining={"backend": "faiss"})
    expected = by_hand(trainer, 0)
    assert torch.equal(trainer._epoch_tuples(0).negative_indices, expected.negative_indices)
