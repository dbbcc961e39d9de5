"""CPU runtime settings: the glibc allocator, channels-last defaults and the fused optimiser."""

from __future__ import annotations

import platform

import pytest
import torch

from asymret.models import create_model
from asymret.runtime import prefers_channels_last, tune_cpu_allocator
from asymret.train.loop import make_optimizer
from asymret.train.steps import forward_by_size


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_allocator_tuning_is_accepted_by_glibc():
    assert tune_cpu_allocator() is True
    big = torch.ones(64, 1024, 1024)  # 256 MiB: from the heap now, still usable
    assert float(big.sum()) == 64 * 1024 * 1024


def test_channels_last_is_the_default_on_cpu_and_cuda():
    assert prefers_channels_last(torch.device("cpu"))
    assert prefers_channels_last(torch.device("cuda"))
    assert not prefers_channels_last(torch.device("meta"))


def test_channels_last_step_equals_the_contiguous_one():
    torch.manual_seed(0)
    net = create_model("mobilenetv2_100-gem-64").eval()  # BatchNorm frozen, as in training
    images = [torch.rand(3, 48, 64) for _ in range(3)] + [torch.rand(3, 64, 48)]
    plain = forward_by_size(net, images)
    plain.sum().backward()
    plain_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.to(memory_format=torch.channels_last)
    fast = forward_by_size(net, images, channels_last=True)
    fast.sum().backward()
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-3)
    for fast_grad, plain_grad in zip((p.grad for p in net.parameters()), plain_grads, strict=True):
        torch.testing.assert_close(fast_grad, plain_grad, atol=1e-3, rtol=1e-2)


def test_fused_adam_takes_the_steps_of_the_reference_adam():
    torch.manual_seed(0)
    fused_net = create_model("resnet18-gem-32")
    reference_net = create_model("resnet18-gem-32")
    reference_net.load_state_dict(fused_net.state_dict())
    fused = make_optimizer(fused_net, 1e-3, 1e-4, torch.device("cpu"))
    reference = torch.optim.Adam(reference_net.param_groups(1e-3, 1e-4), fused=False)
    assert fused.defaults["fused"] is True
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        for param, twin in zip(fused_net.parameters(), reference_net.parameters(), strict=True):
            param.grad = torch.randn(param.shape, generator=generator)
            twin.grad = param.grad.clone()
        fused.step()
        reference.step()
    pairs = zip(fused_net.parameters(), reference_net.parameters(), strict=True)
    for fused_param, reference_param in pairs:
        torch.testing.assert_close(fused_param, reference_param, atol=1e-6, rtol=1e-5)
    assert [group["lr"] for group in fused.param_groups] == pytest.approx([1e-3, 1e-2, 1e-3])
