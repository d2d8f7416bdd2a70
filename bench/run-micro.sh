#!/usr/bin/env bash
# The main job: a node graph doing real I/O (coblk-demo), then the
# side-by-side benchmarks: coroutine switch costs, each I/O engine next to
# fio's same engine, and the block layer next to qemu-img bench and fio, all
# measured in the same run. Usage: bench/run-micro.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
ucbuild=${build}-ucontext

if [ ! -f "$ucbuild/build.ninja" ]; then
    meson setup "$ucbuild" -Dcoroutine_backend=ucontext >/dev/null
fi
ninja -C "$ucbuild" bench/coblk-cobench >/dev/null

echo "== machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "== a node graph at work: create, write, flush, read back, verify"
"$build/bench/coblk-demo" "$build"
echo "== coroutines: asm backend"
"$build/bench/coblk-cobench"
echo "== coroutines: ucontext backend"
"$ucbuild/bench/coblk-cobench"
echo "== I/O engines vs fio (4 KiB random reads)"
IOBENCH_SECS=${IOBENCH_SECS:-2} IOBENCH_ROUNDS=${IOBENCH_ROUNDS:-2} sh bench/run-iobench.sh "$build"
echo "== the block layer vs QEMU's (qemu-img bench) and fio"
BLKBENCH_ROUNDS=${BLKBENCH_ROUNDS:-3} BLKBENCH_QUICK=${BLKBENCH_QUICK:-1} \
    bash bench/run-blkbench.sh "$build"
