"""The public VapourSynth filter: :func:`rife`."""

from __future__ import annotations

from fractions import Fraction
from functools import partial
from pathlib import Path

import torch
import vapoursynth as vs

from . import scene, weights
from .engine import Engine, resolve_device
from .errors import ParameterError, ParameterTypeError
from .network import IFNet
from .timing import Blend, ConstantRate, Copy, FramePlanner, PlanOptions, rate_ratio
from .variants import DEFAULT_MODEL, architecture, check_capabilities, resolve_model

SUPPORTED_FORMATS = (vs.RGBS, vs.RGBH)
DEFAULT_DEDUP_THRESHOLD = 0.02
TIMESTEP_PROP = "RifeTimestep"
PAIR_PROP = "RifePair"


def rife(
    clip: vs.VideoNode,
    model: str | None = None,
    model_path: str | Path | None = None,
    auto_download: bool = False,
    factor_num: int = 2,
    factor_den: int = 1,
    fps_num: int | None = None,
    fps_den: int | None = None,
    scale: float = 1.0,
    ensemble: bool = False,
    sc: bool = True,
    sc_threshold: float | None = scene.DEFAULT_THRESHOLD,
    static_threshold: float | None = 0.0,
    dedup: bool = False,
    dedup_threshold: float = DEFAULT_DEDUP_THRESHOLD,
    max_hold: int = 3,
    device: str | None = None,
    device_index: int | None = None,
) -> vs.VideoNode:
    """Interpolate frames with RIFE v4 to raise (or convert) a clip's frame rate.

    :param clip:          RGBS or RGBH, at least 2 frames, any size from 2×2. RGBH computes in fp16 on
                          CUDA; on the CPU it computes in fp32 and rounds the result to fp16.
    :param model:         RIFE version, ``"4.0"`` … ``"4.26.heavy"`` (see ``vsrife.MODELS``). Default ``"4.26"``,
                          or, with ``model_path``, whatever version the checkpoint is.
    :param model_path:    A checkpoint file (``.pkl``, ``.pth``, ``.safetensors``) to use instead of the cached
                          weights; its version is detected from its keys.
    :param auto_download: Fetch the model's weights if they are not cached. Default False: nothing is
                          downloaded unless asked (``python -m vsrife weights fetch MODEL``).
    :param factor_num:    Output rate = source rate × factor_num / factor_den. Default 2 / 1.
    :param factor_den:    See ``factor_num``. Ratios below 1 (rate conversion down) are allowed too.
    :param fps_num:       Target rate numerator; with ``fps_den`` (default 1) it overrides the factor.
    :param fps_den:       Target rate denominator, e.g. ``fps_num=60000, fps_den=1001``.
    :param scale:         Resolution the flow is estimated at: 0.25, 0.5, 1.0 (default), 2.0 or 4.0.
                          Use 0.5 for 4K; higher catches finer motion at more cost.
    :param ensemble:      Also run each block on the reversed pair and average (slower, smoother);
                          only on versions that support it.
    :param sc:            Never blend across a scene change: between frames marked ``_SceneChangeNext`` /
                          ``_SceneChangePrev`` output the nearer source frame instead. Default True.
    :param sc_threshold:  Detect scene changes with :func:`vsrife.sc_detect` at this threshold (default 0.3,
                          0 < t ≤ 2; lower finds more). None trusts the props already on the clip
                          (``misc.SCDetect``, ``scd.Detect``, wwxd, scxvid, …).
    :param static_threshold: Pairs of source frames this alike are still: the nearer source frame is
                          output, bit-exact, without running the network. 0 (default): bit-identical
                          frames only; above 0: the largest local change between the frames' 256-pixel
                          grey copies, 0..1 (0.02 ≈ 5 of 255). None: always interpolate.
    :param dedup:         Held drawings (animation on twos or threes): place each distinct drawing at the
                          time of its first frame and synthesize the frames between neighbouring drawings
                          at their true times. Allows ``factor_num=factor_den`` (same rate, holds replaced by
                          in-betweens). Default False.
    :param dedup_threshold: Largest local change (as for ``static_threshold``) for a frame to count as a
                          repeat of the previous one; 0 means bit-identical only. Default 0.02.
    :param max_hold:      With ``dedup``, a drawing held for more than this many frames is a real pause and
                          stays still. Default 3.
    :param device:        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; default CUDA when available, else the CPU.
    :param device_index:  CUDA device ordinal when ``device`` is ``"cuda"`` or unset (HolyWu compatible).
    :return:              A clip in the input's format and size at the new rate: ``ceil(frames × ratio)``
                          frames; source frames pass through bit-exact; every frame carries the output
                          rate's ``_DurationNum/_DurationDen``; synthesized frames carry ``RifeTimestep``
                          (t in 0..1) and ``RifePair`` (their two source frame numbers).
    """
    _check_clip(clip)
    ratio = rate_ratio(clip.fps, factor_num, factor_den, fps_num, fps_den)
    timing = ConstantRate(clip.num_frames, ratio)
    options = _plan_options(ratio, sc, sc_threshold, static_threshold, dedup, dedup_threshold, max_hold)
    torch_device = resolve_device(device, device_index)
    engine = _build_engine(clip, model, model_path, auto_download, scale, ensemble, torch_device)
    if sc and sc_threshold is not None:
        clip = scene.sc_detect(clip, sc_threshold)
    return _interpolate(clip, FramePlanner(timing, options), engine)


def _check_clip(clip: object) -> None:
    if not isinstance(clip, vs.VideoNode):
        raise ParameterTypeError(f"clip: must be a vs.VideoNode (a video clip), not {type(clip).__name__}")
    # vsutil's disallow_variable_format tests `format is None`, which R81 never returns; check here.
    if clip.format.id == vs.PresetVideoFormat.NONE:
        raise ParameterError("clip: variable-format clips are not supported; give every frame one format")
    if clip.width == 0 or clip.height == 0:
        raise ParameterError("clip: variable-size clips are not supported; resize every frame to one size")
    if clip.format.id not in SUPPORTED_FORMATS:
        raise ParameterError(f"clip: format {clip.format.name} is not supported; convert to RGBS or RGBH first")
    if clip.num_frames < 2:
        raise ParameterError(f"clip: needs at least 2 frames to interpolate, it has {clip.num_frames}")


def _build_engine(
    clip: vs.VideoNode,
    model: str | None,
    model_path: str | Path | None,
    auto_download: bool,
    scale: float,
    ensemble: bool,
    device: torch.device,
) -> Engine:
    if model_path is None:
        model = model or DEFAULT_MODEL
    check_capabilities(model, scale, ensemble)  # before any file is read
    if model_path is not None:
        state_dict = weights.load_state_dict(model_path)
        model = resolve_model(state_dict, model, str(model_path))
    else:
        path = weights.locate(model, auto_download)
        state_dict = weights.load_state_dict(path)
        model = resolve_model(state_dict, model, str(path))
    check_capabilities(model, scale, ensemble)
    arch = architecture(model)
    with torch.device("meta"):
        net = IFNet(arch, scale, ensemble)
    net.load_state_dict(state_dict, strict=True, assign=True)
    fp16 = clip.format.bits_per_sample == 16 and device.type == "cuda"
    return Engine(
        net,
        device,
        torch.float16 if fp16 else torch.float32,
        clip.width,
        clip.height,
        arch.size_multiple(scale),
        cache_frames=vs.core.num_threads + 4,
    )


def _plan_options(
    ratio: Fraction,
    sc: bool,
    sc_threshold: float | None,
    static_threshold: float | None,
    dedup: bool,
    dedup_threshold: float,
    max_hold: int,
) -> PlanOptions:
    if sc_threshold is not None:
        scene.check_threshold("sc_threshold", sc_threshold)
    if static_threshold is not None and not _is_fraction(static_threshold):
        raise ParameterError(f"static_threshold: must be None or a number from 0 to 1, not {static_threshold!r}")
    if not _is_fraction(dedup_threshold):
        raise ParameterError(f"dedup_threshold: must be a number from 0 to 1, not {dedup_threshold!r}")
    if isinstance(max_hold, bool) or not isinstance(max_hold, int) or max_hold < 2:
        raise ParameterError(f"max_hold: must be a whole number of at least 2, not {max_hold!r}")
    if ratio == 1 and not dedup:
        raise ParameterError("factor_num: the same rate changes nothing; it is allowed only with dedup=True")
    return PlanOptions(bool(sc), static_threshold, bool(dedup), dedup_threshold, max_hold)


def _is_fraction(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1


def _interpolate(clip: vs.VideoNode, planner: FramePlanner, engine: Engine) -> vs.VideoNode:
    """One output frame per call; each gets the annotated source frames of its planning window."""
    options = planner.options
    thresholds = [t for t in (options.static_threshold, options.dedup_threshold if options.dedup else None) if t is not None]
    info = scene.annotate(clip, exact=0 in thresholds, local=any(t > 0 for t in thresholds))
    first, last = planner.window()
    cycle, offsets = planner.timing.left_indices_per_cycle()
    window = [scene.shifted(info, k).std.SelectEvery(cycle, offsets) for k in range(first, last + 1)]
    out = window[0].std.ModifyFrame(window, partial(_output_frame, planner=planner, engine=engine, first=first))
    rate = clip.fps * planner.timing.ratio
    if rate == 0:  # variable-rate source: frames keep their own durations
        return out
    return out.std.AssumeFPS(fpsnum=rate.numerator, fpsden=rate.denominator)


def _output_frame(n: int, f: list[vs.VideoFrame], planner: FramePlanner, engine: Engine, first: int) -> vs.VideoFrame:
    base = planner.timing.position(n).left + first  # source frame of f[0]
    known: dict[int, scene.SourceFacts] = {}

    def facts(j: int) -> scene.SourceFacts:
        if j not in known:
            known[j] = scene.SourceFacts.read(f[j - base])
        return known[j]

    action = planner.plan(n, facts)
    if isinstance(action, Copy):
        out = f[action.source - base].copy()
    else:
        out = _synthesize(action, f[action.left - base], f[action.right - base], engine)
    before, after = planner.scene_change(n, facts, action)
    for key in scene.PRIVATE_PROPS:
        del out.props[key]
    out.props[scene.PREV] = int(before)
    out.props[scene.NEXT] = int(after)
    return out


def _synthesize(blend: Blend, left: vs.VideoFrame, right: vs.VideoFrame, engine: Engine) -> vs.VideoFrame:
    image = engine.interpolate(engine.prepare(blend.left, left), engine.prepare(blend.right, right), float(blend.t))
    out = (left if blend.shown == blend.left else right).copy()
    engine.write(image, out)
    out.props[TIMESTEP_PROP] = float(blend.t)
    out.props[PAIR_PROP] = [blend.left, blend.right]
    return out
