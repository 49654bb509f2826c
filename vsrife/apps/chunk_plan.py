"""The plan of a spread render: the output frames split into chunks of at least a given length, starting at
scene cuts where there are any, from the very timing :func:`vsrife.rife` gives ``vsrife smooth``'s graph."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import vapoursynth as vs

from .. import params, scene
from ..progress import Progress
from ..sources import Source
from ..timing import Timing
from .options import Options, rife_arguments

CHUNK_FORMAT = "nut"  # holds any codec, at the exact time base of the rate
CPU_CHUNK_SECONDS = Fraction(10)
GPU_CHUNK_SECONDS = Fraction(60)  # each GPU chunk starts a fresh process (torch, CUDA): seconds of overhead


@dataclass(frozen=True)
class Chunk:
    """Output frames ``start`` to ``end - 1``, rendered and encoded by one task."""

    index: int
    start: int
    end: int

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def name(self) -> str:
        return f"chunk-{self.index:05d}.{CHUNK_FORMAT}"


@dataclass(frozen=True)
class Plan:
    total: int  # output frames
    rate: Fraction  # output frames per second
    chunks: tuple[Chunk, ...]
    cuts: tuple[int, ...]  # output frames that begin a new shot

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "rate": str(self.rate),
            "chunks": [[c.start, c.end] for c in self.chunks],
            "cuts": list(self.cuts),
        }

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        chunks = tuple(Chunk(i, start, end) for i, (start, end) in enumerate(data["chunks"]))
        return cls(int(data["total"]), Fraction(data["rate"]), chunks, tuple(data["cuts"]))


def make_plan(source: Source, options: Options, chunk_seconds: Fraction, quiet: bool = True) -> Plan:
    """Chunks of at least ``chunk_seconds`` of output, starting at scene cuts where there are any."""
    timing, rate = output_timing(source, options)
    least = max(1, math.ceil(chunk_seconds * rate))
    starts = shot_starts(source.clip, quiet) if options.sc else []
    cuts = [first_output_showing(timing, j) for j in starts]
    edges = chunk_edges(timing.output_frames, cuts, least)
    chunks = tuple(Chunk(i, a, b) for i, (a, b) in enumerate(zip(edges, edges[1:], strict=False)))
    return Plan(timing.output_frames, rate, chunks, tuple(cuts))


def output_timing(source: Source, options: Options) -> tuple[Timing, Fraction]:
    """The timing :func:`vsrife.rife` gives ``smooth``'s graph (its output frames and their positions), and
    the output rate. The tasks check that their graph has as many frames."""
    arguments = rife_arguments(options)
    factor = (arguments.get("factor_num", 2), arguments.get("factor_den", 1))
    request = params.rate_request(*factor, arguments.get("fps_num"), arguments.get("fps_den"))
    timing = params.clip_timing(source.clip.num_frames, source.clip.fps, request, source.times)
    return timing, request.rates(source.clip.fps)[0]


def shot_starts(clip: vs.VideoNode, quiet: bool = True) -> list[int]:
    """Source frames that begin a new shot, found by the detector :func:`vsrife.rife` runs (every frame is
    read once)."""
    marked = scene.sc_detect(clip)
    progress = Progress(quiet)
    if not quiet:
        print("vsrife smooth: finding scene cuts", file=sys.stderr, flush=True)
    starts = []
    for n, frame in enumerate(marked.frames(close=True)):
        if n > 0 and frame.props[scene.PREV]:
            starts.append(n)
        progress(n + 1, clip.num_frames)
    return starts


def first_output_showing(timing: Timing, source_frame: int) -> int:
    """The first output frame whose nearest source frame is ``source_frame`` or a later one."""
    low, high = 0, timing.output_frames
    while low < high:
        middle = (low + high) // 2
        if timing.position(middle).nearest < source_frame:
            low = middle + 1
        else:
            high = middle
    return low


def chunk_edges(total: int, cuts: Sequence[int], least: int) -> list[int]:
    """Where chunks begin, then ``total``: at cuts, each chunk at least ``least`` frames long (a shorter
    whole excepted); a stretch longer than twice that without a usable cut is split evenly."""
    at_cuts = [0]
    for cut in sorted(set(cuts)):
        if cut - at_cuts[-1] >= least and total - cut >= least:
            at_cuts.append(cut)
    at_cuts.append(total)
    edges = []
    for start, end in zip(at_cuts, at_cuts[1:], strict=False):
        pieces = (end - start) // least if end - start > 2 * least else 1
        edges += [start + (end - start) * k // pieces for k in range(pieces)]
    return edges + [total]
