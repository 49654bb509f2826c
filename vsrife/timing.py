"""Frame timing: which source pair and timestep each output frame comes from. Exact rational arithmetic.

Output frame ``n`` of a clip resampled by ``ratio`` (output rate / source rate) shows source time
``n / ratio``, measured in source frames. Its left source frame is ``floor(n / ratio)`` and its timestep
``t`` the fractional part; ``t == 0`` means the output frame *is* that source frame.

The clip keeps its duration: ``N`` source frames become ``ceil(N * ratio)`` output frames. Output frames
that fall after the last source frame (there is nothing to interpolate toward) repeat it.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from itertools import accumulate
from typing import Protocol

from .errors import ParameterError


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

    def __post_init__(self) -> None:
        if self.ratio <= 0:
            raise ParameterError(f"factor: the rate ratio must be above 0, not {self.ratio}")
        if self.source_frames < 2:
            raise ParameterError(f"clip: needs at least 2 frames to interpolate, not {self.source_frames}")

    @property
    def output_frames(self) -> int:
        return -(-self.source_frames * self.ratio.numerator // self.ratio.denominator)

    def position(self, n: int) -> Position:
        left, remainder = divmod(n * self.ratio.denominator, self.ratio.numerator)
        last = self.source_frames - 1
        if left >= last:
            return Position(last, last, Fraction(0))
        return Position(left, left + 1, Fraction(remainder, self.ratio.numerator))

    @property
    def max_step(self) -> int:
        """The most source frames between two consecutive output frames' left source frames."""
        return -(-self.ratio.denominator // self.ratio.numerator)

    def left_indices_per_cycle(self) -> tuple[int, list[int]]:
        """``(cycle, offsets)`` for ``std.SelectEvery``: every ``cycle`` source frames give one output frame
        per offset, whose left source frame is that offset into the cycle."""
        num, den = self.ratio.numerator, self.ratio.denominator
        if den == 1:  # SelectEvery needs a cycle of at least 2; two periods are the same pattern
            num, den = 2 * num, 2
        return den, [j * den // num for j in range(num)]


@dataclass(frozen=True)
class VariableRate:
    """A variable-rate source (frames of their own durations, in seconds) resampled to ``rate`` frames/s.

    Output frame ``n`` shows the source at time ``n / rate``: within the source frame displayed then,
    ``t`` is how far through that frame's duration the time lies. Output length: ``ceil(total × rate)``.
    """

    durations: tuple[Fraction, ...]
    rate: Fraction

    def __post_init__(self) -> None:
        if len(self.durations) < 2:
            raise ParameterError(f"clip: needs at least 2 frames to interpolate, not {len(self.durations)}")

    @property
    def source_frames(self) -> int:
        return len(self.durations)

    @cached_property
    def starts(self) -> tuple[Fraction, ...]:
        return tuple(accumulate(self.durations[:-1], initial=Fraction(0)))

    @property
    def output_frames(self) -> int:
        return math.ceil(sum(self.durations) * self.rate)

    @property
    def max_step(self) -> int:
        return math.ceil(1 / (self.rate * min(self.durations))) + 1

    def position(self, n: int) -> Position:
        time = Fraction(n) / self.rate
        left = bisect_right(self.starts, time) - 1
        last = self.source_frames - 1
        if left >= last:
            return Position(last, last, Fraction(0))
        return Position(left, left + 1, (time - self.starts[left]) / self.durations[left])

    def lefts(self) -> list[int]:
        return [self.position(n).left for n in range(self.output_frames)]


Timing = ConstantRate | VariableRate


def rate_ratio(
    source_fps: Fraction,
    factor_num: int,
    factor_den: int,
    fps_num: int | None,
    fps_den: int | None,
) -> Fraction:
    """Output rate / source rate, from a factor or (taking precedence) a target rate."""
    for name, value in (("factor_num", factor_num), ("factor_den", factor_den)):
        _require_positive_int(name, value)
    if fps_num is None and fps_den is None:
        return Fraction(factor_num, factor_den)
    if fps_num is None:
        raise ParameterError("fps_num: give fps_num too when fps_den is set (fps_den defaults to 1)")
    fps_den = 1 if fps_den is None else fps_den
    _require_positive_int("fps_num", fps_num)
    _require_positive_int("fps_den", fps_den)
    if source_fps == 0:
        raise ParameterError(
            "fps_num: the clip has no constant frame rate (fps 0); set one with std.AssumeFPS, or use factor_num"
        )
    return Fraction(fps_num, fps_den) / source_fps


def _require_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name}: must be a whole number of at least 1, not {value!r}")


@dataclass(frozen=True)
class Copy:
    """Output a source frame as it is (bit-exact)."""

    source: int

    @property
    def shown(self) -> int:
        return self.source


@dataclass(frozen=True)
class Blend:
    """Synthesize the frame at ``t`` (0 < t < 1) between two source frames."""

    left: int
    right: int
    t: Fraction

    @property
    def shown(self) -> int:
        """The source frame this one stands nearest to."""
        return self.left if self.t < Fraction(1, 2) else self.right


Action = Copy | Blend


@dataclass(frozen=True)
class PlanOptions:
    """How output frames are made; see :func:`vsrife.rife` for the meaning of each."""

    sc: bool = True
    static_threshold: float | None = 0.0
    dedup: bool = False
    dedup_threshold: float = 0.0
    max_hold: int = 3


class Facts(Protocol):
    cut_before: bool

    def same_as_previous(self, threshold: float) -> bool: ...


class FramePlanner:
    """Decides, for each output frame, which source frames make it and how.

    ``facts(j)`` gives what is known of source frame ``j`` (scene change before it, difference to the
    previous frame); the planner only asks for frames within :meth:`window` of the output frame's left
    source frame.
    """

    def __init__(self, timing: Timing, options: PlanOptions) -> None:
        self.timing = timing
        self.options = options
        self.last = timing.source_frames - 1
        self._reach = options.max_hold if options.dedup else 0
        self._step = timing.max_step

    def window(self) -> tuple[int, int]:
        """First and last source offset, relative to ``position(n).left``, that planning ``n`` may read."""
        return -(self._reach + self._step + 1), self._step + self._reach + 2

    def plan(self, n: int, facts: Callable[[int], Facts]) -> Action:
        pos = self.timing.position(n)
        if self.options.dedup:
            held = self._plan_held_drawing(pos, facts)
            if held is not None:
                return held
        if pos.is_source_frame:
            return Copy(pos.left)
        return self._plan_pair(pos.left, pos.right, pos.t, facts)

    def scene_change(self, n: int, facts: Callable[[int], Facts], action: Action) -> tuple[bool, bool]:
        """(_SceneChangePrev, _SceneChangeNext) for output frame ``n`` (planned as ``action``): a scene change
        lies between the source frames shown by it and its neighbouring output frames."""
        shown = action.shown
        before = self.plan(n - 1, facts).shown if n > 0 else shown
        after = self.plan(n + 1, facts).shown if n + 1 < self.timing.output_frames else shown
        return self._cut_within(before, shown, facts), self._cut_within(shown, after, facts)

    def _plan_pair(self, left: int, right: int, t: Fraction, facts: Callable[[int], Facts]) -> Action:
        nearest = left if t < Fraction(1, 2) else right
        if self.options.sc and facts(right).cut_before:
            return Copy(nearest)
        still = self.options.static_threshold
        if still is not None and facts(right).same_as_previous(still):
            return Copy(nearest)
        return Blend(left, right, t)

    def _plan_held_drawing(self, pos: Position, facts: Callable[[int], Facts]) -> Action | None:
        """Between two distinct drawings, each placed at its first frame; None where plain rules apply
        (no repeat around, a hold longer than ``max_hold`` — a real pause —, a cut, or the clip's end)."""
        limit = self.options.max_hold
        first = pos.left
        while first > 0 and self._repeats(first, facts):
            first -= 1
            if pos.left - first >= limit:
                return None
        following = pos.left + 1
        while following <= self.last and self._repeats(following, facts):
            following += 1
            if following - first > limit:
                return None
        if following > self.last or following - first == 1 or facts(following).cut_before:
            return None  # nothing to move toward: the clip's end, no repeat, or a cut (the hold runs up to it)
        t = (pos.left + pos.t - first) / (following - first)
        return Copy(first) if t == 0 else self._plan_pair(first, following, t, facts)

    def _repeats(self, j: int, facts: Callable[[int], Facts]) -> bool:
        fact = facts(j)
        return not fact.cut_before and fact.same_as_previous(self.options.dedup_threshold)

    @staticmethod
    def _cut_within(a: int, b: int, facts: Callable[[int], Facts]) -> bool:
        return any(facts(j).cut_before for j in range(min(a, b) + 1, max(a, b) + 1))
