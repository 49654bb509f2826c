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
            f"clip: its _Matrix is {matrix.name} ({int(matrix)}), which needs the transfer function to convert; "
            "convert the clip with core.resize (to RGB, or a non-constant-luminance matrix such as 2020ncl) first"
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
    """Source indices and weights ``[size_out, taps]`` for resampling one axis as zimg does: output sample
    ``j`` is centred on input coordinate ``(j + ½) · size_in / size_out − ½ + shift``; the kernel is widened
    by the factor when shrinking; indices past an edge mirror back (the edge sample repeated)."""
    factor = size_in / size_out
    stretch = max(1.0, factor)
    centres = (np.arange(size_out) + 0.5) * factor - 0.5 + shift
    taps = int(np.ceil(2 * 2 * stretch)) + 1
    first = np.floor(centres - 2 * stretch).astype(np.int64) + 1
    index = first[:, None] + np.arange(taps)[None, :]
    weights = catmull_rom((index - centres[:, None]) / stretch)
    weights /= weights.sum(axis=1, keepdims=True)
    index = np.where(index < 0, -index - 1, index)
    index = np.where(index >= size_in, 2 * size_in - 1 - index, index)
    return np.clip(index, 0, size_in - 1), weights


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
    """Chroma resampling along one axis, both ways, as gather indices and weights on the device."""

    def __init__(self, luma: int, factor: int, position: float, device: torch.device) -> None:
        chroma = -(-luma // factor)
        up_index, up_weights = resampling_taps(chroma, luma, (factor - 1 - 2 * position) / (2 * factor))
        down_index, down_weights = resampling_taps(luma, chroma, position - (factor - 1) / 2)
        self.up = (torch.from_numpy(up_index).to(device), torch.from_numpy(up_weights).float().to(device))
        self.down = (torch.from_numpy(down_index).to(device), torch.from_numpy(down_weights).float().to(device))


def _resample(plane: torch.Tensor, taps: tuple[torch.Tensor, torch.Tensor], dim: int) -> torch.Tensor:
    """``plane`` (…, H, W) resampled along ``dim`` (-1: width, -2: height) by gathered taps."""
    index, weights = taps
    moved = plane.movedim(dim, -1)
    gathered = moved[..., index]  # (…, size_out, taps)
    return (gathered * weights).sum(-1).movedim(-1, dim)


class DeviceConverter:
    """A clip's own planes to the network's RGB ``[1, 3, H, W]`` float32 and RGB back to planes of the clip's
    own format, on ``device`` (the CPU path runs the same code)."""

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

    # --- values: code values <-> normalized (Y, R, G, B in 0..1; chroma in -½..½) ---------------------------

    def _scale(self, chroma: bool) -> tuple[float, float]:
        """(offset, range) such that normalized = (code − offset) / range."""
        if not self.integer:
            return 0.0, 1.0
        bits = self.fmt.bits_per_sample
        if chroma:
            # limited-range YCgCo keeps its chroma in the luma span (zimg does so too)
            limited = 219 if self.colour.matrix == Matrix.MATRIX_YCGCO else 224
            return float(1 << (bits - 1)), float(limited << (bits - 8)) if self.colour.limited else float(self.peak)
        if self.colour.limited:
            return float(16 << (bits - 8)), float(219 << (bits - 8))
        return 0.0, float(self.peak)

    def _normalize(self, plane: torch.Tensor, chroma: bool) -> torch.Tensor:
        offset, span = self._scale(chroma)
        return (plane.float() - offset) / span

    def _encode(self, plane: torch.Tensor, chroma: bool) -> torch.Tensor:
        """Normalized values to the clip's sample type: rounded and clipped to the code range for integers."""
        offset, span = self._scale(chroma)
        if not self.integer:
            return plane.to(torch.float16 if self.fmt.bits_per_sample == 16 else torch.float32)
        codes = torch.floor(plane * span + (offset + 0.5)).clamp_(0, self.peak)  # halves up, as zimg rounds
        return codes.to(torch.uint8 if self.fmt.bytes_per_sample == 1 else torch.uint16)

    # --- whole frames ---------------------------------------------------------------------------------------

    def to_rgb(self, planes: list[torch.Tensor]) -> torch.Tensor:
        """``planes`` (the clip's own, on the device) as RGB ``[1, 3, H, W]`` float32."""
        family = self.fmt.color_family
        if family == vs.GRAY:
            grey = self._normalize(planes[0], chroma=False)
            return grey.unsqueeze(0).expand(3, -1, -1).unsqueeze(0)
        if family == vs.RGB:
            return torch.stack([self._normalize(p, chroma=False) for p in planes]).unsqueeze(0)
        luma = self._normalize(planes[0], chroma=False)
        cb, cr = (self._upsample(self._normalize(p, chroma=True)) for p in planes[1:])
        return _yuv_to_rgb(self.colour.matrix, luma, cb, cr).unsqueeze(0)

    def from_rgb(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """RGB ``[B, 3, H, W]`` (any float type) as the clip's own planes ``[B, h, w]`` in its sample type."""
        rgb = rgb.float()
        family = self.fmt.color_family
        if family == vs.GRAY:
            return [self._encode(rgb[:, 0], chroma=False)]
        if family == vs.RGB:
            return [self._encode(rgb[:, c], chroma=False) for c in range(3)]
        luma, cb, cr = _rgb_to_yuv(self.colour.matrix, rgb[:, 0], rgb[:, 1], rgb[:, 2])
        return [self._encode(luma, False), *(self._encode(self._downsample(c), True) for c in (cb, cr))]

    def _upsample(self, plane: torch.Tensor) -> torch.Tensor:
        if self.y is not None:
            plane = _resample(plane, self.y.up, -2)
        if self.x is not None:
            plane = _resample(plane, self.x.up, -1)
        return plane

    def _downsample(self, plane: torch.Tensor) -> torch.Tensor:
        if self.x is not None:
            plane = _resample(plane, self.x.down, -1)
        if self.y is not None:
            plane = _resample(plane, self.y.down, -2)
        return plane


def _yuv_to_rgb(matrix: Matrix, y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    if matrix == Matrix.MATRIX_YCGCO:  # cb carries Cg, cr carries Co
        base = y - cb
        return torch.stack([base + cr, y + cb, base - cr])
    kr, kb = LUMA_WEIGHTS[matrix]
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return torch.stack([r, g, b])


def _rgb_to_yuv(matrix: Matrix, r: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if matrix == Matrix.MATRIX_YCGCO:
        return 0.25 * r + 0.5 * g + 0.25 * b, -0.25 * r + 0.5 * g - 0.25 * b, 0.5 * (r - b)
    kr, kb = LUMA_WEIGHTS[matrix]
    y = kr * r + (1 - kr - kb) * g + kb * b
    return y, (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
