"""Bytes one RIFE forward moves: every aten op's reads and writes, counted on PyTorch's ``meta`` device.

    python tools/traffic.py --model 4.26 --size 1920x1080 --dtype fp16 --layout nhwc [--batch 1] [--per-op]

The network is built on ``meta`` (shapes, dtypes and strides, no data, no device) and run as the engine
runs it: the per-frame step (``IFNet.frame``: clamp, encoder features, the first block's input, made once
per source frame) and one in-between forward at the padded size, counted apart. A ``TorchDispatchMode``
sees each aten op and counts the bytes of the
tensors it reads (each distinct input view once) and writes (its outputs; an in-place op's output is its
input, written). Views, reshapes and other metadata ops move nothing and count 0; a tensor broadcast by
``expand`` is counted once, not per repeat (its stride-0 dimensions). This is a model of memory traffic,
not a measurement: caches, fused kernels and cuDNN's workspaces are not in it. Two copies cuDNN makes
inside a convolution are reported apart, as estimates: of an input not in the weights' layout, and in
NHWC half precision of an input whose channels are not a multiple of 8, into a zero-padded buffer.
Both are counted after one uncounted run, as the engine's later calls run after its first. Values read on
the host (4.0/4.1's large-motion check) read 0 on meta: their count is of the first schedule, no retry.

It also counts what the engine holds on a GPU (``Live``: the bytes of the tensors each op makes, while
they live): the peak of the in-between step (forward and colour conversion, at the engine's batch size)
and of the prepare step, and from them and the engine's own sizing the device memory a render takes by
design; and the copies the engine makes besides the steps (a pair's frames into its CUDA graph's inputs).
"""

from __future__ import annotations

import argparse
import sys
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import vapoursynth as vs
from torch._prims_common import suggest_memory_format
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsrife import engine as engine_module
from vsrife.formats import Colour, DeviceConverter, Matrix
from vsrife.network import Frame, IFNet
from vsrife.variants import MODELS, architecture

aten = torch.ops.aten
# no data moves: allocation, aliasing and bookkeeping
FREE_OPS = {
    aten.empty,
    aten.empty_like,
    aten.empty_strided,
    aten.new_empty,
    aten.new_empty_strided,
    aten._unsafe_view,
    aten.lift_fresh,
    aten.resize_,
    aten.set_,
}
OVERWRITTEN_FIRST = {aten.copy_, aten.fill_, aten.zero_}  # in-place ops that never read their own ``self``
CUDNN_CHANNEL_MULTIPLE = 8  # NHWC fp16 tensor-core kernels pad channels to this
KINDS = (  # summed up in the report
    ("grid_samplers", ("grid_sampler_2d",)),
    ("interpolations", ("upsample_bilinear2d",)),
    ("cats", ("cat",)),
    ("convolutions", ("convolution",)),
)


@dataclass(frozen=True)
class Op:
    """One aten op call: what it read and wrote, in bytes."""

    name: str
    read: int
    written: int
    cast: bool = False
    shapes: str = ""

    @property
    def bytes(self) -> int:
        return self.read + self.written


@dataclass
class Traffic:
    """The ops of one counted run, in order, and the copies cuDNN makes inside convolutions (estimates, not
    among the ops: meta runs no cuDNN)."""

    ops: list[Op] = field(default_factory=list)
    hidden: Counter = field(default_factory=Counter)  # what -> bytes
    hidden_calls: Counter = field(default_factory=Counter)

    @property
    def bytes(self) -> int:
        return sum(op.bytes for op in self.ops)

    def by_kind(self) -> list[tuple[str, int, int]]:
        """(op name, calls, bytes) for every op kind that moved memory, most bytes first."""
        calls, moved = Counter(), Counter()
        for op in self.ops:
            calls[op.name] += 1
            moved[op.name] += op.bytes
        return sorted(((name, calls[name], moved[name]) for name in moved if moved[name]), key=lambda k: -k[2])

    def count(self, *names: str) -> int:
        return sum(op.name in names for op in self.ops)

    def moved(self, *names: str) -> int:
        return sum(op.bytes for op in self.ops if op.name in names)

    @property
    def casts(self) -> int:
        return sum(op.cast for op in self.ops)

    @property
    def cast_bytes(self) -> int:
        return sum(op.bytes for op in self.ops if op.cast)


def tensor_bytes(t: torch.Tensor) -> int:
    """The bytes ``t`` spans: its elements, a broadcast (stride-0) dimension counted once."""
    elements = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        elements *= size if stride else 1
    return elements * t.element_size()


def _view_key(t: torch.Tensor) -> tuple:
    return StorageWeakRef(t.untyped_storage()).cdata, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype


def _distinct(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    seen: dict[tuple, torch.Tensor] = {}
    for t in tensors:
        seen.setdefault(_view_key(t), t)
    return list(seen.values())


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _aliases(out, inputs: list[torch.Tensor]) -> bool:
    """Whether every output shares an input's storage (``reshape``, ``to`` or ``contiguous`` may copy)."""
    storages = {StorageWeakRef(t.untyped_storage()).cdata for t in inputs}
    return all(StorageWeakRef(t.untyped_storage()).cdata in storages for t in _tensors(out))


def _is_cast(func, args: tuple, out: list[torch.Tensor]) -> bool:
    packet = func.overloadpacket
    if packet is aten._to_copy:
        return out[0].dtype != args[0].dtype
    if packet is aten.copy_:
        return args[0].dtype != args[1].dtype
    return False


class Counting(TorchDispatchMode):
    """Records every aten op run inside it into ``traffic``."""

    def __init__(self, traffic: Traffic) -> None:
        super().__init__()
        self.traffic = traffic

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:  # a value read on the host: meta has none; say 0
            return 0
        out = func(*args, **kwargs)
        if func.overloadpacket is aten.convolution:
            out = self._as_cudnn(args, out)
        inputs = _tensors((args, kwargs))
        if func.overloadpacket in FREE_OPS or (func.is_view and _aliases(out, inputs)):
            return out
        if func.overloadpacket in OVERWRITTEN_FIRST:
            inputs = inputs[1:]
        outputs = _distinct(_tensors(out))
        read = sum(tensor_bytes(t) for t in _distinct(inputs))
        written = sum(tensor_bytes(t) for t in outputs)
        shapes = " ".join("x".join(map(str, t.shape)) for t in inputs)
        name = func.overloadpacket.__name__
        self.traffic.ops.append(Op(name, read, written, _is_cast(func, args, outputs), shapes))
        return out

    def _as_cudnn(self, args: tuple, out: torch.Tensor) -> torch.Tensor:
        """``out`` in the layout cuDNN writes (meta's convolution always writes NCHW); the copies cuDNN makes
        of the input: into that layout, and in NHWC half precision into channels padded to a multiple of 8."""
        image, weight, transposed, groups = args[0], args[1], args[6], args[8]
        if image.dim() != 4:
            return out
        nhwc = torch.channels_last in (suggest_memory_format(image), suggest_memory_format(weight))
        layout = torch.channels_last if nhwc else torch.contiguous_format
        if not image.is_contiguous(memory_format=layout):
            self._hidden("convolution input to the weights' layout", 2 * tensor_bytes(image))
        channels = weight.shape[0] if transposed else weight.shape[1] * groups
        if nhwc and groups == 1 and image.dtype == torch.float16 and channels % CUDNN_CHANNEL_MULTIPLE:
            padded = -(-channels // CUDNN_CHANNEL_MULTIPLE) * CUDNN_CHANNEL_MULTIPLE
            self._hidden("cuDNN channel padding (NHWC fp16)", tensor_bytes(image) * (channels + padded) // channels)
        return out.contiguous(memory_format=layout)

    def _hidden(self, what: str, moved: int) -> None:
        self.traffic.hidden[what] += moved
        self.traffic.hidden_calls[what] += 1


class Live(TorchDispatchMode):
    """The bytes of the tensors the ops run inside make, while they live (views and in-place results count
    once, with what they alias; tensors made before it, weights and inputs, not at all): ``peak`` is the
    most at once."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._references: Counter = Counter()  # storage -> tensors alive on it
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            return 0
        out = func(*args, **kwargs)
        existing = {_storage(t) for t in _tensors((args, kwargs))} - set(self._sizes)
        for tensor in _tensors(out):
            key = _storage(tensor)
            if key in existing:
                continue  # a view of memory made before
            if key not in self._sizes:
                self._sizes[key] = tensor.untyped_storage().nbytes()
                self.live += self._sizes[key]
                self.peak = max(self.peak, self.live)
            self._references[key] += 1
            weakref.finalize(tensor, self._dropped, key)
        return out

    def _dropped(self, key: int) -> None:
        self._references[key] -= 1
        if not self._references[key]:
            del self._references[key]
            self.live -= self._sizes.pop(key)


def _storage(t: torch.Tensor) -> int:
    return StorageWeakRef(t.untyped_storage()).cdata


@dataclass(frozen=True)
class Setup:
    model: str = "4.26"
    width: int = 1920
    height: int = 1080
    dtype: torch.dtype = torch.float16
    channels_last: bool = True
    batch: int = 1
    scale: float = 1.0
    ensemble: bool = False


def meta_network(setup: Setup) -> IFNet:
    """The variant's network on ``meta``, in the dtype and layout the engine moves it to."""
    arch = architecture(setup.model)
    with torch.device("meta"):
        net = IFNet(arch, setup.scale, setup.ensemble)
    layout = torch.channels_last if setup.channels_last else torch.contiguous_format
    return net.eval().to(dtype=setup.dtype, memory_format=layout)


def padded_size(setup: Setup) -> tuple[int, int]:
    multiple = architecture(setup.model).size_multiple(setup.scale)
    return setup.width + -setup.width % multiple, setup.height + -setup.height % multiple


def count(setup: Setup) -> tuple[Traffic, Traffic]:
    """The traffic of the per-frame step (one source frame) and of one in-between forward (``batch``
    timesteps of one pair), both as the engine runs them."""
    net = meta_network(setup)
    width, height = padded_size(setup)
    layout = torch.channels_last if setup.channels_last else torch.contiguous_format
    # float32, as the engine's colour conversion makes it: the network casts what its convolutions read
    image = torch.empty(1, 3, height, width, device="meta").contiguous(memory_format=layout)
    per_frame, forward = Traffic(), Traffic()
    # no_grad, not inference_mode: under inference_mode the mode would see composite ops (``conv2d``, ``to``)
    # before they decompose into the ops that run (``convolution``, ``_to_copy``)
    with torch.no_grad():
        with Counting(Traffic()):  # the uncounted run (in the mode all the same: it answers 4.0's .item())
            net.frame(image)
        with Counting(per_frame):
            frame0 = net.frame(image)
        frame1 = Frame(*(t.clone() for t in frame0))
        timesteps = torch.empty(setup.batch, 1, 1, 1, device="meta", dtype=setup.dtype)
        with Counting(Traffic()):
            net(frame0, frame1, timesteps)
        with Counting(forward):
            net(frame0, frame1, timesteps)  # as Engine._in_betweens calls it (without the colour conversion)
    return per_frame, forward


@dataclass(frozen=True)
class Memory:
    """What a render holds on a GPU by design, in bytes (see :func:`device_memory`)."""

    workers: int
    batch: int
    weights: int
    frames_cached: int
    frame: int
    forward: int
    graph_inputs: int
    prepare: int

    @property
    def per_worker(self) -> int:
        return self.forward + self.graph_inputs + self.prepare

    @property
    def total(self) -> int:
        return self.weights + self.frames_cached * self.frame + self.workers * self.per_worker


def meta_engine(setup: Setup, fmt: int = vs.YUV420P8) -> engine_module.Engine:
    """The engine on ``meta`` for a ``fmt`` clip of the setup's size, its steps as they run on a GPU."""
    arch = architecture(setup.model)
    colour = Colour(Matrix.MATRIX_BT709 if vs.core.get_video_format(fmt).color_family == vs.YUV else None, True)
    meta = torch.device("meta")
    convert = DeviceConverter(vs.core.get_video_format(fmt), setup.width, setup.height, colour, meta)
    options = engine_module.EngineOptions(workers=1, dtype=setup.dtype, channels_last=setup.channels_last)
    return engine_module.Engine(meta_network(setup), meta, convert, arch.size_multiple(setup.scale), 2, options)


def step_peaks(setup: Setup, batch: int) -> tuple[Frame, int, int, int]:
    """The engine's two steps on ``meta`` (a YUV420P8 clip of the setup's size): a prepared frame, the peak
    bytes of preparing one, the peak of the in-between step (forward and colour conversion) for ``batch``
    timesteps, and the weights' bytes."""
    engine = meta_engine(setup)
    fmt = engine.convert.fmt
    planes = [
        torch.empty(setup.height >> (fmt.subsampling_h if p else 0), setup.width >> (fmt.subsampling_w if p else 0),
                    dtype=torch.uint8, device="meta")
        for p in range(fmt.num_planes)
    ]  # fmt: skip
    timesteps = torch.empty(batch, 1, 1, 1, dtype=setup.dtype, device="meta")
    prepare, step = Live(), Live()
    with torch.no_grad():
        with Counting(Traffic()):  # the uncounted runs: grids and sampling points are built once
            made = engine._prepared(*planes)
            engine._in_betweens(timesteps, *made, *made)
        with prepare:
            frame = engine._prepared(*planes)
        with step:
            engine._in_betweens(timesteps, *frame, *frame)
    weights = sum(p.numel() * p.element_size() for p in engine.net.parameters())
    return frame, prepare.peak, step.peak, weights


def device_memory(setup: Setup, workers: int = engine_module.CUDA_WORKERS) -> tuple[Memory, Traffic]:
    """The device memory of a render of ``setup``'s size on CUDA with ``workers`` workers, by design: the
    weights; the prepared frames the cache keeps (as many as its budget holds); and per worker the peak of
    its largest in-between step (its CUDA graphs' memory), their static inputs (both frames and the
    timesteps) and the peak of a frame being prepared (made eagerly: its tensors are the cache's). Also the
    copies of a batch whose frames the worker's graphs do not hold yet (the graphs read copies of them).
    Frames of batches in flight stay in the cache: it keeps more than the workers' batches in flight hold."""
    batch = engine_module.cuda_batch(padded_size(setup), setup.dtype)
    frame, prepare, step, weights = step_peaks(setup, batch)
    timesteps = torch.empty(batch, 1, 1, 1, dtype=setup.dtype, device="meta")
    copies = Traffic()
    with torch.no_grad(), Counting(copies):
        for tensor in (timesteps, *frame, *frame):
            torch.empty_like(tensor).copy_(tensor)
    frame_bytes = sum(t.untyped_storage().nbytes() for t in frame)
    cached = engine_module.cache_frames(frame_bytes, engine_module.CUDA_CACHE_BYTES, workers, 10**6)
    inputs = timesteps.untyped_storage().nbytes() + 2 * frame_bytes
    return Memory(workers, batch, weights, cached, frame_bytes, step, inputs, prepare), copies


def memory_report(memory: Memory, copies: Traffic) -> str:
    return "\n".join(
        [
            f"device memory on CUDA by design: {_gb(memory.total)} = weights {_gb(memory.weights)} + "
            f"{memory.frames_cached} prepared frames x {_gb(memory.frame)} + {memory.workers} workers x "
            f"({_gb(memory.forward)} in-between step of {memory.batch} + {_gb(memory.graph_inputs)} graph inputs "
            f"+ {_gb(memory.prepare)} a frame being prepared)",
            f"copies per batch besides the steps: a new pair's frames into the graph's inputs {_gb(copies.bytes)}"
            " read+written (none where the worker's graphs hold them already; none without CUDA graphs)",
        ]
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:.3f} GB"


def report(setup: Setup, per_frame: Traffic, forward: Traffic, top: int, per_op: bool) -> str:
    width, height = padded_size(setup)
    lines = [
        f"{setup.model} {width}x{height} (from {setup.width}x{setup.height}) {str(setup.dtype)[6:]} "
        f"{'NHWC' if setup.channels_last else 'NCHW'} batch {setup.batch} scale {setup.scale}"
        f"{' ensemble' if setup.ensemble else ''}",
        f"forward: {_gb(forward.bytes)} read+written in {len(forward.ops)} ops "
        f"(per frame step, once per source frame: {_gb(per_frame.bytes)})",
        f"calls (GB): casts {forward.casts} ({forward.cast_bytes / 1e9:.3f}), "
        + ", ".join(f"{label} {forward.count(*names)} ({forward.moved(*names) / 1e9:.3f})" for label, names in KINDS),
        *(
            f"inside convolutions (estimate, not in the total): {what} {_gb(moved)} in {forward.hidden_calls[what]}"
            for what, moved in forward.hidden.items()
        ),
        "",
        f"{'op':<28}{'calls':>7}{'GB':>10}{'share':>8}",
    ]
    for name, calls, moved in forward.by_kind()[:top]:
        lines.append(f"{name:<28}{calls:>7}{moved / 1e9:>10.3f}{moved / forward.bytes:>8.1%}")
    if per_op:
        lines += ["", f"{'#':>4} {'op':<26}{'MB read':>10}{'MB written':>11}  inputs"]
        for i, op in enumerate(forward.ops):
            cast = " (cast)" if op.cast else ""
            lines.append(f"{i:>4} {op.name:<26}{op.read / 1e6:>10.1f}{op.written / 1e6:>11.1f}  {op.shapes}{cast}")
    return "\n".join(lines)


def _arguments(argv: list[str] | None) -> tuple[Setup, int, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="4.26", choices=MODELS)
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of the clip (padded as the engine pads)")
    parser.add_argument("--dtype", default="fp16", choices=("fp16", "fp32"))
    parser.add_argument("--layout", default="nhwc", choices=("nhwc", "nchw"))
    parser.add_argument("--batch", type=int, default=1, help="timesteps per forward")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--ensemble", action="store_true")
    parser.add_argument("--top", type=int, default=15, help="op kinds listed")
    parser.add_argument("--per-op", action="store_true", help="also list every op in order")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    setup = Setup(args.model, width, height, dtype, args.layout == "nhwc", args.batch, args.scale, args.ensemble)
    return setup, args.top, args.per_op


def main(argv: list[str] | None = None) -> None:
    setup, top, per_op = _arguments(argv)
    print(report(setup, *count(setup), top, per_op))
    print()
    print(memory_report(*device_memory(setup)))


if __name__ == "__main__":
    main()
