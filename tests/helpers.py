"""Helpers shared by the tests: real frames in and out of clips (vsrife.frames), and upstream's forward pass
(vsrife.apps.upstream)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import vapoursynth as vs

from vsrife import frames
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


def short_bunny(source: Path | str, out: Path) -> None:
    """The first 2 s of the Big Buck Bunny sample at 320x180 in x264, its AAC audio copied."""
    x264 = ["-c:v", "libx264", "-crf", "16"]
    ffmpeg("-i", str(source), "-t", "2", "-vf", "scale=320:180", *x264, "-c:a", "copy", str(out))
