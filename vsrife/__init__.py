"""vsrife: RIFE v4 frame interpolation for VapourSynth, on CUDA or on the CPU.

    from vsrife import open_source, rife

    source = open_source("film.mkv")
    clip = rife(source.clip, fps_num=60, timecodes=source.times)  # 24 → 60 fps

Names are imported when first used (PEP 562): ``import vsrife`` costs nothing until ``rife`` is touched,
so the command line's light commands never load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module of the library that defines it
_EXPORTS = {
    "rife": "filter",
    "playback": "player",
    "sc_detect": "scene",
    "open_source": "sources",
    "Source": "sources",
    "FrameTimes": "timing",
    "EngineOptions": "engine",
    "MODELS": "variants",
    "DEFAULT_MODEL": "variants",
    "VsRifeError": "errors",
}
__all__ = [
    "DEFAULT_MODEL",
    "EngineOptions",
    "MODELS",
    "FrameTimes",
    "Source",
    "VsRifeError",
    "__version__",
    "open_source",
    "playback",
    "rife",
    "sc_detect",
]

if TYPE_CHECKING:
    from .engine import EngineOptions
    from .errors import VsRifeError
    from .filter import rife
    from .player import playback
    from .scene import sc_detect
    from .sources import Source, open_source
    from .timing import FrameTimes
    from .variants import DEFAULT_MODEL, MODELS


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vsrife' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
