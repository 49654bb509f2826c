"""``vsrife smooth``'s options: the values typed on the command line, checked, and what they ask of
:func:`vsrife.rife`."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..variants import DEFAULT_MODEL
from .terminal import CommandError

DEFAULT_CODEC = "libx264"
CONTAINER_CODECS = {".webm": "libvpx-vp9"}  # containers that do not take H.264
# still pairs are output as source frames; see docs/scenes.md ("Still frames") for the measurements behind it
STATIC_THRESHOLD = 0.01
MAX_FPS = Fraction(1000)  # a higher output rate is refused unless --max-fps allows it


@dataclass(frozen=True)
class Options:
    input: Path
    output: Path
    fps: Fraction | None = Fraction(60)
    factor: Fraction | None = None
    max_fps: Fraction = MAX_FPS
    model: str = DEFAULT_MODEL
    scale: float = 1.0
    device: str | None = None
    sc: bool = True
    dedup: bool = False
    static_threshold: float | None = STATIC_THRESHOLD
    codec: str | None = None  # None: the container's default (CONTAINER_CODECS, else DEFAULT_CODEC)
    crf: int = 18
    preset: str = "slow"
    pix_fmt: str | None = None  # None: the source's, RGB as 4:2:0
    extra: tuple[str, ...] = field(default_factory=tuple)  # for ffmpeg, after --
    quiet: bool = False
    verbose: bool = False  # the decoder's own messages too

    @property
    def video_codec(self) -> str:
        return self.codec or CONTAINER_CODECS.get(self.output.suffix.lower(), DEFAULT_CODEC)


def parse_rate(flag: str, text: str) -> Fraction:
    """``--fps`` / ``--factor``: a positive N or N/D (decimals allowed)."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise CommandError(f"{flag}: {text!r} is not a rate; give N or N/D, e.g. 60 or 60000/1001") from None
    if value <= 0:
        raise CommandError(f"{flag}: must be above 0, not {text}")
    return value


def parse_scale(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CommandError(f"--scale: {text!r} is not a number; give 0.25, 0.5, 1, 2 or 4") from None


def parse_threshold(text: str | None) -> float | None:
    """``--static-threshold``: a number from 0 to 1, or ``none`` (always interpolate); unset: the default."""
    if text is None:
        return STATIC_THRESHOLD
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise CommandError(f"--static-threshold: {text!r} is not a number from 0 to 1 (or none)")
    return value


def rife_arguments(options: Options) -> dict[str, object]:
    """The keyword arguments of :func:`vsrife.rife` these options stand for (the script, the in-process
    graph and the spread render's tasks all use them, so they cannot drift apart)."""
    rate = options.factor if options.factor is not None else options.fps
    prefix = "factor" if options.factor is not None else "fps"
    return {
        "model": options.model,
        "scale": options.scale,
        "sc": options.sc,
        "dedup": options.dedup,
        "static_threshold": options.static_threshold,
        "device": options.device,
        f"{prefix}_num": rate.numerator,
        f"{prefix}_den": rate.denominator,
    }
