"""Scene changes: reading the props an SCDetect-style filter sets, and what to output at a cut."""

from __future__ import annotations

import vapoursynth as vs


def is_cut(left: vs.VideoFrame, right: vs.VideoFrame) -> bool:
    """True when a scene change separates two consecutive source frames.

    Either side may say so: ``_SceneChangeNext`` on the left frame or ``_SceneChangePrev`` on the right one.
    """
    return bool(left.props.get("_SceneChangeNext", 0)) or bool(right.props.get("_SceneChangePrev", 0))
