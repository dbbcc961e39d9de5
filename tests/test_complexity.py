"""Parameters and FLOPs, against hand-worked formulas and the paper's slides."""

import pytest
import torch
from torch import nn

from asymret.cli import main
from asymret.models import (
    ActivationCache,
    count_flops,
    count_parameters,
    create_model,
    model_complexity,
    save_model,
)
from asymret.train.loop import set_batchnorm_eval

# Slides (Budnik & Avrithis, CVPR 2021): EN-B3 student at 362×362.
SLIDES_NO_HEAD = (10.70, 5.36)  # d = 1536, no head: M parameters, GFLOPs
SLIDES_CONV_HEAD = (13.84, 6.26)  # d = 2048 with the 1×1 conv head


@pytest.fixture(scope="module")
def en_b3():
    """{name: (network, parameters, FLOPs at 362×362)} for the three EN-B3 layouts."""
    torch.manual_seed(0)
    out = {}
    for name in ("tf_efficientnet_b3-gem", "tf_efficientnet_b3-conv2048-gem",
                 "tf_efficientnet_b3-gem-2048"):
        net = create_model(name)
        out[name] = (net, count_parameters(net), count_flops(net, (362, 362)))
    return out


def test_flops_of_one_conv_and_one_linear_are_the_hand_formula():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    assert count_flops(conv, (10, 12)) == 2 * 3 * 8 * 3**2 * 10 * 12
    strided = nn.Conv2d(3, 8, kernel_size=3, stride=2)  # output (4, 5) from (10, 12)
    assert count_flops(strided, (10, 12), meta=False) == 2 * 3 * 8 * 3**2 * 4 * 5
    grouped = nn.Conv2d(3, 6, kernel_size=1, groups=3)
    assert count_flops(grouped, (7, 7)) == 2 * 1 * 6 * 7 * 7
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 5))
    assert count_flops(net, (6, 6)) == 2 * 3 * 4 * 36 + 2 * 4 * 5
    assert count_parameters(net) == (3 * 4 + 4) + (4 * 5 + 5)


def test_meta_count_equals_a_real_random_input_and_modes_are_restored():
    net = create_model("test_efficientnet-conv16-gem-8")
    set_batchnorm_eval(net.train())
    modes = [m.training for m in net.modules()]
    meta = count_flops(net, (64, 80))
    assert meta == count_flops(net, (64, 80), meta=False) > 0
    assert [m.training for m in net.modules()] == modes
    cache = ActivationCache()
    net.freeze_trunk(1, cache)
    assert count_flops(net, (64, 80)) == meta and len(cache) == 0
    assert net.activation_cache is cache
    assert count_parameters(net, trainable_only=True) < count_parameters(net)


def test_en_b3_trunk_is_timms_tf_efficientnet_b3(en_b3):
    net = en_b3["tf_efficientnet_b3-conv2048-gem"][0]
    assert net.features.pretrained_cfg["architecture"] == "tf_efficientnet_b3"
    assert type(net.features).__name__ == "EfficientNet" and net.trunk_dim == 1536
    assert type(net.features.conv_stem).__name__ == "Conv2dSame"  # TF "same" padding
    assert tuple(net.head.conv.weight.shape) == (2048, 1536, 1, 1) and net.whiten is None


def test_en_b3_parameters_match_the_slides(en_b3):
    assert round(en_b3["tf_efficientnet_b3-gem"][1] / 1e6, 2) == SLIDES_NO_HEAD[0]
    assert round(en_b3["tf_efficientnet_b3-conv2048-gem"][1] / 1e6, 2) == SLIDES_CONV_HEAD[0]
    # The linear projection after pooling has the same 1536·2048 weights (plus a bias).
    assert round(en_b3["tf_efficientnet_b3-gem-2048"][1] / 1e6, 2) == SLIDES_CONV_HEAD[0]


def test_en_b3_flops_tell_the_conv_head_from_the_linear_one(en_b3):
    no_head = en_b3["tf_efficientnet_b3-gem"][2]
    conv = en_b3["tf_efficientnet_b3-conv2048-gem"][2]
    linear = en_b3["tf_efficientnet_b3-gem-2048"][2]
    assert conv / no_head == pytest.approx(SLIDES_CONV_HEAD[1] / SLIDES_NO_HEAD[1], rel=0.01)
    assert linear / no_head == pytest.approx(1.0, abs=0.005)
    # The difference is exactly the 1×1 conv on the 12×12 map ("same" padding: ceil(362/32)).
    assert conv - no_head == 2 * 1536 * 2048 * 12 * 12
    assert linear - no_head == 2 * 1536 * 2048
    # Absolute values: below ptflops' (which also counts BatchNorm and activations) by ~1%.
    assert no_head / 1e9 == pytest.approx(SLIDES_NO_HEAD[1], rel=0.015)
    assert conv / 1e9 == pytest.approx(SLIDES_CONV_HEAD[1], rel=0.015)


def test_model_complexity_by_name_and_folder_agree(tmp_path):
    by_name = model_complexity("test_efficientnet-conv16-gem", (64, 64))
    net = create_model("test_efficientnet-conv16-gem")
    by_folder = model_complexity(save_model(net, tmp_path / "m"), (64, 64))
    assert by_name == by_folder
    assert by_name.parameters == count_parameters(net)
    assert by_name.flops == count_flops(net, (64, 64), meta=False)


def test_models_command_prints_parameters_and_gflops(capsys):
    status = main(["models", "tf_efficientnet_b3-conv2048-gem", "tf_efficientnet_b3-gem",
                   "--size", "362", "362"])
    out = capsys.readouterr().out
    assert status == 0
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["tf_efficientnet_b3-conv2048-gem"][1:3] == ["13.84M", "6.22"]
    assert lines["tf_efficientnet_b3-gem"][1:3] == ["10.70M", "5.31"]
    assert "362x362" in out
    assert main(["models", "--size", "0", "362"]) == 2
