"""Any input format in, the same format out: bit-exact source frames, in-betweens close to the RGB path,
colour props honoured, frame props right, variable-rate sources placed by their durations."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import vapoursynth as vs

from helpers import clip_from_array, frame_array, psnr, read_rgb_frames, rgb_conversion_error
from vsrife import formats, rife
from vsrife.errors import ParameterError

FORMATS = [
    (vs.YUV420P8, 30.0),
    (vs.YUV420P10, 33.0),
    (vs.YUV422P10, 33.0),
    (vs.YUV444P16, 38.0),
    (vs.YUV444PH, 38.0),
    (vs.YUV444PS, 38.0),
    (vs.RGB24, 38.0),
    (vs.RGB48, 40.0),
    (vs.RGBH, 40.0),
]


@pytest.fixture(scope="module")
def rgb(sample_path) -> vs.VideoNode:
    """Four real frames with motion (Big Buck Bunny 40..43), 128x96, RGBS."""
    return clip_from_array(read_rgb_frames(sample_path("bigbuckbunny"), [40, 41, 42, 43], crop=(600, 300, 128, 96)))


@pytest.fixture(scope="module")
def rgb_path(rgb) -> vs.VideoNode:
    return rife(rgb, model="4.26", device="cpu")


def to_format(clip: vs.VideoNode, fmt: int, **colour) -> vs.VideoNode:
    family = vs.core.get_video_format(fmt).color_family
    if family == vs.YUV:
        colour = {"matrix_s": "709", "range_s": "limited"} | colour
    return clip.resize.Bicubic(format=fmt, **colour)


def to_rgbs(clip: vs.VideoNode, **colour) -> vs.VideoNode:
    if clip.format.color_family == vs.YUV:
        colour = {"matrix_in_s": "709"} | colour
    return clip.resize.Bicubic(format=vs.RGBS, **colour)


def planes(clip: vs.VideoNode, n: int) -> list[np.ndarray]:
    frame = clip.get_frame(n)
    return [np.asarray(frame[p]).copy() for p in range(frame.format.num_planes)]


@pytest.mark.parametrize(
    ("fmt", "min_psnr"),
    FORMATS,
    ids=lambda v: vs.core.get_video_format(v).name if isinstance(v, int) and v > 1000 else str(v),
)
def test_format_round_trip(rgb, rgb_path, fmt, min_psnr):
    clip = to_format(rgb, fmt)
    out = rife(clip, model="4.26", device="cpu")
    assert (out.format.id, out.width, out.height, out.num_frames) == (fmt, 128, 96, 8)
    for k in range(4):  # source frames pass through bit-exact, never converted
        assert all(np.array_equal(a, b) for a, b in zip(planes(out, 2 * k), planes(clip, k), strict=True))
    for n in (1, 3, 5):
        got = frame_array(to_rgbs(out), n)
        expected = frame_array(rgb_path, n)
        assert psnr(got, expected) >= min_psnr, f"{vs.core.get_video_format(fmt).name} frame {n}"
        assert psnr(got, expected) > psnr(frame_array(rgb, n // 2), expected) + 3  # a real in-between


@pytest.mark.parametrize("fmt", [vs.GRAY8, vs.GRAY16, vs.GRAYS])
def test_gray(rgb, fmt):
    grey = rgb.resize.Bicubic(format=vs.GRAYS, matrix_s="709")
    clip = grey.resize.Point(format=fmt)
    out = rife(clip, model="4.26", device="cpu")
    assert out.format.id == fmt
    assert np.array_equal(planes(out, 2)[0], planes(clip, 1)[0])
    as_rgb = vs.core.std.ShufflePlanes([grey] * 3, [0, 0, 0], vs.RGB).std.SetFrameProps(_Matrix=0)
    expected = frame_array(rife(as_rgb, model="4.26", device="cpu"), 1)[0]
    got = frame_array(out.resize.Point(format=vs.GRAYS), 1)[0]
    assert psnr(got, expected) >= (40 if fmt == vs.GRAY8 else 60)


def test_full_range_is_honoured(rgb, rgb_path):
    """Full-range YUV keeps its deep blacks; read as limited they would clip to black in the network."""
    dark = rgb.std.Expr("x 0.5 * 0.02 -")  # much of the picture below limited-range black
    clip = to_format(dark, vs.YUV444P8, range_s="full")
    assert clip.get_frame(0).props["_Range"] == vs.RANGE_FULL
    out = rife(clip, model="4.26", device="cpu")
    expected = frame_array(rife(to_rgbs(clip, range_in_s="full"), model="4.26", device="cpu"), 1)
    assert psnr(frame_array(to_rgbs(out, range_in_s="full"), 1), expected) >= 38


@pytest.mark.filterwarnings("ignore:The _ColorRange frame property has been deprecated")
@pytest.mark.parametrize(
    ("props", "size", "matrix", "limited"),
    [
        ({}, (1280, 720), vs.MATRIX_BT709, True),
        ({}, (720, 480), vs.MATRIX_ST170_M, True),
        ({"_Matrix": 2}, (1920, 1080), vs.MATRIX_BT709, True),
        ({"_Matrix": 6}, (1920, 1080), vs.MATRIX_ST170_M, True),
        ({"_Matrix": 9, "_Range": 1}, (3840, 2160), vs.MATRIX_BT2020_NCL, False),
        ({"_ColorRange": 0}, (640, 360), 6, False),
    ],
)
def test_colour_props_and_defaults(props, size, matrix, limited):
    clip = vs.core.std.BlankClip(format=vs.YUV420P8, width=size[0], height=size[1], length=2)
    clip = clip.std.RemoveFrameProps(["_Matrix", "_Range", "_ColorRange"]).std.SetFrameProps(**props)
    colour = formats.colour_of(clip)
    assert (colour.matrix, colour.limited) == (matrix, limited)


def test_working_copy_uses_the_clips_matrix(rgb):
    """A clip tagged BT.601 at HD size is converted with BT.601, not the HD default."""
    clip = to_format(rgb.resize.Bicubic(1280, 720), vs.YUV444P16, matrix_s="170m")
    convert = formats.DeviceConverter(clip.format, 1280, 720, formats.colour_of(clip), torch.device("cpu"))
    source = planes(clip, 0)
    got = convert.to_rgb([torch.from_numpy(p) for p in source])[0].numpy()
    expected = frame_array(to_rgbs(clip, matrix_in_s="170m"), 0)
    assert np.abs(got - expected).max() <= 2 * rgb_conversion_error(clip, source)  # ours' error and zimg's


@pytest.mark.parametrize("matrix", [10, 12, 13, 14])
def test_matrices_that_need_the_transfer_function_are_refused(rgb, matrix):
    clip = to_format(rgb, vs.YUV444P16).std.SetFrameProps(_Matrix=matrix)
    with pytest.raises(ParameterError, match=f"clip: its _Matrix is .* \\({matrix}\\), which needs the transfer"):
        rife(clip, model="4.26", device="cpu")


def test_props_follow_the_nearest_source_frame(rgb):
    clip = to_format(rgb, vs.YUV420P10)
    clip = clip.std.ModifyFrame(clip, lambda n, f: _with(f, Origin=n))
    out = rife(clip, model="4.26", factor_num=4, device="cpu")
    frames = [out.get_frame(n) for n in range(8)]
    assert [f.props["Origin"] for f in frames] == [0, 0, 1, 1, 1, 1, 2, 2]
    for f in frames:
        assert (f.props["_DurationNum"], f.props["_DurationDen"]) == (1, 96)
        assert (f.props["_Matrix"], f.props["_SceneChangePrev"], f.props["_SceneChangeNext"]) == (1, 0, 0)
        assert "RifeCutBefore" not in f.props and "RifeDiffPrev" not in f.props
    assert [f.props.get("RifeTimestep") for f in frames[:4]] == [None, 0.25, 0.5, 0.75]
    assert list(frames[5].props["RifePair"]) == [1, 2]


def _with(frame: vs.VideoFrame, **props) -> vs.VideoFrame:
    out = frame.copy()
    for key, value in props.items():
        out.props[key] = value
    return out


@pytest.fixture(scope="module")
def variable_rate(rgb) -> vs.VideoNode:
    """Real frames: three at 1/24 s, then three at 1/30 s (fps 0)."""
    frames = rgb + rgb[2] + rgb[1]  # motion reverses: no still pair
    first = frames[:3].std.AssumeFPS(fpsnum=24)
    second = frames[3:].std.AssumeFPS(fpsnum=30)
    clip = vs.core.std.Splice([first, second], mismatch=True)
    assert clip.fps == 0
    return clip


def test_variable_rate_to_a_constant_rate(variable_rate):
    durations = [Fraction(1, 24)] * 3 + [Fraction(1, 30)] * 3
    starts = [sum(durations[:j], Fraction(0)) for j in range(6)]
    out = rife(variable_rate, model="4.26", fps_num=60, device="cpu")
    assert out.fps == 60 and out.num_frames == math.ceil(sum(durations) * 60)
    for n in range(out.num_frames):
        time = Fraction(n, 60)
        left = max(j for j in range(6) if starts[j] <= time)
        t = (time - starts[left]) / durations[left]
        props = out.get_frame(n).props
        assert (props["_DurationNum"], props["_DurationDen"]) == (1, 60)
        if left == 5 or t == 0:
            assert np.array_equal(frame_array(out, n), frame_array(variable_rate, left))
        else:
            assert (list(props["RifePair"]), props["RifeTimestep"]) == ([left, left + 1], float(t))


def test_variable_rate_with_a_factor_keeps_durations(variable_rate):
    out = rife(variable_rate, model="4.26", factor_num=2, device="cpu")
    assert out.fps == 0 and out.num_frames == 12
    durations = [
        Fraction(f.props["_DurationNum"], f.props["_DurationDen"]) for f in (out.get_frame(n) for n in range(12))
    ]
    assert durations == [Fraction(1, 48)] * 6 + [Fraction(1, 60)] * 6
