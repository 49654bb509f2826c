"""The frame planner: for each output frame, which source frames make it and how — shown as it is, or
synthesized by RIFE between two of them — from the timing (:mod:`vsrife.timing`) and what is known of the
source frames (scene changes, still and repeated frames: :mod:`vsrife.scene`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from .timing import Position, Timing

DEFAULT_DEDUP_THRESHOLD = 0.02


@dataclass(frozen=True)
class Copy:
    """Output a source frame as it is (bit-exact)."""

    source: int

    @property
    def shown(self) -> int:
        return self.source


@dataclass(frozen=True)
class Synthesize:
    """Make the frame at ``t`` (0 < t < 1) between two source frames with the network."""

    left: int
    right: int
    t: Fraction

    @property
    def shown(self) -> int:
        """The source frame this one stands nearest to."""
        return self.left if self.t < Fraction(1, 2) else self.right


Action = Copy | Synthesize


@dataclass(frozen=True)
class PlanOptions:
    """How output frames are made; see :func:`vsrife.rife` for the meaning of each (and the same defaults)."""

    sc: bool = True
    static_threshold: float | None = 0.0
    dedup: bool = False
    dedup_threshold: float = DEFAULT_DEDUP_THRESHOLD
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
        return Synthesize(left, right, t)

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
