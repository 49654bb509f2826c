#!/usr/bin/env bash
# usage: tools/gpu_check.sh BUNDLE [PART...]   (run from the repository root; BUNDLE from `make gpu-bundle`)
# The GPU acceptance run, needing nothing from the internet (tools/gpu_env.sh: the bundle), in parts that
# each fit one 10-minute device call (their own time limits below), run in this order when none is named:
#   preflight     versions and what is there: pytest, OpenCV, Triton, a C compiler, Python.h (seconds)
#   tests         the device tests on CUDA, and 4.26/4.6 against upstream (at most 300 s)
#   bench         `python -m vsrife bench` (steady state: the first repeat, with the model upload and the
#                 CUDA graph captures, is not measured), 4.26 fp16 with YUV420P8 at 1920x1080: the default
#                 pipeline, batches in flight 1 and 4, no CUDA graphs, 3 workers (5 x at most 100 s)
#   bench2        4.26 fp32, 4.6 fp16 and fp32, 4.26 fp16 at factor 4 (4 x at most 100 s)
#   compile-test  compiled equals eager on CUDA (tests/test_compile.py; on the CPU its CPU test) (300 s)
#   compile-4.26, compile-4.6   bench --compile (fp16), each saying whether compiled code ran (300 s each)
# Each part appends to gpu-report.md ($OUT, else the current folder), every figure as soon as it is
# measured: a part cut short keeps what it measured. Naming no part starts a new report. Inductor's cache
# is kept in .gpu-check-cache/ (git-ignored), so a part run again compiles nothing. VSRIFE_TEST_DEVICE=cpu
# runs the same on the CPU at a small size, time limits 4 times longer (to prove it anywhere); PYTHON
# picks the interpreter (default python3, the one holding PyTorch).
set -uo pipefail
bundle=$(realpath "${1:?usage: tools/gpu_check.sh BUNDLE [PART...]}")
shift
parts=("$@")
python=${PYTHON:-python3}
device=${VSRIFE_TEST_DEVICE:-cuda}
out=${OUT:-$PWD}
report=$out/gpu-report.md
# the CPU mode's limits are 4 times longer: its compiles take minutes, and it is not held to a device call
if [ "$device" = cuda ]; then size=1920x1080 frames=240 repeats=3 slow=1; else size=320x192 frames=8 repeats=1 slow=4; fi
started=$SECONDS
status=0

# shellcheck source=tools/gpu_env.sh
. "$(dirname "$0")/gpu_env.sh"
export VSRIFE_TEST_DEVICE="$device"
TORCHINDUCTOR_CACHE_DIR="$PWD/.gpu-check-cache/inductor-$device"
export TORCHINDUCTOR_CACHE_DIR

note() { printf '%s\n' "$*" >>"$report"; }
part() {
  note ""
  note "## $* (at $((SECONDS - started)) s)"
  note ""
}
# pytest LIMIT ARGS...: tests, their last lines in the report
run_tests() {
  local limit=$1 log
  shift
  log=$out/pytest-$part.log
  note '```'
  timeout "$((limit * slow))" "$python" -m pytest -q -p no:cacheprovider -rfEs "$@" >"$log" 2>&1
  local code=$?
  tail -n 25 "$log" >>"$report"
  note '```'
  note ""
  note "tests: $([ "$code" = 0 ] && echo PASS || echo "FAIL (pytest exit $code$([ "$code" = 124 ] && echo ', out of time'))")"
  [ "$code" = 0 ] || status=1
}
# bench LIMIT MODEL PRECISION [extra bench flags]: one configuration, its figures in the report at once
bench() {
  local limit=$1 model=$2 precision=$3 flag code
  shift 3
  flag=$([ "$precision" = fp16 ] && echo --fp16 || echo --no-fp16)
  note ""
  note "### $model $precision $* (at $((SECONDS - started)) s)"
  note ""
  note '```'
  timeout "$((limit * slow))" "$python" -m vsrife bench --model "$model" --size "$size" --device "$device" "$flag" \
    --format YUV420P8 --frames "$frames" --repeats "$repeats" "$@" >>"$report" 2>&1
  code=$?
  note '```'
  if [ "$code" != 0 ]; then
    note "bench: FAIL (exit $code$([ "$code" = 124 ] && echo ", out of its $((limit * slow)) s"))"
    status=1
  fi
}
# compile_bench MODEL: bench --compile, and whether the compiled code really ran
compile_bench() {
  local before
  before=$(wc -l <"$report")
  bench 300 "$1" fp16 --no-upstream --compile
  if tail -n +"$((before + 1))" "$report" | grep -Eq '^torch.compile calls compiled +[1-9]'; then
    note "compile: ran$(tail -n +"$((before + 1))" "$report" | grep -q '^torch.compile off' && echo ', some steps eagerly (see above)')"
  else
    note "compile: did NOT run (no compiled call: see the bench's output above)"
    status=1
  fi
}

preflight() {
  part "Preflight"
  note "- when: $(date -u +%Y-%m-%dT%H:%M:%SZ); device asked: $device; size: $size; tree: $(git describe --always --dirty 2>/dev/null || echo '?')"
  note "- card and driver: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'none (CPU)')"
  timeout 60 "$python" - >>"$report" 2>&1 <<'PY' || status=1
import importlib, os, shutil, subprocess, sys, sysconfig

def version(module):
    try:
        return getattr(importlib.import_module(module), "__version__", "present")
    except Exception as error:  # noqa: BLE001 - anything that stops the import is what the report says
        return f"MISSING ({type(error).__name__})"

import torch
import vapoursynth as vs

compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
compiler_version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[0] if compiler else ""
header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
print(f"- Python {sys.version.split()[0]}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, GPU seen: {torch.cuda.is_available()}; VapourSynth {vs.core.core_version.release_major}")
print(f"- pytest {version('pytest')}; OpenCV {version('cv2')}; Triton {version('triton')}; numpy {version('numpy')}")
print(f"- C compiler: {compiler or 'MISSING'} {compiler_version}; Python.h: {'present' if os.path.exists(header) else 'MISSING'} ({header})")
print(f"- BestSource: {'present' if hasattr(vs.core, 'bs') else 'absent (OpenCV decodes the sample)'}; inductor cache: {os.environ.get('TORCHINDUCTOR_CACHE_DIR')}")
missing = [what for what, ok in (("pytest", version("pytest")), ("Triton (compile on CUDA)", version("triton")))
           if str(ok).startswith("MISSING")]
missing += [] if compiler else ["a C compiler (inductor)"]
missing += [] if os.path.exists(header) else ["Python.h (Triton's launcher, inductor's C++)"]
missing += [] if hasattr(vs.core, "bs") or not str(version("cv2")).startswith("MISSING") else ["OpenCV (decodes the sample without BestSource)"]
print(f"- missing: {', '.join(missing) or 'nothing'}")
PY
}

tests() {
  part "Tests on $device"
  run_tests 300 tests/test_device.py "tests/test_real_weights.py::test_real_weights_equal_upstream" -k "not 4.0"
}

bench_default() {
  part "Speed and memory: \`python -m vsrife bench\`, YUV420P8 in and out, 2x, $size: 4.26 fp16, the pipeline's choices"
  bench 100 4.26 fp16
  if [ "$device" = cuda ]; then
    bench 100 4.26 fp16 --no-upstream --in-flight 1
    bench 100 4.26 fp16 --no-upstream --in-flight 4
    bench 100 4.26 fp16 --no-upstream --no-cuda-graphs
    bench 100 4.26 fp16 --no-upstream --workers 3
  fi
}

bench_more() {
  part "Speed and memory: the other precisions and model, factor 4"
  bench 100 4.26 fp32
  bench 100 4.6 fp16
  bench 100 4.6 fp32
  bench 100 4.26 fp16 --no-upstream --factor 4
}

compile_test() {
  part "torch.compile: compiled equals eager on $device"
  if [ "$device" = cuda ]; then
    run_tests 300 tests/test_compile.py -k "on_cuda"
  else
    run_tests 300 tests/test_compile.py -k "compiles_when_asked"
  fi
}

[ ${#parts[@]} -gt 0 ] || { : >"$report"; note "# vsrife GPU acceptance run"; parts=(preflight tests bench bench2 compile-test compile-4.26 compile-4.6); }
for part in "${parts[@]}"; do
  case $part in
    preflight) preflight ;;
    tests) tests ;;
    bench) bench_default ;;
    bench2) bench_more ;;
    compile-test) compile_test ;;
    compile-4.26 | compile-4.6)
      part "torch.compile: bench --compile, ${part#compile-} fp16 (the compile itself is in its first, unmeasured repeat)"
      compile_bench "${part#compile-}"
      ;;
    *) echo "tools/gpu_check.sh: unknown part '$part' (preflight tests bench bench2 compile-test compile-4.26 compile-4.6)" >&2; exit 2 ;;
  esac
done
note ""
note "parts ${parts[*]}: $(if [ "$status" = 0 ]; then echo PASS; else echo FAIL; fi) in $((SECONDS - started)) s"
cat "$report"
exit "$status"
