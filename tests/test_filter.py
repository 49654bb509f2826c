"""The filter's contract: formats, sizes, props, scene changes, caching, and parameter errors."""

from __future__ import annotations

import numpy as np
import pytest
import vapoursynth as vs

from helpers import FP32_NETWORK_TOLERANCE, clip_from_array, frame_array, read_rgb_frames
from vsrife import rife
from vsrife.engine import Engine
from vsrife.errors import DeviceError, ParameterError, ParameterTypeError, VsRifeError, WeightsNotFoundError


@pytest.fixture(scope="module")
def frames(sample_path) -> np.ndarray:
    return read_rgb_frames(sample_path("bigbuckbunny"), list(range(40, 45)), crop=(600, 300, 96, 64))


def test_source_frames_pass_through_bit_exact(frames):
    clip = clip_from_array(frames)
    out = rife(clip, model="4.6", factor_num=3, device="cpu")
    for n in range(0, out.num_frames - 2, 3):
        assert np.array_equal(frame_array(out, n), frames[n // 3])


def test_rgbh_on_cpu_computes_fp32_and_rounds(frames):
    half = rife(clip_from_array(frames, vs.RGBH), model="4.6", device="cpu")
    single = rife(clip_from_array(frames.astype(np.float16).astype(np.float32)), model="4.6", device="cpu")
    assert half.format.id == vs.RGBH
    got = half.get_frame(1)
    assert np.asarray(got[0]).dtype == np.float16
    # the same fp32 network, its output (in 0..1) rounded to fp16: half a step of fp16 below 1, and float noise
    assert np.abs(frame_array(half, 1) - frame_array(single, 1)).max() <= 2**-12 + FP32_NETWORK_TOLERANCE
    assert np.array_equal(frame_array(half, 2), frames[1].astype(np.float16).astype(np.float32))


@pytest.mark.parametrize(("width", "height"), [(2, 2), (33, 17), (65, 3)])
def test_any_size_from_2x2(frames, width, height):
    clip = clip_from_array(np.ascontiguousarray(frames[:, :, :height, :width]))
    out = rife(clip, model="4.26", device="cpu")
    assert (out.width, out.height) == (width, height)
    middle = frame_array(out, 1)
    assert middle.shape == (3, height, width)
    assert np.isfinite(middle).all()


def mark_cut(clip: vs.VideoNode, after: int, prop: str) -> vs.VideoNode:
    target = after if prop == "_SceneChangeNext" else after + 1

    def mark(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        out.props[prop] = int(n == target)
        return out

    return clip.std.ModifyFrame(clip, mark)


@pytest.mark.parametrize("prop", ["_SceneChangeNext", "_SceneChangePrev"])
def test_no_blend_across_a_cut(frames, prop):
    clip = mark_cut(clip_from_array(frames), after=2, prop=prop)
    out = rife(clip, model="4.6", factor_num=4, sc_threshold=None, device="cpu")
    # between source frames 2 and 3: t = 1/4 -> frame 2, t = 1/2 and 3/4 -> frame 3
    assert [np.array_equal(frame_array(out, n), frames[2]) for n in (9,)] == [True]
    assert all(np.array_equal(frame_array(out, n), frames[3]) for n in (10, 11))
    assert "RifeTimestep" not in out.get_frame(10).props
    # elsewhere it interpolates
    assert out.get_frame(5).props["RifeTimestep"] == 0.25
    # and sc=False blends even there
    assert rife(clip, model="4.6", factor_num=4, sc=False, device="cpu").get_frame(10).props["RifePair"] == [2, 3]
    # the output marks the cut where the shown shot changes: between output frames 9 and 10
    assert [
        (out.get_frame(n).props["_SceneChangePrev"], out.get_frame(n).props["_SceneChangeNext"]) for n in range(8, 12)
    ] == [(0, 0), (0, 1), (1, 0), (0, 0)]


def test_each_source_frame_uploaded_once(frames, monkeypatch):
    uploads = []
    original = Engine._upload
    monkeypatch.setattr(Engine, "_upload", lambda self, f: uploads.append(1) or original(self, f))
    out = rife(clip_from_array(frames), model="4.26", factor_num=4, device="cpu")
    for n in range(out.num_frames):
        out.get_frame(n)
    assert len(uploads) == len(frames)


def test_output_props_come_from_nearest_source(frames):
    clip = clip_from_array(frames)
    clip = clip.std.ModifyFrame(clip, lambda n, f: _with_prop(f, "Origin", n))
    out = rife(clip, model="4.6", factor_num=4, device="cpu")
    assert [out.get_frame(n).props["Origin"] for n in range(4, 8)] == [1, 1, 2, 2]


def _with_prop(frame: vs.VideoFrame, key: str, value: int) -> vs.VideoFrame:
    out = frame.copy()
    out.props[key] = value
    return out


two_frames = clip_from_array(np.zeros((2, 3, 8, 8), np.float32))
variable_rate = vs.core.std.Splice([two_frames, two_frames.std.AssumeFPS(fpsnum=30)], mismatch=True)
no_durations = variable_rate.std.RemoveFrameProps(["_DurationNum", "_DurationDen"])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"clip": "clip.mp4"}, ParameterTypeError, "clip: must be a vs.VideoNode"),
        ({"clip": two_frames[0]}, ParameterError, "clip: needs at least 2 frames"),
        ({"factor_num": 0}, ParameterError, "factor_num: must be a whole number of at least 1"),
        ({"factor_den": -1}, ParameterError, "factor_den: must be"),
        ({"factor_num": 2.5}, ParameterTypeError, "factor_num: must be a whole number, not 2.5"),
        ({"fps_num": 0}, ParameterError, "fps_num: must be"),
        (
            {"clip": no_durations, "fps_num": 60},
            ParameterError,
            r"clip: source frame 0 has _DurationNum=None, _DurationDen=None; a clip of fps 0 needs positive",
        ),
        ({"scale": 3}, ParameterError, "scale: must be one of 0.25, 0.5, 1.0, 2.0, 4.0"),
        ({"model": "5.0"}, ParameterError, "model: unknown model '5.0'; known models: 4.0, 4.1"),
        ({"model": "4.26", "ensemble": True}, ParameterError, "ensemble: model 4.26 does not support"),
        ({"device": "tpu"}, DeviceError, "device: must be 'cpu', 'cuda' or 'cuda:N', not 'tpu'"),
        ({"device": "cuda:7"}, DeviceError, "device: 'cuda:7'"),
        ({"model_path": "/nonexistent/flownet.pkl"}, WeightsNotFoundError, "model_path: .*does not exist"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs, error, message):
    kwargs = {"clip": two_frames, "device": "cpu"} | kwargs
    with pytest.raises(error, match=message) as caught:
        rife(**kwargs)
    assert isinstance(caught.value, vs.Error) and isinstance(caught.value, VsRifeError)


def test_variable_format_and_size_refused():
    mixed = vs.core.std.Splice([two_frames, two_frames.resize.Point(format=vs.RGBH)], mismatch=True)
    with pytest.raises(ParameterError, match="clip: variable-format clips are not supported"):
        rife(mixed, device="cpu")
    sizes = vs.core.std.Splice([two_frames, two_frames.resize.Point(16, 16)], mismatch=True)
    with pytest.raises(ParameterError, match="clip: variable-size clips are not supported"):
        rife(sizes, device="cpu")


def test_missing_weights_say_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=r"python -m vsrife weights fetch 4\.26"):
        rife(two_frames, device="cpu")
    assert not any(tmp_path.iterdir()), "nothing is downloaded unless asked"


# float64 sums of a few terms near 10 s: a few units in the last place, far below 1e-12 s
ABSOLUTE_TIME_TOLERANCE = 1e-12


@pytest.mark.parametrize(
    ("timing", "expected_frames"),
    [({"factor_num": 4}, 20), ({"fps_num": 40, "timecodes": [0, 0.1, 0.15, 0.3, 0.35]}, 16)],
    ids=["constant-rate-x4", "timecodes-to-40"],
)
def test_every_output_frame_carries_its_own_absolute_time(frames, timing, expected_frames):
    """``_AbsoluteTime`` (a source filter's frame time) of output frame n is the source's first time plus
    n / output rate: in-betweens, frames shown in place of one, and the frames after the last source frame
    alike (they kept the left or nearer source frame's time)."""
    starts = timing.get("timecodes") or [n / 24 for n in range(len(frames))]
    clip = clip_from_array(frames)
    clip = clip.std.ModifyFrame(clip, lambda n, f: _with_prop(f, "_AbsoluteTime", 10.0 + starts[n]))
    out = rife(clip, model="4.6", device="cpu", **timing)
    rate = out.fps
    assert out.num_frames == expected_frames
    times = [out.get_frame(n).props["_AbsoluteTime"] for n in range(out.num_frames)]
    assert times == pytest.approx([10.0 + n / rate for n in range(out.num_frames)], abs=ABSOLUTE_TIME_TOLERANCE)
