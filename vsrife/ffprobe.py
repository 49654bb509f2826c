"""Running ffprobe, and reading what ffmpeg's tools say when they fail: the one place for both."""

from __future__ import annotations

import json
import os
import re
import subprocess
from fractions import Fraction

from .errors import SourceError

PROBE_TIMEOUT_S = 600
# ffmpeg lines that only say that something above them failed
GENERIC_LINES = ("Error initializing output stream", "Conversion failed!")


class ProbeError(SourceError):
    """ffprobe cannot read a file; ``reason`` is what it said, on one line."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: cannot be read as a video ({reason})")
        self.path = path
        self.reason = reason


class ToolMissing(SourceError, FileNotFoundError):
    """ffmpeg or ffprobe is not installed."""

    def __init__(self, tool: str) -> None:
        super().__init__(f"{tool} not found: install ffmpeg (Debian: apt-get install ffmpeg)")


def as_input(path: str | os.PathLike[str]) -> str:
    """A local file's name as ffmpeg's tools take it: absolute, so that a name like ``-clip.mp4`` is not
    read as an option."""
    name = os.fspath(path)
    return os.path.abspath(name) if os.path.exists(name) else name


def ffprobe(path: str | os.PathLike[str], *args: str) -> str:
    """What ffprobe prints for ``path`` with ``args`` (errors only on its stderr); :class:`ProbeError` with
    its own words when it cannot read the file."""
    try:
        result = subprocess.run(
            ["ffprobe", "-v", "error", *args, as_input(path)], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except FileNotFoundError:
        raise ToolMissing("ffprobe") from None
    if result.returncode != 0:
        named = f"{as_input(path)}: "
        reasons = [line.removeprefix(named) for line in tool_errors(result.stderr)]
        raise ProbeError(os.fspath(path), "; ".join(reasons[:3]) or "ffprobe failed")
    return result.stdout


def ffprobe_json(path: str | os.PathLike[str], *args: str) -> dict:
    """ffprobe's JSON for ``path``, always with a ``streams`` list."""
    info = json.loads(ffprobe(path, *args, "-of", "json") or "{}")
    info.setdefault("streams", [])
    return info


def positive_number(text: str | None) -> Fraction | None:
    """A number as ffprobe writes one (``30000/1001``, ``4.000000``) when it is above 0, else None (``0/0``,
    ``N/A``, nothing)."""
    try:
        value = Fraction(text) if text else None
    except (ValueError, ZeroDivisionError):
        return None
    return value if value and value > 0 else None


def video_streams(info: dict) -> list[dict]:
    """The video streams of ffprobe's ``-show_streams``, cover pictures left out."""
    return [
        s
        for s in info["streams"]
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]


def tool_errors(log: str) -> list[str]:
    """The lines of an ffmpeg tool's log that say something, without the ``[muxer @ 0x…]`` addresses,
    repeats, and the generic lines that only say that something above failed."""
    lines: list[str] = []
    for raw in log.splitlines():
        line = re.sub(r"^\[([^\s,@]+)[^\]]* @ 0x[0-9a-f]+\]\s*", r"\1: ", raw.strip())
        if line and not line.startswith(GENERIC_LINES) and line not in lines:
            lines.append(line)
    return [line.rstrip(".") for line in lines] or log.strip().splitlines()[-1:]
