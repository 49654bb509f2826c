"""``python -m vsrife bench``: network-only and end-to-end throughput, memory, on real frames.

Figures are medians over repeats after a warm-up. Network-only times our network on two real frames
(each new frame prepared once, the encoder of 4.7+ with it, as the filter runs it). The upstream
baseline times upstream's own model code (PyPI ``vsrife==5.7.0``, fetched on first use) one pair after
another, the encoder run on both frames of every pair, as its filter does. End-to-end pulls frames through
VapourSynth from a clip of real frames held in memory (ping-pong, so the motion never cuts), with every
in-between computed.
"""

from __future__ import annotations

import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from functools import partial

import numpy as np
import torch
import vapoursynth as vs

from .. import checkpoints, compiled, engine, frames, weights
from ..engine import EngineOptions
from ..filter import rife
from ..lanes import StubDevice, replayed
from ..params import compute_device, half_precision, model_name
from ..variants import DEFAULT_MODEL, architecture
from . import samples, upstream
from .smooth import out_of_the_collectors_way

SOURCE_FRAMES = 8


@dataclass(frozen=True)
class BenchConfig:
    model: str = DEFAULT_MODEL
    width: int = 1920
    height: int = 1080
    factor: Fraction = Fraction(2)
    device: str | None = None
    fp16: bool | None = None  # None: fp16 on CUDA, fp32 on the CPU (as rife() chooses)
    fmt: int = vs.YUV420P8  # the clip's format end to end: its colour conversion is part of the figure
    frames: int = 48  # output frames per end-to-end repeat
    repeats: int = 3
    upstream: bool = True
    engine: EngineOptions = EngineOptions()  # workers, batches in flight, CUDA graphs, compile, the stub device

    @property
    def stub(self) -> StubDevice | None:
        return self.engine.stub


def _timed(run, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def real_frames(width: int, height: int, fmt: int = vs.RGBS) -> vs.VideoNode:
    """Eight consecutive real frames (Big Buck Bunny, strong motion) at the size and format (BT.709),
    held in memory."""
    clip = samples.open_clip(samples.fetch("bigbuckbunny"))[36 : 36 + SOURCE_FRAMES]
    matrix_in = {"matrix_in": 1} if clip.format.color_family == vs.YUV else {}
    matrix = {} if vs.core.get_video_format(fmt).color_family == vs.RGB else {"matrix": 1}
    clip = clip.resize.Bicubic(width, height, format=fmt, **matrix_in, **matrix)
    held = [clip.get_frame(n) for n in range(SOURCE_FRAMES)]
    blank = clip.std.BlankClip(length=2 * SOURCE_FRAMES - 2)
    order = list(range(SOURCE_FRAMES)) + list(range(SOURCE_FRAMES - 2, 0, -1))
    return blank.std.ModifyFrame(blank, lambda n, f: held[order[n]])


def padded_tensors(clip: vs.VideoNode, multiple: int, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    """The clip's first two frames as ``[1, C, H, W]`` tensors on ``device``, padded to a ``multiple``."""
    pad_w, pad_h = -clip.width % multiple, -clip.height % multiple
    out = []
    for n in range(2):
        planes = torch.from_numpy(frames.to_array(clip.get_frame(n))).unsqueeze(0)
        out.append(torch.nn.functional.pad(planes, (0, pad_w, 0, pad_h)).to(device, dtype))
    return out


def network_seconds(config: BenchConfig, device: torch.device, dtype: torch.dtype, img: list[torch.Tensor]) -> float:
    """Median seconds per interpolated frame: one forward plus one frame prepared (a new frame per pair), in
    the engine's memory layout, replayed from a CUDA graph where the engine would use one."""
    loaded = checkpoints.load_network(config.model)
    arch = loaded.arch
    net = loaded.net.eval()
    layout = torch.channels_last if engine.prefers_channels_last(device, dtype) else torch.contiguous_format
    net = net.to(device, dtype, memory_format=layout)
    img = [i.contiguous(memory_format=layout) for i in img]
    timestep = torch.full((1, 1, 1, 1), 0.5, dtype=dtype, device=device)
    with torch.inference_mode(), engine.ieee_fp32(device) if dtype == torch.float32 else nullcontext():
        frame0 = net.frame(img[0])

        def step(img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
            return net(frame0, net.frame(img1), timestep)  # the next pair's new frame prepared

        if device.type == "cuda" and config.engine.cuda_graphs and not arch.retries_large_motion:
            step = replayed(step, img)

        def run() -> None:
            for _ in range(4):
                step(*img)
            _sync(device)

        return _timed(run, config.repeats) / 4


def upstream_seconds(config: BenchConfig, device: torch.device, dtype: torch.dtype, img: list[torch.Tensor]) -> float:
    """Median seconds per pair of upstream's own IFNet, encoder on both frames, pairs one after another."""
    with upstream.modules() as load:
        module = load(config.model)
    net = upstream.network(module, upstream.state_dict(weights.locate(config.model))).to(device, dtype)
    timestep, half, grid = upstream.grid_inputs(*img[0].shape[2:], 0.5, device, dtype)
    encoder = getattr(net, "encode", None)

    def run() -> None:
        with torch.inference_mode():
            for _ in range(4):
                if encoder is not None:
                    net(img[0], img[1], timestep, half, grid, encoder(img[0]), encoder(img[1]))
                else:
                    net(img[0], img[1], timestep, half, grid)
        _sync(device)

    return _timed(run, config.repeats) / 4


@dataclass(frozen=True)
class EndToEnd:
    """Medians over the repeats: seconds for ``config.frames`` output frames, how many were synthesized, the
    host's CPU time (user + system, every thread) and the stub device's busy time in those seconds."""

    seconds: float
    synthesized: int
    cpu_seconds: float
    device_busy_seconds: float | None
    lanes: str


def end_to_end(
    config: BenchConfig, clip: vs.VideoNode, timed: Callable[[], AbstractContextManager] = nullcontext
) -> EndToEnd:
    """``config.frames`` output frames through VapourSynth, as vspipe asks for them: the clip in its own
    format, scene changes and still frames handled as by default. One graph; each repeat asks for frames it
    has not asked for before, so nothing comes from VapourSynth's cache and the engine stays warm. The first
    repeat (model upload, CUDA graph capture) is not measured; ``timed`` wraps each measured one (a
    profiler, say)."""
    count, factor = config.frames, config.factor
    long = clip * (-(-count * (config.repeats + 1) // (clip.num_frames * factor)) + 1)
    out = rife(
        long,
        model=config.model,
        factor_num=factor.numerator,
        factor_den=factor.denominator,
        device=config.device,
        fp16=config.fp16,
        engine=config.engine,
    )
    stub = config.stub
    out_of_the_collectors_way()  # as vsrife smooth does
    requests = vs.core.num_threads  # as vspipe asks by default
    rows = []
    for repeat in range(config.repeats + 1):  # the first is the warm-up
        part = out[repeat * count : (repeat + 1) * count]
        with timed() if repeat else nullcontext():
            busy, cpu, start = stub.busy_seconds if stub else 0.0, time.process_time(), time.perf_counter()
            made = sum("RifeTimestep" in frame.props for frame in part.frames(prefetch=requests, close=True))
            seconds = time.perf_counter() - start
        rows.append((seconds, made, time.process_time() - cpu, (stub.busy_seconds - busy) if stub else None))
    rows = rows[1:]
    median = partial(_median_of, rows)
    device = torch.device("cpu") if stub else compute_device(config.device, None)
    options = config.engine.for_device(device)
    workers = options.workers or f"one per core ({torch.get_num_threads()} threads each)"
    lanes = f"{vs.core.num_threads} VapourSynth threads, {requests} requests, {workers} workers"
    if device.type == "cuda" or stub:
        lanes += f", {options.in_flight} batches in flight each"
    if device.type == "cuda":
        lanes += f", CUDA graphs {'on' if options.cuda_graphs else 'off'}"
    return EndToEnd(median(0), int(median(1)), median(2), median(3) if stub else None, lanes)


def _median_of(rows: list[tuple], column: int) -> float:
    return statistics.median(row[column] for row in rows)


def engine_options(
    workers: int | None, in_flight: int | None, cuda_graphs: bool, compile: bool, stub_ms: float | None
) -> EngineOptions:
    """The engine's options a benchmark asks for (``stub_ms``: the stand-in device, ms per in-between)."""
    stub = StubDevice(stub_ms) if stub_ms is not None else None
    return EngineOptions(workers=workers, in_flight=in_flight, cuda_graphs=cuda_graphs, compile=compile, stub=stub)


def run(config: BenchConfig) -> dict[str, object]:
    model_name(config.model, None)  # an unknown model: one clear error before anything is loaded
    if config.stub:
        return run_stub(config)
    device = compute_device(config.device, None)
    dtype = torch.float16 if half_precision(config.fp16, device) else torch.float32
    img = padded_tensors(
        real_frames(config.width, config.height), architecture(config.model).size_multiple(1.0), device, dtype
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    net_s = network_seconds(config, device, dtype, img)
    net_peak = _device_peak(device)
    up_s = upstream_seconds(config, device, dtype, img) if config.upstream else None
    threads = torch.get_num_threads()
    del img
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    e2e = end_to_end(config, real_frames(config.width, config.height, config.fmt))
    e2e_s, synthesized, lanes = e2e.seconds, e2e.synthesized, e2e.lanes
    interpolated = synthesized / e2e_s
    return {
        "model": config.model,
        "size": f"{config.width}x{config.height}",
        "format": vs.core.get_video_format(config.fmt).name,
        "factor": str(config.factor),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "network-only threads": threads,
        "end-to-end": lanes,
        "precision": "fp16" if dtype == torch.float16 else "fp32",
        "network-only frames/s": 1 / net_s,
        "upstream forward frames/s": (1 / up_s) if up_s else None,
        "end-to-end output frames/s": config.frames / e2e_s,
        "end-to-end interpolated frames/s": interpolated,
        "end-to-end / network-only": interpolated * net_s,
        "end-to-end / upstream forward": (interpolated * up_s) if up_s else None,
        "host CPU ms per output frame": 1000 * e2e.cpu_seconds / config.frames,
        "peak host memory MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "network-only peak device memory MiB": net_peak,
        "end-to-end peak device memory MiB": _device_peak(device),
        **(_compile_figures() if config.engine.compile else {}),
    }


def _compile_figures() -> dict[str, object]:
    """Whether torch.compile really ran: the calls that ran compiled code, and why a step ran eagerly."""
    reasons = compiled.fallbacks()
    return {"torch.compile calls compiled": compiled.calls_compiled(), "torch.compile off": "; ".join(reasons) or None}


def run_stub(config: BenchConfig) -> dict[str, object]:
    """End to end with the stub device: the host's side alone, everything it does on CUDA, against a device
    whose every in-between takes ``config.engine.stub_ms``."""
    e2e = end_to_end(config, real_frames(config.width, config.height, config.fmt))
    return {
        "model": config.model,
        "size": f"{config.width}x{config.height}",
        "format": vs.core.get_video_format(config.fmt).name,
        "factor": str(config.factor),
        "device": f"stub: {1000 * config.stub.seconds_per_frame:g} ms per in-between on one device queue",
        "end-to-end": e2e.lanes,
        "end-to-end output frames/s": config.frames / e2e.seconds,
        "end-to-end interpolated frames/s": e2e.synthesized / e2e.seconds,
        "device busy share": e2e.device_busy_seconds / e2e.seconds,
        "host CPU ms per output frame": 1000 * e2e.cpu_seconds / config.frames,
        "peak host memory MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _device_peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# (what, source frames, source rate, rife arguments): rate ratios with large terms, for which a graph that grew
# with the ratio's terms would take minutes and gigabytes
GRAPH_CASES = [
    ("AVI at BestSource's 260739/33125 -> 60", 270, Fraction(260739, 33125), {"fps_num": 60}),
    ("same -> 60000/1001", 270, Fraction(260739, 33125), {"fps_num": 60000, "fps_den": 1001}),
    ("10^6 frames at 10000000/333667 -> 60", 10**6, Fraction(10000000, 333667), {"fps_num": 60}),
    ("10^6 frames x 999999937/999999929", 10**6, Fraction(24), {"factor_num": 999999937, "factor_den": 999999929}),
    ("10^6 frames, timecodes -> 60", 10**6, Fraction(30000, 1001), {"fps_num": 60, "timecodes": "uneven"}),
]


def graph_build() -> list[dict[str, object]]:
    """Seconds and memory to build ``rife``'s graph for rate ratios with large terms (weights loaded once
    before, so only the graph is timed): Python's peak allocation while building and the process's
    resident memory added."""
    from ..timing import FrameTimes

    blank = partial(vs.core.std.BlankClip, format=vs.YUV420P8, width=64, height=64)
    rife(blank(length=2), device="cpu")  # weights and torch loaded: not part of any figure
    rows = []
    for name, length, rate, arguments in GRAPH_CASES:
        clip = blank(length=length, fpsnum=rate.numerator, fpsden=rate.denominator)
        if arguments.get("timecodes") == "uneven":  # every seventh frame lasts twice as long
            steps = np.where(np.arange(length - 1) % 7 == 0, 2 * rate.denominator, rate.denominator)
            starts = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)
            arguments = arguments | {"timecodes": FrameTimes(starts, int(starts[-1]) + 1001, 1 / rate.numerator)}
        resident = _resident_bytes()
        tracemalloc.start()
        start = time.perf_counter()
        out = rife(clip, device="cpu", **arguments)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append(
            {
                "case": name,
                "output frames": out.num_frames,
                "build s": seconds,
                "python peak MiB": peak / 2**20,
                "resident added MiB": (_resident_bytes() - resident) / 2**20,
            }
        )
    return rows


def _resident_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def format_graph_rows(rows: list[dict[str, object]]) -> str:
    header = f"{'case':<40} {'output frames':>13} {'build s':>8} {'python peak MiB':>15} {'resident added MiB':>18}"
    lines = [header]
    for row in rows:
        lines.append(
            f"{row['case']:<40} {row['output frames']:>13} {row['build s']:>8.3f} {row['python peak MiB']:>15.2f} "
            f"{row['resident added MiB']:>18.1f}"
        )
    return "\n".join(lines)


def format_result(result: dict[str, object]) -> str:
    lines = []
    for key, value in result.items():
        if value is None:
            continue
        lines.append(f"{key:<34} {value:.2f}" if isinstance(value, float) else f"{key:<34} {value}")
    return "\n".join(lines)
