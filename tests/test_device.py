"""What depends on the compute device, run on each one there is (conftest's ``device``: the CPU always,
CUDA when present; ``VSRIFE_TEST_DEVICE=cuda`` makes a missing GPU an error): half precision within its
documented bound, batched timesteps equal to one at a time, source frames bit-exact in the clip's own
format, concurrent requests equal to sequential ones, out-of-memory as one clear error, device choice."""

from __future__ import annotations

import gc
from concurrent.futures import wait

import numpy as np
import pytest
import torch
import vapoursynth as vs

from helpers import FP32_NETWORK_TOLERANCE, clip_from_array, frame_array, read_rgb_frames
from vsrife import formats, frames, rife
from vsrife.engine import Engine, EngineOptions, as_planes, ieee_fp32
from vsrife.errors import DeviceError
from vsrife.filter import _build_engine

# fp16 against fp32 on real frames (max, mean absolute difference, 0..1 scale); measured on the CPU:
# 4.26 0.0028 / 9.4e-5, 4.6 0.0047 / 9.8e-5. The bound leaves room for CUDA's half kernels.
FP16_MAX, FP16_MEAN = 0.02, 1e-3


@pytest.fixture(scope="module")
def real(sample_path) -> np.ndarray:
    """Big Buck Bunny frames 40..45 (strong motion), 256x192 crops."""
    return read_rgb_frames(sample_path("bigbuckbunny"), list(range(40, 46)), crop=(512, 256, 256, 192))


@pytest.mark.parametrize("model", ["4.26", "4.6"])
def test_fp16_stays_within_its_bound(real, model, device):
    clip = clip_from_array(real[:4])
    full = rife(clip, model=model, device=device, fp16=False)
    half = rife(clip, model=model, device=device, fp16=True)
    difference = np.concatenate([np.abs(frame_array(full, n) - frame_array(half, n)).ravel() for n in (1, 3, 5)])
    assert difference.max() <= FP16_MAX and difference.mean() <= FP16_MEAN, (difference.max(), difference.mean())
    assert difference.max() > 0, "fp16 really ran"


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV420P10])
def test_batched_timesteps_equal_one_at_a_time(real, fmt, device):
    clip = clip_from_array(real[:2]).resize.Bicubic(format=fmt, matrix_s="709")
    convert = formats.DeviceConverter(
        clip.format, clip.width, clip.height, formats.colour_of(clip), torch.device(device)
    )
    engine = _build_engine(
        convert, "4.26", None, False, 1.0, False, torch.device(device), EngineOptions(dtype=torch.float32)
    )
    left, right = (engine.prepare(i, clip.get_frame(i)) for i in range(2))
    ts = (0.25, 0.5, 0.75)
    batched = as_planes(engine.interpolate(left, right, ts))
    # oneDNN and cuDNN pick other kernels for another batch size: two float32 evaluations of one network
    tolerance = FP32_NETWORK_TOLERANCE
    peak = (1 << clip.format.bits_per_sample) - 1
    for i, t in enumerate(ts):
        single = as_planes(engine.interpolate(left, right, (t,)))[0]
        for a, b in zip(batched[i], single, strict=True):
            # integer planes: float noise of 0.1 code at most (1e-4 of 1023) moves a value across a half code
            assert np.abs(a.astype(np.float64) - b.astype(np.float64)).max() <= max(1, tolerance * peak)
    with torch.inference_mode(), ieee_fp32(torch.device(device)):
        raw_batched, singles = _raw_forwards(engine, left, right, ts, device)
    for i in range(len(ts)):
        assert (raw_batched[i] - singles[i]).abs().max().item() <= tolerance


def engine_for(convert: formats.DeviceConverter, device: str, dtype: torch.dtype) -> Engine:
    """The engine ``rife()`` builds for 4.26 (real weights) on ``device`` in ``dtype``."""
    return _build_engine(convert, "4.26", None, False, 1.0, False, torch.device(device), EngineOptions(dtype=dtype))


def _raw_forwards(engine, left, right, ts, device):
    """The network itself, batched and one timestep at a time."""
    batched = engine.net(left.frame, right.frame, torch.tensor(ts, device=device).view(3, 1, 1, 1))
    singles = [engine.net(left.frame, right.frame, torch.full((1, 1, 1, 1), t, device=device))[0] for t in ts]
    return batched, singles


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV422P10, vs.RGB24, vs.GRAY16, vs.RGBH])
def test_source_frames_bit_exact_on_the_device(real, fmt, device):
    rgb = clip_from_array(real[:3])
    yuv_or_grey = vs.core.get_video_format(fmt).color_family != vs.RGB
    clip = rgb.resize.Bicubic(format=fmt, **({"matrix_s": "709"} if yuv_or_grey else {}))
    out = rife(clip, model="4.26", device=device)
    for k in range(3):
        for a, b in zip(frames.plane_list(out.get_frame(2 * k)), frames.plane_list(clip.get_frame(k)), strict=True):
            assert np.array_equal(a, b)
    assert "RifeTimestep" in out.get_frame(1).props


@pytest.fixture
def deterministic():
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def test_concurrent_requests_equal_sequential(real, device, deterministic):
    clip = clip_from_array(real).resize.Bicubic(format=vs.YUV420P8, matrix_s="709")
    expected = [frames.plane_list(f) for f in rife(clip, model="4.26", factor_num=3, device=device).frames()]
    out = rife(clip, model="4.26", factor_num=3, device=device)
    order = list(range(out.num_frames))[::-1]
    futures = {n: out.get_frame_async(n) for n in order[::2] + order[1::2]}
    wait(list(futures.values()))
    for n, future in futures.items():
        for a, b in zip(frames.plane_list(future.result()), expected[n], strict=True):
            assert np.array_equal(a, b), f"frame {n}"


def test_cuda_out_of_memory_is_one_clear_error(real, device):
    if device != "cuda":
        pytest.skip("CUDA only; the CPU's out-of-memory error is tested in test_faults.py")
    clip = clip_from_array(real[:2]).resize.Bicubic(3840, 2160)
    total = torch.cuda.get_device_properties(0).total_memory
    gc.collect()  # engines of earlier tests, and what the allocator keeps for them, do not count
    torch.cuda.empty_cache()
    held = torch.cuda.memory_reserved(0)  # what is still alive: the limit is 256 MiB on top of it
    torch.cuda.set_per_process_memory_fraction(min(1.0, (held + 256 * 2**20) / total))
    try:
        with pytest.raises(vs.Error, match="out of CUDA memory interpolating 3840x2160") as caught:
            rife(clip, model="4.26", device=device).get_frame(1)
        assert "try scale=0.5" in str(caught.value)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_device_names_and_ordinals(real, device):
    clip = clip_from_array(real[:2])
    if device == "cpu":
        with pytest.raises(DeviceError, match="device_index: asks for CUDA, but device='cpu' was given"):
            rife(clip, device="cpu", device_index=0)
        return
    count = torch.cuda.device_count()
    assert "RifeTimestep" in rife(clip, model="4.6", device="cuda:0").get_frame(1).props
    assert "RifeTimestep" in rife(clip, model="4.6", device_index=count - 1).get_frame(1).props
    with pytest.raises(DeviceError, match=f"cuda:{count} does not exist"):
        rife(clip, device=f"cuda:{count}")


def test_cuda_graphs_equal_eager(real, device):
    """The engine's CUDA graphs replay what it runs eagerly, on new inputs each time (batches of 1 and 3)."""
    if device != "cuda":
        pytest.skip("CUDA graphs exist on CUDA only")
    clip = clip_from_array(real[:3]).resize.Bicubic(format=vs.YUV420P8, matrix_s="709")
    convert = formats.DeviceConverter(
        clip.format, clip.width, clip.height, formats.colour_of(clip), torch.device(device)
    )
    pairs = [(0, 1, (0.5,)), (1, 2, (0.5,)), (1, 2, (0.25, 0.5, 0.75)), (0, 2, (0.25, 0.5, 0.75))]
    results = {}
    for graphs in (True, False):
        engine = _build_engine(
            convert, "4.26", None, False, 1.0, False, torch.device(device), EngineOptions(dtype=torch.float16)
        )
        engine.graphs = graphs
        prepared = [engine.prepare(i, clip.get_frame(i)) for i in range(3)]
        results[graphs] = [
            frame for a, b, ts in pairs for frame in as_planes(engine.interpolate(prepared[a], prepared[b], ts))
        ]
        assert (engine.captured_graphs > 0) == graphs
    for replayed, eager in zip(results[True], results[False], strict=True):
        for a, b in zip(replayed, eager, strict=True):
            assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_channels_last_equals_nchw(real, device, dtype):
    """NHWC (the default for fp16 on CUDA) computes what NCHW does, up to the kernels' rounding."""
    clip = clip_from_array(real[:2]).resize.Bicubic(format=vs.YUV420P10, matrix_s="709")
    convert = formats.DeviceConverter(
        clip.format, clip.width, clip.height, formats.colour_of(clip), torch.device(device)
    )
    results = []
    for channels_last in (True, False):
        engine = _build_engine(
            convert, "4.26", None, False, 1.0, False, torch.device(device), EngineOptions(dtype=dtype)
        )
        engine = Engine(
            engine.net, engine.device, convert, 64, 8, EngineOptions(dtype=dtype, channels_last=channels_last)
        )
        left, right = (engine.prepare(i, clip.get_frame(i)) for i in range(2))
        assert left.frame.pixels.is_contiguous(memory_format=torch.channels_last) == channels_last
        results.append(as_planes(engine.interpolate(left, right, (0.25, 0.5))))
    codes = 8 if dtype == torch.float16 else 1  # of 1023: fp16 rounds where NHWC and NCHW kernels differ
    for nhwc, nchw in zip(*results, strict=True):
        for a, b in zip(nhwc, nchw, strict=True):
            assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= codes
