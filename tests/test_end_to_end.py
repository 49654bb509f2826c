"""The README's commands for real: vspipe with the example scripts, piped into ffmpeg, on a real clip."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from helpers import probe

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def run_pipeline(
    script: str, args: dict[str, str], ffmpeg_args: list[str], output: Path
) -> subprocess.CompletedProcess:
    vs_args = " ".join(f"-a {k}={v}" for k, v in args.items())
    command = (
        f"{BIN / 'vspipe'} -c y4m {ROOT / 'examples' / script} - {vs_args} "
        f"| ffmpeg -v error -nostdin -y -i - {' '.join(ffmpeg_args)} {output}"
    )
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=900)


def test_convert_fps_with_audio_through_vspipe_and_ffmpeg(small_bunny, tmp_path):
    out = tmp_path / "bunny_60.mkv"
    result = run_pipeline(
        "convert_fps.vpy",
        {"input": str(small_bunny), "fps": "60", "device": "cpu"},
        ["-i", str(small_bunny), "-map", "0:v", "-map", "1:a?", "-c:v", "libx264", "-crf", "18", "-c:a", "copy"],
        out,
    )
    assert result.returncode == 0, result.stderr
    info = probe(out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert int(video["nb_read_frames"]) == math.ceil(132 * Fraction(60, 25)) == 317
    assert Fraction(video["r_frame_rate"]) == 60
    assert (video["width"], video["height"]) == (320, 180)
    assert [a["codec_name"] for a in audio] == ["aac"]
    assert result.stdout == ""


def test_slow_motion_example(small_bunny, tmp_path):
    out = tmp_path / "bunny_slow.mkv"
    result = run_pipeline(
        "slowmo.vpy",
        {"input": str(small_bunny), "factor": "2", "device": "cpu"},
        ["-c:v", "libx264", "-crf", "18"],
        out,
    )
    assert result.returncode == 0, result.stderr
    video = probe(out)["streams"][0]
    assert int(video["nb_read_frames"]) == 264
    assert Fraction(video["r_frame_rate"]) == 25


@pytest.mark.parametrize(
    ("script", "frames"), [("convert_fps.vpy", 317), ("slowmo.vpy", 264), ("anime_dedup.vpy", 132)]
)
def test_examples_build_and_vspipe_needs_no_activated_venv(small_bunny, script, frames):
    """Every example builds its graph; `vapoursynth config` was run, so vspipe works when called by path
    with no venv on PATH."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    env |= {k: os.environ[k] for k in ("VSRIFE_CACHE_DIR",) if k in os.environ}
    result = subprocess.run(
        [
            str(BIN / "vspipe"),
            "--info",
            str(ROOT / "examples" / script),
            "-a",
            f"input={small_bunny}",
            "-a",
            "device=cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"Frames: {frames}" in result.stdout
    assert shutil.which("vspipe", path=env["PATH"]) is None
