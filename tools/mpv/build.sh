#!/usr/bin/env bash
# mpv with a VapourSynth filter that speaks VapourSynth's API 4, for the playback tests and for users whose
# mpv lacks one: Debian bookworm's mpv source package (`apt-get source mpv`) with vf_vapoursynth-api4.patch,
# built headless (no video or audio outputs but null, image files and encoding: --vo=null, --o=).
#
#   tools/mpv/build.sh path          the binary's cached path (the cache key: this script and the patch)
#   tools/mpv/build.sh build VENV    build it there unless it is already built (VENV: a venv with the
#                                    `vapoursynth` wheel, whose headers and pkg-config file the build uses)
#
# Installs what the build needs with apt-get (sudo when not root), adding a deb-src entry for the archive of
# the existing Debian entries when there is none. Run mpv with VSSCRIPT_PATH set to the wheel's
# libvsscript.so (`vapoursynth get-vsscript`), after `vapoursynth config` in that venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
patch_file="$here/vf_vapoursynth-api4.patch"
key="$(cat "$0" "$patch_file" | sha256sum | cut -c1-12)"
target="${VSRIFE_CACHE_DIR:-$HOME/.cache/vsrife}/mpv/$key/mpv"

build_deps=(dpkg-dev patch meson ninja-build pkg-config gcc libavcodec-dev libavfilter-dev libavformat-dev libavutil-dev
            libswresample-dev libswscale-dev libass-dev)

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# a step's output only when it fails
quietly() {
    local log
    log="$(mktemp)"
    "$@" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; echo "error: $* failed" >&2; exit 1; }
    rm -f "$log"
}

# deb-src entries mirroring the Debian deb entries (deb822 .sources files and one-line sources.list)
add_deb_src() {
    local list=/etc/apt/sources.list.d/vsrife-deb-src
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        for file in /etc/apt/sources.list.d/*.sources; do
            grep -q "debian" "$file" && [ "$file" != "$list.sources" ] && sed -n 's/^Types: deb$/Types: deb-src/;p' "$file"
        done | sudo_ tee "$list.sources" >/dev/null
    fi
    if [ -f /etc/apt/sources.list ] && grep -q '^deb .*debian' /etc/apt/sources.list; then
        sed -n 's/^deb \(.*debian.*\)/deb-src \1/p' /etc/apt/sources.list | sudo_ tee "$list.list" >/dev/null
    fi
    sudo_ apt-get update -qq
}

# the build dependencies (their runtime libraries too: a binary cached by an earlier run needs them)
install_deps() {
    local missing=()
    for package in "${build_deps[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing mpv's build dependencies (Debian packages): ${missing[*]}"
        sudo_ apt-get update -qq
        DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

build() {
    local venv="$1"
    local vapoursynth="$venv/bin/vapoursynth"
    [ -x "$vapoursynth" ] || { echo "error: $vapoursynth not found (run make setup)" >&2; exit 1; }
    work="$(mktemp -d)"  # global: the EXIT trap reads it
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get source -qq --print-uris mpv 2>/dev/null | grep -q "\.dsc"); then
        add_deb_src
    fi
    echo "building mpv (Debian's source package, with $(basename "$patch_file")) into $target"
    (cd "$work" && quietly apt-get source mpv)
    local source
    source="$(find "$work" -maxdepth 1 -type d -name 'mpv-*' | head -n 1)"
    patch -d "$source" -p1 --quiet < "$patch_file"
    quietly env PKG_CONFIG_PATH="$("$vapoursynth" get-pkgconfig-dir)" meson setup "$work/build" "$source" \
        --buildtype=release -Dauto_features=disabled -Dvapoursynth=enabled -Dgl=disabled
    quietly ninja -C "$work/build" mpv
    mkdir -p "$(dirname "$target")"
    cp "$work/build/mpv" "$target.part"
    mv "$target.part" "$target"
}

case "${1:-}" in
    path) echo "$target" ;;
    build)
        install_deps
        # a cached binary that does not start (a library missing on this machine) is built again
        "$target" --no-config --version >/dev/null 2>&1 || build "${2:?usage: build.sh build VENV}" ;;
    *) echo "usage: $0 path | build VENV" >&2; exit 2 ;;
esac
