"""Python callbacks VapourSynth makes into vsrife per in-between, counted (not timed), on the CPU.

    python tools/host_counts.py [--factor 2] [--size 640x360] [--frames 48]

Renders output frames of real 4:2:0 frames (model 4.6) and counts, with :mod:`sys.monitoring` (which sees
every thread, VapourSynth's own included), each start of the functions VapourSynth calls back into: the
output frame (``_output_frame``), the planning window's ``FrameEval`` (``showing``), the scene facts
(``record``, and ``mark`` where scene detection is a filter of its own) and the retrying source reader
(``_frame``). Run it on two trees (``PYTHONPATH=…``) to compare them. Prints to stdout (it is a tool).
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

CALLBACKS = {"_output_frame", "showing", "record", "mark", "_frame"}
TOOL = sys.monitoring.PROFILER_ID


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", default="2")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    factor = Fraction(args.factor)

    import vsrife
    from vsrife import rife
    from vsrife.apps import samples

    package = str(Path(vsrife.__file__).parent)
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def started(code, offset):
        if code.co_name in CALLBACKS and code.co_filename.startswith(package):
            with lock:
                counts[code.co_name] += 1
        return sys.monitoring.DISABLE if not code.co_filename.startswith(package) else None

    source = samples.open_clip(samples.fetch("bigbuckbunny"))[36:60]
    clip = source.resize.Bicubic(width, height, format=vs.YUV420P8, matrix_in=1, matrix=1)
    held = [clip.get_frame(n) for n in range(clip.num_frames)]
    blank = clip.std.BlankClip(keep=True)
    clip = blank.std.ModifyFrame(blank, lambda n, f: held[n])  # frames held in memory: no decoding, no vsrife call
    out = rife(clip, model="4.6", factor_num=factor.numerator, factor_den=factor.denominator, device="cpu")
    sys.monitoring.use_tool_id(TOOL, "vsrife host_counts")
    sys.monitoring.register_callback(TOOL, sys.monitoring.events.PY_START, started)
    sys.monitoring.set_events(TOOL, sys.monitoring.events.PY_START)
    try:
        made = sum("RifeTimestep" in f.props for f in out[: args.frames].frames(close=True))
    finally:
        sys.monitoring.set_events(TOOL, 0)
        sys.monitoring.free_tool_id(TOOL)
    total = sum(counts.values())
    print(f"{args.frames} output frames, {made} in-betweens, {width}x{height}, factor {factor}")
    for name, count in counts.most_common():
        print(f"  {name:<14} {count:5d}  {count / made:5.2f} per in-between")
    print(f"  {'all':<14} {total:5d}  {total / made:5.2f} per in-between")


if __name__ == "__main__":
    main()
