"""The one layer that checks what users pass to :func:`vsrife.rife` and :func:`vsrife.sc_detect`.

Every rule lives here once, with its message once; the rest of the library (timing, scene detection,
the variant table, the engine) assumes valid input. A value of the wrong type is a
:class:`~vsrife.errors.ParameterTypeError` (a ``TypeError``); a value of the right type that is not
allowed is a :class:`~vsrife.errors.ParameterError` (a ``ValueError``); a device that cannot be used is a
:class:`~vsrife.errors.DeviceError`. Each message names the parameter, what was given and what is allowed.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING

import vapoursynth as vs

from .errors import DeviceError, ParameterError, ParameterTypeError, TimecodesError
from .planner import PlanOptions
from .timing import (
    MAX_OUTPUT_FRAMES,
    MAX_STEP,
    ConstantRate,
    FrameTimes,
    Timing,
    VariableRate,
    read_timecodes,
    times_for_frames,
)
from .variants import ARCHITECTURES, DEFAULT_MODEL, MODELS, SCALES, architecture

if TYPE_CHECKING:
    import torch

    from .engine import EngineOptions

MIN_FRAMES = 2
SC_THRESHOLD_RANGE = "a number above 0 and at most 2"
MAX_RATE_TERM = 2**63 - 1  # VapourSynth keeps a rate's numerator and denominator in int64
# HolyWu's TensorRT options: accepted so that scripts carry over; vsrife has no TensorRT path
TRT_OPTIONS = (
    "trt_static_shape",
    "trt_min_shape",
    "trt_opt_shape",
    "trt_max_shape",
    "trt_workspace_size",
    "trt_max_aux_streams",
    "trt_optimization_level",
    "trt_cache_dir",
    "trt_debug",
)


def check_clip(clip: object) -> vs.VideoNode:
    """A clip ``rife`` and ``sc_detect`` can take: one format, one size, YUV/GRAY/RGB, at least 2 frames."""
    if not isinstance(clip, vs.VideoNode):
        raise ParameterTypeError(f"must be a vs.VideoNode (a video clip), not {type(clip).__name__}", param="clip")
    # vsutil's disallow_variable_format tests `format is None`, which R81 never returns; checked here
    if clip.format.id == vs.PresetVideoFormat.NONE:
        raise ParameterError("variable-format clips are not supported; give every frame one format", param="clip")
    if clip.width == 0 or clip.height == 0:
        raise ParameterError("variable-size clips are not supported; resize every frame to one size", param="clip")
    if clip.format.color_family not in (vs.YUV, vs.GRAY, vs.RGB):
        raise ParameterError(f"format {clip.format.name} is not supported; use YUV, GRAY or RGB", param="clip")
    if clip.num_frames < MIN_FRAMES:
        raise ParameterError(
            f"needs at least {MIN_FRAMES} frames to interpolate, it has {clip.num_frames}", param="clip"
        )
    return clip


def whole_number(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterTypeError(f"must be a whole number, not {value!r} ({type(value).__name__})", param=name)
    if value < minimum:
        raise ParameterError(f"must be a whole number of at least {minimum}, not {value!r}", param=name)
    return value


def rate_term(name: str, value: object) -> int:
    """A term of a rate (``factor_num`` … ``fps_den``): a whole number of at least 1. A float that is a whole
    number (``2.0``, as scripts compute rates) is taken as that number; ``2.5`` is refused."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return whole_number(name, value, 1)


def number_in(name: str, value: object, low: float, high: float, allowed: str, low_open: bool = False) -> float:
    """``value`` as a number within ``low``..``high`` (above ``low`` when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterTypeError(f"must be {allowed}, not {value!r} ({type(value).__name__})", param=name)
    if not (low < value if low_open else low <= value) or not value <= high:
        raise ParameterError(f"must be {allowed}, not {value!r}", param=name)
    return value


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool) and value not in (0, 1):
        raise ParameterTypeError(f"must be True or False, not {value!r}", param=name)
    return bool(value)


def sc_threshold(name: str, value: object) -> float:
    return number_in(name, value, 0, 2, SC_THRESHOLD_RANGE, low_open=True)


def check_sc_detect(clip: object, threshold: object) -> None:
    sc_threshold("threshold", threshold)
    if not isinstance(clip, vs.VideoNode):
        raise ParameterTypeError(f"must be a vs.VideoNode (a video clip), not {type(clip).__name__}", param="clip")


@dataclass(frozen=True)
class RateRequest:
    """What the user asked for: a target rate (``fps``), else a factor of the source rate."""

    factor: Fraction
    fps: Fraction | None

    @property
    def name(self) -> str:
        """The parameter an error about the output rate should name."""
        return "factor_num" if self.fps is None else "fps_num"

    def rates(self, source_rate: Fraction) -> tuple[Fraction, Fraction]:
        """The output rate and its ratio to ``source_rate``. A clip of fps 0 has no source rate: with a
        target its frames are placed by their times (the ratio plays no part), with a factor each frame's
        duration is divided by it."""
        if source_rate == 0:
            return (self.fps, self.fps) if self.fps is not None else (self.factor, self.factor)
        output = self.fps if self.fps is not None else source_rate * self.factor
        return output, output / source_rate


def rate_request(factor_num: object, factor_den: object, fps_num: object, fps_den: object) -> RateRequest:
    factor = Fraction(rate_term("factor_num", factor_num), rate_term("factor_den", factor_den))
    if fps_num is None and fps_den is not None:
        raise ParameterError("give fps_num too when fps_den is set (fps_den defaults to 1)", param="fps_num")
    if fps_num is None:
        return RateRequest(factor, None)
    fps = Fraction(rate_term("fps_num", fps_num), rate_term("fps_den", 1 if fps_den is None else fps_den))
    return RateRequest(factor, fps)


def frame_rate(name: str, value: object) -> Fraction:
    """A frame rate given as a number (60, 59.94), a fraction or its text (``"60000/1001"``)."""
    allowed = "a rate above 0 such as 60, 59.94 or '60000/1001'"
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Fraction)):
        raise ParameterTypeError(f"must be {allowed}, not {value!r} ({type(value).__name__})", param=name)
    try:
        text = value.strip() if isinstance(value, str) else repr(value) if isinstance(value, float) else value
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ParameterError(f"must be {allowed}, not {value!r}", param=name) from None
    if rate <= 0 or max(rate.numerator, rate.denominator) > MAX_RATE_TERM:
        raise ParameterError(f"must be {allowed}, not {value!r}", param=name)
    return rate


def plan_options(
    same_rate: bool,
    sc: object,
    static_threshold: object,
    dedup: object,
    dedup_threshold: object,
    max_hold: object,
) -> PlanOptions:
    fraction = "a number from 0 to 1"
    still = None if static_threshold is None else number_in("static_threshold", static_threshold, 0, 1, fraction)
    options = PlanOptions(
        flag("sc", sc),
        still,
        flag("dedup", dedup),
        number_in("dedup_threshold", dedup_threshold, 0, 1, fraction),
        whole_number("max_hold", max_hold, 2),
    )
    if same_rate and not options.dedup:
        raise ParameterError(
            "the same rate changes nothing; it is allowed only with dedup=True",
            param="factor_num",
            mentions={"dedup": True},
        )
    return options


def frame_times(timecodes: object, frames: int) -> FrameTimes | None:
    """``timecodes`` as :class:`FrameTimes` for a clip of ``frames`` frames (None: not given)."""
    if timecodes is None:
        return None
    try:
        if isinstance(timecodes, FrameTimes):
            if timecodes.frames != frames:
                raise TimecodesError(f"holds the times of {timecodes.frames} frames; the clip has {frames}")
            return timecodes
        if isinstance(timecodes, (str, os.PathLike)):
            return read_timecodes(timecodes, frames)
        if isinstance(timecodes, Sequence) and all(_is_time(x) for x in timecodes):
            times = [Fraction(repr(x)) if isinstance(x, float) else Fraction(x) for x in timecodes]
            return times_for_frames(times, frames, "the sequence")
    except TimecodesError as e:
        raise ParameterError(e.reason, param="timecodes") from None
    raise ParameterTypeError(
        "must be a timecodes v2 file's path, a vsrife.FrameTimes or a sequence of start times in "
        f"seconds, not {type(timecodes).__name__}",
        param="timecodes",
    )


def _is_time(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, Fraction)) and math.isfinite(value)


def check_timing(timing: Timing, output_rate: Fraction, request: RateRequest) -> Timing:
    """Refuse what cannot be rendered: more output frames than a clip holds, an output rate so low that
    one output frame passes over many source frames, a rate VapourSynth cannot store."""
    name = request.name
    if timing.output_frames > MAX_OUTPUT_FRAMES:
        raise ParameterError(
            f"the output would have {_count(timing.output_frames)} frames ({timing.source_frames} source "
            f"frames); a VapourSynth clip holds at most {MAX_OUTPUT_FRAMES}",
            param=name,
        )
    if timing.max_step > MAX_STEP:
        raise ParameterError(
            f"the output rate is too low: one output frame would pass over {_count(timing.max_step)} "
            f"source frames (at most {MAX_STEP}); drop frames first (std.SelectEvery) or choose a higher rate",
            param=name,
        )
    if max(output_rate.numerator, output_rate.denominator) > MAX_RATE_TERM:
        raise ParameterError(
            "the output rate's numerator or denominator does not fit VapourSynth's 64-bit rate fields", param=name
        )
    return timing


def clip_timing(frames: int, fps: Fraction, request: RateRequest, times: FrameTimes | None) -> Timing:
    """The output's frame timing for a clip of ``frames`` frames at ``fps`` (0: each frame its own duration)
    as ``request`` asks: placed by ``times`` (the frames' true times) at the output rate where given, or on
    a clip of fps 0 asked for a rate (its times: its durations); else a constant ratio. Checked
    (:func:`check_timing`). The one derivation :func:`vsrife.rife` and the spread render's planner use."""
    output_rate, ratio = request.rates(fps)
    if times is not None:
        return check_timing(VariableRate(times, output_rate), output_rate, request)
    return check_timing(ConstantRate(frames, ratio), output_rate, request)


def _count(number: int) -> str:
    digits = str(number)
    return digits if len(digits) <= 15 else f"about {digits[0]}.{digits[1:3]}e{len(digits) - 1}"


def model_name(model: object, model_path: object) -> str | None:
    """The model asked for: ``model``, the default without a checkpoint, None to detect it from one."""
    if model is None:
        return None if model_path is not None else DEFAULT_MODEL
    if not isinstance(model, str):
        raise ParameterTypeError(f"must be a version string such as {DEFAULT_MODEL!r}, not {model!r}", param="model")
    if model not in ARCHITECTURES:
        raise ParameterError(f"unknown model {model!r}; known models: {', '.join(MODELS)}", param="model")
    return model


def capabilities(model: str | None, scale: object, ensemble: object) -> None:
    """Refuse a ``scale`` or ``ensemble`` the model cannot take, naming the models that can. With ``model``
    None (not known until a checkpoint is read) only ``scale`` itself is checked."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ParameterTypeError(f"must be one of {', '.join(map(str, SCALES))}, not {scale!r}", param="scale")
    if scale not in SCALES:
        raise ParameterError(f"must be one of {', '.join(map(str, SCALES))}, not {scale!r}", param="scale")
    ensemble = flag("ensemble", ensemble)
    if model is None:
        return
    arch = architecture(model)
    if scale not in arch.scales:
        able = [m for m, a in ARCHITECTURES.items() if scale in a.scales]
        raise ParameterError(
            f"model {model} does not take scale={scale}; models that do: {', '.join(able)}",
            param="scale",
            mentions={"scale": scale},
        )
    if ensemble and not arch.supports_ensemble:
        able = [m for m, a in ARCHITECTURES.items() if a.supports_ensemble]
        raise ParameterError(
            f"model {model} does not support ensemble=True; models that do: {', '.join(able)}", param="ensemble"
        )


def compute_device(device: object, device_index: object, trt: bool = False) -> torch.device:
    """``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None picks CUDA when available, else the CPU.
    ``device_index`` (HolyWu's parameter) picks the CUDA device when ``device`` names none; giving it asks
    for CUDA, as ``trt=True`` does."""
    import torch

    if device_index is not None:
        whole_number("device_index", device_index, 0)
    if device is not None and not isinstance(device, str):
        raise ParameterTypeError(f"must be 'cpu', 'cuda' or 'cuda:N', not {device!r}", param="device")
    asked = "device_index" if device_index is not None else "trt" if trt else "device"
    if device is None:
        device = "cuda" if device_index is not None or trt or torch.cuda.is_available() else "cpu"
    kind, _, index_text = device.strip().lower().partition(":")
    if kind == "cpu" and not index_text:
        if device_index is not None or trt:
            raise DeviceError("asks for CUDA, but device='cpu' was given; drop one of them", param=asked)
        return torch.device("cpu")
    if kind != "cuda" or (index_text and not index_text.isdigit()):
        raise DeviceError(f"must be 'cpu', 'cuda' or 'cuda:N', not {device!r}", param="device")
    if not torch.cuda.is_available():
        given = f"device_index={device_index}" if asked == "device_index" else "trt=True" if trt else repr(device)
        raise DeviceError(f"{given} asks for CUDA, which is not available here; use device='cpu'", param=asked)
    index = int(index_text) if index_text else (device_index or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"cuda:{index} does not exist; this machine has cuda:0 to cuda:{count - 1}", param=asked)
    return torch.device("cuda", index)


def half_precision(fp16: object, device: torch.device) -> bool:
    """``fp16`` as a decision: None means fp16 on CUDA, fp32 elsewhere."""
    return device.type == "cuda" if fp16 is None else flag("fp16", fp16)


def engine_options(engine: object, num_streams: object, fp16: object, device: torch.device) -> EngineOptions:
    """The engine's options: ``engine`` (a :class:`~vsrife.engine.EngineOptions`), its dtype set by ``fp16``
    where given (else by the device), its workers by HolyWu's ``num_streams`` where given: batches at once
    on CUDA; on the CPU ``num_streams`` does not apply, and a note says so."""
    from .engine import EngineOptions

    if engine is not None and not isinstance(engine, EngineOptions):
        raise ParameterTypeError(f"must be a vsrife.EngineOptions, not {type(engine).__name__}", param="engine")
    options = engine or EngineOptions()
    if fp16 is not None or options.dtype is None:
        options = replace(options, dtype=torch_dtype(half_precision(fp16, device)))
    if num_streams is None:
        return options
    count = whole_number("num_streams", num_streams, 1)
    if device.type == "cuda":
        return replace(options, workers=count)
    print(f"vsrife: num_streams={count} is for CUDA; on the CPU the engine runs one call per core", file=sys.stderr)
    return options


def torch_dtype(half: bool) -> torch.dtype:
    import torch

    return torch.float16 if half else torch.float32


def announce_trt(trt: bool, given: dict[str, object]) -> None:
    """HolyWu's TensorRT switch and options, for scripts written for PyPI ``vsrife`` 5.x: ``trt=True``
    runs vsrife's fastest CUDA path; the shape, workspace and cache options do not apply. One line on stderr
    says each."""
    if trt:
        print("vsrife: trt=True: no TensorRT here; running vsrife's own CUDA path", file=sys.stderr)
    if given:
        print(f"vsrife: ignored (no TensorRT here): {', '.join(sorted(given))}", file=sys.stderr)
