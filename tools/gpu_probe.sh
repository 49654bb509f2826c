#!/usr/bin/env bash
# usage: tools/gpu_probe.sh BUNDLE   (on a GPU machine, from the repository root; BUNDLE from `make gpu-bundle`)
# Installs the bundle as tools/gpu_check.sh does and runs tools/gpu_probe.py: where a CUDA frame's time goes.
set -uo pipefail
bundle=$(realpath "${1:?usage: tools/gpu_probe.sh BUNDLE}")
python=${PYTHON:-python3}
# shellcheck source=tools/gpu_env.sh
. "$(dirname "$0")/gpu_env.sh"
"$python" tools/gpu_probe.py "${VSRIFE_TEST_DEVICE:-cuda}"
