"""The device engine: one network on one device, fed from VapourSynth frames.

Each source frame is converted, moved to the device, padded and (4.7+) encoded once, then shared by
every output frame that needs it through a small thread-safe cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
import vapoursynth as vs

from .errors import DeviceError
from .network import IFNet

K = TypeVar("K")
V = TypeVar("V")


def resolve_device(device: str | None, device_index: int | None = None) -> torch.device:
    """``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None picks CUDA when available, else the CPU.

    ``device_index`` (HolyWu's parameter) picks the CUDA device when ``device`` names none.
    """
    if device_index is not None and (isinstance(device_index, bool) or not isinstance(device_index, int)):
        raise DeviceError(f"device_index: must be a whole number, not {device_index!r}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str):
        raise DeviceError(f"device: must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    kind, _, index_text = device.strip().lower().partition(":")
    if kind == "cpu" and not index_text:
        return torch.device("cpu")
    if kind != "cuda" or (index_text and not index_text.isdigit()):
        raise DeviceError(f"device: must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device: {device!r} asked for, but CUDA is not available here; use device='cpu'")
    index = int(index_text) if index_text else (device_index or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device: cuda:{index} does not exist; this machine has cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


class OnceCache(Generic[K, V]):
    """A bounded LRU map whose values are computed once, even when many threads ask at the same time."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: OrderedDict[K, Future[V]] = OrderedDict()

    def get(self, key: K, compute: Callable[[], V]) -> V:
        with self._lock:
            future = self._items.get(key)
            owner = future is None
            if owner:
                future = self._items[key] = Future()
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            else:
                self._items.move_to_end(key)
        if owner:
            try:
                future.set_result(compute())
            except BaseException as error:
                future.set_exception(error)
                with self._lock:
                    if self._items.get(key) is future:
                        del self._items[key]
        return future.result()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Prepared:
    """A source frame on the device: padded image ``[1, 3, H, W]`` and encoder features (4.7+)."""

    image: torch.Tensor
    features: torch.Tensor | None


class Engine:
    """Runs ``net`` on ``device`` for frames of ``width`` × ``height``, padded to ``multiple``."""

    def __init__(
        self,
        net: IFNet,
        device: torch.device,
        dtype: torch.dtype,
        width: int,
        height: int,
        multiple: int,
        cache_frames: int,
    ) -> None:
        self.net = net.eval().to(device, dtype)
        self.device = device
        self.dtype = dtype
        self.width = width
        self.height = height
        self.padding = (0, -width % multiple, 0, -height % multiple)
        self.sources: OnceCache[int, Prepared] = OnceCache(cache_frames)
        self._run_lock = threading.Lock()

    def prepare(self, index: int, frame: vs.VideoFrame) -> Prepared:
        """The device copy of source frame ``index`` (cached)."""
        return self.sources.get(index, lambda: self._upload(frame))

    def _upload(self, frame: vs.VideoFrame) -> Prepared:
        planes = np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)])
        image = torch.from_numpy(planes).to(self.device, self.dtype, non_blocking=True).unsqueeze(0)
        if any(self.padding):
            image = F.pad(image, self.padding)
        with self._run_lock, torch.inference_mode():
            features = self.net.features(image)
        return Prepared(image, features)

    def interpolate(self, left: Prepared, right: Prepared, t: float) -> torch.Tensor:
        """The frame at timestep ``t`` (0..1) between two prepared frames, cropped: ``[3, H, W]``."""
        _, _, h, w = left.image.shape
        timestep = torch.full((1, 1, h, w), t, dtype=self.dtype, device=self.device)
        with self._run_lock, torch.inference_mode():
            out = self.net(left.image, right.image, timestep, left.features, right.features)
        return out[0, :, : self.height, : self.width]

    @staticmethod
    def write(image: torch.Tensor, frame: vs.VideoFrame) -> vs.VideoFrame:
        """Copy ``image`` ``[planes, H, W]`` into the writable ``frame``, in the frame's sample type."""
        dtype = np.float16 if frame.format.bits_per_sample == 16 else np.float32
        pixels = image.to("cpu", torch.float16 if dtype is np.float16 else torch.float32).numpy()
        for p in range(frame.format.num_planes):
            np.copyto(np.asarray(frame[p]), pixels[p])
        return frame
