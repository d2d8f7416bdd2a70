#!/usr/bin/env bash
# meson install into a scratch root, then build and run a program against the
# installed headers and shared library found through coblk.pc.
# Usage: tests/install/check-install.sh BUILD_DIR
set -euo pipefail
build=$1
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
DESTDIR="$root" meson install -C "$build" --quiet --no-rebuild
pc=$(find "$root" -name coblk.pc | head -n 1)
[ -n "$pc" ] || { echo "coblk.pc was not installed"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$pc")
export PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --define-variable=prefix="$root$prefix" --cflags --libs coblk)
libdir=$(pkg-config --define-variable=prefix="$root$prefix" --variable=libdir coblk)
for h in coblk.h common.h coroutine.h aio.h aio-io.h; do
    [ -f "$root$prefix/include/coblk/$h" ] || { echo "header coblk/$h not installed"; exit 1; }
done
# shellcheck disable=SC2086 # flags are several words
cc -std=c11 -Wall -Werror -o "$root/hello" "$(dirname "$0")/hello.c" $flags
LD_LIBRARY_PATH="$libdir" "$root/hello"
