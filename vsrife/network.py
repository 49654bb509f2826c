"""The RIFE v4 flow network (IFNet), one definition for every upstream variant.

An :class:`~vsrife.variants.Architecture` describes a variant as data; :class:`IFNet` builds the modules
it names.
The module and parameter names follow upstream's checkpoints, so a canonicalized checkpoint loads
strictly. The per-version table lives in :mod:`vsrife.variants`.

The output is upstream's (within float rounding), with less work at full resolution: upstream builds every
block's input at full resolution (warped frames and features, upscaled flow, mask and features) and then
shrinks it; here each block computes only the pixels its shrink reads (:class:`Points`), and the flow and
mask stay low-resolution terms until read (:class:`Field`). On one CPU core that makes a 4.26 forward
about 1.5x (640x384) to 1.8x (1280x768) faster.

It also moves less memory (``tools/traffic.py`` counts every op's bytes): each source frame is prepared
once (:class:`Frame`: image and features side by side in float32, what the warps sample, and the first
block's input); each block's input is shrunk piece by piece and written once, in its first convolution's
dtype and layout (:meth:`IFBlock.input`); sampling grids are built once per size, both frames' grids come
from the flow in one pass, and constant scales are fused or folded into weights. A 1080p 4.26 fp16 NHWC
forward moves 3.8 GB instead of 6.4 GB.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .variants import FLOW_AND_MASK_CHANNELS, Architecture, EncoderSpec

BLOCK_BODY_DEPTH = 8
CUDNN_CHANNELS = 8  # NHWC half-precision convolutions take channels in multiples of this


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
        return self.relu(torch.addcmul(x, self.conv(x), self.beta))  # x + conv(x) * beta, in one pass


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

    def forward(self, x: Tensor, factor: float, last: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` at the block's working resolution; returns the flow update (already multiplied by
        ``factor``, its upscaling), the mask and the carried features at ``upscale`` times that resolution.
        The ``last`` block computes only flow and mask: nothing reads the rest."""
        feat = self.conv0[1](self._first_conv(x))
        feat = self.convblock(feat) + feat if self.body_skip else self.convblock(feat)
        out = self._head(feat, factor, last)
        return out[:, :4], out[:, 4:5], out[:, 5:]

    def input(self, pieces: tuple[Tensor, ...]) -> Tensor:
        """``pieces`` put together as this block's input, in its first convolution's dtype and memory
        layout; in NHWC half precision with zero channels up to a multiple of 8, which cuDNN would otherwise
        add itself, copying the input into a padded buffer (nhwcAddPadding)."""
        weight = self.conv0[0][0].weight
        layout = _layout(weight)
        multiple = CUDNN_CHANNELS if weight.dtype == torch.float16 and layout == torch.channels_last else 1
        return _assembled(pieces, weight.dtype, layout, multiple)

    def _first_conv(self, x: Tensor) -> Tensor:
        """conv0's first convolution; zero weights for the zero channels :meth:`input` may have added."""
        conv, activation = self.conv0[0]
        weight = conv.weight
        if x.shape[1] > weight.shape[1]:
            weight = F.pad(weight, (0, 0, 0, 0, 0, x.shape[1] - weight.shape[1]))
            weight = weight.contiguous(memory_format=_layout(conv.weight))
        return activation(F.conv2d(x, weight, conv.bias, conv.stride, conv.padding))

    def _head(self, feat: Tensor, factor: float, last: bool) -> Tensor:
        """``lastconv``, with the flow's ``factor`` folded into its weights (exact for the powers of two
        it is: the same as multiplying the output, without a pass over it)."""
        shuffled = isinstance(self.lastconv, nn.Sequential)
        deconv = self.lastconv[0] if shuffled else self.lastconv
        per = 4 if shuffled else 1  # PixelShuffle(2) makes output channel c from input channels 4c..4c+3
        n = FLOW_AND_MASK_CHANNELS * per if last else deconv.out_channels
        weight, bias = deconv.weight[:, :n], deconv.bias[:n]
        if factor != 1:
            flow = 4 * per
            weight = torch.cat((weight[:, :flow] * factor, weight[:, flow:]), 1)
            bias = torch.cat((bias[:flow] * factor, bias[flow:]))
        out = F.conv_transpose2d(feat, weight, bias, stride=2, padding=1)
        return F.pixel_shuffle(out, 2) if shuffled else out


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
        for name, layer in zip(self.layer_names, convs, strict=True):
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


class Frame(NamedTuple):
    """One source frame as the forward reads it, made once per source frame (:meth:`IFNet.frame`).

    ``pixels``: the image clamped to 0..1 and (4.7+) its encoder features, ``[1, 3 + F, H, W]``, float32:
    what the warps sample (their coordinates must be float32, and grid_sample samples in the grid's dtype).
    ``first``: the same as the first block reads it, at its working resolution, in the network's dtype.
    """

    pixels: Tensor
    first: Tensor


def _swap_flow(flow: Tensor) -> Tensor:
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)


def _mirrored(pieces: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A block input with the frames swapped (ensemble): frames, features, 1 - t, then -mask and the
    swapped flow. Architectures with carried features have no ensemble."""
    frame0, frame1, feat0, feat1, t, *rest = pieces
    mirrored = (frame1, frame0, feat1, feat0, 1 - t)
    if rest:
        mask, flow = rest
        mirrored += (-mask, _swap_flow(flow))
    return mirrored


def _layout(t: Tensor) -> torch.memory_format:
    """``t``'s memory layout: NHWC (channels_last) or NCHW."""
    nhwc = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc else torch.contiguous_format


def _assembled(
    pieces: tuple[Tensor, ...], dtype: torch.dtype, layout: torch.memory_format, multiple: int = 1
) -> Tensor:
    """``pieces`` side by side in channels, written once in ``dtype`` and ``layout`` (a float32 warp cast
    on the way, a timestep or a frame broadcast to the batch): what ``torch.cat`` followed by a cast and a
    layout change would give, without the intermediate copies; zero channels up to a ``multiple``."""
    batch = max(p.shape[0] for p in pieces)
    height, width = max(p.shape[2] for p in pieces), max(p.shape[3] for p in pieces)
    channels = sum(p.shape[1] for p in pieces)
    padded = -(-channels // multiple) * multiple
    out = torch.empty(batch, padded, height, width, dtype=dtype, device=pieces[0].device, memory_format=layout)
    start = 0
    for piece in pieces:
        out[:, start : start + piece.shape[1]].copy_(piece)
        start += piece.shape[1]
    if padded > channels:
        out[:, channels:].zero_()
    return out


class Points:
    """The full-resolution pixels a block working at downscale ``s`` reads, and how it reduces them to its
    input. Upstream builds every block's input at full resolution, then shrinks it bilinearly by ``s``.
    Built once per frame size and device (:meth:`IFNet._points`): the sampling grids are constants.
    """

    full_resolution = False

    def __init__(self, s: float, height: int, width: int, device: torch.device) -> None:
        self.s, self.height, self.width = s, height, width
        cpu = torch.device("cpu")  # built on the host, copied once: usable from any stream at once
        rows, cols = self._positions(height, cpu), self._positions(width, cpu)
        ys = torch.linspace(-1.0, 1.0, height, device=cpu)[rows]
        xs = torch.linspace(-1.0, 1.0, width, device=cpu)[cols]
        self.rows, self.cols = rows.to(device), cols.to(device)
        # [1, h, w, 2], x and y in planes as the flow's channels are: the grids are made in one flat pass
        self.base = torch.stack(torch.meshgrid(xs, ys, indexing="xy")).unsqueeze(0).to(device).permute(0, 2, 3, 1)
        self.half_size = torch.tensor([(width - 1.0) / 2.0, (height - 1.0) / 2.0]).to(device)

    def _positions(self, length: int, device: torch.device) -> Tensor:
        raise NotImplementedError

    def take(self, full: Tensor) -> Tensor:
        """The points of a full-resolution tensor."""
        raise NotImplementedError

    def reduce(self, x: Tensor) -> Tensor:
        """The block's input from values at the points."""
        raise NotImplementedError

    def upscaled(self, low: Tensor, factor: float) -> Tensor:
        """The points of ``low`` bilinearly upscaled by ``factor`` to full resolution."""
        raise NotImplementedError

    def shrunk(self, low: Tensor, factor: float) -> Tensor:
        """``low`` bilinearly upscaled by ``factor`` to full resolution, then shrunk as the block's input.
        Where ``factor / s`` is even, the two rows (columns) each block pixel averages lie between the same
        two rows of ``low``, where the upscale is linear: their mean is ``low`` upscaled by ``factor / s``,
        one small interpolation instead of one at the points."""
        ratio = factor / self.s
        if self.s >= 2 and self.s == int(self.s) and ratio == int(ratio) and int(ratio) % 2 == 0:
            return F.interpolate(low, scale_factor=ratio, mode="bilinear")
        return self.reduce(self.upscaled(low, factor))

    def warp(self, images: tuple[Tensor, Tensor], flow: Tensor) -> tuple[Tensor, ...]:
        """The points of two float32 ``images`` backward-warped (border-clamped) by ``flow`` given at the points,
        in pixels (channels 0-1 to the first image, 2-3 to the second); float32."""
        grids = self._grids(flow)
        batch = flow.shape[0]
        return tuple(
            F.grid_sample(
                image.expand(batch, -1, -1, -1), grids[:, i], mode="bilinear", padding_mode="border", align_corners=True
            )
            for i, image in enumerate(images)
        )

    def _grids(self, flow: Tensor) -> Tensor:
        """Where both images are sampled, ``[B, 2, h, w, 2]`` (image, row, column, x and y), in one pass:
        ``base`` (normalized, align_corners) moved by ``flow / half_size``, float32."""
        batch, _, height, width = flow.shape
        moves = flow.unflatten(1, (2, 2)).permute(0, 1, 3, 4, 2)
        if torch.compiler.is_compiling():  # torch.compile takes no strided out=, and lays out the grid itself
            return torch.addcdiv(self.base, moves, self.half_size)
        out = torch.empty(batch, 2, 2, height, width, device=flow.device).permute(0, 1, 3, 4, 2)
        return torch.addcdiv(self.base, moves, self.half_size, out=out)


class PhasePoints(Points):
    """For an even ``s`` (4 and up) the bilinear shrink averages two rows and two columns at fixed offsets
    in every ``s``-cell and never reads the rest: these points are only those rows and columns, so warps
    and upscales are computed there and nowhere else (upstream computes them for every pixel)."""

    def __init__(self, s: float, height: int, width: int, device: torch.device) -> None:
        super().__init__(s, height, width, device)
        # pixel centres in align_corners=False coordinates: where a bilinear upscale samples its source,
        # whatever the source's size
        rows, cols = self._positions(height, torch.device("cpu")), self._positions(width, torch.device("cpu"))
        xs, ys = (2 * cols + 1) / width - 1, (2 * rows + 1) / height - 1
        self.centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).unsqueeze(0).to(device)  # float32

    def _positions(self, length: int, device: torch.device) -> Tensor:
        s = int(self.s)
        first = torch.arange(s // 2 - 1, length, s, device=device)
        return torch.stack((first, first + 1), 1).flatten()

    def take(self, full: Tensor) -> Tensor:
        return full.index_select(2, self.rows).index_select(3, self.cols)

    def reduce(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=0.5, mode="bilinear")  # each 2x2 group of points to its mean

    def upscaled(self, low: Tensor, factor: float) -> Tensor:
        """In float32 (the sampling grid's dtype), which is also what the warps' grids are made of."""
        centres = self.centres.expand(low.shape[0], -1, -1, -1)
        return F.grid_sample(low.float(), centres, mode="bilinear", padding_mode="border", align_corners=False)


class FullPoints(Points):
    """Every pixel: for ``s`` = 2 (where phase points would be every pixel), 1, and the odd or enlarging
    ``s`` of ``scale`` above 1."""

    full_resolution = True

    def _positions(self, length: int, device: torch.device) -> Tensor:
        return torch.arange(length, device=device)

    def take(self, full: Tensor) -> Tensor:
        return full

    def reduce(self, x: Tensor) -> Tensor:
        return x if self.s == 1 else F.interpolate(x, scale_factor=1.0 / self.s, mode="bilinear")

    def upscaled(self, low: Tensor, factor: float) -> Tensor:
        return low if factor == 1 else F.interpolate(low, scale_factor=factor, mode="bilinear")

    def shrinking_by(self, s: float) -> FullPoints:
        """The same pixels (and sampling grid) for a block at downscale ``s``."""
        points = copy.copy(self)
        points.s = s
        return points


def points_for(s: float, full: FullPoints) -> Points:
    """Where a block at downscale ``s`` reads; every block that reads every pixel shares ``full``'s grid."""
    if s >= 4 and s == int(s) and int(s) % 2 == 0:  # at 2 the phase points would be every pixel
        return PhasePoints(s, full.height, full.width, full.base.device)
    return full.shrinking_by(s)


class Field:
    """A full-resolution tensor held as a sum of low-resolution terms, each to be bilinearly upscaled by
    its factor; it is read only where a block needs it (:meth:`at`, :meth:`shrunk`)."""

    def __init__(self, low: Tensor, factor: float) -> None:
        self.terms: list[tuple[Tensor, float]] = [(low, factor)]

    def add(self, low: Tensor, factor: float) -> None:
        self.terms.append((low, factor))

    def at(self, points: Points) -> Tensor:
        """The values at the points."""
        total = _sum(points.upscaled(low, factor) for low, factor in self.terms)
        if points.full_resolution:
            self.terms = [(total, 1.0)]  # later full-resolution reads start from here
        return total

    def shrunk(self, points: Points) -> Tensor:
        """The values as the block's input reads them (shrunk by ``s``)."""
        if points.s == 1:
            return self.at(points)
        return _sum(points.shrunk(low, factor) for low, factor in self.terms)


def _sum(values) -> Tensor:
    values = iter(values)
    total = next(values)
    for value in values:  # in the order upstream adds them
        total = total + value
    return total


class IFNet(nn.Module):
    """RIFE v4 intermediate-frame network.

    ``frame(image)`` takes a frame as ``[1, 3, H, W]`` in 0..1 (H and W multiples of
    ``arch.size_multiple(scale)``) and makes what the forward reads of it (:class:`Frame`, encoder features
    included), once per source frame; ``forward(frame0, frame1, timestep)`` takes two of those and
    ``timestep`` as ``[B, 1, 1, 1]`` in 0..1, and returns the ``B`` frames at those timesteps, float32.
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
        self._built: dict[tuple, Points] = {}

    @property
    def blocks(self) -> list[IFBlock]:
        return [getattr(self, f"block{i}") for i in range(len(self.arch.block_widths))]

    @property
    def _scales(self) -> list[float]:
        return [s / self.scale for s in self.arch.scale_schedule]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the network's weights, in which its convolutions run."""
        return self.block0.conv0[0][0].weight.dtype

    def frame(self, image: Tensor) -> Frame:
        """What the forward reads of ``image``, made once per source frame: it depends on that frame only.
        The encoder reads the image as upstream's does (clamped or not, by version), in the network's dtype;
        the warps read it clamped, in float32 as it comes (an fp32 image is never rounded to half precision
        on its way to the output)."""
        features = () if self.encode is None else (self.encode(image.to(self.dtype)),)
        pixels = _assembled((image.clamp(0.0, 1.0), *features), torch.float32, _layout(image))
        return Frame(pixels, self._first(pixels, self._scales[0]).to(self.dtype))

    def _first(self, pixels: Tensor, s: float) -> Tensor:
        points = self._points(s, *pixels.shape[2:], pixels.device)
        return points.reduce(points.take(pixels))

    def _points(self, s: float, height: int, width: int, device: torch.device) -> Points:
        """Where a block at downscale ``s`` reads, built once per frame size and device (blocks that read
        every pixel share one grid)."""
        key = (s, height, width, device)
        if key not in self._built:
            full = self._built.get((1, height, width, device)) or FullPoints(1, height, width, device)
            self._built[(1, height, width, device)] = full
            self._built[key] = points_for(s, full)
        return self._built[key]

    def forward(self, frame0: Frame, frame1: Frame, timestep: Tensor) -> Tensor:
        """The in-betweens, float32: each frame's pixels warped by the flow and blended by the mask, both
        computed in the network's dtype (:meth:`motion`)."""
        flow, mask = self.motion(frame0, frame1, timestep)
        full = self._points(1, *frame0.pixels.shape[2:], frame0.pixels.device)
        warped0, warped1 = full.warp((frame0.pixels[:, :3], frame1.pixels[:, :3]), flow)
        return torch.lerp(warped1, warped0, torch.sigmoid(mask.float()))

    def motion(self, frame0: Frame, frame1: Frame, timestep: Tensor) -> tuple[Tensor, Tensor]:
        """The full-resolution flow (``[B, 4, H, W]``, pixels, channels 0-1 to ``frame0``) and mask logits
        (``[B, 1, H, W]``) at each timestep, in the network's dtype: all the forward computes in it."""
        if self.arch.retries_large_motion and timestep.shape[0] > 1:
            # the large-motion retry is decided per pair; run pairs one at a time to keep that exact
            flows, masks = zip(*(self.motion(frame0, frame1, t) for t in timestep.split(1)), strict=True)
            return torch.cat(flows), torch.cat(masks)
        scales = self._scales
        flows = self._flows(frame0, frame1, timestep, scales, retried=False)
        if flows is None:  # 4.0/4.1: motion too large for the first schedule; start over at double scale
            flows = self._flows(frame0, frame1, timestep, [s * 2 for s in scales], retried=True)
        flow, mask = flows
        full = self._points(1, *frame0.pixels.shape[2:], frame0.pixels.device)
        return flow.at(full), mask.at(full)

    def _flows(
        self, frame0: Frame, frame1: Frame, timestep: Tensor, scales: list[float], retried: bool
    ) -> tuple[Field, Field] | None:
        """The flow and mask fields the blocks refine in turn; None when 4.0/4.1 must retry."""
        frames = (frame0, frame1)
        flow = mask = carried = None
        for i, (block, s) in enumerate(zip(self.blocks, scales, strict=True)):
            points = self._points(s, *frame0.pixels.shape[2:], frame0.pixels.device)
            factor, last = s * block.upscale, i == len(scales) - 1
            pieces = self._block_input(points, frames, timestep, flow, mask, carried)
            delta, mask_delta, carried_low = block(block.input(pieces), factor, last)
            if i == 1 and not retried and self._motion_too_large(delta, factor):
                return None
            if self.ensemble and not (retried and i == 0):  # upstream's retry skips it in the first block
                rdelta, rmask, _ = block(block.input(_mirrored(pieces)), factor, last)
                delta = (delta + _swap_flow(rdelta)) / 2
                mask_delta = (mask_delta - rmask) / 2
            if flow is None:
                flow = Field(delta, factor)
            else:
                flow.add(delta, factor)
            if mask is not None and self.arch.mask_accumulates:
                mask.add(mask_delta, factor)
            else:
                mask = Field(mask_delta, factor)
            carried = Field(carried_low, factor)
        return flow, mask

    def _block_input(
        self,
        points: Points,
        frames: tuple[Frame, Frame],
        timestep: Tensor,
        flow: Field | None,
        mask: Field | None,
        carried: Field | None,
    ) -> tuple[Tensor, ...]:
        """A block's input at its working resolution, in upstream's channel order: both frames, their
        features, the timestep, and after the first block the mask, carried features (4.21+) and the flow
        (in block pixels). Each piece is shrunk on its own and put together once, at that resolution."""
        if flow is None:
            first = [f.first if points.s == self._scales[0] else self._first(f.pixels, points.s) for f in frames]
            return first[0][:, :3], first[1][:, :3], first[0][:, 3:], first[1][:, 3:], timestep
        here = flow.at(points)
        w0, w1 = (points.reduce(w) for w in points.warp((frames[0].pixels, frames[1].pixels), here))
        moved = here if points.s == 1 else points.reduce(here) / points.s
        extra = (carried.shrunk(points),) if self.arch.passes_features else ()
        return w0[:, :3], w1[:, :3], w0[:, 3:], w1[:, 3:], timestep, mask.shrunk(points), *extra, moved

    def _motion_too_large(self, delta: Tensor, factor: float) -> bool:
        if not self.arch.retries_large_motion:
            return False
        full = F.interpolate(delta, scale_factor=factor, mode="bilinear")
        return bool(full[:, :2].abs().max() > 32 and full[:, 2:4].abs().max() > 32)
