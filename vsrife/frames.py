"""VapourSynth frames to numpy arrays and back: the one adaptor the engine, the benchmark and the tests use.

Arrays are ``[planes, height, width]`` (planes of one size: RGB, GRAY, YUV 4:4:4) in the frame's own
sample type (uint8, uint16, float16, float32), or a list of planes where their sizes differ (subsampled
YUV).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import vapoursynth as vs


def plane_list(frame: vs.VideoFrame) -> list[np.ndarray]:
    """Views of the frame's planes (valid while the frame lives)."""
    return [np.asarray(frame[p]) for p in range(frame.format.num_planes)]


def to_array(frame: vs.VideoFrame, dtype: np.dtype | type | None = None) -> np.ndarray:
    """A copy of the frame's equally sized planes as one ``[planes, height, width]`` array."""
    stacked = np.stack(plane_list(frame))
    return stacked if dtype is None else stacked.astype(dtype, copy=False)


def sample_dtype(fmt: vs.VideoFormat) -> np.dtype:
    """The numpy type of one sample of ``fmt``."""
    if fmt.sample_type == vs.FLOAT:
        return np.dtype(np.float16 if fmt.bits_per_sample == 16 else np.float32)
    return np.dtype(np.uint8 if fmt.bytes_per_sample == 1 else np.uint16)


def write(frame: vs.VideoFrame, planes: np.ndarray | Sequence[np.ndarray]) -> vs.VideoFrame:
    """Copy ``planes`` into the writable ``frame``, converted to its sample type; returns the frame."""
    dtype = sample_dtype(frame.format)
    for target, plane in zip(plane_list(frame), planes, strict=True):
        np.copyto(target, plane, casting="unsafe" if plane.dtype != dtype else "no")
    return frame


def clip_from_arrays(
    arrays: np.ndarray | Sequence[np.ndarray], fmt: int = vs.RGBS, fps: tuple[int, int] = (24, 1)
) -> vs.VideoNode:
    """A clip whose frame ``n`` holds ``arrays[n]`` (``[planes, height, width]``) in format ``fmt``."""
    _, height, width = arrays[0].shape
    blank = vs.core.std.BlankClip(
        format=fmt, width=width, height=height, length=len(arrays), fpsnum=fps[0], fpsden=fps[1], keep=True
    )
    return blank.std.ModifyFrame(blank, lambda n, f: write(f.copy(), arrays[n]))
