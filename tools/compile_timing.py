"""What torch.compile (vsrife.compiled) costs and gives: time per in-between eager and compiled, and the
time until the steps run compiled, in a first process (empty cache) and a second one (the same cache).

    python tools/compile_timing.py --model 4.26 --size 640x384 [--device cpu] [--fp16] [--repeats 7]

Two child processes run the engine's two steps (a frame's network input; one in-between) on real frames
(Big Buck Bunny, bench's clip) in YUV420P8, compiling into a fresh folder made here: the first compiles, the
second should find everything cached. Each reports the seconds from its first call of the steps to their
first compiled output (the steps' first calls run eagerly, see ``vsrife.compiled.EAGER_FIRST``),
inductor's cache counters, the medians of ``--repeats`` timed calls of each step after warm-up, eager and
compiled, and the largest difference between them in code values. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FRAMES = 3


def _child(args: argparse.Namespace) -> dict:
    import torch
    import vapoursynth as vs

    from vsrife import compiled, formats, frames
    from vsrife.apps import bench
    from vsrife.filter import _build_engine

    width, height = (int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    clip = bench.real_frames(width, height, vs.YUV420P8)
    convert = formats.DeviceConverter(clip.format, width, height, formats.colour_of(clip), device)
    engine = _build_engine(convert, args.model, None, False, 1.0, False, device, dtype)
    planes = [
        [torch.from_numpy(p.copy()).to(device) for p in frames.plane_list(clip.get_frame(n))] for n in range(FRAMES)
    ]
    os.environ["VSRIFE_CACHE_DIR"] = args.cache  # for the compiled code only: weights and clip are loaded
    key = (args.model, width, height, "YUV420P8", dtype)
    prepare = compiled.compile_step(engine._prepared, name="prepare", key=key, device=device)
    in_betweens = compiled.compile_step(engine._in_betweens, name="in-betweens", key=(*key, 1), device=device)
    ts = torch.full((1, 1, 1, 1), 0.5, dtype=dtype, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        start = time.perf_counter()
        made = [prepare(*p) for p in planes]  # the first eagerly, then compiled
        sync()
        prepared_at = time.perf_counter() - start
        for _ in range(compiled.EAGER_FIRST + 1):
            out = in_betweens(ts, *made[0], *made[1])
        sync()
        first_output_at = time.perf_counter() - start
        expected = engine._in_betweens(ts, *made[0], *made[1])
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(out, expected, strict=True))

        def median(fn, *inputs) -> float:
            for _ in range(2):
                fn(*inputs)
            times = []
            for _ in range(args.repeats):
                begin = time.perf_counter()
                fn(*inputs)
                sync()
                times.append(time.perf_counter() - begin)
            return statistics.median(times)

        pair = (ts, *made[1], *made[2])
        timings = {
            "in_between_eager_s": median(engine._in_betweens, *pair),
            "in_between_compiled_s": median(in_betweens, *pair),
            "prepare_eager_s": median(engine._prepared, *planes[2]),
            "prepare_compiled_s": median(prepare, *planes[2]),
        }
    from torch._dynamo.utils import counters

    return {
        "prepare_compiled_after_s": prepared_at,
        "first_compiled_output_after_s": first_output_at,
        "compiled_calls": [prepare.compiled_calls, in_betweens.compiled_calls],
        "max_diff_codes": diff,
        "inductor": {k: v for k, v in counters["inductor"].items() if "cache" in k},
        "aot_autograd": {k: v for k, v in counters["aot_autograd"].items() if "cache" in k},
        "threads": torch.get_num_threads(),
        **timings,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="4.26")
    parser.add_argument("--size", default="640x384", help="WIDTHxHEIGHT, a multiple of the model's padding")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return
    with tempfile.TemporaryDirectory(prefix="vsrife-compile-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
        command = [sys.executable, __file__, "--child", "--cache", cache, *(argv or sys.argv[1:])]
        for name in ("first process", "second process"):
            begin = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr}")
            report = json.loads(done.stdout.strip().splitlines()[-1])
            report["process_s"] = time.perf_counter() - begin
            print(f"{name}: {json.dumps(report, indent=1)}")


if __name__ == "__main__":
    main()
