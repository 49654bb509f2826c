"""Colour conversion on the compute device, held against VapourSynth's resizer (zimg) as the oracle: the
planes themselves, and whole synthesized frames against the former path (zimg to RGBS, rife, zimg back)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vapoursynth as vs

from helpers import (
    CATMULL_ROM_ABS_SUM,
    chroma_factors,
    clip_from_array,
    code_scale,
    conversion_roundings,
    float32_error,
    psnr,
    read_rgb_frames,
    rgb_conversion_error,
)
from vsrife import formats, frames, rife

COLOUR_REPORT: dict[str, dict[str, float]] = {}  # format family -> figures, printed after the run

# (format, resizer arguments making the clip): every family, siting, range and matrix converted here
CASES = [
    (vs.YUV420P8, {"matrix_s": "709"}),
    (vs.YUV420P8, {"matrix_s": "709", "range_s": "full", "chromaloc_s": "center"}),
    (vs.YUV420P10, {"matrix_s": "170m", "chromaloc_s": "top_left"}),
    (vs.YUV420P16, {"matrix_s": "2020ncl", "chromaloc_s": "bottom"}),
    (vs.YUV422P10, {"matrix_s": "709", "chromaloc_s": "top"}),
    (vs.YUV422P8, {"matrix_s": "470bg", "chromaloc_s": "bottom_left"}),
    (vs.YUV444P8, {"matrix_s": "fcc"}),
    (vs.YUV444P12, {"matrix_s": "240m", "range_s": "full"}),
    (vs.YUV420P8, {"matrix_s": "ycgco"}),
    (vs.YUV444P16, {"matrix_s": "ycgco", "range_s": "full"}),
    (vs.YUV411P8, {"matrix_s": "709"}),
    (vs.YUV444PH, {"matrix_s": "709"}),
    (vs.YUV420PS, {"matrix_s": "709", "chromaloc_s": "center"}),
    (vs.RGB24, {}),
    (vs.RGB48, {}),
    (vs.RGB30, {"range_s": "limited"}),
    (vs.GRAY8, {}),
    (vs.GRAY10, {"range_s": "limited"}),
    (vs.GRAYS, {}),
]


def case_id(case) -> str:
    fmt, args = case
    return "-".join([vs.core.get_video_format(fmt).name, *(str(v) for v in args.values())])


@pytest.fixture(scope="module")
def real_rgb(sample_path) -> vs.VideoNode:
    """Four real frames with motion (Big Buck Bunny 40..43), 132x74: odd chroma sizes for 4:2:0 and 4:1:1."""
    return clip_from_array(read_rgb_frames(sample_path("bigbuckbunny"), [40, 41, 42, 43], crop=(600, 300, 132, 74)))


def make(rgb: vs.VideoNode, fmt: int, args: dict) -> vs.VideoNode:
    family = vs.core.get_video_format(fmt).color_family
    if family == vs.GRAY:
        return rgb.resize.Bicubic(format=vs.GRAYS, matrix_s="709").resize.Point(format=fmt, **args)
    return rgb.resize.Bicubic(format=fmt, **args)


def zimg_args(clip: vs.VideoNode, direction: str) -> dict:
    """The resizer's arguments for the colour vsrife reads from the clip (``"in"``: from it, ``"out"``: to it)."""
    colour = formats.colour_of(clip)
    suffix = "_in" if direction == "in" else ""
    args = {f"range{suffix}": 0 if colour.limited else 1}
    if colour.matrix is not None:
        args |= {f"matrix{suffix}": int(colour.matrix), f"chromaloc{suffix}": int(colour.chroma_location)}
    return args


def zimg_to_rgb(clip: vs.VideoNode) -> vs.VideoNode:
    if clip.format.color_family == vs.GRAY:
        grey = clip.resize.Point(format=vs.GRAYS, **zimg_args(clip, "in"))
        return vs.core.std.ShufflePlanes([grey] * 3, [0, 0, 0], vs.RGB).std.SetFrameProps(_Matrix=0)
    return clip.resize.Bicubic(format=vs.RGBS, **zimg_args(clip, "in"))


def zimg_from_rgb(rgb: vs.VideoNode, like: vs.VideoNode) -> vs.VideoNode:
    if like.format.color_family == vs.GRAY:
        return rgb.std.ShufflePlanes(0, vs.GRAY).resize.Point(format=like.format.id, **zimg_args(like, "out"))
    return rgb.resize.Bicubic(format=like.format.id, **zimg_args(like, "out"))


def converter(clip: vs.VideoNode) -> formats.DeviceConverter:
    colour = formats.colour_of(clip)
    return formats.DeviceConverter(clip.format, clip.width, clip.height, colour, torch.device("cpu"))


def float_twin(clip: vs.VideoNode) -> vs.VideoNode:
    """``clip`` in float32, its colour props kept: zimg's conversion to it is the one to ``clip`` before
    quantisation (float formats have no range: Y in 0..1, chroma in −½..½)."""
    fmt = clip.format
    twin = vs.core.query_video_format(fmt.color_family, vs.FLOAT, 32, fmt.subsampling_w, fmt.subsampling_h)
    return clip.resize.Point(format=twin.id)


def quantised(values: np.ndarray, fmt: vs.VideoFormat, up: bool) -> np.ndarray:
    """``values`` (code values, float64) rounded to the format's samples as a conversion may round them:
    halves up (``up``) or down, clipped to the codes; float formats to their nearest float16 or float32."""
    if fmt.sample_type == vs.FLOAT:
        return values.astype(np.float16 if fmt.bits_per_sample == 16 else np.float32).astype(np.float64)
    rounded = np.floor(values + 0.5) if up else np.ceil(values - 0.5)
    return np.clip(rounded, 0, (1 << fmt.bits_per_sample) - 1)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_planes_to_rgb_as_zimg(real_rgb, case):
    """RGB within float32 rounding of zimg's: each conversion within :func:`helpers.rgb_conversion_error`
    of the exact value."""
    clip = make(real_rgb, *case)
    planes = [p.copy() for p in frames.plane_list(clip.get_frame(1))]
    got = converter(clip).to_rgb([torch.from_numpy(p) for p in planes])[0].numpy()
    expected = frames.to_array(zimg_to_rgb(clip).get_frame(1))
    assert np.abs(got - expected).max() <= 2 * rgb_conversion_error(clip, planes)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_rgb_to_planes_as_zimg(real_rgb, case):
    """Samples equal zimg's except where float32 cannot decide the rounding. The exact value is zimg's
    conversion to the float twin of the format (:func:`float_twin`, before quantisation) within one
    :func:`float32_error`; ours and zimg's are within another of it: where that interval of twice the error
    holds a half code (a float16 rounding boundary), both neighbours are right; everywhere else the one
    code. A code value's terms: the offset (with ours' ½ for rounding) and RGB through a row of
    RGB → YCbCr, which sums to 1 in absolute value (Y's Kr + Kg + Kb; Cb's (Kr + Kg + 1 − Kb) / 2 (1 − Kb);
    YCgCo's ¼ + ½ + ¼, ½ + ½), chroma resampled."""
    clip = make(real_rgb, *case)
    rgb = zimg_to_rgb(clip)[1].std.Expr("x 1.0313 * 0.0071 -")  # values off the code grid, some out of range
    values = frames.to_array(rgb.get_frame(0))
    got = converter(clip).from_rgb(torch.from_numpy(values)[None])
    expected = frames.plane_list(zimg_from_rgb(rgb, clip).get_frame(0))
    exact = frames.plane_list(zimg_from_rgb(rgb, float_twin(clip)).get_frame(0))
    for plane, (mine, theirs, value) in enumerate(zip(got, expected, exact, strict=True)):
        offset, span = code_scale(clip, plane)
        factors = chroma_factors(clip) if plane > 0 else []
        magnitude = CATMULL_ROM_ABS_SUM ** len(factors) * (offset + 0.5 + span * np.abs(values).max())
        error = 2 * float32_error(magnitude, conversion_roundings(factors, shrinking=True))
        code = offset + span * value.astype(np.float64)
        lowest, highest = quantised(code - error, clip.format, up=False), quantised(code + error, clip.format, up=True)
        for who, samples in (("ours", mine[0].numpy()), ("zimg", theirs)):
            outside = (samples < lowest) | (samples > highest)
            assert not outside.any(), f"{who}: {outside.sum()} samples of plane {plane} outside ±{error:.2g}"


FAMILIES = {
    "YUV 4:2:0 8-bit": (vs.YUV420P8, {"matrix_s": "709"}),
    "YUV 4:2:0 10-bit": (vs.YUV420P10, {"matrix_s": "709"}),
    "YUV 4:2:2 10-bit": (vs.YUV422P10, {"matrix_s": "709"}),
    "YUV 4:4:4 16-bit": (vs.YUV444P16, {"matrix_s": "709"}),
    "YUV 4:4:4 half": (vs.YUV444PH, {"matrix_s": "709"}),
    "YUV 4:2:0 float": (vs.YUV420PS, {"matrix_s": "709"}),
    "RGB 8-bit": (vs.RGB24, {}),
    "RGB 16-bit": (vs.RGB48, {}),
    "GRAY 8-bit": (vs.GRAY8, {}),
    "GRAY float": (vs.GRAYS, {}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_synthesized_frames_agree_with_the_zimg_path(real_rgb, family):
    """rife on the clip's own planes (converted on the device) against the former path: zimg to RGBS, rife,
    zimg back. At least 50 dB per plane; at 8 bits at most one code value apart on 99.9 % of samples."""
    fmt, args = FAMILIES[family]
    clip = make(real_rgb, fmt, args)
    ours = rife(clip, model="4.26", device="cpu")
    theirs = zimg_from_rgb(rife(zimg_to_rgb(clip), model="4.26", device="cpu"), clip)
    fmt_info = clip.format
    peak = (1 << fmt_info.bits_per_sample) - 1 if fmt_info.sample_type == vs.INTEGER else 1.0
    worst_psnr, within_one = float("inf"), 1.0
    for n in (1, 3, 5):
        for a, b in zip(frames.plane_list(ours.get_frame(n)), frames.plane_list(theirs.get_frame(n)), strict=True):
            a, b = a.astype(np.float64), b.astype(np.float64)
            worst_psnr = min(worst_psnr, psnr(a, b, peak))
            if fmt_info.sample_type == vs.INTEGER:
                within_one = min(within_one, float((np.abs(a - b) <= (1 << (fmt_info.bits_per_sample - 8))).mean()))
    COLOUR_REPORT[family] = {"worst plane PSNR dB": worst_psnr, "within 1 code (8-bit scale)": within_one}
    assert worst_psnr >= 50, family
    assert within_one >= 0.999, family


def test_source_frames_stay_bit_exact_in_every_case(real_rgb):
    for fmt, args in CASES:
        clip = make(real_rgb, fmt, args)
        out = rife(clip, model="4.6", device="cpu", factor_num=3)
        for k in range(4):
            for a, b in zip(frames.plane_list(out.get_frame(3 * k)), frames.plane_list(clip.get_frame(k)), strict=True):
                assert np.array_equal(a, b), case_id((fmt, args))
