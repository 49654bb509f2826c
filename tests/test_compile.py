"""torch.compile (inductor) of the engine's two device steps (vsrife.compiled), on the CPU: compiled equals
eager within 1e-4 in fp32 on real frames with real weights; no variant breaks the graph (4.0/4.1 exactly
where they decide on the host whether to start over); a step that fails to compile runs eagerly with one
line on stderr; a second process compiles nothing. No test asserts a time.

The steps compile into the vsrife cache (``$VSRIFE_CACHE_DIR/compile``), as the library does: a first run
of this file compiles each in-between step for about two minutes on a slow CPU, later runs find them there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import vapoursynth as vs
from torch._dynamo.utils import counters

from helpers import FP32_NETWORK_TOLERANCE, clip_from_array, frame_array, read_rgb_frames
from vsrife import compiled, formats, frames, rife
from vsrife.compiled import compile_step
from vsrife.engine import Engine, EngineOptions
from vsrife.filter import _build_engine
from vsrife.network import IFNet
from vsrife.variants import ARCHITECTURES, families

TOLERANCE = FP32_NETWORK_TOLERANCE  # fp32, 0..1: compiled kernels add in their own order
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def real() -> np.ndarray:
    """Big Buck Bunny frames 40 and 41 (strong motion), 256x192 crops, RGB float32."""
    from vsrife.apps.samples import fetch

    return read_rgb_frames(fetch("bigbuckbunny"), [40, 41], crop=(512, 256, 256, 192))


def _planes(clip: vs.VideoNode, n: int) -> list[torch.Tensor]:
    return [torch.from_numpy(p.copy()) for p in frames.plane_list(clip.get_frame(n))]


def _compiles_run() -> int:
    """Graphs inductor has produced or taken from its cache in this process so far."""
    return counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"]


def _warmed(step, *args):
    """``step`` past its eager first calls (:data:`vsrife.compiled.EAGER_FIRST`)."""
    for _ in range(compiled.EAGER_FIRST):
        step(*args)
    return step


# 4.6: the graphs the engine test below compiles too (the same model, size and format), taken from inductor's
# cache there; 4.26's own compile cost two more minutes of CI, and its code is traced in the variant test
@pytest.mark.parametrize("model", ["4.6"])
def test_compiled_steps_equal_eager_in_fp32(real, model):
    clip = clip_from_array(real)
    convert = formats.DeviceConverter(clip.format, clip.width, clip.height, formats.colour_of(clip), CPU)
    engine = _build_engine(convert, model, None, False, 1.0, False, CPU, EngineOptions(dtype=torch.float32))
    key = (model, clip.width, clip.height, "RGBS", torch.float32)
    prepare = compile_step(engine._prepared, name="prepare", key=key, device=CPU)
    in_betweens = compile_step(engine._in_betweens, name="in-betweens", key=(*key, 1), device=CPU)
    before = _compiles_run()
    with torch.inference_mode():
        eager = [engine._prepared(*_planes(clip, n)) for n in range(2)]
        _warmed(prepare, *_planes(clip, 0))
        for n in range(2):
            for a, b in zip(prepare(*_planes(clip, n)), eager[n], strict=True):
                assert (a - b).abs().max() <= TOLERANCE, f"{model} prepared frame {n}"
        _warmed(in_betweens, torch.full((1, 1, 1, 1), 0.5), *eager[0], *eager[1])
        for t in (0.5, 0.25):  # the second call replays the first's compiled code
            ts = torch.full((1, 1, 1, 1), t)
            expected = engine._in_betweens(ts, *eager[0], *eager[1])
            got = in_betweens(ts, *eager[0], *eager[1])
            for a, b in zip(got, expected, strict=True):
                assert (a - b).abs().max() <= TOLERANCE, f"{model} in-between at {t}"
    assert (prepare.compiled_calls, in_betweens.compiled_calls) == (2, 2), "no call fell back to eager"
    assert _compiles_run() == before + 2, "one graph per step, none again for the next calls"


def test_the_engine_compiles_when_asked_and_equals_eager(real, capfd):
    """rife(..., engine=EngineOptions(compile=True)): the engine's own two steps compiled (4.6, its real weights),
    every output frame within 1e-4 of eager in fp32, and nothing said on stderr (no fallback)."""
    clip = clip_from_array(np.concatenate([real, real[::-1]]))
    eager = rife(clip, model="4.6", device="cpu")
    before = _compiles_run()
    made = rife(clip, model="4.6", device="cpu", engine=EngineOptions(compile=True, workers=1))
    for n in range(made.num_frames):
        difference = np.abs(frame_array(made, n) - frame_array(eager, n)).max()
        assert difference <= TOLERANCE, (n, difference)
    assert _compiles_run() >= before + 2, "the prepare and in-between steps were compiled"
    assert "torch.compile off" not in capfd.readouterr().err


def test_the_engine_compiles_on_cuda_and_equals_eager(real, device, capfd):
    """On CUDA (Triton kernels, replayed from the engine's CUDA graphs): 4.6's output within 1e-4 of eager in
    fp32, compiled code really run, nothing said on stderr. The CPU's own compile is the test above."""
    if device != "cuda":
        pytest.skip("the CPU's compile is tested above")
    clip = clip_from_array(np.concatenate([real, real[::-1]]))
    eager = rife(clip, model="4.6", device=device, fp16=False)
    before = compiled.calls_compiled()
    made = rife(clip, model="4.6", device=device, fp16=False, engine=EngineOptions(compile=True))
    for n in range(made.num_frames):
        difference = np.abs(frame_array(made, n) - frame_array(eager, n)).max()
        assert difference <= TOLERANCE, (n, difference)
    assert compiled.calls_compiled() > before, "compiled code ran"
    assert "torch.compile off" not in capfd.readouterr().err


def _family_id(arch) -> str:
    return families()[arch].members[0] + ("" if len(families()[arch].members) == 1 else "-family")


# every variant's code: models of one family run the same code (IFNet is built from the architecture only)
FAMILIES = list(families())
CONFIGURATIONS = [(arch, 1.0, False) for arch in FAMILIES] + [
    (ARCHITECTURES["4.26"], 0.5, False),
    (ARCHITECTURES["4.26"], 2.0, False),
    (ARCHITECTURES["4.6"], 1.0, True),
]


def _small_engine(arch, scale: float, ensemble: bool) -> tuple[Engine, list[torch.Tensor]]:
    """An engine on YUV420P8 frames of the smallest size ``arch`` takes at ``scale``, random weights."""
    side = arch.size_multiple(scale)
    fmt = vs.core.get_video_format(vs.YUV420P8)
    colour = formats.Colour(formats.Matrix.MATRIX_BT709, True)
    convert = formats.DeviceConverter(fmt, side, side, colour, CPU)
    torch.manual_seed(0)
    net = IFNet(arch, scale, ensemble)
    engine = Engine(net, CPU, convert, side, 4, EngineOptions(workers=1, dtype=torch.float32))
    luma = torch.randint(0, 256, (side, side), dtype=torch.uint8)
    chroma = torch.randint(0, 256, (side // 2, side // 2), dtype=torch.uint8)
    return engine, [luma, chroma, chroma.clone()]


@pytest.mark.parametrize(
    ("arch", "scale", "ensemble"),
    CONFIGURATIONS,
    ids=[f"{_family_id(a)}-scale{s}{'-ensemble' if e else ''}" for a, s, e in CONFIGURATIONS],
)
def test_no_variant_breaks_the_graph(arch, scale, ensemble):
    """Both steps trace into one graph (dynamo only, no compile); 4.0/4.1's in-betweens break exactly at
    their large-motion check, and :func:`vsrife.compiled.compiles` says they are not compiled."""
    engine, planes = _small_engine(arch, scale, ensemble)
    with torch.inference_mode():
        prepared = torch._dynamo.explain(engine._prepared)(*planes)
        frame = engine._prepared(*planes)
        ts = torch.full((1, 1, 1, 1), 0.5)
        in_betweens = torch._dynamo.explain(engine._in_betweens)(ts, *frame, *frame)
    assert prepared.graph_break_count == 0, [r.reason for r in prepared.break_reasons]
    assert compiled.compiles(arch) == (not arch.retries_large_motion)
    if compiled.compiles(arch):
        assert in_betweens.graph_break_count == 0, [r.reason for r in in_betweens.break_reasons]
    else:
        assert in_betweens.graph_break_count > 0
        where = {frame.name for reason in in_betweens.break_reasons for frame in reason.user_stack[-1:]}
        assert where == {"_motion_too_large"}, where


def test_every_variant_is_in_a_family_tested():
    assert {families()[arch].members for arch in FAMILIES} == {family.members for family in families().values()}
    assert sum(len(families()[arch].members) for arch in FAMILIES) == len(ARCHITECTURES)


@pytest.fixture
def fresh_switches(monkeypatch):
    """The module's process-wide state as on import, restored afterwards."""
    monkeypatch.setattr(compiled, "_said", set())
    monkeypatch.setattr(compiled, "_backend_broken", None)


def _breaks(x: torch.Tensor) -> torch.Tensor:
    if x.sum() > 0:  # data-dependent control flow: a graph break
        return x + 1
    return x - 1


def test_a_graph_break_runs_eagerly_with_one_line(fresh_switches, capfd):
    step = _warmed(compile_step(_breaks, name="breaking", key=("test",), device=CPU), torch.ones(4))
    x = torch.ones(4)
    assert torch.equal(step(x), x + 1)
    assert torch.equal(step(-x), -x - 1)
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsrife: torch.compile off (breaking: graph break: "), err
    assert lines[0].endswith("; running eagerly")
    assert not step.compiled and step.compiled_calls == 0
    other = _warmed(compile_step(lambda x: x * 2, name="fine", key=("test",), device=CPU), x)
    assert torch.equal(other(x), x * 2) and other.compiled_calls == 1, "a graph break turns off its own step only"


def test_a_backend_failure_turns_compile_off_everywhere(fresh_switches, capfd):
    x = torch.linspace(0, 1, 16)
    first = _warmed(compile_step(lambda x: torch.sin(x) * 3, name="first", key=("test",), device=CPU), x)
    second = _warmed(compile_step(lambda x: torch.cos(x) * 3, name="second", key=("test",), device=CPU), x)
    # inductor's own patch: a monkeypatched config attribute is deleted on undo, which broke later compiles
    with torch._inductor.config.patch({"cpp.cxx": ("no-such-compiler-vsrife",)}):
        assert torch.equal(first(x), torch.sin(x) * 3)
    assert not second.compiled, "off for every step"
    assert torch.equal(second(x), torch.cos(x) * 3)
    assert first.compiled_calls == second.compiled_calls == 0
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsrife: torch.compile off (first: "), lines


# how long the eager first call below waits for a compile to start: a compile allowed to start then (the
# fault) starts within a second; the test passes only after the whole wait, whatever the machine's speed
COMPILE_START_WAIT_S = 10


def test_no_compile_starts_while_the_eager_first_call_runs(fresh_switches, capfd):
    """Lanes share a step. Its eager first call builds what the step keeps (as the network builds its grids);
    a compile traced meanwhile in another lane guards on a dictionary that changes under it, and dynamo
    rejected its own compile: 4.6 fp16 on the CPU ran eagerly. The first call here stays in flight until a
    compile starts, or for COMPILE_START_WAIT_S: none may start before it has returned."""
    built: dict[str, torch.Tensor] = {}
    compile_started = threading.Event()
    started_during_the_eager_call = []

    def keeps_a_grid(x: torch.Tensor) -> torch.Tensor:
        if "grid" not in built:
            if not torch.compiler.is_compiling():
                started_during_the_eager_call.append(compile_started.wait(COMPILE_START_WAIT_S))
            built["grid"] = torch.arange(4.0)
        return x + built["grid"]

    def on_start(_args) -> None:
        compile_started.set()

    step = compile_step(keeps_a_grid, name="grid-keeping", key=("test",), device=CPU)
    x = torch.ones(4)
    torch._dynamo.callback_handler.register_start_callback(on_start)
    try:
        with ThreadPoolExecutor(2) as lanes:
            first = lanes.submit(step, x)
            while step._eager_calls_left:  # the first call has been taken as the eager one
                time.sleep(0.01)
            second = lanes.submit(step, x)
            assert torch.equal(first.result(), x + torch.arange(4.0))
            assert torch.equal(second.result(), x + torch.arange(4.0))
    finally:
        torch._dynamo.callback_handler.remove_start_callback(on_start)
    assert started_during_the_eager_call == [False], "a compile started while the eager first call ran"
    assert compile_started.is_set() and step.compiled and step.compiled_calls == 1
    assert "torch.compile off" not in capfd.readouterr().err


def test_no_triton_on_cuda_runs_eagerly(fresh_switches, capfd, monkeypatch):
    """Checked before compiling (no GPU needed: the step's function runs wherever its tensors are)."""
    import torch.utils._triton

    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: False)
    step = compile_step(lambda x: x + 1, name="cuda-step", key=("test",), device=torch.device("cuda"))
    for _ in range(compiled.EAGER_FIRST + 2):
        assert torch.equal(step(torch.zeros(2)), torch.ones(2))
    assert capfd.readouterr().err == "vsrife: torch.compile off (Triton is not installed); running eagerly\n"
    assert step.compiled_calls == 0


SECOND_PROCESS = """
import json, sys, torch, vapoursynth as vs
from torch._dynamo.utils import counters
from vsrife import compiled, formats
from vsrife.engine import Engine, EngineOptions
from vsrife.network import IFNet
from vsrife.variants import architecture

side = int(sys.argv[1])
cpu = torch.device("cpu")
fmt = vs.core.get_video_format(vs.YUV420P8)
convert = formats.DeviceConverter(fmt, side, side, formats.Colour(formats.Matrix.MATRIX_BT709, True), cpu)
torch.manual_seed(0)
engine = Engine(IFNet(architecture("4.26")), cpu, convert, 64, 4, EngineOptions(workers=1, dtype=torch.float32))
step = compiled.compile_step(engine._prepared, name="prepare", key=("4.26", side, "YUV420P8"), device=cpu)
gen = torch.Generator().manual_seed(1)
planes = [torch.randint(0, 256, (s, s), dtype=torch.uint8, generator=gen) for s in (side, side // 2, side // 2)]
with torch.inference_mode():
    outputs = [step(*planes) for _ in range(compiled.EAGER_FIRST + 2)][compiled.EAGER_FIRST :]
    eager = engine._prepared(*planes)
print(json.dumps({
    "compiled_calls": step.compiled_calls,
    "folder": compiled.use_cache_location(cpu).as_posix(),
    "inductor": dict(counters["inductor"]),
    "aot_autograd": dict(counters["aot_autograd"]),
    "diff": max(float((a - b).abs().max()) for out in outputs for a, b in zip(out, eager)),
    "sum": [float(t.double().sum()) for t in outputs[0]],
}))
"""


def test_a_second_process_compiles_nothing(tmp_path):
    """Two processes compile the same step into a fresh cache: the first compiles it, the second takes it
    from the cache (inductor's and AOTAutograd's counters); another frame size compiles again."""
    env = {k: v for k, v in os.environ.items() if k != compiled.CACHE_VARIABLE}
    env["VSRIFE_CACHE_DIR"] = str(tmp_path)

    def run(side: int) -> dict:
        argv = [sys.executable, "-c", SECOND_PROCESS, str(side)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    first, second, other = run(64), run(64), run(128)
    for report in (first, second, other):
        assert report["compiled_calls"] == 2 and report["diff"] <= TOLERANCE
        assert report["folder"].startswith((tmp_path / "compile" / "cpu-").as_posix())
    assert first["inductor"].get("fxgraph_cache_miss", 0) == 1 and not first["inductor"].get("fxgraph_cache_hit")
    assert second["inductor"].get("fxgraph_cache_hit", 0) == 1 and not second["inductor"].get("fxgraph_cache_miss")
    assert second["aot_autograd"].get("autograd_cache_hit", 0) == 1
    assert second["sum"] == first["sum"], "the same compiled code"
    assert other["inductor"].get("fxgraph_cache_miss", 0) == 1, "the frame size is part of the key"
