"""Helpers shared by the tests: real frames in and out of clips, and upstream's forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import vapoursynth as vs

from vsrife.sources import open_video


def read_rgb_frames(path: Path, frames: list[int], crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Real frames of a clip as float32 RGB ``[n, 3, H, W]`` in 0..1; ``crop`` is (left, top, width, height)."""
    clip = open_video(path)
    matrix = 1 if clip.height > 576 else 6
    rgb = clip.resize.Bicubic(format=vs.RGBS, matrix_in=matrix)
    if crop:
        left, top, width, height = crop
        rgb = rgb.std.CropAbs(width, height, left, top)
    return np.stack([np.stack([np.asarray(rgb.get_frame(n)[p]) for p in range(3)]) for n in frames])


def clip_from_array(frames: np.ndarray, fmt: int = vs.RGBS, fps: tuple[int, int] = (24, 1)) -> vs.VideoNode:
    """A VapourSynth clip holding exactly these ``[n, 3, H, W]`` float frames."""
    n, _, h, w = frames.shape
    blank = vs.core.std.BlankClip(format=fmt, width=w, height=h, length=n, fpsnum=fps[0], fpsden=fps[1])
    dtype = np.float16 if vs.core.get_video_format(fmt).bits_per_sample == 16 else np.float32

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n, p].astype(dtype))
        return out

    return blank.std.ModifyFrame(blank, fill)


def frame_array(clip: vs.VideoNode, n: int) -> np.ndarray:
    frame = clip.get_frame(n)
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)]).astype(np.float32)


def upstream_forward(
    module,
    state_dict: dict,
    img0: torch.Tensor,
    img1: torch.Tensor,
    t: float,
    scale: float = 1.0,
    ensemble: bool = False,
    multiple: int = 1,
) -> torch.Tensor:
    """Upstream's IFNet (and encoder) on ``[1, 3, H, W]`` frames, run the way HolyWu's filter runs it:
    zero-padded right and bottom to ``multiple``, then cropped back."""
    net = module.IFNet(scale, ensemble).eval()
    missing, _ = net.load_state_dict(state_dict, strict=False)
    assert not missing, f"upstream model left without weights: {missing[:5]}"
    height, width = img0.shape[2:]
    pad = (0, -width % multiple, 0, -height % multiple)
    img0, img1 = torch.nn.functional.pad(img0, pad), torch.nn.functional.pad(img1, pad)
    return _upstream_run(net, img0, img1, t)[:, :, :height, :width]


def _upstream_run(net, img0: torch.Tensor, img1: torch.Tensor, t: float) -> torch.Tensor:
    _, _, h, w = img0.shape
    timestep = torch.full([1, 1, h, w], t)
    half = torch.tensor([(w - 1.0) / 2.0, (h - 1.0) / 2.0])
    xs = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(-1, -1, h, -1)
    ys = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(-1, -1, -1, w)
    grid = torch.cat([xs, ys], 1)
    with torch.inference_mode():
        if getattr(net, "encode", None) is not None:
            return net(img0, img1, timestep, half, grid, net.encode(img0), net.encode(img1))
        return net(img0, img1, timestep, half, grid)
