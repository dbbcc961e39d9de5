"""ONNX export: onnxruntime's vectors and rankings equal PyTorch's at any batch and image size."""

import numpy as np
import onnx
import pytest
import torch

from asymret.cli import main
from asymret.errors import AsymretError
from asymret.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    OnnxQueryModel,
    export_onnx,
    read_export_metadata,
)
from asymret.features import model_fingerprint
from asymret.models import create_model, load_model, save_model
from asymret.teacher_record import write_teacher_record
from train_fixtures import STUDENT, make_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

CONV_STUDENT = "test_efficientnet-conv16-gem"
SIZES = ((64, 48), (96, 80))


@pytest.fixture(scope="module", params=[STUDENT, CONV_STUDENT])
def exported(request, tmp_path_factory):
    """A saved student (random weights, GeM p moved off 3) and its ONNX file."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(5)
    net = create_model(request.param, gem_p=2.7)
    student = save_model(net, folder / "student")
    meta = export_onnx(student, folder / "student.onnx")
    return load_model(student).eval(), folder / "student.onnx", meta


def image_set(seed: int, count: int, size: tuple[int, int]) -> torch.Tensor:
    """Blocky images of different colours and contrasts: scores far enough apart (at least
    1e-5 here, against onnxruntime-vs-PyTorch differences of about 1e-7) for stable rankings."""
    generator = torch.Generator().manual_seed(seed)
    gamma = 3 * torch.rand((count, 1, 1, 1), generator=generator)
    cells = torch.rand((count, 3, 4, 4), generator=generator) ** gamma
    return torch.nn.functional.interpolate(cells, size=size, mode="nearest")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_onnxruntime_matches_torch_vectors_and_top10(exported, size):
    net, path, _ = exported
    model = OnnxQueryModel(path, threads=1)
    queries, database = image_set(1, 6, size), image_set(2, 30, size)
    with torch.no_grad():
        torch_q, torch_x = net(queries).numpy(), net(database).numpy()
    onnx_q, onnx_x = model(queries), model(database)
    assert onnx_q.shape == (6, net.outputdim) and onnx_x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(onnx_x, axis=1), 1.0, atol=1e-5)
    cosines = np.concatenate([(onnx_q * torch_q).sum(1), (onnx_x * torch_x).sum(1)])
    assert cosines.min() >= 0.9999
    torch_top = np.argsort(-(torch_q @ torch_x.T), axis=1, kind="stable")[:, :10]
    onnx_top = np.argsort(-(onnx_q @ onnx_x.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(onnx_top, torch_top)


def test_query_model_takes_lists_of_mixed_sizes_and_numpy(exported):
    net, path, _ = exported
    model = OnnxQueryModel(path)
    images = [image_set(3, 1, SIZES[i % 2])[0] for i in range(5)]
    with torch.no_grad():
        expected = np.concatenate([net(image[None]).numpy() for image in images])
    got = model(images)
    assert got.shape == (5, net.outputdim)
    assert (got * expected).sum(1).min() >= 0.9999, "rows stay in the input's order"
    np.testing.assert_allclose(model(np.stack([i.numpy() for i in images[::2]])), got[::2],
                               atol=1e-5)
    assert model([]).shape == (0, net.outputdim)
    with pytest.raises(AsymretError, match=r"images\[1\]: expected a \(3, H, W\) image"):
        model([images[0], images[0][:1]])
    with pytest.raises(AsymretError, match=r"expected an \(N, 3, H, W\) batch"):
        model(torch.rand(2, 4, 8, 8))


def test_graph_is_dynamic_and_metadata_round_trips(exported):
    net, path, meta = exported
    proto = onnx.load(str(path))
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["asymret.network"] == net.config.name
    assert props["asymret.model_fingerprint"] == model_fingerprint(net)
    assert "asymret.teacher_fingerprint" not in props, "no teacher.json: none recorded"

    read = read_export_metadata(path)
    assert read == {k: v for k, v in meta.items() if k != "cosine"}
    assert read["network"] == net.config.name and read["dim"] == net.outputdim
    assert read["config"] == net.config.to_dict()
    assert read["teacher_fingerprint"] is None and read["teacher_network"] is None
    assert OnnxQueryModel(path).metadata == read


def test_teacher_fingerprint_is_recorded_from_the_student_folder(tmp_path):
    teacher = load_model(make_teacher(tmp_path / "teacher"))
    torch.manual_seed(2)
    student = save_model(create_model(STUDENT), tmp_path / "student")
    write_teacher_record(student, tmp_path / "teacher", teacher)
    meta = export_onnx(student, tmp_path / "s.onnx")
    assert meta["teacher_fingerprint"] == model_fingerprint(teacher)
    assert meta["teacher_network"] == teacher.config.name
    read = read_export_metadata(tmp_path / "s.onnx")
    assert read["teacher_fingerprint"] == model_fingerprint(teacher)
    explicit = export_onnx(student, tmp_path / "e.onnx", teacher_fingerprint="sha256:abc")
    assert explicit["teacher_fingerprint"] == "sha256:abc" and explicit["teacher_network"] is None
    (student / "teacher.json").write_text("{}")
    with pytest.raises(AsymretError, match=r"teacher\.json: not an asymret teacher record"):
        export_onnx(student, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_missing_or_foreign_files_are_refused_clearly(tmp_path):
    with pytest.raises(AsymretError, match=r"nothing\.onnx: ONNX file not found"):
        read_export_metadata(tmp_path / "nothing.onnx")
    (tmp_path / "text.onnx").write_text("this is not a model\n" * 20)
    with pytest.raises(AsymretError, match=r"text\.onnx: not an ONNX model"):
        OnnxQueryModel(tmp_path / "text.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(AsymretError, match=r"empty\.onnx: not an ONNX model"):
        read_export_metadata(tmp_path / "empty.onnx")
    foreign = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(AsymretError, match=r"foreign\.onnx: an ONNX model not written by "
                                           r"`asymret export`"):
        read_export_metadata(tmp_path / "foreign.onnx")


def test_export_command(tmp_path, capsys):
    torch.manual_seed(4)
    student = save_model(create_model(STUDENT), tmp_path / "student")
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "s.onnx")]) == 0
    out = capsys.readouterr().out
    assert "test_efficientnet-gem-16 (16-D, sha256:" in out and "teacher unknown" in out
    assert "onnxruntime matches PyTorch" in out
    assert main(["export", "--model", str(tmp_path / "none"), "--out", "x.onnx"]) == 2
