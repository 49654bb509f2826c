"""Colour formats: the network sees RGB float; users bring YUV, GRAY or RGB of any depth.

The clip's own planes go to the compute device in their own sample type and are converted there, with
torch, to the network's RGB and back (:class:`DeviceConverter`): range, matrix, chroma siting and
resampling as VapourSynth's resizer (zimg) does them with ``resize.Bicubic`` — Catmull-Rom (b=0, c=½)
chroma resampling, mirrored edges, the kernel widened by the factor when shrinking — and rounding to
the output depth. The tests hold it against zimg.

The colour description is read from the clip's first frame. Where a prop is missing or unspecified:
matrix BT.709 for HD (wider than 1024 or taller than 576) and BT.601 (SMPTE 170M) for SD; limited range for
YUV, full range for RGB and GRAY; left chroma siting. Float formats have no range (Y in 0..1, chroma in
-½..½). Matrices that need the transfer function (BT.2020 constant luminance, ICtCp, chromaticity-derived)
are refused: convert such a clip with ``core.resize`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import vapoursynth as vs

from .errors import ParameterError

Matrix = vs.MatrixCoefficients
SD_WIDTH, SD_HEIGHT = 1024, 576
# luma weights (Kr, Kb) of the matrices converted here; YCgCo has its own formula
LUMA_WEIGHTS: dict[Matrix, tuple[float, float]] = {
    Matrix.MATRIX_BT709: (0.2126, 0.0722),
    Matrix.MATRIX_FCC: (0.30, 0.11),
    Matrix.MATRIX_BT470_BG: (0.299, 0.114),
    Matrix.MATRIX_ST170_M: (0.299, 0.114),
    Matrix.MATRIX_ST240_M: (0.212, 0.087),
    Matrix.MATRIX_BT2020_NCL: (0.2627, 0.0593),
}
SUPPORTED_MATRICES = (*LUMA_WEIGHTS, Matrix.MATRIX_YCGCO)
# codes that make no sense on YUV: identity (RGB), unspecified and the reserved 3
NOT_YUV_MATRICES = (Matrix.MATRIX_RGB, Matrix.MATRIX_UNSPECIFIED, 3)


@dataclass(frozen=True)
class Colour:
    """How a clip's values map to RGB in 0..1."""

    matrix: Matrix | None  # None for RGB and GRAY
    limited: bool
    chroma_location: vs.ChromaLocation = vs.ChromaLocation.CHROMA_LEFT


def default_matrix(width: int, height: int) -> Matrix:
    return Matrix.MATRIX_BT709 if width > SD_WIDTH or height > SD_HEIGHT else Matrix.MATRIX_ST170_M


def read_colour(fmt: vs.VideoFormat, width: int, height: int, props: vs.FrameProps) -> Colour:
    """The colour description from frame props, with the module's documented defaults."""
    limited = _is_limited(props, default=fmt.color_family == vs.YUV)
    if fmt.color_family != vs.YUV:
        return Colour(None, limited)
    code = int(props.get("_Matrix", Matrix.MATRIX_UNSPECIFIED))
    matrix = default_matrix(width, height) if code in NOT_YUV_MATRICES else Matrix(code)
    if matrix not in SUPPORTED_MATRICES:
        raise ParameterError(
            f"its _Matrix is {matrix.name} ({int(matrix)}), which needs the transfer function to convert; "
            "convert the clip with core.resize (to RGB, or a non-constant-luminance matrix such as 2020ncl) first",
            param="clip",
        )
    location = vs.ChromaLocation(int(props.get("_ChromaLocation", vs.ChromaLocation.CHROMA_LEFT)))
    return Colour(matrix, limited, location)


def _is_limited(props: vs.FrameProps, default: bool) -> bool:
    # VapourSynth R74+ writes _Range (1 full, 0 limited); older filters _ColorRange (0 full, 1 limited).
    if "_Range" in props:
        return int(props["_Range"]) == vs.ColorRange.RANGE_LIMITED
    if "_ColorRange" in props:
        return int(props["_ColorRange"]) == 1
    return default


def colour_of(clip: vs.VideoNode) -> Colour:
    """The colour description of ``clip``, from its first frame's props."""
    needs_props = clip.format.color_family == vs.YUV or clip.format.sample_type == vs.INTEGER
    props = clip.get_frame(0).props if needs_props else {}
    return read_colour(clip.format, clip.width, clip.height, props)


def catmull_rom(x: np.ndarray) -> np.ndarray:
    """zimg's default bicubic kernel (b = 0, c = ½)."""
    x = np.abs(x)
    near = 1.5 * x**3 - 2.5 * x**2 + 1
    far = -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def resampling_taps(size_in: int, size_out: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (unmirrored: they may lie past the edges) and weights ``[size_out, taps]`` for
    resampling one axis as zimg does: output sample ``j`` is centred on input coordinate
    ``(j + ½) · size_in / size_out − ½ + shift``; the kernel is widened by the factor when shrinking."""
    factor = size_in / size_out
    stretch = max(1.0, factor)
    centres = (np.arange(size_out) + 0.5) * factor - 0.5 + shift
    taps = int(np.ceil(2 * 2 * stretch)) + 1
    first = np.floor(centres - 2 * stretch).astype(np.int64) + 1
    index = first[:, None] + np.arange(taps)[None, :]
    weights = catmull_rom((index - centres[:, None]) / stretch)
    return index, weights / weights.sum(axis=1, keepdims=True)


def mirrored(index: np.ndarray, size: int) -> np.ndarray:
    """Indices past an edge reflected back, the edge sample repeated (…, 1, 0 | 0, 1, …), as zimg does."""
    index = np.where(index < 0, -index - 1, index)
    index = np.where(index >= size, 2 * size - 1 - index, index)
    return np.clip(index, 0, size - 1)


class _Resampler:
    """Resampling one axis by a whole factor as zimg does (:func:`resampling_taps`), computed as a
    convolution over the mirrored input: enlarging by ``s`` is ``s`` phases of one kernel each, shrinking
    by ``s`` one kernel at stride ``s``. Every row of a phase has the same weights, so this equals gathering
    each output sample's taps, at a fraction of the cost."""

    def __init__(self, size_in: int, size_out: int, shift: float, device: torch.device) -> None:
        index, weights = resampling_taps(size_in, size_out, shift)
        self.size_out = size_out
        self.phases = max(1, size_out // size_in)  # output samples per step of the input
        self.stride = max(1, size_in // size_out)
        steps = np.arange(size_out) // self.phases * self.stride  # where each output's step starts
        offsets = index - steps[:, None]  # the same for every output of one phase
        low, high = int(offsets.min()), int(offsets.max())
        kernel = np.zeros((self.phases, high - low + 1))
        for phase in range(self.phases):
            kernel[phase, offsets[phase] - low] = weights[phase]
        self.kernel = [[float(w) for w in row] for row in kernel]  # per phase, per tap
        self.steps = (size_out - 1) // self.phases + 1
        steps_needed = (size_out - 1) // self.phases * self.stride + 1
        high = low + steps_needed + kernel.shape[1] - 1
        self.source = torch.from_numpy(mirrored(np.arange(low, high), size_in)).to(device)
        # the mirrored input as a slice with its edges flipped on: one pass, where a gather is slow
        self.size_in = size_in
        left, right = max(0, -low), max(0, high - size_in)
        self.edges = (left, max(0, low), min(size_in, high), right) if max(left, right) <= size_in else None

    def __call__(self, plane: torch.Tensor, dim: int) -> torch.Tensor:
        """``plane`` resampled along ``dim`` (-1: width, -2: height), each tap one shifted view of the
        mirrored input, weighted and summed; the phases interleaved."""
        padded = self._mirrored(plane, dim)
        span = (self.steps - 1) * self.stride + 1
        phases = []
        for kernel in self.kernel:
            out = None
            for tap, weight in enumerate(kernel):
                if weight == 0:
                    continue
                shifted = _slice(padded, dim, tap, tap + span, self.stride)
                out = shifted * weight if out is None else out.add_(shifted, alpha=weight)
            phases.append(out)
        interleaved = phases[0] if len(phases) == 1 else torch.stack(phases, dim=dim).flatten(dim - 1, dim)
        return _slice(interleaved, dim, 0, self.size_out, 1)

    def _mirrored(self, plane: torch.Tensor, dim: int) -> torch.Tensor:
        """``plane`` at :attr:`source`'s indices along ``dim``."""
        if self.edges is None:  # an edge wider than the plane: mirrored more than once
            return plane.index_select(dim, self.source)
        left, start, stop, right = self.edges
        pieces = [_slice(plane, dim, start, stop, 1)]
        if left:
            pieces.insert(0, _slice(plane, dim, 0, left, 1).flip(dim))
        if right:
            pieces.append(_slice(plane, dim, self.size_in - right, self.size_in, 1).flip(dim))
        return torch.cat(pieces, dim) if len(pieces) > 1 else pieces[0]


def chroma_position(location: vs.ChromaLocation, axis: str, factor: int) -> float:
    """Where chroma sample 0 sits along ``axis`` (``"x"`` or ``"y"``), in luma samples, for a subsampling
    ``factor``: co-sited (0), centred (``(factor − 1) / 2``) or, vertically, at the bottom."""
    L = vs.ChromaLocation
    if axis == "x":
        return 0.0 if location in (L.CHROMA_LEFT, L.CHROMA_TOP_LEFT, L.CHROMA_BOTTOM_LEFT) else (factor - 1) / 2
    if location in (L.CHROMA_TOP_LEFT, L.CHROMA_TOP):
        return 0.0
    if location in (L.CHROMA_BOTTOM_LEFT, L.CHROMA_BOTTOM):
        return factor - 1.0
    return (factor - 1) / 2


class _Axis:
    """Chroma resampling along one axis, both ways."""

    def __init__(self, luma: int, factor: int, position: float, device: torch.device) -> None:
        chroma = luma // factor  # VapourSynth's subsampled sizes divide exactly
        self.up = _Resampler(chroma, luma, (factor - 1 - 2 * position) / (2 * factor), device)
        self.down = _Resampler(luma, chroma, position - (factor - 1) / 2, device)


def _slice(tensor: torch.Tensor, dim: int, start: int, stop: int, step: int) -> torch.Tensor:
    index = [slice(None)] * tensor.dim()
    index[dim] = slice(start, stop, step)
    return tensor[tuple(index)]


def rgb_from_yuv_matrix(matrix: Matrix) -> np.ndarray:
    """The 3×3 matrix taking normalized (Y, Cb, Cr) to (R, G, B); YCgCo carries Cg and Co as Cb and Cr."""
    if matrix == Matrix.MATRIX_YCGCO:
        return np.array([[1.0, -1.0, 1.0], [1.0, 1.0, 0.0], [1.0, -1.0, -1.0]])
    kr, kb = LUMA_WEIGHTS[matrix]
    kg = 1 - kr - kb
    return np.array(
        [
            [1.0, 0.0, 2 * (1 - kr)],
            [1.0, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg],
            [1.0, 2 * (1 - kb), 0.0],
        ]
    )


class DeviceConverter:
    """A clip's own planes to the network's RGB ``[1, 3, H, W]`` float32 and RGB back to planes of the clip's
    own format, on ``device`` (the CPU path runs the same code): each way one affine 3×3 map between code
    values and RGB (range and matrix folded together), and chroma resampled on code values."""

    def __init__(self, fmt: vs.VideoFormat, width: int, height: int, colour: Colour, device: torch.device) -> None:
        self.fmt = fmt
        self.width, self.height = width, height
        self.colour = colour
        self.integer = fmt.sample_type == vs.INTEGER
        self.peak = (1 << fmt.bits_per_sample) - 1
        self.x = self.y = None
        if fmt.color_family == vs.YUV and fmt.subsampling_w:
            factor = 1 << fmt.subsampling_w
            self.x = _Axis(width, factor, chroma_position(colour.chroma_location, "x", factor), device)
        if fmt.color_family == vs.YUV and fmt.subsampling_h:
            factor = 1 << fmt.subsampling_h
            self.y = _Axis(height, factor, chroma_position(colour.chroma_location, "y", factor), device)
        mixing = rgb_from_yuv_matrix(colour.matrix) if fmt.color_family == vs.YUV else np.eye(3)
        offsets, spans = self._code_scales()
        # rgb = mixing · (codes − offsets) / spans, and back: codes = spans · mixing⁻¹ · rgb + offsets
        to_rgb = mixing / spans[None, :]
        from_rgb = np.linalg.inv(mixing) * spans[:, None]
        self._to_rgb = _affine(to_rgb, -to_rgb @ offsets, device)
        self._from_rgb = _affine(from_rgb, offsets + (0.5 if self.integer else 0.0), device)  # +½: rounding

    def _code_scales(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel (offset, span) such that normalized = (code − offset) / span (Y, R, G, B in 0..1;
        chroma in −½..½)."""
        if not self.integer:
            return np.zeros(3), np.ones(3)
        bits = self.fmt.bits_per_sample
        if self.fmt.color_family != vs.YUV:
            offset, span = (16 << (bits - 8), 219 << (bits - 8)) if self.colour.limited else (0, self.peak)
            return np.full(3, float(offset)), np.full(3, float(span))
        # limited-range YCgCo keeps its chroma in the luma span (zimg does so too)
        chroma_span = (219 if self.colour.matrix == Matrix.MATRIX_YCGCO else 224) << (bits - 8)
        luma = (16 << (bits - 8), 219 << (bits - 8)) if self.colour.limited else (0, self.peak)
        chroma = (1 << (bits - 1), chroma_span if self.colour.limited else self.peak)
        return np.array([luma[0], chroma[0], chroma[0]], float), np.array([luma[1], chroma[1], chroma[1]], float)

    def to_rgb(self, planes: list[torch.Tensor]) -> torch.Tensor:
        """``planes`` (the clip's own, on the device) as RGB ``[1, 3, H, W]`` float32."""
        if self.fmt.color_family == vs.GRAY:
            stacked = planes[0].float().view(1, -1).expand(3, -1)
        elif self.fmt.color_family == vs.YUV and (self.x or self.y):
            chroma = self._upsample(torch.stack(planes[1:]).float())  # both chroma planes in one pass
            stacked = torch.cat([planes[0].float().view(1, -1), chroma.view(2, -1)])
        else:
            stacked = torch.stack(planes).float().view(3, -1)
        return _affine_map(*self._to_rgb, stacked).view(1, 3, self.height, self.width)

    def from_rgb(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """RGB ``[B, 3, H, W]`` (any float type) as the clip's own planes ``[B, h, w]`` in its sample type."""
        batch = rgb.shape[0]
        codes = _affine_map(*self._from_rgb, rgb.float().reshape(batch, 3, -1))
        codes = codes.view(batch, 3, self.height, self.width)
        if self.fmt.color_family == vs.GRAY:
            return [self._encode(codes[:, 0])]
        if self.fmt.color_family == vs.RGB or not (self.x or self.y):
            encoded = self._encode(codes)
            return [encoded[:, c] for c in range(3)]
        chroma = self._encode(self._downsample(codes[:, 1:]))  # both chroma planes in one pass
        return [self._encode(codes[:, 0]), chroma[:, 0], chroma[:, 1]]

    def _encode(self, codes: torch.Tensor) -> torch.Tensor:
        """Code values (plus ½) to the clip's sample type: halves rounded up (as zimg rounds) and clipped."""
        if not self.integer:
            return codes.to(torch.float16 if self.fmt.bits_per_sample == 16 else torch.float32)
        codes = torch.floor(codes).clamp_(0, self.peak)
        return codes.to(torch.uint8 if self.fmt.bytes_per_sample == 1 else torch.uint16)

    def _upsample(self, plane: torch.Tensor) -> torch.Tensor:
        if self.y is not None:
            plane = self.y.up(plane, -2)
        if self.x is not None:
            plane = self.x.up(plane, -1)
        return plane

    def _downsample(self, plane: torch.Tensor) -> torch.Tensor:
        if self.x is not None:
            plane = self.x.down(plane, -1)
        if self.y is not None:
            plane = self.y.down(plane, -2)
        return plane


def _affine_map(matrix: torch.Tensor, offset: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix · x + offset`` over ``x``'s channels (``[..., 3, N]``), as sums of products: a matrix product
    would follow the host program's float32 matmul precision (TF32 in cuBLAS, bfloat16 in oneDNN)."""
    out = matrix[:, :1] * x[..., :1, :]
    for j in (1, 2):
        out.addcmul_(matrix[:, j : j + 1], x[..., j : j + 1, :])
    return out.add_(offset)  # last, as a matrix product's bias: the products keep their low bits


def _affine(matrix: np.ndarray, offset: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    as_tensor = partial(torch.tensor, dtype=torch.float32, device=device)
    return as_tensor(matrix), as_tensor(offset).view(3, 1)
