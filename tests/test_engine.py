"""The engine under load: concurrent and out-of-order requests, bounded caches, determinism, the bench."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import pytest
import vapoursynth as vs

from helpers import clip_from_array, frame_array, read_rgb_frames
from vsrife import rife
from vsrife.engine import WORKER_PREFIX, Engine, EngineOptions, Workers
from vsrife.futures import FutureCache


@pytest.fixture(scope="module")
def frames(sample_path) -> np.ndarray:
    return read_rgb_frames(sample_path("bigbuckbunny"), list(range(40, 52)), crop=(600, 300, 96, 64))


def sequential(clip: vs.VideoNode) -> list[np.ndarray]:
    return [frame_array(clip, n) for n in range(clip.num_frames)]


@pytest.fixture
def threads():
    before = vs.core.num_threads
    yield
    vs.core.num_threads = before


@pytest.mark.parametrize("num_threads", [1, 4, 16])
def test_concurrent_out_of_order_requests_equal_sequential(frames, threads, num_threads):
    vs.core.num_threads = num_threads
    expected = sequential(rife(clip_from_array(frames), model="4.26", factor_num=5, factor_den=2, device="cpu"))
    out = rife(clip_from_array(frames), model="4.26", factor_num=5, factor_den=2, device="cpu")
    order = list(range(out.num_frames))[::-1]
    order = order[::2] + order[1::2]
    futures = {n: out.get_frame_async(n) for n in order}
    wait(list(futures.values()))
    for n, future in futures.items():
        got = future.result()
        assert np.array_equal(np.stack([np.asarray(got[p]) for p in range(3)]), expected[n]), f"frame {n}"


def test_a_frame_made_again_and_another_engine_give_the_same_frame(frames, monkeypatch):
    """Frame 5 asked for again once VapourSynth's cache let it go is made again (its batch was taken for good:
    only a look ahead skips it), and equals the first one and another engine's."""
    clip = clip_from_array(frames)
    first = rife(clip, model="4.26", device="cpu")
    made = frame_array(first, 5)
    runs = []
    original = Engine._run
    monkeypatch.setattr(Engine, "_run", lambda self, job: runs.append(job.key) or original(self, job))
    vs.core.clear_cache()
    assert np.array_equal(frame_array(first, 5), made)
    assert runs, "made again, not kept"
    assert np.array_equal(frame_array(rife(clip, model="4.26", device="cpu"), 5), made)


def test_future_cache_keeps_the_most_recent_and_does_not_redo_what_was_taken():
    """The cache behind the engine's prepared frames and batches: past its capacity the least recently used
    goes; a value taken for good is not started again in the background, but is made again when asked for."""
    pool = ThreadPoolExecutor(2)
    made = []

    def value(key):
        made.append(key)
        return key * 10

    cache = FutureCache(3, pool)
    for key in (1, 2, 3):
        assert cache.get(key, lambda key=key: value(key)) == key * 10
    cache.get(1, lambda: value(1))  # 1 used again: 2 is now the least recent
    cache.get(4, lambda: value(4))
    assert cache.get(2, lambda: value(2)) == 20 and made == [1, 2, 3, 4, 2], "2 was dropped, 1 was kept"
    assert cache.take(5, lambda: value(5), uses=2) == 50 and cache.take(5, lambda: value(5), uses=2) == 50
    assert made.count(5) == 1, "computed once for its two uses"
    assert cache.start(5, lambda: value(5)) is None and made.count(5) == 1, "taken for good: no look ahead redoes it"
    assert cache.take(5, lambda: value(5)) == 50 and made.count(5) == 2, "asked for again: made again"
    pool.shutdown()


def test_freeing_the_clip_stops_the_work_started_ahead(frames, threads):
    """vspipe frees the core right after the clip: by then no batch started ahead may still be running."""
    vs.core.num_threads = 2
    clip = clip_from_array(np.concatenate([frames] * 4)).resize.Bicubic(960, 576)  # a batch takes ~0.5 s
    out = rife(clip, model="4.26", factor_num=4, device="cpu")
    out.get_frame(1)  # frames 2 and 3 are computed ahead, before 1 (their jobs went first)
    out.get_frame(2)  # ready at once; starts frame 4's batch, which is still running on return
    assert any(t.name.startswith(WORKER_PREFIX) for t in threading.enumerate()), "work was started ahead"
    del out
    gc.collect()
    assert not _engine_workers(), "the engine's workers outlived its clip"


def _engine_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(WORKER_PREFIX) and t.is_alive()]


def test_workers_share_the_cores():
    cpu = Workers.choose(torch_device("cpu"), 640, 384, EngineOptions(), cores=8)
    assert (cpu.count, cpu.threads) == (8, 1)
    huge = Workers.choose(torch_device("cpu"), 100_000, 100_000, EngineOptions(), cores=8)
    assert (huge.count, huge.threads) == (1, 8)


def torch_device(name: str):
    import torch

    return torch.device(name)


def test_bench_command_reports_every_figure():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsrife",
            "bench",
            "--size",
            "128x96",
            "--device",
            "cpu",
            "--frames",
            "4",
            "--repeats",
            "1",
            "--model",
            "4.6",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for key in (
        "network-only frames/s",
        "upstream forward frames/s",
        "end-to-end output frames/s",
        "end-to-end interpolated frames/s",
        "end-to-end / network-only",
        "peak host memory MiB",
    ):
        assert key in result.stdout


def bench_figures(*args: str) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "vsrife", "bench", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in result.stdout.splitlines() if line.strip())


def test_bench_stub_network_is_held_to_its_rate():
    """The stand-in device of ``bench --stub-network MS`` holds every in-between MS ms on its own clock:
    however fast the host, no more than 1000/MS in-betweens a second come out of it (a few more may have been
    made ahead during the warm-up), and its busy share is a share."""
    figures = bench_figures("--stub-network", "10", "--size", "320x180", "--frames", "96", "--repeats", "1")
    assert figures["device"] == "stub: 10 ms per in-between on one device queue"
    interpolated = float(figures["end-to-end interpolated frames/s"])
    assert 0 < interpolated <= 100 * 1.2
    assert 0 < float(figures["device busy share"]) <= 1.2
    assert float(figures["host CPU ms per output frame"]) > 0


PATHS = {  # what the pipeline does differently: whole-number factors (VapourSynth's own filters), other ratios
    "factor-2": {"factor_num": 2},
    "factor-4": {"factor_num": 4},
    "5/2": {"factor_num": 5, "factor_den": 2},
    "rate-down": {"factor_num": 24, "factor_den": 25},
    "dedup": {"factor_num": 1, "dedup": True},
}


@pytest.fixture(scope="module")
def cut_and_stills(frames) -> np.ndarray:
    """Real frames with a still pair (a frame repeated) and a cut (the clip played backwards after it)."""
    return np.concatenate([frames[:4], frames[3:4], frames[4:8], frames[11:7:-1]])


@pytest.mark.parametrize("path", PATHS)
def test_every_pipeline_gives_the_sequential_frames(cut_and_stills, threads, path):
    """Out of order, from 4 threads, with 1 to 3 workers and 1 to 4 batches started ahead of each: the frames
    and props one worker makes when asked in order (cuts, stills, re-timed holds included)."""
    clip = clip_from_array(cut_and_stills)
    arguments = {"model": "4.6", "device": "cpu", "sc_threshold": 0.3, "static_threshold": 0.0, **PATHS[path]}
    vs.core.num_threads = 1
    expected = [
        (frame_array(out, n), _kept_props(out, n))
        for out in [rife(clip, **arguments, engine=EngineOptions(workers=1))]
        for n in range(out.num_frames)
    ]
    vs.core.num_threads = 4
    for workers, in_flight in ((2, 1), (3, 4), (1, 2)):
        out = rife(clip, **arguments, engine=EngineOptions(workers=workers, in_flight=in_flight))
        order = list(range(out.num_frames))[::-1]
        futures = {n: out.get_frame_async(n) for n in order[::2] + order[1::2]}
        wait(list(futures.values()))
        for n, future in futures.items():
            got = future.result()
            assert np.array_equal(np.stack([np.asarray(got[p]) for p in range(3)]), expected[n][0]), (path, n)
            assert _kept_props(got, None) == expected[n][1], (path, n)


def _kept_props(frame_or_clip, n: int | None) -> dict:
    frame = frame_or_clip.get_frame(n) if n is not None else frame_or_clip
    return {k: v for k, v in frame.props.items() if k.startswith(("_Scene", "Rife", "_Duration"))}


def test_work_started_ahead_is_never_done_twice(frames, monkeypatch, threads):
    """Frames asked for out of order: a look ahead from an earlier frame does not redo a later frame's batch
    (it did, for 40 % of the batches)."""
    vs.core.num_threads = 4
    runs = []
    original = Engine._run
    monkeypatch.setattr(Engine, "_run", lambda self, job: runs.append(job.key) or original(self, job))
    out = rife(clip_from_array(frames), model="4.6", device="cpu", engine=EngineOptions(workers=2, in_flight=4))
    futures = [out.get_frame_async(n) for n in range(out.num_frames)]
    wait(futures)
    assert len(runs) == len(set(runs)) == 11, "each of the 11 pairs' in-between made once"
