"""Scene changes and repeated frames: detection, and the per-frame facts the frame planner reads.

The detector works on a small grey copy of the clip (:data:`THUMB_WIDTH` pixels wide) and needs no plugin.
For each boundary between frames ``a`` and ``b`` it measures how *dissimilar* they are: one minus the
correlation of their pictures, 0 for identical (or one a brightened / contrast-changed copy of the other)
up to 1 for unrelated and 2 for inverted. A boundary is a cut when that dissimilarity is at least
``threshold`` **and** at least :data:`SPIKE_RATIO` times the dissimilarity of the boundaries just before and
after it. So steady fast motion and pans (every boundary dissimilar) are not cuts, fades are not cuts (a
fade changes brightness and contrast, which the correlation ignores), and a one-frame flash is not a cut
(both of its boundaries are dissimilar, neither stands out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vapoursynth as vs
from vsutil import get_y

from . import params
from .errors import ParameterError

THUMB_WIDTH = 64
SPIKE_RATIO = 2.0
DEFAULT_THRESHOLD = 0.3
FLAT_STDDEV = 0.02  # below this a picture is flat (black, white) and correlation means nothing
BRIGHTNESS_WEIGHT = 2.0
CONTRAST_WEIGHT = 4.0
NEXT = "_SceneChangeNext"
PREV = "_SceneChangePrev"
CHANGE_WIDTH = 256  # width of the grey copy local changes are measured on
CUT_PROP = "RifeCutBefore"
DIFF_PROP = "RifeDiffPrev"
CHANGE_PROP = "RifeChangePrev"
PRIVATE_PROPS = (CUT_PROP, DIFF_PROP, CHANGE_PROP)
CONTEXT = (-2, -1, 0, 1, 2)  # frames a decision at frame n looks at
DETECTED = (-2, -1, 0, 1)  # frames the decision "a cut before frame n" looks at


def is_cut(left: vs.VideoFrame, right: vs.VideoFrame, n: int) -> bool:
    """True when a scene change separates source frames ``n - 1`` and ``n``.

    Either side may say so: ``_SceneChangeNext`` on the left frame or ``_SceneChangePrev`` on the right one.
    """
    return scene_flag(left.props, NEXT, n - 1) or scene_flag(right.props, PREV, n)


def scene_flag(props: vs.FrameProps, key: str, n: int) -> bool:
    """A scene-change prop as VapourSynth's convention has it: absent, or the integer 0 or 1."""
    value = props.get(key, 0)
    if type(value) is not int or value not in (0, 1):
        raise ParameterError(
            f"source frame {n} has {key}={value!r} ({type(value).__name__}); scene-change props must be "
            "the integer 0 or 1 (fix the filter that set it, or let vsrife detect cuts: sc_threshold=0.3)",
            param="clip",
        )
    return value == 1


def shifted(clip: vs.VideoNode, offset: int) -> vs.VideoNode:
    """Frame ``j`` of the result is frame ``j + offset`` of ``clip``, clamped to the first and last frame."""
    offset = max(-(clip.num_frames - 1), min(offset, clip.num_frames - 1))
    if offset > 0:
        return clip[offset:] + clip[-1] * offset
    if offset < 0:
        return clip[0] * -offset + clip[:offset]
    return clip


def luma_thumbnail(clip: vs.VideoNode, width: int = THUMB_WIDTH, fmt: int = vs.GRAYS) -> vs.VideoNode:
    """A small grey copy (luma; BT.709 luma for RGB) for fast picture comparisons, float or (``GRAY16``, half
    the cost of shrinking a 1080p frame to float) 16-bit integer."""
    height = max(2, round(clip.height * width / clip.width / 2) * 2)
    if clip.format.color_family == vs.RGB:
        return clip.resize.Bilinear(width, height, format=fmt, matrix_s="709", matrix_in_s="rgb")
    return get_y(clip).resize.Bilinear(width, height, format=fmt)


def picture(frame: vs.VideoFrame) -> np.ndarray:
    """A thumbnail's values in 0..1 (a 16-bit one divided by 65535)."""
    plane = np.asarray(frame[0])
    return plane / 65535.0 if plane.dtype == np.uint16 else plane


def dissimilarity(a: np.ndarray, b: np.ndarray) -> float:
    """How different two grey pictures are, 0 … 2: 1 − their correlation, or their change in mean
    brightness if that is larger (:data:`BRIGHTNESS_WEIGHT` per unit); a flat picture (black, white) has no
    correlation, so there the change in contrast counts instead (:data:`CONTRAST_WEIGHT` per unit)."""
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    brightness = BRIGHTNESS_WEIGHT * abs(a.mean() - b.mean())
    if min(a.std(), b.std()) < FLAT_STDDEV:
        return min(2.0, brightness + CONTRAST_WEIGHT * abs(a.std() - b.std()))
    da, db = a - a.mean(), b - b.mean()
    correlation = (da * db).sum() / np.sqrt((da * da).sum() * (db * db).sum())
    return float(min(2.0, max(1.0 - correlation, brightness)))


def cut_between(
    before: np.ndarray | None, a: np.ndarray, b: np.ndarray, after: np.ndarray | None, threshold: float
) -> bool:
    """Whether the boundary a → b is a cut, given the frames around it (None past the clip's ends)."""
    score = dissimilarity(a, b)
    if score < threshold:
        return False
    context = max(
        dissimilarity(before, a) if before is not None else 0.0,
        dissimilarity(b, after) if after is not None else 0.0,
    )
    return score >= SPIKE_RATIO * context


def sc_detect(clip: vs.VideoNode, threshold: float = DEFAULT_THRESHOLD) -> vs.VideoNode:
    """Mark scene changes: sets ``_SceneChangePrev`` and ``_SceneChangeNext`` (0 or 1) on every frame.

    Works on any format with no plugin, on a 64-pixel-wide grey copy. ``threshold`` (default 0.3, range
    0 < threshold ≤ 2) is the least dissimilarity — 1 − correlation of the two pictures — a cut must have;
    a cut must also be :data:`SPIKE_RATIO` (2) times as dissimilar as its neighbouring boundaries, so motion,
    fades and single-frame flashes are not cuts. Lower finds more cuts. A frame's ``_SceneChangeNext``
    always equals the next frame's ``_SceneChangePrev``.
    """
    params.check_sc_detect(clip, threshold)
    thumbs = luma_thumbnail(clip, fmt=vs.GRAY16)
    context = [shifted(thumbs, k) for k in CONTEXT]
    last = clip.num_frames - 1

    def mark(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        pictures = {n + k: picture(frame) for k, frame in zip(CONTEXT, f[1:], strict=True) if 0 <= n + k <= last}
        out = f[0].copy()
        out.props[PREV] = int(
            n > 0 and cut_between(pictures.get(n - 2), pictures[n - 1], pictures[n], pictures.get(n + 1), threshold)
        )
        out.props[NEXT] = int(
            n < last and cut_between(pictures.get(n - 1), pictures[n], pictures[n + 1], pictures.get(n + 2), threshold)
        )
        return out

    return clip.std.ModifyFrame([clip, *context], mark)


def annotate(clip: vs.VideoNode, exact: bool = True, local: bool = False, detect: float | None = None) -> vs.VideoNode:
    """``clip`` with the facts the planner reads on every frame, about it and the previous frame:

    - :data:`CUT_PROP`: a scene change lies between them — found by the detector at threshold ``detect``
      (as :func:`sc_detect` finds it), or with ``detect`` None read from the scene-change props;
    - :data:`DIFF_PROP` (``exact``): mean absolute difference, largest over the planes, 0..1 of the
      format's range; 0.0 means bit-identical;
    - :data:`CHANGE_PROP` (``local``): the largest local change, the largest absolute difference between
      their :data:`CHANGE_WIDTH`-pixel-wide grey copies, 0..1; compression noise averages out there,
      a moving mouth does not.

    Frame 0 gets 1.0 for both differences. One Python call per frame does all of it.
    """
    previous = shifted(clip, -1)
    stats = [previous.std.PlaneStats(clip, plane=p) for p in range(clip.format.num_planes)] if exact else []
    if local:
        thumbs = luma_thumbnail(clip, min(clip.width, CHANGE_WIDTH))
        stats.append(vs.core.std.Expr([thumbs, shifted(thumbs, -1)], "x y - abs").std.PlaneStats())
    around = DETECTED if detect is not None else ()
    small = luma_thumbnail(clip, fmt=vs.GRAY16) if around else None
    context = [shifted(small, k) for k in around]
    last = clip.num_frames - 1
    planes = clip.format.num_planes if exact else 0

    def cut_before(n: int, f: list[vs.VideoFrame]) -> bool:
        if n == 0:
            return False
        if detect is None:
            return is_cut(f[1], f[0], n)
        pictures = {n + k: picture(frame) for k, frame in zip(around, f[-len(around) :], strict=True)}
        before, after = pictures[n - 2] if n >= 2 else None, pictures[n + 1] if n < last else None
        return cut_between(before, pictures[n - 1], pictures[n], after, detect)

    def record(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        out = f[0].copy()
        out.props[CUT_PROP] = int(cut_before(n, f))
        out.props[DIFF_PROP] = (
            1.0 if n == 0 or not exact else max(float(s.props["PlaneStatsDiff"]) for s in f[2 : 2 + planes])
        )
        out.props[CHANGE_PROP] = 1.0 if n == 0 or not local else float(f[2 + len(stats) - 1].props["PlaneStatsMax"])
        return out

    return clip.std.ModifyFrame([clip, previous, *stats, *context], record)


@dataclass(frozen=True)
class SourceFacts:
    """What the planner knows of one source frame (read from :func:`annotate`'s props)."""

    cut_before: bool  # a scene change lies between the previous frame and this one
    diff_prev: float  # mean difference to the previous frame; 0.0: an exact repeat
    change_prev: float  # largest local change from the previous frame

    @classmethod
    def read(cls, frame: vs.VideoFrame) -> SourceFacts:
        props = frame.props
        return cls(bool(props[CUT_PROP]), float(props[DIFF_PROP]), float(props[CHANGE_PROP]))

    def same_as_previous(self, threshold: float) -> bool:
        """Threshold 0: bit-identical to the previous frame; above 0: local change at most that."""
        return self.diff_prev == 0.0 if threshold == 0 else self.change_prev <= threshold
