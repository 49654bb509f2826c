#!/usr/bin/env bash
# usage: examples/demo.sh INPUT FPS OUTPUT [MODEL]
# Runs examples/convert_fps.vpy through vspipe into ffmpeg (x264 crf 18, audio copied from INPUT),
# writes OUTPUT only when everything succeeded, and prints the speed reached. Paths are the caller's:
# vspipe runs the script from the script's own folder, so INPUT is handed to it as an absolute path.
set -euo pipefail
input=$1 fps=$2 output=$3 model=${4:-}
[ -f "$input" ] || { echo "demo.sh: $input: no such file (in $PWD)" >&2; exit 1; }
input=$(cd "$(dirname "$input")" && pwd)/$(basename "$input")
here=$(cd "$(dirname "$0")" && pwd)
partial="$(dirname "$output")/.$(basename "$output").partial.mkv"
trap 'rm -f "$partial"' EXIT

start=$(date +%s.%N)
vspipe -c y4m "$here/convert_fps.vpy" - -a input="$input" -a fps="$fps" ${model:+-a model="$model"} \
  | ffmpeg -hide_banner -loglevel error -nostdin -y -i - -i "$input" -map 0:v -map '1:a?' \
      -c:v libx264 -crf 18 -preset medium -c:a copy "$partial"
end=$(date +%s.%N)
mv "$partial" "$output"

frames=$(ffprobe -v error -select_streams v:0 -count_frames -show_entries stream=nb_read_frames -of csv=p=0 "$output")
rate=$(ffprobe -v error -select_streams v:0 -show_entries stream=r_frame_rate -of csv=p=0 "$output")
audio=$(ffprobe -v error -select_streams a -show_entries stream=codec_name -of csv=p=0 "$output" | head -n1)
python3 - "$output" "$frames" "$rate" "${audio:-none}" "$start" "$end" "${model:-default}" <<'PY'
import sys
output, frames, rate, audio, start, end, model = sys.argv[1:]
seconds = float(end) - float(start)
print(f"wrote {output}: {frames} frames at {rate} fps, audio: {audio}, model {model}")
print(f"speed: {int(frames) / seconds:.2f} output frames/s ({seconds:.1f} s wall, vspipe | ffmpeg end to end)")
PY
