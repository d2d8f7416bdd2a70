#!/bin/bash
# In-place 4 KiB random writes into a fresh copy of a qemu-img-converted image
# whose pages are still dirty (no sync after the copy), with the file driver's
# native FUA (one pwritev2(RWF_DSYNC) per header write) and without it
# (COBLK_AIO_REFUSE_RWF=2: the write + fdatasync fallback, as before native
# FUA). The first write of a session makes a header durable (vhdx: new
# GUIDs; parallels: in_use; qed: NEED_CHECK on the first allocation): with
# a flush, that writes back the whole copy inside the timed run.
#
#   bench/run-fua-ab.sh [BUILD_DIR] [DIR]
#
# ROUNDS (default 3), FORMATS (default "vhdx parallels raw"). With TRACE=1 and
# a writable /sys/kernel/tracing, also prints the pages of the image each
# ext4 writeback wrote, in order (the first is the header step's).
# Seconds as coblk-blkbench reports them (the close's flush is not timed).
set -e
build=${1:-build}
dir=${2:-$build/bench-fua}
rounds=${ROUNDS:-3}
bench=$build/bench/coblk-blkbench
T=/sys/kernel/tracing/instances/coblk-fua
mkdir -p "$dir"
[ -f "$dir/src.raw" ] || head -c 256M /dev/urandom > "$dir/src.raw"

trace_on() {
    [ "${TRACE:-0}" = 1 ] || return 0
    mkdir -p $T
    echo "ino == $(stat -c %i "$1")" > $T/events/ext4/ext4_writepages_result/filter
    echo 1 > $T/events/ext4/ext4_writepages_result/enable
    echo > $T/trace
}

trace_off() {
    [ "${TRACE:-0}" = 1 ] || return 0
    echo 0 > $T/events/ext4/ext4_writepages_result/enable
    echo "  writeback pages: $(grep -o 'pages_written [0-9]*' $T/trace | awk '{printf "%s ", $2}')"
}

for fmt in ${FORMATS:-vhdx parallels raw}; do
    conv=$dir/conv.$fmt
    [ -f "$conv" ] || qemu-img convert -O "$fmt" "$dir/src.raw" "$conv"
    for r in $(seq "$rounds"); do
        for mode in fua nofua; do
            img=$dir/img.$fmt
            rm -f "$img"
            cp --sparse=always "$conv" "$img"
            envs=()
            [ "$mode" = nofua ] && envs=(COBLK_AIO_REFUSE_RWF=2)
            trace_on "$img"
            env "${envs[@]}" "$bench" -f "$fmt" -w -t writeback -d 16 \
                -s 4k -S 1052672 -c 100000 "$img" | sed -n "s/Run completed in/$fmt $mode round $r:/p"
            trace_off
        done
    done
done
rm -f "$dir"/img.*
if [ "${TRACE:-0}" = 1 ]; then
    rmdir $T
fi
