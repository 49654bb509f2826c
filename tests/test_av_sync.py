"""Sound and picture in step on the files users have: a damaged packet in a file that starts late, MP4 and
MOV edit lists that hide frames, a stream-copied cut. Inputs are made by ffmpeg here; outputs are judged by
what ffprobe and ffmpeg *decode* (after edit lists): frames counted by decoding, a white flash found in the
decoded luma, a beep found in the decoded samples, their times from the decoded frames' timestamps."""

from __future__ import annotations

import json
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from helpers import ffmpeg, ffprobe, probe, smooth
from vsrife.apps.output import Expected, judge
from vsrife.sources import open_source

SOURCE_RATE = 25
OUTPUT_RATE = 2 * SOURCE_RATE  # --factor 2
HALF_OUTPUT_FRAME = Fraction(1, 2 * OUTPUT_RATE)
EVENTS_S = (1.0, 2.2)  # a white flash (one frame) and a 1 kHz beep (one frame long) at each
DAMAGED_S = 1.68  # the video packet zeroed, between them: its frame is never decoded
LATE_START_S = 0.5  # -output_ts_offset: the container starts here, not at 0
FLASH = "+".join(f"between(t,{t},{t + 0.039})" for t in EVENTS_S)  # one frame at each (25 fps)
BEEP = f"if({FLASH},sin(2*PI*1000*t),0)"


# --- what a file holds, as it decodes ---------------------------------------------------------------------


def decoded_timestamps(path: Path, stream: str) -> list[float]:
    """The timestamps of the frames ``stream`` decodes into (after the edit list), in decoding order."""
    entries = "frame=best_effort_timestamp_time"
    out = ffprobe(path, "-select_streams", stream, "-show_entries", entries, "-of", "csv=p=0")
    return [float(line.strip(",")) for line in out.split()]


def decoded_frame_count(path: Path) -> int:
    return int(next(s for s in probe(path)["streams"] if s["codec_type"] == "video")["nb_read_frames"])


def luma(path: Path) -> np.ndarray:
    """Each decoded video frame's mean luma (8-bit), in decoding order."""
    stream = json.loads(ffprobe(path, "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "json"))
    size = stream["streams"][0]["width"] * stream["streams"][0]["height"]
    decode = ["-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), *decode], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size).mean(axis=1)


def beeps(path: Path) -> list[float]:
    """When each beep starts: the first decoded sample of each burst above half the loudest, timed from the
    first decoded audio frame's timestamp."""
    rate = int(json.loads(ffprobe(path, "-select_streams", "a:0", "-show_entries", "stream=sample_rate", "-of",
                                  "json"))["streams"][0]["sample_rate"])  # fmt: skip
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout  # fmt: skip
    samples = np.abs(np.frombuffer(raw, np.float32))
    loud = np.flatnonzero(samples > samples.max() / 2)
    onsets = loud[np.r_[True, np.diff(loud) > rate // 10]]  # bursts at least 0.1 s apart
    return [decoded_timestamps(path, "a:0")[0] + k / rate for k in onsets]


def flashes(path: Path, around: list[float]) -> list[float]:
    """The time of the brightest decoded frame nearer each of ``around`` than the others (the flash itself:
    the frames beside it are in-betweens toward white, not white)."""
    times, brightness = np.array(decoded_timestamps(path, "v:0")), luma(path)
    assert len(times) == len(brightness)
    nearest = np.argmin(np.abs(times[:, None] - np.array(around)[None, :]), axis=1)
    return [float(times[nearest == k][np.argmax(brightness[nearest == k])]) for k in range(len(around))]


def sync_offsets(path: Path) -> list[float]:
    """For each flash and beep that are one event: the flash's time minus the beep's, in seconds."""
    heard = beeps(path)
    assert len(heard) == len(EVENTS_S), heard
    return [flash - beep for flash, beep in zip(flashes(path, heard), heard, strict=True)]


def start_gap(path: Path) -> float:
    """When the first video frame is shown, after the first audio sample (seconds)."""
    return decoded_timestamps(path, "v:0")[0] - decoded_timestamps(path, "a:0")[0]


def summary_frames(stderr: str) -> int:
    return int(re.search(r"wrote .*: (\d+) frames at", stderr).group(1))


# --- inputs ---------------------------------------------------------------------------------------------


def zero_packet_at(path: Path, seconds: float) -> None:
    """Overwrite the video packet shown at ``seconds`` with zero bytes, in place: its frame cannot be
    decoded, and the decoder goes on without it."""
    packets = json.loads(ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time,pos,size",
                                 "-of", "json"))["packets"]  # fmt: skip
    packet = min(packets, key=lambda p: abs(float(p["pts_time"]) - seconds))
    data = bytearray(path.read_bytes())
    at, size = int(packet["pos"]), int(packet["size"])
    data[at : at + size] = bytes(size)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def damaged_late_start(tmp_path_factory) -> Path:
    """3 s of 64x48 test pattern at 25 fps with AAC audio, starting at 0.5 s (video 0.5 s, audio 21 ms
    earlier: the AAC encoder's priming), a flash and a beep together at 1.5 s and 2.7 s, and the video packet
    at 2.18 s damaged: 75 packets, 74 frames decoded."""
    path = tmp_path_factory.mktemp("damaged") / "late.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=s=64x48:r={SOURCE_RATE}:d=3,drawbox=c=white:t=fill:enable='{FLASH}'",
           "-f", "lavfi", "-i", f"aevalsrc='{BEEP}':s=48000:d=3", "-c:v", "libx264", "-g", "10", "-c:a", "aac",
           "-output_ts_offset", str(LATE_START_S), str(path))  # fmt: skip
    zero_packet_at(path, LATE_START_S + DAMAGED_S)
    return path


# --- 1. a frame lost in a file that starts late ---------------------------------------------------------


@pytest.mark.slow
def test_a_lost_frame_in_a_late_starting_file_keeps_sound_and_picture_together(damaged_late_start, tmp_path):
    source = damaged_late_start
    packets = int(next(s for s in json.loads(ffprobe(source, "-count_packets", "-show_streams", "-of", "json"))
                       ["streams"] if s["codec_type"] == "video")["nb_read_packets"])  # fmt: skip
    assert (packets, decoded_frame_count(source)) == (75, 74), "the input is what the test says"
    before = sync_offsets(source)
    assert max(abs(x) for x in before) < 1e-3, "in the input, each flash and its beep are together"
    out = tmp_path / "out.mp4"
    result = smooth(str(source), str(out), "--factor", "2", "--model", "4.6", "--no-sc")
    assert result.returncode == 0, result.stderr
    # the lost frame's slot holds the frame before it: the video lasts as long as its 75 packets (3 s)
    assert decoded_frame_count(out) == summary_frames(result.stderr) == packets * OUTPUT_RATE // SOURCE_RATE
    # y4m times frames in whole output frames: the offset to the audio is rounded to the nearest one
    assert abs(start_gap(out) - start_gap(source)) <= HALF_OUTPUT_FRAME
    for was, now in zip(before, sync_offsets(out), strict=True):  # before the lost frame and after it
        assert abs(now - was) <= HALF_OUTPUT_FRAME, (before, sync_offsets(out))


# --- 2. the read-back counts what a player decodes ------------------------------------------------------


def test_the_read_back_counts_the_frames_an_edit_list_hides(tmp_path):
    """An MP4 of 50 frames at 25 fps whose video starts 0.2 s before 0: its edit list hides the first 5, which
    no player shows (ffprobe decodes 45). It is not a complete 50-frame output."""
    out = tmp_path / "hidden.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x48:r=25", "-frames:v", "50", "-c:v", "libx264",
           "-output_ts_offset", "-0.2", str(out))  # fmt: skip
    assert decoded_frame_count(out) == 45
    problem = judge(out, Expected(50, Fraction(25), 0, exact=True), "").problem
    assert problem == "45 of 50 frames written, 5 more hidden by its edit list"
    assert judge(out, Expected(45, Fraction(25), 0, exact=True), "").problem is None


# --- 3. frames an edit list hides are not missing -------------------------------------------------------


def _hidden_first_frame(folder: Path, container: str, rate: int, frames: int) -> Path:
    """``frames`` frames at ``rate`` whose first one an edit list hides (the video starts one frame before 0)."""
    path = folder / f"hidden.{container}"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=s=64x48:r={rate}", "-frames:v", str(frames), "-c:v", "libx264",
           "-output_ts_offset", str(-1 / rate), str(path))  # fmt: skip
    return path


def _stream_copied_cut(folder: Path) -> Path:
    """4 s at 25 fps with AAC audio, keyframes every 2 s, cut by stream copy from 1.5 s for 1 s: the packets
    from the keyframe at 1 s on are copied, and the edit list hides those before 1.5 s."""
    whole = folder / "whole.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x48:r=25:d=4", "-f", "lavfi", "-i", "sine=d=4", "-c:v", "libx264",
           "-g", "50", "-c:a", "aac", str(whole))  # fmt: skip
    cut = folder / "cut.mp4"
    ffmpeg("-ss", "1.5", "-i", str(whole), "-t", "1", "-c", "copy", str(cut))
    return cut


INTACT_WITH_EDIT_LISTS = {
    "mp4-30fps-first-frame-hidden": lambda folder: _hidden_first_frame(folder, "mp4", 30, 250),
    "mov-24fps-first-frame-hidden": lambda folder: _hidden_first_frame(folder, "mov", 24, 243),
    "stream-copied-mp4-cut": _stream_copied_cut,
}


@pytest.mark.parametrize("make", INTACT_WITH_EDIT_LISTS.values(), ids=INTACT_WITH_EDIT_LISTS.keys())
def test_frames_an_edit_list_hides_are_not_missing(tmp_path, make):
    path = make(tmp_path)
    packets = json.loads(ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=flags", "-of", "json"))
    hidden = sum("D" in p["flags"] for p in packets["packets"])
    decoded = decoded_frame_count(path)
    assert hidden > 0 and decoded == len(packets["packets"]) - hidden, "an intact file, with frames hidden"
    source = open_source(path)
    assert (source.clip.num_frames, source.declared_frames, source.ends_early) == (decoded, decoded, False)
    assert source.start == pytest.approx(decoded_timestamps(path, "v:0")[0], abs=1e-6)


@pytest.mark.slow
def test_a_stream_copied_cut_is_not_said_to_end_early(tmp_path):
    cut = _stream_copied_cut(tmp_path)
    out = tmp_path / "out.mp4"
    result = smooth(str(cut), str(out), "--factor", "2", "--model", "4.6")
    assert result.returncode == 0, result.stderr
    assert "ends early" not in result.stderr
    assert decoded_frame_count(out) == summary_frames(result.stderr) >= 2 * decoded_frame_count(cut)
    assert abs(start_gap(out) - start_gap(cut)) <= HALF_OUTPUT_FRAME
