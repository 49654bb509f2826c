"""The network's shortcuts against what they replace: PyTorch's own full-resolution interpolation and
warping, sampled afterwards. (Whole-network equality with upstream is in test_variants/test_real_weights.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vsrife.network import FullPoints, PhasePoints, points_for

HEIGHT, WIDTH = 128, 192
SHRINKS = (2, 4, 8, 16, 32)


@pytest.fixture
def full() -> torch.Tensor:
    return torch.rand(2, 5, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))


def test_points_are_phase_points_only_for_even_shrinks_from_4():
    full = FullPoints(1, HEIGHT, WIDTH, torch.zeros(1))
    assert all(isinstance(points_for(s, full), PhasePoints) for s in SHRINKS[1:])
    assert all(isinstance(points_for(s, full), FullPoints) for s in (2, 1, 0.5, 0.25, 3, 6.5))


@pytest.mark.parametrize("s", SHRINKS)
def test_shrinking_the_points_is_the_bilinear_shrink_of_the_whole(full, s):
    points = PhasePoints(s, HEIGHT, WIDTH, full)
    expected = F.interpolate(full, scale_factor=1 / s, mode="bilinear")
    torch.testing.assert_close(points.reduce(points.take(full)), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("s", SHRINKS[:-1])
@pytest.mark.parametrize("factor", (2, 4, 8, 16))
def test_upscaling_at_the_points_is_sampling_the_bilinear_upscale(s, factor):
    low = torch.rand(2, 4, HEIGHT // factor, WIDTH // factor, generator=torch.Generator().manual_seed(factor))
    points = PhasePoints(s, HEIGHT, WIDTH, low)
    expected = points.take(F.interpolate(low, scale_factor=factor, mode="bilinear"))
    torch.testing.assert_close(points.upscaled(low, factor), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("s", (*SHRINKS, 1))
def test_warping_at_the_points_is_sampling_the_full_warp(full, s):
    flow = 40 * torch.randn(2, 2, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(2))
    ys = torch.linspace(-1, 1, HEIGHT).view(1, HEIGHT, 1).expand(2, HEIGHT, WIDTH)
    xs = torch.linspace(-1, 1, WIDTH).view(1, 1, WIDTH).expand(2, HEIGHT, WIDTH)
    grid = torch.stack((xs + flow[:, 0] / ((WIDTH - 1) / 2), ys + flow[:, 1] / ((HEIGHT - 1) / 2)), -1)
    warped = F.grid_sample(full, grid, mode="bilinear", padding_mode="border", align_corners=True)
    points = points_for(s, FullPoints(1, HEIGHT, WIDTH, full))
    torch.testing.assert_close(points.warp(full, points.take(flow)), points.take(warped), rtol=0, atol=1e-5)
