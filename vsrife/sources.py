"""Video files in: frames from BestSource, read robustly, timed as the container says.

BestSource is the source filter, but what it reports is not to be trusted on its own:

- **Its rate.** It estimates ``fps`` from the stream (an AVI of 2997/125 fps comes out as 260739/33125, a
  15 fps MKV as 29000/1933) and reports a nominal rate for variable-rate files (a phone recording whose
  first frame lasts 0.185 s is "30 fps"). :func:`probe_times` reads the container's own timestamps with
  ffprobe (packets only, no decoding) instead: frames evenly spaced at a declared or standard rate make a
  constant-rate source at exactly that rate; otherwise the timestamps themselves are the timing. Where the
  stream declares a longer duration than its last packet reaches (an AVI's empty frame slots at its end),
  the last frame is held until then. An AVI with empty slots elsewhere runs at its declared rate (what
  players show), its frames placed by their times.
- **Its reads.** Frame-threaded decoding is not always deterministic: FFmpeg's Theora decoder, for one,
  now and then returns other pictures for frames 549–552 of the FreeCol film (single-threaded it never
  does). BestSource checks every frame against the hash its index recorded and fails one that differs
  ("No frame returned … Retry with threads=1"). So the index is made from a single-threaded decode, once
  per file (an index made frame-threaded had once recorded the wrong pictures: every later read of those
  frames failed, and a wrong decode would have passed); frames are then read frame-threaded, and a frame
  that fails is read again single-threaded, as the message advises. A frame that fails there too means a
  damaged index: it is made again, once.
- **Its length.** A truncated or damaged file decodes to fewer frames than its container declares,
  without an error: :attr:`Source.declared_frames` tells, so that a caller can say so. What the container
  declares is what it presents after its edit list: packets an MP4/MOV edit list hides (ffprobe's ``D``
  flag: those before a stream-copied cut's start, or before 0) are never decoded into frames, by
  BestSource or by a player, and are not counted. When the decoder delivers another number of frames
  than the container presents, each frame it delivers keeps its own time (BestSource's index, matched to
  the packets' timestamps): the first frame starts when it starts, and a frame lost in the middle leaves
  the one before it shown until the next, as a player shows it, so the sound stays in step.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import vapoursynth as vs

from .download import cache_dir
from .errors import SourceError, one_line
from .ffprobe import ffprobe, ffprobe_json, positive_number, video_streams
from .timing import FrameTimes

# rates tried when the container's declared ones do not fit its timestamps
STANDARD_RATES = tuple(Fraction(r) for r in (24, 25, 30, 48, 50, 60, 100, 120)) + tuple(
    Fraction(r * 1000, 1001) for r in (24, 30, 60, 120)
)
RETRY_HINT = "Retry with threads=1"
INDEX_FOLDER = "bsindex-single-threaded"  # under the vsrife cache; "bsindex" held frame-threaded ones
# containers whose frame count (ffprobe's nb_frames) counts coded frames only (an AVI's counts empty slots)
COUNTED_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")
# BestSource's timecodes file gives milliseconds with 2 decimals: a frame's time is within this of its packet's
TIMECODE_PRECISION_S = 1e-5
# containers that time video in slots of the declared rate: an empty slot is a dropped frame, the one before it
# stays on screen, so players show the declared rate whatever the frames present
SLOT_FORMATS = ("avi",)

__all__ = ["RetryingReader", "Source", "SourceError", "StreamTiming", "open_source", "open_video", "probe_times"]


@dataclass(frozen=True)
class Source:
    """A video file opened for :func:`vsrife.rife`: ``rife(source.clip, …, timecodes=source.times)``.

    ``clip`` runs at ``rate`` (the true constant rate, or the nominal rate of a variable-rate file);
    ``times`` is None for a constant-rate file, else every frame's true time; ``start`` is when the first
    frame is shown, in seconds on the container's clock (to keep the audio in step); ``declared_frames``:
    how many frames the container says it holds (None when it does not say), more than ``clip`` has when
    the file ends early.
    """

    clip: vs.VideoNode
    rate: Fraction
    times: FrameTimes | None
    start: Fraction
    declared_frames: int | None = None

    @property
    def duration(self) -> Fraction:
        """Seconds from the first frame's start to the last frame's end."""
        return self.times.duration if self.times is not None else self.clip.num_frames / self.rate

    @property
    def ends_early(self) -> bool:
        """The decoder delivered fewer frames than the container holds (a truncated or damaged file)."""
        return self.declared_frames is not None and self.clip.num_frames < self.declared_frames


@dataclass(frozen=True)
class StreamTiming:
    """What the container says of the video stream's timing."""

    times: FrameTimes  # from the timestamps of the packets the container presents (after its edit list)
    declared: Fraction | None  # the stream's r_frame_rate, if any
    average: Fraction | None  # its avg_frame_rate, if any
    frame_count: int | None = None  # the frames the container presents, where it counts coded frames
    hidden: int = 0  # packets its edit list hides
    slotted: bool = False  # the container times video in slots of the declared rate (SLOT_FORMATS)

    @property
    def empty_slots(self) -> bool:
        """Some of the declared rate's slots hold no frame (an AVI's dropped frames, at any place)."""
        return self.slotted and self.declared is not None and not self.times.fits_rate(self.declared)

    def constant_rate(self) -> Fraction | None:
        """The rate the frames are evenly spaced at (declared first, then standard rates), or None. Frames in
        slots with empty ones between are placed by their times at the declared rate, not read as a
        constant rate of the frames present (a 15 fps AVI holding every sixth frame is not 2.5 fps)."""
        if self.empty_slots:
            return None
        candidates = [r for r in (self.declared, self.average, *STANDARD_RATES, self._spacing_rate()) if r]
        return next((rate for rate in candidates if self.times.fits_rate(rate) and self._ends_on_time(rate)), None)

    def _ends_on_time(self, rate: Fraction) -> bool:
        """The last frame lasts one frame of ``rate``, within half of one (not held to a later end)."""
        frame = 1 / rate
        return abs(self.times.duration - self.times.frames * frame) <= frame / 2

    def nominal_rate(self) -> Fraction:
        """The rate a variable-rate stream is said to run at: its declared rate where players show it (frames
        in slots of it) or where it is within 10 % of its typical frame spacing, else that spacing as a rate."""
        if self.empty_slots:
            return self.declared
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
    be read as a video. The container is read first (quick): a file that is no video is refused before
    BestSource indexes it."""
    if not os.path.exists(path):
        raise SourceError(_no_such_file(os.fspath(path)))
    stream = probe_times(path)
    clip = open_video(path)
    declared = max(stream.times.frames, stream.frame_count or 0)
    if stream.times.frames != clip.num_frames:
        decoded = decoded_times(path, stream.times)
        if decoded is None or decoded.frames != clip.num_frames:  # BestSource cannot say: its rate stands
            rate = clip.fps if clip.fps != 0 else stream.nominal_rate()
            start = int(stream.times.starts[0]) * stream.times.timebase
            return Source(_at_rate(clip, rate), rate, None, start, declared)
        stream = replace(stream, times=decoded)
    start = int(stream.times.starts[0]) * stream.times.timebase
    rate = stream.constant_rate()
    times = None if rate is not None else stream.times
    rate = rate or stream.nominal_rate()
    return Source(_at_rate(clip, rate), rate, times, start, declared)


def decoded_times(path: str | os.PathLike[str], packets: FrameTimes) -> FrameTimes | None:
    """When each frame the decoder delivers starts, as the packet it came from says (BestSource's index
    lists them; its timecodes file rounds them to 0.01 ms). A frame lasts until the next one delivered;
    the last one until the packet after it, or the stream's end. None when BestSource cannot say, or a
    time matches no packet."""
    with tempfile.TemporaryDirectory(prefix="vsrife-") as folder:
        file = Path(folder) / "timecodes.txt"
        try:
            bestsource(str(path), threads=1, timecodes=str(file))
            lines = file.read_text(encoding="utf-8").splitlines()[1:]
        except (vs.Error, OSError, UnicodeDecodeError):
            return None
    try:
        seconds = np.array([float(line) for line in lines if line.strip()]) / 1000
    except ValueError:
        return None
    at = _nearest_packets(seconds, packets)
    if at is None or len(at) < 2 or np.any(np.diff(at) <= 0):
        return None
    following = int(at[-1]) + 1
    end = int(packets.starts[following]) if following < packets.frames else packets.end
    return FrameTimes(packets.starts[at], end, packets.timebase)


def _nearest_packets(seconds: np.ndarray, packets: FrameTimes) -> np.ndarray | None:
    """For each time, the packet that starts at it (within the timecodes' rounding); None if one has none."""
    starts = packets.starts.astype(np.float64) * float(packets.timebase)
    after = np.clip(np.searchsorted(starts, seconds), 1, len(starts) - 1)
    nearer = np.where(np.abs(starts[after] - seconds) < np.abs(starts[after - 1] - seconds), after, after - 1)
    return nearer if np.all(np.abs(starts[nearer] - seconds) <= TIMECODE_PRECISION_S) else None


def _no_such_file(name: str) -> str:
    if os.path.isabs(name):
        return f"{name}: no such file"
    return (
        f"{name}: no such file in {os.getcwd()}; a relative path is taken from the current folder, and vspipe "
        'runs a script from the script\'s own folder: give an absolute path (e.g. -a input="$PWD/NAME")'
    )


def _at_rate(clip: vs.VideoNode, rate: Fraction) -> vs.VideoNode:
    return clip.std.AssumeFPS(fpsnum=rate.numerator, fpsden=rate.denominator)


def open_video(path: str | os.PathLike[str]) -> vs.VideoNode:
    """BestSource's clip of ``path`` (index cached under the vsrife cache); a frame it fails to return is read
    again by a single-threaded instance, from a new index if need be."""
    name = str(path)
    if not hasattr(vs.core, "bs"):
        raise SourceError(
            "BestSource, the source filter vsrife reads files with, is not installed: "
            "pip install vapoursynth-bestsource"
        )
    try:
        if not cached_indexes(name):
            bestsource(name, threads=1)  # the index, from the decode every frame is checked against
        primary = bestsource(name)
    except vs.Error as e:
        raise SourceError(f"{name}: cannot be read as a video ({one_line(e)})") from None
    return RetryingReader(name, primary).clip()


def bestsource(path: str, threads: int = 0, **more: object) -> vs.VideoNode:
    """BestSource's own clip of ``path`` (``threads`` 0: as many as it likes; ``more``: its other arguments),
    its index cached under the vsrife cache (made by this call if missing, with this many threads)."""
    # cachemode 2: the index is always written (1 skips small files, which the next open would index again)
    folder = str(cache_dir() / INDEX_FOLDER)
    return vs.core.bs.VideoSource(path, cachemode=2, cachepath=folder, threads=threads, **more)


def cached_indexes(path: str | os.PathLike[str]) -> list[Path]:
    """The index files BestSource keeps for ``path`` under the vsrife cache (one per track it opened)."""
    absolute = Path(os.path.abspath(path))
    folder = cache_dir() / INDEX_FOLDER / absolute.parent.relative_to(absolute.anchor)
    return sorted(folder.glob(f"{absolute.name}.*.bsindex")) if folder.is_dir() else []


class RetryingReader:
    """Frames of ``primary``, each fetched inside a frame callback. A frame that fails with BestSource's
    "retry with threads=1" is fetched from a single-threaded instance (opened on first need); one that fails
    there too, from a single-threaded instance with a new index (made once)."""

    def __init__(self, path: str, primary: vs.VideoNode) -> None:
        self.path = path
        self.primary = primary
        self._single: vs.VideoNode | None = None
        self._reindexed: vs.VideoNode | None = None
        self._lock = threading.Lock()
        self.retries = 0  # frames read again single-threaded
        self.reindexed = False  # whether the index was made again

    def clip(self) -> vs.VideoNode:
        blank = self.primary.std.BlankClip(keep=True)
        return blank.std.ModifyFrame(blank, self._frame)

    def _frame(self, n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        try:
            return self.primary.get_frame(n)
        except vs.Error as e:
            if RETRY_HINT not in str(e):
                raise
        try:
            return self._single_threaded().get_frame(n)
        except vs.Error as e:
            if RETRY_HINT not in str(e):
                raise
        return self._from_new_index().get_frame(n)

    def _single_threaded(self) -> vs.VideoNode:
        with self._lock:
            self.retries += 1
            if self._single is None:
                self._single = bestsource(self.path, threads=1)
            return self._single

    def _from_new_index(self) -> vs.VideoNode:
        with self._lock:
            if self._reindexed is None:
                for index in cached_indexes(self.path):
                    index.unlink(missing_ok=True)
                self._reindexed = bestsource(self.path, threads=1)
                self.reindexed = True
            return self._reindexed


def probe_times(path: str | os.PathLike[str]) -> StreamTiming:
    """The first video stream's frame times, from the timestamps of the packets it presents (ffprobe; no
    decoding): those its edit list hides are left out, and counted."""
    name = str(path)
    entries = "stream=index,codec_type,time_base,r_frame_rate,avg_frame_rate,nb_frames,start_pts,duration_ts"
    info = ffprobe_json(name, "-show_entries", f"{entries}:stream_disposition=attached_pic:format=format_name")
    video = video_streams(info)
    if not video:
        raise SourceError(f"{name}: has no video stream")
    stream = video[0]
    timebase = positive_number(stream.get("time_base"))
    if not timebase:
        raise SourceError(f"{name}: its video stream has no time base")
    entries = "packet=pts,dts,duration,flags"
    listing = ffprobe(name, "-select_streams", str(stream["index"]), "-show_entries", entries, "-of", "csv=p=0")
    packets, hidden = _presented(listing)
    formats = info.get("format", {}).get("format_name", "").split(",")
    count = _whole(stream.get("nb_frames")) if any(f in formats for f in COUNTED_FORMATS) else None
    return StreamTiming(
        _packet_times(packets, timebase, name, _declared_end(stream)),
        positive_number(stream.get("r_frame_rate")),
        positive_number(stream.get("avg_frame_rate")),
        None if count is None else count - hidden,
        hidden,
        any(f in formats for f in SLOT_FORMATS),
    )


def _presented(listing: str) -> tuple[list[list[str]], int]:
    """The packets of ffprobe's ``pts,dts,duration,flags`` listing that the container presents, as fields,
    and how many its edit list hides (flag ``D``, discard: their frames are decoded for reference only)."""
    rows = [(line.split(",") + ["", "", "", ""])[:4] for line in listing.splitlines() if line.strip()]
    shown = [row for row in rows if "D" not in row[3]]
    return shown, len(rows) - len(shown)


def _declared_end(stream: dict) -> int | None:
    """Where the stream says it ends, in its time base, if it says."""
    start, duration = _whole(stream.get("start_pts")), _whole(stream.get("duration_ts"))
    return None if duration is None else (start or 0) + duration


def _packet_times(
    packets: list[list[str]], timebase: Fraction, name: str, declared_end: int | None = None
) -> FrameTimes:
    """Presentation times of the packets (pts, else dts), sorted; the end is the last one's plus its
    duration (else the typical spacing), or the stream's declared end where that is at least half a frame
    later (the last frame is then held until it)."""
    times, durations = [], []
    for pts, dts, duration, _ in packets:
        stamp = pts if _is_int(pts) else dts
        if _is_int(stamp):
            times.append(int(stamp))
            durations.append(int(duration) if _is_int(duration) else 0)
    if len(times) < 2:
        raise SourceError(f"{name}: its video stream has fewer than 2 timed frames")
    order = np.argsort(np.array(times, dtype=np.int64), kind="stable")
    starts = np.array(times, dtype=np.int64)[order]
    typical = int(np.median(np.diff(starts))) or 1
    end = int(starts[-1]) + (durations[int(order[-1])] or typical)
    if declared_end is not None and 2 * (declared_end - end) >= typical:
        end = declared_end
    return FrameTimes(starts, end, timebase)


def _whole(value: object) -> int | None:
    text = str(value) if value is not None else ""
    return int(text) if _is_int(text) else None


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()
