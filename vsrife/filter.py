"""The public VapourSynth filter: :func:`rife`."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import lru_cache, partial
from pathlib import Path

import torch
import vapoursynth as vs

from . import checkpoints, formats, heap, params, scene
from .engine import Engine, EngineOptions, Job
from .errors import ParameterError, VsRifeError
from .planner import DEFAULT_DEDUP_THRESHOLD, Copy, FramePlanner, Synthesize
from .timing import MAX_OUTPUT_FRAMES, ConstantRate, FrameTimes, VariableRate

MAX_PHASES = 64  # rate ratios p/q whose planning window is built from VapourSynth's filters: p at most this
TIMESTEP_PROP = "RifeTimestep"
PAIR_PROP = "RifePair"
ABSOLUTE_TIME_PROP = "_AbsoluteTime"  # VapourSynth's frame time in seconds, as source filters set it


def rife(
    clip: vs.VideoNode,
    *,
    model: str | None = None,
    model_path: str | Path | None = None,
    auto_download: bool = False,
    factor_num: int = 2,
    factor_den: int = 1,
    fps_num: int | None = None,
    fps_den: int | None = None,
    scale: float = 1.0,
    ensemble: bool = False,
    fp16: bool | None = None,
    sc: bool = True,
    sc_threshold: float | None = scene.DEFAULT_THRESHOLD,
    static_threshold: float | None = 0.0,
    dedup: bool = False,
    dedup_threshold: float = DEFAULT_DEDUP_THRESHOLD,
    max_hold: int = 3,
    device: str | None = None,
    device_index: int | None = None,
    num_streams: int | None = None,
    engine: EngineOptions | None = None,
    timecodes: str | os.PathLike[str] | Sequence[float | Fraction] | FrameTimes | None = None,
    trt: bool = False,
    **trt_options: object,
) -> vs.VideoNode:
    """Interpolate frames with RIFE v4 to raise (or convert) a clip's frame rate.

    :param clip:          YUV (4:2:0, 4:2:2, 4:4:4, 4:1:1; 8–16-bit integer, half, float), GRAY or RGB (8–16-bit
                          integer, half, float); at least 2 frames, any size from 2×2, one format and size.
                          Its own planes go to the compute device and are converted there to the network's
                          RGB and back (see :mod:`vsrife.formats`: colour props of the first frame,
                          documented defaults; the same results as VapourSynth's resizer).
    :param model:         RIFE version, ``"4.0"`` … ``"4.26.heavy"`` (see ``vsrife.MODELS``). Default ``"4.26"``,
                          or, with ``model_path``, whatever version the checkpoint is.
    :param model_path:    A checkpoint file (``.pkl``, ``.pth``, ``.safetensors``) to use instead of the cached
                          weights; its version is detected from its keys.
    :param auto_download: Fetch the model's weights if they are not cached. Default False: nothing is
                          downloaded unless asked (``python -m vsrife weights fetch MODEL``).
    :param factor_num:    Output rate = source rate × factor_num / factor_den. Default 2 / 1. Whole numbers
                          (a float that is one, ``2.0``, counts as one). Ratios from
                          1/64 (one output frame passes over at most 64 source frames) up to what keeps the
                          output under 2³¹ − 1 frames; any whole numbers (e.g. 999999937 / 999999929): the
                          graph is built in constant time and memory whatever the ratio.
    :param factor_den:    See ``factor_num``. Ratios below 1 (rate conversion down) are allowed too.
    :param fps_num:       Target rate numerator; with ``fps_den`` (default 1) it overrides the factor. With
                          ``timecodes``, or on a clip of fps 0 (whose ``_DurationNum/_DurationDen`` are then
                          read from every frame when the graph is built), output frames are placed by the
                          source frames' times and the output has this constant rate. With a factor instead,
                          a clip of fps 0 gets ``factor`` times its frames, each lasting its source frame's
                          duration / factor.
    :param fps_den:       Target rate denominator, e.g. ``fps_num=60000, fps_den=1001``.
    :param scale:         Resolution the flow is estimated at: 0.25, 0.5, 1.0 (default), 2.0 or 4.0.
                          Use 0.5 for 4K; higher catches finer motion at more cost.
    :param ensemble:      Also run each block on the reversed pair and average (slower, smoother);
                          only on versions that support it.
    :param fp16:          Compute in half precision. Default None: fp16 on CUDA, fp32 on the CPU (where fp16
                          is slow). fp32 on CUDA is IEEE fp32 (TF32 off). Sampling coordinates stay fp32.
    :param sc:            Never blend across a scene change: between frames marked ``_SceneChangeNext`` /
                          ``_SceneChangePrev`` output the nearer source frame instead (the left one for
                          t < ½). Default True. HolyWu's vsrife (default False) outputs the left one, so the
                          old shot is held until the new shot's first frame is due; here the shot changes
                          half-way, as still pairs and held drawings do, so neither shot is held more than
                          half a source frame (the same hold in all, split between the two).
    :param sc_threshold:  Detect scene changes with :func:`vsrife.sc_detect` at this threshold (default 0.3,
                          0 < t ≤ 2; lower finds more). None trusts the props already on the clip
                          (``misc.SCDetect``, ``scd.Detect``, wwxd, scxvid, …). Another scale than HolyWu's
                          (default 0.15, 0..1), which is ``misc.SCDetect``'s mean luma difference: that takes
                          fast motion and fades for cuts (precision 0.52 against this detector's 0.85 on the
                          footage in docs/scenes.md), and ``misc`` is not on PyPI. Here it is a dissimilarity
                          (1 − correlation, with a spike test); HolyWu's 0.15 here finds more cuts.
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
    :param num_streams:   Batches computed at once on CUDA, each on a stream of its own (HolyWu's vsrife 4.x
                          name); default None: the engine's choice (2). On the CPU it does not apply (one
                          call per core), and a note on stderr says so.
    :param engine:        How the device engine runs (:class:`vsrife.EngineOptions`: workers, batches in flight
                          per CUDA stream, CUDA graphs, torch.compile, memory layout, dtype). Default None:
                          the engine's choices for the device. ``fp16`` and ``num_streams``, where given,
                          set its dtype and workers.
    :param timecodes:     The source frames' true times, for a clip whose frames are not evenly spaced
                          (a phone recording, a screen capture) although its ``fps`` says they are: a
                          timecodes v2 file (``bs.VideoSource(..., timecodes=PATH)`` writes one; ms per
                          line), a :class:`vsrife.FrameTimes` (``vsrife.open_source(PATH).times``: the
                          container's timestamps), or a sequence of start times in seconds (``num_frames``
                          of them, or one more: the end of the last frame). Output frames are placed by
                          these times at a constant rate: ``fps_num/fps_den``, or ``factor × clip.fps``.
                          Default None: frames evenly spaced at ``clip.fps``.
    :return:              A clip in the input's format and size at the new rate: ``ceil(frames × ratio)``
                          frames; source frames pass through bit-exact; every frame keeps the props of the
                          source frame it is nearest to, with the output rate's ``_DurationNum/_DurationDen``
                          and ``_SceneChangePrev/Next`` true to the output; synthesized frames also carry
                          ``RifeTimestep`` (t in 0..1) and ``RifePair`` (their two source frame numbers).
    """
    clip = params.check_clip(clip)
    unknown = sorted(set(trt_options) - set(params.TRT_OPTIONS))
    if unknown:
        raise TypeError(f"rife() got an unexpected keyword argument {unknown[0]!r}")
    trt = params.flag("trt", trt)
    times = params.frame_times(timecodes, clip.num_frames)
    request = params.rate_request(factor_num, factor_den, fps_num, fps_den)
    variable = times is not None or (clip.fps == 0 and request.fps is not None)
    if times is not None and clip.fps == 0 and request.fps is None:
        raise ParameterError(
            "with timecodes on a clip of fps 0 there is no rate to multiply; give fps_num, or the "
            "clip's nominal rate with std.AssumeFPS",
            param="factor_num",
        )
    if sc_threshold is not None:
        params.sc_threshold("sc_threshold", sc_threshold)
    same_rate = request.rates(clip.fps)[1] == 1 and not variable
    options = params.plan_options(same_rate, sc, static_threshold, dedup, dedup_threshold, max_hold)
    # a clip of fps 0 is read for its frame durations only once every parameter is checked (below)
    read_durations = times is None and variable
    timing = None if read_durations else params.clip_timing(clip.num_frames, clip.fps, request, times)
    torch_device = params.compute_device(device, device_index, trt)
    params.announce_trt(trt, trt_options)
    engine_options = params.engine_options(engine, num_streams, fp16, torch_device)
    model = params.model_name(model, model_path)
    params.capabilities(model, scale, ensemble)  # before any file is read
    convert = formats.DeviceConverter(clip.format, clip.width, clip.height, formats.colour_of(clip), torch_device)
    built = _build_engine(
        convert, model, model_path, bool(auto_download), scale, ensemble, torch_device, engine_options
    )
    if read_durations:
        timing = params.clip_timing(clip.num_frames, clip.fps, request, FrameTimes.from_durations(_durations(clip)))
    detect = sc_threshold if options.sc else None  # None: the clip's own scene-change props
    return _interpolate(clip, FramePlanner(timing, options), built, detect)


def _durations(clip: vs.VideoNode) -> list[Fraction]:
    """Every frame's duration in seconds (a clip of fps 0: each frame is read once, here)."""
    return [frame_duration(frame.props, n) for n, frame in enumerate(clip.frames(close=True))]


def frame_duration(props: vs.FrameProps, n: int) -> Fraction:
    """Source frame ``n``'s ``_DurationNum/_DurationDen`` in seconds; a clear error when missing or not a
    positive whole-number fraction."""
    num, den = props.get("_DurationNum"), props.get("_DurationDen")
    if not all(isinstance(v, int) and v > 0 for v in (num, den)):
        raise ParameterError(
            f"source frame {n} has _DurationNum={num!r}, _DurationDen={den!r}; a clip of fps 0 needs "
            "positive whole numbers there on every frame (or give it a rate with std.AssumeFPS)",
            param="clip",
        )
    return Fraction(num, den)


def _build_engine(
    convert: formats.DeviceConverter,
    model: str | None,
    model_path: str | Path | None,
    auto_download: bool,
    scale: float,
    ensemble: bool,
    device: torch.device,
    options: EngineOptions,
) -> Engine:
    loaded = checkpoints.load_network(model, model_path, auto_download=auto_download, scale=scale, ensemble=ensemble)
    # the cache holds no more frames than VapourSynth's threads, the planning window and work ahead can use
    multiple = loaded.arch.size_multiple(scale)
    return Engine(loaded.net, device, convert, multiple, vs.core.num_threads + 12, options)


def _interpolate(clip: vs.VideoNode, planner: FramePlanner, engine: Engine, detect: float | None) -> vs.VideoNode:
    """Plan every output frame from a window of annotated source frames; synthesize where planned, in the
    clip's own format (the engine converts on the device): one graph shape for every format. ``detect``:
    find scene changes at this threshold (None: trust the clip's props).

    The window reaches ``engine.batches_ahead`` source frames further than planning needs, so each call
    can start the next in-betweens on the engine's workers while VapourSynth delivers frames one by one.
    """
    options = planner.options
    thresholds = [
        t for t in (options.static_threshold, options.dedup_threshold if options.dedup else None) if t is not None
    ]
    info = scene.annotate(clip, exact=0 in thresholds, local=any(t > 0 for t in thresholds), detect=detect)
    first, last = planner.window()
    last += engine.batches_ahead
    window = _window(info, planner, first, last)
    stretch = planner.timing.ratio if clip.fps == 0 and isinstance(planner.timing, ConstantRate) else None
    produce = partial(_output_frame, planner=planner, engine=engine, first=first, stretch=stretch)
    weakref.finalize(produce, engine.close)  # VapourSynth drops the callback with the clip's last reference
    out = window[0].std.ModifyFrame(window, produce)
    if isinstance(planner.timing, VariableRate) or clip.fps != 0:
        rate = planner.timing.rate if isinstance(planner.timing, VariableRate) else clip.fps * planner.timing.ratio
        return out.std.AssumeFPS(fpsnum=rate.numerator, fpsden=rate.denominator)
    return out  # a variable-rate source resampled by a factor: each frame carries its own duration


def _window(clip: vs.VideoNode, planner: FramePlanner, first: int, last: int) -> list[vs.VideoNode]:
    """Clips whose frame ``n`` is source frame ``left(n) + k`` (clamped to the clip) for each offset ``k`` of
    the planning window. Built in constant time and memory whatever the rate ratio and the clip's length.
    A constant ratio ``p/q`` with ``p`` up to :data:`MAX_PHASES` is built from VapourSynth's own filters (no
    Python call per frame); other ratios (and variable rates) with a FrameEval picking, per output frame, a
    shifted view."""
    timing = planner.timing
    if isinstance(timing, ConstantRate) and timing.ratio.numerator <= MAX_PHASES:
        return [_left_frames(scene.shifted(clip, k), timing) for k in range(first, last + 1)]
    shifts = _Shifts(clip, planner.timing.output_frames)
    left = lru_cache(maxsize=256)(lambda n: planner.timing.position(n).left)
    base = clip.std.BlankClip(length=planner.timing.output_frames, keep=True)
    return [base.std.FrameEval(partial(shifts.showing, offset=k, left=left)) for k in range(first, last + 1)]


def _left_frames(clip: vs.VideoNode, timing: ConstantRate) -> vs.VideoNode:
    """Frame ``n`` is ``clip[left(n)]``, ``left(n) = floor(n q / p)`` for the ratio ``p/q``: output frame
    ``m p + r`` shows source frame ``m q + floor(r q / p)``, so phase ``r`` takes every ``q``-th frame from
    ``floor(r q / p)`` on, and the ``p`` phases are interleaved."""
    p, q = timing.ratio.numerator, timing.ratio.denominator
    padded = clip + clip[-1] * q  # every phase as long as the longest, so that interleaving keeps the order
    phases = [_every(padded[r * q // p :], q) for r in range(p)]
    # the source frames as they are: their own durations (modify_duration would divide them)
    return vs.core.std.Interleave(phases, extend=True, modify_duration=False)[: timing.output_frames]


def _every(clip: vs.VideoNode, step: int) -> vs.VideoNode:
    return clip if step == 1 else clip.std.SelectEvery(step, [0], modify_duration=False)


class _Shifts:
    """Views of ``clip`` shifted by any number of frames, made when first asked for and kept for reuse:
    frame ``n`` of ``showing(n, …)`` is source frame ``left(n) + offset``, clamped to the clip."""

    KEEP = 512  # views kept; consecutive output frames need at most a couple of new ones

    def __init__(self, clip: vs.VideoNode, length: int) -> None:
        self.last = clip.num_frames - 1
        # frame `prefix + j` of `padded` is source frame j; shifting down by d is the view padded[prefix + d:]
        self.prefix = min(length, MAX_OUTPUT_FRAMES - clip.num_frames)
        self.clip = clip
        self.padded = clip[0] * self.prefix + clip if self.prefix else clip
        self._views: OrderedDict[int, vs.VideoNode] = OrderedDict()
        self._lock = threading.Lock()

    def showing(self, n: int, offset: int, left: Callable[[int], int]) -> vs.VideoNode:
        return self.view(n, left(n) + offset)

    def view(self, n: int, source: int) -> vs.VideoNode:
        """A view whose frame ``n`` is source frame ``source`` (clamped to the clip)."""
        source = min(max(source, 0), self.last)
        shift = source - n
        if shift < -self.prefix:  # only near VapourSynth's frame limit: a one-frame loop instead
            return self.clip[source] * (n + 1)
        with self._lock:
            view = self._views.get(shift)
            if view is None:
                view = self._views[shift] = self.padded[self.prefix + shift :]
                if len(self._views) > self.KEEP:
                    self._views.popitem(last=False)
            else:
                self._views.move_to_end(shift)
            return view


class _Window:
    """The annotated source frames one call received: source frame ``j`` is ``frames[j - base]``."""

    def __init__(self, frames: list[vs.VideoFrame], base: int) -> None:
        self.frames = frames
        self.base = base
        self._facts: dict[int, scene.SourceFacts] = {}

    def holds(self, j: int) -> bool:
        return 0 <= j - self.base < len(self.frames)

    def __getitem__(self, j: int) -> vs.VideoFrame:
        if not self.holds(j):
            raise LookupError(j)
        return self.frames[j - self.base]

    def facts(self, j: int) -> scene.SourceFacts:
        if j not in self._facts:
            self._facts[j] = scene.SourceFacts.read(self[j])
        return self._facts[j]


def _jobs_ahead(n: int, planner: FramePlanner, window: _Window, count: int, batch: int) -> list[Job]:
    """Up to ``count`` batches of in-betweens of the output frames after ``n`` that this window can plan and
    feed (several output frames may share one batch)."""
    found: dict[tuple, Job] = {}
    for m in range(n + 1, min(n + 4 * count * batch + 4, planner.timing.output_frames)):
        try:
            action = planner.plan(m, window.facts)
        except LookupError:  # planning it needs frames past this window
            break
        if isinstance(action, Synthesize) and window.holds(action.left) and window.holds(action.right):
            job = _job(m, action, window, planner, batch)
            found.setdefault(job.key, job)
        if len(found) == count:
            break
    return list(found.values())


def _output_frame(
    n: int,
    f: list[vs.VideoFrame],
    planner: FramePlanner,
    engine: Engine | None,
    first: int,
    stretch: Fraction | None,
    timed: bool = True,
) -> vs.VideoFrame:
    """Output frame ``n``: a source frame as it is, or an in-between synthesized into a new frame with the
    nearer one's props. ``stretch``: a variable-rate clip resampled by this factor; each frame lasts its left
    source frame's duration divided by it. ``engine`` None holds: an in-between is shown as its nearer source
    frame, and the network does not run. ``timed``: the frame's ``_AbsoluteTime`` set on the source's clock
    (the planner's timing tells where output frame ``n`` falls); False leaves the timing to the caller."""
    left = planner.timing.position(n).left
    window = _Window(f, left + first)
    action = planner.plan(n, window.facts)
    if engine is None and isinstance(action, Synthesize):
        action = Copy(action.shown)
    if engine is not None:
        for job in _jobs_ahead(n, planner, window, engine.batches_ahead, engine.max_batch):
            engine.start(job)
    shown = window[action.shown]
    if isinstance(action, Synthesize):
        out = vs.core.create_video_frame(shown.format, shown.width, shown.height)  # shares no memory: one copy
        out.props.update(shown.props)
        _synthesize(engine, _job(n, action, window, planner, engine.max_batch), float(action.t), out)
        out.props[TIMESTEP_PROP] = float(action.t)
        out.props[PAIR_PROP] = [action.left, action.right]
    else:
        out = shown.copy()
    before, after = planner.scene_change(n, window.facts, action)
    for key in scene.PRIVATE_PROPS:
        del out.props[key]
    if timed and (time := _absolute_time(n, planner, window)) is not None:
        out.props[ABSOLUTE_TIME_PROP] = time
    out.props[scene.PREV] = int(before)
    out.props[scene.NEXT] = int(after)
    if stretch is not None:
        duration = frame_duration(window[left].props, left) / stretch
        out.props["_DurationNum"], out.props["_DurationDen"] = duration.numerator, duration.denominator
    heap.trimmer.count()
    return out


def _absolute_time(n: int, planner: FramePlanner, window: _Window) -> float | None:
    """Output frame ``n``'s own time on the source's clock (``_AbsoluteTime``, seconds), where the source
    frames carry theirs: the time of the source frame on screen then, plus the part of its time on screen
    passed. None where that source frame carries none."""
    left, through = planner.timing.time_in(n)
    start = window[left].props.get(ABSOLUTE_TIME_PROP)
    if not isinstance(start, float):
        return None
    return start + float(through) * _seconds_on_screen(left, planner, window) if through else start


def _seconds_on_screen(j: int, planner: FramePlanner, window: _Window) -> float:
    """Until the next source frame's ``_AbsoluteTime``; else (the last frame) as long as the frame times say,
    or its ``_DurationNum/_DurationDen``; 0 where nothing says."""
    following = window[j + 1].props.get(ABSOLUTE_TIME_PROP) if j + 1 < planner.timing.source_frames else None
    if isinstance(following, float):
        return following - window[j].props[ABSOLUTE_TIME_PROP]
    if isinstance(planner.timing, VariableRate):
        return float(planner.timing.times.lasts(j))
    num, den = window[j].props.get("_DurationNum"), window[j].props.get("_DurationDen")
    return num / den if isinstance(num, int) and isinstance(den, int) and num > 0 and den > 0 else 0.0


def _synthesize(engine: Engine, job: Job, t: float, into: vs.VideoFrame) -> None:
    try:
        engine.synthesize(job, t, into)
    except VsRifeError as error:
        # raised again from here alone: VapourSynth shows a callback's whole traceback and cuts a long one
        # short, which could cut off the message itself
        raise error.with_traceback(None) from None


def _job(n: int, action: Synthesize, window: _Window, planner: FramePlanner, batch: int) -> Job:
    ts = _batch_of(n, action, planner, batch)
    return Job(action.left, action.right, ts, window[action.left], window[action.right])


def _batch_of(n: int, action: Synthesize, planner: FramePlanner, batch: int) -> tuple[float, ...]:
    """The timesteps computed together with output frame ``n``'s ``action``: in-betweens of its pair
    (neighbouring source frames, whose output frames all lie between them), at most ``batch`` of them, the same
    whichever output frame asks; found in constant time however many output frames the pair has. A pair
    further apart (re-timed drawings) is computed one timestep at a time."""
    if batch == 1 or action.right != action.left + 1:
        return (float(action.t),)
    outputs = planner.timing.outputs_of(action.left)
    first = outputs.start + (planner.timing.position(outputs.start).t == 0)  # a source frame is no in-between
    chunk = first + (n - first) // batch * batch
    members = range(chunk, min(chunk + batch, outputs.stop))
    return tuple(float(planner.timing.position(m).t) for m in members)
