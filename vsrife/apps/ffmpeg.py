"""ffmpeg for ``vsrife smooth``: what ffprobe says of the input, the encoder's command line (codec, colour
description, HDR metadata, the input's audio, subtitles and chapters), and ffmpeg's errors in a few words."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

from ..ffprobe import (
    ProbeError,
    ToolMissing,
    as_input,
    ffprobe_json,
    positive_number,
    tool_errors,
    video_streams,
)
from .options import Options
from .terminal import CommandError

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
# --preset as libvpx-vp9's -cpu-used (0 slowest … 5 fastest in its "good" mode)
VP9_SPEED = {"ultrafast": 5, "superfast": 5, "veryfast": 5, "faster": 4, "fast": 3, "medium": 2, "slow": 1}
TEXT_SUBTITLES = {"subrip", "ass", "ssa", "mov_text", "webvtt", "text"}
Y4M_STDIN = ("-f", "yuv4mpegpipe", "-i", "-")
MAX_ERROR_LINES = 3
# ffmpeg's names of the colour codes of ITU-T H.273, which VapourSynth's _Matrix, _Transfer and _Primaries hold
MATRIX_NAMES = {
    0: "rgb", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco", 9: "bt2020nc",
    10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc", 13: "chroma-derived-c", 14: "ictcp",
}  # fmt: skip
TRANSFER_NAMES = {
    1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear", 9: "log100",
    10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12",
    16: "smpte2084", 17: "smpte428", 18: "arib-std-b67",
}  # fmt: skip
PRIMARIES_NAMES = {
    1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film", 9: "bt2020",
    10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "jedec-p22",
}  # fmt: skip
# VapourSynth's _ChromaLocation (0 left … 5 bottom) as ffmpeg names it
CHROMA_NAMES = {0: "left", 1: "center", 2: "topleft", 3: "top", 4: "bottomleft", 5: "bottom"}
# encoders that write HDR10 static metadata (SEI), and the -PARAMS option that takes it
HDR_PARAMS = {"libx264": "-x264-params", "libx265": "-x265-params"}
STILL_IMAGE_CODECS = {"png", "mjpeg", "bmp", "tiff", "webp", "gif", "jpeg2000", "jpegls", "qoi"}


@dataclass(frozen=True)
class Media:
    """What ffprobe says of the input."""

    video_codec: str
    audio: tuple[str, ...]
    subtitles: tuple[str, ...]
    start: Fraction = Fraction(0)  # the container's start time, seconds: the other streams' zero
    width: int = 0
    height: int = 0
    rate: Fraction = Fraction(0)  # the video's average rate (frames, empty slots included, over its duration)
    duration: Fraction = Fraction(0)  # seconds
    chapters: bool = False


def probe(path: Path) -> Media:
    """The input's streams, or a one-line error: empty, unreadable, a still image, without video, or with a
    0×0 video stream."""
    if path.stat().st_size == 0:
        raise CommandError(f"{path}: is empty (0 bytes); give a video file")
    try:
        info = ffprobe_json(path, "-show_streams", "-show_format", "-show_chapters")
    except ProbeError as e:
        raise CommandError(f"{path}: cannot be read as a video ({e.reason})") from None
    except ToolMissing as e:
        raise CommandError(str(e).removeprefix("vsrife: ")) from None
    video = video_streams(info)
    if not video:
        raise CommandError(f"{path}: has no video stream")
    stream = video[0]
    if not (stream.get("width") and stream.get("height")):
        size = f"{stream.get('width', 0)}×{stream.get('height', 0)}"
        raise CommandError(f"{path}: its video stream is {size}; there is no picture to interpolate")
    if _is_cover(path, info, stream):
        raise CommandError(f"{path}: has no video stream, only a cover picture ({stream.get('codec_name')})")
    if _is_still_image(info, stream):
        raise CommandError(f"{path}: is a still image ({stream.get('codec_name')}), not a video; give a video file")
    return Media(
        stream.get("codec_name", "?"),
        tuple(s.get("codec_name", "?") for s in info["streams"] if s.get("codec_type") == "audio"),
        tuple(s.get("codec_name", "?") for s in info["streams"] if s.get("codec_type") == "subtitle"),
        Fraction(info.get("format", {}).get("start_time") or 0),
        int(stream["width"]),
        int(stream["height"]),
        _first_positive(stream.get("avg_frame_rate"), stream.get("r_frame_rate")),
        _first_positive(stream.get("duration"), info.get("format", {}).get("duration")),
        bool(info.get("chapters")),
    )


def _first_positive(*texts: str | None) -> Fraction:
    return next((value for text in texts if (value := positive_number(text))), Fraction(0))


def _is_cover(path: Path, info: dict, stream: dict) -> bool:
    """A picture beside audio that is one frame only: cover art that the container keeps as a video track
    (Matroska has no flag for it), which ffprobe does not mark as an attached picture."""
    if stream.get("codec_name") not in STILL_IMAGE_CODECS:
        return False
    if not any(s.get("codec_type") == "audio" for s in info["streams"]):
        return False
    counted = ffprobe_json(path, "-select_streams", f"{stream['index']}", "-read_intervals", "%+#2", "-count_packets",
                           "-show_entries", "stream=nb_read_packets")  # fmt: skip
    return int((counted["streams"] or [{}])[0].get("nb_read_packets", 0)) < 2


def _is_still_image(info: dict, stream: dict) -> bool:
    single = str(stream.get("nb_frames", "")) in ("", "1", "N/A") and not info.get("format", {}).get("duration")
    piped_image = info.get("format", {}).get("format_name", "").endswith(("_pipe", "image2"))
    return stream.get("codec_name") in STILL_IMAGE_CODECS and (piped_image or single)


def check_encoder(codec: str) -> str:
    """One line now, before any work, when this ffmpeg has no encoder of that name; else what ffmpeg says of
    the encoder (its options, the pixel formats it takes)."""
    try:
        result = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-h", f"encoder={codec}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError:
        raise CommandError("ffmpeg not found: install ffmpeg (Debian: apt-get install ffmpeg)") from None
    if result.returncode != 0 or "is not recognized" in result.stdout or not result.stdout.strip():
        raise CommandError(
            f"--codec {codec}: this ffmpeg has no such encoder (`ffmpeg -encoders` lists them; "
            "e.g. libx264, libx265, libvpx-vp9, libsvtav1, ffv1)"
        )
    return result.stdout


# --- the command ----------------------------------------------------------------------------------------


def ffmpeg_command(
    options: Options,
    media: Media,
    output: Path,
    encoder: list[str],
    video_start: Fraction = Fraction(0),
    video_input: tuple[str, ...] = Y4M_STDIN,
) -> list[str]:
    """ffmpeg reading the video from ``video_input`` (y4m on its stdin) and everything else from the input
    file, encoding the video with ``encoder`` (:func:`encoder_args`). ``video_start``: when the source's
    first frame is shown on the input's clock; the new video starts there too, so the audio stays in step
    (its timestamps are passed through: with an offset a constant-rate muxer would add a frame to fill the
    gap). Paths are absolute, so that a name like ``-clip.mp4`` is not read as an option."""
    container = options.output.suffix.lower()
    offset = video_start - media.start
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        *video_input,
        *_start_offset_inputs(options.input, offset, media.chapters),
        "-map",
        "0:v:0",
        "-map",
        "1:a?",
        "-map_metadata",
        "1",
        "-fps_mode:v",
        "passthrough",
        "-disposition:v:0",  # y4m brings no disposition: Matroska would mark the track not-default
        "default",
    ]
    command += _audio_args(container, media.audio) + _subtitle_args(container, media.subtitles)
    return command + encoder + _start_offset_output(offset) + [str(output.absolute())]


def _start_offset_inputs(source: Path, offset: Fraction, chapters: bool) -> list[str]:
    """The input file's inputs, for a video that starts ``offset`` seconds after the input's other streams.
    The muxer sets that start (:func:`_start_offset_output`), in the output's own time base (exact in
    Matroska's milliseconds), not the y4m input (``-itsoffset`` there rounds to its time base, one output
    frame: 0.023 s became 0.017 s at 60 fps); so the other streams are taken ``offset`` earlier here, and the
    chapters, which the muxer's offset does not move, from the file once more as they are."""
    if not offset:
        return ["-i", as_input(source), "-map_chapters", "1"]
    chapters_from = ["-i", as_input(source), "-map_chapters", "2"] if chapters else ["-map_chapters", "-1"]
    return ["-itsoffset", _seconds(-offset), "-i", as_input(source), *chapters_from]


def _start_offset_output(offset: Fraction) -> list[str]:
    return ["-output_ts_offset", _seconds(offset)] if offset else []


def _seconds(value: Fraction) -> str:
    return f"{float(value):.6f}"  # ffmpeg keeps times in microseconds


def encoder_args(options: Options, props: Mapping[str, object] | None = None) -> list[str]:
    """The video encoder's settings and then the user's arguments after ``--``; with the frame ``props`` of
    what is encoded, its colour description and (x264, x265) its HDR10 metadata too."""
    args = video_args(options) + (colour_args(props) if props is not None else []) + list(options.extra)
    display = MasteringDisplay.from_props(props) if props is not None else None
    if display is not None and options.video_codec in HDR_PARAMS:
        args = with_hdr_metadata(args, options.video_codec, display)
    return args


def video_args(options: Options) -> list[str]:
    """The video encoder's own settings: codec, quality, speed, pixel format."""
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


def colour_args(props: Mapping[str, object]) -> list[str]:
    """ffmpeg's colour options for frames with these props (y4m carries none of it): matrix, transfer,
    primaries, range and chroma siting; unspecified codes are left out."""
    args = []
    for option, key, names in (
        ("-colorspace", "_Matrix", MATRIX_NAMES),
        ("-color_trc", "_Transfer", TRANSFER_NAMES),
        ("-color_primaries", "_Primaries", PRIMARIES_NAMES),
        ("-chroma_sample_location", "_ChromaLocation", CHROMA_NAMES),
    ):
        name = names.get(int(props[key])) if isinstance(props.get(key), int) else None
        if name is not None:
            args += [option, name]
    if "_Range" in props:
        args += ["-color_range", "pc" if int(props["_Range"]) == vs.ColorRange.RANGE_FULL else "tv"]
    return args


@dataclass(frozen=True)
class MasteringDisplay:
    """HDR10 static metadata: the mastering display's primaries and white point (CIE xy), its luminance
    range (cd/m²), and the content's light levels (MaxCLL, MaxFALL; cd/m²)."""

    red: tuple[float, float]
    green: tuple[float, float]
    blue: tuple[float, float]
    white: tuple[float, float]
    luminance: tuple[float, float]  # max, min
    light_levels: tuple[int, int] | None

    @classmethod
    def from_props(cls, props: Mapping[str, object]) -> MasteringDisplay | None:
        """Read from the props BestSource sets (``MasteringDisplayPrimariesX`` …); None when absent."""
        try:
            xs, ys = props["MasteringDisplayPrimariesX"], props["MasteringDisplayPrimariesY"]
            white = (float(props["MasteringDisplayWhitePointX"]), float(props["MasteringDisplayWhitePointY"]))
            luminance = (float(props["MasteringDisplayMaxLuminance"]), float(props["MasteringDisplayMinLuminance"]))
        except (KeyError, TypeError, ValueError):
            return None
        levels = None
        if "ContentLightLevelMax" in props and "ContentLightLevelAverage" in props:
            levels = (int(props["ContentLightLevelMax"]), int(props["ContentLightLevelAverage"]))
        red, green, blue = ((float(x), float(y)) for x, y in zip(xs, ys, strict=True))
        return cls(red, green, blue, white, luminance, levels)

    def x26x(self, codec: str) -> str:
        """x264's / x265's parameters: chromaticities in 0.00002, luminance in 0.0001 cd/m²."""

        def xy(point: tuple[float, float]) -> str:
            return f"({round(point[0] * 50000)},{round(point[1] * 50000)})"

        display = f"G{xy(self.green)}B{xy(self.blue)}R{xy(self.red)}WP{xy(self.white)}"
        display += f"L({round(self.luminance[0] * 10000)},{round(self.luminance[1] * 10000)})"
        mastering = "master-display" if codec == "libx265" else "mastering-display"
        params = [f"{mastering}={display}"]
        if self.light_levels is not None:
            params.append(f"{'max-cll' if codec == 'libx265' else 'cll'}={self.light_levels[0]},{self.light_levels[1]}")
        if codec == "libx265":
            params.append("hdr10=1")
        return ":".join(params)


def with_hdr_metadata(args: list[str], codec: str, display: MasteringDisplay) -> list[str]:
    """``args`` with the HDR10 metadata in the encoder's ``-PARAMS`` option, joined to the last one given
    (the user's own, after ``--``: ffmpeg keeps only the last)."""
    option = HDR_PARAMS[codec]
    ours = display.x26x(codec)
    if option in args[:-1]:
        at = len(args) - 1 - args[::-1].index(option)
        return [*args[: at + 1], f"{ours}:{args[at + 1]}", *args[at + 2 :]]
    return [*args, option, ours]


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


def failure(log: str) -> str:
    """What went wrong, from ffmpeg's log: its first few telling lines."""
    return "; ".join(tool_errors(log)[:MAX_ERROR_LINES])
