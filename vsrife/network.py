"""The RIFE v4 flow network (IFNet), one definition for every upstream variant.

An :class:`Architecture` describes a variant as data; :class:`IFNet` builds the modules it names.
The module and parameter names follow upstream's checkpoints, so a canonicalized checkpoint loads
strictly. The per-version table lives in :mod:`vsrife.variants`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # flow resolutions upstream offers
FLOW_AND_MASK_CHANNELS = 5  # 2 + 2 flow channels (to each frame), 1 blend mask channel
BLOCK_BODY_DEPTH = 8


@dataclass(frozen=True)
class EncoderSpec:
    """The per-frame feature encoder of 4.7 and later: stride-2 conv, inner convs, stride-2 deconv.

    ``layout`` picks the parameter names upstream used: ``"sequential"`` (``encode.0``, ``encode.2``, …;
    no input clamp) or ``"head"`` (``encode.cnn0`` … ``encode.cnn3``; input clamped to 0..1).
    """

    hidden: int
    out: int
    inner_convs: int = 2
    layout: Literal["sequential", "head"] = "head"


@dataclass(frozen=True)
class Architecture:
    """Structure and behaviour of one RIFE v4 variant.

    ``block_widths``: channels of each IFBlock, coarse to fine; ``scale_schedule``: the downscale each
    block works at (divided by the user's ``scale``); ``pad_multiple``: frame sizes must be a multiple of
    this at ``scale=1`` (``pad_multiple / scale`` below 1).
    """

    block_widths: tuple[int, ...]
    scale_schedule: tuple[float, ...]
    activation: Literal["prelu", "leaky"] = "leaky"
    body: Literal["conv", "resconv"] = "resconv"
    body_groups: int = 1
    body_skip: bool = False  # 4.0/4.1 add the block input back around the body
    block_out_channels: int = 6  # channels a block predicts (flow 4 + mask 1 + the rest)
    pixel_shuffle_head: bool = True  # 4.5+: deconv to 4*out channels, then PixelShuffle(2)
    passes_features: bool = False  # 4.21+: channels past flow and mask feed the next block
    encoder: EncoderSpec | None = None
    mask_accumulates: bool = False  # before 4.7 each block adds to the mask instead of replacing it
    retries_large_motion: bool = False  # 4.0/4.1 restart at double scale on large early flow
    supports_ensemble: bool = True
    scales: tuple[float, ...] = SCALES
    pad_multiple: int = 32

    def __post_init__(self) -> None:
        if len(self.block_widths) != len(self.scale_schedule):
            raise ValueError("block_widths and scale_schedule must have one entry per block")

    @property
    def encoder_channels(self) -> int:
        return self.encoder.out if self.encoder else 0

    @property
    def carried_channels(self) -> int:
        return self.block_out_channels - FLOW_AND_MASK_CHANNELS if self.passes_features else 0

    def block_in_channels(self, index: int) -> int:
        features = 2 * self.encoder_channels
        if index == 0:
            return 3 + 3 + features + 1  # both frames, their features, timestep
        # warped frames and features, timestep, mask, carried features, then the flow (4)
        return 3 + 3 + features + 1 + 1 + self.carried_channels + 4

    def size_multiple(self, scale: float) -> int:
        """Frame sizes the network takes at ``scale`` must be a multiple of this."""
        return max(self.pad_multiple, int(self.pad_multiple / scale))


def _activation(kind: str, channels: int) -> nn.Module:
    return nn.PReLU(channels) if kind == "prelu" else nn.LeakyReLU(0.2, True)


def _conv(arch: Architecture, cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), _activation(arch.activation, cout))


class ResConv(nn.Module):
    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, groups=groups)
        self.beta = nn.Parameter(torch.ones((1, channels, 1, 1)))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """Predicts a flow update, a mask and (4.21+) carried features at one resolution."""

    def __init__(self, arch: Architecture, in_channels: int, width: int) -> None:
        super().__init__()
        self.body_skip = arch.body_skip
        self.upscale = 1 if arch.pixel_shuffle_head else 2
        self.conv0 = nn.Sequential(_conv(arch, in_channels, width // 2, 2), _conv(arch, width // 2, width, 2))
        if arch.body == "resconv":
            body = [ResConv(width, arch.body_groups) for _ in range(BLOCK_BODY_DEPTH)]
        else:
            body = [_conv(arch, width, width) for _ in range(BLOCK_BODY_DEPTH)]
        self.convblock = nn.Sequential(*body)
        if arch.pixel_shuffle_head:
            self.lastconv = nn.Sequential(
                nn.ConvTranspose2d(width, 4 * arch.block_out_channels, 4, 2, 1), nn.PixelShuffle(2)
            )
        else:
            self.lastconv = nn.ConvTranspose2d(width, arch.block_out_channels, 4, 2, 1)

    def forward(self, x: Tensor, flow: Tensor | None, scale: float) -> tuple[Tensor, Tensor, Tensor]:
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear")
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear") / scale
            x = torch.cat((x, flow), 1)
        feat = self.conv0(x)
        feat = self.convblock(feat) + feat if self.body_skip else self.convblock(feat)
        out = F.interpolate(self.lastconv(feat), scale_factor=scale * self.upscale, mode="bilinear")
        return out[:, :4] * (scale * self.upscale), out[:, 4:5], out[:, 5:]


class FeatureEncoder(nn.Module):
    """Per-frame features (4.7+); depends on one frame only, so callers compute it once per frame."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.clamps_input = spec.layout == "head"
        self.activates = spec.inner_convs > 0
        convs: list[nn.Module] = [nn.Conv2d(3, spec.hidden, 3, 2, 1)]
        convs += [nn.Conv2d(spec.hidden, spec.hidden, 3, 1, 1) for _ in range(spec.inner_convs)]
        convs.append(nn.ConvTranspose2d(spec.hidden, spec.out, 4, 2, 1))
        self.layer_names = [self._name(spec, i) for i in range(len(convs))]
        for name, layer in zip(self.layer_names, convs):
            self.add_module(name, layer)
        self.relu = nn.LeakyReLU(0.2, True)

    @staticmethod
    def _name(spec: EncoderSpec, index: int) -> str:
        if spec.layout == "head":
            return f"cnn{index}"
        # nn.Sequential numbering, with the parameter-free activations in between
        return str(index * 2 if spec.inner_convs else index)

    def forward(self, img: Tensor) -> Tensor:
        x = img.clamp(0.0, 1.0) if self.clamps_input else img
        last = len(self.layer_names) - 1
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x)
            if i < last and self.activates:
                x = self.relu(x)
        return x


def _swap_flow(flow: Tensor) -> Tensor:
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)


class Warper:
    """Backward warping with a sampling grid built once per frame size."""

    def __init__(self, like: Tensor) -> None:
        _, _, h, w = like.shape
        xs = torch.linspace(-1.0, 1.0, w, device=like.device).view(1, 1, 1, w).expand(-1, -1, h, -1)
        ys = torch.linspace(-1.0, 1.0, h, device=like.device).view(1, 1, h, 1).expand(-1, -1, -1, w)
        self.grid = torch.cat((xs, ys), 1)
        self.half_size = torch.tensor([(w - 1.0) / 2.0, (h - 1.0) / 2.0], device=like.device)

    def __call__(self, img: Tensor, flow: Tensor) -> Tensor:
        flow = flow.float()
        flow = torch.cat((flow[:, 0:1] / self.half_size[0], flow[:, 1:2] / self.half_size[1]), 1)
        grid = (self.grid + flow).permute(0, 2, 3, 1)
        out = F.grid_sample(img.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.to(img.dtype)


class IFNet(nn.Module):
    """RIFE v4 intermediate-frame network.

    ``forward(img0, img1, timestep, feat0, feat1)`` takes two frames as ``[B, 3, H, W]`` tensors in 0..1
    (H and W multiples of ``arch.size_multiple(scale)``), ``timestep`` as ``[B, 1, H, W]`` in 0..1, and for
    4.7+ the frames' :meth:`encode` features; it returns the frame at ``timestep``.
    """

    def __init__(self, arch: Architecture, scale: float = 1.0, ensemble: bool = False) -> None:
        super().__init__()
        if ensemble and not arch.supports_ensemble:
            raise ValueError("ensemble is not supported by this architecture")
        self.arch = arch
        self.scale = scale
        self.ensemble = ensemble
        for i, width in enumerate(arch.block_widths):
            self.add_module(f"block{i}", IFBlock(arch, arch.block_in_channels(i), width))
        self.encode = FeatureEncoder(arch.encoder) if arch.encoder else None

    @property
    def blocks(self) -> list[IFBlock]:
        return [getattr(self, f"block{i}") for i in range(len(self.arch.block_widths))]

    def features(self, img: Tensor) -> Tensor | None:
        """The per-frame encoder features, or None for versions without an encoder."""
        return self.encode(img) if self.encode is not None else None

    def forward(
        self,
        img0: Tensor,
        img1: Tensor,
        timestep: Tensor,
        feat0: Tensor | None = None,
        feat1: Tensor | None = None,
    ) -> Tensor:
        if self.arch.retries_large_motion and img0.shape[0] > 1:
            # the large-motion retry is decided per pair; run pairs one at a time to keep that exact
            pairs = zip(img0.split(1), img1.split(1), timestep.split(1), *self._split(feat0, feat1))
            return torch.cat([self.forward(*pair) for pair in pairs])
        img0 = img0.clamp(0.0, 1.0)
        img1 = img1.clamp(0.0, 1.0)
        warp = Warper(img0)
        features = (feat0, feat1) if feat0 is not None and feat1 is not None else ()
        scales = [s / self.scale for s in self.arch.scale_schedule]
        flow, mask, carried = self._first_estimate(self.blocks[0], img0, img1, features, timestep, scales[0])
        warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        for i, block in enumerate(self.blocks[1:], start=1):
            wfeat = (warp(features[0], flow[:, :2]), warp(features[1], flow[:, 2:4])) if features else ()
            x = torch.cat((warped0, warped1, *wfeat, timestep, mask, *self._carry(carried)), 1)
            delta, mask_delta, carried = block(x, flow, scales[i])
            if i == 1 and self._motion_too_large(delta):
                scales = [s * 2 for s in scales]
                flow, mask, _ = self.blocks[0](torch.cat((img0, img1, timestep), 1), None, scales[0])
                warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
                x = torch.cat((warped0, warped1, timestep, mask), 1)
                delta, mask_delta, carried = block(x, flow, scales[i])
            if self.ensemble:
                x = torch.cat((warped1, warped0, *wfeat[::-1], 1 - timestep, -mask), 1)
                rdelta, rmask, _ = block(x, _swap_flow(flow), scales[i])
                delta = (delta + _swap_flow(rdelta)) / 2
                mask_delta = (mask_delta - rmask) / 2
            mask = mask + mask_delta if self.arch.mask_accumulates else mask_delta
            flow = flow + delta
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        mask = torch.sigmoid(mask)
        return warped0 * mask + warped1 * (1 - mask)

    def _first_estimate(
        self, block: IFBlock, img0: Tensor, img1: Tensor, features: tuple, timestep: Tensor, scale: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        flow, mask, carried = block(torch.cat((img0, img1, *features, timestep), 1), None, scale)
        if self.ensemble:
            rflow, rmask, _ = block(torch.cat((img1, img0, *features[::-1], 1 - timestep), 1), None, scale)
            flow = (flow + _swap_flow(rflow)) / 2
            mask = (mask - rmask) / 2
        return flow, mask, carried

    def _carry(self, carried: Tensor) -> tuple[Tensor, ...]:
        return (carried,) if self.arch.passes_features else ()

    def _motion_too_large(self, delta: Tensor) -> bool:
        if not self.arch.retries_large_motion:
            return False
        return bool(delta[:, :2].abs().max() > 32 and delta[:, 2:4].abs().max() > 32)

    @staticmethod
    def _split(feat0: Tensor | None, feat1: Tensor | None) -> tuple:
        if feat0 is None or feat1 is None:
            return ()
        return (feat0.split(1), feat1.split(1))
