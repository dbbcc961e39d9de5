"""A network as an ONNX file, to query the teacher's index without asymret or PyTorch.

``asymret export --model STUDENT --out student.onnx`` writes one graph:

- input ``images``: float32 (N, 3, H, W), RGB in [0, 1], any batch size N and any image
  size H × W (the same contract as :meth:`asymret.models.RetrievalNet.forward`); the network's
  mean/std normalisation is inside the graph;
- output ``vectors``: float32 (N, D), L2-normalised, one vector per image.

Before the file is written, onnxruntime is run against PyTorch at an image size other than
the traced one: the export is refused unless every vector agrees to cosine
:data:`PARITY_COSINE`, so a graph whose shapes were frozen at tracing time is never written.

The file's metadata (ONNX ``metadata_props``, keys ``asymret.*``) record what the vectors
are compatible with: the network's name and config, its weights' fingerprint
(:func:`asymret.features.model_fingerprint`, the digest feature stores record) and, for a
student saved by ``asymret train``, the name and fingerprint of the teacher it was trained
against (its :mod:`teacher record <asymret.teacher_record>`, ``teacher.json``; absent when
unknown). :func:`read_export_metadata` reads them
back; :class:`OnnxQueryModel` runs the file with onnxruntime on the CPU.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asymret import __version__
from asymret.errors import AsymretError
from asymret.features import Network, model_fingerprint, retrieval_net
from asymret.files import write_bytes_atomic
from asymret.models import RetrievalNet, load_network
from asymret.teacher_record import read_teacher_record

EXPORT_FORMAT = "asymret-query-model"
EXPORT_VERSION = 1
DEFAULT_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "vectors"
TRACE_SIZE = (160, 128)
"""(H, W) of the example images the graph is traced with."""
CHECK_SIZE = (96, 80)
"""(H, W) of the images onnxruntime is checked against PyTorch with (not the traced size)."""
PARITY_COSINE = 0.9999
_PREFIX = "asymret."
_JSON_KEYS = ("version", "config", "dim")
"""Metadata values stored as JSON; the others are plain strings."""


def export_onnx(
    model: str | Path | Network,
    out: str | Path,
    *,
    teacher_fingerprint: str | None = None,
    root: str | Path | None = None,
    pretrained: bool = False,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Write ``model`` as an ONNX file with dynamic batch and image size (see the module doc).

    Args:
        model: a network, or what :func:`asymret.models.load_network` takes (a saved model
            folder, a reference ``.pth``, a name).
        out: the ``.onnx`` file (written atomically; its folder is created).
        teacher_fingerprint: the teacher the network's vectors are compatible with; by
            default the teacher record of a saved model folder
            (:func:`~asymret.teacher_record.read_teacher_record`), else none.
        root, pretrained: as :func:`~asymret.models.load_network`.
        opset: ONNX opset.

    Returns:
        The metadata written, as :func:`read_export_metadata` returns it, plus ``cosine``:
        the lowest cosine between onnxruntime's and PyTorch's vectors in the check.

    Raises:
        AsymretError: the network cannot be loaded or exported, its folder's teacher record
            is unreadable, or onnxruntime disagrees with PyTorch.
    """
    teacher_network = None
    if isinstance(model, torch.nn.Module):
        source = retrieval_net(model)
    else:
        source = load_network(model, root, pretrained=pretrained)
        record = read_teacher_record(model) if teacher_fingerprint is None else None
        if record is not None:
            teacher_fingerprint, teacher_network = record.fingerprint, record.name
    net = _plain_copy(source)
    metadata = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "asymret_version": __version__,
        "network": net.config.name,
        "config": net.config.to_dict(),
        "model_fingerprint": model_fingerprint(source),
        "teacher_fingerprint": teacher_fingerprint,
        "teacher_network": teacher_network,
        "dim": net.outputdim,
        "input": f"{INPUT_NAME}: float32 (N, 3, H, W), RGB in [0, 1]",
        "output": f"{OUTPUT_NAME}: float32 (N, D), L2-normalised",
    }
    proto = _trace(net, opset)
    for key, value in metadata.items():
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key = _PREFIX + key
            entry.value = json.dumps(value) if key in _JSON_KEYS else str(value)
    proto.producer_name, proto.producer_version = "asymret", __version__
    proto.doc_string = f"asymret {net.config.name}: {metadata['input']} -> {metadata['output']}"
    data = proto.SerializeToString()
    cosine = _check_parity(net, data)
    write_bytes_atomic(out, data)
    return {**read_export_metadata(out), "cosine": cosine}


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """What :func:`export_onnx` recorded in an ONNX file.

    Returns:
        ``format``, ``version``, ``asymret_version``, ``network`` (its name), ``config``
        (dict), ``model_fingerprint``, ``teacher_fingerprint`` and ``teacher_network``
        (``None`` when unknown), ``dim``, ``input`` and ``output`` (descriptions).

    Raises:
        AsymretError: missing file, not an ONNX model, or an ONNX model asymret did not write.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise AsymretError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise AsymretError(
            f"{path}: not an ONNX model ({type(exc).__name__}: {exc})".rstrip(": ")
        ) from None
    if not proto.graph.node:
        raise AsymretError(f"{path}: not an ONNX model (no graph)")
    props = {p.key[len(_PREFIX):]: p.value for p in proto.metadata_props
             if p.key.startswith(_PREFIX)}
    if props.get("format") != EXPORT_FORMAT:
        raise AsymretError(
            f"{path}: an ONNX model not written by `asymret export` (no {_PREFIX}format "
            f"'{EXPORT_FORMAT}' in its metadata)"
        )
    metadata: dict[str, Any] = {}
    for key, value in props.items():
        try:
            metadata[key] = json.loads(value) if key in _JSON_KEYS else value
        except ValueError:
            raise AsymretError(f"{path}: metadata {_PREFIX}{key} is not JSON: {value!r}") from None
    metadata.setdefault("teacher_fingerprint", None)
    metadata.setdefault("teacher_network", None)
    return metadata


class OnnxQueryModel:
    """An exported network run by onnxruntime on the CPU.

    ``model(images)`` takes a list of (3, H, W) images (sizes may differ) or an (N, 3, H, W)
    batch — torch tensors or numpy arrays, RGB in [0, 1] — and returns (N, D) float32 numpy
    vectors, L2-normalised, in the input's order.

    Args:
        path: an ``.onnx`` file from :func:`export_onnx`.
        threads: onnxruntime's intra-op threads (default: its own choice).

    Attributes:
        metadata: :func:`read_export_metadata` of the file.
        dim: D.

    Raises:
        AsymretError: missing file, not an ONNX model, or not one asymret exported.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnxruntime

        self.path = Path(path)
        self.metadata = read_export_metadata(self.path)
        self.dim = int(self.metadata["dim"])
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise AsymretError(f"{self.path}: onnxruntime cannot load it ({exc})") from None

    def __call__(self, images: Sequence[torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray
                 ) -> np.ndarray:
        batches = _as_batches(images)
        count = sum(len(rows) for rows, _ in batches)
        vectors = np.empty((count, self.dim), dtype=np.float32)
        for rows, batch in batches:
            vectors[rows] = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        return vectors

    def __repr__(self) -> str:
        return f"OnnxQueryModel({str(self.path)!r}, network={self.metadata['network']!r})"


def _plain_copy(net: RetrievalNet) -> RetrievalNet:
    """A float32 CPU copy in eval mode, without a frozen-trunk split or activation cache."""
    copy = RetrievalNet(net.config)
    copy.load_state_dict({k: v.detach().cpu().float() for k, v in net.state_dict().items()})
    return copy.eval().requires_grad_(False)


def _trace(net: RetrievalNet, opset: int):
    """The network as an ONNX ModelProto, batch and image size dynamic."""
    import onnx

    example = torch.rand((2, 3, *TRACE_SIZE), generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter's deprecation notice and tracer warnings about
            # Python-side shape arithmetic; the parity check catches any frozen shape.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                net, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                              OUTPUT_NAME: {0: "batch"}},
                opset_version=opset, dynamo=False,
            )
    except Exception as exc:
        raise AsymretError(
            f"{net.config.name}: ONNX export failed ({type(exc).__name__}: {exc})"
        ) from None
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto


def _check_parity(net: RetrievalNet, data: bytes) -> float:
    """The lowest cosine between onnxruntime's and PyTorch's vectors at :data:`CHECK_SIZE`.

    Raises:
        AsymretError: below :data:`PARITY_COSINE`, or onnxruntime fails at that size.
    """
    import onnxruntime

    images = torch.rand((3, 3, *CHECK_SIZE), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(images).numpy()
    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    except Exception as exc:
        raise AsymretError(
            f"{net.config.name}: the exported graph fails at {CHECK_SIZE[0]}x{CHECK_SIZE[1]} "
            f"images, not the traced {TRACE_SIZE[0]}x{TRACE_SIZE[1]} ({exc})"
        ) from None
    cosine = float(np.min(np.sum(got * expected, axis=1)))
    if got.shape != expected.shape or not cosine >= PARITY_COSINE:
        raise AsymretError(
            f"{net.config.name}: onnxruntime disagrees with PyTorch at {CHECK_SIZE[0]}x"
            f"{CHECK_SIZE[1]} images (shape {got.shape} vs {expected.shape}, lowest cosine "
            f"{cosine:.6f} < {PARITY_COSINE}); not written"
        )
    return cosine


def _as_batches(images) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(rows, (n, 3, H, W) float32 batch)`` per image size, rows in the input's order."""
    if isinstance(images, torch.Tensor | np.ndarray):
        batch = _as_array(images)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise AsymretError(
                f"images: expected an (N, 3, H, W) batch or a list of (3, H, W) images, got "
                f"shape {tuple(batch.shape)}"
            )
        return [(np.arange(len(batch)), batch)] if len(batch) else []
    by_size: dict[tuple[int, int], list[int]] = {}
    arrays = []
    for i, image in enumerate(images):
        array = _as_array(image)
        if array.ndim != 3 or array.shape[0] != 3:
            raise AsymretError(f"images[{i}]: expected a (3, H, W) image, got shape "
                               f"{tuple(array.shape)}")
        arrays.append(array)
        by_size.setdefault(array.shape[1:], []).append(i)
    return [(np.array(rows), np.stack([arrays[i] for i in rows])) for rows in by_size.values()]


def _as_array(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy()
    return np.ascontiguousarray(image, dtype=np.float32)
