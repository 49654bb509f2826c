"""vsrife: RIFE v4 frame interpolation for VapourSynth, on CUDA or on the CPU.

import vapoursynth as vs
from vsrife import rife

clip = rife(clip, factor_num=5, factor_den=2)  # 24 → 60 fps
"""

from .errors import VsRifeError
from .filter import rife
from .scene import sc_detect
from .sources import Source, open_source
from .timing import FrameTimes
from .variants import DEFAULT_MODEL, MODELS

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "FrameTimes",
    "Source",
    "VsRifeError",
    "__version__",
    "open_source",
    "rife",
    "sc_detect",
]
