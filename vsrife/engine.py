"""The device engine: one network on one device, fed with the clip's own planes.

Each source frame goes to the device in its own sample type (uint8, uint16, half, float), is converted
there to the network's RGB (:class:`~vsrife.formats.DeviceConverter`), padded and (4.7+) encoded once, and
is shared by every in-between that needs it through a cache sized in bytes. The in-betweens of one pair
(all its timesteps) are one batched forward; the result is converted back to the clip's own format on the
device and only that comes back to the host.

On CUDA each worker has a stream; upload, compute and download are ordered by CUDA events, not by waiting
on the host: the host waits once per batch, for its download, where the frame leaves for VapourSynth.
Pinned host buffers are allocated once per worker and reused. "fp32" means IEEE fp32 (TF32 off for our
convolutions, per call). Each worker records its work (colour conversion, network, encoder) once per
shape as a CUDA graph and replays it: a 1080p forward is ~500 small kernels, and launching them one by one
from Python, not the GPU, set the pace (measured on an H100: 130 forwards/s eager).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
import vapoursynth as vs

from . import frames
from .errors import OutOfMemory
from .formats import DeviceConverter
from .futures import FutureCache
from .network import Frame, IFNet


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error)
    signs = ("out of memory", "can't allocate memory", "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")
    return isinstance(error, torch.cuda.OutOfMemoryError) or any(sign in text for sign in signs)


@contextmanager
def _out_of_memory_as(device: torch.device, message: str) -> Iterator[None]:
    """Running out of ``device``'s memory inside becomes one :class:`OutOfMemory` error saying ``message``
    (the allocator's unused cache given back first); other errors pass as they are."""
    try:
        yield
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        if not _is_out_of_memory(error):
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

    frame: Frame
    ready: torch.cuda.Event | None

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.frame)


Planes = list[np.ndarray]  # one frame's planes in the clip's own sample type
_TORCH_TYPES = {np.dtype(t): getattr(torch, t) for t in ("uint8", "uint16", "float16", "float32")}

MAX_CPU_WORKERS = 8
WORKER_PREFIX = "vsrife-engine"  # names of the engines' worker threads
MAX_KEPT_TIMESTEPS = 256  # timestep tensors each worker keeps on the device
CPU_BYTES_PER_PIXEL = 640  # peak host memory of one 4.26 forward, measured at 1280x768 and 1920x1088
CUDA_WORKERS = 2


@dataclass(frozen=True)
class Lanes:
    """How the work is spread: ``workers`` network calls at once, each with ``threads`` CPU threads."""

    workers: int
    threads: int

    @classmethod
    def choose(cls, device: torch.device, width: int, height: int, cores: int | None = None) -> Lanes:
        """On CUDA two calls overlap (one copies while the other computes). On the CPU one call per core,
        single-threaded, as far as memory allows: measured end to end on 2 cores, 4.26 at 1280x720 runs
        1.27x faster than one call on both cores (its convolutions scale poorly across threads)."""
        cores = cores or cpu_budget()
        if device.type == "cuda":
            return cls(CUDA_WORKERS, torch.get_num_threads())
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


class _Lane:
    """One worker's place to run: a CUDA stream and its pinned host buffers (on the CPU: neither)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._pinned: dict[tuple, tuple[torch.Tensor, torch.cuda.Event | None]] = {}
        self.graphs: dict[tuple, Captured] = {}
        self._timesteps: dict[tuple, torch.Tensor] = {}
        self.pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None  # its graphs run in turn

    def context(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()

    def record(self) -> torch.cuda.Event | None:
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def use(self, prepared: Prepared) -> None:
        """Order this lane after ``prepared`` was made (maybe on another lane) and keep its memory alive."""
        if self.stream is None:
            return
        if prepared.ready is not None:
            self.stream.wait_event(prepared.ready)
        for tensor in prepared.frame:
            tensor.record_stream(self.stream)

    def timesteps(self, ts: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
        """``ts`` as a ``[B, 1, 1, 1]`` device tensor, kept: a copy from pageable host memory waits for the whole
        stream, and a clip's timesteps repeat (2x: always 0.5)."""
        key = (ts, dtype)
        tensor = self._timesteps.get(key)
        if tensor is None:
            if len(self._timesteps) >= MAX_KEPT_TIMESTEPS:
                self._timesteps.clear()
            tensor = torch.tensor(ts, dtype=dtype).view(len(ts), 1, 1, 1).to(self.device)
            self._timesteps[key] = tensor
        return tensor

    def upload(self, planes: Planes) -> list[torch.Tensor]:
        """The planes on the device, in their own sample type (on the CPU, a copy: VapourSynth's frames are
        read-only)."""
        if self.stream is None:
            return [torch.from_numpy(p.copy()) for p in planes]
        out = []
        for i, plane in enumerate(planes):
            key = ("up", i, plane.shape, plane.dtype)
            buffer = self._buffer(key, plane.shape, _TORCH_TYPES[plane.dtype])
            buffer.numpy()[...] = plane  # VapourSynth's memory is read-only: copied, never wrapped
            out.append(buffer.to(self.device, non_blocking=True))
            self._pinned[key] = (buffer, self.record())  # the buffer is free again once this copy is done
        return out

    def download(self, tensors: list[torch.Tensor]) -> Planes:
        """``tensors`` on the host; the one place a batch makes the host wait."""
        if self.stream is None:
            return [t.numpy() for t in tensors]
        buffers = []
        for i, tensor in enumerate(tensors):
            key = ("down", i, tuple(tensor.shape), tensor.dtype)
            buffer = self._buffer(key, tensor.shape, tensor.dtype)
            buffer.copy_(tensor, non_blocking=True)
            buffers.append(buffer)
        done = self.record()
        done.synchronize()
        return [b.numpy().copy() for b in buffers]  # copied out: the buffers serve this lane's next batch

    def _buffer(self, key: tuple, shape, dtype: torch.dtype) -> torch.Tensor:
        buffer, busy = self._pinned.get(key, (None, None))
        if buffer is None:
            buffer = torch.empty(tuple(shape), dtype=dtype, pin_memory=True)
            self._pinned[key] = (buffer, None)
        elif busy is not None:
            busy.synchronize()  # its last copy to the device is long done, almost always
        return buffer


GRAPH_WARMUPS = 2  # eager runs before a capture: cuDNN chooses its kernels and workspaces there
CUDA_GRAPHS = True  # the engine's default on CUDA (bench can measure without)
_CAPTURE = threading.Lock()  # one capture at a time


class Captured:
    """``fn`` recorded once as a CUDA graph on static copies of ``examples``. A call copies its arguments
    into those, replays the graph on the current stream and returns the graph's own output tensors: they
    are overwritten by the next call, so the caller reads them first (in stream order)."""

    def __init__(self, fn, examples: list[torch.Tensor], pool) -> None:
        self.inputs = [t.clone() for t in examples]
        side = torch.cuda.Stream(examples[0].device)  # warm-up and capture off the worker's stream
        side.wait_stream(torch.cuda.current_stream())
        with _CAPTURE:
            with torch.cuda.stream(side):
                for _ in range(GRAPH_WARMUPS):
                    fn(*self.inputs)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: the other workers go on with their own (uncaptured) work meanwhile
            with torch.cuda.graph(self.graph, pool=pool, stream=side, capture_error_mode="thread_local"):
                self.outputs = fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)

    def __call__(self, *tensors: torch.Tensor):
        for static, tensor in zip(self.inputs, tensors, strict=True):
            static.copy_(tensor, non_blocking=True)
        self.graph.replay()
        return self.outputs


def prefers_channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    """Half precision on CUDA: cuDNN's tensor-core kernels work on NHWC, so NCHW costs two transposes per
    convolution (measured on an H100 at 1080p, one frame: 4.26 5.8 -> 5.2 ms, 4.6 4.4 -> 3.8 ms)."""
    return device.type == "cuda" and dtype == torch.float16


_TF32 = threading.Lock()
_tf32_users = 0
_tf32_saved = True


@contextmanager
def ieee_fp32(device: torch.device) -> Iterator[None]:
    """cuDNN convolutions in IEEE fp32 (no TF32) while any worker is inside; the user's setting restored
    when the last one leaves."""
    global _tf32_users, _tf32_saved
    if device.type != "cuda":
        yield
        return
    with _TF32:
        if _tf32_users == 0:
            _tf32_saved = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = False
        _tf32_users += 1
    try:
        yield
    finally:
        with _TF32:
            _tf32_users -= 1
            if _tf32_users == 0:
                torch.backends.cudnn.allow_tf32 = _tf32_saved


CUDA_CACHE_BYTES = 1 << 30  # prepared frames kept on a GPU
CPU_CACHE_SHARE = 8  # on the CPU: at most an eighth of the available memory
MAX_BATCH = 8  # timesteps of one pair per forward, on CUDA
# on the CPU a batch saves no work but holds a worker longer: with a pair's 2-3 in-betweens (25 -> 60) in
# one batch, two workers had only one pair to share, and the render ran 30 % slower
CPU_BATCH = 1


class Engine:
    """Runs ``net`` on ``device`` for frames of ``convert``'s format and size, padded to ``multiple``.

    Up to ``lanes.workers`` batches run at once (VapourSynth asks for frames from several threads, and the
    filter starts the next in-betweens early). ``graphs`` (default: on CUDA, where the version allows)
    replays each worker's work from CUDA graphs; ``channels_last`` (default: fp16 on CUDA) keeps images
    and weights in NHWC.
    """

    def __init__(
        self,
        net: IFNet,
        device: torch.device,
        dtype: torch.dtype,
        convert: DeviceConverter,
        multiple: int,
        max_cached: int,
        lanes: Lanes | None = None,
        graphs: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        self.channels_last = prefers_channels_last(device, dtype) if channels_last is None else channels_last
        self.layout = torch.channels_last if self.channels_last else torch.contiguous_format
        with _out_of_memory_as(device, f"out of {device.type.upper()} memory loading the model onto {device}"):
            self.net = net.eval().to(device, dtype, memory_format=self.layout)
        # 4.0/4.1 decide on the host, mid-forward, whether to start over: no graph can hold that
        capturable = device.type == "cuda" and not net.arch.retries_large_motion
        self.graphs = capturable and (CUDA_GRAPHS if graphs is None else graphs)
        self.device = device
        self.dtype = dtype
        self.convert = convert
        self.width, self.height = convert.width, convert.height
        self.padding = (0, -self.width % multiple, 0, -self.height % multiple)
        padded = (self.width + self.padding[1], self.height + self.padding[3])
        self.lanes = lanes or Lanes.choose(device, *padded)
        self.max_batch = MAX_BATCH if device.type == "cuda" else CPU_BATCH
        self._out_of_memory = (
            f"out of {device.type.upper()} memory interpolating {self.width}x{self.height} with "
            f"{self.lanes.workers} worker(s): try scale=0.5, fp16=True (on CUDA), a lighter model (4.6, or a "
            ".lite one), or fewer frames at once (core.num_threads)"
        )
        self.sources: FutureCache[int, Prepared] = FutureCache(self._cache_frames(padded, max_cached))
        if device.type == "cpu":
            torch.set_num_threads(self.lanes.threads)
        self._all_lanes = [_Lane(device) for _ in range(self.lanes.workers)]
        self._free: queue.SimpleQueue[_Lane] = queue.SimpleQueue()
        for lane in self._all_lanes:
            self._free.put(lane)
        pool = self._pool = ThreadPoolExecutor(self.lanes.workers, thread_name_prefix=WORKER_PREFIX)
        weakref.finalize(self, pool.shutdown, wait=False, cancel_futures=True)
        # batches started before VapourSynth asks for them (its Python callbacks run one at a time)
        self._ahead: FutureCache[tuple, list[Planes]] = FutureCache(4 * self.lanes.workers + 4, pool)

    def _cache_frames(self, padded: tuple[int, int], most: int) -> int:
        """How many prepared frames the cache keeps: what the byte budget allows, at least what the workers
        have in hand, at most what the filter can still ask for (``most``)."""
        channels = 3 + self.net.arch.encoder_channels  # RGB and features, float32 (Frame.pixels)
        frame_bytes = channels * padded[0] * padded[1] * 4
        budget = CUDA_CACHE_BYTES if self.device.type == "cuda" else _available_memory() / CPU_CACHE_SHARE
        return int(max(2 * self.lanes.workers + 2, min(most, budget // frame_bytes)))

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
    def _lane(self) -> Iterator[_Lane]:
        lane = self._free.get()
        precision = ieee_fp32(self.device) if self.dtype == torch.float32 else nullcontext()
        try:
            with lane.context(), torch.inference_mode(), precision:
                yield lane
        finally:
            self._free.put(lane)

    def prepare(self, index: int, frame: vs.VideoFrame) -> Prepared:
        """The device copy of source frame ``index`` (cached)."""
        return self.sources.get(index, lambda: self._upload(frame))

    def _upload(self, frame: vs.VideoFrame) -> Prepared:
        with self._lane() as lane:
            planes = lane.upload(frames.plane_list(frame))
            made = self._call(lane, ("prepare",), self._prepared, planes)
            if self.graphs:  # the graph's outputs serve its next replay: the cache keeps copies
                made = Frame(*(t.clone() for t in made))
            return Prepared(made, lane.record())

    def _prepared(self, *planes: torch.Tensor) -> Frame:
        """A frame's planes on the device as the network reads them (padded RGB, encoded)."""
        rgb = self.convert.to_rgb(list(planes)).to(self.dtype)
        image = (F.pad(rgb, self.padding) if any(self.padding) else rgb).contiguous(memory_format=self.layout)
        return self.net.frame(image)

    def interpolate(self, left: Prepared, right: Prepared, ts: tuple[float, ...]) -> list[Planes]:
        """The frames at timesteps ``ts`` between two prepared frames, in the clip's own format, on the host."""
        batch = len(ts)
        with self._lane() as lane:
            lane.use(left)
            lane.use(right)
            inputs = [lane.timesteps(ts, self.dtype), *left.frame, *right.frame]
            planes = lane.download(self._call(lane, ("interpolate", batch), self._in_betweens, inputs))
        return [[plane[i] for plane in planes] for i in range(batch)]

    def _in_betweens(self, ts: torch.Tensor, *frames: torch.Tensor):
        """The network's frames at timesteps ``ts`` (``[B, 1, 1, 1]``) between two frames (their tensors one
        after the other), as the clip's own planes ``[B, h, w]``."""
        half = len(frames) // 2
        out = self.net(Frame(*frames[:half]), Frame(*frames[half:]), ts)
        return self.convert.from_rgb(out[:, :, : self.height, : self.width])

    def _call(self, lane: _Lane, key: tuple, fn, inputs: list[torch.Tensor]):
        """``fn(*inputs)`` on ``lane``: replayed from the lane's CUDA graph for ``key`` where the engine uses
        graphs (captured on first use), else run as is. A capture that fails turns graphs off, said once."""
        if not self.graphs:
            return fn(*inputs)
        graph = lane.graphs.get(key)
        if graph is None:
            try:
                graph = lane.graphs[key] = Captured(fn, inputs, lane.pool)
            except RuntimeError as error:
                if _is_out_of_memory(error):
                    raise
                self.graphs = False
                print(f"vsrife: CUDA graphs off ({str(error).splitlines()[0]}); running eagerly", file=sys.stderr)
                return fn(*inputs)
        return graph(*inputs)

    def synthesize(self, job: Job, t: float) -> Planes:
        """The in-between at ``t`` of ``job``'s pair; waits for the batch if it was started ahead, else
        computes it. The batch is kept until each of its timesteps was asked for once."""
        images = self._ahead.take(job.key, partial(self._run, job), uses=len(job.ts))
        return images[job.ts.index(t)]

    def start(self, job: Job) -> None:
        """Start computing ``job``'s batch in the background, so that it is ready when asked for."""
        self._ahead.start(job.key, partial(self._run, job))

    def _run(self, job: Job) -> list[Planes]:
        with _out_of_memory_as(self.device, self._out_of_memory):
            left = self.prepare(job.left, job.left_frame)
            right = self.prepare(job.right, job.right_frame)
            return self.interpolate(left, right, job.ts)
