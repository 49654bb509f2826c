# Sourced by tools/gpu_check.sh and tools/gpu_probe.sh: the offline bundle made usable by $python.
# The bundle's wheels (VapourSynth, vsutil) go into a temporary target only where $python lacks them: an
# interpreter with its own VapourSynth (the project's .venv) keeps it, and with it the source filters it
# autoloads (BestSource), which a second VapourSynth on PYTHONPATH would hide. The cache is a writable copy.
site=$(mktemp -d) cache=$(mktemp -d)
trap 'rm -rf "$site" "$cache"' EXIT
for wheel in "$bundle"/wheels/*.whl; do
  module=$(basename "$wheel" | cut -d- -f1 | tr '[:upper:]' '[:lower:]')
  "$python" -c "import $module" 2>/dev/null && continue
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheel" || exit 1
done
cp -r "$bundle/cache/." "$cache/"  # indexes and extracted reference code go there
export PYTHONPATH="$PWD:$site" VSRIFE_CACHE_DIR="$cache" PYTHONUNBUFFERED=1
