"""``vsrife smooth IN OUT --workers N`` or ``--cluster ADDRESS``: one render spread over Ray tasks, frame for
frame the same as a single run, and resumable.

The driver (this process) plans the job once (:func:`vsrife.apps.chunk_plan.make_plan`: chunks at scene cuts)
and keeps it in ``OUT.parts/``; each chunk is a Ray task (:func:`render_chunk`) whose encoded bytes come
back to the driver, which keeps each finished chunk and joins them at the end (:mod:`vsrife.apps.chunks`).
Ray pins a GPU to each task where there are GPUs, retries a task whose worker or node is lost, and runs
the local cluster of ``--workers`` on 127.0.0.1 only.

Ray (``pip install 'vsrife[cluster]'``) is imported only here, and only when these options are given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

from .. import weights
from ..errors import one_line
from ..progress import Progress
from ..sources import Source
from . import preflight, smooth
from .chunk_plan import CPU_CHUNK_SECONDS, GPU_CHUNK_SECONDS, Chunk, Plan, make_plan
from .chunks import (
    ChunkError,
    ChunkResult,
    JobError,
    StateFolder,
    decoded_checksum,
    encode,
    input_fingerprint,
    job_key,
    join,
)
from .ffmpeg import Media, probe
from .options import Options
from .output import check_paths, fate, sole_writer
from .signals import EXIT_INTERRUPTED, interrupts_raise
from .terminal import in_cli_terms, tell

ATTEMPTS = 3  # a chunk that fails this many times stops the job
CONNECT_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 20.0
JOIN_PROBE = """
import logging, sys
import ray
try:
    ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
except Exception as error:
    print(error)
    sys.exit(1)
ray.shutdown()
"""
DEFAULT_PORTS = {"ray": 10001, "gcs": 6379}
REPORT_INTERVAL_S = 0.5
LOOPBACK = "127.0.0.1"
HTTP2_SETTINGS = 0x4  # the type of HTTP/2's SETTINGS frame
HTTP2_GREETING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, HTTP2_SETTINGS, 0, 0, 0, 0, 0])


@dataclass(frozen=True)
class ClusterOptions:
    workers: int | None = None  # tasks at once; without ``address``, the size of the local cluster
    address: str | None = None  # an existing Ray cluster; None: a local one, on 127.0.0.1 only
    resume: bool = False  # there must be a job to resume (one is resumed anyway when its manifest matches)
    chunk_seconds: Fraction | None = None  # least length of a chunk, seconds of output; None: by the device


def options_from(
    workers: int | None, address: str | None, resume: bool, chunk_seconds: str | None, dry_run: bool, device: str | None
) -> ClusterOptions:
    """The command line's cluster options, checked; a JobError (one line) for a bad combination."""
    if workers is None and address is None:
        raise JobError("--resume and --chunk-seconds go with --workers N or --cluster ADDRESS")
    if workers is not None and workers < 1:
        raise JobError(f"--workers {workers}: give at least 1")
    if dry_run:
        raise JobError("--dry-run prints a single-process pipeline; leave out --workers and --cluster")
    if device is not None and device.startswith("cuda:"):
        raise JobError(f"--device {device}: each task is given a GPU of its own; say --device cuda, or nothing")
    seconds = None
    if chunk_seconds is not None:
        try:
            seconds = Fraction(chunk_seconds)
        except (ValueError, ZeroDivisionError):
            seconds = Fraction(0)
        if seconds <= 0:
            raise JobError(f"--chunk-seconds {chunk_seconds}: give a positive number of seconds")
    return ClusterOptions(workers, address, resume, seconds)


# ------------------------------------------------------------------------------------------------ the tasks


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


def render_chunk(options: Options, chunk: Chunk, total: int, threads: int, board) -> ChunkResult:
    """A Ray task: output frames ``[chunk.start, chunk.end)`` of ``vsrife smooth``'s graph, encoded."""
    began = time.monotonic()
    board.started.remote(chunk.index)
    try:
        vs.core.num_threads = threads  # the engine keeps to this task's share of the cores (engine.cpu_budget)
        graph = smooth.build(options)
        if graph.clip.num_frames != total:
            raise ChunkError(f"the graph here has {graph.clip.num_frames} output frames, the plan {total}")
        data = encode(graph.clip[chunk.start : chunk.end], graph.encoder, _reporter(board, chunk.index))
        frames, checksum = decoded_checksum(data)
    except Exception as error:
        raise ChunkError(in_cli_terms(error)) from None
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


def node_problem(path: str, fingerprint: str, model: str) -> str | None:
    """A Ray task run on each node before the job: what keeps this node from rendering chunks, or None."""
    try:
        if not Path(path).is_file():
            return f"cannot see {path}"
        if input_fingerprint(Path(path)) != fingerprint:
            return f"sees another file at {path}"
        weights.locate(model)
    except Exception as error:
        return in_cli_terms(error)
    if shutil.which("ffmpeg") is None:
        return "has no ffmpeg"
    return None


def _worker_label() -> str:
    import ray

    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU") or []
    where = f"node {context.get_node_id()[:8]} ({ray.util.get_node_ip_address()}) pid {os.getpid()}"
    return where + (f" GPU {','.join(gpus)}" if gpus else "")


# ----------------------------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class Slots:
    """How the chunks run: at most ``tasks`` at once, each asking Ray for ``resources`` and running
    ``threads`` CPU threads."""

    tasks: int
    resources: dict[str, float]
    threads: int

    @property
    def gpus(self) -> bool:
        return bool(self.resources.get("num_gpus"))

    def task_options(self) -> dict[str, object]:
        # A GPU task's process ends with it (Ray's rule for GPU tasks, kept here): torch fixes the devices it
        # sees when CUDA starts, and Ray gives the next task on that process another CUDA_VISIBLE_DEVICES.
        return {**self.resources, "max_calls": 1} if self.gpus else dict(self.resources)


def run(options: Options, cluster: ClusterOptions) -> int:
    """Render ``options.input`` to ``options.output`` on Ray; 0 on success, 130 when interrupted."""
    started = time.monotonic()
    check_paths(options.input, options.output)
    with sole_writer(options.output):
        return _run_job(options, cluster, started)


def _run_job(options: Options, cluster: ClusterOptions, started: float) -> int:
    """:func:`run` once OUTPUT is this run's to write."""
    preflight.check_encoder(options)
    ray = import_ray(local=cluster.address is None)
    media = probe(options.input)
    preflight.check_rate(options, media)
    state = StateFolder(options.output)
    key = job_key(options)
    manifest = state.manifest()
    if manifest is not None and manifest.get("key") != key:
        raise JobError(
            f"{state.path} holds another job (the input, the options or the model differ); it is not mixed "
            "with this one: remove it to start over, or give the same options to finish it"
        )
    if cluster.resume and manifest is None:
        raise JobError(f"--resume: there is no {state.path} to resume")
    try:
        slots = connect(ray, cluster, options)
        with interrupts_raise():  # entered after ray.init, which sets a SIGTERM handler of its own
            source, _, notes = smooth.source_graph(options, media)
            if not options.quiet:
                for note in notes:
                    tell(note)
            if manifest is None:
                seconds = cluster.chunk_seconds or (GPU_CHUNK_SECONDS if slots.gpus else CPU_CHUNK_SECONDS)
                plan = make_plan(source, options, seconds, options.quiet)
                state.start(key, options.input, plan)
            else:
                plan = Plan.from_json(manifest)
                state.sweep()
            preflight.check_container_rate(options, plan.rate, source.rate)  # the exact rate, for --factor
            return _render_and_join(ray, plan, state, slots, options, media, source, started)
    finally:
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
        raise JobError("--workers and --cluster need Ray: pip install 'vsrife[cluster]'") from None
    return ray


def connect(ray, cluster: ClusterOptions, options: Options) -> Slots:
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
    check_joins(cluster.address)
    try:
        ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as error:
        raise JobError(f"cannot join the Ray cluster at {cluster.address}: {one_line(error)}") from None
    check_nodes(ray, options)
    return cluster_slots(ray, cluster.workers, options.device)


def _check_loopback(ray) -> None:
    addresses = {node["NodeManagerAddress"] for node in ray.nodes()}
    if addresses != {LOOPBACK}:
        ray.shutdown()
        raise JobError(f"Ray started its node on {', '.join(sorted(addresses))}, not {LOOPBACK} only: stopped")


def check_answers(address: str) -> None:
    """One line within seconds when no Ray cluster answers at ``address`` (Ray itself retries for a minute
    or more). Ray's services speak gRPC: one that listens answers the HTTP/2 greeting with its settings."""
    if address == "auto":
        return
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    default = DEFAULT_PORTS["ray" if scheme == "ray" else "gcs"]
    try:
        with socket.create_connection((host or rest, int(port or default)), timeout=CONNECT_TIMEOUT_S) as connection:
            if _tls():
                return  # a TLS handshake first: the greeting below would not be understood
            connection.sendall(HTTP2_GREETING)
            reply = connection.recv(9)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise JobError(f"no Ray cluster answers at {address} ({reason})") from None
    if len(reply) < 4 or reply[3] != HTTP2_SETTINGS:
        raise JobError(f"no Ray cluster answers at {address} (what listens there does not speak gRPC)")


def check_joins(address: str) -> None:
    """Join the cluster from a throwaway process first, for at most JOIN_TIMEOUT_S: where something else
    answers, Ray retries for minutes and logs every retry on stderr."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", JOIN_PROBE, address], capture_output=True, text=True, timeout=JOIN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise JobError(f"no Ray cluster answers at {address} (nothing within {JOIN_TIMEOUT_S:.0f} s)") from None
    if result.returncode != 0:
        raise JobError(f"cannot join the Ray cluster at {address}: {one_line(result.stdout or result.stderr)}")


def _tls() -> bool:
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def check_nodes(ray, options: Options) -> None:
    """Every node must see the input at its path (the same file), and have the weights and ffmpeg."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    fingerprint = input_fingerprint(options.input)
    probe = ray.remote(node_problem)
    asked = {}
    for node in _usable_nodes(ray):
        where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        there = probe.options(num_cpus=0, max_retries=0, scheduling_strategy=where)
        asked[there.remote(str(options.input), fingerprint, options.model)] = node
    for reference, node in asked.items():
        problem = ray.get(reference)
        if problem:
            raise JobError(
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


def _render_and_join(
    ray,
    plan: Plan,
    state: StateFolder,
    slots: Slots,
    options: Options,
    media: Media,
    source: Source,
    started: float,
) -> int:
    existed = options.output.exists()
    finished = state.finished(plan)
    todo = [chunk for chunk in plan.chunks if chunk.index not in finished]
    if finished and not options.quiet:
        tell(f"resuming: {len(finished)} of {len(plan.chunks)} chunks done")
    progress = JobProgress(options.quiet, plan.total, sum(plan.chunks[i].frames for i in finished))
    try:
        results = render(ray, plan, todo, slots, options, state, progress)
    except KeyboardInterrupt:
        progress.end_line()
        kept = len(state.finished(plan))
        if kept == 0:
            state.remove()
        kept_note = f"{kept} of {len(plan.chunks)} chunks kept in {state.path}; run again to finish"
        tell(f"interrupted; {kept_note if kept else fate(options.output, existed)}")
        return EXIT_INTERRUPTED
    except JobError:
        progress.end_line()
        if not state.finished(plan):
            state.remove()
        raise
    join(plan, state, options, media, source.start)
    state.remove()
    if not options.quiet:
        seconds = time.monotonic() - started
        print(smooth.summary(options.output, plan.total, plan.rate, seconds), file=sys.stderr)
        print(worker_figures(results, progress.elapsed(), len(plan.chunks)), file=sys.stderr, flush=True)
    return 0


def render(
    ray, plan: Plan, todo: list[Chunk], slots: Slots, options: Options, state: StateFolder, progress: JobProgress
) -> list[ChunkResult]:
    """Run the chunks' tasks, at most ``slots.tasks`` at once (Ray retries each up to ATTEMPTS times),
    keeping each result as it comes."""
    board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
    task = ray.remote(max_retries=ATTEMPTS - 1, retry_exceptions=True, **slots.task_options())(render_chunk)
    waiting = sorted(todo, key=lambda chunk: -chunk.frames)  # longest first: the shortest make the tail
    running, results = {}, []
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
            with contextlib.suppress(Exception):  # the cluster may be going down too (Ctrl-C reaches it)
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
        raise JobError(
            f"chunk {chunk.index} (output frames {chunk.start}-{chunk.end - 1}) failed {attempts} times: "
            f"{in_cli_terms(cause)}"
        ) from None


def _in_flight(ray, board, chunks) -> dict[int, int]:
    """Frames done so far of the chunks still running (nothing when the board does not answer at once)."""
    try:
        done, _ = ray.get(board.snapshot.remote(), timeout=1)
    except Exception:
        return {}
    return {chunk.index: done.get(chunk.index, 0) for chunk in chunks}


class JobProgress:
    """The whole job's frames on the one progress line: finished chunks and those in flight."""

    def __init__(self, quiet: bool, total: int, already: int) -> None:
        self.total = total
        self.kept = already
        self.line = Progress(quiet, already=already)

    def finished(self, chunk: Chunk) -> None:
        self.kept += chunk.frames

    def elapsed(self) -> float:
        return self.line.elapsed()

    def show(self, in_flight: dict[int, int]) -> None:
        self.line(min(self.total, self.kept + sum(in_flight.values())), self.total)

    def end_line(self) -> None:
        self.line.end_line()


def worker_figures(results: list[ChunkResult], seconds: float, chunks: int) -> str:
    """The rendering's speed and each worker's share."""
    frames = sum(r.frames for r in results)
    lines = [
        f"vsrife smooth: {len(results)} of {chunks} chunks rendered now, {frames} frames in {seconds:.1f} s "
        f"({frames / max(seconds, 1e-9):.2f} frames/s)"
    ]
    for worker in sorted({r.worker for r in results}):
        mine = [r for r in results if r.worker == worker]
        done, busy = sum(r.frames for r in mine), sum(r.seconds for r in mine)
        speed = done / max(busy, 1e-9)
        lines.append(f"  {worker}: {len(mine)} chunks, {done} frames, {busy:.1f} s busy, {speed:.2f} fps")
    return "\n".join(lines)
