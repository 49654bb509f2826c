"""The network's shortcuts against what they replace: PyTorch's own full-resolution interpolation and
warping, sampled afterwards, and a concatenation followed by a cast. (Whole-network equality with upstream
is in test_variants/test_real_weights.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import float32_error
from vsrife.network import FullPoints, IFBlock, IFNet, PhasePoints, _assembled, points_for
from vsrife.variants import architecture

HEIGHT, WIDTH = 128, 192
SHRINKS = (2, 4, 8, 16, 32)
CPU = torch.device("cpu")


@pytest.fixture
def full() -> torch.Tensor:
    return torch.rand(2, 5, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))


def test_points_are_phase_points_only_for_even_shrinks_from_4():
    full = FullPoints(1, HEIGHT, WIDTH, CPU)
    assert all(isinstance(points_for(s, full), PhasePoints) for s in SHRINKS[1:])
    assert all(isinstance(points_for(s, full), FullPoints) for s in (2, 1, 0.5, 0.25, 3, 6.5))


def sampled_error(low: torch.Tensor) -> float:
    """How far float32 may move a bilinear upscale of ``low`` sampled at the points (grid_sample, at positions
    made in float32) from F.interpolate's (exact positions and weights for power-of-two factors): the position,
    made in normalised coordinates and back (5 roundings of at most the grid's size in pixels), moves by
    ``float32_error(size, 5)`` pixels, the value by that times the largest step between neighbours (at most
    max − min); the weights, both weighted sums and a 2×2 mean add 16 roundings of at most max |low|."""
    spread, largest = float(low.max() - low.min()), float(low.abs().max())
    return float32_error(max(low.shape[-2:]), 5) * spread + float32_error(largest, 16)


@pytest.mark.parametrize("s", SHRINKS)
def test_shrinking_the_points_is_the_bilinear_shrink_of_the_whole(full, s):
    """Both average the same 2×2 values with weights of ½ (exact at these half-pixel positions): 4 roundings
    each of values in 0..1, 2 · γ4 < 1e-6."""
    points = PhasePoints(s, HEIGHT, WIDTH, CPU)
    expected = F.interpolate(full, scale_factor=1 / s, mode="bilinear")
    torch.testing.assert_close(points.reduce(points.take(full)), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("s", SHRINKS[:-1])
@pytest.mark.parametrize("factor", (2, 4, 8, 16))
def test_upscaling_at_the_points_is_sampling_the_bilinear_upscale(s, factor):
    low = torch.rand(2, 4, HEIGHT // factor, WIDTH // factor, generator=torch.Generator().manual_seed(factor))
    points = PhasePoints(s, HEIGHT, WIDTH, CPU)
    expected = points.take(F.interpolate(low, scale_factor=factor, mode="bilinear"))
    torch.testing.assert_close(points.upscaled(low, factor), expected, rtol=0, atol=sampled_error(low))


# (s, factor): a term of factor 1 is full resolution, read by full-resolution blocks only
SHRUNK = [(s, f) for s in (1, 2, 4, 8, 16, 0.5) for f in (1, 2, 4, 8, 16, 32) if f > 1 or s == 1]


@pytest.mark.parametrize(("s", "factor"), SHRUNK)
def test_a_shrunk_upscale_is_upstreams_upscale_then_shrink(s, factor):
    """One interpolation where ``factor / s`` is even, the points' upscale and shrink elsewhere; both are
    what upstream computes: the whole upscaled to full resolution, then shrunk."""
    low = torch.rand(2, 4, HEIGHT // factor, WIDTH // factor, generator=torch.Generator().manual_seed(factor))
    points = points_for(s, FullPoints(1, HEIGHT, WIDTH, CPU))
    upscaled = F.interpolate(low, scale_factor=factor, mode="bilinear") if factor != 1 else low
    expected = F.interpolate(upscaled, scale_factor=1 / s, mode="bilinear") if s != 1 else upscaled
    torch.testing.assert_close(points.shrunk(low, factor), expected, rtol=0, atol=sampled_error(low))


@pytest.mark.parametrize("s", (*SHRINKS, 1))
def test_warping_at_the_points_is_sampling_the_full_warp(full, s):
    flow = 40 * torch.randn(2, 4, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(2))
    other = full.flip(3)
    ys = torch.linspace(-1, 1, HEIGHT).view(1, HEIGHT, 1).expand(2, HEIGHT, WIDTH)
    xs = torch.linspace(-1, 1, WIDTH).view(1, 1, WIDTH).expand(2, HEIGHT, WIDTH)
    points = points_for(s, FullPoints(1, HEIGHT, WIDTH, CPU))
    warped = points.warp((full, other), points.take(flow))
    for image, moved, got in zip((full, other), (flow[:, :2], flow[:, 2:]), warped, strict=True):
        grid = torch.stack((xs + moved[:, 0] / ((WIDTH - 1) / 2), ys + moved[:, 1] / ((HEIGHT - 1) / 2)), -1)
        expected = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
        torch.testing.assert_close(got, points.take(expected), rtol=0, atol=1e-5)


def test_one_frame_is_warped_for_a_batch_of_flows(full):
    points = FullPoints(1, HEIGHT, WIDTH, CPU)
    flow = 10 * torch.randn(3, 4, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(3))
    batched = points.warp((full[:1], full[1:]), flow)
    for i in range(3):
        single = points.warp((full[:1], full[1:]), flow[i : i + 1])
        for a, b in zip(batched, single, strict=True):
            torch.testing.assert_close(a[i : i + 1], b, rtol=0, atol=0)


@pytest.mark.parametrize("layout", (torch.contiguous_format, torch.channels_last))
def test_assembling_is_concatenating_broadcasting_and_casting(full, layout):
    timestep = torch.tensor([0.25, 0.75]).view(2, 1, 1, 1)
    pieces = (full[:1, :3], full[:, 3:], timestep, full[:, :2].half())
    got = _assembled(pieces, torch.float16, layout)
    wide = [p.expand(2, -1, HEIGHT, WIDTH) for p in pieces]
    expected = torch.cat([p.float() for p in wide], 1).half()
    assert got.is_contiguous(memory_format=layout) and got.dtype == torch.float16
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_zero_channels_padding_a_block_input_change_nothing(full):
    """NHWC half precision pads a block's input to a multiple of 8 channels, as cuDNN would. The first
    convolution gives them zero weights: its sums gain only exact zeros, though a kernel for 8 channels may
    add the 45 real terms in another order. Each output moves by at most ``float32_error(Σ |w x| + |b|, 47)``
    (a product, 45 additions with the bias, the activation's product; the activation is 1-Lipschitz) on
    either side; after it the block is the same code, whose own rounding a bound cannot follow through."""
    torch.manual_seed(4)
    block = IFBlock(architecture("4.26"), 5, 32).eval()
    with torch.inference_mode():
        plain = _assembled((full,), torch.float32, torch.contiguous_format)
        padded = _assembled((full,), torch.float32, torch.contiguous_format, multiple=8)
        assert padded.shape[1] == 8 and not padded[:, 5:].any()
        conv = block.conv0[0][0]
        weight, bias = conv.weight.double().abs(), conv.bias.double().abs()
        magnitude = F.conv2d(plain.double().abs(), weight, bias, conv.stride, conv.padding)
        difference = (block._first_conv(padded) - block._first_conv(plain)).abs().double()
        assert (difference <= 2 * float32_error(magnitude, 47)).all()
        for a, b in zip(block(plain, 4.0), block(padded, 4.0), strict=True):
            assert a.shape == b.shape
        half = block.half().to(memory_format=torch.channels_last)
        assert half.input((full,)).shape[1] == 8


def test_sampling_grids_are_built_once_per_size():
    net = IFNet(architecture("4.26")).eval()
    image = torch.rand(1, 3, 128, 192)
    with torch.inference_mode():
        frames = net.frame(image), net.frame(image.flip(3))
        net(*frames, torch.full((1, 1, 1, 1), 0.5))
        built = dict(net._built)
        net(*frames, torch.full((2, 1, 1, 1), 0.5))
    assert net._built == built
    assert {key[0] for key in built} == {16, 8, 4, 2, 1}
