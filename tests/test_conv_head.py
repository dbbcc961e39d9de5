"""The published student head: 1×1 conv (no bias) + ReLU on the feature map, before GeM."""

import json

import numpy as np
import pytest
import timm
import torch

from asymret.errors import AsymretError
from asymret.features import model_fingerprint, multiscale_power
from asymret.models import (
    ActivationCache,
    ModelConfig,
    Teacher,
    create_model,
    load_model,
    parse_model_name,
    save_model,
)
from asymret.models.frozen_trunk import split_trunk
from asymret.train import load_config, train
from asymret.train.loop import set_batchnorm_eval
from asymret.train.projection import check_projection_init
from asymret.whitening import fold_whitening, learn_whitening
from test_models import randomise_batchnorm
from train_fixtures import make_teacher, write_config

SMALL_CONV = "test_efficientnet-conv16-gem"


pytestmark = pytest.mark.usefixtures("seeded")


def _images(count: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, 40, 48, generator=torch.Generator().manual_seed(seed))


def slow_conv_head_reference(net, images: torch.Tensor) -> torch.Tensor:
    """L2N(GeM(ReLU(conv1x1(trunk map)))), one image, channel and position at a time."""
    normalised = (images - net.mean) / net.std
    feature_map = net.features.forward_features(normalised).double()  # (N, C, h, w)
    weight = net.head.conv.weight.double()[:, :, 0, 0]  # (d, C)
    p, eps = float(net.pool.p), net.pool.eps
    rows = []
    for n in range(feature_map.shape[0]):
        positions = feature_map[n].flatten(1).T  # (h·w, C)
        vector = []
        for d in range(weight.shape[0]):
            total = 0.0
            for x in positions:
                activation = max(float(weight[d] @ x), 0.0)  # conv 1×1 then ReLU
                total += max(activation, eps) ** p
            vector.append((total / len(positions)) ** (1 / p))  # GeM
        vector = torch.tensor(vector, dtype=torch.float64)
        rows.append(vector / vector.norm())
    return torch.stack(rows).float()


def test_conv_head_names_round_trip_and_configs():
    config = parse_model_name("tf_efficientnet_b3-conv2048-gem")
    assert (config.arch, config.head, config.dim, config.pooling) == (
        "tf_efficientnet_b3", "conv", 2048, "gem")
    assert config.whiten_dim is None and config.linear_dim is None
    assert config.name == "tf_efficientnet_b3-conv2048-gem"
    whitened = parse_model_name("resnet18-conv64-gem-32")
    assert (whitened.head, whitened.dim, whitened.whiten_dim) == ("conv", 64, 32)
    assert whitened.name == "resnet18-conv64-gem-32"
    linear = parse_model_name("efficientnet_b3-gem-2048")
    assert (linear.head, linear.dim, linear.linear_dim) == ("linear", 2048, 2048)
    for bad in ("resnet18-conv0-gem", "resnet18-convx-gem", "resnet18-conv64"):
        with pytest.raises(AsymretError, match="resnet18"):
            parse_model_name(bad)
    with pytest.raises(ValueError, match="conv head needs dim"):
        ModelConfig(arch="resnet18", head="conv")
    with pytest.raises(ValueError, match="whiten_dim is for the conv head"):
        ModelConfig(arch="resnet18", dim=8, whiten_dim=8)
    with pytest.raises(ValueError, match="head must be one of linear, conv"):
        ModelConfig(arch="resnet18", head="mlp")


def test_linear_head_config_dict_is_unchanged_and_old_dicts_load():
    linear = parse_model_name("efficientnet_b3-gem-2048")
    data = linear.to_dict()
    assert set(data) == {"arch", "pooling", "dim", "gem_p", "mean", "std"}
    assert ModelConfig.from_dict(data) == linear
    conv = parse_model_name(SMALL_CONV)
    assert conv.to_dict()["head"] == "conv"
    assert ModelConfig.from_dict(json.loads(json.dumps(conv.to_dict()))) == conv


def test_conv_head_computes_l2n_gem_relu_conv_of_the_trunk_map():
    net = create_model(SMALL_CONV, gem_p=2.5)
    randomise_batchnorm(net)
    net.eval()
    assert net.whiten is None and net.outputdim == 16 and net.pooled_dim == 16
    conv = net.head.conv
    assert conv.bias is None and tuple(conv.weight.shape) == (16, net.trunk_dim, 1, 1)
    assert "head.conv.weight" in net.state_dict()  # its own submodule, the trunk is untouched
    assert net.features.state_dict().keys() == create_model(
        "test_efficientnet-gem").features.state_dict().keys()
    images = torch.rand(2, 3, 36, 44)
    with torch.no_grad():
        torch.testing.assert_close(net(images), slow_conv_head_reference(net, images),
                                   rtol=1e-4, atol=1e-5)


def test_conv_head_starts_from_pytorchs_default_conv_init():
    net = create_model("resnet18-conv64-gem")
    weight = net.head.conv.weight
    bound = 1 / np.sqrt(512)  # kaiming_uniform(a=√5): U(−1/√fan_in, 1/√fan_in)
    assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
    assert weight.std().item() == pytest.approx(bound / np.sqrt(3), rel=0.02)


def test_conv_head_save_load_round_trip_gives_identical_outputs(tmp_path):
    net = create_model(SMALL_CONV)
    randomise_batchnorm(net)
    net.pool.p.data.fill_(2.7)
    net.eval()
    save_model(net, tmp_path / "student")
    saved = json.loads((tmp_path / "student" / "config.json").read_text())["config"]
    assert (saved["head"], saved["dim"]) == ("conv", 16)
    loaded = create_model(str(tmp_path / "student")).eval()
    images = _images()
    assert loaded.config == net.config
    assert torch.equal(net(images), loaded(images))
    assert model_fingerprint(loaded) == model_fingerprint(net)
    teacher = Teacher(loaded)
    assert teacher.outputdim == 16
    torch.testing.assert_close(teacher(images), net(images), rtol=0, atol=0)


def test_conv_head_trains_with_the_trunk_and_gem_p_at_ten_times():
    net = create_model(SMALL_CONV)
    groups = net.param_groups(lr=1e-6, weight_decay=1e-4)
    trunk_group = next(g for g in groups if any(p is net.head.conv.weight for p in g["params"]))
    assert trunk_group["lr"] == 1e-6 and trunk_group["weight_decay"] == 1e-4
    assert any(p is next(net.features.parameters()) for p in trunk_group["params"])
    pool_group = next(g for g in groups if any(p is net.pool.p for p in g["params"]))
    assert pool_group["lr"] == pytest.approx(1e-5) and pool_group["weight_decay"] == 0.0
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(net.parameters()))


def test_pretrained_trunk_weights_load_into_a_conv_head_network(tmp_path):
    source = timm.create_model("resnet18")
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    net = create_model("resnet18-conv32-gem", pretrained_path=tmp_path / "resnet18.pth")
    for key, value in net.features.state_dict().items():
        assert torch.equal(value, source.state_dict()[key])


@pytest.mark.parametrize("cached", [False, True])
def test_partial_finetuning_of_a_conv_head_net_gives_the_same_vectors(cached):
    torch.manual_seed(1)
    full = create_model(SMALL_CONV)
    randomise_batchnorm(full)
    frozen = create_model(SMALL_CONV)
    frozen.load_state_dict(full.state_dict())
    cache = ActivationCache() if cached else None
    frozen.freeze_trunk(1, cache)
    for net in (full, frozen):
        set_batchnorm_eval(net.train())
    x = _images()
    torch.testing.assert_close(frozen(x), full(x), rtol=0, atol=0)
    if cached:
        assert cache.computed == 3
        torch.testing.assert_close(frozen(x), full(x), rtol=0, atol=0)
        assert cache.computed == 3
    assert frozen.head.conv.weight.requires_grad
    grouped = {id(p) for g in frozen.param_groups(1e-3, 0.0) for p in g["params"]}
    assert id(frozen.head.conv.weight) in grouped
    weights = torch.randn(16)
    (full(x) @ weights).sum().backward()
    (frozen(x) @ weights).sum().backward()
    torch.testing.assert_close(frozen.head.conv.weight.grad, full.head.conv.weight.grad)


def test_channels_last_conv_head_gives_the_same_vectors():
    net = create_model(SMALL_CONV).eval()
    images = _images()
    expected = net(images)
    net.to(memory_format=torch.channels_last)
    assert net.head.conv.weight.is_contiguous(memory_format=torch.channels_last)
    out = net(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_multiscale_power_is_the_students_own_gem_p_and_whitening_folds(tmp_path):
    net = create_model(SMALL_CONV).eval()
    net.pool.p.data.fill_(2.6)
    assert multiscale_power(net) == pytest.approx(2.6)
    assert multiscale_power(Teacher(net)) == pytest.approx(2.6)
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(200, net.pooled_dim)) + 0.3
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    whitening = learn_whitening(bank, np.arange(0, 200, 2), np.arange(1, 200, 2))
    folded = fold_whitening(net, whitening, 8)
    assert folded.config.name == "test_efficientnet-conv16-gem-8" and folded.outputdim == 8
    assert multiscale_power(folded) == 1.0  # as the reference, with a whitening layer
    images = _images()
    reloaded = load_model(save_model(folded, tmp_path / "whitened")).eval()
    torch.testing.assert_close(reloaded(images), folded.eval()(images), rtol=0, atol=0)


# ------------------------------------------------------------------ training


def test_ridge_start_for_a_conv_head_is_refused_before_extraction(tmp_path, data_root):
    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", data_root, out, teacher,
                                      models={"student": SMALL_CONV,
                                              "projection_init": "ridge"}))
    with pytest.raises(AsymretError) as raised:
        train(config)
    message = str(raised.value)
    assert "\n" not in message
    assert "models.projection_init=ridge" in message and "models.projection_init=random" in message
    assert SMALL_CONV in message
    assert not (out / "teacher").exists(), "no teacher bank was extracted"
    with pytest.raises(AsymretError, match="conv head"):
        check_projection_init(create_model(SMALL_CONV), "ridge")
    check_projection_init(create_model("test_efficientnet-gem-16"), "ridge")
    check_projection_init(create_model(SMALL_CONV), "random")


def test_conv_head_student_trains_from_random_start(tmp_path, data_root):
    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "run"
    config = load_config(write_config(
        tmp_path / "c.yaml", data_root, out, teacher,
        models={"student": SMALL_CONV, "projection_init": "random"},
        optim={"epochs": 1, "trainable_stages": 1}, data={"val_sets": []},
    ))
    torch.manual_seed(config.run.seed)
    start = create_model(SMALL_CONV)
    student = load_model(train(config))
    assert student.config.head == "conv" and student.outputdim == 16
    prefix, _ = split_trunk(student.features, 1)
    start_prefix, _ = split_trunk(start.features, 1)
    for trained, initial in zip(prefix.parameters(), start_prefix.parameters(), strict=True):
        assert torch.equal(trained, initial), "the frozen prefix is the seeded start"
    assert not torch.equal(student.head.conv.weight, start.head.conv.weight), "the head learned"
