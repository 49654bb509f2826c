"""`vsrife smooth INPUT OUTPUT` for real: real clips in, checked with ffprobe; interrupted runs leave nothing."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from helpers import ffmpeg, probe, short_bunny

BIN = Path(sys.executable).parent
VSRIFE = str(BIN / "vsrife")
pytestmark = pytest.mark.slow


def video(info: dict) -> dict:
    return next(s for s in info["streams"] if s["codec_type"] == "video")


def smooth(*args: str) -> subprocess.CompletedProcess:
    ours = list(args[: args.index("--")]) if "--" in args else list(args)
    return subprocess.run(
        [VSRIFE, "smooth", *ours, "--device", "cpu", "--preset", "ultrafast", *args[len(ours) :]],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def clips(sample_path, small_bunny, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    bunny, phone = str(sample_path("bigbuckbunny")), str(sample_path("carphone"))
    made = {
        "audio": folder / "bunny_2s.mp4",  # 50 frames at 25 fps, AAC audio
        "long": small_bunny,  # all 132 frames, for the interrupted run
        "silent": folder / "phone.mp4",  # 30000/1001 fps, no audio
        "odd": folder / "odd.mkv",  # 175x99, 4:4:4
        "ten_bit": folder / "bunny_10bit.mkv",  # yuv420p10le
        "extras": folder / "extras.mkv",  # with subtitles and chapters
    }
    short_bunny(bunny, made["audio"])
    # 32 whole frames (a stream copy cut at 1 s would drop a B-frame and leave a gap in the timestamps)
    ffmpeg("-i", phone, "-frames:v", "32", "-c:v", "libx264", "-crf", "16", str(made["silent"]))
    ffmpeg("-i", phone, "-t", "1", "-vf", "scale=175:99", "-pix_fmt", "yuv444p", "-c:v", "ffv1", str(made["odd"]))
    ffmpeg("-i", str(made["audio"]), "-pix_fmt", "yuv420p10le", "-c:v", "libx264", "-c:a", "copy", str(made["ten_bit"]))
    srt = folder / "subs.srt"
    srt.write_text("1\n00:00:00,200 --> 00:00:01,500\nHello, bunny.\n")
    meta = folder / "chapters.txt"
    meta.write_text(
        ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=One\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=1000\nEND=2000\ntitle=Two\n"
    )
    ffmpeg(
        "-i",
        str(made["audio"]),
        "-i",
        str(srt),
        "-i",
        str(meta),
        "-map",
        "0",
        "-map",
        "1",
        "-map_chapters",
        "2",
        "-c",
        "copy",
        "-c:s",
        "srt",
        str(made["extras"]),
    )
    return made


def test_real_clip_with_audio_to_60(clips, tmp_path):
    out = tmp_path / "bunny_60.mp4"
    result = smooth(str(clips["audio"]), str(out), "--fps", "60")
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert int(video(info)["nb_read_frames"]) == math.ceil(50 * Fraction(60, 25)) == 120
    assert Fraction(video(info)["r_frame_rate"]) == 60
    assert [s["codec_name"] for s in info["streams"] if s["codec_type"] == "audio"] == ["aac"]
    assert abs(float(info["format"]["duration"]) - float(probe(clips["audio"])["format"]["duration"])) < 0.1
    assert "frames" in result.stderr and "ETA" in result.stderr  # the progress bar, on stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bunny_60.mp4"]


def test_no_audio_ntsc_rate_and_factor(clips, tmp_path):
    out = tmp_path / "phone.mp4"  # mp4 keeps exact rational rates (Matroska rounds to milliseconds)
    result = smooth(str(clips["silent"]), str(out), "--factor", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert Fraction(video(info)["r_frame_rate"]) == Fraction(60000, 1001)
    assert int(video(info)["nb_read_frames"]) == 2 * int(video(probe(clips["silent"]))["nb_read_frames"])
    assert not [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert result.stderr == ""


def test_odd_size(clips, tmp_path):
    out = tmp_path / "odd.mkv"
    result = smooth(str(clips["odd"]), str(out), "--fps", "60", "-q")
    assert result.returncode == 0, result.stderr
    v = video(probe(out))
    assert (v["width"], v["height"], v["pix_fmt"]) == (175, 99, "yuv444p")
    frames = int(video(probe(clips["odd"]))["nb_read_frames"])
    assert int(v["nb_read_frames"]) == math.ceil(frames * Fraction(60) / Fraction(30000, 1001))


def test_ten_bit_stays_ten_bit_with_x265_and_extra_args(clips, tmp_path):
    out = tmp_path / "ten.mkv"
    result = smooth(
        str(clips["ten_bit"]),
        str(out),
        "--codec",
        "libx265",
        "--fps",
        "50",
        "-q",
        "--",
        "-x265-params",
        "log-level=error",
    )
    assert result.returncode == 0, result.stderr
    v = video(probe(out))
    assert (v["codec_name"], v["pix_fmt"], int(v["nb_read_frames"])) == ("hevc", "yuv420p10le", 100)


def test_subtitles_and_chapters_are_kept(clips, tmp_path):
    for name, subtitle in (("extras.mkv", "subrip"), ("extras.mp4", "mov_text")):
        out = tmp_path / name
        result = smooth(str(clips["extras"]), str(out), "-q")
        assert result.returncode == 0, result.stderr
        info = probe(out)
        assert [s["codec_name"] for s in info["streams"] if s["codec_type"] == "subtitle"] == [subtitle]
        assert [c["tags"]["title"] for c in info["chapters"]] == ["One", "Two"]
        assert [s["codec_name"] for s in info["streams"] if s["codec_type"] == "audio"] == ["aac"]


def wait_until_encoding(process: subprocess.Popen) -> None:
    """Until the run has started its ffmpeg: the graph is built, frames are being made."""
    deadline = time.monotonic() + 120
    while not subprocess.run(["pgrep", "-P", str(process.pid), "ffmpeg"], capture_output=True).stdout:
        assert time.monotonic() < deadline and process.poll() is None, "the run never started encoding"
        time.sleep(0.2)


def test_interrupted_run_leaves_nothing_and_stops_quickly(clips, tmp_path):
    out = tmp_path / "never.mkv"
    process = subprocess.Popen(
        [VSRIFE, "smooth", str(clips["long"]), str(out), "--device", "cpu"], stderr=subprocess.PIPE, text=True
    )
    wait_until_encoding(process)
    time.sleep(3)  # well into the run
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - start < 15
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("earlier", [False, True], ids=["no-earlier-output", "earlier-output"])
def test_killed_run_leaves_nothing(clips, tmp_path, signum, earlier):
    out = tmp_path / "never.mp4"
    if earlier:
        out.write_bytes(b"an earlier OUTPUT\n")
    process = subprocess.Popen(
        [VSRIFE, "smooth", str(clips["long"]), str(out), "--device", "cpu", "-q"], stderr=subprocess.PIPE, text=True
    )
    wait_until_encoding(process)
    time.sleep(2)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert (
        stderr.strip() == f"vsrife smooth: interrupted; {f'{out} left as it was' if earlier else 'no output written'}"
    )
    assert [p.name for p in tmp_path.iterdir()] == (["never.mp4"] if earlier else [])
    if earlier:
        assert out.read_bytes() == b"an earlier OUTPUT\n"


def test_dry_run_prints_a_pipeline_that_runs(clips, tmp_path):
    out = tmp_path / "dry.mkv"
    result = subprocess.run(
        [VSRIFE, "smooth", "--dry-run", str(clips["audio"]), str(out), "--fps", "50", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "vspipe -c y4m" in result.stdout and not out.exists()
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", result.stdout],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    info = probe(out)
    assert int(video(info)["nb_read_frames"]) == 100
    assert [s["codec_name"] for s in info["streams"] if s["codec_type"] == "audio"] == ["aac"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: (d / "text.mp4").write_text("not a video") and d / "text.mp4", "cannot be read as a video"),
        (lambda d: _audio_only(d), "has no video stream"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, make, message):
    source = make(tmp_path)
    result = smooth(str(source), str(tmp_path / "out.mkv"))
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.mkv").exists()


def _audio_only(folder: Path) -> Path:
    path = folder / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    return path
