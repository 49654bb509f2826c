"""Helpers shared by the tests: real frames in and out of clips (vsrife.frames), upstream's forward pass
(vsrife.apps.upstream), ffmpeg and ffprobe, `vsrife smooth` runs and their one-line messages, the float32
rounding that numeric tolerances are derived from, and the mpv that `make mpv` builds and its IPC."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import vapoursynth as vs

from vsrife import formats, frames
from vsrife.apps import upstream
from vsrife.apps.samples import open_clip


def read_rgb_frames(path: Path, numbers: list[int], crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Real frames of a clip as float32 RGB ``[n, 3, H, W]`` in 0..1; ``crop`` is (left, top, width, height)."""
    clip = open_clip(path)
    matrix = {"matrix_in": 1 if clip.height > 576 else 6} if clip.format.color_family == vs.YUV else {}
    rgb = clip.resize.Bicubic(format=vs.RGBS, **matrix)
    if crop:
        left, top, width, height = crop
        rgb = rgb.std.CropAbs(width, height, left, top)
    return np.stack([frames.to_array(rgb.get_frame(n)) for n in numbers])


def clip_from_array(arrays: np.ndarray, fmt: int = vs.RGBS, fps: tuple[int, int] = (24, 1)) -> vs.VideoNode:
    """A VapourSynth clip holding exactly these ``[n, planes, H, W]`` frames."""
    return frames.clip_from_arrays(arrays, fmt, fps)


def frame_array(clip: vs.VideoNode, n: int) -> np.ndarray:
    return frames.to_array(clip.get_frame(n), np.float32)


def upstream_forward(
    module, state_dict: dict, img0, img1, t: float, scale=1.0, ensemble=False, multiple=1, device="cpu"
):
    """Upstream's output (see :func:`vsrife.apps.upstream.forward`)."""
    return upstream.forward(module, state_dict, img0, img1, t, scale, ensemble, multiple, device)


def ffprobe(path: Path, *args: str) -> str:
    """What ffprobe prints about ``path`` (errors only on stderr), for the tests' oracles."""
    return subprocess.run(
        ["ffprobe", "-v", "error", *args, str(path)], check=True, capture_output=True, text=True
    ).stdout


def probe(path: Path) -> dict:
    """ffprobe's JSON for ``path``: its streams (frames counted by decoding), chapters and format."""
    return json.loads(ffprobe(path, "-count_frames", "-show_streams", "-show_chapters", "-show_format", "-of", "json"))


def ffmpeg(*args: str) -> None:
    """Run ffmpeg (errors only, never asking, overwriting its outputs); a failure fails the test."""
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


def bunny_320(source: Path | str, out: Path, seconds: float | None = None) -> None:
    """The Big Buck Bunny sample at 320x180 in x264 (crf 16), its AAC audio copied: whole (132 frames), or its
    first ``seconds``."""
    cut = ["-t", str(seconds)] if seconds is not None else []
    x264 = ["-c:v", "libx264", "-crf", "16"]
    ffmpeg("-i", str(source), *cut, "-vf", "scale=320:180", *x264, "-c:a", "copy", str(out))


BIN = Path(sys.executable).parent
VSRIFE = str(BIN / "vsrife")


def smooth_command(*args: str, quiet: bool = False) -> list[str]:
    """``vsrife smooth ARGS`` on the CPU with x264's fastest preset (``-q`` when ``quiet``); arguments after
    ``--`` stay last, for ffmpeg."""
    ours = list(args[: args.index("--")]) if "--" in args else list(args)
    switches = ["--device", "cpu", "--preset", "ultrafast", *(["-q"] if quiet else [])]
    return [VSRIFE, "smooth", *ours, *switches, *args[len(ours) :]]


def from_a_terminal(command: list[str]) -> list[str]:
    """``command`` started as a shell in a terminal starts it, with SIGHUP at its default action whatever this
    process inherited: a suite run under ``nohup`` has SIGHUP ignored, and a run that inherits that rightly
    outlives the hangup (see ``test_a_run_under_nohup_outlives_the_terminal``)."""
    reset = "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", reset, *command]


def the_encoder(process: subprocess.Popen, folder: Path, timeout: float = 120) -> int:
    """The pid of a running ``vsrife smooth``'s encoder, once it exists: the ffmpeg child writing into
    ``folder``, not the short-lived ffmpeg that checks the codec before any work."""
    deadline = time.monotonic() + timeout
    pattern = f"^ffmpeg .*{re.escape(str(folder))}/"
    while True:
        found = subprocess.run(["pgrep", "-P", str(process.pid), "-f", pattern], capture_output=True, text=True)
        if found.stdout.split():
            return int(found.stdout.split()[0])
        assert time.monotonic() < deadline and process.poll() is None, "the run never started encoding"
        time.sleep(0.05)


def smooth(*args: str, quiet: bool = False, timeout: float = 900, **run: object) -> subprocess.CompletedProcess:
    """A finished ``vsrife smooth`` run (see :func:`smooth_command`), its output captured as text."""
    return subprocess.run(smooth_command(*args, quiet=quiet), capture_output=True, text=True, timeout=timeout, **run)


def one_line(stderr: str | subprocess.CompletedProcess, *words: str) -> str:
    """The message is one line holding ``words``, with no traceback; returns it."""
    text = stderr.stderr if isinstance(stderr, subprocess.CompletedProcess) else stderr
    message = text.strip()
    assert "Traceback" not in text, text
    assert len(message.splitlines()) == 1, text
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# Two float32 evaluations of one network that add in other orders (another kernel, batch size, layout,
# compiler, or upstream's own code) differ by rounding noise no a-priori bound follows usefully through
# dozens of convolutions and data-dependent warps (γn · Σ|w x| compounds by each layer's Σ|w|). Its size is
# u times the network's sensitivity on the input, not a property of the machine: ours and upstream's for
# 4.0/4.6/4.26 on real frames are 2.5e-6 .. 6.6e-6 from upstream run in float64, and all 36 variants' random
# weights 2.6e-6 at most from upstream's float32, under ATen's default and AVX2 kernels, oneDNN's SSE4.1 and
# AVX2 ones, without oneDNN, on 1 and 2 threads (an AVX2 CPU). 1e-4 is 15 times the largest, and 1/39 of an
# 8-bit code: whatever can show in an output fails.
FP32_NETWORK_TOLERANCE = 1e-4
FLOAT32_ROUNDOFF = 2.0**-24  # u: the most one float32 rounding (to nearest) moves a value, relative to it


def float32_error(magnitude: float | np.ndarray, roundings: int) -> float | np.ndarray:
    """The most that float32 arithmetic can move a sum of terms whose absolute values add up to ``magnitude``
    (every partial sum and product lies within it) when each term passes through at most ``roundings``
    roundings: its constant stored in float32, its products, the additions of the sum in any order, fused or
    not, so on any kernel of any CPU. γ_n · magnitude, γ_n = nu / (1 − nu) (Higham, *Accuracy and Stability of
    Numerical Algorithms*, §3.1)."""
    n = roundings * FLOAT32_ROUNDOFF
    return magnitude * n / (1 - n)


# Σ|w| of Catmull-Rom's normalised taps, all resampling can add up: at most 1.25, enlarging at phase ½
# (2 · 9/16 + 2 · 1/16); 1.1875 shrinking by 2, 1.17 by 4
CATMULL_ROM_ABS_SUM = 1.25


def chroma_factors(clip: vs.VideoNode) -> list[int]:
    """The subsampling factor of each axis along which chroma is resampled (none but for subsampled YUV)."""
    fmt = clip.format
    return [1 << s for s in (fmt.subsampling_w, fmt.subsampling_h) if s] if fmt.color_family == vs.YUV else []


def conversion_roundings(factors: list[int], shrinking: bool) -> int:
    """The most roundings one term of a converted value passes through, zimg's way or ours: 5 in the 3×3
    matrix (its coefficient stored, the product, the two other products and an offset added), 2 between code
    values and 0..1 (a scale, an offset), and per resampled axis its taps + 1 (the weight stored, the
    product, the other taps added): 4f + 1 taps shrinking by f (Catmull-Rom's support of 2 widened), 5
    enlarging."""
    return 7 + sum((4 * f + 1 if shrinking else 5) + 1 for f in factors)


def code_scale(clip: vs.VideoNode, plane: int) -> tuple[float, float]:
    """(offset, span): the code value of v is ``offset + span · v``, v in 0..1 (Y, R, G, B) or −½..½ (chroma),
    as ITU-R BT.601/709/2100 quantise: limited range 16 + 219 v (and 128 + 219 v for YCgCo's chroma, as zimg
    does) or 128 + 224 v for chroma, times 2^(bits − 8); full range (2^bits − 1) v, chroma offset
    2^(bits − 1). Float formats hold v itself."""
    fmt = clip.format
    if fmt.sample_type == vs.FLOAT:
        return 0.0, 1.0
    colour = formats.colour_of(clip)
    bits, chroma = fmt.bits_per_sample, fmt.color_family == vs.YUV and plane > 0
    if not colour.limited:
        return float(1 << (bits - 1) if chroma else 0), float((1 << bits) - 1)
    span = 224 if chroma and colour.matrix != vs.MATRIX_YCGCO else 219
    return float((128 if chroma else 16) << (bits - 8)), float(span << (bits - 8))


def rgb_conversion_error(clip: vs.VideoNode, planes: list[np.ndarray]) -> float:
    """The most float32 can move RGB (0..1) converted from these planes of ``clip`` (zimg's way or ours):
    :func:`float32_error` of a magnitude of 3 values at most (the largest row of YCbCr → RGB,
    B = Y + 2 (1 − Kb) Cb, sums to 1 + 2 (1 − Kb) < 3 in absolute value; YCgCo's rows to 3; RGB's and GRAY's
    to 1), each within (|code| + offset) / span, chroma resampled."""
    row = 3 if clip.format.color_family == vs.YUV else 1
    largest = max((np.abs(p.astype(np.float64)).max() + code_scale(clip, k)[0]) / code_scale(clip, k)[1]
                  for k, p in enumerate(planes))  # fmt: skip
    factors = chroma_factors(clip)
    magnitude = row * CATMULL_ROM_ABS_SUM ** len(factors) * largest
    return float(float32_error(magnitude, conversion_roundings(factors, shrinking=False)))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two arrays of values in 0..``peak``."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def avi_ending_in_empty_slots(folder: Path) -> Path:
    """A 4.00 s AVI at 25 fps whose last 5 of 100 frame slots are empty: 95 frames, the last shown until 4 s."""
    short = folder / "short.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=4", "-vf", r"select=lt(n\,95)", "-fps_mode", "passthrough",
           "-c:v", "mpeg4", str(short))  # fmt: skip
    avi = folder / "slots.avi"
    with_empty_frame_slots(short, avi, 5)
    return avi


def with_empty_frame_slots(avi: Path, out: Path, slots: int) -> None:
    """``avi`` with ``slots`` empty video chunks (``00dc`` of size 0) after its last frame, counted in its
    frame totals and index: what a capture program writes for frames it dropped, here at the end."""
    data = bytearray(avi.read_bytes())
    movi = _riff_list(data, b"movi")
    movi_size = int.from_bytes(data[movi + 4 : movi + 8], "little")
    movi_end = movi + 8 + movi_size
    index = data.index(b"idx1", movi_end)
    index_end = index + 8 + int.from_bytes(data[index + 4 : index + 8], "little")
    chunks = (b"00dc" + bytes(4)) * slots
    entries = b"".join(b"00dc" + struct.pack("<III", 0, movi_end - (movi + 8) + 4 + k * 8, 0) for k in range(slots))
    data[index_end:index_end] = entries
    data[movi_end:movi_end] = chunks
    _add(data, movi + 4, len(chunks))
    _add(data, index + len(chunks) + 4, len(entries))
    _add(data, 4, len(chunks) + len(entries))
    _add(data, data.index(b"avih") + 8 + 16, slots)  # dwTotalFrames
    video_header = data.index(b"strh")
    while data[video_header + 8 : video_header + 12] != b"vids":
        video_header = data.index(b"strh", video_header + 4)
    _add(data, video_header + 8 + 32, slots)  # the video stream's dwLength
    out.write_bytes(bytes(data))


def _riff_list(data: bytearray, kind: bytes) -> int:
    at = data.index(b"LIST", 12)
    while data[at + 8 : at + 12] != kind:
        at = data.index(b"LIST", at + 4)
    return at


def _add(data: bytearray, at: int, amount: int) -> None:
    struct.pack_into("<I", data, at, struct.unpack_from("<I", data, at)[0] + amount)


ROOT = Path(__file__).resolve().parents[1]


def mpv_binary() -> Path:
    """The mpv whose VapourSynth filter speaks API 4 (tools/mpv): ``VSRIFE_MPV`` (the Makefile sets it), else
    the path tools/mpv/build.sh caches it at."""
    path = (
        os.environ.get("VSRIFE_MPV")
        or subprocess.run(
            [str(ROOT / "tools/mpv/build.sh"), "path"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    assert Path(path).is_file(), f"{path}: no mpv there; `make mpv` builds it (`make test` does)"
    return Path(path)


def mpv_environment() -> dict[str, str]:
    """What mpv's VapourSynth filter needs: VSScript from this interpreter's VapourSynth (VSSCRIPT_PATH; the
    venv's `vapoursynth config` points it at this Python), and this tree's vsrife first on the path."""
    vsscript = subprocess.run([str(BIN / "vapoursynth"), "get-vsscript"], capture_output=True, text=True, check=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "VSSCRIPT_PATH": vsscript.stdout.strip(), "PYTHONPATH": path}


class MpvIpc:
    """mpv's JSON IPC (``--input-ipc-server``): commands answered by request id; events kept, each with the
    monotonic time it arrived."""

    def __init__(self, path: Path, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX)
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                assert time.monotonic() < deadline, f"mpv never opened {path}"
                time.sleep(0.05)
        self.buffer = b""
        self.events: list[tuple[float, dict]] = []
        self.request = self.observed = 0

    def _messages(self, timeout: float):
        self.sock.settimeout(timeout)
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                message = json.loads(line)
                if "event" in message:
                    self.events.append((time.monotonic(), message))
                yield message
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("mpv closed its IPC socket")
            self.buffer += chunk

    def command(self, *args: object, timeout: float = 60) -> object:
        """Run a command; its ``data``."""
        reply = self._reply(args, timeout)
        assert reply.get("error") == "success", reply
        return reply.get("data")

    def property(self, name: str) -> object:
        """A property's value; None where mpv has none now (``property unavailable``)."""
        reply = self._reply(("get_property", name), 60)
        return reply.get("data") if reply.get("error") == "success" else None

    def _reply(self, args: tuple, timeout: float) -> dict:
        self.request += 1
        self.sock.sendall(json.dumps({"command": list(args), "request_id": self.request}).encode() + b"\n")
        for message in self._messages(timeout):
            if message.get("request_id") == self.request:
                return message
        raise AssertionError("unreachable")

    def wait_event(self, event: str, after: float, timeout: float = 300) -> float:
        """When ``event`` arrived at or after the monotonic time ``after``, waiting for it if need be."""
        return self.wait_for(lambda message: message.get("event") == event, after, timeout)

    def wait_for(self, matches, after: float, timeout: float = 300) -> float:
        """When the first event ``matches`` accepts arrived at or after ``after``, waiting for it if need be."""
        for when, message in self.events:
            if when >= after and matches(message):
                return when
        for message in self._messages(timeout):
            if matches(message):
                return self.events[-1][0]
        raise AssertionError("unreachable")

    def wait_property(self, name: str, accept, timeout: float = 300) -> None:
        """Until property ``name`` has a value ``accept`` (a value, or a predicate on it) accepts."""
        since = time.monotonic()
        self.observed += 1
        self.command("observe_property", self.observed, name)
        test = accept if callable(accept) else (lambda value: value == accept)

        def changed(message: dict) -> bool:
            value = message.get("data")
            return (
                message.get("event") == "property-change"
                and message.get("name") == name
                and value is not None
                and test(value)
            )

        self.wait_for(changed, since, timeout)
