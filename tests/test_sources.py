"""Real files at their true timing: the container's timestamps (ffprobe) are the oracle, not the source
filter's guesses; extreme rates build in constant time; BestSource's random read failures never stop a read."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

from helpers import avi_ending_in_empty_slots, clip_from_array, ffmpeg, ffprobe, smooth
from vsrife import rife, sc_detect
from vsrife.errors import ParameterError, ParameterTypeError
from vsrife.sources import (
    RetryingReader,
    SourceError,
    bestsource,
    cached_indexes,
    open_source,
    open_video,
    probe_times,
)
from vsrife.timing import MAX_STEP, FrameTimes, read_timecodes

# BestSource's index of the FreeCol film from a decode that went wrong under load (frames 549-552)
PLANTED_INDEX = Path(__file__).parent / "data" / "freecol-index-from-a-bad-decode.bsindex"
# (rate given to ffmpeg's fps filter, container, encoder): every container of the sample set
CONSTANT = [
    ("15", "mkv", "libx264"),  # BestSource reads this one as 29000/1933
    ("24000/1001", "mkv", "libx264"),
    ("30000/1001", "mkv", "libx264"),
    ("30000/1001", "mp4", "libx264"),
    ("12", "mov", "libx264"),
    ("24", "webm", "libvpx-vp9"),
    ("25", "ogv", "libtheora"),
    ("24000/1001", "avi", "mpeg4"),
]


def packet_pts(path: Path) -> list[Fraction]:
    """The oracle: presentation times of the video frames, as ffprobe decodes them (seconds)."""
    out = ffprobe(path, "-select_streams", "v:0", "-show_entries", "frame=best_effort_timestamp_time", "-of", "csv=p=0")
    return sorted(Fraction(line.strip().rstrip(",")) for line in out.splitlines() if line.strip())


@pytest.fixture(scope="module")
def constant_files(sample_path, tmp_path_factory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("constant")
    made = {}
    for rate, container, codec in CONSTANT:
        path = folder / f"clip_{rate.replace('/', '_')}.{container}"
        ffmpeg(
            "-i",
            str(sample_path("bigbuckbunny")),
            "-t",
            "2",
            "-vf",
            f"scale=160:90,fps={rate}",
            "-c:v",
            codec,
            "-an",
            str(path),
        )
        made[rate, container] = path
    return made


@pytest.mark.parametrize(("rate", "container", "codec"), CONSTANT, ids=lambda v: str(v).replace("/", "_"))
def test_constant_rate_files_read_at_their_exact_rate(constant_files, rate, container, codec):
    source = open_source(constant_files[rate, container])
    assert source.rate == Fraction(rate) and source.times is None
    assert source.clip.fps == Fraction(rate)
    pts = packet_pts(constant_files[rate, container])
    assert source.clip.num_frames == len(pts)
    assert all(abs(t - pts[0] - n / Fraction(rate)) <= Fraction(1, 1000) for n, t in enumerate(pts))


def test_avi_sample_at_its_declared_rate_not_bestsources_guess(sample_path):
    """Megamind.avi: 270 frames at 2997/125 (11.26 s); BestSource alone says 260739/33125 (34.3 s)."""
    path = sample_path("megamind")
    assert vs.core.bs.VideoSource(str(path), cachemode=0).fps != Fraction(2997, 125)  # what this guards against
    source = open_source(path)
    declared = ffprobe(path, "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate,duration", "-of", "json")
    stream = json.loads(declared)["streams"][0]
    assert source.rate == Fraction(stream["r_frame_rate"]) == Fraction(2997, 125)
    assert abs(float(source.duration) - float(stream["duration"])) < 1e-6
    out = rife(source.clip, fps_num=60, device="cpu")
    assert out.num_frames == math.ceil(270 * Fraction(60) / Fraction(2997, 125))


@pytest.fixture(scope="module")
def variable_file(sample_path, tmp_path_factory) -> Path:
    """A phone-like recording made from a real clip: the first frame lasts 0.2 s, one frame is dropped
    later, the rest are at 25 fps; every time a multiple of 20 ms; lossless FFV1 with a sine track."""
    path = tmp_path_factory.mktemp("variable") / "phone.mkv"
    ffmpeg(
        "-ss",
        "1.4",
        "-i",
        str(sample_path("bigbuckbunny")),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:duration=1.2",
        "-t",
        "1",
        "-vf",
        "scale=160:90,setpts='(if(eq(N\\,0)\\,0\\,0.16+N*0.04))/TB',select='not(eq(n\\,12))'",
        "-fps_mode",
        "passthrough",
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "ffv1",
        "-c:a",
        "pcm_s16le",
        "-shortest",
        str(path),
    )
    return path


def test_variable_rate_file_keeps_its_timestamps(variable_file):
    pts = packet_pts(variable_file)
    assert pts[:3] == [0, Fraction(1, 5), Fraction(6, 25)] and pts[12] - pts[11] == Fraction(2, 25)
    source = open_source(variable_file)
    assert source.times is not None and source.rate == 25  # nominal: the typical spacing, as declared
    assert [source.times.start(j) for j in range(len(pts))] == [t - pts[0] for t in pts]
    bestsource = vs.core.bs.VideoSource(str(variable_file), cachemode=0)
    assert bestsource.fps != 0, "BestSource calls this file constant-rate: only the timestamps tell"


def _tagged(clip: vs.VideoNode) -> vs.VideoNode:
    def tag(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        out.props["SourceIndex"] = n
        return out

    return clip.std.ModifyFrame(clip, tag)


def test_output_frames_show_the_source_position_their_time_asks_for(variable_file):
    source = open_source(variable_file)
    pts = [t - packet_pts(variable_file)[0] for t in packet_pts(variable_file)]
    out = rife(
        _tagged(source.clip),
        fps_num=50,
        timecodes=source.times,
        sc=False,
        static_threshold=None,
        model="4.6",
        device="cpu",
    )
    assert out.fps == 50
    assert out.num_frames == math.ceil(source.duration * 50)
    for n in range(out.num_frames):
        time = Fraction(n, 50)
        left = max(j for j, t in enumerate(pts) if t <= time)
        props = out.get_frame(n).props
        if time == pts[left] or left == len(pts) - 1:
            assert props["SourceIndex"] == left and "RifeTimestep" not in props
        else:
            t = (time - pts[left]) / (pts[left + 1] - pts[left])
            assert list(props["RifePair"]) == [left, left + 1] and props["RifeTimestep"] == float(t)


def _raw_frames(path: Path, width: int, height: int) -> np.ndarray:
    """Every decoded frame of ``path`` as 8-bit luma (ffmpeg, no VapourSynth)."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width).astype(np.int32)


def _stream_seconds(path: Path, kind: str) -> tuple[float, float]:
    info = ffprobe(path, "-select_streams", kind, "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0")
    rows = [[float(x) for x in line.split(",")[:2]] for line in info.splitlines() if line.strip()]
    return min(r[0] for r in rows), max(r[0] + r[1] for r in rows)


@pytest.mark.slow
def test_smooth_a_variable_rate_file_keeps_duration_and_sound_in_step(variable_file, tmp_path):
    out = tmp_path / "smooth.mkv"
    result = smooth(str(variable_file), str(out), "--fps", "50", "--codec", "ffv1", "--no-sc", quiet=True)
    assert result.returncode == 0, result.stderr
    first, end = _stream_seconds(variable_file, "v:0")
    out_first, out_end = _stream_seconds(out, "v:0")
    assert abs((out_end - out_first) - (end - first)) <= 1 / 50 + 1e-6, "video duration kept within one frame"
    audio_first, audio_end = _stream_seconds(out, "a:0")
    assert abs(out_first - first) < 1e-3 and abs(audio_first - _stream_seconds(variable_file, "a:0")[0]) < 1e-3
    source = _raw_frames(variable_file, 160, 90)
    frames = _raw_frames(out, 160, 90)
    pts = [t - packet_pts(variable_file)[0] for t in packet_pts(variable_file)]
    assert len(frames) == math.ceil((pts[-1] + Fraction(1, 25)) * 50)
    shown = {int(t * 50): j for j, t in enumerate(pts)}  # every source time is a multiple of 1/50 s
    for n, frame in enumerate(frames):
        if n in shown:
            assert np.array_equal(frame, source[shown[n]]), f"output {n} is source frame {shown[n]}, bit-exact"
    gap = [np.abs(frames[n] - source[0]).mean() for n in range(0, 10)]  # 0 .. 0.18 s: frame 0 toward frame 1
    assert gap == sorted(gap) and gap[0] == 0 < gap[1], "in the long first frame, the picture moves evenly on"


def _stream_rate_and_frames(path: Path) -> tuple[Fraction, int]:
    out = ffprobe(
        path,
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=r_frame_rate,nb_read_frames",
        "-of",
        "json",
    )
    stream = json.loads(out)["streams"][0]
    return Fraction(stream["r_frame_rate"]), int(stream["nb_read_frames"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rate", "container", "args", "expected"),
    [
        ("12", "mov", ("--factor", "2"), Fraction(24)),
        ("15", "mkv", ("--factor", "2"), Fraction(30)),
        ("24000/1001", "mkv", ("--factor", "2"), Fraction(48000, 1001)),
        ("30000/1001", "mp4", ("--factor", "2"), Fraction(60000, 1001)),
        ("15", "mkv", ("--fps", "60000/1001"), Fraction(60000, 1001)),
        ("24000/1001", "avi", ("--fps", "60000/1001"), Fraction(60000, 1001)),
    ],
    ids=lambda v: str(v).replace("/", "_").replace(" ", ""),
)
def test_exact_output_rates(constant_files, tmp_path, rate, container, args, expected):
    out = tmp_path / "out.mp4"  # MP4 keeps exact rational rates (Matroska rounds to milliseconds)
    result = smooth(str(constant_files[rate, container]), str(out), *args, quiet=True)
    assert result.returncode == 0, result.stderr
    frames = len(packet_pts(constant_files[rate, container]))
    assert _stream_rate_and_frames(out) == (expected, math.ceil(frames * expected / Fraction(rate)))


EXTREME_RATIOS = [
    # (source length, source fps, rife arguments): each built in a fresh process, under a time limit
    (270, (260739, 33125), {"fps_num": 60}),
    (270, (260739, 33125), {"fps_num": 60000, "fps_den": 1001}),
    (10**6, (10000000, 333667), {"fps_num": 60}),
    (10**6, (24, 1), {"factor_num": 999999937, "factor_den": 999999929}),
    (10**6, (999999937, 1000000000), {"fps_num": 1000000000, "fps_den": 999999929}),
]


@pytest.mark.parametrize(("length", "fps", "kwargs"), EXTREME_RATIOS, ids=lambda v: str(v)[:40])
def test_graphs_for_extreme_ratios_build_without_hanging(length, fps, kwargs):
    code = textwrap.dedent(
        f"""
        import vapoursynth as vs
        from vsrife import rife
        clip = vs.core.std.BlankClip(format=vs.YUV420P8, width=64, height=64, length={length},
                                     fpsnum={fps[0]}, fpsden={fps[1]})
        out = rife(clip, device="cpu", model="4.6", **{kwargs!r})
        print(out.num_frames, out.fps)
        out.get_frame(out.num_frames // 2)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    frames, rate = result.stdout.split()
    expected_rate = kwargs.get("fps_num") and Fraction(kwargs["fps_num"], kwargs.get("fps_den", 1))
    expected_rate = expected_rate or Fraction(*fps) * Fraction(kwargs["factor_num"], kwargs["factor_den"])
    assert Fraction(rate) == expected_rate
    assert int(frames) == math.ceil(length * expected_rate / Fraction(*fps))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor_num": 10**9}, "factor_num: the output would have 100000000000 frames"),
        ({"factor_num": 1, "factor_den": 10**9}, f"factor_num: the output rate is too low.*at most {MAX_STEP}"),
        ({"fps_num": 10**999}, "fps_num: the output would have about"),
        ({"fps_num": 1, "fps_den": 10**6}, "fps_num: the output rate is too low"),
    ],
)
def test_what_cannot_be_meant_is_refused_at_call_time(kwargs, message):
    clip = vs.core.std.BlankClip(format=vs.YUV420P8, width=64, height=64, length=100, fpsnum=24)
    with pytest.raises(ParameterError, match=message):
        rife(clip, device="cpu", model="4.6", **kwargs)


@pytest.fixture(scope="module")
def four_frames() -> vs.VideoNode:
    rng = np.random.default_rng(1)
    return clip_from_array(rng.random((4, 3, 16, 16), dtype=np.float32))


@pytest.mark.parametrize("value", ["0", [0, 0], 0.5, -1, 2])
def test_scene_change_props_other_than_0_or_1_are_refused(four_frames, value):
    clip = four_frames.std.SetFrameProps(_SceneChangeNext=value)
    out = rife(clip, sc_threshold=None, model="4.6", device="cpu")
    with pytest.raises(vs.Error, match=r"source frame \d+ has _SceneChangeNext=.*must be the integer 0 or 1"):
        out.get_frame(1)


def test_scene_change_props_0_and_1_are_honoured(four_frames):
    clip = four_frames.std.SetFrameProps(_SceneChangeNext=0)
    cut = vs.core.std.Splice([clip[:2], clip[2:].std.SetFrameProps(_SceneChangePrev=1)])
    out = rife(cut, sc_threshold=None, model="4.6", device="cpu")
    assert "RifeTimestep" in out.get_frame(1).props and "RifeTimestep" not in out.get_frame(3).props


def _fps0(clip: vs.VideoNode, **props) -> vs.VideoNode:
    """``clip`` made variable-rate (fps 0) with these duration props on frame 1."""
    varied = vs.core.std.Splice([clip[:2], clip[2:].std.AssumeFPS(fpsnum=30)], mismatch=True)
    return vs.core.std.Splice([varied[:1], varied[1].std.SetFrameProps(**props), varied[2:]], mismatch=True)


@pytest.mark.parametrize(
    "props",
    [{"_DurationNum": 0}, {"_DurationNum": -5}, {"_DurationDen": 0}, {"_DurationNum": "abc"}],
)
def test_bad_durations_are_refused(four_frames, props):
    clip = _fps0(four_frames, **props)
    assert clip.fps == 0
    with pytest.raises(ParameterError, match=r"clip: source frame 1 has _DurationNum="):
        rife(clip, fps_num=60, model="4.6", device="cpu")
    out = rife(clip, factor_num=2, model="4.6", device="cpu")  # per frame: refused when the frame is made
    with pytest.raises(vs.Error, match=r"source frame 1 has _DurationNum="):
        out.get_frame(2)


def test_missing_durations_are_refused(four_frames):
    clip = vs.core.std.Splice(
        [four_frames[:2], four_frames[2:].std.AssumeFPS(fpsnum=30).std.RemoveFrameProps("_DurationNum")],
        mismatch=True,
    )
    with pytest.raises(ParameterError, match=r"clip: source frame 2 has _DurationNum=None"):
        rife(clip, fps_num=60, model="4.6", device="cpu")


def test_timecodes_file_places_frames(four_frames, tmp_path):
    path = tmp_path / "times.txt"
    path.write_text("# timecode format v2\n0\n200\n240\n280\n")
    times = read_timecodes(path, 4)
    assert [times.start(j) for j in range(4)] == [0, Fraction(1, 5), Fraction(6, 25), Fraction(7, 25)]
    assert times.duration == Fraction(8, 25)  # the last frame lasts as long as the one before it
    out = rife(four_frames, fps_num=25, timecodes=path, model="4.6", device="cpu")
    assert out.num_frames == 8 and out.fps == 25
    assert [out.get_frame(n).props.get("RifeTimestep") for n in range(3)] == [None, 0.2, 0.4]


@pytest.mark.parametrize(
    ("timecodes", "error", "message"),
    [
        ([0, 0.1, 0.05, 0.2], ParameterError, r"frame 2 starts at 0\.050000 s, before frame 1"),
        ([0, 0.1], ParameterError, "timecodes: the sequence has 2 times; the clip has 4 frames"),
        (42, ParameterTypeError, "timecodes: must be a timecodes v2 file's path"),
        ([0, 0.1, float("nan"), 0.3], ParameterTypeError, "timecodes: must be"),
        ("/nonexistent/times.txt", ParameterError, "timecodes: cannot read '/nonexistent/times.txt'"),
    ],
)
def test_bad_timecodes_are_refused(four_frames, timecodes, error, message):
    with pytest.raises(error, match=message):
        rife(four_frames, fps_num=60, timecodes=timecodes, model="4.6", device="cpu")


def test_timecodes_of_a_million_frames_build_quickly():
    starts = np.cumsum(np.r_[0, np.where(np.arange(10**6 - 1) % 7 == 0, 2002, 1001)]).astype(np.int64)
    times = FrameTimes(starts, int(starts[-1]) + 1001, Fraction(1, 30000))
    clip = vs.core.std.BlankClip(format=vs.YUV420P8, width=64, height=64, length=10**6, fpsnum=30000, fpsden=1001)
    out = rife(clip, fps_num=60, timecodes=times, model="4.6", device="cpu")
    assert out.num_frames == math.ceil(times.duration * 60)


def test_not_a_video_is_one_clear_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(SourceError, match="notes.mp4: cannot be read as a video"):
        open_source(path)
    with pytest.raises(SourceError, match="cannot be read as a video"):
        probe_times(path)


def test_an_index_made_from_a_bad_decode_is_made_again(sample_path, tmp_path, monkeypatch):
    """BestSource's index of the FreeCol film as a frame-threaded decode once made it here: it recorded other
    pictures for frames 549–552 than a single-threaded decode gives, so every later read of them failed
    ("No frame returned … Retry with threads=1"), single-threaded too. The reader retries such a frame
    single-threaded, then makes the index again, once; the frames are then those of FFmpeg's own
    single-threaded decode."""
    film = sample_path("freecol")
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path))
    bestsource(str(film), threads=1)  # where this BestSource keeps its index of the film
    (index,) = cached_indexes(film)
    index.write_bytes(PLANTED_INDEX.read_bytes())
    reader = RetryingReader(str(film), bestsource(str(film), threads=1))  # decodes the true pictures
    clip = reader.clip()
    truth = ffmpeg_frames(film, 560, clip.width, clip.height)
    for n in range(545, 556):
        assert frame_bytes(clip, n) == truth[n], n
    assert reader.retries == 4 and reader.reindexed, "the planted index was not read: was BestSource updated?"
    assert index.read_bytes() != PLANTED_INDEX.read_bytes(), "the index was made again"
    assert frame_bytes(open_video(film), 550) == truth[550]


def test_an_index_is_made_from_a_single_threaded_decode(sample_path, tmp_path, monkeypatch):
    """open_video makes a missing index single-threaded (the frames every later read is checked against)."""
    film = sample_path("freecol")
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path / "ours"))
    open_video(film)
    (ours,) = cached_indexes(film)
    monkeypatch.setenv("VSRIFE_CACHE_DIR", str(tmp_path / "single"))
    bestsource(str(film), threads=1)
    (single,) = cached_indexes(film)
    assert ours.read_bytes() == single.read_bytes()


def ffmpeg_frames(path: Path, count: int, width: int, height: int) -> list[bytes]:
    """The first ``count`` frames as FFmpeg decodes them on one thread (yuv420p)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-frames:v", str(count), "-f", "rawvideo",
         "-pix_fmt", "yuv420p", "-"], capture_output=True, check=True,
    ).stdout  # fmt: skip
    size = width * height * 3 // 2
    return [raw[k * size : (k + 1) * size] for k in range(count)]


def frame_bytes(clip: vs.VideoNode, n: int) -> bytes:
    frame = clip.get_frame(n)
    return b"".join(bytes(frame[p]) for p in range(frame.format.num_planes))


@pytest.mark.slow
def test_film_read_start_to_end_with_the_other_core_busy(sample_path):
    """Under load BestSource now and then fails a frame of this Theora film; a read must still succeed."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for _ in range(3):
            marked = sc_detect(open_video(sample_path("freecol")))
            for n in range(marked.num_frames):
                marked.get_frame(n)
    finally:
        busy.kill()
        busy.wait()


def test_empty_frame_slots_at_the_end_hold_the_last_frame(tmp_path):
    """A 4.00 s AVI whose last 5 of 100 frame slots are empty (a capture's dropped frames): 95 frames, the last
    shown until 4.00 s, as ffprobe and players show it."""
    avi = avi_ending_in_empty_slots(tmp_path)
    assert float(json.loads(ffprobe(avi, "-show_entries", "format=duration", "-of", "json"))["format"]["duration"]) == 4
    source = open_source(avi)
    assert source.clip.num_frames == 95 and source.duration == 4 and not source.ends_early
    assert source.times.start(94) == Fraction(94, 25)
    out = rife(source.clip, fps_num=60, timecodes=source.times, model="4.6", device="cpu")
    assert out.num_frames == 240


def test_a_truncated_file_says_how_many_frames_it_lacks(sample_path, tmp_path):
    whole = tmp_path / "whole.mov"
    ffmpeg("-i", str(sample_path("bigbuckbunny")), "-vf", "scale=320:180", "-c:v", "libx264", "-movflags",
           "+faststart", str(whole))  # fmt: skip
    cut = tmp_path / "cut.mov"
    cut.write_bytes(whole.read_bytes()[:80_000])  # its index (moov, at the start) lists all 132 frames
    source = open_source(cut)
    assert source.declared_frames == 132 and 0 < source.clip.num_frames < 132 and source.ends_early
    assert not open_source(whole).ends_early
