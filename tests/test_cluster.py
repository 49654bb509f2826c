"""`vsrife smooth --workers N` / `--cluster ADDRESS` for real: real Ray clusters on 127.0.0.1 (started and stopped
here), real ffmpeg, real frames. The oracle is a single-process run: with a lossless codec the decoded frames
(ffmpeg's framemd5, timestamps included) must be the same, whatever is killed on the way."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from fractions import Fraction
from pathlib import Path

import pytest

from helpers import BIN, bunny_320, ffmpeg, one_line, probe, smooth, smooth_command
from vsrife import rife
from vsrife.apps import chunk_plan
from vsrife.apps.options import Options
from vsrife.sources import open_source

ROOT = Path(__file__).resolve().parents[1]
RATE = Fraction(60)
CUTS = [30, 76]  # source frames that begin a shot in the first 96 frames of bikes.mp4
SMALL_CHUNKS = ("--chunk-seconds", "0.5")  # 30 output frames: several chunks even in a 4 s clip
pytestmark = pytest.mark.slow


def framemd5(path: Path, stream: str = "v") -> list[str]:
    """Every decoded frame of one stream: timestamps, duration, size and md5 (ffmpeg's framemd5)."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-f", "framemd5", "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if not line.startswith("#")]


def stream_seconds(path: Path, kind: str) -> float:
    """When the last frame (packet) of the stream's kind ends, in seconds."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            f"{kind}:0",
            "-show_entries",
            "packet=pts_time,duration_time",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return max(float(pts) + float(duration) for pts, duration in (line.split(",")[:2] for line in out.split()))


# ------------------------------------------------------------------------------------------ processes, sockets


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists() and "(Z)" not in _state(pid)}


def _state(pid: int) -> str:
    try:
        return "(" + Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] + ")"
    except OSError:
        return "(Z)"


def listening(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets these processes listen on (ss -ltnp)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append(line.split()[3])
    return found


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


class Watched:
    """A `vsrife smooth` run in the background; its process tree and listening sockets sampled meanwhile."""

    def __init__(self, args: list[str], env: dict | None = None) -> None:
        # a file, not a pipe: a run that writes much would block on a pipe nobody reads (closed with the object)
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.process = subprocess.Popen(args, stderr=self.log, stdout=subprocess.DEVNULL, text=True, env=env)
        self.seen: set[int] = set()
        self.addresses: set[str] = set()
        self.started = time.monotonic()

    def sample(self) -> None:
        self.seen |= descendants(self.process.pid)
        self.addresses |= set(listening(self.seen | {self.process.pid}))

    def wait_for(self, condition, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the run ended first: {self.stderr()}"
            assert time.monotonic() < deadline, "timed out waiting"
            self.sample()
            time.sleep(0.2)

    def finish(self, timeout: float = 600) -> tuple[int, str, float]:
        while self.process.poll() is None and time.monotonic() - self.started < timeout:
            self.sample()
            time.sleep(0.3)
        self.process.wait(60)
        return self.process.returncode, self.stderr(), time.monotonic() - self.started

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def leftovers(self, grace: float = 20) -> set[int]:
        deadline = time.monotonic() + grace
        while alive(self.seen) and time.monotonic() < deadline:
            time.sleep(0.5)
        return alive(self.seen)


@pytest.fixture
def reaper():
    """Processes a test started (by id) that must not outlive it: killed at the end if still there."""
    pids: set[int] = set()
    yield pids
    for pid in alive(pids):
        os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def clips(sample_path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cluster_inputs")
    seconds = Fraction(96 * 1001, 24000)
    made = {"cuts": folder / "bikes_ntsc.mkv", "aac": folder / "bunny_aac.mp4"}
    # 96 frames of bikes (cuts at 30 and 76) at 24000/1001, with PCM audio exactly as long as the video
    silent = folder / "bikes_silent.mkv"
    retime = ["-vf", "scale=192:82,setpts=N/(24000/1001)/TB", "-r", "24000/1001"]
    ffmpeg("-i", str(sample_path("bikes")), "-frames:v", "96", *retime, "-c:v", "libx264", "-crf", "16", str(silent))
    tone = f"sine=frequency=440:sample_rate=48000:duration={float(seconds)}"
    ffmpeg("-i", str(silent), "-f", "lavfi", "-i", tone, "-c:v", "copy", "-c:a", "pcm_s16le", str(made["cuts"]))
    bunny_320(sample_path("bigbuckbunny"), made["aac"], seconds=2)
    return made


@pytest.fixture(scope="module")
def single(clips, tmp_path_factory) -> dict:
    """The oracle: `vsrife smooth` in one process, lossless."""
    out = tmp_path_factory.mktemp("single") / "single.mkv"
    began = time.monotonic()
    result = smooth(str(clips["cuts"]), str(out), "--fps", "60", "--codec", "ffv1", "-q")
    assert result.returncode == 0, result.stderr
    return {"video": framemd5(out), "audio": framemd5(out, "a"), "seconds": time.monotonic() - began, "path": out}


def options_for(path: Path, **changes) -> Options:
    return Options(input=path, output=path.with_suffix(".out.mkv"), device="cpu", **changes)


# -------------------------------------------------------------------------------------------------------- plan


def test_chunk_edges_at_cuts_else_even_and_never_short():
    edges = chunk_plan.chunk_edges(1000, [50, 230, 260, 700, 950], 100)
    assert edges == [0, 115, 230, 347, 465, 582, 700, 800, 900, 1000]
    assert {230, 700} <= set(edges)  # the usable cuts; 50, 260 and 950 would leave chunks shorter than 100
    assert chunk_plan.chunk_edges(1000, [], 100) == list(range(0, 1001, 100))
    assert chunk_plan.chunk_edges(150, [70], 100) == [0, 150]  # shorter than one chunk: one chunk
    assert chunk_plan.chunk_edges(250, [], 100) == [0, 125, 250]
    for total, cuts, least in [(977, [13, 400, 401, 402, 960], 37), (5000, list(range(0, 5000, 7)), 50)]:
        edges = chunk_plan.chunk_edges(total, cuts, least)
        lengths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
        assert edges[0] == 0 and edges[-1] == total
        assert min(lengths) >= least and max(lengths) <= 2 * least + 1


def test_plan_puts_chunk_edges_on_the_graphs_own_scene_changes(clips):
    """24000/1001 -> 60 (a ratio of 1001/400): the output frames that begin a shot, as the driver finds them,
    are where rife() itself marks a scene change, and chunks start there."""
    path = clips["cuts"]
    options = options_for(path, fps=RATE)
    source = open_source(path)
    plan = chunk_plan.make_plan(source, options, Fraction(1, 2))
    assert plan.total == 241 and plan.rate == 60
    timing, _ = chunk_plan.output_timing(source, options)
    assert [timing.position(n).nearest for n in plan.cuts] == CUTS
    assert [timing.position(n - 1).nearest for n in plan.cuts] == [c - 1 for c in CUTS]
    starts = [chunk.start for chunk in plan.chunks]
    assert set(plan.cuts) <= set(starts)
    assert [c.end for c in plan.chunks[:-1]] == starts[1:] and plan.chunks[-1].end == plan.total
    assert min(chunk.frames for chunk in plan.chunks) >= 30
    out = rife(source.clip, model="4.26", fps_num=60, timecodes=source.times, device="cpu")
    for n in plan.cuts:
        assert out.get_frame(n).props["_SceneChangePrev"] == 1
        assert out.get_frame(n - 1).props["_SceneChangePrev"] == 0
    even = chunk_plan.make_plan(source, dataclasses.replace(options, sc=False), Fraction(1, 2))
    assert even.cuts == () and [c.start for c in even.chunks] == [0, 30, 60, 90, 120, 150, 180, 210]


# ------------------------------------------------------------------------------------------------ local Ray runs


def test_workers_2_identical_to_single_run_and_only_on_loopback(clips, single, tmp_path, reaper):
    out = tmp_path / "multi.mkv"
    run = Watched(
        smooth_command(str(clips["cuts"]), str(out), "--fps", "60", "--codec", "ffv1", "--workers", "2", *SMALL_CHUNKS)
    )
    code, stderr, seconds = run.finish()
    reaper |= run.seen
    assert code == 0, stderr
    assert framemd5(out) == single["video"]
    assert framemd5(out, "a") == single["audio"]  # the audio muxed once, as smooth muxes it
    assert abs(stream_seconds(out, "a") - stream_seconds(out, "v")) <= 1 / 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.mkv"]  # no OUT.parts, no temporary file
    # a local cluster opens no port to the network: Ray listens, but on 127.0.0.1 only
    assert run.addresses and all(is_loopback(a) for a in run.addresses), run.addresses
    assert not run.leftovers(), "Ray processes outlived the run"
    assert "frames" in stderr and "ETA" in stderr  # the bar
    workers = re.findall(r"^  node \w+ \(127\.0\.0\.1\) pid (\d+): (\d+) chunks, (\d+) frames", stderr, re.MULTILINE)
    assert len(workers) == 2 and sum(int(frames) for *_, frames in workers) == 241, stderr
    print(f"\nsingle run {single['seconds']:.1f} s, --workers 2 {seconds:.1f} s (4 s clip, 30-frame chunks)")


def test_x264_mp4_chunks_start_with_keyframes_audio_copied_once(clips, tmp_path, reaper):
    out = tmp_path / "bunny.mp4"
    args = [str(clips["aac"]), str(out), "--fps", "60", "--workers", "2", *SMALL_CHUNKS, "-q", "--preset", "ultrafast"]
    run = Watched(smooth_command(*args))
    code, stderr, _ = run.finish()
    reaper |= run.seen
    assert code == 0, stderr
    video = next(s for s in probe(out)["streams"] if s["codec_type"] == "video")
    assert (video["codec_name"], int(video["nb_read_frames"]), Fraction(video["r_frame_rate"])) == ("h264", 120, 60)
    plan = chunk_plan.make_plan(open_source(clips["aac"]), options_for(clips["aac"], fps=RATE), Fraction(1, 2))
    keyframes = [n for n, line in enumerate(packet_flags(out)) if "K" in line]
    assert len(plan.chunks) >= 3 and {c.start for c in plan.chunks} <= set(keyframes)
    # AAC copied from the input once: the same packets, not re-encoded per chunk with priming gaps
    assert framemd5(out, "a") == framemd5(clips["aac"], "a")
    assert stderr == ""


def packet_flags(path: Path) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts,flags", "-of", "csv=p=0"]
        + [str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = sorted((int(pts), flags) for pts, flags in (line.split(",")[:2] for line in out.split()))
    return [flags for _, flags in rows]


def test_worker_killed_mid_chunk_is_retried_output_unchanged(clips, single, tmp_path, reaper):
    out = tmp_path / "killed_worker.mkv"
    run = Watched(
        smooth_command(str(clips["cuts"]), str(out), "--fps", "60", "--codec", "ffv1", "--workers", "2", *SMALL_CHUNKS)
    )

    def rendering() -> list[int]:
        return [pid for pid in descendants(run.process.pid) if title(pid).startswith("ray::render_chunk")]

    run.wait_for(rendering)
    time.sleep(1.5)  # into the chunk: the graph built, frames flowing
    victim = rendering()[0]
    os.kill(victim, signal.SIGKILL)
    code, stderr, _ = run.finish()
    reaper |= run.seen
    assert code == 0, stderr
    assert framemd5(out) == single["video"]
    assert not Path(f"/proc/{victim}").exists() or "(Z)" in _state(victim)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed_worker.mkv"]


def test_driver_killed_then_resumed_other_job_refused(clips, single, tmp_path, reaper):
    out = tmp_path / "resumed.mkv"
    args = [str(clips["cuts"]), str(out), "--fps", "60", "--codec", "ffv1", "--workers", "2", *SMALL_CHUNKS]
    parts = tmp_path / "resumed.mkv.parts"
    run = Watched(smooth_command(*args, "-q"))
    run.wait_for(lambda: len(list(parts.glob("chunk-*.json"))) >= 2)
    run.process.kill()  # SIGKILL: no chance to clean up
    run.process.wait(30)
    reaper |= run.seen
    manifest = json.loads((parts / "manifest.json").read_text())
    kept = sorted(parts.glob("chunk-*.json"))
    assert not out.exists()
    assert 2 <= len(kept) < len(manifest["chunks"])
    # Ray's own processes go with the driver (the node's agents take up to a minute; the reaper ends those)
    assert run.leftovers(30) <= {pid for pid in run.seen if "Agent" in title(pid)}

    other = smooth(*args, "--fps", "50")
    assert other.returncode == 1
    assert "holds another job" in one_line(other.stderr)
    assert sorted(parts.glob("chunk-*.json")) == kept

    resumed = Watched(smooth_command(*args, "--resume"))
    code, stderr, _ = resumed.finish()
    reaper |= resumed.seen
    assert code == 0, stderr
    assert f"resuming: {len(kept)} of {len(manifest['chunks'])} chunks done" in stderr
    rendered = len(manifest["chunks"]) - len(kept)
    assert f"{rendered} of {len(manifest['chunks'])} chunks rendered now" in stderr
    assert framemd5(out) == single["video"]
    assert framemd5(out, "a") == single["audio"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resumed.mkv"]


def test_driver_stopped_by_sigterm_keeps_finished_chunks_and_stops_ray(clips, tmp_path, reaper):
    out = tmp_path / "stopped.mkv"
    parts = tmp_path / "stopped.mkv.parts"
    run = Watched(
        smooth_command(str(clips["cuts"]), str(out), "--fps", "60", "--codec", "ffv1", "--workers", "2", *SMALL_CHUNKS)
    )
    run.wait_for(lambda: len(list(parts.glob("chunk-*.json"))) >= 1)
    run.process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    code, stderr, _ = run.finish()
    reaper |= run.seen
    assert code == 130, stderr
    assert time.monotonic() - stopped < 20
    kept = len(list(parts.glob("chunk-*.json")))
    assert kept >= 1 and f"interrupted; {kept} of " in stderr and f"chunks kept in {parts}" in stderr
    assert not out.exists() and not list(parts.glob(".*"))  # nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stopped.mkv.parts"]
    assert not run.leftovers(), "Ray processes outlived the run"


def test_sigint_inherited_as_ignored_stops_the_job_and_output_is_held_meanwhile(clips, tmp_path, reaper):
    """`vsrife smooth … --workers 2 &` from a script starts with SIGINT ignored; it ran to its end (exit 0)
    where a single-process run stops. Stopped before any chunk was finished (the task is held still), it
    keeps nothing and says so in full (it said "interrupted; nothing"). While it runs, OUTPUT is its own."""
    out = tmp_path / "stopped.mkv"
    args = [str(clips["cuts"]), str(out), "--fps", "60", "--codec", "ffv1", "--workers", "2", "--chunk-seconds", "100"]
    run = Watched(["bash", "-c", 'trap "" INT; exec "$@"', "-", *smooth_command(*args)])  # as `&` in a script
    try:

        def rendering() -> list[int]:
            return [pid for pid in descendants(run.process.pid) if title(pid).startswith("ray::render_chunk")]

        run.wait_for(rendering)
        for pid in rendering():  # the one chunk cannot finish
            os.kill(pid, signal.SIGSTOP)
        other = smooth(str(clips["cuts"]), str(out), "--fps", "50")
        assert other.returncode == 1
        one_line(other, f"{out}: another vsrife run (process {run.process.pid}) is writing it")
        run.process.send_signal(signal.SIGINT)
        code, stderr, _ = run.finish(timeout=120)
    finally:
        reaper |= run.seen | {run.process.pid}
    assert code == 130, stderr
    assert stderr.strip().splitlines()[-1] == "vsrife smooth: interrupted; no output written"
    assert list(tmp_path.iterdir()) == []  # no OUTPUT, no state folder, no lock
    assert not run.leftovers(), "Ray processes outlived the run"


def test_chunk_failing_three_times_stops_the_job(clips, tmp_path, reaper):
    """An encoder argument after -- that only the encoder refuses (options of our own are checked first)."""
    out = tmp_path / "never.mkv"
    args = [str(clips["cuts"]), str(out), "--workers", "2", *SMALL_CHUNKS, "-q", "--", "-profile:v", "nosuchprofile"]
    run = Watched(smooth_command(*args))
    code, stderr, _ = run.finish()
    reaper |= run.seen
    assert code == 1
    line = one_line(stderr)
    assert re.search(r"chunk \d+ \(output frames \d+-\d+\) failed 3 times: .*nosuchprofile", line), line
    assert list(tmp_path.iterdir()) == []  # no OUT, and no state folder: no chunk was finished
    assert not run.leftovers()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "0"], "--workers 0: give at least 1"),
        (["--resume"], "--resume and --chunk-seconds go with --workers N or --cluster ADDRESS"),
        (["--workers", "2", "--resume"], "there is no"),
        (["--workers", "2", "--chunk-seconds", "0"], "give a positive number of seconds"),
        (["--cluster", "127.0.0.1:{port}"], "no Ray cluster answers at 127.0.0.1:"),
        (["--cluster", "ray://127.0.0.1:{port}"], "no Ray cluster answers at ray://127.0.0.1:"),
        (["--workers", "2", "--dry-run"], "leave out --workers and --cluster"),
        (["--workers", "2", "--crf", "-5"], "--crf -5: libx264 takes 0 (best) to 51"),
        (["--workers", "2", "--fps", "2000"], "--fps 2000: .mkv times frames in whole milliseconds"),
    ],
)
def test_bad_setup_is_one_line_within_seconds(clips, tmp_path, extra, message):
    out = tmp_path / "out.mkv"
    began = time.monotonic()
    result = smooth(str(clips["cuts"]), str(out), *(a.format(port=free_port()) for a in extra), timeout=120)
    assert result.returncode == 1
    assert message in one_line(result.stderr)
    assert time.monotonic() - began < 30
    assert list(tmp_path.iterdir()) == []


class Listener:
    """A TCP server on 127.0.0.1 that is no Ray cluster: it accepts, sends ``greeting`` (maybe nothing) and
    then keeps silent, as a firewall's or a proxy's port does."""

    def __init__(self, greeting: bytes) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.greeting = greeting
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.server.accept()
                self.connections.append(connection)
                connection.sendall(self.greeting)

    def close(self) -> None:
        for connection in [*self.connections, self.server]:
            connection.close()


SETTINGS_FRAME = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # what any HTTP/2 server says first


@pytest.mark.parametrize(
    ("greeting", "message"),
    [(b"", r"\(timed out\)"), (SETTINGS_FRAME, r"\(nothing within 20 s\)|Failed to connect")],
    ids=["silent", "speaks-http2"],
)
def test_cluster_address_that_does_not_answer_is_one_line_within_seconds(clips, tmp_path, greeting, message):
    listener = Listener(greeting)
    began = time.monotonic()
    try:
        result = smooth(str(clips["cuts"]), str(tmp_path / "out.mkv"), "--cluster", f"127.0.0.1:{listener.port}")
    finally:
        listener.close()
    assert result.returncode == 1
    assert re.search(rf"at 127\.0\.0\.1:{listener.port}.*({message})", one_line(result.stderr))
    assert time.monotonic() - began < 40
    assert list(tmp_path.iterdir()) == []


def test_without_ray_installed_one_line_names_the_extra(clips, tmp_path):
    code = (
        "import sys\nsys.modules['ray'] = None  # as if Ray were not installed: its import fails\n"
        "from vsrife.apps import cli\nsys.exit(cli.main(sys.argv[1:]))\n"
    )
    args = [str(clips["cuts"]), str(tmp_path / "out.mkv"), "--workers", "2"]
    result = subprocess.run([sys.executable, "-c", code, "smooth", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "need Ray: pip install 'vsrife[cluster]'" in one_line(result.stderr)


def test_plain_smooth_never_imports_ray(sample_path, tmp_path):
    clip = tmp_path / "tiny.mp4"
    ffmpeg("-i", str(sample_path("carphone")), "-frames:v", "6", "-c:v", "libx264", str(clip))
    code = (
        "import sys\nfrom vsrife.apps import cli\n"
        "status = cli.main(sys.argv[1:])\n"
        "assert status == 0, status\nassert 'ray' not in sys.modules, 'ray was imported'\nprint('ok')\n"
    )
    args = ["smooth", str(clip), str(tmp_path / "out.mkv"), "--device", "cpu", "-q", "--preset", "ultrafast"]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


# ---------------------------------------------------------------------------------------- a two-node cluster

NODE = """
import signal, sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams

params = RayParams(node_ip_address="127.0.0.1", gcs_address=sys.argv[1], num_cpus=1, num_gpus=0,
                   include_log_monitor=False, node_manager_port=0, min_worker_port=0, max_worker_port=0)
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
print("up", node.node_id, flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 (no dashboard, a token of its own) and a second node on this machine,
    in a mount namespace where the folder ``hidden`` is an empty tmpfs: a node that cannot see some inputs.

    Ray on Linux joins a second node only under its own machine address (a second `ray start` turns
    127.0.0.1 into it, and then listens on every interface), so the second node is started with the
    class `ray start` uses, given 127.0.0.1, as Ray's own cluster_utils does."""
    folder = tmp_path_factory.mktemp("two_nodes")
    hidden = folder / "hidden"
    hidden.mkdir()
    port = free_port()
    env = dict(
        os.environ,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=uuid.uuid4().hex,
        PATH=f"{BIN}:{os.environ['PATH']}",
    )
    head_args = ["--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1"]
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", *head_args, "--include-dashboard", "false", "--disable-usage-stats"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    hide = f'mount -t tmpfs vsrife-test {hidden} && exec {sys.executable} -c "$0" 127.0.0.1:{port}'
    node = None
    try:
        _wait_port(port, head)
        node = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", hide, NODE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert node.stdout.readline().startswith("up"), "the second node did not start"
        yield {"address": f"127.0.0.1:{port}", "env": env, "hidden": hidden, "groups": [head.pid, node.pid]}
    finally:
        for process in filter(None, [node, head]):
            _stop_group(process)


def _wait_port(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "ray start --head ended"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(3)  # the rest of the head comes up
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the head node did not come up")


def _stop_group(process: subprocess.Popen) -> None:
    """The process group this fixture started: asked to stop, then killed (by its id)."""
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def test_two_node_cluster_identical_and_on_loopback(clips, single, two_nodes, tmp_path):
    out = tmp_path / "two_nodes.mkv"
    args = [str(clips["cuts"]), str(out), "--fps", "60", "--codec", "ffv1", "--cluster", two_nodes["address"]]
    result = smooth(*args, *SMALL_CHUNKS, env=two_nodes["env"])
    assert result.returncode == 0, result.stderr
    assert framemd5(out) == single["video"]
    assert framemd5(out, "a") == single["audio"]
    nodes = set(re.findall(r"^  node (\w+) \(127\.0\.0\.1\)", result.stderr, re.MULTILINE))
    assert len(nodes) == 2, result.stderr  # both nodes rendered chunks
    cluster_pids = set().union(*(descendants(group) | {group} for group in two_nodes["groups"]))
    addresses = listening(cluster_pids)
    assert addresses and all(is_loopback(a) for a in addresses), addresses


def test_node_that_cannot_see_the_input_is_one_line(clips, two_nodes, tmp_path):
    hidden = two_nodes["hidden"] / "bikes.mkv"
    hidden.write_bytes(clips["cuts"].read_bytes())
    began = time.monotonic()
    result = smooth(str(hidden), str(tmp_path / "out.mkv"), "--cluster", two_nodes["address"], env=two_nodes["env"])
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert re.search(rf"node 127\.0\.0\.1 \(\w+\) cannot see {re.escape(str(hidden))}: every node must see", line)
    assert time.monotonic() - began < 60
    assert list(tmp_path.iterdir()) == []
