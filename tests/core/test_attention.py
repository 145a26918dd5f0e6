"""Attention modules against their published formulas, computed directly on tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from autocnn.costs import count_params
from autocnn.layers import ATTENTION
from autocnn.layers.attention import CBAM, ECA, SqueezeExcite, SqueezeExciteFC, eca_kernel_size


@pytest.fixture
def x(seeded):
    return torch.randn(2, 64, 9, 7, generator=seeded)


def test_se_conv_form_matches_formula(x):
    se = SqueezeExcite(64, ratio=16, act_layer=torch.nn.ReLU)
    assert count_params(se) == 64 * 4 + 4 + 4 * 64 + 64
    z = x.mean(dim=(2, 3))                                       # squeeze
    s = torch.relu(z @ se.fc1.weight[:, :, 0, 0].T + se.fc1.bias)  # excitation
    s = torch.sigmoid(s @ se.fc2.weight[:, :, 0, 0].T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * s[:, :, None, None])


def test_se_fc_form_matches_formula(x):
    se = SqueezeExciteFC(64, ratio=8, act_layer=torch.nn.ReLU)
    assert count_params(se) == 64 * 8 + 8 + 8 * 64 + 64
    s = torch.sigmoid(torch.relu(x.mean((2, 3)) @ se.fc1.weight.T + se.fc1.bias) @ se.fc2.weight.T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * s[:, :, None, None])


def test_cbam_matches_formula(x):
    cbam = CBAM(64, ratio=8, act_layer=torch.nn.ReLU)
    assert count_params(cbam) == 2 * 64 * 8 + 2 * 7 * 7
    w0, w1 = cbam.fc1.weight[:, :, 0, 0], cbam.fc2.weight[:, :, 0, 0]

    def mlp(v):
        return torch.relu(v @ w0.T) @ w1.T

    mc = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    f1 = x * mc[:, :, None, None]
    desc = torch.stack([f1.mean(1), f1.amax(1)], 1)
    ms = torch.sigmoid(F.conv2d(desc, cbam.spatial.weight, padding=3))
    torch.testing.assert_close(cbam(x), f1 * ms)


def test_eca_matches_formula(x):
    eca = ECA(64)
    k = eca_kernel_size(64)
    assert k == 3 and count_params(eca) == k  # |log2(64)/2 + 1/2| = 3.5 -> 3
    assert eca_kernel_size(512) == 5 and eca_kernel_size(2048) == 7
    z = x.mean((2, 3))
    padded = F.pad(z, (1, 1))
    w = eca.conv.weight[0, 0]
    y = torch.stack([(padded[:, i:i + 3] * w).sum(1) for i in range(64)], 1)
    torch.testing.assert_close(eca(x), x * torch.sigmoid(y)[:, :, None, None])


def test_reduction_rounds_down_and_keeps_one_channel():
    se = ATTENTION.get("se")(2048, ratio=11.0, act_layer=torch.nn.ReLU)
    assert se.fc1.out_channels == math.floor(2048 / 11) == 186
    assert ATTENTION.get("se")(8, ratio=16.0, act_layer=torch.nn.ReLU).fc1.out_channels == 1
