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

from helpers import ffmpeg, probe

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


# --- paths are the caller's: vspipe runs a script from the script's folder ----------------------------------


@pytest.fixture
def film(tmp_path) -> Path:
    """0.4 s of 64x36 video at 25 fps with AAC audio, in a folder of its own (the caller's folder)."""
    path = tmp_path / "film.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x36:r=25:d=0.4", "-f", "lavfi", "-i", "sine=duration=0.4",
           "-c:v", "libx264", "-c:a", "aac", str(path))  # fmt: skip
    return path


def run_in(folder: Path, command: list[str], **env: str) -> subprocess.CompletedProcess:
    """``command`` run in ``folder`` (the user's), the test's environment on PATH, with ``env`` added."""
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env}
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=900)


def frames_and_audio(path: Path) -> tuple[int, list[str]]:
    info = probe(path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    return int(video["nb_read_frames"]), [s["codec_name"] for s in info["streams"] if s["codec_type"] == "audio"]


def test_demo_script_takes_its_paths_from_the_folder_it_runs_in(film):
    (film.parent / "out").mkdir()
    result = run_in(film.parent, [str(ROOT / "examples" / "demo.sh"), film.name, "50", "out/film_50.mkv", "4.6"])
    assert result.returncode == 0, result.stderr
    assert frames_and_audio(film.parent / "out" / "film_50.mkv") == (20, ["aac"])


def test_make_demo_takes_its_paths_from_the_folder_make_was_started_in(film):
    """`make -C REPO demo INPUT=film.mkv` from the film's folder (the test's own environment stands in for the
    one `make setup` makes)."""
    venv = Path(sys.prefix)
    command = ["make", "-s", "-C", str(ROOT), "demo", f"INPUT={film.name}", "FPS=50", "MODEL=4.6", "OUTDIR=made",
               f"VENV={venv}", "-o", str(venv / ".installed")]  # fmt: skip
    result = run_in(film.parent, command, PWD=str(film.parent))  # PWD: what a shell sets for its folder
    assert result.returncode == 0, result.stderr
    assert frames_and_audio(film.parent / "made" / "film_50fps.mkv") == (20, ["aac"])


def readme_command(containing: str) -> str:
    """The README's shell command (with its continuation lines) whose first line holds ``containing``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("vspipe") and containing in line)
    last = first
    while lines[last].endswith("\\"):
        last += 1
    return "\n".join(lines[first : last + 1])


def test_readme_vspipe_example_runs_as_written_from_the_films_folder(film):
    command = readme_command("examples/convert_fps.vpy").replace("~/src/vsrife", str(ROOT))
    assert 'input="$PWD/film.mkv"' in command
    result = run_in(film.parent, ["bash", "-o", "pipefail", "-c", command])
    assert result.returncode == 0, result.stderr
    assert frames_and_audio(film.parent / "film_60fps.mkv") == (24, ["aac"])


def test_a_relative_input_the_script_cannot_find_says_where_it_looked(film):
    """It ended in "film.mkv: cannot be read as a video (No such file or directory)"."""
    result = subprocess.run(
        [str(BIN / "vspipe"), "--info", str(ROOT / "examples" / "convert_fps.vpy"), "-a", f"input={film.name}"],
        cwd=film.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert f"film.mkv: no such file in {ROOT / 'examples'}" in message and "give an absolute path" in message
