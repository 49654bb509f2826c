"""Where a CUDA frame's time goes (run by tools/gpu_probe.sh on a GPU machine; the findings go to $OUT/probe.md).

1. The network alone (frame prepared + forward, replayed from a CUDA graph, 1080p real frames): memory layout
   (NCHW / channels_last) x cuDNN's kernel choice (heuristics / benchmarked), each with its distance from
   the NCHW-heuristics output.
2. The kernels of one network replay, by GPU time.
3. End to end through VapourSynth: the GPU's busy share of the wall time, and its kernels by GPU time.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import vapoursynth as vs
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from vsrife import checkpoints
from vsrife.apps import bench
from vsrife.lanes import replayed
from vsrife.network import IFNet
from vsrife.variants import architecture

REPORT = Path(os.environ.get("OUT", ".")) / "probe.md"
DEVICE = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
WIDTH, HEIGHT = (1920, 1080) if DEVICE.type == "cuda" else (320, 192)


def note(line: str = "") -> None:
    with REPORT.open("a") as report:
        report.write(line + "\n")
    print(line, flush=True)


def network(model: str, dtype: torch.dtype, channels_last: bool) -> IFNet:
    net = checkpoints.load_network(model).net.eval().to(DEVICE, dtype)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def step_for(net: IFNet, img: list[torch.Tensor], channels_last: bool):
    if channels_last:
        img = [i.contiguous(memory_format=torch.channels_last) for i in img]
    timestep = torch.full((1, 1, 1, 1), 0.5, dtype=img[0].dtype, device=DEVICE)
    frame0 = net.frame(img[0])

    def step(img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        return net(frame0, net.frame(img1), timestep)

    if DEVICE.type == "cuda":
        return replayed(step, img), img
    return step, img


def seconds_per_step(step, img, count: int = 40) -> float:
    step(*img)
    sync()
    start = time.perf_counter()
    for _ in range(count):
        step(*img)
    sync()
    return (time.perf_counter() - start) / count


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def layouts_and_kernel_choice(model: str, dtype: torch.dtype) -> None:
    img = bench.padded_tensors(bench.real_frames(WIDTH, HEIGHT), architecture(model).size_multiple(1.0), DEVICE, dtype)
    note(f"\n## {model} {str(dtype)[6:]}: network alone (frame prepared + forward), {WIDTH}x{HEIGHT}\n")
    note("| layout | cuDNN | ms per frame | frames/s | max diff from NCHW/heuristics |")
    note("| --- | --- | --- | --- | --- |")
    reference = None
    for channels_last in (False, True):
        for benchmark in (False, True):
            torch.backends.cudnn.benchmark = benchmark
            net = network(model, dtype, channels_last)
            with torch.inference_mode():
                step, inputs = step_for(net, img, channels_last)
                out = step(*inputs).float().clone()
                reference = out if reference is None else reference
                s = seconds_per_step(step, inputs)
            diff = (out - reference).abs().max().item()
            layout = "channels_last" if channels_last else "NCHW"
            choice = "benchmarked" if benchmark else "heuristics"
            note(f"| {layout} | {choice} | {s * 1e3:.2f} | {1 / s:.1f} | {diff:.2e} |")
    torch.backends.cudnn.benchmark = False


def kernels_of_one_replay(model: str, dtype: torch.dtype) -> None:
    img = bench.padded_tensors(bench.real_frames(WIDTH, HEIGHT), architecture(model).size_multiple(1.0), DEVICE, dtype)
    net = network(model, dtype, False)
    with torch.inference_mode():
        step, inputs = step_for(net, img, False)
        step(*inputs)
        sync()
        with profile(activities=activities()) as prof:
            for _ in range(5):
                step(*inputs)
            sync()
    note(f"\n## {model} {str(dtype)[6:]}: kernels of 5 network replays (NCHW, heuristics)\n")
    note("```")
    note(prof.key_averages().table(sort_by=sort_key(), row_limit=25, max_name_column_width=70))
    note("```")


def end_to_end(model: str, fp16: bool) -> None:
    config = bench.BenchConfig(model=model, width=WIDTH, height=HEIGHT, device=str(DEVICE), fp16=fp16, frames=96)
    profiled = []

    def profiler():
        profiled.append(profile(activities=activities()))
        return profiled[-1]

    result = bench.end_to_end(replace(config, repeats=1), bench.real_frames(WIDTH, HEIGHT, vs.YUV420P8), profiler)
    prof = profiled[-1]
    busy = kernel_union_seconds(prof)
    note(f"\n## {model} fp16={fp16}: end to end, 96 output frames through VapourSynth ({result.lanes})\n")
    note(f"- {result.synthesized} synthesized, {96 / result.seconds:.1f} output frames/s while profiled")
    share = busy / result.seconds
    note(f"- GPU busy (the union of kernel intervals): {busy:.3f} s of {result.seconds:.3f} s, {share:.0%}")
    note("```")
    note(prof.key_averages().table(sort_by=sort_key(), row_limit=30, max_name_column_width=70))
    note("```")


def kernel_union_seconds(prof) -> float:
    """Seconds in which at least one kernel ran: overlapping kernels (several streams) counted once."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA)
    total, reach = 0, None
    for start, end in spans:
        if reach is None or start > reach[1]:
            total += 0 if reach is None else reach[1] - reach[0]
            reach = [start, end]
        else:
            reach[1] = max(reach[1], end)
    total += 0 if reach is None else reach[1] - reach[0]
    return total / 1e6


def activities() -> list:
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])


def sort_key() -> str:
    return "self_cuda_time_total" if DEVICE.type == "cuda" else "self_cpu_time_total"


def main() -> None:
    REPORT.write_text(f"# vsrife GPU probe: {torch.cuda.get_device_name() if DEVICE.type == 'cuda' else 'CPU'}\n")
    half = torch.float16 if DEVICE.type == "cuda" else torch.float32
    layouts_and_kernel_choice("4.26", half)
    end_to_end("4.26", fp16=DEVICE.type == "cuda")
    kernels_of_one_replay("4.26", half)
    layouts_and_kernel_choice("4.6", half)


if __name__ == "__main__":
    main()
