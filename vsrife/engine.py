"""The device engine: one network on one device, fed from VapourSynth frames.

Each source frame is converted, moved to the device, padded and (4.7+) encoded once, then shared by
every output frame that needs it through a small thread-safe cache.
"""

from __future__ import annotations

import os
import queue
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
from .futures import FutureCache
from .network import IFNet


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


@dataclass(frozen=True)
class Job:
    """An in-between to synthesize: source frames ``left`` and ``right`` (numbers and frames), at ``t``."""

    left: int
    right: int
    t: float
    left_frame: vs.VideoFrame = field(compare=False)
    right_frame: vs.VideoFrame = field(compare=False)

    @property
    def key(self) -> tuple[int, int, float]:
        return self.left, self.right, self.t


@dataclass(frozen=True)
class Prepared:
    """A source frame on the device: padded image ``[1, 3, H, W]`` and encoder features (4.7+)."""

    image: torch.Tensor
    features: torch.Tensor | None


MAX_CPU_WORKERS = 8
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
        cores = cores or len(os.sched_getaffinity(0))
        if device.type == "cuda":
            return cls(CUDA_WORKERS, torch.get_num_threads())
        fits = int(_available_memory() // 2 // (width * height * CPU_BYTES_PER_PIXEL))
        workers = max(1, min(cores, MAX_CPU_WORKERS, fits))
        return cls(workers, max(1, cores // workers))


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
    """One worker's place to run: a CUDA stream (or none on the CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def context(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()

    def finish(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()


class Engine:
    """Runs ``net`` on ``device`` for frames of ``width`` × ``height``, padded to ``multiple``.

    Up to ``lanes.workers`` calls run at once (VapourSynth asks for frames from several threads); each
    call finishes its device work before returning, so cached tensors are complete when shared.
    """

    def __init__(
        self,
        net: IFNet,
        device: torch.device,
        dtype: torch.dtype,
        width: int,
        height: int,
        multiple: int,
        cache_frames: int,
        lanes: Lanes | None = None,
    ) -> None:
        self.net = net.eval().to(device, dtype)
        self.device = device
        self.dtype = dtype
        self.width = width
        self.height = height
        self.padding = (0, -width % multiple, 0, -height % multiple)
        self.sources: FutureCache[int, Prepared] = FutureCache(cache_frames)
        self.lanes = lanes or Lanes.choose(device, width + self.padding[1], height + self.padding[3])
        if device.type == "cpu":
            torch.set_num_threads(self.lanes.threads)
        self._free: queue.SimpleQueue[_Lane] = queue.SimpleQueue()
        for _ in range(self.lanes.workers):
            self._free.put(_Lane(device))
        pool = ThreadPoolExecutor(self.lanes.workers, thread_name_prefix="vsrife")
        weakref.finalize(self, pool.shutdown, wait=False, cancel_futures=True)
        # in-betweens started before VapourSynth asks for them (its Python callbacks run one at a time)
        self._ahead: FutureCache[tuple, np.ndarray] = FutureCache(4 * self.lanes.workers + 4, pool)

    @contextmanager
    def _lane(self) -> Iterator[_Lane]:
        lane = self._free.get()
        try:
            with lane.context(), torch.inference_mode():
                yield lane
                lane.finish()
        finally:
            self._free.put(lane)

    def prepare(self, index: int, frame: vs.VideoFrame) -> Prepared:
        """The device copy of source frame ``index`` (cached)."""
        return self.sources.get(index, lambda: self._upload(frame))

    def _upload(self, frame: vs.VideoFrame) -> Prepared:
        planes = frames.to_array(frame)
        host = torch.from_numpy(planes)
        with self._lane():
            if self.device.type == "cuda":
                host = host.pin_memory()
            image = host.to(self.device, self.dtype, non_blocking=True).unsqueeze(0)
            if any(self.padding):
                image = F.pad(image, self.padding)
            return Prepared(image, self.net.features(image))

    def interpolate(self, left: Prepared, right: Prepared, t: float) -> np.ndarray:
        """The frame at timestep ``t`` (0..1) between two prepared frames, cropped, on the host:
        ``[3, H, W]`` float32 (float16 when computing in fp16)."""
        _, _, h, w = left.image.shape
        with self._lane():
            timestep = torch.full((1, 1, h, w), t, dtype=self.dtype, device=self.device)
            out = self.net(left.image, right.image, timestep, left.features, right.features)
            out = out[0, :, : self.height, : self.width].to("cpu", non_blocking=self.device.type == "cuda")
        return out.numpy()

    def synthesize(self, job: Job) -> np.ndarray:
        """The in-between ``job`` asks for; waits for it if it was started ahead, else computes it."""
        return self._ahead.take(job.key, partial(self._run, job))

    def start(self, job: Job) -> None:
        """Start computing ``job`` in the background, so that it is ready when asked for."""
        self._ahead.start(job.key, partial(self._run, job))

    def _run(self, job: Job) -> np.ndarray:
        try:
            left = self.prepare(job.left, job.left_frame)
            right = self.prepare(job.right, job.right_frame)
            return self.interpolate(left, right, job.t)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not _is_out_of_memory(error):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(
                f"out of {self.device.type.upper()} memory interpolating {self.width}x{self.height} with "
                f"{self.lanes.workers} worker(s): try scale=0.5, fp16 (an RGBH or half-float clip on CUDA), a "
                "lighter model (4.6, or a .lite one), or fewer frames at once (core.num_threads)"
            ) from None
