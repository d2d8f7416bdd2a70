#!/usr/bin/env bash
# The main job until the block layer lands: coroutine and event-loop
# micro-benchmarks, and each I/O engine next to fio's same engine on the same
# file in the same run. Usage: bench/run-micro.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
ucbuild=${build}-ucontext

if [ ! -f "$ucbuild/build.ninja" ]; then
    meson setup "$ucbuild" -Dcoroutine_backend=ucontext >/dev/null
fi
ninja -C "$ucbuild" bench/coblk-cobench >/dev/null

echo "== machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "== coroutines: asm backend"
"$build/bench/coblk-cobench"
echo "== coroutines: ucontext backend"
"$ucbuild/bench/coblk-cobench"
echo "== I/O engines vs fio (4 KiB random reads)"
IOBENCH_SECS=${IOBENCH_SECS:-2} IOBENCH_ROUNDS=${IOBENCH_ROUNDS:-2} sh bench/run-iobench.sh "$build"
