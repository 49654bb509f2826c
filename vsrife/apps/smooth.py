"""``vsrife smooth INPUT OUTPUT``: any video to a new frame rate in one command.

The VapourSynth graph (source filter → :func:`vsrife.rife` → y4m) is built in this process and its frames
are piped into ffmpeg, which takes the audio, subtitles and chapters from the input. The source's pixel
format is kept (a 10-bit source stays 10-bit) where the encoder takes it. The output is written
to a temporary file beside OUTPUT and renamed only when everything succeeded; a failure or Ctrl-C leaves
neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

from ..errors import VsRifeError
from ..sources import Source, open_source

AUDIO_BITRATE = "192k"
# audio codecs each container takes as they are; others are re-encoded (AAC, or Opus for WebM)
COPYABLE_AUDIO = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus"},
    ".m4v": {"aac", "mp3", "ac3", "eac3", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"},
    ".webm": {"opus", "vorbis"},
}
CRF_CODECS = {"libx264", "libx265", "libsvtav1", "libaom-av1", "libvpx-vp9"}
PRESET_CODECS = {"libx264", "libx265"}  # named presets (slow, medium, …); others take theirs via -- args
TEXT_SUBTITLES = {"subrip", "ass", "ssa", "mov_text", "webvtt", "text"}
Y4M_STDIN = ("-f", "yuv4mpegpipe", "-i", "-")
EXIT_INTERRUPTED = 130
STOP_GRACE_S = 5.0


class SmoothError(VsRifeError):
    """A problem with the input or the run, reported as one line."""


@dataclass(frozen=True)
class Options:
    input: Path
    output: Path
    fps: Fraction | None = Fraction(60)
    factor: Fraction | None = None
    model: str = "4.26"
    scale: float = 1.0
    device: str | None = None
    sc: bool = True
    dedup: bool = False
    codec: str = "libx264"
    crf: int = 18
    preset: str = "slow"
    extra: tuple[str, ...] = field(default_factory=tuple)
    quiet: bool = False


@dataclass(frozen=True)
class Media:
    """What ffprobe says of the input."""

    video_codec: str
    audio: tuple[str, ...]
    subtitles: tuple[str, ...]
    start: Fraction = Fraction(0)  # the container's start time, seconds: the other streams' zero


def probe(path: Path) -> Media:
    """The input's streams, or a one-line error: missing, unreadable, or without video."""
    if not path.is_file():
        raise SmoothError(f"{path}: no such file")
    try:
        result = subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path.absolute())],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError:
        raise SmoothError("ffprobe not found: install ffmpeg (Debian: apt-get install ffmpeg)") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise SmoothError(f"{path}: cannot be read as a video ({reason})")
    info = json.loads(result.stdout)
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    if not video:
        raise SmoothError(f"{path}: has no video stream")
    return Media(
        video[0].get("codec_name", "?"),
        tuple(s.get("codec_name", "?") for s in streams if s.get("codec_type") == "audio"),
        tuple(s.get("codec_name", "?") for s in streams if s.get("codec_type") == "subtitle"),
        Fraction(info.get("format", {}).get("start_time") or 0),
    )


def for_y4m(clip: vs.VideoNode) -> vs.VideoNode:
    """y4m carries YUV and GRAY of 8–16 bits: RGB or float sources become 4:4:4 YUV (BT.709)."""
    fmt = clip.format
    if fmt.color_family in (vs.YUV, vs.GRAY) and fmt.sample_type == vs.INTEGER:
        return clip
    bits = 8 if fmt.sample_type == vs.INTEGER and fmt.bits_per_sample == 8 else 10
    target = vs.core.query_video_format(vs.YUV, vs.INTEGER, bits, 0, 0)
    matrix = {"matrix_s": "709", "matrix_in_s": "rgb"} if fmt.color_family == vs.RGB else {}
    return clip.resize.Bicubic(format=target.id, **matrix)


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
            f"source = open_source({str(options.input)!r})  # true rate and frame times from the container",
            f"clip = rife(source.clip, {arguments}, timecodes=source.times)",
            "for_y4m(clip).set_output()",
            "",
        ]
    )


def build(options: Options) -> tuple[vs.VideoNode, Source]:
    """The graph ``script`` describes, built here (same calls), and the source it reads."""
    from ..filter import rife

    source = open_source(options.input)
    return for_y4m(rife(source.clip, **rife_arguments(options), timecodes=source.times)), source


def ffmpeg_command(
    options: Options,
    media: Media,
    output: Path,
    video_start: Fraction = Fraction(0),
    video_input: tuple[str, ...] = Y4M_STDIN,
) -> list[str]:
    """ffmpeg reading the video from ``video_input`` (y4m on its stdin) and everything else from the input
    file. ``video_start``: when the source's first frame is shown on the input's clock; the new video starts
    there too, so the audio stays in step."""
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
        str(options.input),
        "-map",
        "0:v:0",
        "-map",
        "1:a?",
        "-map_chapters",
        "1",
        "-map_metadata",
        "1",
        *video_codec_args(options),
    ]
    command += _audio_args(container, media.audio) + _subtitle_args(container, media.subtitles)
    return command + list(options.extra) + [str(output)]


def video_codec_args(options: Options) -> list[str]:
    """The video encoder and its quality settings (``--codec``, ``--crf``, ``--preset``)."""
    command = ["-c:v", options.codec]
    if options.codec in CRF_CODECS:
        command += ["-crf", str(options.crf)] + (["-b:v", "0"] if options.codec == "libvpx-vp9" else [])
    if options.codec in PRESET_CODECS:
        command += ["-preset", options.preset]
    return command


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


def run(options: Options) -> int:
    """Render ``options.input`` to ``options.output``; 0 on success, 130 when interrupted."""
    media = probe(options.input)
    clip, source = build(options)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{options.output.stem}.", suffix=f".vsrife{options.output.suffix}", dir=options.output.parent
    )
    os.close(fd)
    partial = Path(name)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a kill cleans up like Ctrl-C
    with tempfile.TemporaryFile() as log:
        command = ffmpeg_command(options, media, partial, source.start)
        encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=log)
        writer = _Writer(clip, encoder, Progress(options.quiet))
        try:
            writer.start()
            while writer.is_alive():
                writer.join(0.2)
            with contextlib.suppress(BrokenPipeError):  # the encoder is gone; its exit status tells
                encoder.stdin.close()
            if encoder.wait() != 0 or writer.error is not None:
                raise SmoothError(f"encoding failed: {_last_line(log) or writer.error}")
            os.replace(partial, options.output)
            return 0
        except KeyboardInterrupt:
            _stop(encoder, writer)
            partial.unlink(missing_ok=True)
            print("\nvsrife smooth: interrupted; no output written", file=sys.stderr, flush=True)
            if writer.is_alive():  # frames still computing: do not wait for them
                os._exit(EXIT_INTERRUPTED)
            return EXIT_INTERRUPTED
        except BaseException:
            _stop(encoder, writer)
            raise
        finally:
            partial.unlink(missing_ok=True)
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _last_line(log) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


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
