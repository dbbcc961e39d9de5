"""The teacher's bank: a network's stored vectors of training images, test sets and whitening
images, in one folder layout.

The collection is indexed once by the teacher; every student trained or tested against it
reads the same stores. The layout, under the bank's root::

    <collection>/<model>-<fingerprint>-<imsize>px[-s<scales>]/       training or whitening images
    <dataset>/<model>-<fingerprint>-<imsize>px[-s<scales>]/queries    a test set's cropped queries
    <dataset>/<model>-<fingerprint>-<imsize>px[-s<scales>]/database   and its database
    <dataset>+r1m/...                                                 the same with R1M distractors

``<fingerprint>`` is the first 12 hex digits of the network's weights digest, so two networks
never share a folder, and a folder's store still refuses vectors made otherwise (see
:func:`~asymret.features.extract_to_store`). The evaluator keeps students' test vectors in a
bank of the same layout (any network can be banked; the teacher's is the one that is reused).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from asymret.data.image_list import ImageList
from asymret.data.revisitop import RevisitopDataset
from asymret.data.sfm120k import TrainingDb
from asymret.features import (
    FeatureStore,
    Network,
    check_scales,
    extract_to_store,
    model_fingerprint,
    retrieval_net,
)


def store_name(net: Network, imsize: int | None, scales: Sequence[float] = (1.0,)) -> str:
    """Folder name of a network's vectors at one preprocessing, e.g.
    ``"tf_efficientnet_lite0-gem-0123456789ab-362px"`` or ``"...-1024px-s0.707,1,1.414"``."""
    fingerprint = model_fingerprint(net).rpartition(":")[2][:12]
    size = "full" if imsize is None else f"{imsize}px"
    scales = check_scales(scales)
    suffix = "" if scales == (1.0,) else "-s" + ",".join(f"{s:g}" for s in scales)
    return f"{retrieval_net(net).config.name}-{fingerprint}-{size}{suffix}"


class TeacherBank:
    """One network's stored vectors under ``root``, extracted once and then reused.

    Args:
        root: the bank's folder.
        net: the banked network (a :class:`~asymret.models.Teacher` or a RetrievalNet).
        device, amp, channels_last, batch_size, num_workers, progress, verify: extraction
            options (see :func:`~asymret.features.extract_to_store`).
    """

    def __init__(
        self,
        root: str | Path,
        net: Network,
        *,
        device: str | torch.device = "cpu",
        amp: bool = False,
        channels_last: bool | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        progress: bool = True,
        verify: bool | str = "sample",
    ):
        self.root = Path(root)
        self.net = net
        self.options = dict(device=device, amp=amp, channels_last=channels_last,
                            batch_size=batch_size, num_workers=num_workers, progress=progress,
                            verify=verify)

    def folder(self, collection: str, imsize: int | None, scales: Sequence[float] = (1.0,)) -> Path:
        """The folder of the network's vectors of ``collection`` at this preprocessing."""
        return self.root / collection / store_name(self.net, imsize, scales)

    def image_vectors(
        self,
        collection: str,
        images: ImageList,
        ids: Sequence[str],
        scales: Sequence[float] = (1.0,),
    ) -> FeatureStore:
        """(N, D) vectors of ``images`` (row ``i`` is ``ids[i]``), e.g. a whitening db's."""
        path = self.folder(collection, images.imsize, scales)
        return extract_to_store(self.net, images, ids, path, scales=scales, **self.options)

    def training_vectors(
        self, name: str, db: TrainingDb, imsize: int | None, *, skip_unreadable: bool = False
    ) -> FeatureStore:
        """(N, D) vectors of every image of training db ``name``'s split ``db`` (rows in the
        db's order), the students' targets and negative pool."""
        return self.image_vectors(
            f"{name}-{db.split}", db.images(imsize, skip_unreadable=skip_unreadable), db.cids
        )

    def test_vectors(
        self,
        dataset: RevisitopDataset,
        imsize: int | None,
        scales: Sequence[float] = (1.0,),
        distractors: Sequence[Path] = (),
    ) -> tuple[FeatureStore, FeatureStore]:
        """The (Q, D) cropped-query and (N, D) database vectors of a test set; the database is
        followed by ``distractors`` (R1M), whose ids are their paths."""
        name = dataset.collection or dataset.name
        collection = f"{name}+r1m" if distractors else name
        return extract_test_set(
            self.net, dataset, self.folder(collection, imsize, scales), imsize=imsize,
            scales=scales, distractors=distractors, **self.options,
        )


def extract_test_set(
    net: Network,
    dataset: RevisitopDataset,
    out: str | Path,
    *,
    imsize: int | None = 1024,
    scales: Sequence[float] = (1.0,),
    distractors: Sequence[Path] = (),
    **options,
) -> tuple[FeatureStore, FeatureStore]:
    """Query (cropped) and database vectors of a test set into ``out/queries`` and
    ``out/database``; the database is followed by ``distractors``, whose ids are their paths.

    Args:
        options: ``device``, ``amp``, ``channels_last``, ``batch_size``, ``num_workers``,
            ``progress``, ``verify`` (see :func:`~asymret.features.extract_to_store`).
    """
    out = Path(out)
    queries = extract_to_store(
        net, dataset.query_images(imsize), dataset.qimlist, out / "queries", scales=scales,
        **options,
    )
    database = extract_to_store(
        net, dataset.database_images(imsize, list(distractors)),
        dataset.imlist + [str(p) for p in distractors], out / "database", scales=scales,
        **options,
    )
    return queries, database
