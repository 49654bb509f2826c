"""Real-time playback: :func:`playback`, the clip an mpv ``vf=vapoursynth`` script hands back.

mpv feeds a script a stream, not a file: ``video_in`` has a placeholder length, each frame carries its own
duration (and, from mpv builds that set it, its timestamp as ``_AbsoluteTime``), and mpv reloads the script
(a fresh clip whose frame 0 is the first frame after the seek) on every seek. So the output's timing is
learnt as the frames arrive (:class:`PlaybackTiming`, placed in order by :class:`_Clock`), the network and its
device state are kept warm across reloads (one engine per process, renewed for each clip), and where the
device cannot keep up the output holds source frames instead of falling behind (said once), so that mpv
never waits for the filter.
"""

from __future__ import annotations

import collections
import math
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

import vapoursynth as vs

from . import _blas, formats, params, scene  # noqa: F401 (_blas: torch with its own BLAS, first)
from .engine import MAX_BATCH, Engine, EngineOptions, Workers
from .filter import TIMESTEP_PROP, _build_engine, _output_frame, _Shifts, _Window
from .planner import FramePlanner, PlanOptions
from .timing import Position
from .variants import architecture

DEFAULT_FPS = Fraction(60)  # when neither ``fps`` nor the display's rate is known
RATE_DENOMINATOR = 1001  # a display's measured rate (59.94006…) is read as the nearest fraction up to this
SNAP = Fraction(1, 50)  # an output frame this close to a source frame (of its duration) is that frame
KEEP = 4096  # positions and source frame times kept; older ones are forgotten
CALIBRATION_RUNS = 3  # timed in-betweens deciding whether the device keeps up
HEADROOM = Fraction(3, 2)  # the device must make this many times the in-betweens needed, or frames are held
IDLE = 0.5  # a pause in mpv's requests this long (paused) starts the pace's history again


def playback(
    clip: vs.VideoNode,
    *,
    fps: float | str | Fraction | None = None,
    display_fps: float = 0.0,
    container_fps: float = 0.0,
    model: str | None = None,
    model_path: str | Path | None = None,
    scale: float = 1.0,
    fp16: bool | None = None,
    device: str | None = None,
    sc: bool = True,
    sc_threshold: float | None = scene.DEFAULT_THRESHOLD,
    static_threshold: float | None = 0.0,
    realtime: bool = True,
    engine: EngineOptions | None = None,
) -> vs.VideoNode:
    """RIFE at the display's rate, for mpv's ``vf=vapoursynth`` (``examples/mpv/vsrife.vpy``).

    :param clip:          mpv's ``video_in``: its length is a placeholder; each frame's ``_DurationNum`` /
                          ``_DurationDen`` (or ``_AbsoluteTime``, where mpv sets it) times it.
    :param fps:           The output rate: a number (60, 59.94), a fraction (``"60000/1001"``,
                          ``Fraction(60000, 1001)``). Default None: ``display_fps``, else 60.
    :param display_fps:   mpv's ``display_fps`` (0 when unknown).
    :param container_fps: mpv's ``container_fps`` (0 or NaN when unknown): a video already at the output
                          rate or above passes through unchanged.
    :param realtime:      Never fall behind the video: where the device cannot make the in-betweens in time
                          (measured before the first frame, and watched while playing) hold source frames
                          instead, said once on mpv's terminal. False interpolates every frame however
                          long it takes (encoding with ``mpv --o=``).
    :param model, model_path, scale, fp16, device, sc, sc_threshold, static_threshold, engine: as for
                          :func:`vsrife.rife`.
    :return:              A clip at the output rate (each frame lasting 1 / rate), placed by the source
                          frames' own times: source frames pass through bit-exact, scene cuts are never
                          blended, still frames are not interpolated.
    """
    clip = params.check_clip(clip)
    rate = output_rate(fps, display_fps)
    known_rate = _known_rate(container_fps)
    realtime = params.flag("realtime", realtime)
    if sc_threshold is not None:
        params.sc_threshold("sc_threshold", sc_threshold)
    options = params.plan_options(False, sc, static_threshold, False, 0.0, 2)
    torch_device = params.compute_device(device, None)
    engine_options = params.engine_options(engine, None, fp16, torch_device)
    model = params.model_name(model, model_path)
    params.capabilities(model, scale, ensemble=False)
    if known_rate is not None and rate <= known_rate:
        _say(f"the video's {float(known_rate):g} fps already reaches {float(rate):g} fps: passed through", info=True)
        return clip
    settings = _Settings(model, model_path, scale, torch_device, engine_options, realtime)
    return _Player(clip, rate, known_rate, options, settings, sc_threshold if options.sc else None).output()


def output_rate(fps: object, display_fps: object) -> Fraction:
    """The rate asked for: ``fps`` where given, else the display's, else :data:`DEFAULT_FPS`."""
    if fps is None:
        display = _known_rate(display_fps)
        if display is None:
            _say(f"the display's rate is not known: playing at {DEFAULT_FPS} fps (set fps=)", info=True)
        return display or DEFAULT_FPS
    return params.frame_rate("fps", fps)


def _known_rate(value: object) -> Fraction | None:
    """A rate mpv measured or read (a float, maybe 0 or NaN) as a fraction; None when unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return Fraction(value).limit_denominator(RATE_DENOMINATOR)


def _say(message: str, info: bool = False) -> None:
    """One line on mpv's terminal (mpv's log, through VapourSynth's log)."""
    kind = vs.MESSAGE_TYPE_INFORMATION if info else vs.MESSAGE_TYPE_WARNING
    vs.core.log_message(kind, f"vsrife: {message}")


class PlaybackTiming:
    """The timing of a stream (:class:`vsrife.timing.Timing`'s interface) learnt as its frames arrive: output
    frame ``n`` shows the source ``n / rate`` seconds after the first frame's start. Positions are placed in
    order (:meth:`place`) from the frames' times (:meth:`record`); only the last :data:`KEEP` are kept.

    A frame's start is its ``_AbsoluteTime`` less the first frame's where the first frame has one (mpv's
    timestamps: no drift), else the sum of the durations before it (mpv rounds each to a microsecond).
    An output frame within :data:`SNAP` of a frame's duration from a source frame is that frame.
    """

    def __init__(self, rate: Fraction, source_frames: int, max_step: int, fallback: Fraction) -> None:
        self.rate = rate
        self.source_frames = source_frames
        self.output_frames = source_frames  # a placeholder too: mpv ends the stream
        self.max_step = max_step
        self._fallback = fallback  # the duration of a frame that has none
        self._times: dict[int, tuple[Fraction, float | None]] = {}  # frame -> (duration, timestamp)
        self._placed: dict[int, Position] = {}
        self._first_of: dict[int, int] = {}  # source frame -> the first output frame whose left frame it is
        self._oldest = 1  # the oldest source frame time kept but frame 0's (the timestamps' origin)
        self._frontier = (-1, 0, Fraction(0))  # the last output frame placed, its left frame, that frame's start
        self._lock = threading.Lock()

    def record(self, j: int, props: vs.FrameProps) -> None:
        """What source frame ``j`` says of its time."""
        num, den = props.get("_DurationNum"), props.get("_DurationDen")
        valid = isinstance(num, int) and isinstance(den, int) and num >= 0 and den > 0
        stamp = props.get("_AbsoluteTime")
        with self._lock:
            self._times[j] = (Fraction(num, den) if valid else self._fallback, stamp)

    def place(self, n: int) -> int | None:
        """Place output frames up to ``n``: None once placed, else the first source frame whose time is needed."""
        with self._lock:
            placed, left, start = self._frontier
            while placed < n:
                target = (placed + 1) / self.rate
                while True:
                    end = self._end(left, start)
                    if end is None:
                        return left if left not in self._times else left + 1
                    if end > target:
                        break
                    left, start = left + 1, end
                placed += 1
                position = self._placed[placed] = self._snapped(left, start, end, target)
                self._first_of.setdefault(position.left, placed)
                self._frontier = (placed, left, start)
                self._forget(placed)
            return None

    def _end(self, j: int, start: Fraction) -> Fraction | None:
        """When source frame ``j`` (starting at ``start``) ends: the next frame's start (None: not known yet)."""
        if j not in self._times or j + 1 not in self._times:
            return None
        duration, _ = self._times[j]
        origin, following = self._times[0][1] if 0 in self._times else None, self._times[j + 1][1]
        if isinstance(origin, float) and isinstance(following, float):
            return max(start, Fraction(round((following - origin) * 1e9), 10**9))
        return start + duration

    @staticmethod
    def _snapped(left: int, start: Fraction, end: Fraction, target: Fraction) -> Position:
        t = (target - start) / (end - start)
        if t < SNAP:
            return Position(left, left + 1, Fraction(0))
        if t > 1 - SNAP:
            return Position(left + 1, left + 2, Fraction(0))
        return Position(left, left + 1, t)

    def _forget(self, newest: int) -> None:
        stale = newest - KEEP
        if stale not in self._placed:
            return
        left = self._placed.pop(stale).left
        if self._first_of.get(left) == stale:
            del self._first_of[left]
        while self._oldest < left - 1:
            self._times.pop(self._oldest, None)
            self._oldest += 1

    def position(self, n: int) -> Position:
        with self._lock:
            return self._placed[n]  # a KeyError (a LookupError) when not placed yet

    def outputs_of(self, left: int) -> range:
        """The placed output frames whose left source frame is ``left``."""
        with self._lock:
            first = self._first_of.get(left)
            if first is None:
                return range(0)
            end = first + 1
            while end in self._placed and self._placed[end].left == left:
                end += 1
        return range(first, end)


class _Clock:
    """A tiny clip (:meth:`node`) whose frame ``n`` exists once output frames up to ``n`` are placed: asking for
    it has the source frames whose times are needed read (from a view of the source), then placed. (The clip
    is not kept here: its callback keeps this object, and a cycle would outlive the script's VapourSynth core.)"""

    AHEAD = 2  # source frames read at once past the last known

    def __init__(self, source: vs.VideoNode, timing: PlaybackTiming) -> None:
        self.timing = timing
        self.views = _Shifts(source, timing.output_frames)
        self.blank = vs.core.std.BlankClip(format=vs.GRAY8, width=1, height=1, length=timing.output_frames, keep=True)

    def node(self) -> vs.VideoNode:
        return self.blank.std.FrameEval(self._placed)

    def _placed(self, n: int) -> vs.VideoNode:
        missing = self.timing.place(n)
        if missing is None:
            return self.blank
        views = [self.views.view(n, j) for j in range(missing, missing + self.AHEAD)]
        return self.blank.std.FrameEval(partial(self._read, first=missing), prop_src=views)

    def _read(self, n: int, f: vs.VideoFrame | list[vs.VideoFrame], first: int) -> vs.VideoNode:
        for k, frame in enumerate(f if isinstance(f, list) else [f]):
            self.timing.record(first + k, frame.props)
        return self._placed(n)


@dataclass(frozen=True)
class _Settings:
    model: str | None
    model_path: str | Path | None
    scale: float
    device: object  # torch.device
    options: EngineOptions
    realtime: bool


class _Player:
    """One load of the script: the output clip (:meth:`output`, not kept here, as for :class:`_Clock`), its
    engine (made or renewed at the first frame, when the source's colour is known) and the watch on its pace."""

    def __init__(
        self,
        clip: vs.VideoNode,
        rate: Fraction,
        known_rate: Fraction | None,
        options: PlanOptions,
        settings: _Settings,
        detect: float | None,
    ) -> None:
        self.clip_in, self.rate, self.settings = clip, rate, settings
        self.known_rate = known_rate
        source_rate = known_rate or Fraction(30)
        max_step = max(1, math.ceil(2 * source_rate / rate))  # room for a variable rate's faster stretches
        self.timing = PlaybackTiming(rate, clip.num_frames, max_step, 1 / source_rate)
        self.planner = FramePlanner(self.timing, options)
        self.options, self.detect = options, detect
        self.warm: _Warm | None = None
        self.pace = _Pace(rate)
        self.tally = _Tally()
        self._lock = threading.Lock()
        self._engine_of_this_load: Engine | None = None
        self.first = self.planner.window()[0]

    def output(self) -> vs.VideoNode:
        """Output frame ``n`` from the planning window of annotated source frames around its position."""
        static = self.options.static_threshold
        info = scene.annotate(self.clip_in, exact=static == 0, local=bool(static), detect=self.detect)
        shifts = _Shifts(info, self.timing.output_frames)
        # every output frame a planned frame looks at is placed first (its neighbours; on CUDA its batch)
        placed = _Clock(self.clip_in, self.timing).node()[self._reach() :]
        base = info.std.BlankClip(length=self.timing.output_frames, keep=True)
        left = self._left
        last = self.planner.window()[1] + self._batches_ahead()
        window = [
            base.std.FrameEval(lambda n, f, k=k: shifts.showing(n, k, left), prop_src=[placed])
            for k in range(self.first, last + 1)
        ]
        produce = partial(self._produce)
        # when mpv frees the script (at a seek, at the end), the work this load started ahead ends before the
        # host goes on: left running into mpv's exit, it crashed the process
        weakref.finalize(produce, self._close)
        out = window[0].std.ModifyFrame(window, produce)
        return out.std.AssumeFPS(fpsnum=self.rate.numerator, fpsden=self.rate.denominator)

    def _left(self, n: int) -> int:
        return self.timing.position(n).left

    def _reach(self) -> int:
        """How far past an output frame the positions must be known: its neighbour, and on CUDA the other
        in-betweens of its pair that a batch computes with it."""
        return 1 if self.settings.device.type == "cpu" else 1 + MAX_BATCH

    def _batches_ahead(self) -> int:
        """The batches the engine will keep started ahead (its workers × their batches in flight), known
        before it is made."""
        options = self.settings.options.for_device(self.settings.device)
        multiple = architecture(self.settings.model).size_multiple(self.settings.scale) if self.settings.model else 64
        padded = (-(-self.clip_in.width // multiple) * multiple, -(-self.clip_in.height // multiple) * multiple)
        return Workers.choose(self.settings.device, *padded, options).count * options.in_flight

    def _produce(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        engine = self._engine(n, f)
        if engine is not None and self.settings.realtime:
            pace = self.pace.note(n)
            if pace is _Pace.BEHIND:
                self.warm.fell_behind(self.clip_in)
            if pace is not _Pace.STEADY:
                engine = None
        try:
            out = _output_frame(n, f, self.planner, engine, self.first, stretch=None, timed=False)
        except LookupError:  # a leap in the source's times past the planning window: its frame as it is
            out = _Window(f, self._left(n) + self.first)[self._left(n)].copy()
        out.props["_DurationNum"], out.props["_DurationDen"] = self.rate.denominator, self.rate.numerator
        for key in ("_AbsoluteTime", *scene.PRIVATE_PROPS):
            if key in out.props:
                del out.props[key]
        self.tally.add(TIMESTEP_PROP in out.props, engine is None and self.timing.position(n).t > 0)
        return out

    def _engine(self, n: int, f: list[vs.VideoFrame]) -> Engine | None:
        """The engine, made or renewed at the first frame (timed where realtime); None while frames are held."""
        with self._lock:
            if self.warm is None:
                window = _Window(f, self._left(n) + self.first)
                self.warm = _warm_engine(self.settings, self.clip_in, window)
                self._engine_of_this_load = self.warm.engine
                if self.settings.realtime and self.warm.speed is None:
                    self.warm.time(window, self._in_betweens_needed(window), self.clip_in)
            return None if self.warm.held else self.warm.engine

    def _close(self) -> None:
        """Drop the work this load's engine started ahead and wait for what runs (the warm engine stays)."""
        with self._lock:
            engine = self._engine_of_this_load
        if engine is not None:
            engine.close()

    def _in_betweens_needed(self, window: _Window) -> Fraction:
        """In-betweens per second of video: the output rate less the output frames that fall on a source frame,
        as many a second as the rates' greatest common divisor (24 → 60: 12; 24000/1001 → 60: almost none)."""
        frame = window[max(window.base, 0)]
        num, den = frame.props.get("_DurationNum", 0), frame.props.get("_DurationDen", 0)
        if not (isinstance(num, int) and isinstance(den, int) and num > 0 < den):
            return self.rate
        duration = Fraction(num, den)  # mpv rounds it to a microsecond: the container's rate where it fits
        fits = self.known_rate is not None and abs(1 / self.known_rate - duration) <= duration / 50
        source_rate = self.known_rate if fits else (1 / duration).limit_denominator(RATE_DENOMINATOR)
        common = Fraction(
            math.gcd(self.rate.numerator * source_rate.denominator, source_rate.numerator * self.rate.denominator),
            self.rate.denominator * source_rate.denominator,
        )
        return self.rate - min(common, self.rate)


@dataclass
class _Warm:
    """The engine kept across mpv's reloads of the script (one per process), what is known of its speed, and
    whether frames are held."""

    key: tuple
    engine: Engine
    device: str
    speed: float | None = None  # in-betweens per second, all workers together
    held: bool = False
    said: bool = False

    def time(self, window: _Window, needed: Fraction, clip: vs.VideoNode) -> None:
        """Time the engine on the first two frames of ``window`` and hold frames if it makes fewer in-betweens
        than ``needed`` per second (with :data:`HEADROOM`)."""
        enough = float(needed * HEADROOM)
        self.speed = _in_betweens_per_second(self.engine, window, enough)
        speed = f"the {self.device} makes {self.speed:.0f} in-betweens/s, {float(needed):.0f}/s are needed"
        if self.speed < enough:
            self.hold(speed, clip)
        else:
            _say(f"{speed} at {clip.width}x{clip.height}: interpolating", info=True)

    def hold(self, why: str, clip: vs.VideoNode) -> None:
        """Hold source frames from now on, said once."""
        self.held = True
        self._say_once(f"{why} at {clip.width}x{clip.height}: showing the source frames as they are (no interpolation)")

    def fell_behind(self, clip: vs.VideoNode) -> None:
        self._say_once(
            f"interpolation falls behind the video at {clip.width}x{clip.height}: frames are held where it "
            "would fall further behind"
        )

    def _say_once(self, message: str) -> None:
        if not self.said:
            self.said = True
            _say(f"{message}; try scale=0.5, a lighter model (4.6), a smaller picture or a GPU, or realtime=False")


_warm: _Warm | None = None
_warm_lock = threading.Lock()


def _warm_engine(settings: _Settings, clip: vs.VideoNode, window: _Window) -> _Warm:
    """The warm engine renewed for this clip where it fits (same settings, format, size and colour), else a
    new one, the old one closed."""
    global _warm
    colour = formats.read_colour(clip.format, clip.width, clip.height, window[window.base].props)
    key = (settings, clip.format.name, clip.width, clip.height, colour)
    with _warm_lock:
        if _warm is not None and _warm.key == key:
            _warm.engine = _warm.engine.renewed()
            return _warm
        if _warm is not None:
            _warm.engine.close()
        convert = formats.DeviceConverter(clip.format, clip.width, clip.height, colour, settings.device)
        model, path, scale, device = settings.model, settings.model_path, settings.scale, settings.device
        engine = _build_engine(convert, model, path, False, scale, False, device, settings.options)
        _warm = _Warm(key, engine, device.type.upper())
        return _warm


def _in_betweens_per_second(engine: Engine, window: _Window, enough: float) -> float:
    """How many in-betweens the engine makes per second, timed on the first two frames of ``window`` as
    playback runs it: each of :data:`CALIBRATION_RUNS` rounds makes two in-betweens per worker at once (after
    one untimed in-between, where oneDNN and cuDNN choose their kernels and CUDA graphs are captured); the
    median round, or the first one far slower than ``enough`` (on the CPU the untimed one too, at 1/8: a
    picture far too large for it costs one in-between, not a dozen)."""
    left = max(window.base, 0)
    a, b = engine.prepare(left, window[left]), engine.prepare(left + 1, window[left + 1])
    count = 2 * engine.workers.count
    started = time.perf_counter()
    engine.interpolate(a, b, (0.5,)).wait()
    first = engine.workers.count / (time.perf_counter() - started)
    if engine.device.type == "cpu" and first < enough / 8:
        return first
    speeds = []
    with ThreadPoolExecutor(engine.workers.count) as pool:
        for _ in range(CALIBRATION_RUNS):
            started = time.perf_counter()
            list(
                pool.map(lambda t: engine.interpolate(a, b, (t,)).wait(), [(k + 1) / (count + 1) for k in range(count)])
            )
            speeds.append(count / (time.perf_counter() - started))
            if speeds[-1] < enough / 4:
                return speeds[-1]
    return sorted(speeds)[len(speeds) // 2]


class _Tally:
    """How many output frames were in-betweens and how many were held instead: said every :data:`EVERY` output
    frames in VapourSynth's log at debug level (``mpv --msg-level=vapoursynth=debug``, or its log file)."""

    EVERY = 600

    def __init__(self) -> None:
        self.frames = self.made = self.held = 0
        self._lock = threading.Lock()

    def add(self, made: bool, held: bool) -> None:
        with self._lock:
            self.frames += 1
            self.made += made
            self.held += held
            if self.frames % self.EVERY == 0:
                vs.core.log_message(
                    vs.MESSAGE_TYPE_DEBUG,
                    f"vsrife: {self.frames} output frames since the script's load: {self.made} in-betweens, "
                    f"{self.held} held",
                )


class _Pace:
    """How the output frames are asked for against the video's clock. Steadily: one each 1 / rate s, mpv is
    showing them. In a burst: faster than :data:`BURST_RATIO` times that over the last :data:`WINDOW` frames,
    mpv filling its queue or skipping the frames before a precise seek's target (it decodes and filters those
    only to drop them: holding them makes the seek quick). Behind: output frame ``n`` more than
    :data:`BEHIND_FRAMES` frame periods later than the best pace of the last :data:`HISTORY` seconds (mpv asks
    for a few frames ahead: a frame held now, made at once, keeps it from waiting). A pause in the requests
    (mpv paused) starts the history again."""

    STEADY, BURST, BEHIND = "steady", "burst", "behind"
    WINDOW = 12
    BURST_RATIO = 1.25
    BEHIND_FRAMES = 2
    HISTORY = 1.0

    def __init__(self, rate: Fraction) -> None:
        self.period = 1 / float(rate)
        self.last = 0.0
        self.recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=self.WINDOW)
        self.offsets: collections.deque[tuple[float, float]] = collections.deque()  # (when, when - n * period)
        self._lock = threading.Lock()

    def note(self, n: int) -> str:
        """Output frame ``n`` is being made now: how the frames come."""
        now = time.monotonic()
        with self._lock:
            if now - self.last > IDLE:
                self.offsets.clear()
            self.last = now
            self.recent.append((now, n))
            offset = now - n * self.period
            while self.offsets and self.offsets[0][0] < now - self.HISTORY:
                self.offsets.popleft()
            best = min((o for _, o in self.offsets), default=offset)
            self.offsets.append((now, offset))
            if offset - best > self.BEHIND_FRAMES * self.period:
                return self.BEHIND
            return self.BURST if self._bursting() else self.STEADY

    def _bursting(self) -> bool:
        if len(self.recent) < self.WINDOW:
            return True  # mpv filling its queue after the script's (re)load
        elapsed = self.recent[-1][0] - self.recent[0][0]
        frames = max(n for _, n in self.recent) - min(n for _, n in self.recent)
        return frames * self.period > self.BURST_RATIO * elapsed
