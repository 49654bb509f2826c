#!/usr/bin/env bash
# usage: tools/gpu_probe.sh BUNDLE   (on a GPU machine, from the repository root; BUNDLE from `make gpu-bundle`)
# Installs the bundle as tools/gpu_check.sh does and runs tools/gpu_probe.py: where a CUDA frame's time goes.
set -uo pipefail
bundle=$(realpath "${1:?usage: tools/gpu_probe.sh BUNDLE}")
python=${PYTHON:-python3}
site=$(mktemp -d) cache=$(mktemp -d)
trap 'rm -rf "$site" "$cache"' EXIT
"$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$bundle"/wheels/*.whl || exit 1
cp -r "$bundle/cache/." "$cache/"
PYTHONPATH="$PWD:$site" VSRIFE_CACHE_DIR="$cache" PYTHONUNBUFFERED=1 "$python" tools/gpu_probe.py "${VSRIFE_TEST_DEVICE:-cuda}"
