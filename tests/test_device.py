"""What depends on the compute device, run on each one there is (conftest's ``device``: the CPU always,
CUDA when present; ``VSRIFE_TEST_DEVICE=cuda`` makes a missing GPU an error): half precision within its
documented bound, batched timesteps equal to one at a time, source frames bit-exact in the clip's own
format, concurrent requests equal to sequential ones, out-of-memory as one clear error, device choice."""

from __future__ import annotations

import gc
import time
from concurrent.futures import wait

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import vapoursynth as vs
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import (
    FLOAT32_ROUNDOFF,
    FP32_NETWORK_TOLERANCE,
    clip_from_array,
    float32_error,
    frame_array,
    read_rgb_frames,
)
from vsrife import engine as engine_module
from vsrife import formats, frames, rife
from vsrife.engine import Engine, EngineOptions, as_planes, ieee_fp32
from vsrife.errors import DeviceError
from vsrife.filter import _build_engine
from vsrife.lanes import TorchLane

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


def exact_in_between(net, left, right, ts: tuple[float, ...], sources: list[np.ndarray], peak: int) -> np.ndarray:
    """The in-betweens ``[B, 3, H, W]`` (code values, float64) the network's own flow and mask make of two RGB
    frames of integer ``sources`` codes, computed in float64: the flow and the mask are the only part the
    network computes in its dtype (:meth:`~vsrife.network.IFNet.motion`); warps, blend and the colour
    conversion are exact here."""
    device = left.frame.pixels.device
    with torch.inference_mode():
        timesteps = torch.tensor(ts, dtype=net.dtype, device=device).view(-1, 1, 1, 1)
        flow, mask = (t.double().cpu() for t in net.motion(left.frame, right.frame, timesteps))
    batch, _, height, width = flow.shape
    base = torch.stack(
        torch.meshgrid(
            torch.linspace(-1, 1, width, dtype=torch.float64),
            torch.linspace(-1, 1, height, dtype=torch.float64),
            indexing="xy",
        ),
        -1,
    )
    half_size = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64)
    warped = []
    for i, codes in enumerate(sources):
        image = torch.from_numpy(codes.astype(np.float64) / peak).unsqueeze(0).expand(batch, -1, -1, -1)
        grid = base + flow[:, 2 * i : 2 * i + 2].permute(0, 2, 3, 1) / half_size
        warped.append(F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True))
    return (torch.lerp(warped[1], warped[0], torch.sigmoid(mask)) * peak).numpy()


def fp32_slack(sources: list[np.ndarray], peak: int) -> float:
    """How far (in codes) the engine's float32 warp, blend and colour conversion may be from the exact
    values, whatever the flow. The sampling position: the grid is made and unnormalized in float32 (a few
    roundings of coordinates up to about 2 in magnitude, scaled by (size - 1) / 2): within 8 units of
    roundoff of the size, in pixels, per axis; bilinear sampling moves by at most the largest step between
    neighbouring samples per pixel of position. The values: the colour conversion both ways, the sampling's
    weights, the blend and the lerp, each a few roundings of values up to ``peak``: 16 units."""
    _, height, width = sources[0].shape
    steps = [np.abs(np.diff(s.astype(np.int64), axis=a)).max() for s in sources for a in (1, 2)]
    return float32_error(max(steps) * (width + height), 8) + float32_error(peak, 16)


@pytest.mark.parametrize("fmt", [vs.RGB30, vs.RGB48])
def test_half_precision_rounds_only_the_flow_and_the_mask(real, fmt, device, deterministic):
    """In fp16 the network computes the flow and the mask in half precision, and nothing else: the frames it
    warps and its output stay float32 (they were rounded to fp16 on the way in and on the way out: up to 32
    codes of a 16-bit clip, half a code of a 10-bit one). So the fp16 engine's output is, once rounded, the
    exact in-between its own flow and mask make, within float32's slack."""
    peak = (1 << vs.core.get_video_format(fmt).bits_per_sample) - 1
    sources = [np.clip(np.round(frame * peak), 0, peak).astype(np.uint16) for frame in real[:2]]
    clip = clip_from_array(np.stack(sources), fmt=fmt)
    convert = formats.DeviceConverter(
        clip.format, clip.width, clip.height, formats.colour_of(clip), torch.device(device)
    )
    engine = engine_for(convert, device, torch.float16)
    left, right = (engine.prepare(i, clip.get_frame(i)) for i in range(2))
    ts = (0.25, 0.5)
    got = np.stack([np.stack(planes) for planes in as_planes(engine.interpolate(left, right, ts))])
    exact = exact_in_between(engine.net, left, right, ts, sources, peak)
    bound = 0.5 + fp32_slack(sources, peak)  # the output's own rounding to a code, and float32's slack
    assert np.abs(got - exact).max() <= bound, (np.abs(got - exact).max(), bound)


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
        # each lane captured on its own stream, once per batch size: 1, and 3 as 2 + 1; nothing for the frames
        assert all(graph.stream is lane.stream for lane in engine._all_lanes for graph in lane.graphs.values())
        assert {key for lane in engine._all_lanes for key in lane.graphs} <= {("interpolate", 1), ("interpolate", 2)}
    for replayed, eager in zip(results[True], results[False], strict=True):
        for a, b in zip(replayed, eager, strict=True):
            assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1


def test_cuda_lanes_own_their_streams_and_wait_only_when_asked(device):
    """More lanes than PyTorch's pool of 32 streams: each its own stream (a capture on a stream another lane
    uses records that lane's work). New timesteps go up without synchronizing (the sync debug mode raises on
    a synchronizing copy). The host waiting for a batch sleeps instead of spinning: it takes a small share
    of a core (spinning takes all of it)."""
    if device != "cuda":
        pytest.skip("CUDA streams and events exist on CUDA only")
    lanes = [TorchLane(torch.device(device), 2) for _ in range(40)]
    assert len({lane.stream.cuda_stream for lane in lanes}) == 40
    busy = int(1e9)  # GPU clock cycles: about half a second
    with lanes[0].context():
        torch.cuda._sleep(busy)
        torch.cuda.set_sync_debug_mode("error")
        try:
            lanes[0].timesteps((0.125, 0.375), torch.float16)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        result = lanes[0].download([torch.zeros(4, device=device)])
    cpu, wall = time.thread_time(), time.perf_counter()
    result.wait()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    assert wall > 0.1 and cpu < 0.25 * wall, (cpu, wall)


def test_batches_are_split_into_powers_of_two(real, monkeypatch):
    """However many timesteps a pair has (a variable rate makes every count up to the batch), the forwards
    are of at most four sizes, powers of two (one CUDA graph each per worker: a capture stalls every worker),
    and give what one timestep at a time gives. The plan is the same on any device: the CPU shows it."""
    clip = clip_from_array(real[:2])
    sizes = []
    original = Engine._in_betweens
    monkeypatch.setattr(Engine, "_in_betweens", lambda self, ts, *f: sizes.append(len(ts)) or original(self, ts, *f))
    one_at_a_time = [frame_array(rife(clip, model="4.6", factor_num=8, device="cpu"), n) for n in range(1, 8)]
    monkeypatch.setattr(engine_module, "CPU_BATCH", engine_module.MAX_BATCH)
    sizes.clear()
    batched = rife(clip, model="4.6", factor_num=8, device="cpu")
    for n in range(1, 8):
        assert np.abs(frame_array(batched, n) - one_at_a_time[n - 1]).max() <= 1e-5  # oneDNN's kernels per size
    assert sizes == [4, 2, 1], "the pair's 7 in-betweens"
    assert engine_module.batch_sizes(7, 8) == [4, 2, 1] and engine_module.batch_sizes(8, 4) == [4, 4]
    assert {size for n in range(1, 9) for size in engine_module.batch_sizes(n, 8)} == {1, 2, 4, 8}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_channels_last_equals_nchw(real, device, dtype, deterministic):
    """NHWC (the default for fp16 on CUDA, with the block inputs' channels zero-padded to a multiple of 8)
    computes what NCHW does. Each layout's output is the exact in-between of its own flow and mask (within
    float32's slack): nothing but the network's convolutions depends on the layout. Those sum the same
    products in another order; each rounds its output to the network's dtype (one unit: 2**-11 in fp16,
    2**-24 in fp32) after summing up to ``fan_in`` products in float32 (``fan_in`` units of 2**-24), so
    each layer's output may differ by that much relative to its magnitude. The flow and the mask pass
    through at most every half-precision layer of the network once: they agree within that many layers'
    worth, relative to their largest magnitude."""
    peak = 1023
    sources = [np.clip(np.round(frame * peak), 0, peak).astype(np.uint16) for frame in real[:2]]
    clip = clip_from_array(np.stack(sources), fmt=vs.RGB30)
    convert = formats.DeviceConverter(
        clip.format, clip.width, clip.height, formats.colour_of(clip), torch.device(device)
    )
    net = engine_for(convert, device, dtype).net
    ts = (0.25, 0.5)
    fields = []
    for channels_last in (True, False):
        engine = Engine(
            net, torch.device(device), convert, 64, 8, EngineOptions(dtype=dtype, channels_last=channels_last)
        )
        left, right = (engine.prepare(i, clip.get_frame(i)) for i in range(2))
        assert left.frame.pixels.is_contiguous(memory_format=torch.channels_last) == channels_last
        got = np.stack([np.stack(planes) for planes in as_planes(engine.interpolate(left, right, ts))])
        exact = exact_in_between(engine.net, left, right, ts, sources, peak)
        assert np.abs(got - exact).max() <= 0.5 + fp32_slack(sources, peak)
        with torch.inference_mode():
            timesteps = torch.tensor(ts, dtype=dtype, device=device).view(-1, 1, 1, 1)
            fields.append([f.double().cpu() for f in engine.net.motion(left.frame, right.frame, timesteps)])
    layers, fan_in = convolution_depth(net)
    unit = 2.0**-11 if dtype == torch.float16 else FLOAT32_ROUNDOFF
    relative = layers * (unit + fan_in * FLOAT32_ROUNDOFF)
    for nhwc, nchw in zip(*fields, strict=True):
        assert (nhwc - nchw).abs().max().item() <= relative * nhwc.abs().max().item()


def convolution_depth(net) -> tuple[int, int]:
    """How many convolutions the network has (no path through it is longer), and the most products one of
    their outputs sums."""
    convolutions = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    fan_ins = [
        m.weight.shape[0 if isinstance(m, torch.nn.ConvTranspose2d) else 1] * m.weight.shape[2] * m.weight.shape[3]
        for m in convolutions
    ]
    return len(convolutions), max(fan_ins)


@pytest.fixture
def cudnn_precision():
    """cuDNN's fp32 settings as they were (they need no GPU to be read or set), restored afterwards."""
    get = torch._C._get_fp32_precision_getter
    legacy = torch.backends.cudnn.allow_tf32
    before = {(backend, op): get(backend, op) for backend, op in (("cuda", "conv"), ("cuda", "rnn"), ("cuda", "all"))}
    yield
    torch.backends.cudnn.allow_tf32 = legacy  # the legacy setter resets conv and rnn: the newer values after it
    for (backend, op), value in before.items():
        torch._C._set_fp32_precision_setter(backend, op, value)


def test_fp32_convolutions_are_ieee_whatever_the_host_set(cudnn_precision):
    """A host program that set TF32 convolutions but IEEE RNNs with the per-op API (reading the legacy
    ``cudnn.allow_tf32`` then raises: every fp32 batch failed), or TF32 for all of cuDNN (the legacy setter's
    False only unset the per-op value, which then followed that TF32): convolutions are IEEE inside, the
    host's settings as they were afterwards, an unset one still following its parent. Flags only: the CPU
    shows it."""
    cuda = torch.device("cuda")
    settings = {"conv": torch.backends.cudnn.conv, "rnn": torch.backends.cudnn.rnn, "all": torch.backends.cudnn}
    for host in ({"conv": "tf32", "rnn": "ieee"}, {"all": "tf32", "conv": "none"}):
        for name, value in host.items():
            settings[name].fp32_precision = value
        before = {name: setting.fp32_precision for name, setting in settings.items()}
        with ieee_fp32(cuda), ieee_fp32(cuda):  # two workers inside at once
            assert settings["conv"].fp32_precision == "ieee"  # for convolutions themselves: no parent overrides it
        assert {name: setting.fp32_precision for name, setting in settings.items()} == before
    torch.backends.cudnn.fp32_precision = "ieee"
    assert torch.backends.cudnn.conv.fp32_precision == "ieee", "left unset, it follows cuDNN's setting"


@pytest.mark.parametrize("fmt", [vs.YUV420P10, vs.RGB48])
def test_colour_conversion_ignores_the_hosts_matmul_precision(real, fmt, device):
    """The colour conversion is float32 sums of products, not a matrix product: cuBLAS would use TF32 and
    oneDNN bfloat16 (on CPUs that have it) where the host program lowered the float32 matmul precision.
    Its result is the same at every setting, and no matrix product runs in it."""
    clip = clip_from_array(real[:1]).resize.Bicubic(format=fmt, **({"matrix_s": "709"} if fmt != vs.RGB48 else {}))
    convert = formats.DeviceConverter(
        clip.format, clip.width, clip.height, formats.colour_of(clip), torch.device(device)
    )
    planes = [torch.from_numpy(p.copy()).to(device) for p in frames.plane_list(clip.get_frame(0))]
    before = torch.get_float32_matmul_precision()
    results = []
    try:
        for precision in ("highest", "high", "medium"):
            torch.set_float32_matmul_precision(precision)
            with OpNames() as ran:
                rgb = convert.to_rgb(planes)
                results.append([rgb.cpu(), *(p.cpu() for p in convert.from_rgb(rgb * 1.0313 - 0.0071))])
            assert not ran.names & {"mm", "addmm", "bmm", "matmul", "baddbmm"}, ran.names
    finally:
        torch.set_float32_matmul_precision(before)
    for result in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(result, results[0], strict=True))


class OpNames(TorchDispatchMode):
    """The names of the aten ops run inside."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
