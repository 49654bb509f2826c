"""Frame timing: which source pair and timestep each output frame comes from. Exact rational arithmetic.

Output frame ``n`` of a clip resampled by ``ratio`` (output rate / source rate) shows source time
``n / ratio``, measured in source frames. Its left source frame is ``floor(n / ratio)`` and its timestep
``t`` the fractional part; ``t == 0`` means the output frame *is* that source frame.

The clip keeps its duration: ``N`` source frames become ``ceil(N * ratio)`` output frames. Output frames
that fall after the last source frame (there is nothing to interpolate toward) repeat it.

Sources whose frames are not evenly spaced are placed by their true times (:class:`FrameTimes`, whole
ticks of a time base) at a constant output rate (:class:`VariableRate`). Either way a position costs
constant time (a division, or a binary search), whatever the size of the ratio's terms.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from itertools import accumulate
from pathlib import Path

import numpy as np

from .errors import TimecodesError

MAX_OUTPUT_FRAMES = 2**31 - 1  # VapourSynth counts a clip's frames in a C int
MAX_STEP = 64  # most source frames one output frame may pass over (each is read to plan it)
MAX_TIMEBASE_DENOMINATOR = 2**40  # finer common ticks than this: times are rounded to nanoseconds
TIMECODES_V2_HEADERS = ("# timecode format v2", "# timestamp format v2")


@dataclass(frozen=True)
class Position:
    """Where an output frame sits between two source frames: ``left + t`` with ``0 <= t < 1``."""

    left: int
    right: int
    t: Fraction

    @property
    def is_source_frame(self) -> bool:
        return self.t == 0

    @property
    def nearest(self) -> int:
        """The nearer source frame; the left one up to and excluding ``t = 1/2``."""
        return self.left if self.t < Fraction(1, 2) else self.right


@dataclass(frozen=True)
class ConstantRate:
    """Resampling of ``source_frames`` frames at a constant ``ratio`` (output rate / source rate)."""

    source_frames: int
    ratio: Fraction

    @property
    def output_frames(self) -> int:
        return -(-self.source_frames * self.ratio.numerator // self.ratio.denominator)

    def position(self, n: int) -> Position:
        left, remainder = divmod(n * self.ratio.denominator, self.ratio.numerator)
        last = self.source_frames - 1
        if left >= last:
            return Position(last, last, Fraction(0))
        return Position(left, left + 1, Fraction(remainder, self.ratio.numerator))

    def time_in(self, n: int) -> tuple[int, Fraction]:
        """The source frame on screen at output frame ``n``'s time, and how far through it that time lies (0 to
        1; unlike :meth:`position`, also within the last frame)."""
        left, remainder = divmod(n * self.ratio.denominator, self.ratio.numerator)
        through = Fraction(remainder, self.ratio.numerator)
        last = self.source_frames - 1
        return (left, through) if left < last else (last, left - last + through)

    @property
    def max_step(self) -> int:
        """The most source frames between two consecutive output frames' left source frames."""
        return -(-self.ratio.denominator // self.ratio.numerator)

    def outputs_of(self, left: int) -> range:
        """The output frames whose left source frame is ``left``, in order (constant time, however many)."""
        num, den = self.ratio.numerator, self.ratio.denominator
        first, end = -(-left * num // den), -(-(left + 1) * num // den)
        return range(first, min(end, self.output_frames))


@dataclass(frozen=True, eq=False)
class FrameTimes:
    """When each source frame starts, in whole ticks of ``timebase`` seconds, and when the last one ends.

    Starts never decrease; a frame that starts where the next one starts lasts 0 s and is never shown.
    Build one with :meth:`from_seconds`, :meth:`from_durations` or :func:`read_timecodes`.
    """

    starts: np.ndarray  # int64, one per frame
    end: int
    timebase: Fraction

    @classmethod
    def from_seconds(cls, starts: Sequence[Fraction], end: Fraction) -> FrameTimes:
        """Frame start times and the end of the last frame, in seconds (exact fractions)."""
        if len(starts) < 1:
            raise TimecodesError("no frame times given")
        denominator = math.lcm(*(s.denominator for s in starts), end.denominator)
        if denominator > MAX_TIMEBASE_DENOMINATOR:  # times of no common tick: round to nanoseconds
            denominator = 10**9
        ticks = [round(s * denominator) for s in starts]
        last = round(end * denominator)
        _check_order(ticks, last, Fraction(1, denominator))
        return cls(np.array(ticks, dtype=np.int64), last, Fraction(1, denominator))

    @classmethod
    def from_durations(cls, durations: Sequence[Fraction]) -> FrameTimes:
        """Frames of these durations (seconds), one after another from 0."""
        return cls.from_seconds(list(accumulate(durations[:-1], initial=Fraction(0))), sum(durations, Fraction(0)))

    @property
    def frames(self) -> int:
        return len(self.starts)

    @property
    def duration(self) -> Fraction:
        """Seconds from the first frame's start to the last frame's end."""
        return (self.end - int(self.starts[0])) * self.timebase

    def start(self, j: int) -> Fraction:
        """Frame ``j``'s start in seconds, counted from the first frame's start."""
        return (int(self.starts[j]) - int(self.starts[0])) * self.timebase

    def lasts(self, j: int) -> Fraction:
        """How long frame ``j`` is on screen, in seconds."""
        following = int(self.starts[j + 1]) if j + 1 < self.frames else self.end
        return (following - int(self.starts[j])) * self.timebase

    def fits_rate(self, rate: Fraction, tolerance_ticks: int = 1) -> bool:
        """True when every frame starts where a constant ``rate`` puts it, within ``tolerance_ticks`` (the
        rounding of timestamps to the container's time base)."""
        step = float(1 / (rate * self.timebase))  # ticks per frame
        ideal = np.arange(self.frames, dtype=np.float64) * step
        actual = (self.starts - self.starts[0]).astype(np.float64)
        return bool(np.all(np.abs(actual - ideal) <= tolerance_ticks + 1e-9 * step))


def _check_order(ticks: Sequence[int], end: int, timebase: Fraction) -> None:
    backwards = next((j for j in range(1, len(ticks)) if ticks[j] < ticks[j - 1]), None)
    if backwards is not None:
        raise TimecodesError(
            f"frame {backwards} starts at {float(ticks[backwards] * timebase):.6f} s, before frame "
            f"{backwards - 1} ({float(ticks[backwards - 1] * timebase):.6f} s); frame times must not decrease"
        )
    if end <= ticks[-1]:
        raise TimecodesError(
            f"the last frame ends at {float(end * timebase):.6f} s, not after its start "
            f"({float(ticks[-1] * timebase):.6f} s)"
        )


def read_timecodes(path: str | os.PathLike[str], frames: int) -> FrameTimes:
    """A timecodes v2 file (mkvmerge's format; BestSource's ``timecodes=`` writes it): a header line
    ``# timecode format v2`` (or ``# timestamp format v2``), then one start time per frame in milliseconds.
    ``frames`` lines give the starts, the last frame lasting as long as the one before it; ``frames + 1``
    lines give the end of the last frame too."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TimecodesError(f"cannot read {str(path)!r} ({e.__class__.__name__}: {e})") from None
    if not lines or lines[0].strip().lower() not in TIMECODES_V2_HEADERS:
        raise TimecodesError(f"{str(path)!r} is not a timecodes v2 file (first line '# timecode format v2')")
    values = [line.strip() for line in lines[1:] if line.strip() and not line.lstrip().startswith("#")]
    times = []
    for number, text in enumerate(values, start=1):
        try:
            times.append(Fraction(text) / 1000)
        except ValueError:
            raise TimecodesError(f"{str(path)!r} line {number + 1}: {text!r} is not a time in ms") from None
    return times_for_frames(times, frames, f"{str(path)!r}")


def times_for_frames(times: Sequence[Fraction], frames: int, what: str) -> FrameTimes:
    """``frames`` start times, or ``frames + 1`` (the last one the end); with ``frames`` starts the last
    frame lasts as long as the one before it."""
    if len(times) not in (frames, frames + 1) or frames < 2:
        raise TimecodesError(
            f"{what} has {len(times)} times; the clip has {frames} frames (give {frames} start "
            f"times, or {frames + 1} with the end of the last frame)"
        )
    if len(times) == frames:
        times = [*times, times[-1] + (times[-1] - times[-2])]
    return FrameTimes.from_seconds(list(times[:-1]), times[-1])


@dataclass(frozen=True, eq=False)
class VariableRate:
    """Source frames at their own times (:class:`FrameTimes`) resampled to a constant ``rate`` frames/s.

    Output frame ``n`` shows the source at ``n / rate`` seconds after the first frame's start: within the
    source frame displayed then, ``t`` is how far through that frame's duration the time lies. Output
    length: ``ceil(duration × rate)``.
    """

    times: FrameTimes
    rate: Fraction

    @property
    def source_frames(self) -> int:
        return self.times.frames

    @cached_property
    def _ticks_per_output_frame(self) -> Fraction:
        return 1 / (self.rate * self.times.timebase)

    @property
    def output_frames(self) -> int:
        return math.ceil(self.times.duration * self.rate)

    @cached_property
    def max_step(self) -> int:
        """The most source frames that start within one output frame's time (two pointers, vectorized)."""
        starts = self.times.starts
        reach = min(math.floor(self._ticks_per_output_frame), self.times.end - int(starts[0]))
        within = np.searchsorted(starts, starts + reach, side="right") - np.arange(len(starts))
        return max(1, int(within.max()))

    def outputs_of(self, left: int) -> range:
        """The output frames whose left source frame is ``left``, in order (constant time, however many)."""
        origin, ticks = int(self.times.starts[0]), self._ticks_per_output_frame
        first = math.ceil((int(self.times.starts[left]) - origin) / ticks)
        end = math.ceil((int(self.times.starts[left + 1]) - origin) / ticks)
        return range(first, min(end, self.output_frames))

    def time_in(self, n: int) -> tuple[int, Fraction]:
        """The source frame on screen at output frame ``n``'s time, and how far through its duration that time
        lies (0 to 1; unlike :meth:`position`, also within the last frame)."""
        time, left = self._time_and_left(n)
        start = int(self.times.starts[left])
        following = int(self.times.starts[left + 1]) if left + 1 < self.source_frames else self.times.end
        return left, (time - start) / (following - start)

    def position(self, n: int) -> Position:
        time, left = self._time_and_left(n)
        last = self.source_frames - 1
        if left >= last:
            return Position(last, last, Fraction(0))
        start, following = int(self.times.starts[left]), int(self.times.starts[left + 1])
        return Position(left, left + 1, (time - start) / (following - start))

    def _time_and_left(self, n: int) -> tuple[Fraction, int]:
        """Output frame ``n``'s time in ticks, and the source frame on screen then."""
        time = int(self.times.starts[0]) + n * self._ticks_per_output_frame
        return time, int(np.searchsorted(self.times.starts, math.floor(time), side="right")) - 1


Timing = ConstantRate | VariableRate
