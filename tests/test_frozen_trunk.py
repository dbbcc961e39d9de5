"""Partial fine-tuning: trunk splits, frozen prefixes and the activation cache."""

import pytest
import timm
import torch

from asymret.errors import AsymretError
from asymret.models import ActivationCache, create_model
from asymret.models.frozen_trunk import split_trunk, trunk_parts
from asymret.train.loop import set_batchnorm_eval

SMALL = "test_efficientnet-gem-16"


def _images(count: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, 40, 48, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["test_efficientnet", "resnet18", "mobilenetv2_050"])
def test_trunk_parts_compose_to_forward_features(arch):
    torch.manual_seed(0)
    trunk = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="").eval()
    stem, stages, tail = trunk_parts(trunk)
    x = _images()
    with torch.no_grad():
        composed = torch.nn.Sequential(*stem, *stages, *tail)(x)
        for trainable in range(1, len(stages) + 1):
            prefix, rest = split_trunk(trunk, trainable)
            assert torch.equal(rest(prefix(x)), composed)
        assert torch.equal(composed, trunk.forward_features(x))


def test_split_refuses_bad_stage_counts_and_unknown_trunks():
    trunk = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    stages = len(trunk_parts(trunk)[1])
    for bad in (0, stages + 1):
        with pytest.raises(AsymretError, match=f"trainable_stages must lie in 1..{stages}"):
            split_trunk(trunk, bad)
    with pytest.raises(AsymretError, match="not VGG"):
        trunk_parts(timm.create_model("vgg11", pretrained=False, num_classes=0))


def _pair(trainable: int, cache: ActivationCache | None):
    torch.manual_seed(1)
    full = create_model(SMALL)
    frozen = create_model(SMALL)
    frozen.load_state_dict(full.state_dict())
    frozen.freeze_trunk(trainable, cache)
    return full, frozen


@pytest.mark.parametrize("cached", [False, True])
def test_frozen_network_computes_the_same_vectors_and_tail_gradients(cached):
    cache = ActivationCache() if cached else None
    full, frozen = _pair(1, cache)
    for net in (full, frozen):  # as the Trainer fine-tunes: BatchNorm statistics frozen
        set_batchnorm_eval(net.train())
    x = _images()
    torch.testing.assert_close(frozen(x), full(x), rtol=0, atol=0)
    if cached:
        assert cache.computed == 3 and len(cache) == 3
        frozen(torch.cat([x[:2], _images(1, seed=5)]))
        assert cache.computed == 4, "only the new image is computed"
    weights = torch.randn(16)
    (full(x) @ weights).sum().backward()
    (frozen(x) @ weights).sum().backward()
    prefix, _ = split_trunk(frozen.features, 1)
    assert all(p.grad is None for p in prefix.parameters())
    full_grads = dict(full.named_parameters())
    for name, param in frozen.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, full_grads[name].grad)


def test_frozen_prefix_leaves_the_optimiser_and_stays_in_eval_mode():
    _, frozen = _pair(2, None)
    prefix, tail = split_trunk(frozen.features, 2)
    grouped = {id(p) for group in frozen.param_groups(1e-3, 0.0) for p in group["params"]}
    assert not grouped & {id(p) for p in prefix.parameters()}
    assert {id(p) for p in tail.parameters()} <= grouped
    frozen.train()
    assert not any(m.training for layer in prefix for m in layer.modules())
    assert all(m.training for layer in tail for m in layer.modules())


def test_cache_file_round_trips_and_refuses_another_prefix(tmp_path):
    path = tmp_path / "cache.safetensors"
    _, frozen = _pair(1, ActivationCache(path))
    x = _images()
    expected = frozen.eval()(x)
    frozen.activation_cache.save()
    assert path.is_file()

    reloaded = ActivationCache(path)
    _, again = _pair(1, reloaded)
    assert len(reloaded) == 3
    torch.testing.assert_close(again.eval()(x), expected, rtol=0, atol=0)
    assert reloaded.computed == 0

    with pytest.raises(AsymretError, match=r"cache\.safetensors: activation cache of another"):
        _pair(2, ActivationCache(path))
    other = create_model(SMALL)
    with pytest.raises(AsymretError, match="another frozen trunk prefix"):
        other.freeze_trunk(1, ActivationCache(path))

    path.write_bytes(b"not a safetensors file")
    with pytest.raises(AsymretError, match=r"cache\.safetensors: unreadable activation cache"):
        _pair(1, ActivationCache(path))
