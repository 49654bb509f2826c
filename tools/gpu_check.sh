#!/usr/bin/env bash
# usage: tools/gpu_check.sh BUNDLE   (run from the repository root; BUNDLE from `make gpu-bundle`)
# The GPU acceptance run, needing nothing from the internet: installs the bundle's wheels into a temporary
# target, runs the device tests on CUDA and `python -m vsrife bench` for 4.26 and 4.6 in fp16 and fp32 with
# YUV420P8 input at 1920x1080, and writes gpu-report.md ($OUT, else the current folder), each figure as
# soon as it is measured. VSRIFE_TEST_DEVICE=cpu runs the same on the CPU at a small size (to prove it
# anywhere); PYTHON picks the interpreter (default python3, the one holding PyTorch).
set -uo pipefail
bundle=$(realpath "${1:?usage: tools/gpu_check.sh BUNDLE}")
python=${PYTHON:-python3}
device=${VSRIFE_TEST_DEVICE:-cuda}
report=${OUT:-$PWD}/gpu-report.md
if [ "$device" = cuda ]; then size=1920x1080 frames=48 repeats=3; else size=320x192 frames=8 repeats=1; fi

site=$(mktemp -d) cache=$(mktemp -d)
trap 'rm -rf "$site" "$cache"' EXIT
"$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$bundle"/wheels/*.whl || exit 1
cp -r "$bundle/cache/." "$cache/"  # a writable cache: indexes and extracted reference code go there
export PYTHONPATH="$PWD:$site" VSRIFE_CACHE_DIR="$cache" VSRIFE_TEST_DEVICE="$device" PYTHONUNBUFFERED=1

note() { printf '%s\n' "$*" >>"$report"; }
: >"$report"
note "# vsrife GPU acceptance run"
note ""
note "- when: $(date -u +%Y-%m-%dT%H:%M:%SZ); device asked: $device; size: $size; commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
note "- card and driver: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'none (CPU)')"
note "- $("$python" -c 'import torch, vapoursynth as vs; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, VapourSynth {vs.core.core_version.release_major}")')"
note ""
note "## Tests on $device"
note ""
note '```'
"$python" -m pytest -q -p no:cacheprovider -rfEs tests/test_device.py \
  "tests/test_real_weights.py::test_real_weights_equal_upstream" -k "not 4.0" 2>&1 | tail -n 25 >>"$report"
tests=${PIPESTATUS[0]}
note '```'
note ""
note "tests: $([ "$tests" = 0 ] && echo PASS || echo "FAIL (pytest exit $tests)")"
note ""
note "## Speed and memory: \`python -m vsrife bench\`, YUV420P8 in and out, 2x, $size"
status=$tests
for model in 4.26 4.6; do
  for precision in fp16 fp32; do
    note ""
    note "### $model $precision"
    note ""
    note '```'
    flag=$([ "$precision" = fp16 ] && echo --fp16 || echo --no-fp16)
    "$python" -m vsrife bench --model "$model" --size "$size" --device "$device" "$flag" \
      --format YUV420P8 --frames "$frames" --repeats "$repeats" >>"$report" 2>&1 || status=1
    note '```'
  done
done
note ""
note "overall: $([ "$status" = 0 ] && echo PASS || echo FAIL)"
cat "$report"
exit "$status"
