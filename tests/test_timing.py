"""Frame timing against an exact oracle: output frame n shows source time n / ratio (Fraction math)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import vapoursynth as vs

from helpers import clip_from_array, frame_array, read_rgb_frames
from vsrife import filter as filter_module
from vsrife import rife
from vsrife.params import rate_request
from vsrife.timing import ConstantRate, FrameTimes, VariableRate


def rate_ratio(source: Fraction, factor_num, factor_den, fps_num, fps_den) -> Fraction:
    return rate_request(factor_num, factor_den, fps_num, fps_den).rates(source)[1]


RATIOS = [
    Fraction(2),
    Fraction(3),
    Fraction(4),
    Fraction(5, 2),
    Fraction(7, 3),
    Fraction(1001, 400),
    Fraction(1200, 1001),
    Fraction(24, 25),
    Fraction(25, 24),
    Fraction(5, 6),
    Fraction(1, 2),
    Fraction(1),
]


def oracle(n: int, frames: int, ratio: Fraction) -> tuple[int, int, Fraction]:
    time = Fraction(n) / ratio
    left = math.floor(time)
    if left >= frames - 1:
        return frames - 1, frames - 1, Fraction(0)
    return left, left + 1, time - left


@pytest.mark.parametrize("ratio", RATIOS, ids=str)
@pytest.mark.parametrize("frames", [2, 3, 17, 100])
def test_positions_match_exact_oracle(ratio, frames):
    timing = ConstantRate(frames, ratio)
    assert timing.output_frames == math.ceil(frames * ratio)
    for n in range(timing.output_frames):
        pos = timing.position(n)
        assert (pos.left, pos.right, pos.t) == oracle(n, frames, ratio)


def test_ntsc_film_to_ntsc_60():
    ratio = rate_ratio(Fraction(24000, 1001), 2, 1, 60000, 1001)
    assert ratio == Fraction(5, 2)
    timing = ConstantRate(1000, ratio)
    assert [timing.position(n).t for n in range(5)] == [
        0,
        Fraction(2, 5),
        Fraction(4, 5),
        Fraction(1, 5),
        Fraction(3, 5),
    ]


def test_exact_at_frame_one_million():
    """24000/1001 -> 60 fps exactly; a float accumulator drifts here, rational arithmetic does not."""
    ratio = rate_ratio(Fraction(24000, 1001), 2, 1, 60, 1)
    timing = ConstantRate(10**7, ratio)
    for n in (10**6, 10**6 + 1, 10**6 + 999):
        pos = timing.position(n)
        assert (pos.left, pos.right, pos.t) == oracle(n, 10**7, ratio)


@pytest.mark.parametrize(
    ("factor", "fps", "expected"),
    [
        ((2, 1), None, Fraction(2)),
        ((5, 2), None, Fraction(5, 2)),
        ((1, 1), (50, 1), Fraction(2)),
        ((2, 1), (24, 1), Fraction(24, 25)),
        ((2, 1), (60000, 1001), Fraction(60000, 25025)),
    ],
)
def test_rate_ratio(factor, fps, expected):
    fps_num, fps_den = fps if fps else (None, None)
    assert rate_ratio(Fraction(25), *factor, fps_num, fps_den) == expected


@pytest.fixture(scope="module")
def tagged_clip(sample_path) -> vs.VideoNode:
    """Six real 64x64 frames, each tagged with its index so the props of an output frame tell its origin."""
    frames = read_rgb_frames(sample_path("bigbuckbunny"), list(range(40, 46)), crop=(600, 300, 64, 64))
    clip = clip_from_array(frames, fps=(25, 1))
    return clip.std.ModifyFrame(clip, lambda n, f: _tag(f, n))


def _tag(frame: vs.VideoFrame, n: int) -> vs.VideoFrame:
    out = frame.copy()
    out.props["SourceIndex"] = n
    return out


@pytest.mark.parametrize("ratio", [Fraction(2), Fraction(5, 2), Fraction(24, 25), Fraction(1001, 400)], ids=str)
def test_filter_places_frames_as_the_oracle_says(tagged_clip, ratio):
    out = rife(tagged_clip, model="4.6", factor_num=ratio.numerator, factor_den=ratio.denominator, device="cpu")
    frames = tagged_clip.num_frames
    assert out.num_frames == math.ceil(frames * ratio)
    assert out.fps == tagged_clip.fps * ratio
    for n in range(out.num_frames):
        left, right, t = oracle(n, frames, ratio)
        frame = out.get_frame(n)
        assert (frame.props["_DurationNum"], frame.props["_DurationDen"]) == (out.fps.denominator, out.fps.numerator)
        if t == 0:
            assert np.array_equal(frame_array(out, n), frame_array(tagged_clip, left))
            assert "RifeTimestep" not in frame.props
        else:
            assert list(frame.props["RifePair"]) == [left, right]
            assert frame.props["RifeTimestep"] == float(t)
            assert frame.props["SourceIndex"] == (left if t < Fraction(1, 2) else right)


@pytest.mark.parametrize("ratio", RATIOS, ids=str)
def test_outputs_of_a_pair_are_those_whose_left_frame_it_is(ratio):
    timing = ConstantRate(17, ratio)
    lefts = [timing.position(n).left for n in range(timing.output_frames)]
    for left in range(16):
        assert list(timing.outputs_of(left)) == [n for n, j in enumerate(lefts) if j == left and n < len(lefts)]


def test_outputs_of_variable_rate_pairs_are_those_whose_left_frame_it_is():
    times = FrameTimes.from_seconds([Fraction(0), Fraction(1, 10), Fraction(1, 4), Fraction(3, 10)], Fraction(1, 2))
    timing = VariableRate(times, Fraction(60))
    lefts = [timing.position(n).left for n in range(timing.output_frames)]
    for left in range(3):
        assert list(timing.outputs_of(left)) == [n for n, j in enumerate(lefts) if j == left]


def test_a_pair_with_millions_of_in_betweens_is_planned_in_constant_time():
    """Two frames at 25 fps made 10⁹ fps: a batch of in-betweens is found without listing the pair's 4·10⁷
    output frames (the plan once took minutes per frame there, and Ctrl-C waited for it)."""
    timing = ConstantRate(2, Fraction(10**9, 25))
    outputs = timing.outputs_of(0)
    assert len(outputs) == 4 * 10**7
    assert outputs[123_456] == 123_456 and timing.position(outputs[-1]).t == Fraction(4 * 10**7 - 1, 4 * 10**7)


@pytest.mark.parametrize(
    "ratio", [Fraction(3), Fraction(5, 2), Fraction(12, 5), Fraction(24, 25), Fraction(1, 2)], ids=str
)
def test_window_of_vapoursynths_filters_equals_the_frameeval_one(sample_path, monkeypatch, ratio):
    """Constant ratios p/q (p ≤ 64) plan from windows built of Interleave and SelectEvery, without a Python call
    per frame: the frames and props are those of the FrameEval window (which any ratio can use)."""
    frames = read_rgb_frames(sample_path("bigbuckbunny"), list(range(40, 48)), crop=(600, 300, 64, 32))
    clip = clip_from_array(frames)
    args = {"model": "4.6", "device": "cpu", "factor_num": ratio.numerator, "factor_den": ratio.denominator}
    filters = rife(clip, **args)
    monkeypatch.setattr(filter_module, "MAX_PHASES", 0)
    frame_eval = rife(clip, **args)
    assert filters.num_frames == frame_eval.num_frames == math.ceil(8 * ratio)
    for n in range(filters.num_frames):
        a, b = filters.get_frame(n), frame_eval.get_frame(n)
        assert np.array_equal(frame_array(filters, n), frame_array(frame_eval, n)), n
        assert dict(a.props) == dict(b.props), n
