#!/usr/bin/env bash
# usage: tools/gpu_check.sh BUNDLE   (run from the repository root; BUNDLE from `make gpu-bundle`)
# The GPU acceptance run, needing nothing from the internet (tools/gpu_env.sh: the bundle), in one run of
# under 8 minutes: the device tests on CUDA, then `python -m vsrife bench` (steady state: the first repeat,
# with the model upload and the CUDA graph captures, is not measured) for 4.26 and 4.6 in fp16 and fp32 with
# YUV420P8 input at 1920x1080: the default pipeline, batches in flight 1 and 4, torch.compile, no CUDA
# graphs, 3 workers, factor 4. Writes gpu-report.md ($OUT, else the current folder), each figure as soon as
# it is measured. VSRIFE_TEST_DEVICE=cpu runs the same on the CPU at a small size (to prove it
# anywhere); PYTHON picks the interpreter (default python3, the one holding PyTorch).
set -uo pipefail
bundle=$(realpath "${1:?usage: tools/gpu_check.sh BUNDLE}")
python=${PYTHON:-python3}
device=${VSRIFE_TEST_DEVICE:-cuda}
out=${OUT:-$PWD}
report=$out/gpu-report.md
if [ "$device" = cuda ]; then size=1920x1080 frames=240 repeats=3; else size=320x192 frames=8 repeats=1; fi
started=$SECONDS

# shellcheck source=tools/gpu_env.sh
. "$(dirname "$0")/gpu_env.sh"
export VSRIFE_TEST_DEVICE="$device"

note() { printf '%s\n' "$*" >>"$report"; }
: >"$report"
note "# vsrife GPU acceptance run"
note ""
note "- when: $(date -u +%Y-%m-%dT%H:%M:%SZ); device asked: $device; size: $size; tree: $(git describe --always --dirty 2>/dev/null || echo '?')"
note "- card and driver: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'none (CPU)')"
note "- $("$python" -c 'import torch, vapoursynth as vs; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, VapourSynth {vs.core.core_version.release_major}")')"
note ""
note "## Tests on $device"
note ""
note '```'
timeout 180 "$python" -m pytest -q -p no:cacheprovider -rfEs tests/test_device.py \
  "tests/test_real_weights.py::test_real_weights_equal_upstream" -k "not 4.0" >"$out/pytest.log" 2>&1
tests=$?
tail -n 25 "$out/pytest.log" >>"$report"
note '```'
note ""
note "tests: $([ "$tests" = 0 ] && echo PASS || echo "FAIL (pytest exit $tests)")"
note ""
note "## Speed and memory: \`python -m vsrife bench\`, YUV420P8 in and out, 2x, $size"
status=$tests
# bench MODEL PRECISION [extra bench flags]: one configuration, its figures in the report at once
bench() {
  local model=$1 precision=$2 flag
  shift 2
  flag=$([ "$precision" = fp16 ] && echo --fp16 || echo --no-fp16)
  note ""
  note "### $model $precision $* (at $((SECONDS - started)) s)"
  note ""
  note '```'
  timeout 150 "$python" -m vsrife bench --model "$model" --size "$size" --device "$device" "$flag" \
    --format YUV420P8 --frames "$frames" --repeats "$repeats" "$@" >>"$report" 2>&1 || status=1
  note '```'
}
# the pipeline's choices first, on the default (4.26 fp16), then the precisions and the other model
note ""
note "## 4.26 fp16: batches in flight per CUDA stream (1: a stream waits for each batch, as before the pipeline)"
bench 4.26 fp16
if [ "$device" = cuda ]; then
  bench 4.26 fp16 --no-upstream --in-flight 1
  bench 4.26 fp16 --no-upstream --in-flight 4
  bench 4.26 fp16 --no-upstream --compile
  bench 4.26 fp16 --no-upstream --no-cuda-graphs
  bench 4.26 fp16 --no-upstream --workers 3
fi
bench 4.26 fp32
bench 4.6 fp16
bench 4.6 fp32
bench 4.6 fp16 --no-upstream --compile
bench 4.26 fp16 --no-upstream --factor 4
note ""
note "finished in $((SECONDS - started)) s"
note ""
note "overall: $([ "$status" = 0 ] && echo PASS || echo FAIL)"
cat "$report"
exit "$status"
