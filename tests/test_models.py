import json
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from asymret.errors import AsymretError
from asymret.models import (
    GeM,
    Teacher,
    create_model,
    import_reference_checkpoint,
    list_models,
    load_model,
    parse_model_name,
    save_model,
)

pytestmark = pytest.mark.usefixtures("seeded")


def randomise_batchnorm(module: nn.Module) -> None:
    """Give BatchNorm layers non-trivial running statistics so that eval outputs depend on them."""
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.2, 0.2)
            layer.running_var.uniform_(0.5, 1.5)
            layer.weight.data.uniform_(0.5, 1.5)
            layer.bias.data.uniform_(-0.2, 0.2)


def test_names_parse_into_configs():
    for name in list_models():
        assert parse_model_name(name).name == name
    cfg = parse_model_name("efficientnet_b3-gem-2048")
    assert (cfg.arch, cfg.pooling, cfg.dim) == ("efficientnet_b3", "gem", 2048)
    lite = parse_model_name("tf_efficientnet_lite0-gem")
    assert lite.dim is None and lite.mean == pytest.approx((127 / 255,) * 3)
    for bad in ("resnet101", "resnet101-avg", "not_a_net-gem", "resnet101-gem-x"):
        with pytest.raises(AsymretError, match=bad.split("-")[0]):
            parse_model_name(bad)


OFFLINE_REGISTRATION = textwrap.dedent("""
    import timm

    lite_cfg = timm.models.get_pretrained_cfg("tf_efficientnet_lite0").to_dict()
    pretrained = timm.list_models(pretrained=True)

    import asymret.models
    from asymret.models import registry

    assert registry.OFFLINE_PRETRAINED == {}, registry.OFFLINE_PRETRAINED
    assert registry.OFFLINE_NORMALISATION == {}, registry.OFFLINE_NORMALISATION
    assert timm.models.get_pretrained_cfg("tf_efficientnet_lite0").to_dict() == lite_cfg
    assert timm.list_models(pretrained=True) == pretrained

    asymret.models.register_offline_weights()
    lites = {f"tf_efficientnet_lite{variant}" for variant in (0, 1, 2)}
    assert set(registry.OFFLINE_PRETRAINED) == set(registry.OFFLINE_NORMALISATION) == lites
    weights = dict(registry.OFFLINE_PRETRAINED)
    normalisations = dict(registry.OFFLINE_NORMALISATION)
    asymret.models.register_offline_weights()
    assert registry.OFFLINE_PRETRAINED == weights  # the very same functions: idempotent
    assert registry.OFFLINE_NORMALISATION == normalisations
    assert timm.models.get_pretrained_cfg("tf_efficientnet_lite0").to_dict() == lite_cfg
    assert timm.list_models(pretrained=True) == pretrained
    print("ok")
""")


def test_importing_models_registers_no_offline_weights_until_asked():
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_REGISTRATION], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_parsing_a_name_registers_the_offline_normalisation_first():
    script = (
        "from asymret.models import parse_model_name\n"
        "print(parse_model_name('tf_efficientnet_lite0-gem').mean[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(127 / 255)


@pytest.mark.parametrize(
    ("name", "dim"),
    [("resnet18-gem", 512), ("mobilenetv2_100-gem-2048", 2048), ("resnet18-mac-64", 64)],
)
def test_output_is_unit_vectors_of_the_named_dimension(name, dim):
    net = create_model(name).eval()
    out = net(torch.rand(3, 3, 64, 80))
    assert out.shape == (3, dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_gem_matches_hand_computation_and_limits():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gem = GeM(p=3.0)
    expected = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    torch.testing.assert_close(gem(x), torch.tensor([[expected]]))
    gem.p.data.fill_(1.0)
    torch.testing.assert_close(gem(x), torch.tensor([[2.5]]))
    gem.p.data.fill_(20.0)
    assert 3.7 < gem(x).item() < 4.0  # tends to the maximum as p grows
    zeros = torch.zeros(1, 2, 3, 3, requires_grad=True)
    gem.p.data.fill_(3.0)
    gem(zeros).sum().backward()
    assert torch.isfinite(gem.p.grad).all() and torch.isfinite(zeros.grad).all()


def test_param_groups_give_gem_p_ten_times_lr_and_no_decay():
    net = create_model("resnet18-gem-32")
    groups = net.param_groups(lr=1e-6, weight_decay=1e-4)
    pool_group = next(g for g in groups if any(p is net.pool.p for p in g["params"]))
    assert pool_group["lr"] == pytest.approx(1e-5) and pool_group["weight_decay"] == 0.0
    assert len(pool_group["params"]) == 1
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(list(net.parameters()))
    assert {id(p) for p in grouped} == {id(p) for p in net.parameters()}
    others = [g for g in groups if g is not pool_group]
    assert all(g["lr"] == 1e-6 and g["weight_decay"] == 1e-4 for g in others)


def test_network_normalises_its_input_with_its_own_mean_and_std():
    net = create_model("resnet18-gem", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    images = torch.rand(2, 3, 48, 48)
    manual = F.normalize(net.pool(net.features.forward_features((images - 0.5) / 0.25)), dim=-1)
    torch.testing.assert_close(net(images), manual)


def test_teacher_is_frozen_in_eval_mode():
    net = create_model("resnet18-gem")
    randomise_batchnorm(net)
    teacher = Teacher(net)
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    images = torch.rand(4, 3, 48, 48)
    before = [b.clone() for b in net.buffers()]
    out = teacher(images)
    assert not out.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers(), strict=True))
    torch.testing.assert_close(out, net.eval()(images))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    net = create_model("mobilenetv2_100-gem-96")
    randomise_batchnorm(net)
    net.pool.p.data.fill_(2.7)
    net.eval()
    save_model(net, tmp_path / "student")
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["config"]["arch"] == "mobilenetv2_100" and config["config"]["dim"] == 96
    loaded = create_model(str(tmp_path / "student")).eval()
    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(net(images), loaded(images))
    assert loaded.config == net.config


def test_checkpoint_that_does_not_fit_names_the_problem(tmp_path):
    save_model(create_model("resnet18-gem-64"), tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    payload = json.loads(config_path.read_text())
    payload["config"]["dim"] = 32
    config_path.write_text(json.dumps(payload))
    with pytest.raises(AsymretError, match=r"shape mismatch.*whiten\.weight"):
        load_model(tmp_path / "m")
    payload["config"]["dim"] = None
    config_path.write_text(json.dumps(payload))
    with pytest.raises(AsymretError, match=r"unexpected keys: whiten\.bias, whiten\.weight"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(AsymretError, match=r"model\.safetensors"):
        load_model(tmp_path / "m")


class CirtorchStyleNet(nn.Module):
    """The reference project's network from torchvision: children → GeM → L2N → whiten → L2N."""

    def __init__(self, arch: str, outputdim: int | None):
        super().__init__()
        trunk = getattr(torchvision.models, arch)()
        if arch.startswith("resnet"):
            self.features = nn.Sequential(*list(trunk.children())[:-2])
        else:
            self.features = nn.Sequential(*list(trunk.features.children())[:-1])
        channels = 512 if arch in ("resnet18", "resnet34", "vgg16") else 2048
        self.pool = GeM(p=3.0)
        self.whiten = nn.Linear(channels, outputdim) if outputdim else None

    def forward(self, normalised_images):
        x = F.normalize(self.pool(self.features(normalised_images)), dim=-1)
        if self.whiten is not None:
            x = F.normalize(self.whiten(x), dim=-1)
        return x


def save_reference_checkpoint(path, arch, outputdim, mean, std, whitening=True):
    reference = CirtorchStyleNet(arch, outputdim if whitening else None)
    randomise_batchnorm(reference)
    reference.pool.p.data.fill_(2.5)
    meta = {
        "architecture": arch,
        "pooling": "gem",
        "whitening": whitening,
        "local_whitening": False,
        "regional": False,
        "mean": mean,
        "std": std,
        "outputdim": outputdim,
    }
    torch.save({"epoch": 3, "meta": meta, "state_dict": reference.state_dict()}, path)
    return reference.eval()


@pytest.mark.parametrize(("arch", "whitening"), [("resnet18", True), ("resnet18", False)])
def test_reference_checkpoint_import_reproduces_reference_outputs(tmp_path, arch, whitening):
    mean, std = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
    path = tmp_path / "ref.pth"
    reference = save_reference_checkpoint(path, arch, 512, mean, std, whitening)
    net = import_reference_checkpoint(path).eval()
    assert net.outputdim == 512 and (net.whiten is not None) == whitening
    images = torch.rand(2, 3, 70, 90)
    normalised = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(net(images), reference(normalised), rtol=1e-5, atol=1e-6)


def test_reference_vgg16_import(tmp_path):
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    path = tmp_path / "vgg.pth"
    reference = save_reference_checkpoint(path, "vgg16", 512, mean, std)
    net = import_reference_checkpoint(path).eval()
    images = torch.rand(1, 3, 64, 64)
    normalised = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(net(images), reference(normalised), rtol=1e-5, atol=1e-6)


def test_reference_import_with_wrong_layout_names_the_keys(tmp_path):
    path = tmp_path / "ref.pth"
    save_reference_checkpoint(path, "resnet18", 512, [0.5] * 3, [0.2] * 3)
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["state_dict"]
    state["features.9.weight"] = torch.zeros(1)
    with pytest.raises(AsymretError, match=r"features\.9\.weight"):
        import_reference_checkpoint(_save(tmp_path / "extra.pth", checkpoint))
    del state["features.9.weight"]
    del state["features.1.running_mean"]
    with pytest.raises(AsymretError, match=r"missing keys: features\.bn1\.running_mean"):
        import_reference_checkpoint(_save(tmp_path / "missing.pth", checkpoint))
    state["features.1.running_mean"] = torch.zeros(64)
    checkpoint["meta"]["outputdim"] = 2048
    with pytest.raises(AsymretError, match=r"outputdim 2048.*512"):
        import_reference_checkpoint(_save(tmp_path / "dim.pth", checkpoint))
    checkpoint["meta"]["outputdim"] = 512
    checkpoint["meta"]["architecture"] = "densenet121"
    with pytest.raises(AsymretError, match="densenet121"):
        import_reference_checkpoint(_save(tmp_path / "arch.pth", checkpoint))


def _save(path, obj):
    torch.save(obj, path)
    return path


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch should-not-exist",))


def test_checkpoint_with_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"architecture": "resnet18"}, "state_dict": _RunsCode()}, path)
    with pytest.raises(AsymretError, match=r"evil\.pth: cannot read checkpoint"):
        import_reference_checkpoint(path)
    with pytest.raises(AsymretError, match=r"evil\.pth"):
        create_model("resnet18-gem", pretrained_path=path)
    assert not (tmp_path / "should-not-exist").exists()


def test_pretrained_trunk_from_a_local_file(tmp_path):
    source = timm.create_model("resnet18")
    randomise_batchnorm(source)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    net = create_model("resnet18-gem", pretrained_path=tmp_path / "resnet18.pth")
    for key, value in net.features.state_dict().items():
        assert torch.equal(value, source.state_dict()[key])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(AsymretError, match=r"wrong\.pth.*missing keys.*shape mismatch"):
        create_model("resnet18-gem", pretrained_path=tmp_path / "wrong.pth")


def test_pretrained_without_offline_weights_says_how_to_supply_them():
    with pytest.raises(AsymretError, match="pretrained_path"):
        create_model("resnet18-gem", pretrained=True)
