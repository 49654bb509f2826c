"""vsrife.playback in mpv in real time, measured through mpv's IPC: does the filter keep up, does mpv drop frames,
how long does a seek take to show its first frame.

    python tools/mpv_realtime.py [--size 160x90] [--rate 24] [--fps 60] [--seconds 12] [--model 4.26]
                                 [--scale 1.0] [--device cpu] [--seeks 3] [--seek exact|keyframes] [--gop 4]
                                 [--concurrent 4] [--buffered 8]

Plays a synthetic clip (ffmpeg's testsrc2 with a sine tone, x264) through the mpv that `make mpv` builds
(``VSRIFE_MPV``, else tools/mpv/build.sh's cached path), ``--vo=null --ao=null``: real time, on the audio's
clock. After the first frame it reads ``estimated-vf-fps``, ``frame-drop-count``, ``vo-delayed-frame-count``
and ``mistimed-frame-count`` once a second, seeks ``--seeks`` times (``seek 2 relative+exact``, or
``+keyframes``) timing each from the command to the ``playback-restart`` event (the first frame after it on
screen; a precise seek decodes
from the keyframe before its target, up to ``--gop`` seconds of frames mpv filters only to drop), and prints
one JSON object with the medians and totals, the lines vsrife said on mpv's terminal and its tallies of
in-betweens and held frames. A tool: prints to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import MpvIpc, mpv_binary, mpv_environment  # noqa: E402

PROPERTIES = ("estimated-vf-fps", "frame-drop-count", "vo-delayed-frame-count", "mistimed-frame-count")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="160x90")
    parser.add_argument("--rate", default="24")
    parser.add_argument("--fps", default="60")
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--model", default="4.26")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeks", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--buffered", type=int, default=8)
    parser.add_argument("--seek", default="exact", choices=["exact", "keyframes"], help="precise or keyframe seeks")
    parser.add_argument("--gop", type=float, default=4, help="seconds between the clip's keyframes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        clip, script, sock, log = folder / "clip.mkv", folder / "play.vpy", folder / "ipc", folder / "mpv.log"
        length = args.seconds + 2 * args.seeks + 10
        keyframes = str(round(args.gop * Fraction(args.rate)))
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={args.size}:r={args.rate}:d={length}",
             "-f", "lavfi", "-i", f"sine=f=440:d={length}", "-c:v", "libx264", "-g", keyframes, "-pix_fmt",
             "yuv420p", "-c:a", "aac", str(clip)],
            check=True,
        )  # fmt: skip
        script.write_text(
            "import vsrife\nmpv = globals()\n"
            f"vsrife.playback(mpv['video_in'], fps={args.fps!r}, container_fps=mpv['container_fps'], "
            f"model={args.model!r}, scale={args.scale}, device={args.device!r}).set_output()\n"
        )
        vf = f"vapoursynth={script}:buffered-frames={args.buffered}:concurrent-frames={args.concurrent}"
        command = [str(mpv_binary()), "--no-config", "--vo=null", "--ao=null", "--pause", f"--vf={vf}",
                   f"--input-ipc-server={sock}", f"--log-file={log}", "--keep-open=yes", str(clip)]  # fmt: skip
        process = subprocess.Popen(command, env=mpv_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            ipc = MpvIpc(sock)
            started = time.monotonic()
            ipc.command("set_property", "pause", False)
            first = ipc.wait_event("playback-restart", started) - started
            samples = {name: [] for name in PROPERTIES}
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                time.sleep(1)
                for name in PROPERTIES:
                    samples[name].append(ipc.property(name))
            seeks = []
            for _ in range(args.seeks):
                sent = time.monotonic()
                ipc.command("seek", 2, f"relative+{args.seek}")
                seeks.append(ipc.wait_event("playback-restart", sent) - sent)
                time.sleep(1.5)
            totals = {name: ipc.property(name) for name in PROPERTIES[1:]}
            ipc.command("quit")
        finally:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        lines = [line.split("] ", 1)[-1] for line in log.read_text(errors="replace").splitlines() if "vsrife:" in line]
        said = [line for line in lines if "output frames since" not in line]
        tallies = [line for line in lines if "output frames since" in line]
    fps = [v for v in samples["estimated-vf-fps"] if isinstance(v, (int, float))]
    print(json.dumps({
        "size": args.size, "rate": args.rate, "fps": args.fps, "model": args.model, "scale": args.scale,
        "seek": args.seek, "gop_s": args.gop,
        "device": args.device, "concurrent_frames": args.concurrent, "buffered_frames": args.buffered,
        "first_frame_s": round(first, 3),
        "estimated_vf_fps_median": round(statistics.median(fps), 2) if fps else None,
        "frame_drop_count_while_playing": samples["frame-drop-count"][-1] if samples["frame-drop-count"] else None,
        "vo_delayed_frame_count_while_playing": samples["vo-delayed-frame-count"][-1] if fps else None,
        "totals_after_seeks": totals,
        "seek_to_first_frame_s": [round(s, 3) for s in seeks],
        "seek_median_s": round(statistics.median(seeks), 3) if seeks else None,
        "vsrife_said": said,
        "vsrife_tallies": tallies,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
