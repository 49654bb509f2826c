"""torch imported with its own BLAS in a host program that loaded another one first (imported by
:mod:`vsrife.player` before anything that imports torch).

torch's CPU convolutions at the sizes playback runs (its im2col path) call BLAS's ``sgemm_``, which the
torch wheel carries (MKL). mpv links ffmpeg's libavfilter, which brings Debian's reference ``libblas.so.3``
into the process before any script runs; its symbols come first, and torch's calls went there: the same
in-between took 150 ms of CPU instead of 30 (model 4.6 at 64x64). Loaded with ``RTLD_DEEPBIND``, torch's
libraries resolve their own symbols first.
"""

from __future__ import annotations

import os
import sys

FOREIGN_BLAS = ("/libblas.so", "/libopenblas", "/libcblas.so", "/libblis.so")


def _foreign_blas_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return any(name in line for line in maps for name in FOREIGN_BLAS)
    except OSError:  # no /proc: not Linux
        return False


if "torch" not in sys.modules and hasattr(os, "RTLD_DEEPBIND") and _foreign_blas_loaded():
    _flags = sys.getdlopenflags()
    sys.setdlopenflags(os.RTLD_NOW | os.RTLD_DEEPBIND)
    try:
        import torch  # noqa: F401
    finally:
        sys.setdlopenflags(_flags)
