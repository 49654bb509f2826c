"""``vsrife smooth INPUT OUTPUT``: any video to a new frame rate in one command.

The VapourSynth graph (source filter → :func:`vsrife.rife` → y4m) is built in this process and its frames
are piped into ffmpeg, which takes the audio, subtitles and chapters from the input. The source's pixel
format is kept (a 10-bit source stays 10-bit) where y4m carries it; RGB becomes 4:2:0 YUV, which every
player takes. Paths are checked before any work: OUTPUT must not be the input, its folder must exist and
be writable. The output is written to a temporary file beside OUTPUT (named after this process, so that
the next run can tell an abandoned one), read back with ffprobe, and renamed over OUTPUT only when it
holds every frame: a failure, Ctrl-C, SIGTERM or SIGHUP leaves OUTPUT as it was and no temporary.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

from .. import download
from ..errors import VsRifeError
from ..sources import Source, SourceError, open_source, probe_times
from ..variants import DEFAULT_MODEL

AUDIO_BITRATE = "192k"
# audio codecs each container takes as they are; others are re-encoded (AAC, or Opus for WebM)
COPYABLE_AUDIO = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus"},
    ".m4v": {"aac", "mp3", "ac3", "eac3", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"},
    ".webm": {"opus", "vorbis"},
}
DEFAULT_CODEC = "libx264"
CONTAINER_CODECS = {".webm": "libvpx-vp9"}  # containers that do not take H.264
CRF_CODECS = {"libx264", "libx265", "libsvtav1", "libaom-av1", "libvpx-vp9"}
PRESET_CODECS = {"libx264", "libx265"}  # named presets (slow, medium, …); others take theirs via -- args
# --preset as libvpx-vp9's -cpu-used (0 slowest … 5 fastest in its "good" mode)
VP9_SPEED = {"ultrafast": 5, "superfast": 5, "veryfast": 5, "faster": 4, "fast": 3, "medium": 2, "slow": 1}
TEXT_SUBTITLES = {"subrip", "ass", "ssa", "mov_text", "webvtt", "text"}
# still pairs are output as source frames; see the README ("Still frames") for the measurements behind it
STATIC_THRESHOLD = 0.01
Y4M_STDIN = ("-f", "yuv4mpegpipe", "-i", "-")
EXIT_INTERRUPTED = 130
STOP_GRACE_S = 5.0
LOW_SPACE_BYTES = 1 << 20  # a write that failed with less than this left on the disk: "disk full?"
# ffmpeg lines that only say that something above them failed
GENERIC_FFMPEG_LINES = ("Error initializing output stream", "Conversion failed!")
MAX_FFMPEG_LINES = 3
MAX_LOG_BYTES = 1 << 20
# what ffmpeg 5.1 prints (and still exits 0) when it could not finish writing the file
WRITE_FAILURES = ("Error writing trailer", "Error closing file")
# library parameter → the smooth option that sets it, for messages
CLI_FLAGS = {
    "fps_num": "--fps",
    "fps_den": "--fps",
    "factor_num": "--factor",
    "factor_den": "--factor",
    "scale": "--scale",
    "model": "--model",
    "device": "--device",
    "dedup": "--dedup",
    "static_threshold": "--static-threshold",
}


class SmoothError(VsRifeError):
    """A problem with the input, the output or the run, reported as one line."""

    def __init__(self, message: str) -> None:
        vs.Error.__init__(self, f"vsrife smooth: {message}")


class RunFailed(Exception):
    """The run failed after the output was begun; the message says why, without what became of OUTPUT."""


class Unreadable(Exception):
    """ffprobe cannot read a file; the message is its reason."""


@dataclass(frozen=True)
class Options:
    input: Path
    output: Path
    fps: Fraction | None = Fraction(60)
    factor: Fraction | None = None
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
    extra: tuple[str, ...] = field(default_factory=tuple)
    quiet: bool = False

    @property
    def video_codec(self) -> str:
        return self.codec or CONTAINER_CODECS.get(self.output.suffix.lower(), DEFAULT_CODEC)


@dataclass(frozen=True)
class Media:
    """What ffprobe says of the input."""

    video_codec: str
    audio: tuple[str, ...]
    subtitles: tuple[str, ...]
    start: Fraction = Fraction(0)  # the container's start time, seconds: the other streams' zero


# --- values typed on the command line ------------------------------------------------------------------


def parse_rate(flag: str, text: str) -> Fraction:
    """``--fps`` / ``--factor``: a positive N or N/D (decimals allowed)."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise SmoothError(f"{flag}: {text!r} is not a rate; give N or N/D, e.g. 60 or 60000/1001") from None
    if value <= 0:
        raise SmoothError(f"{flag}: must be above 0, not {text}")
    return value


def parse_scale(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SmoothError(f"--scale: {text!r} is not a number; give 0.25, 0.5, 1, 2 or 4") from None


def parse_threshold(text: str) -> float | None:
    """``--static-threshold``: a number from 0 to 1, or ``none`` (always interpolate)."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise SmoothError(f"--static-threshold: {text!r} is not a number from 0 to 1 (or none)")
    return value


def in_cli_terms(error: BaseException) -> str:
    """A library error's message, one line, with its parameter names as the options that set them
    (``fps_num: …`` → ``--fps: …``, ``scale=0.5`` → ``--scale 0.5``, ``dedup=True`` → ``--dedup``)."""
    text = one_line(error).removeprefix("vsrife: ")
    text = re.sub(r"\bdedup=True\b", "--dedup", text)
    text = re.sub(r"\b(\w+)=('?)([\w.:/-]+)\2", lambda m: _flag_with_value(m[0], m[1], m[3]), text)
    text = re.sub(r"\b(?:fps|factor)_(?:num|den)\b", lambda m: CLI_FLAGS[m[0]], text)
    return re.sub(r"^(\w+):", lambda m: CLI_FLAGS.get(m[1], m[1]) + ":", text)


def _flag_with_value(whole: str, name: str, value: str) -> str:
    return f"{CLI_FLAGS[name]} {value}" if name in CLI_FLAGS else whole


def one_line(error: BaseException | str) -> str:
    """An error's message on one line. Errors raised inside VapourSynth frame callbacks arrive as a Python
    traceback whose last line is ``module.Class: message``: only the message is kept."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return re.sub(r"^(?:\w+\.)+\w+: |^\w*(?:Error|Exception): ", "", lines[-1])
    return "; ".join(lines)


# --- paths, before any work -----------------------------------------------------------------------------


def check_paths(options: Options) -> None:
    """Refuse what cannot work before anything is read: a missing or special input, OUTPUT the input
    itself (by any link), a missing folder."""
    _check_input(options.input)
    _check_output(options.input, options.output)


def _check_input(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SmoothError(f"{path}: no such file") from None
    except OSError as e:
        raise SmoothError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise SmoothError(f"{path}: is {_file_kind(mode)}, not a regular file; give a video file")
    if not os.access(path, os.R_OK):
        raise SmoothError(f"{path}: cannot be read (permission denied)")


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
        raise SmoothError(f"{output}: is a directory; give the output file's name")
    if not output.suffix:
        raise SmoothError(f"{output}: has no extension to choose the container by (.mkv, .mp4, .mov, .webm, …)")
    if not output.parent.is_dir():
        raise SmoothError(f"{output}: the folder {output.parent} does not exist; create it first")
    if output.exists() and os.path.samefile(source, output):
        same_name = os.path.normpath(source.absolute()) == os.path.normpath(output.absolute())
        how = "" if same_name else " (the same file through a link)"
        raise SmoothError(f"{output}: is the input{how}; writing it would destroy the source, give another name")


def _part_suffix(output: Path) -> str:
    return f".part{output.suffix}"  # ffmpeg picks the container by the last extension


@contextmanager
def temporary_beside(output: Path) -> Iterator[Path]:
    """An empty temporary in OUTPUT's folder (creating it is the check that the folder is writable),
    removed on the way out unless renamed; temporaries of earlier runs whose process is gone are removed."""
    try:
        partial = download.new_part(output, _part_suffix(output))
    except OSError as e:
        raise SmoothError(f"{output}: cannot write in {output.parent} ({e.strerror}); nothing was done") from None
    try:
        download.remove_stale_parts(output, _part_suffix(output), max_age_s=None)
        yield partial
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP unwind like Ctrl-C, so that the temporary is removed."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# --- the input and the graph ----------------------------------------------------------------------------


def probe(path: Path) -> Media:
    """The input's streams, or a one-line error: unreadable, without video, or with a 0×0 video stream."""
    try:
        info = _ffprobe_json(path, "-show_streams", "-show_format")
    except Unreadable as e:
        raise SmoothError(f"{path}: cannot be read as a video ({e})") from None
    video = _video_streams(info)
    if not video:
        raise SmoothError(f"{path}: has no video stream")
    if not (video[0].get("width") and video[0].get("height")):
        size = f"{video[0].get('width', 0)}×{video[0].get('height', 0)}"
        raise SmoothError(f"{path}: its video stream is {size}; there is no picture to interpolate")
    return Media(
        video[0].get("codec_name", "?"),
        tuple(s.get("codec_name", "?") for s in info["streams"] if s.get("codec_type") == "audio"),
        tuple(s.get("codec_name", "?") for s in info["streams"] if s.get("codec_type") == "subtitle"),
        Fraction(info.get("format", {}).get("start_time") or 0),
    )


def _ffprobe_json(path: Path, *args: str) -> dict:
    try:
        result = subprocess.run(
            ["ffprobe", "-v", "error", *args, "-of", "json", str(path.absolute())],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except FileNotFoundError:
        raise SmoothError("ffprobe not found: install ffmpeg (Debian: apt-get install ffmpeg)") from None
    if result.returncode != 0:
        named = f"{path.absolute()}: "
        reasons = [line.removeprefix(named) for line in ffmpeg_errors(result.stderr)]
        raise Unreadable("; ".join(reasons[:MAX_FFMPEG_LINES]) or "unknown error")
    info = json.loads(result.stdout)
    info.setdefault("streams", [])
    return info


def _video_streams(info: dict) -> list[dict]:
    return [
        s
        for s in info["streams"]
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]


def for_y4m(clip: vs.VideoNode, keep_444: bool = False) -> vs.VideoNode:
    """y4m carries YUV and GRAY of 8–16 bits: others (RGB, float) become YUV (BT.709), 4:2:0 so that every
    player takes it, unless ``keep_444`` or the size is odd (4:2:0 needs even sizes)."""
    fmt = clip.format
    if fmt.color_family in (vs.YUV, vs.GRAY) and fmt.sample_type == vs.INTEGER:
        return clip
    bits = 8 if fmt.sample_type == vs.INTEGER and fmt.bits_per_sample == 8 else 10
    subsampling = 0 if keep_444 or clip.width % 2 or clip.height % 2 else 1
    target = vs.core.query_video_format(vs.YUV, vs.INTEGER, bits, subsampling, subsampling)
    matrix = {"matrix_s": "709", "matrix_in_s": "rgb"} if fmt.color_family == vs.RGB else {}
    return clip.resize.Bicubic(format=target.id, **matrix)


def pix_fmt_name(fmt: vs.VideoFormat) -> str:
    """ffmpeg's name of a y4m format: yuv420p, yuv444p10le, gray, …"""
    if fmt.color_family == vs.GRAY:
        base = "gray"
    else:
        base = {(1, 1): "yuv420p", (1, 0): "yuv422p", (0, 0): "yuv444p"}.get(
            (fmt.subsampling_w, fmt.subsampling_h), fmt.name.lower()
        )
    return base if fmt.bits_per_sample == 8 else f"{base}{fmt.bits_per_sample}le"


def format_note(source: vs.VideoNode, out: vs.VideoNode, options: Options) -> str | None:
    """What to tell the user when the source's format could not be kept as it is."""
    if options.pix_fmt is not None or source.format.id == out.format.id:
        return None
    chosen = pix_fmt_name(out.format)
    what = f"the {source.format.name} source is encoded as {chosen} (BT.709"
    if out.format.subsampling_w:
        return f"{what}), which every player takes; --pix-fmt yuv444p keeps full colour"
    return f"{what}; its odd size rules out 4:2:0), which many players cannot play; --pix-fmt chooses"


def rife_arguments(options: Options) -> dict[str, object]:
    """The keyword arguments of :func:`vsrife.rife` these options stand for (the script and the in-process
    graph both use them, so the two cannot drift apart)."""
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


def script(options: Options) -> str:
    """The .vpy equivalent of the in-process graph."""
    arguments = ", ".join(f"{key}={value!r}" for key, value in rife_arguments(options).items())
    return "\n".join(
        [
            "import vapoursynth as vs",
            "from vsrife import rife",
            "from vsrife.apps.smooth import for_y4m",
            "from vsrife.sources import open_source",
            "",
            f"source = open_source({str(options.input.absolute())!r})  # true rate and frame times from the container",
            f"clip = rife(source.clip, {arguments}, timecodes=source.times)",
            f"for_y4m(clip, keep_444={options.pix_fmt is not None}).set_output()",
            "",
        ]
    )


def build(options: Options) -> tuple[vs.VideoNode, Source, str | None]:
    """The graph ``script`` describes, built here (same calls), the source it reads, and a note on the
    pixel format when the source's could not be kept."""
    from ..filter import rife

    source = open_source(options.input)
    out = for_y4m(rife(source.clip, **rife_arguments(options), timecodes=source.times), options.pix_fmt is not None)
    return out, source, format_note(source.clip, out, options)


# --- ffmpeg ---------------------------------------------------------------------------------------------


def ffmpeg_command(
    options: Options,
    media: Media,
    output: Path,
    video_start: Fraction = Fraction(0),
    video_input: tuple[str, ...] = Y4M_STDIN,
) -> list[str]:
    """ffmpeg reading the video from ``video_input`` (y4m on its stdin) and everything else from the input
    file. ``video_start``: when the source's first frame is shown on the input's clock; the new video starts
    there too, so the audio stays in step. Paths are absolute, so that a name like ``-clip.mp4`` is not read
    as an option."""
    container = options.output.suffix.lower()
    offset = video_start - media.start
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        *(["-itsoffset", f"{float(offset):.6f}"] if offset else []),
        *video_input,
        "-i",
        str(options.input.absolute()),
        "-map",
        "0:v:0",
        "-map",
        "1:a?",
        "-map_chapters",
        "1",
        "-map_metadata",
        "1",
    ]
    command += _video_args(options) + _audio_args(container, media.audio) + _subtitle_args(container, media.subtitles)
    return command + list(options.extra) + [str(output.absolute())]


def _video_args(options: Options) -> list[str]:
    codec = options.video_codec
    args = ["-c:v", codec]
    if codec in CRF_CODECS:
        args += ["-crf", str(options.crf)]
    if codec in PRESET_CODECS:
        args += ["-preset", options.preset]
    if codec == "libvpx-vp9":  # constant quality needs -b:v 0; rows in parallel cost nothing in quality
        args += ["-b:v", "0", "-row-mt", "1", "-cpu-used", str(VP9_SPEED.get(options.preset, 0))]
    if options.pix_fmt is not None:
        args += ["-pix_fmt", options.pix_fmt]
    return args


def _audio_args(container: str, codecs: tuple[str, ...]) -> list[str]:
    if not codecs:
        return []
    copyable = COPYABLE_AUDIO.get(container)
    if copyable is None or all(codec in copyable for codec in codecs):  # mkv and the like hold anything
        return ["-c:a", "copy"]
    if container == ".webm":
        return ["-c:a", "libopus", "-b:a", AUDIO_BITRATE]
    return ["-c:a", "aac", "-b:a", AUDIO_BITRATE]


def _subtitle_args(container: str, codecs: tuple[str, ...]) -> list[str]:
    if not codecs:
        return []
    if container in (".mkv", ".mka"):
        return ["-map", "1:s?", "-c:s", "copy"]
    text = [i for i, codec in enumerate(codecs) if codec in TEXT_SUBTITLES]
    if container in (".mp4", ".m4v", ".mov") and text:
        return [arg for i in text for arg in ("-map", f"1:s:{i}")] + ["-c:s", "mov_text"]
    if container == ".webm" and text:
        return [arg for i in text for arg in ("-map", f"1:s:{i}")] + ["-c:s", "webvtt"]
    return []  # bitmap subtitles do not fit this container: left out


def ffmpeg_errors(log: str) -> list[str]:
    """ffmpeg's error lines that say something, without the ``[muxer @ 0x…]`` addresses, repeats and the
    generic lines that only say that something above failed."""
    lines: list[str] = []
    for raw in log.splitlines():
        line = re.sub(r"^\[([^\s,@]+)[^\]]* @ 0x[0-9a-f]+\]\s*", r"\1: ", raw.strip())
        if line and not line.startswith(GENERIC_FFMPEG_LINES) and line not in lines:
            lines.append(line)
    return [line.rstrip(".") for line in lines] or log.strip().splitlines()[-1:]


def dry_run(options: Options, media: Media) -> str:
    """A shell snippet that writes the .vpy and runs the same pipeline through vspipe."""
    vpy = options.output.with_suffix(".vpy")
    command = ffmpeg_command(options, media, options.output, open_source(options.input).start)
    return (
        f"cat > {shlex.quote(str(vpy))} <<'VPY'\n{script(options)}VPY\n"
        f"vspipe -c y4m {shlex.quote(str(vpy))} - | {shlex.join(command)}\n"
    )


class Progress:
    """A one-line progress bar on stderr: frames, speed, ETA."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.start = time.monotonic()
        self.shown = 0.0
        self.line_open = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.quiet or (now - self.shown < 0.5 and done < total):
            return
        self.shown = now
        fps = done / max(now - self.start, 1e-9)
        eta = (total - done) / fps if fps > 0 else 0
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        print(f"\r[{bar}] {done}/{total} frames {fps:.2f} fps ETA {eta:5.0f} s", end=end, file=sys.stderr, flush=True)
        self.line_open = done < total

    def end_line(self) -> None:
        """Finish a bar left mid-line, so that what is printed next starts a line of its own."""
        if self.line_open:
            print(file=sys.stderr, flush=True)
            self.line_open = False


# --- the run --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What a complete output holds."""

    frames: int
    rate: Fraction
    audio_streams: int
    exact: bool  # False when ffmpeg arguments after -- may change the frame count or the streams


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP while encoding; ``frames_in_flight``: frames are still being computed."""

    def __init__(self, frames_in_flight: bool) -> None:
        super().__init__()
        self.frames_in_flight = frames_in_flight


def run(options: Options) -> int:
    """Render ``options.input`` to ``options.output``; 0 on success, 130 when interrupted. Prints one
    summary line on stderr (not with ``quiet``)."""
    started = time.monotonic()
    check_paths(options)
    existed = options.output.exists()
    with signals_interrupt(), temporary_beside(options.output) as partial:
        try:
            frames, rate = _render(options, partial)
        except RunFailed as e:
            raise SmoothError(f"{e}; {_fate(options.output, existed)}") from None
        except OSError as e:  # the machine's own trouble (no space for a pipe, a file-size limit, …)
            raise SmoothError(f"{one_line(e)}; {_fate(options.output, existed)}") from None
        except KeyboardInterrupt as interrupt:
            partial.unlink(missing_ok=True)
            print(f"vsrife smooth: interrupted; {_fate(options.output, existed)}", file=sys.stderr, flush=True)
            if getattr(interrupt, "frames_in_flight", False):  # do not wait for frames still computing
                os._exit(EXIT_INTERRUPTED)
            return EXIT_INTERRUPTED
        os.replace(partial, options.output)
    if not options.quiet:
        print(summary(options.output, frames, rate, time.monotonic() - started), file=sys.stderr, flush=True)
    return 0


def _render(options: Options, partial: Path) -> tuple[int, Fraction]:
    """Everything between the checks and the rename: the graph, ffmpeg, and reading the result back."""
    try:
        media = probe(options.input)
        clip, source, note = build(options)
    except SmoothError:
        raise
    except VsRifeError as e:  # the library's message, in the command line's terms
        raise SmoothError(in_cli_terms(e)) from None
    if note and not options.quiet:
        print(f"vsrife smooth: {note}", file=sys.stderr, flush=True)
    log = encode(ffmpeg_command(options, media, partial, source.start), clip, Progress(options.quiet))
    problem = damage(partial, Expected(clip.num_frames, clip.fps, len(media.audio), exact=not options.extra), log)
    if problem is not None:
        raise RunFailed(f"the output is damaged ({problem})")
    return clip.num_frames, clip.fps


def encode(command: list[str], clip: vs.VideoNode, progress: Progress) -> str:
    """Pipe ``clip`` as y4m into ffmpeg; returns ffmpeg's error log. A failing encoder or frame raises
    :class:`RunFailed`, Ctrl-C :class:`Interrupted`."""
    encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    log = _Log(encoder.stderr)  # kept in memory: the disk may be what is failing
    writer = _Writer(clip, encoder, progress)
    try:
        log.start()
        writer.start()
        while writer.is_alive():
            writer.join(0.2)
        with suppress(BrokenPipeError):  # the encoder is gone; its exit status tells
            encoder.stdin.close()
        status = encoder.wait()
    except KeyboardInterrupt:
        progress.end_line()
        _stop(encoder, writer)
        raise Interrupted(writer.is_alive()) from None
    except BaseException:
        _stop(encoder, writer)
        raise
    finally:
        progress.end_line()
    text = log.text()
    if status != 0:
        raise RunFailed(f"encoding failed: {_encoder_failure(status, text)}")
    if writer.error is not None and not isinstance(writer.error, BrokenPipeError):
        raise RunFailed(in_cli_terms(writer.error))  # a frame failed (ffmpeg closing early is judged by damage)
    return text


def _encoder_failure(status: int, log: str) -> str:
    if status == -signal.SIGXFSZ:
        return "ffmpeg was killed by SIGXFSZ: the file size limit was reached"
    if status < 0:
        return f"ffmpeg was killed by {signal.Signals(-status).name}"
    return "; ".join(ffmpeg_errors(log)[:MAX_FFMPEG_LINES]) or f"ffmpeg exited with status {status}"


def _fate(output: Path, existed: bool) -> str:
    return f"{output} left as it was" if existed else "no output written"


@dataclass(frozen=True)
class Written:
    """What ffprobe reads back from a written file."""

    frames: int
    duration: Fraction
    audio_streams: int


def read_back(path: Path) -> Written:
    """Count the video packets (one per frame), measure the video's span, count the audio streams."""
    info = _ffprobe_json(path, "-count_packets", "-show_streams")
    video = _video_streams(info)
    if not video:
        raise Unreadable("it holds no video stream")
    try:
        duration = probe_times(path).times.duration
    except SourceError:
        duration = Fraction(0)
    audio = sum(1 for s in info["streams"] if s.get("codec_type") == "audio")
    return Written(int(video[0].get("nb_read_packets", 0)), duration, audio)


def damage(path: Path, expected: Expected, log: str) -> str | None:
    """Why the file ffmpeg wrote is not a complete output, in a few words; None when it is."""
    problem = _shortfall(path, expected)
    if problem is None:
        problem = next((f"ffmpeg: {line}" for line in ffmpeg_errors(log) if line.startswith(WRITE_FAILURES)), None)
    cause = _write_cause(path, log)
    if problem is None or cause is None:
        return problem
    return f"{problem}{'; ' if ':' in problem else ': '}{cause}"


def _shortfall(path: Path, expected: Expected) -> str | None:
    """What the file lacks of what a complete output holds; None when nothing."""
    try:
        written = read_back(path)
    except Unreadable as e:
        return f"unreadable: {e}"
    if written.frames != expected.frames and (expected.exact or written.frames == 0):
        return f"{written.frames} of {expected.frames} frames written"
    wanted = expected.frames / expected.rate
    if expected.exact and abs(written.duration - wanted) > 1 / expected.rate:
        return f"its video lasts {float(written.duration):.3f} s instead of {float(wanted):.3f} s"
    if expected.exact and written.audio_streams != expected.audio_streams:
        return f"{written.audio_streams} of {expected.audio_streams} audio streams written"
    return None


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
    shown_rate = str(rate.numerator) if rate.denominator == 1 else f"{rate} ({float(rate):.3f})"
    return (
        f"vsrife smooth: wrote {output}: {frames} frames at {shown_rate} fps, {float(frames / rate):.2f} s of video, "
        f"in {seconds:.1f} s ({frames / max(seconds, 1e-9):.2f} frames/s)"
    )


class _Log(threading.Thread):
    """Reads ffmpeg's stderr to its end (at -loglevel error a few lines; the last MAX_LOG_BYTES are kept)."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True, name="vsrife-ffmpeg-log")
        self.stream = stream
        self.data = bytearray()

    def run(self) -> None:
        while chunk := self.stream.read1(1 << 16):
            self.data += chunk
            del self.data[:-MAX_LOG_BYTES]

    def text(self) -> str:
        self.join(STOP_GRACE_S)
        return bytes(self.data).decode(errors="replace")


class _Writer(threading.Thread):
    """Pulls frames through VapourSynth into ffmpeg's stdin (a thread, so Ctrl-C reaches the main one)."""

    def __init__(self, clip: vs.VideoNode, encoder: subprocess.Popen, progress: Progress) -> None:
        super().__init__(daemon=True, name="vsrife-writer")
        self.clip, self.encoder, self.progress = clip, encoder, progress
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.clip.output(self.encoder.stdin, y4m=True, progress_update=self.progress)
        except BaseException as error:  # a dead encoder (broken pipe) or a failing frame
            self.error = error


def _stop(encoder: subprocess.Popen, writer: _Writer) -> None:
    """Stop ffmpeg at once; give frames in flight a few seconds, then leave them."""
    if encoder.poll() is None:
        encoder.send_signal(signal.SIGTERM)
    try:
        encoder.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        encoder.kill()
    writer.join(STOP_GRACE_S)
