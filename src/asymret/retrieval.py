"""Extract a test set with one or two networks and evaluate it, symmetric and asymmetric,
optionally with the learned whitening of the published test protocol.

Vectors are cached in a bank (:class:`~asymret.bank.TeacherBank`) under the features folder, so
a teacher's database is extracted once and reused by every student, and a killed extraction
resumes. Settings (:data:`~asymret.evaluate.SETTINGS`):

- ``symmetric``: student queries against the student's database (f–f);
- ``asymmetric``: student queries against the teacher's database (f–g);
- ``teacher``: teacher queries against the teacher's database (g–g).

Whitening (:func:`network_whitening`), as the reference test code (``budnikm/aml`` ``test.py``,
after cirtorch): a whitening is learned on the **database-side** network of each setting — the
student's own for the symmetric test, the teacher's for the asymmetric and teacher tests — from
the matching pairs of a whitening db (``retrieval-SfM-120k-whiten.pkl``, or any source
:func:`~asymret.data.load_whitening_pairs` reads), with that network's vectors extracted at
the test's image size and scales (cached in the same bank),
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

from asymret.bank import TeacherBank
from asymret.data import load_whitening_pairs
from asymret.data.image_list import ImageList
from asymret.data.revisitop import RevisitopDataset, distractor_paths
from asymret.errors import AsymretError
from asymret.evaluate import SETTINGS, RevisitedResult, available_settings, evaluate_retrieval
from asymret.features import Network, check_scales, retrieval_net
from asymret.models import RetrievalNet, load_network, save_model
from asymret.models.checkpoint import reference_whitenings
from asymret.whitening import (
    Whitening,
    apply_whitening,
    fold_whitening,
    learn_whitening,
    save_whitening,
)

_EXTRACTION_OPTIONS = ("device", "batch_size", "num_workers", "amp", "progress", "verify")


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
    verify: bool | str = "sample",
) -> NetworkWhitening:
    """The whitening of ``net``'s vectors: stored in its reference checkpoint, else learned.

    Learning extracts ``net``'s vectors of the pairs' images at ``imsize`` and ``scales``
    (multi-scale with the network's GeM exponent, as the test vectors) into the bank under
    ``features_dir`` (:meth:`~asymret.bank.TeacherBank.image_vectors`; a second call reuses
    them) and runs
    :func:`~asymret.whitening.learn_whitening` (cirtorch ``whitenlearn``) on the pairs.

    Args:
        net: the network whose vectors are whitened (for a test: the database side).
        source: whitening db name, ``*-whiten.pkl`` file, photo folder or training db name
            (see :func:`~asymret.data.load_whitening_pairs`).
        features_dir: cache of feature stores.
        root: data root.
        split: the split of a training db source.
        imsize, scales, device, batch_size, num_workers, amp, progress, verify: as the
            test's extraction (:func:`evaluate_networks`).

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
    bank = TeacherBank(features_dir, net, device=device, batch_size=batch_size,
                       num_workers=num_workers, amp=amp, progress=progress, verify=verify)
    store = bank.image_vectors(label, ImageList(db.paths, imsize), db.cids, scales)
    whitening = learn_whitening(store.vectors, db.query_indices, db.positive_indices)
    return NetworkWhitening(whitening, source, "learned",
                            f"learned from {whitening.num_pairs} pairs of {label}", store.path)


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
    imsize: int | None = 1024,
    teacher_imsize: int | None = None,
    scales: Sequence[float] = (1.0,),
    with_distractors: bool = False,
    distractors_root: str | Path | None = None,
    **extract_options,
) -> Evaluation:
    """Revisited results per setting (symmetric; with a teacher also asymmetric and teacher).

    Args:
        dataset: the test set.
        student: the query-side network.
        teacher: the database-side network, or ``None`` for the symmetric test only.
        features_dir: the bank (:class:`~asymret.bank.TeacherBank`) the networks' vectors are
            kept in.
        whitening: whitening db (e.g. ``"retrieval-SfM-120k"``) or photo folder; each
            setting is then whitened with its database-side network's whitening
            (:func:`network_whitening`), applied to queries and database alike. ``None``: raw
            vectors.
        root: data root of the whitening db (and of the distractors, unless
            ``distractors_root`` is given).
        whitening_split: split of a training-db whitening source.
        imsize, scales: the test's longer image side and extraction scales.
        teacher_imsize: the longer image side the teacher sees (its database, its queries in
            the teacher setting, its whitening images); ``None``: ``imsize``.
        with_distractors: add the R1M distractors (under ``distractors_root``) to the database.
        **extract_options: ``device``, ``batch_size``, ``num_workers``, ``amp``, ``progress``,
            ``verify`` (how much of each reused store to check,
            :data:`~asymret.features.store.VERIFY_LEVELS`); the whitening images are extracted
            with the same ones.
    """
    unknown = set(extract_options) - set(_EXTRACTION_OPTIONS)
    if unknown:
        raise TypeError(f"evaluate_networks: unknown option(s) {', '.join(sorted(unknown))}")
    networks = {"student": student}
    sizes = {"student": imsize, "teacher": imsize if teacher_imsize is None else teacher_imsize}
    if teacher is not None:
        networks["teacher"] = teacher
    settings = available_settings(networks)
    distractors = (
        distractor_paths(root if distractors_root is None else distractors_root)
        if with_distractors else []
    )

    whitenings: dict[str, NetworkWhitening] = {}
    if whitening is not None:
        # Learned (or loaded) before the test set is extracted, so that a whitening that
        # does not fit stops the run at once.
        for side in dict.fromkeys(database_side for _, database_side in settings.values()):
            whitenings[side] = network_whitening(
                networks[side], whitening, features_dir, root=root, split=whitening_split,
                imsize=sizes[side], scales=scales, **extract_options,
            )
        for query_side, database_side in settings.values():
            applied = whitenings[database_side]
            _check_dimension(networks[query_side], applied.whitening,
                             f"the {database_side}'s whitening ({applied.detail})")

    stores = {
        side: TeacherBank(features_dir, net, **extract_options).test_vectors(
            dataset, sizes[side], scales, distractors)
        for side, net in networks.items()
    }
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


def whiten_model(
    model: str | Path,
    source: str | Path,
    out: str | Path,
    features_dir: str | Path,
    *,
    root: str | Path | None = None,
    dim: int | None = None,
    **whitening_options,
) -> tuple[RetrievalNet, NetworkWhitening]:
    """Learn a network's whitening and save the whitened network (the whitening folded in as
    its projection layer) and the whitening itself in ``out``.

    Args:
        model: a network without a projection layer (saved folder, reference .pth or name).
        source: the whitening db (see :func:`network_whitening`).
        out: folder of the whitened model.
        features_dir: the bank the whitening images' vectors are kept in.
        root: data root.
        dim: keep this many whitened dimensions (``None``: all).
        **whitening_options: ``split``, ``imsize``, ``scales``, ``device``, ``batch_size``,
            ``num_workers``, ``amp``, ``progress`` (see :func:`network_whitening`).

    Returns:
        The whitened network and the whitening.

    Raises:
        AsymretError: the network already has a projection layer (before any extraction), or
            as :func:`network_whitening`.
    """
    net = load_network(model, root)
    if net.whiten is not None:
        raise AsymretError(
            f"{model}: {net.config.name} already has a projection layer; learned "
            "whitening is for a network without one"
        )
    result = network_whitening(net, source, features_dir, root=root, **whitening_options)
    out = Path(out)
    save_whitening(result.whitening, out)
    whitened = fold_whitening(net, result.whitening, dim)
    save_model(whitened, out)
    return whitened, result
