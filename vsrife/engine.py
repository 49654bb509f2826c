"""The device engine: one network on one device, fed with the clip's own planes.

Each source frame goes to the device in its own sample type (uint8, uint16, half, float), is converted
there to the network's RGB (:class:`~vsrife.formats.DeviceConverter`), padded and prepared once
(:meth:`~vsrife.network.IFNet.frame`: its encoder features too) and is shared by every in-between that
needs it through a cache sized in bytes. The in-betweens of one pair (its timesteps) are batched on CUDA,
in forwards of powers of two as large as the device memory budget allows (:func:`cuda_batch`); the result
is converted back to the clip's own format on the device and only that comes back to the host, where it is
copied once, into the new VapourSynth frame.

The work is asynchronous (:mod:`vsrife.lanes`): workers stage frames and queue batches, up to
``in_flight`` per lane on CUDA, and a batch is waited for only when one of its frames is wanted. What the
engine does is set by one frozen :class:`EngineOptions`. "fp32" means IEEE fp32 (TF32 off for our
convolutions, per call).
"""

from __future__ import annotations

import copy
import os
import queue
import sys
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
import vapoursynth as vs

from . import frames
from .compiled import CompiledStep, compile_step, compiles, is_out_of_memory
from .errors import OutOfMemory
from .formats import DeviceConverter
from .futures import FutureCache
from .lanes import CaptureFailed, Planes, Result, StubDevice, StubLane, TorchLane
from .network import Frame, IFNet

MAX_CPU_WORKERS = 8
WORKER_PREFIX = "vsrife-engine"  # names of the engines' worker threads
CPU_BYTES_PER_PIXEL = 640  # peak host memory of one 4.26 forward, measured at 1280x768 and 1920x1088
# On CUDA, by design, a 1080p render with the default model and options stays under 2 GB of device memory
# (tools/traffic.py counts it): the prepared frames kept, and per worker the largest forward's
# intermediates, its graphs' static inputs and a frame being prepared.
CUDA_CACHE_BYTES = 512 << 20  # prepared frames kept on a GPU (1080p 4.26: 9)
CUDA_FORWARD_BYTES = 512 << 20  # a worker's forward intermediates: its batches are as large as this allows
# Peak bytes of one timestep's in-between step (forward and colour conversion) per pixel of the padded frame,
# for the heaviest model (4.26.heavy: 321 and 473; 4.26: 177 and 281) in the layout the engine uses for the
# dtype, counted by tools/traffic.py's step_peaks for every model at 1080p; scale above 1 and ensemble are
# not counted.
FORWARD_BYTES_PER_PIXEL = {torch.float16: 330, torch.float32: 480}
CPU_CACHE_SHARE = 8  # on the CPU: at most an eighth of the available memory
MAX_BATCH = 8  # timesteps of one pair per forward, on CUDA, at most
# on the CPU a batch saves no work but holds a worker longer: with a pair's 2-3 in-betweens (25 -> 60) in
# one batch, two workers had only one pair to share, and the render ran 30 % slower
CPU_BATCH = 1


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs; None means the engine's choice for the device.

    ``workers``: batches computed at once — CUDA streams (default 2), or on the CPU single-threaded calls
    (default one per core, as memory allows). ``in_flight``: batches each CUDA stream may have queued
    before its worker waits (default 2; 1 waits for each batch). ``cuda_graphs``: replay each worker's work
    from CUDA graphs (default on; 4.0/4.1 always run eagerly). ``compile``: torch.compile the prepare and
    in-between steps (default off). ``channels_last``: NHWC memory (default: fp16 on CUDA). ``dtype``:
    torch.float16 or torch.float32 (default: fp16 on CUDA, fp32 on the CPU). ``stub``: the benchmark's
    stand-in device (:class:`~vsrife.lanes.StubDevice`; never in a test), run as CUDA runs.
    """

    workers: int | None = None
    in_flight: int | None = None
    cuda_graphs: bool = True
    compile: bool = False
    channels_last: bool | None = None
    dtype: torch.dtype | None = None
    stub: StubDevice | None = None

    def for_device(self, device: torch.device) -> EngineOptions:
        """Every choice made: what runs on ``device``."""
        cuda_like = device.type == "cuda" or self.stub is not None
        dtype = self.dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        return replace(
            self,
            workers=self.workers or (CUDA_WORKERS if cuda_like else None),
            in_flight=self.in_flight or (IN_FLIGHT if cuda_like else 1),
            cuda_graphs=self.cuda_graphs and device.type == "cuda",
            channels_last=prefers_channels_last(device, dtype) if self.channels_last is None else self.channels_last,
            dtype=dtype,
        )


CUDA_WORKERS = 2
IN_FLIGHT = 2


@contextmanager
def _out_of_memory_as(device: torch.device, message: str) -> Iterator[None]:
    """Running out of ``device``'s memory inside becomes one :class:`OutOfMemory` error saying ``message``
    (the allocator's unused cache given back first); other errors pass as they are."""
    try:
        yield
    except (torch.cuda.OutOfMemoryError, RuntimeError, MemoryError) as error:
        if isinstance(error, OutOfMemory) or not is_out_of_memory(error):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise OutOfMemory(message) from None


@dataclass(frozen=True)
class Job:
    """The in-betweens of one pair of source frames (numbers and frames) at timesteps ``ts`` (each 0 < t < 1),
    computed in one batched forward."""

    left: int
    right: int
    ts: tuple[float, ...]
    left_frame: vs.VideoFrame = field(compare=False)
    right_frame: vs.VideoFrame = field(compare=False)

    @property
    def key(self) -> tuple[int, int, tuple[float, ...]]:
        return self.left, self.right, self.ts


@dataclass(frozen=True)
class Prepared:
    """A source frame on the device as the network reads it (padded, encoded: :class:`~vsrife.network.Frame`),
    and the CUDA event after which it is complete (None on the CPU)."""

    frame: Frame | tuple
    ready: torch.cuda.Event | None

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.frame)


@dataclass(frozen=True)
class Workers:
    """How the work is spread: ``count`` batches at once, each with ``threads`` CPU threads."""

    count: int
    threads: int

    @classmethod
    def choose(
        cls, device: torch.device, width: int, height: int, options: EngineOptions, cores: int | None = None
    ) -> Workers:
        """On CUDA (and the stub) ``options.workers`` streams. On the CPU one call per core, single-threaded,
        as far as memory allows: measured end to end on 2 cores, 4.26 at 1280x720 runs 1.27x faster than one
        call on both cores (its convolutions scale poorly across threads)."""
        cores = cores or cpu_budget()
        if options.workers is not None:
            return cls(options.workers, torch.get_num_threads() if device.type == "cuda" else 1)
        fits = int(_available_memory() // 2 // (width * height * CPU_BYTES_PER_PIXEL))
        workers = max(1, min(cores, MAX_CPU_WORKERS, fits))
        return cls(workers, max(1, cores // workers))


def cpu_budget() -> int:
    """The cores the engine may use: those this process may run on, at most VapourSynth's thread count (a
    render that shares the machine with others lowers ``core.num_threads`` to its share)."""
    return max(1, min(len(os.sched_getaffinity(0)), vs.core.num_threads))


def _available_memory() -> float:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def cache_frames(frame_bytes: int, budget: float, workers: int, most: int) -> int:
    """How many prepared frames of ``frame_bytes`` the cache keeps: what the ``budget`` allows, at least what
    ``workers`` have in hand (both frames of a batch each, and the next), at most what the filter can still
    ask for (``most``)."""
    return int(max(2 * workers + 2, min(most, budget // frame_bytes)))


def cuda_batch(padded: tuple[int, int], dtype: torch.dtype) -> int:
    """The most timesteps one forward computes on CUDA: a power of two up to :data:`MAX_BATCH` whose
    intermediates fit :data:`CUDA_FORWARD_BYTES` (at 1080p one; a batch saves little once a frame fills the
    GPU). A batch of another size is split into powers of two (:func:`batch_sizes`)."""
    fits = CUDA_FORWARD_BYTES // (padded[0] * padded[1] * FORWARD_BYTES_PER_PIXEL[dtype])
    return 1 << (max(1, min(MAX_BATCH, fits)).bit_length() - 1)


def batch_sizes(count: int, largest: int) -> list[int]:
    """``count`` timesteps as forwards of powers of two up to ``largest``, largest first (7 -> 4, 2, 1): one
    CUDA graph per size, at most four per worker however the timesteps fall (a variable rate makes every
    count up to the batch), each captured once, in the first batches of a run."""
    sizes = []
    while count:
        sizes.append(min(largest, 1 << (count.bit_length() - 1)))
        count -= sizes[-1]
    return sizes


def prefers_channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    """Half precision on CUDA: cuDNN's tensor-core kernels work on NHWC, so NCHW costs two transposes per
    convolution (measured on an H100 at 1080p, one frame: 4.26 5.8 -> 5.2 ms, 4.6 4.4 -> 3.8 ms)."""
    return device.type == "cuda" and dtype == torch.float16


_TF32 = threading.Lock()
_tf32_users = 0
_tf32_saved: object = None


def _conv_fp32():
    """How cuDNN convolutions' fp32 precision is read and set, and the IEEE value: the per-op setting where
    torch has it (2.9 and later; there the legacy ``cudnn.allow_tf32`` raises on reading once the host
    program set convolutions alone with the newer API, and setting it no longer overrides a precision set
    for all of cuDNN), else the legacy flag."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None:
        return partial(_own_precision, conv, torch.backends.cudnn), partial(setattr, conv, "fp32_precision"), "ieee"
    cudnn = torch.backends.cudnn
    return (lambda: cudnn.allow_tf32), partial(setattr, cudnn, "allow_tf32"), False


def _own_precision(setting, parent) -> str:
    """``setting``'s fp32 precision as set: reading it gives its parent's where it was left unset ("none"),
    and "none" is what it gets back then (it keeps following its parent)."""
    value = setting.fp32_precision
    return "none" if value == parent.fp32_precision else value


@contextmanager
def ieee_fp32(device: torch.device) -> Iterator[None]:
    """cuDNN convolutions in IEEE fp32 (no TF32) while any worker is inside; the user's own setting (as it
    was set: "none" stays "none") restored when the last one leaves. The colour conversion needs no such
    setting: it uses no matrix product (:class:`~vsrife.formats.DeviceConverter`)."""
    global _tf32_users, _tf32_saved
    if device.type != "cuda":
        yield
        return
    get, set_to, ieee = _conv_fp32()
    with _TF32:
        if _tf32_users == 0:
            _tf32_saved = get()
            set_to(ieee)
        _tf32_users += 1
    try:
        yield
    finally:
        with _TF32:
            _tf32_users -= 1
            if _tf32_users == 0:
                set_to(_tf32_saved)


class Engine:
    """Runs ``net`` on ``device`` for frames of ``convert``'s format and size, padded to ``multiple``, as
    ``options`` say (:class:`EngineOptions`).

    Up to ``workers.count`` batches are worked on at once (VapourSynth asks for frames from several threads,
    and the filter starts the next in-betweens early: :attr:`batches_ahead` of them).
    """

    def __init__(
        self,
        net: IFNet,
        device: torch.device,
        convert: DeviceConverter,
        multiple: int,
        max_cached: int,
        options: EngineOptions | None = None,
    ) -> None:
        self.options = options = (options or EngineOptions()).for_device(device)
        self.device, self.dtype = device, options.dtype
        self.layout = torch.channels_last if options.channels_last else torch.contiguous_format
        with _out_of_memory_as(device, f"out of {device.type.upper()} memory loading the model onto {device}"):
            self.net = net.eval().to(device, self.dtype, memory_format=self.layout)
        # 4.0/4.1 decide on the host, mid-forward, whether to start over: no graph can hold that
        self.graphs = options.cuda_graphs and not net.arch.retries_large_motion
        self.convert = convert
        self.width, self.height = convert.width, convert.height
        self.padding = (0, -self.width % multiple, 0, -self.height % multiple)
        padded = (self.width + self.padding[1], self.height + self.padding[3])
        self.workers = Workers.choose(device, *padded, options)
        stub = options.stub is not None
        self.max_batch = cuda_batch(padded, self.dtype) if device.type == "cuda" or stub else CPU_BATCH
        self._out_of_memory = (
            f"out of {device.type.upper()} memory interpolating {self.width}x{self.height} with "
            f"{self.workers.count} worker(s): try scale=0.5, fp16=True (on CUDA), a lighter model (4.6, or a "
            ".lite one), or fewer frames at once (core.num_threads)"
        )
        frame_bytes = (3 + net.arch.encoder_channels) * padded[0] * padded[1] * 4  # Frame.pixels, float32
        budget = CUDA_CACHE_BYTES if device.type == "cuda" else _available_memory() / CPU_CACHE_SHARE
        self.sources: FutureCache[int, Prepared] = FutureCache(
            cache_frames(frame_bytes, budget, self.workers.count, max_cached)
        )
        if device.type == "cpu" and not stub:
            torch.set_num_threads(self.workers.threads)
        self.stub = options.stub
        self._all_lanes = [self._new_lane() for _ in range(self.workers.count)]
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for lane in self._all_lanes:
            self._free.put(lane)
        pool = self._pool = ThreadPoolExecutor(self.workers.count, thread_name_prefix=WORKER_PREFIX)
        weakref.finalize(self, pool.shutdown, wait=False, cancel_futures=True)
        # batches started before VapourSynth asks for them (its Python callbacks run one at a time)
        self._ahead: FutureCache[tuple, Result] = FutureCache(4 * self.batches_ahead + 4, pool)
        self._steps: dict[tuple, CompiledStep] = {}  # torch.compile'd steps, shared by the lanes
        self._steps_lock = threading.Lock()

    def renewed(self) -> Engine:
        """This engine for a new clip of the same format and size: the network, the lanes (CUDA streams and
        graphs) and the compiled steps shared, the prepared frames and the work ahead new, as frame numbers
        start again with the clip (mpv reloads its script on every seek). The work this engine queued ahead is
        dropped; what runs finishes on its own, into this engine's caches."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        twin = copy.copy(self)
        twin.sources = FutureCache(self.sources.capacity)
        pool = twin._pool = ThreadPoolExecutor(self.workers.count, thread_name_prefix=WORKER_PREFIX)
        weakref.finalize(twin, pool.shutdown, wait=False, cancel_futures=True)
        twin._ahead = FutureCache(self._ahead.capacity, pool)
        return twin

    @property
    def batches_ahead(self) -> int:
        """How many batches the filter keeps started ahead of the frame it is asked for."""
        return self.workers.count * self.options.in_flight

    def _new_lane(self) -> TorchLane | StubLane:
        if self.stub is None:
            return TorchLane(self.device, self.options.in_flight)
        fmt = self.convert.fmt
        shapes = [
            ((self.height >> (fmt.subsampling_h if p else 0), self.width >> (fmt.subsampling_w if p else 0)),
             frames.sample_dtype(fmt))
            for p in range(fmt.num_planes)
        ]  # fmt: skip
        return StubLane(self.stub, self.options.in_flight, shapes)

    def close(self) -> None:
        """Drop the batches started ahead that nobody will ask for and wait for those running: called when
        the filter's clip is freed, so nothing of this engine runs on once its host (vspipe) frees the
        VapourSynth core. From one of its own workers it cannot wait for itself, and does not."""
        own_worker = threading.current_thread().name.startswith(WORKER_PREFIX)
        self._pool.shutdown(wait=not own_worker, cancel_futures=True)

    @property
    def captured_graphs(self) -> int:
        """How many CUDA graphs the workers have captured so far."""
        return sum(len(lane.graphs) for lane in self._all_lanes)

    @contextmanager
    def _lane(self) -> Iterator[TorchLane | StubLane]:
        lane = self._free.get()
        precision = ieee_fp32(self.device) if self.dtype == torch.float32 else nullcontext()
        try:
            with lane.context(), torch.inference_mode(), precision:
                yield lane
        finally:
            self._free.put(lane)

    # --- the host's side ----------------------------------------------------------------------------------

    def start(self, job: Job) -> None:
        """Start ``job``'s batch in the background, so that it is ready when asked for."""
        self._ahead.start(job.key, partial(self._run, job))

    def synthesize(self, job: Job, t: float, into: vs.VideoFrame) -> vs.VideoFrame:
        """Write the in-between at ``t`` of ``job``'s pair into the new frame ``into`` (the one copy from the
        device's result to VapourSynth); waits for the batch if it was started ahead, else computes it.
        The batch is kept until each of its timesteps was asked for once."""
        result = self._ahead.take(job.key, partial(self._run, job), uses=len(job.ts))
        planes = result.wait()
        index = job.ts.index(t)
        return frames.write(into, [plane[index] for plane in planes])

    def _run(self, job: Job) -> Result:
        with _out_of_memory_as(self.device, self._out_of_memory):
            left = self.prepare(job.left, job.left_frame)
            right = self.prepare(job.right, job.right_frame)
            return self.interpolate(left, right, job.ts)

    def prepare(self, index: int, frame: vs.VideoFrame) -> Prepared:
        """The device copy of source frame ``index`` (cached)."""
        return self.sources.get(index, lambda: self._upload(frame))

    # --- the device's side --------------------------------------------------------------------------------

    def _upload(self, frame: vs.VideoFrame) -> Prepared:
        """Prepared eagerly, no CUDA graph: its tensors are the cache's own, no copy out of a graph's outputs
        (its few large kernels gain little from a graph)."""
        with self._lane() as lane:
            planes = lane.upload(frames.plane_list(frame))
            if isinstance(lane, StubLane):
                return Prepared((), None)  # its device work is part of each in-between's time
            return Prepared(self._compiled(("prepare",), self._prepared)(*planes), lane.record())

    def _prepared(self, *planes: torch.Tensor) -> Frame:
        """A frame's planes on the device as the network reads them (padded RGB, encoded). The RGB stays
        float32: the network casts only what its convolutions read, the warps sample the float32 pixels."""
        rgb = self.convert.to_rgb(list(planes))
        image = (F.pad(rgb, self.padding) if any(self.padding) else rgb).contiguous(memory_format=self.layout)
        return self.net.frame(image)

    def interpolate(self, left: Prepared, right: Prepared, ts: tuple[float, ...]) -> Result:
        """The frames at timesteps ``ts`` between two prepared frames, in the clip's own format, on their way
        to the host (:class:`~vsrife.lanes.Result`)."""
        with self._lane() as lane:
            lane.throttle()
            if isinstance(lane, StubLane):
                return lane.interpolate(len(ts))
            lane.use(left.frame, left.ready)
            lane.use(right.frame, right.ready)
            return lane.download(self._batch(lane, left.frame, right.frame, ts))

    def _batch(self, lane: TorchLane, left: Frame, right: Frame, ts: tuple[float, ...]) -> list[torch.Tensor]:
        """The planes of the in-betweens at ``ts``: one forward per size of :func:`batch_sizes`, each part's
        planes copied out before the lane's next forward (a graph's outputs are overwritten by it)."""
        sizes = batch_sizes(len(ts), self.max_batch)
        out: list[torch.Tensor] = []
        start = 0
        for size in sizes:
            inputs = [lane.timesteps(ts[start : start + size], self.dtype), *left, *right]
            planes = self._call(lane, ("interpolate", size), self._in_betweens, inputs)
            if len(sizes) == 1:
                return planes
            out = out or [p.new_empty((len(ts), *p.shape[1:])) for p in planes]
            for whole, part in zip(out, planes, strict=True):
                whole[start : start + size].copy_(part)
            start += size
        return out

    def _call(self, lane: TorchLane, key: tuple, fn, inputs: list[torch.Tensor]):
        """``fn(*inputs)`` on ``lane``: compiled where the options say (and the version allows), from its CUDA
        graph where the engine uses graphs (the graph records the compiled kernels after the warm-up). A
        capture that fails (not for want of memory) turns graphs off, said once, and the work runs eagerly.
        A capture stalls every worker (:class:`~vsrife.lanes.CudaGraph`): each lane captures once per batch
        size it meets, in the first batches of a run."""
        fn = self._compiled(key, fn)
        try:
            return lane.call(key, fn, inputs, self.graphs)
        except CaptureFailed as error:
            if is_out_of_memory(error):
                raise error.__cause__ from None
            if self.graphs:
                self.graphs = False
                print(f"vsrife: CUDA graphs off ({str(error).splitlines()[0]}); running eagerly", file=sys.stderr)
            return fn(*inputs)

    def _compiled(self, key: tuple, fn):
        """``fn`` torch.compile'd for ``key`` (one compiled step per key, shared by the lanes) where
        ``options.compile`` asks; 4.0/4.1's in-betweens stay eager (:func:`vsrife.compiled.compiles`)."""
        if not self.options.compile or (key[0] == "interpolate" and not compiles(self.net.arch)):
            return fn
        with self._steps_lock:
            step = self._steps.get(key)
            if step is None:
                net, fmt = self.net, self.convert.fmt
                identity = (*key, net.arch, net.scale, net.ensemble, fmt.name, self.width, self.height)
                identity += (str(self.dtype), self.options.channels_last)
                step = self._steps[key] = compile_step(fn, name=key[0], key=identity, device=self.device)
            return step

    def _in_betweens(self, ts: torch.Tensor, *frame_tensors: torch.Tensor):
        """The network's frames at timesteps ``ts`` (``[B, 1, 1, 1]``) between two frames (their tensors one
        after the other), as the clip's own planes ``[B, h, w]``: the network's float32 output straight into
        the colour conversion (never rounded to half precision)."""
        half = len(frame_tensors) // 2
        out = self.net(Frame(*frame_tensors[:half]), Frame(*frame_tensors[half:]), ts)
        return self.convert.from_rgb(out[:, :, : self.height, : self.width])


def as_planes(result: Result) -> list[Planes]:
    """A batch's frames, each a list of planes (for tests and tools that look at a whole batch)."""
    planes = result.wait()
    return [[np.asarray(plane[i]) for plane in planes] for i in range(planes[0].shape[0])]
