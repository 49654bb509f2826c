"""The chunks of a spread render, once planned (:mod:`vsrife.apps.chunk_plan`): kept, encoded, joined.

A chunk is output frames ``[a, b)`` of the very graph ``vsrife smooth`` builds — :func:`vsrife.rife` computes
every output frame from global source indices, so a chunk's frames are the single run's — encoded with the
user's codec into a NUT stream (any codec, the rate's exact time base). :class:`StateFolder` keeps the job
in ``OUT.parts/`` (a manifest keyed by the input, the options and the model, and each finished chunk,
written atomically); :func:`join` puts the chunks one after another without re-encoding and muxes the
input's audio, subtitles and chapters once, as ``vsrife smooth`` muxes them. Nothing here knows who
renders the chunks (:mod:`vsrife.apps.cluster`: Ray tasks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

from .. import __version__, download, weights
from .chunk_plan import CHUNK_FORMAT, Chunk, Plan
from .ffmpeg import Y4M_STDIN, Media, encoder_args, failure, ffmpeg_command, video_args
from .options import Options, rife_arguments
from .output import Expected, judge, state_folder, temporary_beside
from .terminal import CommandError, in_cli_terms

MANIFEST = "manifest.json"
STATE_FORMAT = 1
FINGERPRINT_SAMPLES = 16
FINGERPRINT_BLOCK = 1 << 20
QUIET_FFMPEG = ("ffmpeg", "-hide_banner", "-loglevel", "error")


class JobError(CommandError):
    """A problem with the setup or the job of a spread render, reported as one line."""


class ChunkError(RuntimeError):
    """A chunk's task failed; the message is one line. (Not a VsRifeError: it crosses process boundaries,
    and those prefix their message again when unpickled.)"""


# ------------------------------------------------------------------------------------------- the state folder


class StateFolder:
    """``OUT.parts/``: the manifest, and each finished chunk — ``chunk-NNNNN.nut`` and then its record
    ``chunk-NNNNN.json`` (frames, bytes, checksum of the decoded frames), each written atomically."""

    def __init__(self, output: Path) -> None:
        self.path = state_folder(output)

    def manifest(self) -> dict | None:
        """The job kept here; None when there is no state folder."""
        if not self.path.exists():
            return None
        try:
            manifest = json.loads((self.path / MANIFEST).read_text())
            if manifest.get("format") != STATE_FORMAT:
                raise ValueError("another format")
            return manifest
        except (OSError, ValueError, AttributeError):
            raise JobError(f"{self.path} holds no job of this vsrife: remove it to start over") from None

    def start(self, key: str, input: Path, plan: Plan) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = {"format": STATE_FORMAT, "key": key, "input": str(input), "vsrife": __version__, **plan.to_json()}
        download.write_atomically(self.path / MANIFEST, json.dumps(manifest, indent=1).encode())

    def finished(self, plan: Plan) -> set[int]:
        """The chunks whose file and record are here and agree with the plan."""
        return {chunk.index for chunk in plan.chunks if self._intact(chunk)}

    def _intact(self, chunk: Chunk) -> bool:
        try:
            record = json.loads(self._record_path(chunk).read_text())
            size = (self.path / chunk.name).stat().st_size
        except (OSError, ValueError):
            return False
        return (record.get("start"), record.get("end"), record.get("frames"), record.get("bytes")) == (
            chunk.start,
            chunk.end,
            chunk.frames,
            size,
        )

    def keep(self, chunk: Chunk, result: ChunkResult) -> None:
        download.write_atomically(self.path / chunk.name, result.data)
        record = {
            "start": chunk.start,
            "end": chunk.end,
            "frames": result.frames,
            "bytes": len(result.data),
            "checksum": result.checksum,
            "worker": result.worker,
        }
        download.write_atomically(self._record_path(chunk), json.dumps(record).encode())

    def record(self, chunk: Chunk) -> dict:
        return json.loads(self._record_path(chunk).read_text())

    def _record_path(self, chunk: Chunk) -> Path:
        return self.path / chunk.name.replace(f".{CHUNK_FORMAT}", ".json")

    def sweep(self) -> None:
        """Remove what a killed driver left half-written."""
        download.remove_abandoned_parts(self.path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def job_key(options: Options) -> str:
    """What the chunks depend on: the input, the graph's options, the weights and the encoder settings."""
    facts = {
        "vsrife": __version__,
        "input": input_fingerprint(options.input),
        "rife": rife_arguments(options),
        "weights": download.sha256_of(weights.locate(options.model)),
        "encoder": video_args(options) + list(options.extra),  # the colour tags follow from the input
        "chunk_format": CHUNK_FORMAT,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def input_fingerprint(path: Path) -> str:
    """The input's size and a hash of 16 blocks of 1 MiB spread over it (the whole file when smaller): quick
    for a film, and any other file is another job."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as file:
        if size <= FINGERPRINT_SAMPLES * FINGERPRINT_BLOCK:
            digest.update(file.read())
        else:
            for k in range(FINGERPRINT_SAMPLES):
                file.seek((size - FINGERPRINT_BLOCK) * k // (FINGERPRINT_SAMPLES - 1))
                digest.update(file.read(FINGERPRINT_BLOCK))
    return f"{size}:{digest.hexdigest()}"


# ------------------------------------------------------------------------------------------------ encoding


@dataclass(frozen=True)
class ChunkResult:
    index: int
    data: bytes  # the chunk's NUT stream
    frames: int  # frames decoded from it
    checksum: str  # of its decoded frames
    worker: str
    seconds: float


def chunk_encoder(settings: list[str]) -> list[str]:
    """ffmpeg encoding y4m from its stdin with the user's codec and ``settings`` (``smooth``'s encoder
    arguments) into NUT on its stdout. A new encoder starts each chunk, so each starts with a keyframe."""
    return [*QUIET_FFMPEG, "-nostdin", "-y", *Y4M_STDIN, "-map", "0:v:0", *settings, "-f", CHUNK_FORMAT, "-"]


def encode(clip: vs.VideoNode, settings: list[str], report: Callable[[int, int], None]) -> bytes:
    """``clip`` through the chunk encoder; its output, or a ChunkError with ffmpeg's own words."""
    with tempfile.TemporaryFile() as log:  # no name: nothing is left behind when the task is killed
        encoder = subprocess.Popen(chunk_encoder(settings), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        output: list[bytes] = []
        reader = threading.Thread(target=lambda: output.append(encoder.stdout.read()), daemon=True)
        reader.start()
        frames_failed: BaseException | None = None
        try:
            clip.output(encoder.stdin, y4m=True, progress_update=report)
        except (OSError, vs.Error) as error:  # a dead encoder (broken pipe) or a failing frame
            frames_failed = error
        finally:
            with contextlib.suppress(BrokenPipeError):  # the encoder is gone; its exit status tells
                encoder.stdin.close()
        status = encoder.wait()
        reader.join()
        log.seek(0)
        errors = failure(log.read().decode(errors="replace"))
    if status != 0:
        raise ChunkError(f"encoding failed: {errors}")
    if frames_failed is not None:
        raise ChunkError(in_cli_terms(frames_failed))
    return output[0]


def decoded_checksum(data: bytes) -> tuple[int, str]:
    """The number of frames an encoded chunk decodes to, and a checksum of them (ffmpeg's framemd5)."""
    result = subprocess.run(
        [*QUIET_FFMPEG, "-f", CHUNK_FORMAT, "-i", "-", "-map", "0:v:0", "-f", "framemd5", "-"],
        input=data,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise ChunkError(f"the encoded chunk does not decode: {failure(result.stderr.decode(errors='replace'))}")
    hashes = [line.rsplit(",", 1)[-1].strip() for line in result.stdout.decode().splitlines() if line[:1].isdigit()]
    return len(hashes), "sha256:" + hashlib.sha256("\n".join(hashes).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------- the join


def join(plan: Plan, state: StateFolder, options: Options, media: Media, video_start: Fraction) -> None:
    """The chunks one after another without re-encoding, with the input's audio, subtitles and chapters
    muxed once, as ``vsrife smooth`` muxes them; written beside OUTPUT, read back, and renamed over it only
    when it holds every frame."""
    listing = state.path / "concat.txt"
    listing.write_text(concat_list(plan))
    copy = dataclasses.replace(options, codec="copy", pix_fmt=None, extra=())
    concat = ("-f", "concat", "-i", str(listing))
    kept = f"the chunks are kept in {state.path}"
    with temporary_beside(options.output) as partial:
        command = ffmpeg_command(copy, media, partial, encoder_args(copy), video_start, video_input=concat)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise JobError(f"joining the chunks failed: {failure(result.stderr)}; {kept}")
        expected = Expected(plan.total, plan.rate, len(media.audio), exact=True)
        verdict = judge(partial, expected, result.stderr)
        if verdict.problem is not None:
            raise JobError(f"the joined output is damaged ({verdict.problem}); {kept}")
        os.replace(partial, options.output)


def concat_list(plan: Plan) -> str:
    """ffmpeg's concat list with each chunk's exact duration: the demuxer counts in microseconds, so each
    chunk starts at its true time rounded to one, never drifting (its own estimate may be a frame off)."""
    lines = []
    for chunk in plan.chunks:
        microseconds = _microseconds(chunk.end, plan.rate) - _microseconds(chunk.start, plan.rate)
        lines += [f"file '{chunk.name}'", f"duration {microseconds // 10**6}.{microseconds % 10**6:06d}"]
    return "\n".join(lines) + "\n"


def _microseconds(frame: int, rate: Fraction) -> int:
    return round(Fraction(frame) / rate * 10**6)
