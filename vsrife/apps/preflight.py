"""What ``vsrife smooth`` checks before any work besides the paths (:mod:`~vsrife.apps.output`): the encoder's
options against what that encoder takes, and the output rate against what the container can time and what
the source suggests."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from . import ffmpeg
from .ffmpeg import Media
from .options import Options
from .terminal import CommandError

# containers that time frames in whole ticks of a fixed clock, ticks a second: at most that many frames a second
CONTAINER_TICKS = {
    ".mkv": 1000, ".mka": 1000, ".mk3d": 1000, ".webm": 1000, ".flv": 1000, ".ts": 90000, ".m2ts": 90000,
    ".mts": 90000,
}  # fmt: skip
# x264's and x265's presets; libvpx-vp9 takes them as its speed (ffmpeg.VP9_SPEED; slower and after: 0)
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")  # fmt: skip
# the encoders' own quality scales (ffmpeg's option ranges are wider: x264's reaches FLT_MAX, and x264 clamps
# to 51 without a word)
CRF_RANGES = {"libx264": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63), "libsvtav1": (0, 63),
              "libaom-av1": (0, 63)}  # fmt: skip


def check_encoder(options: Options) -> None:
    """The encoder exists in this ffmpeg and takes the options given for it (a stream copy takes none)."""
    if options.video_codec != "copy":
        check_encoder_options(options, ffmpeg.check_encoder(options.video_codec))


def check_encoder_options(options: Options, encoder_help: str) -> None:
    """``--preset``, ``--crf`` and ``--pix-fmt`` against what the chosen encoder takes (``encoder_help``:
    ``ffmpeg -h encoder=CODEC``); one line naming the option."""
    codec = options.video_codec
    if options.preset not in X26X_PRESETS:
        names = ", ".join(X26X_PRESETS)
        raise CommandError(f"--preset {options.preset}: not a preset name; give one of {names}")
    low, high = CRF_RANGES.get(codec, (-math.inf, math.inf))
    if not low <= options.crf <= high:
        raise CommandError(f"--crf {options.crf}: {codec} takes {low} (best) to {high}")
    if options.pix_fmt is not None:
        allowed = supported_pixel_formats(encoder_help)
        if allowed and options.pix_fmt not in allowed:
            raise CommandError(f"--pix-fmt {options.pix_fmt}: {codec} takes {', '.join(allowed)}")


def supported_pixel_formats(encoder_help: str) -> list[str]:
    """The pixel formats ``ffmpeg -h encoder=…`` lists (none for an encoder that does not say)."""
    found = re.search(r"Supported pixel formats:(.*)", encoder_help)
    return found.group(1).split() if found else []


def check_rate(options: Options, media: Media) -> None:
    """Refuse an output rate the container cannot time, or one above ``options.max_fps``, saying how many
    frames and seconds were planned. With ``--factor`` the source's rate is its container's average here; the
    graph's exact rate is checked again once built (:func:`check_container_rate`)."""
    rate = output_rate(options, media.rate)
    check_container_rate(options, rate, media.rate)
    if rate > options.max_fps:
        frames = math.ceil(media.duration * rate)
        raise CommandError(
            f"{asked(options, media.rate)}: {frames} frames planned for {float(media.duration):.2f} s of video; "
            f"rates above {shown(options.max_fps)} fps are refused unless --max-fps allows them (--max-fps "
            f"{math.ceil(rate)})"
        )


def output_rate(options: Options, source_rate: Fraction) -> Fraction:
    return options.fps if options.fps is not None else options.factor * source_rate


def check_container_rate(options: Options, rate: Fraction, source_rate: Fraction) -> None:
    """Refuse an output rate at which the container would give frames equal timestamps."""
    suffix = options.output.suffix.lower()
    ticks = CONTAINER_TICKS.get(suffix)
    if ticks is not None and rate > ticks:
        tick = "whole milliseconds" if ticks == 1000 else f"ticks of 1/{ticks} s"
        raise CommandError(
            f"{asked(options, source_rate)}: {suffix} times frames in {tick}, so at most {ticks} fps (more would "
            "share timestamps); choose a lower rate or another container (.mp4, .mov, .nut)"
        )


def asked(options: Options, source_rate: Fraction) -> str:
    """The rate option as given, with the rate it makes for ``--factor``."""
    if options.fps is not None:
        return f"--fps {shown(options.fps)}"
    rate = output_rate(options, source_rate)
    return f"--factor {shown(options.factor)} ({shown(source_rate)} fps × {shown(options.factor)} = {shown(rate)} fps)"


def shown(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value} ({float(value):.3f})"
