#!/bin/sh
# Cross-builds coblk for aarch64 and runs the coroutine tests under qemu-user.
#
# Needs (Debian 12): apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
# Exit status: 0 all passed, 77 cross tools missing (skip), anything else a failure.
#
# With cmocka for arm64 installed, the unit tests themselves run (meson test).
# Without it, the library is cross-built with meson (-Dtests=false) and the
# coroutine sources are built, once per context-switch backend, together with
# co-selftest.c, which checks the same behaviours with plain checks.
set -eu

src=$(cd "$(dirname "$0")/../.." && pwd)
build=${COBLK_CROSS_BUILD:-${TMPDIR:-/tmp}/coblk-aarch64}
cross=$src/tests/cross/aarch64.ini
cc=aarch64-linux-gnu-gcc
sysroot=/usr/aarch64-linux-gnu

for tool in $cc qemu-aarch64 meson ninja; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "run-aarch64: $tool not found; skipping" >&2
        exit 77
    fi
done
if [ ! -d "$sysroot/lib" ]; then
    echo "run-aarch64: $sysroot missing (libc6-dev-arm64-cross); skipping" >&2
    exit 77
fi

opts="-Dio_uring=disabled -Dlibaio=disabled -Dglib=disabled"
status=0

if PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig pkg-config --exists cmocka; then
    for backend in asm ucontext; do
        dir=$build/meson-$backend
        rm -rf "$dir"
        meson setup "$dir" "$src" --cross-file "$cross" -Dtests=true \
            -Dcoroutine_backend=$backend $opts >/dev/null
        ninja -C "$dir"
        meson test -C "$dir" --print-errorlogs coroutine co-lock || status=1
    done
    exit $status
fi

echo "run-aarch64: no cmocka for arm64: building the library and co-selftest"

# 1. The library builds for the target with its own meson files, when the
#    target's libraries (zlib, libuuid: arm64 -dev packages) are installed;
#    without them only the coroutine runtime below is built and run.
dir=$build/meson-lib
rm -rf "$dir"
if meson setup "$dir" "$src" --cross-file "$cross" -Dtests=false $opts >/dev/null 2>&1; then
    ninja -C "$dir" libcoblk.a
else
    echo "run-aarch64: no arm64 zlib/libuuid: the whole library is not cross-built"
fi

# 2. The coroutine runtime and the self-test, for each backend.
for backend in asm ucontext; do
    dir=$build/selftest-$backend
    rm -rf "$dir"
    mkdir -p "$dir"
    asm=0
    if [ $backend = asm ]; then
        asm=1
        switch="$src/coroutine/switch-aarch64.S"
    else
        switch="$src/coroutine/switch-ucontext.c $src/coroutine/fpmode-aarch64.c"
    fi
    cat > "$dir/coblk-config.h" <<CONFIG
#define COBLK_POOLS 1
#define COBLK_SANITIZERS 0
#define COBLK_HAVE_VALGRIND 0
#define COBLK_COROUTINE_BACKEND "$backend"
#define COBLK_COROUTINE_ASM $asm
CONFIG
    # shellcheck disable=SC2086
    $cc -std=gnu11 -O2 -g -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -pthread \
        -I"$dir" -I"$src" -I"$src/include" -o "$dir/co-selftest" \
        "$src/tests/cross/co-selftest.c" "$src/coroutine/coroutine.c" \
        "$src/coroutine/pool.c" "$src/coroutine/lock.c" "$src/coroutine/rwlock.c" $switch
    echo "run-aarch64: backend $backend"
    qemu-aarch64 -L "$sysroot" "$dir/co-selftest" || status=1
done
exit $status
