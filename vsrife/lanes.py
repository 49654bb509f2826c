"""Where the engine's batches run: a *lane* is one worker's place on the compute device.

On CUDA a lane is a stream of its own: no other live lane of the process has it (PyTorch hands out its
streams round-robin from pools of 32; :func:`own_stream`). A source frame's planes are copied once from
VapourSynth's memory into pinned host memory and sent to the device without waiting; a batch's results come
back into pinned memory, and the host waits for them (a blocking CUDA event: the waiting thread sleeps)
only when its frames are wanted, so each lane keeps up to ``in_flight`` batches queued on the GPU while the
host stages the next ones. Pinned buffers come from PyTorch's caching host allocator, which reuses a buffer
only once the copies that used it are done. Each lane records its in-between step once per batch size as a
CUDA graph, on its own stream, and replays it (:class:`CudaGraph`); its graphs read one set of static input
tensors, into which a batch's frames are copied unless they are there already.

On the CPU a lane runs a batch to its end on the worker's own thread: the CPU is the device.

:class:`StubDevice` stands in for a GPU in the benchmark (``bench --stub-network MS``): one queue where
each in-between takes MS milliseconds, lanes taking turns as kernels on one GPU do, the host doing all it
does on CUDA. It measures the host side anywhere; it never stands in for the network in a test.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import weakref
from contextlib import nullcontext
from typing import Protocol

import numpy as np
import torch

Planes = list[np.ndarray]  # one frame's planes in the clip's own sample type
TORCH_TYPES = {np.dtype(t): getattr(torch, t) for t in ("uint8", "uint16", "float16", "float32")}
GRAPH_WARMUPS = 2  # runs before a capture: cuDNN chooses its kernels there, a compiled step compiles (its 2nd call)
MAX_KEPT_TIMESTEPS = 256  # timestep tensors each lane keeps on the device
POOL_STREAMS = 32  # streams in each of PyTorch's per-priority pools (c10/cuda/CUDAStream.cpp: kStreamsPerPool)
POOL_PRIORITIES = 4  # its pools, one per priority from 0 up (max_compile_time_stream_priorities)
_CAPTURE = threading.Lock()  # one capture at a time in the process
_STREAMS = threading.RLock()  # a lane collected while a stream is chosen releases its own in the same thread
_held_streams: set[tuple[int, int]] = set()  # (device index, cudaStream_t) of the live lanes


def own_stream(device: torch.device) -> torch.cuda.Stream:
    """A CUDA stream no other live lane holds: PyTorch gives its streams out round-robin from a pool of 32
    per priority, so once 32 were asked for, a new one may be a busy lane's, and a capture on it would
    record that lane's work (or break). Tries the pool of the default priority first, then the higher ones;
    the stream is held until :func:`release_stream`."""
    with _STREAMS:
        for priority in range(POOL_PRIORITIES):
            for _ in range(POOL_STREAMS):
                stream = torch.cuda.Stream(device, priority=-priority)
                key = (stream.device.index, stream.cuda_stream)
                if key not in _held_streams:
                    _held_streams.add(key)
                    return stream
    raise RuntimeError(f"all {POOL_PRIORITIES * POOL_STREAMS} of PyTorch's CUDA streams are held by vsrife's workers")


def release_stream(key: tuple[int, int]) -> None:
    with _STREAMS:
        _held_streams.discard(key)


class Result(Protocol):
    """A batch's planes ``[B, h, w]`` each, once the device has made them."""

    def wait(self) -> Planes: ...


class Done:
    """A result the worker has already made (the CPU computes in the worker's thread)."""

    def __init__(self, planes: Planes) -> None:
        self.planes = planes

    def wait(self) -> Planes:
        return self.planes


class Arriving:
    """Pinned host buffers a CUDA stream is filling; ``wait`` blocks until the copy into them is done."""

    def __init__(self, buffers: list[torch.Tensor], done: torch.cuda.Event) -> None:
        self.buffers, self.done = buffers, done

    def wait(self) -> Planes:
        self.done.synchronize()
        return [b.numpy() for b in self.buffers]


class TorchLane:
    """One worker's CUDA stream (none on the CPU), its CUDA graphs, their static inputs and its kept timestep
    tensors."""

    def __init__(self, device: torch.device, in_flight: int) -> None:
        self.device = device
        self.stream = own_stream(device) if device.type == "cuda" else None
        if self.stream is not None:
            weakref.finalize(self, release_stream, (self.stream.device.index, self.stream.cuda_stream))
        self.graphs: dict[tuple, CudaGraph] = {}
        self._statics: dict[tuple, tuple[torch.Tensor, weakref.ref | None]] = {}
        self._timesteps: dict[tuple, torch.Tensor] = {}
        self._queued: collections.deque[torch.cuda.Event] = collections.deque()
        self.in_flight = in_flight
        self.pool = torch.cuda.graph_pool_handle() if self.stream is not None else None  # its graphs run in turn

    def context(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()

    def record(self) -> torch.cuda.Event | None:
        """An event after this lane's work so far; blocking: a host thread waiting for it sleeps (the default
        spins, a core per waiting thread)."""
        if self.stream is None:
            return None
        event = torch.cuda.Event(blocking=True)
        event.record(self.stream)
        return event

    def throttle(self) -> None:
        """Before a new batch: at most ``in_flight`` of this lane's batches queued on the device."""
        while len(self._queued) >= self.in_flight:
            self._queued.popleft().synchronize()

    def use(self, tensors: tuple[torch.Tensor, ...], ready: torch.cuda.Event | None) -> None:
        """Order this lane after ``tensors`` were made (maybe on another lane) and keep their memory alive."""
        if self.stream is None:
            return
        if ready is not None:
            self.stream.wait_event(ready)
        for tensor in tensors:
            tensor.record_stream(self.stream)

    def timesteps(self, ts: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
        """``ts`` as a ``[B, 1, 1, 1]`` device tensor, kept (a clip's timesteps repeat: 2x, always 0.5). A new
        one goes through pinned memory without waiting: a copy from pageable memory waits for the stream,
        batches in flight included."""
        key = (ts, dtype)
        tensor = self._timesteps.get(key)
        if tensor is None:
            if len(self._timesteps) >= MAX_KEPT_TIMESTEPS:
                self._timesteps.clear()
            staged = torch.tensor(ts, dtype=dtype).view(len(ts), 1, 1, 1)
            if self.stream is not None:
                staged = staged.pin_memory().to(self.device, non_blocking=True)
            tensor = self._timesteps[key] = staged
        return tensor

    def upload(self, planes: Planes) -> list[torch.Tensor]:
        """The planes on the device in their own sample type: copied once from VapourSynth's (read-only)
        memory, into pinned memory on CUDA, and sent without waiting."""
        if self.stream is None:
            return [torch.from_numpy(p.copy()) for p in planes]
        out = []
        for plane in planes:
            pinned = torch.empty(plane.shape, dtype=TORCH_TYPES[plane.dtype], pin_memory=True)
            np.copyto(pinned.numpy(), plane)
            out.append(pinned.to(self.device, non_blocking=True))
        return out

    def download(self, tensors: list[torch.Tensor]) -> Result:
        """``tensors`` on their way to the host. On CUDA the host does not wait here: it waits in
        :meth:`Arriving.wait`, when the frames are wanted."""
        if self.stream is None:
            return Done([t.numpy() for t in tensors])
        buffers = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for buffer, tensor in zip(buffers, tensors, strict=True):
            buffer.copy_(tensor, non_blocking=True)
        done = self.record()
        self._queued.append(done)
        return Arriving(buffers, done)

    def call(self, key: tuple, fn, inputs: list[torch.Tensor], graphs: bool):
        """``fn(*inputs)``: replayed from this lane's CUDA graph for ``key`` where ``graphs`` (captured on first
        use; :class:`CaptureFailed` if that fails), else run as it is. The graph's outputs are overwritten by
        the lane's next replay: read them first (in stream order)."""
        if not graphs:
            return fn(*inputs)
        statics = [self._static(position, tensor) for position, tensor in enumerate(inputs)]
        graph = self.graphs.get(key)
        if graph is None:
            try:
                graph = self.graphs[key] = CudaGraph(fn, statics, self.pool, self.stream)
            except RuntimeError as error:
                raise CaptureFailed(str(error)) from error
        return graph.replay()

    def _static(self, position: int, tensor: torch.Tensor) -> torch.Tensor:
        """The static input the lane's graphs read at ``position`` for tensors like ``tensor`` (every graph of
        the lane reads the same ones: a batch size's own graph needs no frames of its own), holding
        ``tensor``: copied in unless it holds it already (the frames of the pair before, or of another part
        of the same batch)."""
        key = (position, tuple(tensor.shape), tensor.dtype, tensor.stride())
        static, holds = self._statics.get(key, (None, None))
        if static is None:
            static = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=tensor.device)
        if holds is None or holds() is not tensor:  # the tensors given are never changed in place
            static.copy_(tensor, non_blocking=True)
            self._statics[key] = (static, weakref.ref(tensor))
        return static


class CaptureFailed(RuntimeError):
    """Recording a CUDA graph failed (the work itself may run eagerly)."""


class CudaGraph:
    """``fn`` recorded once as a CUDA graph on ``stream`` (warm-ups there too), reading the static tensors
    ``inputs`` the caller fills; :meth:`replay` runs it on that stream and returns the graph's own output
    tensors. Capturing synchronizes the device (every lane waits), empties the caching allocators and runs
    ``fn`` twice first: the engine captures once per lane and batch size (:func:`vsrife.engine.batch_sizes`),
    in the first batches of a run."""

    def __init__(self, fn, inputs: list[torch.Tensor], pool, stream: torch.cuda.Stream) -> None:
        self.stream = stream
        with _CAPTURE, torch.cuda.stream(stream):
            for _ in range(GRAPH_WARMUPS):
                fn(*inputs)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: the other workers go on with their own (uncaptured) work meanwhile
            with torch.cuda.graph(self.graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
                self.outputs = fn(*inputs)

    def replay(self):
        with torch.cuda.stream(self.stream):
            self.graph.replay()
        return self.outputs


def replayed(fn, examples: list[torch.Tensor]):
    """``fn`` as a callable replaying its CUDA graph, its arguments first copied into static copies of
    ``examples``, ordered with the caller's stream both ways (for the benchmark and the probe, which run one
    graph alone: captures need a stream other than the default one)."""
    stream = torch.cuda.Stream(examples[0].device)
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        inputs = [t.clone() for t in examples]
    graph = CudaGraph(fn, inputs, None, stream)

    def call(*tensors: torch.Tensor):
        caller = torch.cuda.current_stream()
        stream.wait_stream(caller)
        with torch.cuda.stream(stream):
            for static, tensor in zip(inputs, tensors, strict=True):
                static.copy_(tensor, non_blocking=True)
            outputs = graph.replay()
        caller.wait_stream(stream)
        return outputs

    return call


# --- the stand-in device ---------------------------------------------------------------------------------


class StubDevice:
    """One device queue: each item keeps it busy for its seconds, in the order given; a waiting host thread
    holds no Python lock and not the GIL. ``busy_seconds``: the device's time spent so far."""

    def __init__(self, ms_per_frame: float) -> None:
        self.seconds_per_frame = ms_per_frame / 1000
        self.busy_seconds = 0.0
        self._items: queue.SimpleQueue[tuple[float, threading.Event]] = queue.SimpleQueue()
        self._free_at = 0.0
        threading.Thread(target=self._work, daemon=True, name="vsrife-stub-device").start()

    def submit(self, frames: int) -> threading.Event:
        """Queue ``frames`` in-betweens' work; the event is set when it is done."""
        done = threading.Event()
        self._items.put((frames * self.seconds_per_frame, done))
        return done

    def _work(self) -> None:
        while True:
            seconds, done = self._items.get()
            # the device's own clock: an item starts when the one before ends (sleep's lateness is not its time)
            self._free_at = max(self._free_at, time.perf_counter()) + seconds
            self.busy_seconds += seconds
            while (left := self._free_at - time.perf_counter()) > 0:
                time.sleep(left)
            done.set()


class Staged:
    """The stub's result: planes of the right shape, there once the device queue got to them."""

    def __init__(self, planes: Planes, done: threading.Event) -> None:
        self.planes, self.done = planes, done

    def wait(self) -> Planes:
        self.done.wait()
        return self.planes


class StubLane:
    """A lane on the :class:`StubDevice`: the host's part of CUDA's work — the staging copy of each source
    frame into host memory, the queueing, the throttle to ``in_flight`` batches — with the device's part
    (upload, colour conversion, network, download) a wait in the device queue."""

    RESULTS_KEPT = 64  # output buffers each lane cycles through (their contents mean nothing)

    def __init__(self, device: StubDevice, in_flight: int, shapes: list[tuple[tuple[int, int], np.dtype]]) -> None:
        self.device = device
        self.in_flight = in_flight
        self.shapes = shapes
        self._queued: collections.deque[threading.Event] = collections.deque()
        self.graphs: dict[tuple, object] = {}
        # reused, as CUDA's caching host allocator reuses pinned memory: no new pages to touch per frame
        self._staging: dict[tuple, np.ndarray] = {}
        self._results: dict[int, list[Planes]] = {}
        self._next = 0

    def context(self):
        return nullcontext()

    def throttle(self) -> None:
        while len(self._queued) >= self.in_flight:
            self._queued.popleft().wait()

    def upload(self, planes: Planes) -> Planes:
        staged = []
        for i, plane in enumerate(planes):
            key = (i, plane.shape, plane.dtype)
            target = self._staging.get(key)
            if target is None:
                target = self._staging[key] = np.empty(plane.shape, plane.dtype)
            np.copyto(target, plane)  # VapourSynth's memory into staging memory, as into pinned memory on CUDA
            staged.append(target)
        return staged

    def interpolate(self, batch: int) -> Result:
        done = self.device.submit(batch)
        self._queued.append(done)
        kept = self._results.setdefault(batch, [])
        if len(kept) < self.RESULTS_KEPT:
            kept.append([np.empty((batch, *shape), dtype) for shape, dtype in self.shapes])
        self._next += 1
        return Staged(kept[self._next % len(kept)], done)
