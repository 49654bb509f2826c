"""``vsrife smooth INPUT OUTPUT``: any video to a new frame rate in one command.

The VapourSynth graph (source filter → :func:`vsrife.rife` → y4m) is built in this process and its frames
are piped into ffmpeg, which takes the audio, subtitles and chapters from the input and tags the video with
the source's colour description. The source's pixel format is kept (a 10-bit source stays 10-bit) where
y4m carries it; RGB becomes 4:2:0 YUV, which every player takes. What can be checked is checked before any
work (:mod:`~vsrife.apps.output`: the paths, and OUTPUT held for this run alone; :mod:`~vsrife.apps.ffmpeg`:
the input; :mod:`~vsrife.apps.preflight`: the encoder and its options, the output rate). The
output is written beside OUTPUT, read back, and renamed over OUTPUT only when it holds every frame: a
failure leaves OUTPUT as it was and no temporary; Ctrl-C, SIGTERM or SIGHUP end the run at once, whatever
is in flight (:func:`~vsrife.apps.signals.stop_at_once`).
"""

from __future__ import annotations

import gc
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

from ..errors import VsRifeError, one_line
from ..progress import Progress
from ..sources import Source, open_source
from . import ffmpeg, preflight
from .ffmpeg import HDR_PARAMS, MasteringDisplay, Media
from .options import Options, rife_arguments
from .output import Expected, check_paths, fate, judge, sole_writer, state_folder, summary, temporary_beside
from .signals import Stopper, stop_at_once
from .terminal import CommandError, in_cli_terms, tell

STOP_GRACE_S = 5.0
MAX_LOG_BYTES = 1 << 20
FFMPEG_QUIET = -8  # AV_LOG_QUIET: BestSource's decoder says nothing on the terminal
UNSPECIFIED = 2  # the H.273 code for "unspecified" (_Primaries, _Transfer)


class RunFailed(Exception):
    """The run failed after the output was begun; the message says why, without what became of OUTPUT."""


# --- the graph ------------------------------------------------------------------------------------------


def for_y4m(clip: vs.VideoNode, keep_444: bool = False) -> vs.VideoNode:
    """y4m carries YUV and GRAY of 8–16 bits: others (RGB, float) become YUV, BT.709 (its primaries and
    transfer too where the source does not say), 4:2:0 so that every player takes it, unless ``keep_444``
    or the size is odd (4:2:0 needs even sizes)."""
    fmt = clip.format
    if fmt.color_family in (vs.YUV, vs.GRAY) and fmt.sample_type == vs.INTEGER:
        return clip
    bits = 8 if fmt.sample_type == vs.INTEGER and fmt.bits_per_sample == 8 else 10
    subsampling = 0 if keep_444 or clip.width % 2 or clip.height % 2 else 1
    target = vs.core.query_video_format(vs.YUV, vs.INTEGER, bits, subsampling, subsampling)
    if fmt.color_family != vs.RGB:
        return clip.resize.Bicubic(format=target.id)
    converted = clip.resize.Bicubic(format=target.id, matrix_s="709", matrix_in_s="rgb")
    return converted.std.ModifyFrame(converted, _bt709_where_unspecified)


def _bt709_where_unspecified(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
    props = f.props
    if all(props.get(key, UNSPECIFIED) not in (UNSPECIFIED, None) for key in ("_Primaries", "_Transfer")):
        return f
    out = f.copy()
    for key in ("_Primaries", "_Transfer"):
        if out.props.get(key, UNSPECIFIED) == UNSPECIFIED:
            out.props[key] = 1
    return out


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


@dataclass(frozen=True)
class Graph:
    """What is rendered: the clip as y4m takes it, the source it reads, the encoder's arguments (the user's
    after ``--`` included), and what to tell the user before the work."""

    clip: vs.VideoNode
    source: Source
    encoder: list[str]
    notes: list[str] = field(default_factory=list)


def build(options: Options, media: Media | None = None) -> Graph:
    """The graph :func:`script` describes, built here (same calls)."""
    from ..filter import rife

    source = open_source(options.input)
    keep_444 = options.pix_fmt is not None
    clip = for_y4m(rife(source.clip, **rife_arguments(options), timecodes=source.times), keep_444)
    graph = Graph(clip, source, *_encoder_and_notes(source, options, media))
    out_of_the_collectors_way()
    return graph


def out_of_the_collectors_way() -> None:
    """What is alive once the graph is built (torch's modules, most of it) lives as long as the render: it is
    frozen out of Python's cyclic collector, whose full collections scanned some 190 000 objects, 70 ms each
    with the GIL held, every few seconds (10 % of the host's time in the benchmark). A command's own
    process only: a library must not decide this for the program it runs in."""
    gc.freeze()


def source_graph(options: Options, media: Media | None = None) -> tuple[Source, list[str], list[str]]:
    """The source, the encoder's arguments and the notes, without building :func:`vsrife.rife`'s graph
    (``--dry-run`` and the spread render's driver)."""
    source = open_source(options.input)
    return (source, *_encoder_and_notes(source, options, media))


def _encoder_and_notes(source: Source, options: Options, media: Media | None) -> tuple[list[str], list[str]]:
    """The encoder's arguments, tagged as what y4m brings (the source's colour description; what
    :func:`for_y4m` converted, as what it wrote), and the notes on what could not be kept."""
    shown = for_y4m(source.clip, options.pix_fmt is not None)
    props = shown.get_frame(0).props
    notes = [format_note(source.clip, shown, options), _size_note(source, media), _length_note(source)]
    display = MasteringDisplay.from_props(props)
    if display is not None and options.video_codec not in HDR_PARAMS and options.video_codec != "copy":
        notes.append(
            f"the source's HDR10 mastering metadata is not written: {options.video_codec} takes none here "
            f"({' and '.join(HDR_PARAMS)} do); its colour tags are written"
        )
    return ffmpeg.encoder_args(options, props), [note for note in notes if note]


def _size_note(source: Source, media: Media | None) -> str | None:
    if media is None or (media.width, media.height) == (source.clip.width, source.clip.height):
        return None
    return (
        f"the {media.width}×{media.height} source is read as {source.clip.width}×{source.clip.height}: "
        f"VapourSynth keeps {source.clip.format.name} frames at even sizes, so the last odd column or row "
        "is left out"
    )


def _length_note(source: Source) -> str | None:
    if not source.ends_early:
        return None
    return (
        f"the source ends early: {source.clip.num_frames} of the {source.declared_frames} frames its container "
        "declares could be decoded (a truncated or damaged file?); the output has the frames there are"
    )


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


def dry_run(options: Options) -> str:
    """A shell snippet that writes the .vpy (never over an existing file) and runs the same pipeline through
    vspipe; notes on stderr."""
    check_paths(options.input, options.output)
    preflight.check_encoder(options)
    media = ffmpeg.probe(options.input)
    preflight.check_rate(options, media)
    vpy = options.output.with_suffix(".vpy")
    if vpy.exists() and not options.quiet:
        tell(f"{vpy} exists: the script below does not write over it (remove it first to write a new one)")
    source, encoder, _ = source_graph(options, media)
    command = ffmpeg.ffmpeg_command(options, media, options.output, encoder, source.start)
    return (
        f"# writes {shlex.quote(str(vpy))} (never over an existing file), then renders it with vspipe; in a new\n"
        "# virtual environment run `vapoursynth config` once first, so that vspipe finds its Python\n"
        f"(set -o noclobber; cat > {shlex.quote(str(vpy))}) <<'VPY' && "
        f"vspipe -c y4m {shlex.quote(str(vpy))} - | {shlex.join(command)}\n"
        f"{script(options)}VPY\n"
    )


# --- the run --------------------------------------------------------------------------------------------


def run(options: Options) -> int:
    """Render ``options.input`` to ``options.output``; 0 on success. Ctrl-C, SIGTERM or SIGHUP end the
    process with status 130, the temporary removed and OUTPUT as it was. Prints one summary line on
    stderr (not with ``quiet``)."""
    started = time.monotonic()
    check_paths(options.input, options.output)
    existed = options.output.exists()
    progress = Progress(options.quiet)
    with sole_writer(options.output) as lock, stop_at_once() as stopper, temporary_beside(options.output) as partial:
        stopper.on_stop(lambda: lock.unlink(missing_ok=True))
        preflight.check_encoder(options)
        media = ffmpeg.probe(options.input)  # before the source filter reads anything
        preflight.check_rate(options, media)

        def interrupted() -> None:
            progress.end_line()
            partial.unlink(missing_ok=True)
            tell(f"interrupted; {fate(options.output, existed)}")

        forget = stopper.on_stop(interrupted)
        try:
            frames, rate, note = _render(options, media, partial, progress, stopper)
        except RunFailed as e:
            raise CommandError(f"{e}; {fate(options.output, existed)}") from None
        except OSError as e:  # the machine's own trouble (no space for a pipe, a file-size limit, …)
            raise CommandError(f"{one_line(e)}; {fate(options.output, existed)}") from None
        forget()
        os.replace(partial, options.output)
    _remove_earlier_state(options)
    if not options.quiet:
        if note:
            tell(note)
        tell(summary(options.output, frames, rate, time.monotonic() - started))
    return 0


def _render(
    options: Options, media: Media, partial: Path, progress: Progress, stopper: Stopper
) -> tuple[int, Fraction, str | None]:
    """Everything between the checks and the rename: the graph, ffmpeg, and reading the result back."""
    if not options.verbose and hasattr(vs.core, "bs"):
        vs.core.bs.SetFFmpegLogLevel(FFMPEG_QUIET)
    try:
        graph = build(options, media)
    except CommandError:
        raise
    except VsRifeError as e:  # the library's message, in the command line's terms
        raise CommandError(in_cli_terms(e)) from None
    preflight.check_container_rate(options, graph.clip.fps, graph.source.rate)  # the exact rate, for --factor
    if not options.quiet:
        for note in graph.notes:
            tell(note)
    command = ffmpeg.ffmpeg_command(options, media, partial, graph.encoder, graph.source.start)
    log = encode(command, graph.clip, progress, stopper)
    expected = Expected(graph.clip.num_frames, graph.clip.fps, len(media.audio), exact=not options.extra)
    verdict = judge(partial, expected, log)
    if verdict.problem is not None:
        raise RunFailed(f"the output is damaged ({verdict.problem})")
    return graph.clip.num_frames, graph.clip.fps, verdict.note


def encode(command: list[str], clip: vs.VideoNode, progress: Progress, stopper: Stopper) -> str:
    """Pipe ``clip`` as y4m into ffmpeg; returns ffmpeg's error log. A failing encoder or frame raises
    :class:`RunFailed`; when the process is stopped, ffmpeg is killed first."""
    try:
        encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise CommandError("ffmpeg not found: install ffmpeg (Debian: apt-get install ffmpeg)") from None
    forget = stopper.on_stop(encoder.kill)
    log = _Log(encoder.stderr)  # kept in memory: the disk may be what is failing
    log.start()
    error: BaseException | None = None
    try:
        clip.output(encoder.stdin, y4m=True, progress_update=progress)
    except (OSError, vs.Error) as e:  # a dead encoder (broken pipe) or a failing frame
        error = e
    finally:
        progress.end_line()
        with suppress(BrokenPipeError):  # the encoder is gone; its exit status tells
            encoder.stdin.close()
    try:
        status = encoder.wait(None if error is None else STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        encoder.kill()
        status = encoder.wait()
    forget()
    text = log.text()
    if status != 0:
        raise RunFailed(f"encoding failed: {_encoder_failure(status, text)}")
    if error is not None and not isinstance(error, BrokenPipeError):
        raise RunFailed(in_cli_terms(error))  # a frame failed (ffmpeg closing early is judged by the read-back)
    return text


def _encoder_failure(status: int, log: str) -> str:
    if status == -signal.SIGXFSZ:
        return "ffmpeg was killed by SIGXFSZ: the file size limit was reached"
    if status < 0:
        return f"ffmpeg was killed by {signal.Signals(-status).name}"
    return ffmpeg.failure(log) or f"ffmpeg exited with status {status}"


def _remove_earlier_state(options: Options) -> None:
    """A spread render's state folder for this OUTPUT is stale once a plain run has written OUTPUT."""
    folder = state_folder(options.output)
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        if not options.quiet:
            tell(f"removed {folder}, the unfinished job of an earlier --workers/--cluster run to this OUTPUT")


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
