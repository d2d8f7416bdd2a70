#!/usr/bin/env bash
# Side-by-side: coblk's BlockBackend (coblk-blkbench, qemu-img bench's request
# loop) against QEMU's block layer (qemu-img bench) and fio on the same image,
# 4 KiB sequential reads, interleaved A/B pairs, medians, ratios.
#
#   bench/run-blkbench.sh [BUILD_DIR]
#
# Environment: BLKBENCH_ROUNDS (pairs per row, default 5), BLKBENCH_COUNT
# (requests per run, default 500000), BLKBENCH_DISK_DIR (a directory on a disk
# that accepts O_DIRECT, default BUILD_DIR), BLKBENCH_QUICK=1 (fewer requests).
set -euo pipefail
build=${1:-build}
bench="$build/bench/coblk-blkbench"
rounds=${BLKBENCH_ROUNDS:-5}
count=${BLKBENCH_COUNT:-500000}
[ "${BLKBENCH_QUICK:-0}" = 1 ] && count=$((count / 5))
disk_dir=${BLKBENCH_DISK_DIR:-$build}
shm=/dev/shm/coblk-blkbench.raw
disk="$disk_dir/coblk-blkbench.raw"

for tool in qemu-img fio; do
    command -v $tool >/dev/null || { echo "run-blkbench: $tool not found" >&2; exit 77; }
done
[ -x "$bench" ] || { echo "run-blkbench: build $bench first" >&2; exit 1; }

make_image() {
    [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" = $((256 << 20)) ] && return 0
    fio --name=prep --filename="$1" --size=256m --rw=write --bs=1m --ioengine=psync \
        --end_fsync=1 >/dev/null
}
trap 'rm -f "$shm"' EXIT
make_image "$shm"
make_image "$disk"
cat "$shm" >/dev/null # page cache for the buffered row

# IOPS of one run. qemu-img bench / coblk-blkbench print the elapsed time.
iops_bench() {
    "$@" | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' |
        awk -v n="$count" '{ printf "%d\n", n / $1 }'
}
iops_fio() {
    fio --name=b --rw=read --bs=4k --size=256m --io_size=$((count * 4))k --minimal "$@" |
        awk -F';' '{ print $8 }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

row() { # label, then A command and B command as two strings
    local label=$1 a=$2 b=$3 ra=() rb=()
    for ((r = 1; r <= rounds; r++)); do
        if ((r % 2)); then
            ra+=("$(eval "$a")"); rb+=("$(eval "$b")")
        else
            rb+=("$(eval "$b")"); ra+=("$(eval "$a")")
        fi
    done
    local ma mb
    ma=$(printf '%s\n' "${ra[@]}" | median)
    mb=$(printf '%s\n' "${rb[@]}" | median)
    printf '%-46s %10d %10d %6.2f\n' "$label" "$ma" "$mb" \
        "$(awk -v a="$ma" -v b="$mb" 'BEGIN { print b ? a / b : 0 }')"
}

echo "4 KiB sequential reads, $count requests per run, median of $rounds interleaved pairs"
echo "machine: $(nproc) cores, $(uname -r)"
printf '%-46s %10s %10s %6s\n' "row (coblk vs peer)" "coblk IOPS" "peer IOPS" ratio
C="iops_bench $bench -c $count"
Q="iops_bench qemu-img bench -c $count"
row "null-co qd32 vs qemu-img bench" \
    "$C -d 32 --image-opts driver=null-co,size=1G" \
    "$Q -d 32 --image-opts driver=null-co,size=1G"
row "null-co qd1 vs qemu-img bench" \
    "$C -d 1 --image-opts driver=null-co,size=1G" \
    "$Q -d 1 --image-opts driver=null-co,size=1G"
row "raw O_DIRECT tmpfs qd32 native vs qemu-img" \
    "$C -d 32 -f raw -t none -i native $shm" "$Q -d 32 -f raw -t none -i native $shm"
row "raw O_DIRECT tmpfs qd32 native vs fio libaio" \
    "$C -d 32 -f raw -t none -i native $shm" \
    "iops_fio --filename=$shm --direct=1 --ioengine=libaio --iodepth=32"
row "raw page cache qd1 vs fio psync" \
    "$C -d 1 -f raw $shm" "iops_fio --filename=$shm --ioengine=psync"
row "raw O_DIRECT disk qd32 io_uring vs fio io_uring" \
    "$C -d 32 -f raw -t none -i io_uring $disk" \
    "iops_fio --filename=$disk --direct=1 --ioengine=io_uring --iodepth=32"
