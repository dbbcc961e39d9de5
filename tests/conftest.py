"""Fixtures shared by several test modules.

- ``one_thread``: one intra-op thread for a module of tiny tensors;
- ``seeded``: ``torch.manual_seed(0)`` before each test (``pytestmark =
  pytest.mark.usefixtures("seeded")``);
- ``data_root``, ``teacher_dir``: per module, the tiny training db and test set of
  :func:`train_fixtures.make_training_data` and a saved tiny teacher
  (:func:`train_fixtures.make_teacher`).
"""

import pytest
import torch

from train_fixtures import make_teacher, make_training_data


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP stalls on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def seeded():
    """Seed torch's global generator, so that random weights and inputs repeat."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data root holding the SfM-format db ``retrieval-tiny`` and the test set ``tiny``."""
    root = tmp_path_factory.mktemp("data")
    make_training_data(root)
    return root


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A saved tiny teacher network (``train_fixtures.STUDENT``, seed 1)."""
    return make_teacher(tmp_path_factory.mktemp("teacher") / "teacher")
