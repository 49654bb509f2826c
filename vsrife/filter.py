"""The public VapourSynth filter: :func:`rife`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import vapoursynth as vs

from . import scene, weights
from .engine import Engine, resolve_device
from .errors import ParameterError, ParameterTypeError
from .network import IFNet
from .timing import ConstantRate, Position, rate_ratio
from .variants import DEFAULT_MODEL, architecture, check_capabilities, resolve_model

SUPPORTED_FORMATS = (vs.RGBS, vs.RGBH)
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
    sc_threshold: float | None = None,
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
    :param sc_threshold:  None (default) trusts scene-change props already on the clip (``misc.SCDetect``,
                          ``scd.Detect``, wwxd, …).
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
    if sc_threshold is not None:
        raise ParameterError("sc_threshold: scene detection is not built in yet; pass None to use the clip's props")
    torch_device = resolve_device(device, device_index)
    engine = _build_engine(clip, model, model_path, auto_download, scale, ensemble, torch_device)
    return _interpolate(clip, timing, engine, sc)


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


def _interpolate(clip: vs.VideoNode, timing: ConstantRate, engine: Engine, sc: bool) -> vs.VideoNode:
    cycle, offsets = timing.left_indices_per_cycle()
    right_of_each = clip[1:] + clip[-1]
    lefts = clip.std.SelectEvery(cycle, offsets)
    rights = right_of_each.std.SelectEvery(cycle, offsets)
    out = vs.core.std.ModifyFrame(lefts, [lefts, rights], partial(_output_frame, timing=timing, engine=engine, sc=sc))
    rate = clip.fps * timing.ratio
    if rate == 0:  # variable-rate source: frames keep their own durations
        return out
    return out.std.AssumeFPS(fpsnum=rate.numerator, fpsden=rate.denominator)


def _output_frame(n: int, f: list[vs.VideoFrame], timing: ConstantRate, engine: Engine, sc: bool) -> vs.VideoFrame:
    pos = timing.position(n)
    if pos.is_source_frame or (sc and scene.is_cut(f[0], f[1])):
        return f[0] if pos.nearest == pos.left else f[1]
    return _synthesize(pos, f[0], f[1], engine)


def _synthesize(pos: Position, left: vs.VideoFrame, right: vs.VideoFrame, engine: Engine) -> vs.VideoFrame:
    image = engine.interpolate(engine.prepare(pos.left, left), engine.prepare(pos.right, right), float(pos.t))
    out = (left if pos.nearest == pos.left else right).copy()
    engine.write(image, out)
    out.props[TIMESTEP_PROP] = float(pos.t)
    out.props[PAIR_PROP] = [pos.left, pos.right]
    return out
