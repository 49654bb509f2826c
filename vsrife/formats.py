"""Colour formats: the network sees RGB float; users bring YUV, GRAY or RGB of any depth.

The conversion is VapourSynth's resizer (zimg), set from the colour properties of the clip's first frame.
Where one is missing or unspecified: matrix BT.709 for HD (wider than 1024 or taller than 576) and BT.601
(SMPTE 170M) for SD; limited range for YUV, full range for RGB and GRAY; left chroma siting; transfer and
primaries as the matrix implies (they matter only for BT.2020 constant-luminance and chromaticity-derived
matrices). RGBS and RGBH are used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import vapoursynth as vs
from vsutil import join, plane

Matrix = vs.MatrixCoefficients
Transfer = vs.TransferCharacteristics
Primaries = vs.ColorPrimaries
# matrices whose conversion needs the transfer and primaries too (constant luminance, chromaticity-derived)
NEEDS_TRANSFER_AND_PRIMARIES = (
    Matrix.MATRIX_BT2020_CL,
    Matrix.MATRIX_CHROMATICITY_DERIVED_NCL,
    Matrix.MATRIX_CHROMATICITY_DERIVED_CL,
)
# codes that make no sense on YUV: identity (RGB), unspecified and the reserved 3
NOT_YUV_MATRICES = (Matrix.MATRIX_RGB, Matrix.MATRIX_UNSPECIFIED, 3)
SD_WIDTH, SD_HEIGHT = 1024, 576
# transfer and primaries a matrix implies when the clip does not say
IMPLIED: dict[Matrix, tuple[Transfer, Primaries]] = {
    Matrix.MATRIX_BT709: (Transfer.TRANSFER_BT709, Primaries.PRIMARIES_BT709),
    Matrix.MATRIX_BT470_BG: (Transfer.TRANSFER_BT601, Primaries.PRIMARIES_BT470_BG),
    Matrix.MATRIX_ST170_M: (Transfer.TRANSFER_BT601, Primaries.PRIMARIES_ST170_M),
    Matrix.MATRIX_BT2020_NCL: (Transfer.TRANSFER_BT2020_10, Primaries.PRIMARIES_BT2020),
    Matrix.MATRIX_BT2020_CL: (Transfer.TRANSFER_BT2020_10, Primaries.PRIMARIES_BT2020),
}


@dataclass(frozen=True)
class Colour:
    """How a clip's values map to RGB in 0..1."""

    matrix: Matrix | None  # None for RGB and GRAY
    limited: bool
    chroma_location: vs.ChromaLocation = vs.ChromaLocation.CHROMA_LEFT
    transfer: Transfer = Transfer.TRANSFER_BT709
    primaries: Primaries = Primaries.PRIMARIES_BT709

    def resize_args(self, direction: str) -> dict[str, object]:
        """``core.resize`` arguments describing this side: ``"in"`` when converting from it, ``"out"`` to it."""
        suffix = "_in" if direction == "in" else ""
        args: dict[str, object] = {f"range{suffix}_s": "limited" if self.limited else "full"}
        if self.matrix is not None:
            args[f"matrix{suffix}"] = int(self.matrix)
            args[f"chromaloc{suffix}"] = int(self.chroma_location)
            if self.matrix in NEEDS_TRANSFER_AND_PRIMARIES:
                args[f"transfer{suffix}"] = int(self.transfer)
                args[f"primaries{suffix}"] = int(self.primaries)
        return args


def default_matrix(width: int, height: int) -> Matrix:
    return Matrix.MATRIX_BT709 if width > SD_WIDTH or height > SD_HEIGHT else Matrix.MATRIX_ST170_M


def read_colour(fmt: vs.VideoFormat, width: int, height: int, props: vs.FrameProps) -> Colour:
    """The colour description from frame props, with the module's documented defaults."""
    limited = _is_limited(props, default=fmt.color_family == vs.YUV)
    if fmt.color_family != vs.YUV:
        return Colour(None, limited)
    code = int(props.get("_Matrix", Matrix.MATRIX_UNSPECIFIED))
    matrix = default_matrix(width, height) if code in NOT_YUV_MATRICES else Matrix(code)
    transfer, primaries = IMPLIED.get(matrix, (Transfer.TRANSFER_BT709, Primaries.PRIMARIES_BT709))
    transfer = Transfer(_specified(props, "_Transfer", transfer))
    primaries = Primaries(_specified(props, "_Primaries", primaries))
    location = vs.ChromaLocation(int(props.get("_ChromaLocation", vs.ChromaLocation.CHROMA_LEFT)))
    return Colour(matrix, limited, location, transfer, primaries)


def _specified(props: vs.FrameProps, key: str, default: int) -> int:
    value = int(props.get(key, 2))  # 2: unspecified, in every one of these H.273 code lists
    return default if value == 2 else value


def _is_limited(props: vs.FrameProps, default: bool) -> bool:
    # VapourSynth R74+ writes _Range (1 full, 0 limited); older filters _ColorRange (0 full, 1 limited).
    if "_Range" in props:
        return int(props["_Range"]) == vs.ColorRange.RANGE_LIMITED
    if "_ColorRange" in props:
        return int(props["_ColorRange"]) == 1
    return default


@dataclass(frozen=True)
class Converter:
    """To the network's RGB working format and back to the clip's own."""

    source: vs.VideoFormat
    working: int  # vs.RGBS or vs.RGBH
    colour: Colour

    @property
    def is_identity(self) -> bool:
        return self.source.id == self.working

    def to_working(self, clip: vs.VideoNode) -> vs.VideoNode:
        if self.is_identity:
            return clip
        args = self.colour.resize_args("in")
        if self.source.color_family == vs.GRAY:
            grey = clip.resize.Point(format=vs.GRAYH if self.working == vs.RGBH else vs.GRAYS, **args)
            return join([grey, grey, grey], vs.RGB).std.SetFrameProps(_Matrix=0)
        if self.source.color_family == vs.RGB:
            return clip.resize.Point(format=self.working, **args)
        return clip.resize.Bicubic(format=self.working, **args)

    def from_working(self, clip: vs.VideoNode) -> vs.VideoNode:
        if self.is_identity:
            return clip
        args = self.colour.resize_args("out")
        if self.source.color_family == vs.GRAY:
            return plane(clip, 0).resize.Point(format=self.source.id, **args)
        if self.source.color_family == vs.RGB:
            return clip.resize.Point(format=self.source.id, **args)
        return clip.resize.Bicubic(format=self.source.id, **args)


def converter(clip: vs.VideoNode) -> Converter:
    """The conversion for ``clip``: half-float sources work in RGBH (fp16 on CUDA), all others in RGBS."""
    fmt = clip.format
    half = fmt.sample_type == vs.FLOAT and fmt.bits_per_sample == 16
    working = vs.RGBH if half else vs.RGBS
    props = clip.get_frame(0).props if fmt.id not in (vs.RGBS, vs.RGBH) else {}
    return Converter(fmt, working, read_colour(fmt, clip.width, clip.height, props))
