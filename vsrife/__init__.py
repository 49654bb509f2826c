"""vsrife: RIFE v4 frame interpolation for VapourSynth, on CUDA or on the CPU.

import vapoursynth as vs
from vsrife import rife

clip = rife(clip, factor_num=5, factor_den=2)  # 24 → 60 fps
"""

from .errors import VsRifeError
from .filter import rife
from .scene import sc_detect
from .variants import DEFAULT_MODEL, MODELS

__version__ = "0.1.0"
__all__ = ["rife", "sc_detect", "MODELS", "DEFAULT_MODEL", "VsRifeError", "__version__"]
