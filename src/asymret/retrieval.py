"""Extract a test set with one or two networks and evaluate it, symmetric and asymmetric,
optionally with the learned whitening of the published test protocol.

Vectors are cached in feature stores (``<features>/<dataset>/<model>-<fingerprint>/{queries,
database}``), so a teacher's database is extracted once and reused by every student, and a
killed extraction resumes. Settings (:data:`SETTINGS`):

- ``symmetric``: student queries against the student's database (f–f);
- ``asymmetric``: student queries against the teacher's database (f–g);
- ``teacher``: teacher queries against the teacher's database (g–g).

Whitening (:func:`network_whitening`), as the reference test code (``budnikm/aml`` ``test.py``,
after cirtorch): a whitening is learned on the **database-side** network of each setting — the
student's own for the symmetric test, the teacher's for the asymmetric and teacher tests — from
the matching pairs of a whitening db (``retrieval-SfM-120k-whiten.pkl``, or any source
:func:`~asymret.data.load_whitening_pairs` reads), with that network's vectors extracted at
the test's image size and scales (cached in ``<features>/<db label>/<model>-<fingerprint>``),
and applied post hoc (:func:`~asymret.whitening.apply_whitening`, no folding) to both the
queries and the database before ranking. A network imported from a reference checkpoint that
stores ``meta['Lw'][<db>]['ms' | 'ss']`` uses that whitening instead of learning one
(``ms`` for multi-scale tests, ``ss`` for single-scale ones).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asymret.data import load_whitening_pairs
from asymret.data.image_list import ImageList
from asymret.data.revisitop import RevisitopDataset, distractor_paths
from asymret.errors import AsymretError
from asymret.evaluate import RevisitedResult, evaluate_retrieval
from asymret.features import (
    FeatureStore,
    Network,
    check_scales,
    extract_to_store,
    model_fingerprint,
    retrieval_net,
)
from asymret.models.checkpoint import reference_whitenings
from asymret.whitening import Whitening, apply_whitening, learn_whitening

SETTINGS: dict[str, tuple[str, str]] = {
    "symmetric": ("student", "student"),
    "asymmetric": ("student", "teacher"),
    "teacher": ("teacher", "teacher"),
}
"""Setting → (query-side network, database-side network)."""


def store_name(net: Network) -> str:
    """Folder name of a network's stores: its name and a short weights fingerprint."""
    return f"{retrieval_net(net).config.name}-{model_fingerprint(net).rpartition(':')[2][:12]}"


def extract_test_set(
    net: Network,
    dataset: RevisitopDataset,
    out: str | Path,
    *,
    imsize: int = 1024,
    scales: Sequence[float] = (1.0,),
    distractors_root: str | Path | None = None,
    with_distractors: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = True,
) -> tuple[FeatureStore, FeatureStore]:
    """Query (cropped) and database vectors of a test set into ``out/queries``, ``out/database``.

    With ``with_distractors`` the R1M distractors follow the database images. ``amp``:
    bf16 autocast (default fp32).
    """
    out = Path(out)
    distractors = distractor_paths(distractors_root) if with_distractors else []
    options = dict(scales=scales, device=device, batch_size=batch_size,
                   num_workers=num_workers, amp=amp, progress=progress)
    queries = extract_to_store(
        net, dataset.query_images(imsize), dataset.qimlist, out / "queries", **options
    )
    database_ids = dataset.imlist + [str(p) for p in distractors]
    database = extract_to_store(
        net, dataset.database_images(imsize, distractors), database_ids, out / "database",
        **options,
    )
    return queries, database


# --- Whitening ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkWhitening:
    """The whitening of one network's vectors, and where it comes from.

    Attributes:
        whitening: the whitening (D = the network's output dimension).
        source: the whitening db as asked for (e.g. ``"retrieval-SfM-120k"``).
        origin: ``"learned"`` (from matching pairs) or ``"stored"`` (the checkpoint's
            ``meta['Lw']``).
        detail: a short human-readable account, e.g. ``"learned from 1691 pairs of
            retrieval-SfM-120k-whiten"``.
        store: the feature store of the whitening images (``None`` when stored).
    """

    whitening: Whitening
    source: str
    origin: str
    detail: str
    store: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"source", "origin", "pairs"}`` (``pairs`` is ``None`` for a stored whitening)."""
        return {
            "source": self.source,
            "origin": self.origin,
            "pairs": self.whitening.num_pairs if self.origin == "learned" else None,
        }


def whitening_kind(scales: Sequence[float]) -> str:
    """Key of a stored reference whitening for these test scales: ``"ms"`` or ``"ss"``."""
    return "ms" if len(check_scales(scales)) > 1 else "ss"


def stored_whitening(net: Network, source: str, scales: Sequence[float]) -> Whitening | None:
    """The whitening ``meta['Lw'][source]['ms' | 'ss']`` of a network imported from a reference
    checkpoint, or ``None``.

    Raises:
        AsymretError: the stored whitening is for vectors of another dimension.
    """
    kind = whitening_kind(scales)
    entry = reference_whitenings(retrieval_net(net)).get(str(source), {}).get(kind)
    if entry is None:
        return None
    whitening = Whitening(mean=entry["m"], projection=entry["P"], num_pairs=0)
    _check_dimension(net, whitening, f"its stored whitening meta['Lw'][{source!r}][{kind!r}]")
    return whitening


def _check_dimension(net: Network, whitening: Whitening, what: str) -> None:
    if whitening.input_dim != net.outputdim:
        raise AsymretError(
            f"network '{retrieval_net(net).config.name}' gives {net.outputdim}-D vectors but "
            f"{what} is for {whitening.input_dim}-D vectors"
        )


def network_whitening(
    net: Network,
    source: str | Path,
    features_dir: str | Path,
    *,
    root: str | Path | None = None,
    split: str = "val",
    imsize: int = 1024,
    scales: Sequence[float] = (1.0,),
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = True,
) -> NetworkWhitening:
    """The whitening of ``net``'s vectors: stored in its reference checkpoint, else learned.

    Learning extracts ``net``'s vectors of the pairs' images at ``imsize`` and ``scales``
    (multi-scale with the network's GeM exponent, as the test vectors) into the feature store
    ``<features_dir>/<db label>/<model>-<fingerprint>`` — a second call reuses it — and runs
    :func:`~asymret.whitening.learn_whitening` (cirtorch ``whitenlearn``) on the pairs.

    Args:
        net: the network whose vectors are whitened (for a test: the database side).
        source: whitening db name, ``*-whiten.pkl`` file, photo folder or training db name
            (see :func:`~asymret.data.load_whitening_pairs`).
        features_dir: cache of feature stores.
        root: data root.
        split: the split of a training db source.
        imsize, scales, device, batch_size, num_workers, amp, progress: as the test's
            extraction (:func:`extract_test_set`).

    Raises:
        AsymretError: no such source, a malformed db, too few or degenerate pairs, or a
            stored whitening of another dimension.
    """
    source = str(source)
    stored = stored_whitening(net, source, scales)
    if stored is not None:
        kind = whitening_kind(scales)
        return NetworkWhitening(stored, source, "stored",
                                f"stored in the checkpoint, meta['Lw'][{source!r}][{kind!r}]")
    label, db = load_whitening_pairs(source, root, split)
    if len(db.query_indices) == 0:
        raise AsymretError(f"whitening db '{source}' ({label}) has no matching pairs")
    path = Path(features_dir) / label / store_name(net)
    store = extract_to_store(
        net, ImageList(db.paths, imsize), db.cids, path, scales=scales, device=device,
        batch_size=batch_size, num_workers=num_workers, amp=amp, progress=progress,
    )
    whitening = learn_whitening(store.vectors, db.query_indices, db.positive_indices)
    return NetworkWhitening(whitening, source, "learned",
                            f"learned from {whitening.num_pairs} pairs of {label}", path)


# --- Evaluation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation(Mapping[str, RevisitedResult]):
    """Results per setting: a mapping setting → result, whitened when a whitening was asked.

    Attributes:
        results: setting → the test's result (whitened with ``whitening``).
        raw: setting → the result without whitening (the same as ``results`` without one).
        whitenings: database-side network (``"student"`` / ``"teacher"``) → its whitening;
            empty without whitening.
    """

    results: dict[str, RevisitedResult]
    raw: dict[str, RevisitedResult]
    whitenings: dict[str, NetworkWhitening] = field(default_factory=dict)

    def __getitem__(self, setting: str) -> RevisitedResult:
        return self.results[setting]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def whitening_of(self, setting: str) -> NetworkWhitening | None:
        """The whitening applied in ``setting`` (that of its database side), or ``None``."""
        return self.whitenings.get(SETTINGS[setting][1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{setting: {"map", "mp@k"}}`` as :meth:`RevisitedResult.to_dict`.

        With whitening each setting's ``map`` / ``mp@k`` are the whitened results, and it
        also holds ``"whitening": {"source", "origin", "pairs", "network"}`` (``network``:
        the database-side network it was learned on or stored with) and
        ``"without_whitening": {"map", "mp@k"}``.
        """
        out = {}
        for setting, result in self.results.items():
            entry = result.to_dict()
            whitening = self.whitening_of(setting)
            if whitening is not None:
                entry["whitening"] = {**whitening.to_dict(), "network": SETTINGS[setting][1]}
                entry["without_whitening"] = self.raw[setting].to_dict()
            out[setting] = entry
        return out


def evaluate_networks(
    dataset: RevisitopDataset,
    student: Network,
    teacher: Network | None,
    features_dir: str | Path,
    *,
    whitening: str | Path | None = None,
    root: str | Path | None = None,
    whitening_split: str = "val",
    **extract_options,
) -> Evaluation:
    """Revisited results per setting (symmetric; with a teacher also asymmetric and teacher).

    Args:
        dataset: the test set.
        student: the query-side network.
        teacher: the database-side network, or ``None`` for the symmetric test only.
        features_dir: cache of feature stores.
        whitening: whitening db (e.g. ``"retrieval-SfM-120k"``) or photo folder; each
            setting is then whitened with its database-side network's whitening
            (:func:`network_whitening`), applied to queries and database alike. ``None``: raw
            vectors.
        root: data root of the whitening db (and of the distractors, unless
            ``distractors_root`` is given).
        whitening_split: split of a training-db whitening source.
        **extract_options: passed to :func:`extract_test_set` (``imsize``, ``scales``,
            ``device``, ``batch_size``, ``num_workers``, ``amp``, ``progress``, ...); the
            whitening images are extracted with the same ones.
    """
    cache = Path(features_dir) / dataset.name
    networks = {"student": student}
    if teacher is not None:
        networks["teacher"] = teacher
    settings = {name: sides for name, sides in SETTINGS.items()
                if teacher is not None or name == "symmetric"}
    extract_options.setdefault("distractors_root", root)

    whitenings: dict[str, NetworkWhitening] = {}
    if whitening is not None:
        whiten_options = {key: value for key, value in extract_options.items()
                          if key in ("imsize", "scales", "device", "batch_size", "num_workers",
                                     "amp", "progress")}
        # Learned (or loaded) before the test set is extracted, so that a whitening that
        # does not fit stops the run at once.
        for side in dict.fromkeys(database_side for _, database_side in settings.values()):
            whitenings[side] = network_whitening(
                networks[side], whitening, features_dir, root=root, split=whitening_split,
                **whiten_options,
            )
        for query_side, database_side in settings.values():
            applied = whitenings[database_side]
            _check_dimension(networks[query_side], applied.whitening,
                             f"the {database_side}'s whitening ({applied.detail})")

    stores = {side: extract_test_set(net, dataset, cache / store_name(net), **extract_options)
              for side, net in networks.items()}
    device = extract_options.get("device", "cpu")
    raw, results = {}, {}
    for setting, (query_side, database_side) in settings.items():
        queries = np.asarray(stores[query_side][0].vectors)
        database = stores[database_side][1].vectors
        raw[setting] = evaluate_retrieval(queries, database, dataset.gnd, device=device)
        applied = whitenings.get(database_side)
        if applied is None:
            results[setting] = raw[setting]
            continue
        results[setting] = evaluate_retrieval(
            apply_whitening(queries, applied.whitening),
            apply_whitening(database, applied.whitening),
            dataset.gnd,
            device=device,
        )
    return Evaluation(results=results, raw=raw, whitenings=whitenings)
