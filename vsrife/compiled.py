"""torch.compile (inductor) for the engine's device steps, with the compiled code cached on disk.

:func:`compile_step` compiles one step of the engine (a source frame's network input from its planes; the
in-betweens of one pair) with ``fullgraph=True`` and ``dynamic=False``, in inductor's default mode with
``triton.cudagraphs`` off: it records no CUDA graphs of its own, and the engine captures the compiled
kernels in its own graphs after its warm-up, as it captures the eager ones. A step's first call runs
eagerly (:data:`EAGER_FIRST`), its second compiles once the first has returned. A call whose compile
fails (Triton missing on CUDA, a backend error, a graph break) makes that step eager for good, and a
failure that is not a graph break every step of the process; each reason is said once, on one line of
stderr. 4.0/4.1 decide on the host, mid-forward, whether to start over (``arch.retries_large_motion``):
their in-betweens break the graph exactly there and are not compiled (:func:`compiles`); their prepare
step is.

The cache. Inductor keeps what it compiled under ``$TORCHINDUCTOR_CACHE_DIR``: the FX graph cache (the
generated code, keyed by the graph, which holds the model's structure, shapes, dtypes and layouts, and by
the torch version, Triton's, the GPU's name, inductor's settings and the CPU thread count), the AOTAutograd
cache, the C++ libraries (CPU) and the Triton kernels (CUDA). Before its first compile a process points
that variable at :func:`cache_location`, ``<vsrife cache>/compile/<device type>-<hash>``, the hash of the
torch version, Triton's (or none), the device type and its name (the GPU; the CPU model, since the C++ is
built for its instruction set), unless the variable names another folder than inductor's own default
(``import torch._dynamo`` sets it to that default): the user's choice is kept. The variable is
process-wide: inductor then uses that folder for every compile of the process, the user's own included;
a process that compiles nothing sets nothing. A second process running the same steps compiles nothing:
dynamo traces the Python again (seconds), AOTAutograd and inductor find their results in the cache
(tests/test_compile.py checks their counters). Dynamo's own cache is not on disk.

Each step has a code object of its own (:func:`_own_function`): dynamo keeps compiled code per code object
and compiles one at most ``recompile_limit`` (8) times, after which a fullgraph compile raises; one code
shared by every engine and batch size of a process would reach that.

Numerics, on the CPU (torch 2.14.1, 4.26 real weights, real Big Buck Bunny frames), compiled against eager:
fp32 in-betweens within 2.6e-5 (640x384, 7 pairs) and 1.4e-5 (256x256), prepared frames within 6e-8;
YUV420P8 output at most 1 code apart (about 20 of 369k samples per frame, rounding at .5); fp16 1.6e-3.
Most of the fp32 difference is the warps' sampling coordinates: inductor's grid_sample computes the pixel
position in another order, and in fp32 a position near x = 1919 is only good to 1.2e-4 px, so the gap grows
with the frame's width and its sharpness (grid_sample alone on noise: 6e-5 at 640 wide, 1.2e-4 at 1920;
eager and compiled equally far from a float64 run).
An earlier CPU trial's 0.03 (docs/speed.md) did not come back with anything tried: max-autotune, 2 threads, the
first call compiled with the grids not yet built, and the network of the commit that reported it
(2d0c20f, compiled whole, with and without ``freezing``) all stay within 2.6e-5. Not used here:
``freezing=True`` fails to compile the current network (InductorError in its oneDNN
fusion pass: the step then runs eagerly), and ``dynamic=True`` did not finish compiling in 25 minutes.
The tests hold compiled fp32 to 1e-4 of eager.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FunctionType

import torch

from .download import cache_dir

CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
MAX_REASON = 160  # characters of the failure kept in the stderr line
# Calls of a step run eagerly before it compiles. The network builds its sampling grids for a frame size on
# first use and keeps them (IFNet._points): a compile that traced that would be compiled again on the next
# call, which finds them built (measured: two 100 s compiles of 4.26's in-betweens instead of one).
EAGER_FIRST = 1

_LOCK = threading.Lock()
_said: set[str] = set()  # the stderr lines said so far: each once per process
_backend_broken: str | None = None  # why no step of this process compiles any more, once a backend failed
_compiled_calls = 0  # calls of any step of this process that ran compiled code


def compiles(arch) -> bool:
    """Whether the in-between step of ``arch`` (a :class:`~vsrife.variants.Architecture`) can be compiled:
    not for 4.0/4.1, whose forward reads its early flow on the host to decide whether to start over. Their
    prepare step compiles."""
    return not arch.retries_large_motion


def calls_compiled() -> int:
    """How many calls of the process's compiled steps have run compiled code so far (a step runs eagerly on
    its first call, and for good once its compile failed)."""
    return _compiled_calls


def fallbacks() -> list[str]:
    """The stderr lines said so far about steps that run eagerly since their compile failed."""
    with _LOCK:
        return sorted(line for line in _said if "torch.compile off" in line)


def compile_step(fn: Callable, *, name: str, key: tuple, device: torch.device) -> CompiledStep:
    """``fn`` (tensors in, tensors out) compiled, run eagerly on its first call and compiled from the
    second (see the module's docstring). ``name`` says which step in messages; ``key`` what it is compiled
    for (model, scale, frame size, format, dtype, layout, batch: whatever makes its graph), named in its
    code object. Make one step per key and keep it: calls with other shapes compile again."""
    return CompiledStep(fn, name=name, key=key, device=device)


class CompiledStep:
    """A callable that runs ``fn`` compiled until a compile fails, then eagerly for good."""

    def __init__(self, fn: Callable, *, name: str, key: tuple, device: torch.device) -> None:
        self.eager = fn
        self.name = name
        self.key = key
        self.device = torch.device(device)
        self._function = _own_function(fn, f"vsrife_{name.replace('-', '_')}_{_digest(repr(key))[:8]}")
        self._compiled: Callable | None = None  # made on the first compiled call
        self._off = False
        self._lock = threading.Lock()
        self._eager_calls_left = EAGER_FIRST
        self._eager_calls_running = 0
        # Set once the eager first calls have all returned. Lanes share a step: a compile traced while
        # another lane's eager first call is still building the network's grids guards on a dictionary
        # that changes under it, and dynamo rejects its own compile ("Guard failed on the same frame it
        # was created": 4.6 fp16 on the CPU, where that first call takes seconds).
        self._eager_first_done = threading.Event()
        if not EAGER_FIRST:
            self._eager_first_done.set()
        self.compiled_calls = 0  # calls that ran the compiled code

    @property
    def compiled(self) -> bool:
        """Whether calls run (or the next call will run) the compiled code: False once a compile failed."""
        return not self._off and _backend_broken is None

    def __call__(self, *args):
        with self._lock:
            eager_first = self._eager_calls_left > 0
            if eager_first:
                self._eager_calls_left -= 1
                self._eager_calls_running += 1
        if eager_first:
            return self._eager_first_call(args)
        if not self.compiled:
            return self.eager(*args)
        self._eager_first_done.wait()
        try:
            out = self._compiler()(*args)
        except Exception as error:  # any failure to compile means: run eagerly
            if is_out_of_memory(error):
                raise
            self._turn_off(_reason(self.name, error), everywhere=not _is_graph_break(error))
            return self.eager(*args)
        global _compiled_calls
        with self._lock:
            self.compiled_calls += 1
        with _LOCK:
            _compiled_calls += 1
        return out

    def _eager_first_call(self, args: tuple):
        try:
            return self.eager(*args)
        finally:
            with self._lock:
                self._eager_calls_running -= 1
                if self._eager_calls_left == 0 and self._eager_calls_running == 0:
                    self._eager_first_done.set()

    def _compiler(self) -> Callable:
        """The compiled function, made the first time (after the checks, and after the cache folder is
        chosen: it must be before inductor works out its paths)."""
        if self._compiled is None:
            missing = _missing_compiler(self.device)
            if missing:
                raise CompilerMissing(missing)
            use_cache_location(self.device)
            options = {"triton.cudagraphs": False}  # the engine's CUDA graphs capture the compiled kernels
            self._compiled = torch.compile(self._function, fullgraph=True, dynamic=False, options=options)
        return self._compiled

    def _turn_off(self, reason: str, everywhere: bool) -> None:
        global _backend_broken
        self._off = True
        if everywhere:
            _backend_broken = _backend_broken or reason
        say(f"vsrife: torch.compile off ({reason}); running eagerly")


class CompilerMissing(RuntimeError):
    """Inductor cannot compile for the step's device at all (no Triton for CUDA)."""


def cache_location(device: torch.device) -> Path:
    """Where this process's compiled code is kept unless ``$TORCHINDUCTOR_CACHE_DIR`` says otherwise:
    ``<vsrife cache>/compile/<device type>-<16 hex digits>``, one folder per torch version, Triton version,
    device type and device name."""
    device = torch.device(device)
    key = (torch.__version__, _triton_version(), device.type, _device_name(device))
    return cache_dir() / "compile" / f"{device.type}-{_digest(repr(key))[:16]}"


def use_cache_location(device: torch.device) -> Path:
    """Point inductor's cache at :func:`cache_location` (``$TORCHINDUCTOR_CACHE_DIR``, process-wide) unless
    it names another folder than inductor's default (the user's choice); the folder in use. Importing
    ``torch._dynamo`` sets the variable to that default, so the default counts as unset."""
    with _LOCK:
        current = os.environ.get(CACHE_VARIABLE)
        if current is None or _is_inductors_default(current):
            folder = cache_location(device)
            folder.mkdir(parents=True, exist_ok=True)
            os.environ[CACHE_VARIABLE] = str(folder)
            if current is not None:
                from torch._inductor.utils import clear_caches

                clear_caches()  # paths inductor may have worked out under its default folder
        return Path(os.environ[CACHE_VARIABLE])


def _is_inductors_default(folder: str) -> bool:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return os.path.abspath(folder) == os.path.abspath(default_cache_dir())


def say(line: str) -> None:
    """``line`` on stderr, once per process."""
    with _LOCK:
        if line in _said:
            return
        _said.add(line)
    print(line, file=sys.stderr)


def _own_function(fn: Callable, code_name: str) -> FunctionType:
    """A function calling ``fn`` with a code object of its own (named ``code_name``, for dynamo's logs)."""

    def step(*args):
        return fn(*args)

    step.__code__ = step.__code__.replace(co_name=code_name, co_qualname=code_name)
    return step


def _missing_compiler(device: torch.device) -> str | None:
    """Why inductor cannot compile for ``device`` at all, or None."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "Triton is not installed"
    return None


def _triton_version() -> str | None:
    from torch.utils._triton import has_triton_package

    if not has_triton_package():
        return None
    import triton

    return triton.__version__


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_OUT_OF_MEMORY_SIGNS = (
    "out of memory",
    "can't allocate memory",  # torch's CPU allocator
    "bad_alloc",  # a C++ new that failed, as torch passes it on
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed: torch's allocators, a C++ ``new`` (``std::bad_alloc``,
    which reaches Python as a ``RuntimeError`` or a ``MemoryError``), or Python's own."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return any(sign in str(error) for sign in _OUT_OF_MEMORY_SIGNS)


def _is_graph_break(error: BaseException) -> bool:
    from torch._dynamo.exc import Unsupported

    return isinstance(error, Unsupported)


def _reason(name: str, error: BaseException) -> str:
    """One line saying why ``name`` did not compile: a graph break's first line, or the backend's own
    error (inductor wraps it)."""
    if isinstance(error, CompilerMissing):
        return str(error)
    inner = getattr(error, "inner_exception", None) or error
    first = next((line.strip() for line in str(inner).splitlines() if line.strip()), "")
    what = "graph break" if _is_graph_break(error) else type(inner).__name__
    text = f"{name}: {what}: {first}" if first else f"{name}: {what}"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
