"""``vsrife smooth IN OUT --workers N`` or ``--cluster ADDRESS``: one render spread over Ray tasks, frame for
frame the same as a single run, and resumable.

The driver (this process) detects scene changes once and splits the output frames into chunks that start
at cuts (:func:`make_plan`). Each chunk is a Ray task (:func:`render_chunk`) that builds the very graph
``vsrife smooth`` builds — :func:`vsrife.rife` computes every output frame from global source indices, so
frames ``[a, b)`` of it are the single run's — and encodes them with the user's codec into a NUT stream (any
codec, the rate's exact time base), whose bytes come back to the driver. The driver keeps the job in
``OUT.parts/`` (:class:`StateFolder`): a manifest keyed by the input, the options and the model, and each
finished chunk, written atomically. At the end the chunks are joined without re-encoding and the audio,
subtitles and chapters of the input are muxed once, as ``vsrife smooth`` muxes them (:func:`join`).

Ray (``pip install 'vsrife[cluster]'``) is imported only here, and only when these options are given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

from .. import __version__, download, params, scene, weights
from ..sources import Source, open_source
from ..timing import ConstantRate, Timing, VariableRate
from . import smooth

DEFAULT_CHUNK_SECONDS = Fraction(10)
ATTEMPTS = 3  # a chunk that fails this many times stops the job
CHUNK_FORMAT = "nut"  # holds any codec, at the exact time base of the rate
STATE_SUFFIX = ".parts"
MANIFEST = "manifest.json"
STATE_FORMAT = 1
CONNECT_TIMEOUT_S = 5.0
DEFAULT_PORTS = {"ray": 10001, "gcs": 6379}
FINGERPRINT_SAMPLES = 16
FINGERPRINT_BLOCK = 1 << 20
REPORT_INTERVAL_S = 0.5
LOOPBACK = "127.0.0.1"
QUIET_FFMPEG = ("ffmpeg", "-hide_banner", "-loglevel", "error")


class ClusterError(smooth.SmoothError):
    """A problem with the setup or the job, reported as one line."""


class ChunkError(RuntimeError):
    """A chunk's task failed; the message is one line. (Not a VsRifeError: it crosses process boundaries,
    and those prefix their message again when unpickled.)"""


@dataclass(frozen=True)
class ClusterOptions:
    workers: int | None = None  # tasks at once; without ``address``, the size of the local cluster
    address: str | None = None  # an existing Ray cluster; None: a local one, on 127.0.0.1 only
    resume: bool = False  # there must be a job to resume (one is resumed anyway when its manifest matches)
    chunk_seconds: Fraction = DEFAULT_CHUNK_SECONDS  # least length of a chunk, in seconds of output


def options_from(
    workers: int | None, address: str | None, resume: bool, chunk_seconds: str | None, dry_run: bool, device: str | None
) -> ClusterOptions:
    """The command line's cluster options, checked; a ClusterError (one line) for a bad combination."""
    if workers is None and address is None:
        raise ClusterError("--resume and --chunk-seconds go with --workers N or --cluster ADDRESS")
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers {workers}: give at least 1")
    if dry_run:
        raise ClusterError("--dry-run prints a single-process pipeline; leave out --workers and --cluster")
    if device is not None and device.startswith("cuda:"):
        raise ClusterError(f"--device {device}: each task is given a GPU of its own; say --device cuda, or nothing")
    seconds = DEFAULT_CHUNK_SECONDS
    if chunk_seconds is not None:
        try:
            seconds = Fraction(chunk_seconds)
        except (ValueError, ZeroDivisionError):
            seconds = Fraction(0)
        if seconds <= 0:
            raise ClusterError(f"--chunk-seconds {chunk_seconds}: give a positive number of seconds")
    return ClusterOptions(workers, address, resume, seconds)


# ---------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Chunk:
    """Output frames ``start`` to ``end - 1``, rendered and encoded by one task."""

    index: int
    start: int
    end: int

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def name(self) -> str:
        return f"chunk-{self.index:05d}.{CHUNK_FORMAT}"


@dataclass(frozen=True)
class Plan:
    total: int  # output frames
    rate: Fraction  # output frames per second
    chunks: tuple[Chunk, ...]
    cuts: tuple[int, ...]  # output frames that begin a new shot

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "rate": str(self.rate),
            "chunks": [[c.start, c.end] for c in self.chunks],
            "cuts": list(self.cuts),
        }

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        chunks = tuple(Chunk(i, start, end) for i, (start, end) in enumerate(data["chunks"]))
        return cls(int(data["total"]), Fraction(data["rate"]), chunks, tuple(data["cuts"]))


def make_plan(source: Source, options: smooth.Options, chunk_seconds: Fraction, quiet: bool = True) -> Plan:
    """Chunks of at least ``chunk_seconds`` of output, starting at scene cuts where there are any."""
    timing, rate = output_timing(source, options)
    least = max(1, math.ceil(chunk_seconds * rate))
    starts = shot_starts(source.clip, quiet) if options.sc else []
    cuts = [first_output_showing(timing, j) for j in starts]
    edges = chunk_edges(timing.output_frames, cuts, least)
    chunks = tuple(Chunk(i, a, b) for i, (a, b) in enumerate(zip(edges, edges[1:], strict=False)))
    return Plan(timing.output_frames, rate, chunks, tuple(cuts))


def output_timing(source: Source, options: smooth.Options) -> tuple[Timing, Fraction]:
    """The timing :func:`vsrife.rife` gives ``smooth``'s graph (its output frames and their positions), and
    the output rate. The tasks check that their graph has as many frames."""
    arguments = smooth.rife_arguments(options)
    factor = (arguments.get("factor_num", 2), arguments.get("factor_den", 1))
    request = params.rate_request(*factor, arguments.get("fps_num"), arguments.get("fps_den"))
    rate, ratio = request.rates(source.clip.fps)
    if source.times is not None:
        return VariableRate(source.times, rate), rate
    return ConstantRate(source.clip.num_frames, ratio), rate


def shot_starts(clip: vs.VideoNode, quiet: bool = True) -> list[int]:
    """Source frames that begin a new shot, found by the detector :func:`vsrife.rife` runs (every frame is
    read once)."""
    marked = scene.sc_detect(clip)
    progress = smooth.Progress(quiet)
    if not quiet:
        print("vsrife smooth: finding scene cuts", file=sys.stderr, flush=True)
    starts = []
    for n, frame in enumerate(marked.frames(close=True)):
        if n > 0 and frame.props[scene.PREV]:
            starts.append(n)
        progress(n + 1, clip.num_frames)
    return starts


def first_output_showing(timing: Timing, source_frame: int) -> int:
    """The first output frame whose nearest source frame is ``source_frame`` or a later one."""
    low, high = 0, timing.output_frames
    while low < high:
        middle = (low + high) // 2
        if timing.position(middle).nearest < source_frame:
            low = middle + 1
        else:
            high = middle
    return low


def chunk_edges(total: int, cuts: Sequence[int], least: int) -> list[int]:
    """Where chunks begin, then ``total``: at cuts, each chunk at least ``least`` frames long (a shorter
    whole excepted); a stretch longer than twice that without a usable cut is split evenly."""
    at_cuts = [0]
    for cut in sorted(set(cuts)):
        if cut - at_cuts[-1] >= least and total - cut >= least:
            at_cuts.append(cut)
    at_cuts.append(total)
    edges = []
    for start, end in zip(at_cuts, at_cuts[1:], strict=False):
        pieces = (end - start) // least if end - start > 2 * least else 1
        edges += [start + (end - start) * k // pieces for k in range(pieces)]
    return edges + [total]


# ------------------------------------------------------------------------------------------- the state folder


class StateFolder:
    """``OUT.parts/``: the manifest, and each finished chunk — ``chunk-NNNNN.nut`` and then its record
    ``chunk-NNNNN.json`` (frames, bytes, checksum of the decoded frames), each written atomically."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + STATE_SUFFIX)

    def manifest(self) -> dict | None:
        """The job kept here; None when there is no state folder."""
        if not self.path.exists():
            return None
        try:
            manifest = json.loads((self.path / MANIFEST).read_text())
            if manifest.get("format") != STATE_FORMAT:
                raise ValueError("another format")
            return manifest
        except (OSError, ValueError, AttributeError):
            raise ClusterError(f"{self.path} holds no job of this vsrife: remove it to start over") from None

    def start(self, key: str, input: Path, plan: Plan) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = {"format": STATE_FORMAT, "key": key, "input": str(input), "vsrife": __version__, **plan.to_json()}
        write_atomically(self.path / MANIFEST, json.dumps(manifest, indent=1).encode())

    def finished(self, plan: Plan) -> set[int]:
        """The chunks whose file and record are here and agree with the plan."""
        return {chunk.index for chunk in plan.chunks if self._intact(chunk)}

    def _intact(self, chunk: Chunk) -> bool:
        try:
            record = json.loads(self._record_path(chunk).read_text())
            size = (self.path / chunk.name).stat().st_size
        except (OSError, ValueError):
            return False
        return (record.get("start"), record.get("end"), record.get("frames"), record.get("bytes")) == (
            chunk.start,
            chunk.end,
            chunk.frames,
            size,
        )

    def keep(self, chunk: Chunk, result: ChunkResult) -> None:
        write_atomically(self.path / chunk.name, result.data)
        record = {
            "start": chunk.start,
            "end": chunk.end,
            "frames": result.frames,
            "bytes": len(result.data),
            "checksum": result.checksum,
            "worker": result.worker,
        }
        write_atomically(self._record_path(chunk), json.dumps(record).encode())

    def record(self, chunk: Chunk) -> dict:
        return json.loads(self._record_path(chunk).read_text())

    def _record_path(self, chunk: Chunk) -> Path:
        return self.path / chunk.name.replace(f".{CHUNK_FORMAT}", ".json")

    def sweep(self) -> None:
        """Remove what a killed driver left half-written."""
        for leftover in self.path.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path``, or nothing there at all (a temporary file beside it, renamed when complete)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def job_key(options: smooth.Options) -> str:
    """What the chunks depend on: the input, the graph's options, the weights and the encoder settings."""
    facts = {
        "vsrife": __version__,
        "input": input_fingerprint(options.input),
        "rife": smooth.rife_arguments(options),
        "weights": download.sha256_of(weights.locate(options.model)),
        "encoder": smooth.video_codec_args(options) + list(options.extra),
        "chunk_format": CHUNK_FORMAT,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def input_fingerprint(path: Path) -> str:
    """The input's size and a hash of 16 blocks of 1 MiB spread over it (the whole file when smaller): quick
    for a film, and any other file is another job."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as file:
        if size <= FINGERPRINT_SAMPLES * FINGERPRINT_BLOCK:
            digest.update(file.read())
        else:
            for k in range(FINGERPRINT_SAMPLES):
                file.seek((size - FINGERPRINT_BLOCK) * k // (FINGERPRINT_SAMPLES - 1))
                digest.update(file.read(FINGERPRINT_BLOCK))
    return f"{size}:{digest.hexdigest()}"


# ------------------------------------------------------------------------------------------------ the tasks


@dataclass(frozen=True)
class ChunkResult:
    index: int
    data: bytes  # the chunk's NUT stream
    frames: int  # frames decoded from it
    checksum: str  # of its decoded frames
    worker: str
    seconds: float


class ProgressBoard:
    """A Ray actor the tasks report to: frames done of each chunk in its current attempt, and attempts."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}
        self.attempts: Counter[int] = Counter()

    def started(self, index: int) -> None:
        self.attempts[index] += 1
        self.done[index] = 0

    def update(self, index: int, frames: int) -> None:
        self.done[index] = frames

    def snapshot(self) -> tuple[dict[int, int], dict[int, int]]:
        return dict(self.done), dict(self.attempts)


def render_chunk(options: smooth.Options, chunk: Chunk, total: int, threads: int | None, board) -> ChunkResult:
    """A Ray task: output frames ``[chunk.start, chunk.end)`` of ``vsrife smooth``'s graph, encoded."""
    began = time.monotonic()
    board.started.remote(chunk.index)
    try:
        if threads:
            vs.core.num_threads = threads  # the engine takes this task's share of the cores (engine.cpu_budget)
        clip, _ = smooth.build(options)
        if clip.num_frames != total:
            raise ChunkError(f"the graph here has {clip.num_frames} output frames, the plan {total}")
        data = encode(clip[chunk.start : chunk.end], options, _reporter(board, chunk.index))
        frames, checksum = decoded_checksum(data)
    except Exception as error:
        raise ChunkError(_one_line(error)) from None
    if frames != chunk.frames:
        raise ChunkError(f"the encoded chunk holds {frames} frames instead of {chunk.frames}")
    return ChunkResult(chunk.index, data, frames, checksum, _worker_label(), time.monotonic() - began)


def _reporter(board, index: int) -> Callable[[int, int], None]:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= REPORT_INTERVAL_S or done == total:
            last[0] = now
            board.update.remote(index, done)

    return report


def chunk_encoder(options: smooth.Options) -> list[str]:
    """ffmpeg encoding y4m from its stdin with the user's codec and settings into NUT on its stdout. A new
    encoder starts each chunk, so each starts with a keyframe."""
    settings = [*smooth.video_codec_args(options), *options.extra]
    return [*QUIET_FFMPEG, "-nostdin", "-y", *smooth.Y4M_STDIN, "-map", "0:v:0", *settings, "-f", CHUNK_FORMAT, "-"]


def encode(clip: vs.VideoNode, options: smooth.Options, report: Callable[[int, int], None]) -> bytes:
    """``clip`` through the chunk encoder; its output, or a ChunkError with ffmpeg's last words."""
    with tempfile.TemporaryFile() as log:
        encoder = subprocess.Popen(chunk_encoder(options), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        output: list[bytes] = []
        reader = threading.Thread(target=lambda: output.append(encoder.stdout.read()), daemon=True)
        reader.start()
        failure: BaseException | None = None
        try:
            clip.output(encoder.stdin, y4m=True, progress_update=report)
        except (OSError, vs.Error) as error:  # a dead encoder (broken pipe) or a failing frame
            failure = error
        finally:
            with contextlib.suppress(BrokenPipeError):  # the encoder is gone; its exit status tells
                encoder.stdin.close()
        status = encoder.wait()
        reader.join()
        if status != 0 or failure is not None:
            raise ChunkError(f"encoding failed: {smooth._last_line(log) or _one_line(failure)}")
    return output[0]


def decoded_checksum(data: bytes) -> tuple[int, str]:
    """The number of frames an encoded chunk decodes to, and a checksum of them (ffmpeg's framemd5)."""
    result = subprocess.run(
        [*QUIET_FFMPEG, "-f", CHUNK_FORMAT, "-i", "-", "-map", "0:v:0", "-f", "framemd5", "-"],
        input=data,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise ChunkError(f"the encoded chunk does not decode: {_one_line(result.stderr.decode(errors='replace'))}")
    hashes = [line.rsplit(",", 1)[-1].strip() for line in result.stdout.decode().splitlines() if line[:1].isdigit()]
    return len(hashes), "sha256:" + hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def node_problem(path: str, fingerprint: str, model: str) -> str | None:
    """A Ray task run on each node before the job: what keeps this node from rendering chunks, or None."""
    try:
        if not Path(path).is_file():
            return f"cannot see {path}"
        if input_fingerprint(Path(path)) != fingerprint:
            return f"sees another file at {path}"
        weights.locate(model)
    except Exception as error:
        return _one_line(error)
    if shutil.which("ffmpeg") is None:
        return "has no ffmpeg"
    return None


def _worker_label() -> str:
    import ray

    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU") or []
    where = f"node {context.get_node_id()[:8]} ({ray.util.get_node_ip_address()}) pid {os.getpid()}"
    return where + (f" GPU {','.join(gpus)}" if gpus else "")


def _one_line(error: object) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text.removeprefix("vsrife: ")


# ----------------------------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class Slots:
    """How the chunks run: at most ``tasks`` at once, each asking Ray for ``resources`` and running
    ``threads`` CPU threads (None: as the node has)."""

    tasks: int
    resources: dict[str, float]
    threads: int | None


def run(options: smooth.Options, cluster: ClusterOptions) -> int:
    """Render ``options.input`` to ``options.output`` on Ray; 0 on success, 130 when interrupted."""
    ray = import_ray(local=cluster.address is None)
    media = smooth.probe(options.input)
    state = StateFolder(options.output)
    key = job_key(options)
    manifest = state.manifest()
    if manifest is not None and manifest.get("key") != key:
        raise ClusterError(
            f"{state.path} holds another job (the input, the options or the model differ); it is not mixed "
            "with this one: remove it to start over, or give the same options to finish it"
        )
    if cluster.resume and manifest is None:
        raise ClusterError(f"--resume: there is no {state.path} to resume")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a kill stops the tasks like Ctrl-C
    try:
        slots = connect(ray, cluster, options)
        source = open_source(options.input)
        if manifest is None:
            plan = make_plan(source, options, cluster.chunk_seconds, options.quiet)
            state.start(key, options.input, plan)
        else:
            plan = Plan.from_json(manifest)
            state.sweep()
        return _render_and_join(ray, plan, state, slots, options, media, source)
    finally:
        signal.signal(signal.SIGTERM, previous)
        ray.shutdown()


def import_ray(local: bool):
    """Ray, or one line saying how to install it. For a local cluster, Ray is told to keep to 127.0.0.1."""
    if local:
        # On Linux Ray replaces a loopback node address by the machine's own and then listens on every
        # interface; with this (its setting for macOS and Windows) a one-machine cluster stays on 127.0.0.1.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError("--workers and --cluster need Ray: pip install 'vsrife[cluster]'") from None
    return ray


def connect(ray, cluster: ClusterOptions, options: smooth.Options) -> Slots:
    """Start the local cluster, or join the one at ``cluster.address``; how the chunks will run there."""
    if cluster.address is None:
        cores = len(os.sched_getaffinity(0))
        ray.init(
            address="local",
            num_cpus=cores,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
        _check_loopback(ray)
        return local_slots(ray, cluster.workers, options.device, cores)
    check_answers(cluster.address)
    try:
        ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as error:
        raise ClusterError(f"cannot join the Ray cluster at {cluster.address}: {_one_line(error)}") from None
    check_nodes(ray, options)
    return cluster_slots(ray, cluster.workers, options.device)


def _check_loopback(ray) -> None:
    addresses = {node["NodeManagerAddress"] for node in ray.nodes()}
    if addresses != {LOOPBACK}:
        ray.shutdown()
        raise ClusterError(f"Ray started its node on {', '.join(sorted(addresses))}, not {LOOPBACK} only: stopped")


def check_answers(address: str) -> None:
    """One line within seconds when nothing answers at a cluster's address (Ray itself waits much longer)."""
    if address == "auto":
        return
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    default = DEFAULT_PORTS["ray" if scheme == "ray" else "gcs"]
    try:
        socket.create_connection((host or rest, int(port or default)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise ClusterError(f"no Ray cluster answers at {address} ({reason})") from None


def check_nodes(ray, options: smooth.Options) -> None:
    """Every node must see the input at its path (the same file), and have the weights and ffmpeg."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    fingerprint = input_fingerprint(options.input)
    probe = ray.remote(node_problem).options(num_cpus=0, max_retries=0)
    asked = {}
    for node in _usable_nodes(ray):
        where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        reference = probe.options(scheduling_strategy=where).remote(str(options.input), fingerprint, options.model)
        asked[reference] = node
    for reference, node in asked.items():
        problem = ray.get(reference)
        if problem:
            raise ClusterError(
                f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]}) {problem}: every node must see INPUT "
                "at the same path, with the weights and ffmpeg"
            )


def _usable_nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"] and (n["Resources"].get("CPU", 0) >= 1 or n["Resources"].get("GPU"))]


def local_slots(ray, workers: int, device: str | None, cores: int) -> Slots:
    """``workers`` tasks: one GPU each where there are GPUs, else an equal share of the cores each."""
    gpus = 0 if device == "cpu" else int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        tasks = min(workers, gpus)
        threads = max(1, cores // tasks)
        return Slots(tasks, {"num_gpus": 1, "num_cpus": threads}, threads)
    threads = max(1, cores // workers)
    return Slots(workers, {"num_cpus": threads}, threads)


def cluster_slots(ray, workers: int | None, device: str | None) -> Slots:
    """One GPU a task where the cluster has GPUs, else as many cores as the smallest node has."""
    nodes = _usable_nodes(ray)
    gpu_nodes = [] if device == "cpu" else [n for n in nodes if n["Resources"].get("GPU", 0) >= 1]
    if gpu_nodes:
        threads = max(1, min(int(n["Resources"].get("CPU", 1) // n["Resources"]["GPU"]) for n in gpu_nodes))
        room = sum(int(n["Resources"]["GPU"]) for n in gpu_nodes)
        return Slots(workers or room, {"num_gpus": 1, "num_cpus": threads}, threads)
    threads = max(1, min(int(n["Resources"]["CPU"]) for n in nodes))
    room = sum(int(n["Resources"]["CPU"]) // threads for n in nodes)
    return Slots(workers or max(1, room), {"num_cpus": threads}, threads)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _render_and_join(
    ray, plan: Plan, state: StateFolder, slots: Slots, options: smooth.Options, media: smooth.Media, source: Source
) -> int:
    finished = state.finished(plan)
    todo = [chunk for chunk in plan.chunks if chunk.index not in finished]
    if finished and not options.quiet:
        print(f"vsrife smooth: resuming: {len(finished)} of {len(plan.chunks)} chunks done", file=sys.stderr)
    progress = JobProgress(options.quiet, plan.total, sum(plan.chunks[i].frames for i in finished))
    try:
        results = render(ray, plan, todo, slots, options, state, progress)
    except KeyboardInterrupt:
        kept = len(state.finished(plan))
        if kept == 0:
            state.remove()
        left = f"{kept} of {len(plan.chunks)} chunks kept in {state.path}; run again to finish" if kept else "nothing"
        print(f"\nvsrife smooth: interrupted; {left}", file=sys.stderr, flush=True)
        return smooth.EXIT_INTERRUPTED
    except ClusterError:
        if not state.finished(plan):
            state.remove()
        raise
    join(plan, state, options, media, source.start)
    state.remove()
    if not options.quiet:
        print(summary(results, progress.elapsed(), len(plan.chunks)), file=sys.stderr)
    return 0


def render(
    ray, plan: Plan, todo: list[Chunk], slots: Slots, options: smooth.Options, state: StateFolder, progress: JobProgress
) -> list[ChunkResult]:
    """Run the chunks' tasks, at most ``slots.tasks`` at once (Ray retries each up to ATTEMPTS times),
    keeping each result as it comes."""
    board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
    task = ray.remote(render_chunk).options(max_retries=ATTEMPTS - 1, retry_exceptions=True, **slots.resources)
    waiting, running, results = list(todo), {}, []
    try:
        while waiting or running:
            while waiting and len(running) < slots.tasks:
                chunk = waiting.pop(0)
                running[task.remote(options, chunk, plan.total, slots.threads, board)] = chunk
            ready, _ = ray.wait(list(running), num_returns=1, timeout=REPORT_INTERVAL_S)
            for reference in ready:
                chunk = running.pop(reference)
                result = _result(ray, reference, chunk, board)
                state.keep(chunk, result)
                progress.finished(chunk)
                results.append(result)
            progress.show(_in_flight(ray, board, running.values()))
    finally:
        for reference in running:
            ray.cancel(reference, force=True)
    progress.show({})
    return results


def _result(ray, reference, chunk: Chunk, board) -> ChunkResult:
    try:
        return ray.get(reference)
    except Exception as error:  # Ray gave up: the task failed ATTEMPTS times
        cause = getattr(error, "cause", None) or error
        try:
            attempts = ray.get(board.snapshot.remote(), timeout=5)[1].get(chunk.index, ATTEMPTS)
        except Exception:
            attempts = ATTEMPTS
        raise ClusterError(
            f"chunk {chunk.index} (output frames {chunk.start}-{chunk.end - 1}) failed {attempts} times: "
            f"{_one_line(cause)}"
        ) from None


def _in_flight(ray, board, chunks) -> dict[int, int]:
    """Frames done so far of the chunks still running (nothing when the board does not answer at once)."""
    try:
        done, _ = ray.get(board.snapshot.remote(), timeout=1)
    except Exception:
        return {}
    return {chunk.index: done.get(chunk.index, 0) for chunk in chunks}


class JobProgress:
    """One bar for the whole job on stderr: frames (finished chunks and those in flight), speed, ETA."""

    def __init__(self, quiet: bool, total: int, already: int) -> None:
        self.quiet, self.total, self.already = quiet, total, already
        self.kept = already
        self.start = time.monotonic()
        self.shown = 0.0
        self.ended = False

    def finished(self, chunk: Chunk) -> None:
        self.kept += chunk.frames

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def show(self, in_flight: dict[int, int]) -> None:
        done = min(self.total, self.kept + sum(in_flight.values()))
        now = time.monotonic()
        if self.quiet or self.ended or (now - self.shown < REPORT_INTERVAL_S and done < self.total):
            return
        self.shown, self.ended = now, done >= self.total
        fps = (done - self.already) / max(now - self.start, 1e-9)
        eta = (self.total - done) / fps if fps > 0 else 0
        filled = 30 * done // max(self.total, 1)
        bar = "#" * filled + "-" * (30 - filled)
        end = "\n" if done >= self.total else ""
        line = f"\r[{bar}] {done}/{self.total} frames {fps:.2f} fps ETA {eta:5.0f} s"
        print(line, end=end, file=sys.stderr, flush=True)


def summary(results: list[ChunkResult], seconds: float, chunks: int) -> str:
    """The job's speed and each worker's share."""
    frames = sum(r.frames for r in results)
    lines = [
        f"vsrife smooth: {frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.2f} fps); "
        f"{len(results)} of {chunks} chunks rendered now"
    ]
    for worker in sorted({r.worker for r in results}):
        mine = [r for r in results if r.worker == worker]
        done, busy = sum(r.frames for r in mine), sum(r.seconds for r in mine)
        speed = done / max(busy, 1e-9)
        lines.append(f"  {worker}: {len(mine)} chunks, {done} frames, {busy:.1f} s busy, {speed:.2f} fps")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- the join


def join(plan: Plan, state: StateFolder, options: smooth.Options, media: smooth.Media, video_start) -> None:
    """The chunks one after another without re-encoding, with the input's audio, subtitles and chapters
    muxed once, as ``vsrife smooth`` muxes them; written beside OUT and renamed when it has every frame."""
    listing = state.path / "concat.txt"
    listing.write_text(concat_list(plan))
    fd, name = tempfile.mkstemp(
        prefix=f".{options.output.stem}.", suffix=f".vsrife{options.output.suffix}", dir=options.output.parent
    )
    os.close(fd)
    partial = Path(name)
    try:
        copy = dataclasses.replace(options, codec="copy", extra=())
        concat = ("-f", "concat", "-i", str(listing))
        command = smooth.ffmpeg_command(copy, media, partial, video_start, video_input=concat)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ClusterError(f"joining the chunks failed: {_one_line(result.stderr)}; they are kept in {state.path}")
        frames = video_frames(partial)
        if frames != plan.total:
            kept = f"the chunks are kept in {state.path}"
            raise ClusterError(f"the joined video has {frames} frames, not {plan.total}; {kept}")
        os.replace(partial, options.output)
    finally:
        partial.unlink(missing_ok=True)


def concat_list(plan: Plan) -> str:
    """ffmpeg's concat list with each chunk's exact duration: the demuxer counts in microseconds, so each
    chunk starts at its true time rounded to one, never drifting (its own estimate may be a frame off)."""
    lines = []
    for chunk in plan.chunks:
        microseconds = _microseconds(chunk.end, plan.rate) - _microseconds(chunk.start, plan.rate)
        lines += [f"file '{chunk.name}'", f"duration {microseconds // 10**6}.{microseconds % 10**6:06d}"]
    return "\n".join(lines) + "\n"


def _microseconds(frame: int, rate: Fraction) -> int:
    return round(Fraction(frame) / rate * 10**6)


def video_frames(path: Path) -> int:
    """The number of video packets in ``path`` (ffprobe, no decoding)."""
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return int(result.stdout.strip().rstrip(","))
    except ValueError:
        return -1
