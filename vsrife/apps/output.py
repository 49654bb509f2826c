"""Where a render's output goes: paths checked before any work, one run at a time per OUTPUT (a lock beside
it), a temporary file beside OUTPUT (named after its process, so that the next run can tell an abandoned
one), and the written file read back before it is renamed over OUTPUT."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .. import download
from ..errors import SourceError
from ..ffprobe import ProbeError, ffprobe_json, tool_errors, video_streams
from ..sources import probe_times
from .terminal import CommandError

LOW_SPACE_BYTES = 1 << 20  # a write that failed with less than this left on the disk: "disk full?"
# what ffmpeg 5.1 prints (and still exits 0) when it could not finish writing the file
WRITE_FAILURES = ("Error writing trailer", "Error closing file")
STATE_SUFFIX = ".parts"  # a spread render's state folder: OUTPUT.parts/


def state_folder(output: Path) -> Path:
    """Where a spread render (``--workers``, ``--cluster``) keeps its job for OUTPUT."""
    return output.with_name(output.name + STATE_SUFFIX)


def check_paths(source: Path, output: Path) -> None:
    """Refuse what cannot work before anything is read: a missing or special input, OUTPUT the input
    itself (by any link), a missing folder."""
    _check_input(source)
    _check_output(source, output)


def _check_input(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except OSError as e:
        raise CommandError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise CommandError(f"{path}: is {_file_kind(mode)}, not a regular file; give a video file")
    if not os.access(path, os.R_OK):
        raise CommandError(f"{path}: cannot be read (permission denied)")


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISDIR: "a directory",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), "not a file")


def _check_output(source: Path, output: Path) -> None:
    if output.is_dir():
        raise CommandError(f"{output}: is a directory; give the output file's name")
    if not output.suffix:
        raise CommandError(f"{output}: has no extension to choose the container by (.mkv, .mp4, .mov, .webm, …)")
    if not output.parent.is_dir():
        raise CommandError(f"{output}: the folder {output.parent} does not exist; create it first")
    if output.exists() and os.path.samefile(source, output):
        same_name = os.path.normpath(source.absolute()) == os.path.normpath(output.absolute())
        how = "" if same_name else " (the same file through a link)"
        raise CommandError(f"{output}: is the input{how}; writing it would destroy the source, give another name")


def lock_path(output: Path) -> Path:
    """The lock a run holds on OUTPUT while it writes it: ``.OUTPUT.lock`` beside it."""
    return output.with_name(f".{output.name}.lock")


@contextmanager
def sole_writer(output: Path) -> Iterator[Path]:
    """Hold OUTPUT for the block: another run to it is refused in one line meanwhile. The lock is the system's
    (``flock`` on :func:`lock_path`), which ends with the process however it ends: a killed run leaves at
    most the empty file, never the lock. The file is removed on the way out (and, by the caller, when the
    process is stopped at once); yields its path."""
    path = lock_path(output)
    descriptor = _locked(path, output)
    try:
        with suppress(OSError):  # who holds it, for the message of a run refused; a full disk may not take it
            os.write(descriptor, f"{os.getpid()}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)  # still held: a run that opened it meanwhile finds it gone, and retries
        os.close(descriptor)


def _locked(path: Path, output: Path) -> int:
    """A descriptor of ``path`` holding its lock (the file made anew if another run removed it meanwhile)."""
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise CommandError(f"{output}: cannot write in {output.parent} ({e.strerror}); nothing was done") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip()
            os.close(descriptor)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise CommandError(
                f"{output}: another vsrife run{who} is writing it; wait for it to end, or give another OUTPUT"
            ) from None
        if _same_file(descriptor, path):
            os.ftruncate(descriptor, 0)
            return descriptor
        os.close(descriptor)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _part_suffix(output: Path) -> str:
    return f".part{output.suffix}"  # ffmpeg picks the container by the last extension


@contextmanager
def temporary_beside(output: Path) -> Iterator[Path]:
    """An empty temporary in OUTPUT's folder (creating it is the check that the folder is writable),
    removed on the way out unless renamed; temporaries of earlier runs whose process is gone are removed."""
    try:
        partial = download.new_part(output, _part_suffix(output))
    except OSError as e:
        raise CommandError(f"{output}: cannot write in {output.parent} ({e.strerror}); nothing was done") from None
    try:
        download.remove_stale_parts(output, _part_suffix(output), max_age_s=None)
        yield partial
    finally:
        partial.unlink(missing_ok=True)


def fate(output: Path, existed: bool) -> str:
    """What became of OUTPUT when a run did not finish."""
    return f"{output} left as it was" if existed else "no output written"


# --- reading the written file back ----------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What a complete output holds."""

    frames: int
    rate: Fraction
    audio_streams: int
    exact: bool  # False when ffmpeg arguments after -- may change the frame count or the streams


@dataclass(frozen=True)
class Written:
    """What ffprobe reads back from a written file."""

    frames: int  # the frames a player shows: packets its edit list hides are not counted
    duration: Fraction
    audio_streams: int
    hidden: int = 0  # packets its edit list hides


@dataclass(frozen=True)
class Verdict:
    """The written file judged: ``problem``, why it is not a complete output (None when it is); ``note``,
    what is worth saying of a complete one."""

    problem: str | None = None
    note: str | None = None


def read_back(path: Path) -> Written:
    """Count the video packets a player decodes into frames (one per frame; not those the edit list hides),
    measure the video's span, count the audio streams."""
    info = ffprobe_json(path, "-count_packets", "-show_streams")
    video = video_streams(info)
    if not video:
        raise ProbeError(str(path), "it holds no video stream")
    try:
        timing = probe_times(path)
        duration, hidden = timing.times.duration, timing.hidden
    except SourceError:
        duration, hidden = Fraction(0), 0
    audio = sum(1 for s in info["streams"] if s.get("codec_type") == "audio")
    return Written(int(video[0].get("nb_read_packets", 0)) - hidden, duration, audio, hidden)


def judge(path: Path, expected: Expected, log: str) -> Verdict:
    """Whether the file ffmpeg wrote is a complete output, and why not, in a few words."""
    try:
        written = read_back(path)
    except ProbeError as e:
        return Verdict(_with_cause(f"unreadable: {e.reason}", path, log))
    problem = _shortfall(written, expected)
    if problem is None:
        problem = next((f"ffmpeg: {line}" for line in tool_errors(log) if line.startswith(WRITE_FAILURES)), None)
    if problem is not None:
        return Verdict(_with_cause(problem, path, log))
    return Verdict(note=_surplus(written, expected))


def _shortfall(written: Written, expected: Expected) -> str | None:
    """What the file lacks of what a complete output holds; None when nothing."""
    if written.frames == 0 or (expected.exact and written.frames < expected.frames):
        hidden = f", {written.hidden} more hidden by its edit list" if written.hidden else ""
        return f"{written.frames} of {expected.frames} frames written{hidden}"
    wanted = expected.frames / expected.rate
    if expected.exact and written.duration < wanted - 1 / expected.rate:
        return f"its video lasts {float(written.duration):.3f} s instead of {float(wanted):.3f} s"
    if expected.exact and written.audio_streams != expected.audio_streams:
        return f"{written.audio_streams} of {expected.audio_streams} audio streams written"
    return None


def _surplus(written: Written, expected: Expected) -> str | None:
    """A complete file with more than was made (ffmpeg repeated frames): kept, and said."""
    if not expected.exact or written.frames <= expected.frames:
        return None
    extra = written.frames - expected.frames
    return (
        f"the file holds {written.frames} frames, {extra} more than the {expected.frames} made (ffmpeg repeated "
        f"{'a frame' if extra == 1 else 'frames'}); every frame made is there, so it was kept"
    )


def _with_cause(problem: str, path: Path, log: str) -> str:
    cause = _write_cause(path, log)
    return problem if cause is None else f"{problem}{'; ' if ':' in problem else ': '}{cause}"


def _write_cause(path: Path, log: str) -> str | None:
    """Why a write may have stopped short, when the log or the disk tell."""
    if "No space left on device" in log:
        return "the disk is full"
    if "File too large" in log:
        return "the file size limit was reached"
    try:
        space = os.statvfs(path.parent)
    except OSError:
        return None
    return "disk full?" if space.f_bavail * space.f_frsize < LOW_SPACE_BYTES else None


def summary(output: Path, frames: int, rate: Fraction, seconds: float) -> str:
    """The line a finished render ends with."""
    shown_rate = str(rate.numerator) if rate.denominator == 1 else f"{rate} ({float(rate):.3f})"
    return (
        f"wrote {output}: {frames} frames at {shown_rate} fps, {float(frames / rate):.2f} s of video, "
        f"in {seconds:.1f} s ({frames / max(seconds, 1e-9):.2f} frames/s)"
    )
