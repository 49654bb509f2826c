"""`vsrife smooth INPUT OUTPUT` for real: real clips in, checked with ffprobe; interrupted runs leave nothing."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import pytest

from helpers import (
    BIN,
    avi_ending_in_empty_slots,
    bunny_320,
    ffmpeg,
    ffprobe,
    from_a_terminal,
    probe,
    smooth,
    smooth_command,
    the_encoder,
)

pytestmark = pytest.mark.slow


def video(info: dict) -> dict:
    return next(s for s in info["streams"] if s["codec_type"] == "video")


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
        "two_frames": folder / "two.mp4",  # 2 frames at 25 fps
    }
    ffmpeg("-i", bunny, "-frames:v", "2", "-vf", "scale=64:36", "-c:v", "libx264", str(made["two_frames"]))
    bunny_320(bunny, made["audio"], seconds=2)
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


# Ctrl-C ends a run by killing ffmpeg and the process itself, waiting for nothing in flight: how long that
# takes does not depend on how fast frames are made (it took 18 s on a slow machine when it waited for them)
STOP_S = 2.0


@pytest.mark.parametrize(
    ("clip", "rate"),
    [("long", "60"), ("two_frames", "1e7"), ("two_frames", "1e9")],
    ids=["film", "1e7-fps", "1e9-fps-millions-of-frames-per-pair"],
)
def test_ctrl_c_ends_any_run_at_once(clips, tmp_path, clip, rate):
    out = tmp_path / "never.mp4"  # MP4's clock times any rate (Matroska's: whole milliseconds)
    process = subprocess.Popen(
        smooth_command(str(clips[clip]), str(out), "--fps", rate, "--max-fps", rate), stderr=subprocess.PIPE, text=True
    )
    the_encoder(process, tmp_path)  # the graph is built, frames are being made
    time.sleep(3)  # well into the run: CPU forwards in flight, frames queued
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - start < STOP_S
    assert process.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "vsrife smooth: interrupted; no output written"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("earlier", [False, True], ids=["no-earlier-output", "earlier-output"])
def test_killed_run_leaves_nothing(clips, tmp_path, signum, earlier):
    out = tmp_path / "never.mp4"
    if earlier:
        out.write_bytes(b"an earlier OUTPUT\n")
    process = subprocess.Popen(
        from_a_terminal(smooth_command(str(clips["long"]), str(out), quiet=True)), stderr=subprocess.PIPE, text=True
    )
    the_encoder(process, tmp_path)  # the graph is built, frames are being made
    time.sleep(2)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signum)
    start = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - start < STOP_S
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
        smooth_command("--dry-run", str(clips["audio"]), str(out), "--fps", "50"),
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
    assert "vapoursynth config" in result.stdout  # what a fresh virtual environment needs before vspipe runs
    script = tmp_path / "dry.vpy"
    script.write_text("# the user's own script\n")
    again = subprocess.run(["bash", "-c", result.stdout], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode != 0 and script.read_text() == "# the user's own script\n", "never written over"
    noted = subprocess.run(smooth_command("--dry-run", str(clips["audio"]), str(out)), capture_output=True, text=True)
    assert f"{script} exists: the script below does not write over it" in noted.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: (d / "text.mp4").write_text("not a video") and d / "text.mp4", "cannot be read as a video"),
        (lambda d: _audio_only(d), "has no video stream"),
        (lambda d: _audio_with_cover_art(d), "has no video stream, only a cover picture (mjpeg)"),
    ],
    ids=["missing", "text", "audio-only", "mkv-audio-with-cover-art"],
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


def _audio_with_cover_art(folder: Path) -> Path:
    """A song with its cover as ffmpeg writes one into Matroska: a one-frame MJPEG video track (Matroska has
    no cover flag, so ffprobe does not call it an attached picture)."""
    cover, song = folder / "cover.jpg", folder / "song.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x64", "-frames:v", "1", str(cover))
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-i", str(cover), "-map", "0", "-map", "1", "-c:a", "flac",
           "-c:v", "copy", "-disposition:v", "attached_pic", str(song))  # fmt: skip
    return song


# --- what a user's files bring: colour, odd sizes, cut files, empty slots, late video ----------------------

COLOUR_FIELDS = ("color_space", "color_transfer", "color_primaries", "color_range", "chroma_location")
HDR10 = (
    "hdr10=1:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:chromaloc=0:log-level=error:"
    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400"
)


def colour(path: Path) -> dict[str, str]:
    return {key: video(probe(path)).get(key, "unknown") for key in COLOUR_FIELDS}


def side_data(path: Path) -> list[dict]:
    """The first frame's side data as FFmpeg decodes it (mastering display, content light level)."""
    info = json.loads(
        ffprobe(path, "-select_streams", "v:0", "-read_intervals", "%+#1", "-show_frames", "-show_entries",
                "frame=side_data_list", "-of", "json")
    )  # fmt: skip
    return [d for d in info["frames"][0].get("side_data_list", []) if "type" not in d or d]


def sei_names(path: Path) -> str:
    """The SEI messages H.264 carries, as FFmpeg's trace_headers names them (its decoder exports no HDR side
    data)."""
    trace = subprocess.run(
        ["ffmpeg", "-v", "trace", "-i", str(path), "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"],
        capture_output=True,
        text=True,
    ).stderr
    return "\n".join(line for line in trace.splitlines() if "Mastering Display" in line or "Content Light" in line)


@pytest.fixture(scope="module")
def hdr10(sample_path, tmp_path_factory) -> Path:
    """An HDR10 source as x265 writes one: PQ, BT.2020, 10-bit, mastering display and light levels."""
    path = tmp_path_factory.mktemp("hdr") / "hdr10.mkv"
    ffmpeg("-i", str(sample_path("bigbuckbunny")), "-t", "1", "-vf", "scale=320:180", "-pix_fmt", "yuv420p10le",
           "-c:v", "libx265", "-x265-params", HDR10, "-color_primaries", "bt2020", "-color_trc", "smpte2084",
           "-colorspace", "bt2020nc", str(path))  # fmt: skip
    return path


def test_hdr10_source_keeps_its_colour_and_mastering_metadata(hdr10, tmp_path):
    source = colour(hdr10)
    assert source == {"color_space": "bt2020nc", "color_transfer": "smpte2084", "color_primaries": "bt2020",
                      "color_range": "tv", "chroma_location": "left"}  # fmt: skip
    h264, hevc = tmp_path / "h264.mkv", tmp_path / "hevc.mp4"
    assert smooth(str(hdr10), str(h264), "--fps", "50", quiet=True).returncode == 0
    result = smooth(str(hdr10), str(hevc), "--fps", "50", "--codec", "libx265", "--", "-x265-params", "log-level=error")
    assert result.returncode == 0, result.stderr
    assert colour(h264) == colour(hevc) == source
    assert "Mastering Display Colour Volume" in sei_names(h264) and "Content Light Level" in sei_names(h264)
    kept = {d["side_data_type"]: d for d in side_data(hevc)}
    expected = {d["side_data_type"]: d for d in side_data(hdr10)}
    for kind in ("Mastering display metadata", "Content light level metadata"):
        assert kept[kind] == expected[kind], kind


def test_rgb_source_is_tagged_as_what_was_written(tmp_path, clips):
    """An RGB source becomes BT.709 4:2:0: tagged so, players do not take it for BT.601."""
    rgb = tmp_path / "rgb.mkv"
    ffmpeg("-i", str(clips["audio"]), "-t", "0.5", "-pix_fmt", "gbrp", "-c:v", "ffv1", "-an", str(rgb))
    out = tmp_path / "out.mp4"
    assert smooth(str(rgb), str(out), quiet=True).returncode == 0
    assert colour(out) == {"color_space": "bt709", "color_transfer": "bt709", "color_primaries": "bt709",
                           "color_range": "tv", "chroma_location": "left"}  # fmt: skip


def test_a_plain_source_keeps_its_tags(clips, tmp_path):
    """A BT.601 phone clip with left-sited chroma: the same tags out as in (the y4m pipe carries none)."""
    tagged = tmp_path / "tagged.mkv"
    ffmpeg("-i", str(clips["silent"]), "-c:v", "libx264", "-colorspace", "smpte170m", "-color_primaries", "smpte170m",
           "-color_trc", "smpte170m", "-color_range", "tv", "-chroma_sample_location", "left", str(tagged))  # fmt: skip
    out = tmp_path / "out.mkv"
    assert smooth(str(tagged), str(out), quiet=True).returncode == 0
    assert colour(out) == colour(tagged) != {key: "unknown" for key in COLOUR_FIELDS}


def test_odd_420_size_is_said(clips, tmp_path):
    """VapourSynth has no 4:2:0 frame of odd size: BestSource leaves the last column and row out, and the run
    says so instead of cropping without a word."""
    odd = tmp_path / "odd.mkv"
    ffmpeg("-i", str(clips["audio"]), "-t", "0.5", "-vf", "scale=33:17,format=yuv420p", "-c:v", "ffv1", str(odd))
    out = tmp_path / "out.mkv"
    result = smooth(str(odd), str(out))
    assert result.returncode == 0, result.stderr
    assert "the 33×17 source is read as 32×16" in result.stderr
    assert (video(probe(out))["width"], video(probe(out))["height"]) == (32, 16)


def test_a_truncated_source_is_said_and_its_decoder_kept_quiet(clips, tmp_path):
    whole = tmp_path / "clip.mov"
    ffmpeg("-i", str(clips["long"]), "-c", "copy", "-movflags", "+faststart", str(whole))
    cut = tmp_path / "cut.mov"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    out = tmp_path / "out.mkv"
    result = smooth(str(cut), str(out))
    assert result.returncode == 0, result.stderr
    note = next(line for line in result.stderr.splitlines() if "ends early" in line)
    read, declared = map(int, re.search(r"(\d+) of the (\d+) frames", note).groups())
    assert declared == 132 and 0 < read < 132
    assert "@ 0x" not in result.stderr and "NAL" not in result.stderr, "the decoder's own messages"


def test_empty_frame_slots_at_the_end_keep_the_duration(tmp_path):
    avi = avi_ending_in_empty_slots(tmp_path)
    out = tmp_path / "out.mkv"
    assert smooth(str(avi), str(out), "--model", "4.6", quiet=True).returncode == 0
    assert int(video(probe(out))["nb_read_frames"]) == 240
    assert float(probe(out)["format"]["duration"]) == pytest.approx(4.0, abs=1 / 60)


@pytest.mark.parametrize("container", ["mp4", "mov"])
def test_video_starting_after_the_audio_into_mp4(clips, tmp_path, container):
    """A Matroska file whose video starts 0.02 s after its audio: MP4 and MOV took one frame too many (the
    offset plus ffmpeg's constant-rate default) and the whole render was thrown away."""
    film = tmp_path / "film.mkv"
    ffmpeg("-t", "2", "-i", str(clips["audio"]), "-f", "lavfi", "-i", "sine", "-shortest", "-map", "0:v", "-map",
           "1:a", "-c:v", "ffv1", "-c:a", "aac", str(film))  # fmt: skip
    starts = {s["codec_type"]: float(s["start_time"]) for s in probe(film)["streams"]}
    assert starts["video"] - starts["audio"] >= 1 / 120, "the video starts later, by half an output frame or more"
    out = tmp_path / f"out.{container}"
    result = smooth(str(film), str(out), "--fps", "60", quiet=True)
    assert result.returncode == 0, result.stderr
    assert int(video(probe(out))["nb_read_frames"]) == 120


def test_a_plain_run_removes_a_stale_spread_render_state(clips, tmp_path):
    out = tmp_path / "out.mkv"
    state = tmp_path / "out.mkv.parts"
    state.mkdir()
    (state / "manifest.json").write_text("{}")
    result = smooth(str(clips["silent"]), str(out))
    assert result.returncode == 0, result.stderr
    assert not state.exists() and f"removed {state}" in result.stderr


def test_factor_on_an_avi_with_empty_slots_doubles_the_rate_players_show(tmp_path):
    """A 15 fps AVI that holds a frame in every sixth slot, the others empty (each frame held on screen):
    players show 15 fps, so --factor 2 is 30 fps, not twice the 2.5 fps of the frames present (it was 5)."""
    avi = tmp_path / "slots.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=15:d=4", "-vf", r"select=not(mod(n\,6))", "-fps_mode",
           "passthrough", "-c:v", "mpeg4", str(avi))  # fmt: skip
    source = video(probe(avi))
    assert Fraction(source["r_frame_rate"]) == 15 and int(source["nb_read_frames"]) == 10
    seconds = int(source["duration_ts"]) * Fraction(source["time_base"])  # 55 slots of 1/15 s
    out = tmp_path / "out.mkv"
    result = smooth(str(avi), str(out), "--factor", "2", "--model", "4.6", quiet=True)
    assert result.returncode == 0, result.stderr
    written = video(probe(out))
    assert Fraction(written["r_frame_rate"]) == 30
    assert int(written["nb_read_frames"]) == math.ceil(seconds * 30) == 110


def test_the_video_track_is_marked_default_as_plain_ffmpeg_marks_it(clips, tmp_path):
    """Matroska marked the video track not-default (the y4m pipe brings no disposition)."""
    plain = tmp_path / "plain.mkv"
    ffmpeg("-i", str(clips["audio"]), "-c", "copy", str(plain))
    out = tmp_path / "out.mkv"
    assert smooth(str(clips["audio"]), str(out), "--fps", "50", "--model", "4.6", quiet=True).returncode == 0

    def default_flags(path: Path) -> dict[str, int]:
        return {s["codec_type"]: s["disposition"]["default"] for s in probe(path)["streams"]}

    assert default_flags(out) == default_flags(plain) == {"video": 1, "audio": 1}


def starts(path: Path) -> dict[str, Fraction]:
    return {s["codec_type"]: Fraction(s["start_time"]) for s in probe(path)["streams"]}


def test_a_late_video_start_is_kept_exact_where_the_container_can(tmp_path):
    """Video 23 ms after the audio, with chapters: Matroska times in milliseconds, so the output's video starts
    23 ms after its audio too (it started one 60 fps frame, 17 ms, after); chapters and audio as they were."""
    chapters = tmp_path / "chapters.txt"
    chapters.write_text(
        ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=One\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=Two\n"
    )
    picture, film = tmp_path / "picture.mkv", tmp_path / "late.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x36:r=25:d=1", "-c:v", "ffv1", str(picture))
    # offset in Matroska's milliseconds (offsetting the lavfi input would round it to 1/25 s)
    ffmpeg("-itsoffset", "0.023", "-i", str(picture), "-f", "lavfi", "-i", "sine=duration=1.1", "-i", str(chapters),
           "-map", "0:v", "-map", "1:a", "-map_chapters", "2", "-c:v", "copy", "-c:a", "pcm_s16le",
           str(film))  # fmt: skip
    source = starts(film)
    assert source["video"] - source["audio"] == Fraction(23, 1000)
    out = tmp_path / "out.mkv"
    result = smooth(str(film), str(out), "--fps", "60", "--model", "4.6", quiet=True)
    assert result.returncode == 0, result.stderr
    written = starts(out)
    assert written["video"] - written["audio"] == Fraction(23, 1000)
    before, after = probe(film), probe(out)
    assert [(c["start_time"], c["end_time"]) for c in after["chapters"]] == [
        (c["start_time"], c["end_time"]) for c in before["chapters"]
    ]
    audio = [[s["nb_read_frames"] for s in info["streams"] if s["codec_type"] == "audio"] for info in (before, after)]
    assert audio[0] == audio[1] != []


def test_a_run_under_nohup_outlives_the_terminal(clips, tmp_path):
    """nohup leaves SIGHUP ignored for its command: the hangup of a closed terminal must not stop the run (it
    stopped it, exit status 130)."""
    out = tmp_path / "out.mkv"
    process = subprocess.Popen(
        ["nohup", *smooth_command(str(clips["audio"]), str(out), "--fps", "50", "--model", "4.6", quiet=True)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    the_encoder(process, tmp_path)  # the run is rendering
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr
    assert int(video(probe(out))["nb_read_frames"]) == 100
