"""Frame timing: which source pair and timestep each output frame comes from. Exact rational arithmetic.

Output frame ``n`` of a clip resampled by ``ratio`` (output rate / source rate) shows source time
``n / ratio``, measured in source frames. Its left source frame is ``floor(n / ratio)`` and its timestep
``t`` the fractional part; ``t == 0`` means the output frame *is* that source frame.

The clip keeps its duration: ``N`` source frames become ``ceil(N * ratio)`` output frames. Output frames
that fall after the last source frame (there is nothing to interpolate toward) repeat it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

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

    def left_indices_per_cycle(self) -> tuple[int, list[int]]:
        """``(cycle, offsets)`` for ``std.SelectEvery``: every ``cycle`` source frames give one output frame
        per offset, whose left source frame is that offset into the cycle."""
        num, den = self.ratio.numerator, self.ratio.denominator
        if den == 1:  # SelectEvery needs a cycle of at least 2; two periods are the same pattern
            num, den = 2 * num, 2
        return den, [j * den // num for j in range(num)]


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
